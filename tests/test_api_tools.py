"""What the API passes through to the backends: tools (function calling), stop sequences and
JSON mode, with the official `openai` client (sync and async) and the official `ollama`
client against a running studio backed by the fake Ollama and the fake OpenRouter; and
fifty streams at once, each answered, stored and accounted exactly once."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.test_api_openai import api, client, ollama_client  # noqa: F401 - the fixture

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def test_tools_reach_ollama_and_its_call_comes_back(api):
    fake = api["ollama"]
    fake.queue_reply("", tool_calls=[("get_weather", {"city": "Paris"})])
    answer = client(api).chat.completions.create(model="ollama:qwen3:8b", messages=ASK,
                                                 tools=[WEATHER])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris"}
    assert call.id and call.type == "function"
    assert fake.requests_to("/api/chat")[-1].json["tools"] == [WEATHER]

    # The client runs the tool and sends the result back; Ollama gets its own shapes.
    fake.queue_reply("It is sunny in Paris.")
    followup = client(api).chat.completions.create(model="ollama:qwen3:8b", tools=[WEATHER],
                                                   messages=[*ASK, choice.message.model_dump(
                                                       exclude_none=True),
                                                       {"role": "tool", "tool_call_id": call.id,
                                                        "content": '{"sky": "sunny"}'}])
    assert followup.choices[0].message.content == "It is sunny in Paris."
    sent = fake.requests_to("/api/chat")[-1].json["messages"]
    assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather",
                                                   "arguments": {"city": "Paris"}}}]
    assert sent[2] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_name": "get_weather"}


def test_tools_stream_from_openrouter_in_pieces(api):
    cloud = api["cloud"]
    cloud.queue_reply(["Let me look."], tool_calls=[("get_weather", {"city": "Oslo"}),
                                                    ("get_weather", {"city": "Bergen"})])
    stream = client(api).chat.completions.create(
        model="openrouter:openai/gpt-4o-mini", messages=ASK, tools=[WEATHER],
        tool_choice="auto", stream=True)
    text, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    assert text == "Let me look." and finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})]
    assert all(c["id"] for c in calls.values())
    sent = cloud.last_chat.json
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto"


def test_tools_for_a_model_without_them_is_400_in_the_status_line(api):
    with pytest.raises(openai.BadRequestError) as failure:
        client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=ASK,
                                            tools=[WEATHER], stream=True)
    assert "does not support tools" in failure.value.message


def test_stop_sequences_cut_the_answer_at_both_backends(api):
    api["ollama"].queue_reply(["one", " two", " three", " four"])
    answer = client(api).chat.completions.create(model="ollama:llama3.2:latest",
                                                 messages=ASK, stop=[" three"])
    assert answer.choices[0].message.content == "one two"
    assert api["ollama"].requests_to("/api/chat")[-1].json["options"]["stop"] == [" three"]
    api["cloud"].queue_reply(["alpha", " beta", " END", " gamma"])
    answer = client(api).chat.completions.create(model="openrouter:openai/gpt-4o-mini",
                                                 messages=ASK, stop="END")
    assert answer.choices[0].message.content.strip() == "alpha beta"
    assert api["cloud"].last_chat.json["stop"] == ["END"]


def test_json_mode_and_schemas_reach_the_backends(api):
    schema = {"type": "object", "properties": {"sky": {"type": "string"}}}
    api["ollama"].queue_reply(['{"sky":', ' "blue"}'])
    answer = client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=ASK,
                                                 response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == {"sky": "blue"}
    assert api["ollama"].requests_to("/api/chat")[-1].json["format"] == "json"
    api["ollama"].queue_reply('{"sky": "grey"}')
    client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=ASK,
                                        response_format={"type": "json_schema", "json_schema": {
                                            "name": "weather", "schema": schema}})
    assert api["ollama"].requests_to("/api/chat")[-1].json["format"] == schema
    api["cloud"].queue_reply(['{"sky": "red"}'])
    client(api).chat.completions.create(model="openrouter:openai/gpt-4o-mini", messages=ASK,
                                        response_format={"type": "json_object"})
    assert api["cloud"].last_chat.json["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("field, value", [
    ("stop", [1, 2]), ("response_format", {"type": "xml"}), ("tools", [{"type": "web"}]),
    ("tool_choice", "sometimes"), ("n", 3)])
def test_malformed_passthrough_fields_are_400_naming_them(api, field, value):
    with pytest.raises(openai.BadRequestError) as failure:
        client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=ASK,
                                            extra_body={field: value})
    assert failure.value.body["param"] == field


def test_the_async_client_streams_and_answers_whole(api):
    async def run():
        async with openai.AsyncOpenAI(base_url=api["base"], api_key=api["key"],
                                      max_retries=0) as aclient:
            api["ollama"].queue_reply(api["ollama"].make_tokens(12), delay=0.002)
            stream = await aclient.chat.completions.create(
                model="ollama:llama3.2:latest", messages=ASK, stream=True,
                stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            api["ollama"].queue_reply("whole")
            whole = await aclient.chat.completions.create(model="ollama:llama3.2:latest",
                                                          messages=ASK)
            return chunks, whole

    chunks, whole = asyncio.run(run())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(
        api["ollama"].make_tokens(12))
    assert chunks[-1].usage.completion_tokens == 12
    assert whole.choices[0].message.content == "whole"


def test_fifty_streams_at_once_each_answered_and_accounted_once(api):
    fake, ledger = api["ollama"], api["services"].accounting.ledger
    # An earlier test's last reply may still be booking its usage after its caller got the
    # end of the stream (CI once counted 51): let every reply settle first.
    assert api["services"].replies.wait_settled(10)
    before = len(ledger.usage_records(limit=10_000))
    tokens = fake.make_tokens(20)
    for _ in range(50):
        fake.queue_reply(tokens, delay=0.005)

    async def one(aclient, i):
        stream = await aclient.chat.completions.create(
            model="ollama:llama3.2:latest", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"stream {i}"}])
        text, usage = "", None
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        return text, usage

    async def run():
        async with openai.AsyncOpenAI(base_url=api["base"], api_key=api["key"], max_retries=0,
                                      timeout=60) as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(50)))

    results = asyncio.run(run())
    assert [text for text, _ in results] == ["".join(tokens)] * 50
    assert all(usage.completion_tokens == 20 for _, usage in results)
    assert api["services"].replies.wait_settled(10)  # each booked once, none still to come
    rows = ledger.usage_records(limit=10_000)[: len(ledger.usage_records(limit=10_000)) - before]
    assert len(rows) == 50 and {r.via for r in rows} == {"api: laptop"}
    assert sum(r.completion_tokens for r in rows) == 50 * 20


# -- the same through the Ollama-compatible surface ---------------------------------------------


def test_ollama_client_tools_format_and_stop(api):
    fake = api["ollama"]
    fake.queue_reply("", tool_calls=[("get_weather", {"city": "Rome"})])
    answer = ollama_client(api).chat(model="ollama:qwen3:8b", messages=ASK, tools=[WEATHER])
    assert answer.message.tool_calls[0].function.name == "get_weather"
    assert dict(answer.message.tool_calls[0].function.arguments) == {"city": "Rome"}
    fake.queue_reply("", tool_calls=[("get_weather", {"city": "Nice"})])
    parts = list(ollama_client(api).chat(model="ollama:qwen3:8b", messages=ASK, stream=True,
                                         tools=[WEATHER]))
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [dict(c.function.arguments) for c in calls] == [{"city": "Nice"}] and parts[-1].done
    fake.queue_reply(['{"a": 1}'])
    ollama_client(api).chat(model="ollama:llama3.2:latest", messages=ASK, format="json",
                            options={"stop": ["###"]})
    sent = fake.requests_to("/api/chat")[-1].json
    assert sent["format"] == "json" and sent["options"]["stop"] == ["###"]


def test_ollama_client_generate_streams_and_answers_whole(api):
    fake = api["ollama"]
    fake.queue_reply(fake.make_tokens(8), delay=0.002)
    parts = list(ollama_client(api).generate(model="ollama:llama3.2:latest", prompt="count",
                                             system="Be terse.", stream=True))
    assert "".join(p.response for p in parts) == "".join(fake.make_tokens(8))
    assert parts[-1].done and parts[-1].eval_count == 8
    sent = fake.requests_to("/api/chat")[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] and sent[1]["content"] == "count"
    fake.queue_reply("whole")
    assert ollama_client(api).generate(model="ollama:llama3.2:latest",
                                       prompt="hi").response == "whole"
    loaded = ollama_client(api).generate(model="ollama:llama3.2:latest", prompt="")
    assert loaded.done and loaded.done_reason == "load"


def test_ollama_client_show_and_tags_describe_local_and_cloud_models(api):
    shown = ollama_client(api).show("ollama:llava:latest")
    assert "vision" in shown.capabilities and shown.details.family == "llama"
    cloud = ollama_client(api).show("openrouter:openai/gpt-4o-mini")
    assert "completion" in cloud.capabilities
    tags = {m.model: m for m in ollama_client(api).list().models}
    assert tags["ollama:llava:latest"].size > 0 and tags["ollama:llava:latest"].details.parameter_size == "7B"
    import ollama

    with pytest.raises(ollama.ResponseError) as missing:
        ollama_client(api).show("openrouter:no/such-model")
    assert missing.value.status_code == 404
