"""OpenAI-compatible local servers (STUDIO_OPENAI_SERVERS): the client against a fake
llama-server / vLLM on 127.0.0.1 through the official openai client, and the studio routing
`local:` models over two of them, with failover and local accounting."""

from __future__ import annotations

import socket

import pytest

from studio.clients.openai_compat import OpenAICompatClient
from studio.config import Settings
from studio.errors import (BackendRejected, BackendUnavailable, ConfigError, ModelNotFound,
                           StreamInterrupted)
from studio.events import ChatDelta, ChatDone, ChatMessage, ChatNotice, ChatOptions
from studio.model_id import ModelId
from studio.services import build_services
from tests.conftest import free_port
from tests.fakes.openai_server import FakeOpenAIServer

MODEL = "qwen2.5-coder-7b-instruct-q4_k_m"


@pytest.fixture
def llama():
    fake = FakeOpenAIServer([MODEL]).start()
    yield fake
    fake.stop()


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ChatDelta))


# -- the client -------------------------------------------------------------------------------


def test_models_come_from_v1_models_with_what_llama_server_says_of_them(llama):
    (model,) = OpenAICompatClient(llama.url).list_models()
    assert (model.name, model.owned_by, model.context_length, model.size) == \
        (MODEL, "llamacpp", 32768, 4677120000)


def test_a_streamed_reply_with_its_token_counts(llama):
    llama.queue_reply("Hello from llama")
    client = OpenAICompatClient(llama.url)
    events = list(client.chat_stream(MODEL, [ChatMessage("user", "hi")],
                                     ChatOptions(temperature=0.2, max_tokens=50)))
    assert text_of(events) == "Hello from llama"
    done = events[-1]
    assert isinstance(done, ChatDone) and done.backend == "local" and done.model == MODEL
    assert done.usage.completion_tokens == 3 and done.usage.prompt_tokens == 1
    (request,) = llama.chat_requests()
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.json["temperature"] == 0.2 and request.json["max_tokens"] == 50
    assert "usage" not in request.json  # OpenRouter's extras are not sent


def test_a_cut_stream_keeps_what_came_and_says_so(llama):
    llama.queue_reply("one two three four", cut_after=2)
    seen = []
    with pytest.raises(StreamInterrupted, match="broke off|before finishing"):
        for event in OpenAICompatClient(llama.url).chat_stream(MODEL, [ChatMessage("user", "x")]):
            seen.append(event)
    assert text_of(seen) == "one two "


def test_refusals_are_sentences_and_never_show_the_key():
    vllm = FakeOpenAIServer(["meta-llama/Llama-3.1-8B-Instruct"], api_key="sk-local-secret",
                            strict_models=True).start()
    try:
        with pytest.raises(BackendRejected, match="refused the key") as caught:
            OpenAICompatClient(vllm.url, key="wrong").list_models()
        assert "wrong" not in str(caught.value)
        good = OpenAICompatClient(vllm.url, key="sk-local-secret")
        assert [m.name for m in good.list_models()] == ["meta-llama/Llama-3.1-8B-Instruct"]
        with pytest.raises(ModelNotFound, match="has no model 'nope'") as caught:
            list(good.chat_stream("nope", [ChatMessage("user", "x")]))
        assert "sk-local-secret" not in str(caught.value)
    finally:
        vllm.stop()


def test_a_server_that_is_not_there():
    with pytest.raises(BackendUnavailable, match="Can't reach the server"):
        OpenAICompatClient(f"http://127.0.0.1:{free_port()}/v1", timeout=2).list_models()


def test_a_server_that_takes_the_connection_but_never_answers_is_said_to_be_too_slow():
    # A listening socket nobody accepts from: the connection opens, no byte ever comes back.
    # Both paths (the openai client's chat and the plain list) must say "in time", whichever
    # httpx the openai package is built on.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        client = OpenAICompatClient(f"http://127.0.0.1:{hung.getsockname()[1]}/v1", timeout=0.5)
        try:
            with pytest.raises(BackendUnavailable, match="didn't answer in time"):
                list(client.chat_stream(MODEL, [ChatMessage("user", "hello")]))
            with pytest.raises(BackendUnavailable, match="didn't answer in time"):
                client.list_models()
        finally:
            client.close()


