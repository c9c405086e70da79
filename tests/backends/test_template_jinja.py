"""HF Jinja chat templates rendered as transformers' apply_chat_template renders them."""

from __future__ import annotations

import datetime as dt

import pytest

from backends.templates.jinja import hf_message, jinja_renderer, render_chat_template
from backends.templates.prompt import chat_prompt
from registry.errors import APIError

QWEN_LIKE = """{%- if tools %}<|im_start|>system
# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tc in message.tool_calls %}
<tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>{{ message.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}"""

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>",
                                            "parameters": {"type": "object", "properties": {}}}}]


def test_chat_template_with_tools_and_tool_calls():
    msgs = [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    out = render_chat_template(QWEN_LIKE, msgs, tools=TOOLS)
    # trim_blocks/lstrip_blocks as transformers sets them: block tags eat their newline.
    assert out == (
        "<|im_start|>system\n# Tools\n<tools>"
        '{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>", '
        '"parameters": {"type": "object", "properties": {}}}}</tools><|im_end|>\n'
        "<|im_start|>user\nWeather?<|im_end|>\n"
        '<|im_start|>assistant<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>sunny</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n")


def test_think_maps_to_enable_thinking():
    msgs = [{"role": "user", "content": "hi"}]
    assert render_chat_template(QWEN_LIKE, msgs, think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat_template(QWEN_LIKE, msgs, think=True).endswith("<|im_start|>assistant\n")
    assert render_chat_template(QWEN_LIKE, msgs, add_generation_prompt=False).endswith("hi<|im_end|>\n")


def test_bos_token_strftime_and_reasoning_effort():
    t = "{{ bos_token }}{{ strftime_now('%Y') }}|{{ reasoning_effort }}|{{ messages[0].content }}{{ eos_token }}"
    out = render_chat_template(t, [{"role": "user", "content": "x"}], bos_token="<s>", eos_token="</s>", think="high")
    assert out in (f"<s>{dt.date.today().year}|high|x</s>", f"<s>{dt.date.today().year + 1}|high|x</s>")


def test_raise_exception_becomes_an_api_error():
    t = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}"
    with pytest.raises(APIError) as exc:
        render_chat_template(t, [{"role": "assistant", "content": "x"}])
    assert exc.value.message == "Conversation must start with user"


def test_hf_message_shape():
    m = hf_message({"role": "tool", "content": "r", "tool_name": "f", "thinking": "hmm",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}}]})
    assert m == {"role": "tool", "content": "r", "reasoning_content": "hmm", "name": "f",
                 "tool_calls": [{"type": "function", "id": "c1",
                                 "function": {"name": "f", "arguments": {"a": 1}}}]}


def test_truncation_works_with_a_jinja_renderer():
    t = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    msgs = [{"role": "system", "content": "s"}] + [{"role": "user", "content": f"u{i}"} for i in range(5)]
    out = chat_prompt(msgs, jinja_renderer(t), count_tokens=lambda s: len(s.split()), num_ctx=6)
    assert out.prompt == "system: s\nuser: u3\nuser: u4\n"
