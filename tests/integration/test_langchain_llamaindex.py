"""LangChain (`langchain-ollama`) and LlamaIndex (`llama-index-llms-ollama`,
`llama-index-embeddings-ollama`) against the live server, as an app wires them to Ollama:
invoke, stream, structured output (json_schema and json modes), a tool call and its result sent
back, embeddings, and the async paths."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama as LlamaOllama

from tests.integration.test_openai_structured import City
from tests.integration.test_structured import TOOL_SCHEMA, json_tools_model  # noqa: F401
from tests.integration.test_structured import ollama_client_module  # noqa: F401

pytestmark = pytest.mark.slow

MODEL = "gemma3:270m"
EMBED = "all-minilm"


@pytest.fixture(scope="module")
def chat(live_server):
    return ChatOllama(model=MODEL, base_url=live_server.url, temperature=0, num_predict=16,
                      validate_model_on_init=True)


def test_langchain_invoke_and_stream(chat, live_server):
    whole = chat.invoke("Say hello.")
    assert whole.content and whole.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in chat.stream("Say hello."))
    assert streamed == whole.content  # greedy: the same answer
    llm = OllamaLLM(model=MODEL, base_url=live_server.url, temperature=0, num_predict=8)
    assert llm.invoke("The capital of France is")


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_langchain_structured_output(chat, method):
    structured = chat.bind(num_predict=64).with_structured_output(City, method=method)
    prompt = "Name a city and its country."
    if method == "json_mode":
        prompt += ' Answer as JSON: {"name": ..., "country": ...}'
    city = structured.invoke(prompt)
    assert isinstance(city, City) and city.name, city


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return json.dumps({"city": city, "weather": "sunny, 21 C"})


def test_langchain_tool_call_and_result(live_server, json_tools_model):  # noqa: F811
    # gemma3:270m has no tool template of its own: the test model's tag is bare JSON and the
    # schema makes the call certain, as in tests/integration/test_structured.py.
    llm = ChatOllama(model=json_tools_model, base_url=live_server.url, temperature=0,
                     num_predict=48, format=TOOL_SCHEMA).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    reply = llm.invoke([question])
    assert len(reply.tool_calls) == 1, reply
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = ChatOllama(model=json_tools_model, base_url=live_server.url, temperature=0,
                        num_predict=16).bind_tools([get_weather]).invoke([question, reply, result])
    assert answer.content or answer.tool_calls, answer


def test_langchain_embeddings(live_server):
    emb = OllamaEmbeddings(model=EMBED, base_url=live_server.url)
    docs = emb.embed_documents(["a cat", "a dog"])
    assert len(docs) == 2 and len(docs[0]) == 384
    assert len(emb.embed_query("a cat")) == 384


def test_langchain_async(chat, live_server):
    async def run():
        whole = await chat.ainvoke("Say hello.")
        parts = [c.content async for c in chat.astream("Say hello.")]
        vectors = await OllamaEmbeddings(model=EMBED, base_url=live_server.url).aembed_documents(
            ["a cat"])
        return whole, "".join(parts), vectors

    whole, streamed, vectors = asyncio.run(run())
    assert whole.content and streamed == whole.content and len(vectors[0]) == 384


@pytest.fixture(scope="module")
def llama(live_server):
    return LlamaOllama(model=MODEL, base_url=live_server.url, request_timeout=300,
                       temperature=0, additional_kwargs={"num_predict": 16})


def test_llamaindex_complete_chat_and_stream(llama):
    whole = llama.complete("The capital of France is")
    assert whole.text
    streamed = "".join(part.delta or "" for part in llama.stream_complete("The capital of France is"))
    assert streamed == whole.text
    reply = llama.chat([ChatMessage(role="user", content="Say hello.")])
    assert reply.message.content


def test_llamaindex_structured_output(live_server):
    llm = LlamaOllama(model=MODEL, base_url=live_server.url, request_timeout=300,
                      temperature=0, additional_kwargs={"num_predict": 64})  # room for the JSON
    structured = llm.as_structured_llm(City)
    reply = structured.complete("Name a city and its country.")
    assert isinstance(reply.raw, City) and reply.raw.name, reply


def test_llamaindex_embeddings_and_async(llama, live_server):
    emb = OllamaEmbedding(model_name=EMBED, base_url=live_server.url)
    assert len(emb.get_text_embedding("a cat")) == 384
    assert len(emb.get_text_embedding_batch(["a cat", "a dog"])) == 2

    async def run():
        return (await llama.acomplete("The capital of France is"),
                await emb.aget_query_embedding("a cat"))

    whole, vector = asyncio.run(run())
    assert whole.text and len(vector) == 384