# -- the studio over two servers --------------------------------------------------------------


@pytest.fixture
def two(tmp_path):
    fakes = {"big": FakeOpenAIServer([MODEL]).start(), "small": FakeOpenAIServer([MODEL]).start()}
    setting = ", ".join(f"{name}={fake.url}" for name, fake in fakes.items())
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_OPENAI_SERVERS": setting,
         "STUDIO_HEALTH_INTERVAL": "3600"}, dotenv_path=None))
    services.local_health.check_now()
    yield services, fakes
    services.local_health.close()
    services.images.close()
    for fake in fakes.values():
        fake.stop()


def test_local_models_are_chatted_with_through_the_router_and_fail_over(two):
    services, fakes = two
    assert [m.name for m in services.local_servers.list_models()] == [MODEL]
    fakes["big"].queue_reply("from big")
    events = list(services.router.chat_stream(f"local:{MODEL}", [ChatMessage("user", "hi")]))
    assert text_of(events) == "from big" and events[-1].backend == "local"

    fakes["big"].stop()
    fakes["small"].queue_reply("from small")
    events = list(services.router.chat_stream(f"local:{MODEL}", [ChatMessage("user", "again")]))
    notices = [e.text for e in events if isinstance(e, ChatNotice)]
    assert notices and notices[0].startswith("Answered by the local server host small: big: ")
    assert text_of(events) == "from small"


def test_the_status_strip_shows_each_server(two):
    services, fakes = two
    fakes["small"].stop()
    statuses = {s.label: s for s in services.status.statuses(fresh=True)}
    assert statuses["Local server big"].state == "reachable"
    assert statuses["Local server small"].state == "unreachable"
    assert "STUDIO_OPENAI_SERVERS" in statuses["Local server small"].advice
    from studio.ops.status import backend_key
    assert backend_key(statuses["Local server big"]) == "local_server:big"


def test_a_local_server_reply_is_accounted_as_local_work(two):
    services, fakes = two
    fakes["big"].queue_reply("counted")
    events = list(services.router.chat_stream(f"local:{MODEL}", [ChatMessage("user", "hi")]))
    done = events[-1]
    record = services.accounting.record_chat("owner", done.backend, done.model, done.usage)
    # no bill, the energy of the reply's time instead (as for Ollama)
    assert (record.backend, record.cost_usd, record.completion_tokens) == ("local", 0.0, 1)
    assert record.energy_kwh is not None and record.energy_kwh >= 0


def test_a_bad_servers_entry_is_a_sentence(tmp_path):
    with pytest.raises(ConfigError, match="STUDIO_OPENAI_SERVERS: the address in entry"):
        Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_OPENAI_SERVERS": "box:8080"},
                          dotenv_path=None)


def test_the_pickers_and_the_api_list_the_servers_models(two):
    services, fakes = two
    picker = services.models.picker()
    assert (f"Local server · {MODEL}", f"local:{MODEL}") in picker.choices
    assert picker.default != f"local:{MODEL}" or not [
        v for v in picker.values if v.startswith("ollama:")]  # Ollama's own come first
    choices, _problems = services.models.choices()
    assert f"local:{MODEL}" in [v for _l, v in choices]
    shown = services.models.describe(ModelId.parse(f"local:{MODEL}"))
    assert shown["capabilities"] == ["completion"]

    # a server that stops takes its models out of the pickers at the next health check,
    # and the pickers' version moves so open pages refresh
    before = services.models.version()
    for fake in fakes.values():
        fake.stop()
    services.local_health.check_now()
    assert f"local:{MODEL}" not in services.models.picker().values
    assert services.models.version() != before
