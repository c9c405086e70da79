"""Varied prompts, and a long chat history for the prefix-cache scenario.

Every prompt of a run starts with a unique tag, so no request shares a first KV block with an
earlier one: throughput phases measure uncached prefill on every system (llama-server's
per-slot `cache_prompt` and Corral's prefix cache alike).
"""

from __future__ import annotations

import random

TOPICS = [
    "Explain how a refrigerator moves heat out of its inside.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "List five practical tips for learning a new programming language.",
    "Describe the water cycle to a ten year old.",
    "What are the main differences between a virus and a bacterium?",
    "Summarize the plot of a heist movie you invent, in one paragraph.",
    "Give a recipe for a simple tomato soup, with steps.",
    "Why is the sky blue? Answer in plain words.",
    "Write a polite email asking a colleague to review a document by Friday.",
    "Compare trains and planes for a 500 km trip: cost, time and comfort.",
    "Explain what a hash table is and when to use one.",
    "Invent a new board game and describe its rules briefly.",
    "What should someone pack for a three day hiking trip in autumn?",
    "Describe the city of the future in a few sentences.",
    "Explain recursion with an everyday example.",
    "Write a haiku sequence about the sea, then explain the imagery.",
]

# The probe's schema: closed, so its answer ends and can be checked as JSON.
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
}
# The throughput phases' schema: greedy gemma3:270m repeats list items until num_predict runs
# out, so constrained and free requests produce the same number of tokens and the ratio holds
# the grammar's per-token cost, not a difference in output length.
LIST_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "hobbies"],
}
JSON_PROMPT = "Invent a person and describe them as JSON with the fields name, age and city."
LIST_PROMPT = "Invent a person and describe them as JSON with the fields name, age and hobbies."

_FILLER = (
    "Tell me more about {topic} Please cover the history, the main ideas, the common mistakes "
    "people make, and a practical example I could try this week."
)
_REPLY = (
    "Here is an overview of {topic} It started long ago with simple observations, grew through "
    "careful experiments, and today rests on a few core ideas that are easy to state and hard to "
    "master. The usual mistakes are rushing the basics and skipping practice. As an exercise, "
    "pick one small project, write down what you expect, try it, and compare the outcome."
)


class PromptSource:
    """Hands out prompts with a run-unique tag in front."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or f"{random.SystemRandom().randrange(16**8):08x}"
        self._n = 0

    def tag(self) -> str:
        self._n += 1
        return f"[{self.run_id}-{self._n}]"

    def prompts(self, count: int) -> list[str]:
        return [f"{self.tag()} {TOPICS[i % len(TOPICS)]}" for i in range(count)]

    def history(self, turns: int) -> list[dict[str, str]]:
        """A chat of `turns` user/assistant exchanges, unique to this call from its first token."""
        tag = self.tag()
        messages = [{"role": "user", "content": f"{tag} Let us talk about several subjects."}]
        messages.append({"role": "assistant", "content": "Gladly. Which subject first?"})
        for i in range(turns):
            topic = TOPICS[i % len(TOPICS)].lower()
            messages.append({"role": "user", "content": _FILLER.format(topic=topic)})
            messages.append({"role": "assistant", "content": _REPLY.format(topic=topic)})
        return messages
