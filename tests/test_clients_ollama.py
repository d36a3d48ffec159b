"""OllamaClient against the fake Ollama server, through the real ollama-python client."""

from __future__ import annotations

import base64
import socket
import time

import httpx
import ollama
import pytest

from studio.clients.ollama import ModelInfo, OllamaClient, format_size
from studio.errors import (
    BackendRejected,
    BackendUnavailable,
    GenerationFailed,
    ModelNotFound,
    StreamInterrupted,
)
from studio.events import ChatDelta, ChatDone, ChatMessage, ChatOptions, ChatThinking
from tests.fakes import ollama_server
from tests.fakes.ollama_server import make_tokens


fake_ollama = pytest.fixture(ollama_server.fake_ollama)  # llama3.2 installed; conftest.py wires the same


@pytest.fixture
def client(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=10)
    yield client
    client.close()


@pytest.fixture
def closed_port_url():
    """A URL nobody listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_port_url():
    """A URL whose listen backlog is full: connecting to it hangs until the connect timeout."""
    with socket.socket() as server, socket.socket() as filler, socket.socket() as probe:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            yield f"http://127.0.0.1:{port}"
        else:
            pytest.skip("this OS accepts connections past a full backlog")


HELLO = [ChatMessage("user", "Hello there")]


def test_ollama_version(client):
    assert client.version() == "0.12.6"


def test_ollama_list_models_sorted_with_details(fake_ollama, client):
    fake_ollama.add_model("qwen3:8b", family="qwen3", parameter_size="8.2B", size=5_225_388_164)
    models = client.list_models()
    assert [m.name for m in models] == ["llama3.2:latest", "qwen3:8b"]
    llama = models[0]
    assert (llama.size, llama.family, llama.parameter_size, llama.quantization) == (
        2_019_393_189, "llama", "3.2B", "Q4_K_M")
    assert len(llama.digest) == 64 and llama.modified_at
    assert llama.label == "llama3.2:latest · 2.0 GB · llama 3.2B Q4_K_M"


def test_ollama_list_models_empty(fake_ollama, client):
    fake_ollama.remove_model("llama3.2")
    assert client.list_models() == []


@pytest.mark.parametrize("size, text", [(2_019_393_189, "2.0 GB"), (4_700_000_000, "4.7 GB"),
                                        (274_302_450, "274 MB"), (12_000_000_000, "12 GB"), (999, "999 B")])
def test_ollama_format_size(size, text):
    assert format_size(size) == text


def test_ollama_model_label_skips_missing_facts():
    assert ModelInfo("x:latest", 1_500_000).label == "x:latest · 1.5 MB"


def test_ollama_show(fake_ollama, client):
    info = client.show("llama3.2")
    assert info["capabilities"] == ["completion"]
    assert info["details"]["family"] == "llama"
    assert info["model_info"]["general.architecture"] == "llama"
    assert info["template"] and info["parameters"] and info["modelfile"] and info["license"]
    assert fake_ollama.requests_to("/api/show")[-1].json == {"model": "llama3.2"}


@pytest.mark.parametrize("capabilities, expected", [
    (("completion", "vision"), True),
    (("completion",), False),
    (None, True),  # a server before v0.6.4: no capabilities, projector_info tells
])
def test_ollama_supports_vision(fake_ollama, client, capabilities, expected):
    fake_ollama.add_model("eyes", family="llava" if capabilities is None else "llama",
                          capabilities=capabilities)
    assert client.supports_vision("eyes") is expected


def test_ollama_supports_vision_is_cached(fake_ollama, client):
    fake_ollama.add_model("llava", capabilities=("completion", "vision"))
    assert client.supports_vision("llava") and client.supports_vision("llava")
    assert len(fake_ollama.requests_to("/api/show")) == 1


def test_ollama_running_and_unload(fake_ollama, client):
    assert client.running() == []
    list(client.chat_stream("llama3.2", HELLO, ChatOptions(num_ctx=8192)))
    [loaded] = client.running()
    assert (loaded.name, loaded.size, loaded.size_vram, loaded.context_length) == (
        "llama3.2:latest", 2_019_393_189, 2_019_393_189, 8192)
    assert loaded.expires_at

    client.unload("llama3.2")

    assert fake_ollama.requests_to("/api/chat")[-1].json == {
        "model": "llama3.2", "messages": [], "tools": [], "stream": False, "keep_alive": 0}
    assert client.running() == []


def test_ollama_chat_stream_events_and_request_body(fake_ollama, client):
    fake_ollama.queue_reply(["Hi", " there", "!"])
    image = b"\x89PNG\r\n\x1a\nfake image bytes"
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "What is this?", images=(image,))]
    options = ChatOptions(temperature=0.2, top_p=0.9, num_ctx=4096, seed=7, max_tokens=100)

    events = list(client.chat_stream("llama3.2", messages, options))

    assert events[:3] == [ChatDelta("Hi"), ChatDelta(" there"), ChatDelta("!")]
    assert isinstance(events[3], ChatDone) and len(events) == 4
    assert events[3].backend == "ollama" and events[3].model == "llama3.2"
    request = fake_ollama.requests_to("/api/chat")[-1]
    assert request.json == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is this?",
                      "images": [base64.b64encode(image).decode()]}],
        "tools": [],
        "stream": True,
        "options": {"temperature": 0.2, "top_p": 0.9, "num_ctx": 4096, "seed": 7, "num_predict": 100},
    }
    assert request.headers["content-type"] == "application/json"


def test_ollama_chat_stream_sends_only_options_that_are_set(fake_ollama, client):
    list(client.chat_stream("llama3.2", HELLO, ChatOptions(temperature=0.0)))
    list(client.chat_stream("llama3.2", HELLO))
    with_options, without = [r.json for r in fake_ollama.requests_to("/api/chat")]
    assert with_options["options"] == {"temperature": 0.0}
    assert "options" not in without and "think" not in without and "think" not in with_options


@pytest.mark.parametrize("think", [True, False])
def test_ollama_chat_stream_sends_think_when_set(fake_ollama, client, think):
    fake_ollama.add_model("qwen3", capabilities=("completion", "thinking"))
    list(client.chat_stream("qwen3", HELLO, ChatOptions(think=think)))
    assert fake_ollama.requests_to("/api/chat")[-1].json["think"] is think


def test_ollama_chat_stream_figures(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(20), delay=0.001)
    *deltas, done = client.chat_stream("llama3.2", HELLO)
    sent = fake_ollama.done_chunks[-1]
    usage = done.usage
    assert len(deltas) == 20
    assert usage.completion_tokens == sent["eval_count"] == 20
    assert usage.prompt_tokens == sent["prompt_eval_count"]
    assert usage.tokens_per_s == pytest.approx(sent["eval_count"] / sent["eval_duration"] * 1e9)
    assert usage.eval_ms == pytest.approx(sent["eval_duration"] / 1e6)
    assert usage.load_ms == pytest.approx(sent["load_duration"] / 1e6)
    assert usage.prompt_eval_ms == pytest.approx(sent["prompt_eval_duration"] / 1e6)
    assert usage.total_ms == pytest.approx(sent["total_duration"] / 1e6)
    assert usage.total_ms >= usage.eval_ms >= 20 * 1.0  # 20 tokens, 1 ms apart
    assert usage.done_reason == "stop"


def test_ollama_chat_stream_length_limit_reported(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(10))
    *deltas, done = client.chat_stream("llama3.2", HELLO, ChatOptions(max_tokens=3))
    assert len(deltas) == 3 and done.usage.done_reason == "length"


def test_ollama_chat_stream_thinking(fake_ollama, client):
    fake_ollama.add_model("qwen3", capabilities=("completion", "thinking"))
    fake_ollama.queue_reply(["There are ", "3."], thinking=["Count ", "the r's"])
    events = list(client.chat_stream("qwen3", HELLO))
    assert events[:4] == [ChatThinking("Count "), ChatThinking("the r's"), ChatDelta("There are "), ChatDelta("3.")]
    assert events[4].usage.completion_tokens == 4


def test_ollama_refused_connection_streaming(closed_port_url):
    client = OllamaClient(closed_port_url)
    with pytest.raises(BackendUnavailable) as err:
        list(client.chat_stream("llama3.2", HELLO))
    assert err.value.message == f"Can't reach Ollama at {closed_port_url}."
    assert err.value.hint == "Start it with `ollama serve` (or check OLLAMA_HOST)."
    assert isinstance(err.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("call", ["list_models", "running", "version"])
def test_ollama_refused_connection(closed_port_url, call):
    client = OllamaClient(closed_port_url)
    with pytest.raises(BackendUnavailable) as err:
        getattr(client, call)()
    assert str(err.value) == (f"Can't reach Ollama at {closed_port_url}. "
                              "Start it with `ollama serve` (or check OLLAMA_HOST).")
    assert isinstance(err.value.__cause__, (ConnectionError, httpx.ConnectError))


@pytest.mark.parametrize("call", [
    lambda c: list(c.chat_stream("ghost", HELLO)),
    lambda c: c.show("ghost"),
    lambda c: c.unload("ghost"),
    lambda c: c.supports_vision("ghost"),
])
def test_ollama_model_not_found(fake_ollama, client, call):
    with pytest.raises(ModelNotFound) as err:
        call(client)
    assert err.value.message == f"Model 'ghost' is not installed in Ollama at {fake_ollama.url}."
    assert err.value.hint == "Pull it with `ollama pull ghost` or from the Models tab."
    assert err.value.status == 404
    assert isinstance(err.value.__cause__, ollama.ResponseError)


def test_ollama_error_line_mid_stream(fake_ollama, client):
    fake_ollama.queue_reply(["Partial ", "answer"], error_after=2, error="CUDA error: out of memory")
    stream = client.chat_stream("llama3.2", HELLO)
    assert [next(stream), next(stream)] == [ChatDelta("Partial "), ChatDelta("answer")]
    with pytest.raises(GenerationFailed) as err:
        next(stream)
    assert not isinstance(err.value, StreamInterrupted)
    assert err.value.message == "Ollama reported an error while writing the reply: CUDA error: out of memory"
    assert err.value.__cause__.status_code == -1


@pytest.mark.parametrize("status, text", [(500, "llama runner process has terminated"),
                                          (503, "server busy, please try again.  maximum pending requests exceeded")])
def test_ollama_status_error_before_stream(fake_ollama, client, status, text):
    fake_ollama.queue_reply("never", status_error=(status, text))
    with pytest.raises(BackendRejected) as err:
        list(client.chat_stream("llama3.2", HELLO))
    assert err.value.status == status
    assert err.value.message == f"Ollama at {fake_ollama.url} refused the request: {text} (HTTP {status})."


def test_ollama_think_on_model_without_thinking_is_rejected(fake_ollama, client):
    with pytest.raises(BackendRejected) as err:
        list(client.chat_stream("llama3.2", HELLO, ChatOptions(think=True)))
    assert err.value.status == 400
    assert '"llama3.2" does not support thinking (HTTP 400)' in err.value.message


def test_ollama_chat_with_an_embedding_model_says_pick_a_chat_model(fake_ollama, client):
    fake_ollama.add_model("nomic-embed-text", family="nomic-bert", capabilities=("embedding",))
    with pytest.raises(BackendRejected) as err:
        list(client.chat_stream("nomic-embed-text", HELLO))
    assert err.value.status == 400
    assert str(err.value) == (
        "'nomic-embed-text' can't chat: Ollama says \"nomic-embed-text\" does not support chat. "
        "It is probably an embedding model, for the API's embeddings. Pick a chat model; the "
        "Models tab says what each model is for.")


def test_ollama_cut_stream_keeps_what_arrived(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(10), cut_after=4)
    received = []
    with pytest.raises(StreamInterrupted) as err:
        for event in client.chat_stream("llama3.2", HELLO):
            received.append(event)
    assert received == [ChatDelta(t) for t in make_tokens(4)]
    assert err.value.message == "The connection to Ollama dropped in the middle of the reply."
    assert "send the message again" in err.value.hint
    assert isinstance(err.value.__cause__, httpx.RemoteProtocolError)


def test_ollama_cut_before_any_token(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(3), cut_after=0)
    with pytest.raises(StreamInterrupted, match="before the reply started"):
        list(client.chat_stream("llama3.2", HELLO))


@pytest.mark.parametrize("call", [lambda c: c.list_models(), lambda c: list(c.chat_stream("x", HELLO))])
def test_ollama_connect_timeout(silent_port_url, call):
    client = OllamaClient(silent_port_url, timeout=0.3)
    with pytest.raises(BackendUnavailable) as err:
        call(client)
    assert err.value.message == f"Can't reach Ollama at {silent_port_url}: no answer within 0.3 s."
    assert isinstance(err.value.__cause__, httpx.ConnectTimeout)


def test_ollama_timeout_before_first_token(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=0.2)
    fake_ollama.queue_reply(["late"], delay=2)
    with pytest.raises(BackendUnavailable) as err:
        list(client.chat_stream("llama3.2", HELLO))
    assert err.value.message == f"Ollama at {fake_ollama.url} did not answer: timed out after 0.2 s."
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_ollama_timeout_mid_stream(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=0.2)
    fake_ollama.queue_reply(["quick ", "then stuck"], delay=[0, 2])
    received = []
    with pytest.raises(StreamInterrupted, match="nothing arrived for 0.2 s") as err:
        for event in client.chat_stream("llama3.2", HELLO):
            received.append(event)
    assert received == [ChatDelta("quick ")]
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_ollama_closing_stream_closes_connection(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(200), delay=0.05)  # 10 s if nobody stopped it
    stream = client.chat_stream("llama3.2", HELLO)
    assert next(stream) == ChatDelta("tok0 ")
    started = time.monotonic()

    stream.close()

    assert fake_ollama.client_gone.wait(timeout=2)
    assert time.monotonic() - started < 1
    assert fake_ollama.disconnects == 1
    assert fake_ollama.done_chunks == []


def test_ollama_two_streams_at_once(fake_ollama, client):
    fake_ollama.queue_reply(make_tokens(20), delay=0.02)  # first tab: slow
    fake_ollama.queue_reply(["fast ", "reply"])  # second tab
    slow = client.chat_stream("llama3.2", HELLO)
    assert next(slow) == ChatDelta("tok0 ")

    fast_events = list(client.chat_stream("llama3.2", HELLO))
    slow_events = list(slow)

    assert [e.text for e in fast_events[:-1]] == ["fast ", "reply"] and isinstance(fast_events[-1], ChatDone)
    assert len(slow_events) == 20 and isinstance(slow_events[-1], ChatDone)
    assert fake_ollama.max_streams_active == 2


# -- pull / delete / copy ----------------------------------------------------------------------


def test_ollama_pull_yields_progress_per_layer_and_installs(fake_ollama, client):
    fake_ollama.add_remote_model("mistral", size=4_000_000)

    lines = list(client.pull("mistral"))

    assert lines[0].status == "pulling manifest"
    assert lines[-1].status == "success"
    layers = [p for p in lines if p.digest]
    assert layers[0].status == f"pulling {layers[0].layer}" and len(layers[0].layer) == 12
    first = [p for p in layers if p.digest == layers[0].digest]
    assert first[-1].completed == first[-1].total and first[-1].total > 3_000_000
    assert "mistral:latest" in fake_ollama.installed()
    assert fake_ollama.requests_to("/api/pull")[0].json["stream"] is True


def test_ollama_pull_unknown_model_shows_ollamas_error(client):
    with pytest.raises(ModelNotFound) as err:
        list(client.pull("no-such-model"))
    assert "pull model manifest: file does not exist" in str(err.value)
    assert "'no-such-model'" in str(err.value)


def test_ollama_pull_bad_name_is_rejected(client):
    with pytest.raises(BackendRejected, match="invalid model name"):
        list(client.pull("../etc"))


def test_ollama_pull_closing_stream_stops_download(fake_ollama, client):
    fake_ollama.add_remote_model("mistral")
    fake_ollama.pull_delay = 0.05
    stream = client.pull("mistral")
    assert next(stream).status == "pulling manifest"
    next(stream)

    stream.close()

    assert fake_ollama.client_gone.wait(timeout=2)
    assert "mistral:latest" not in fake_ollama.installed()


def test_ollama_pull_refused_connection(closed_port_url):
    with pytest.raises(BackendUnavailable, match="Can't reach Ollama"):
        list(OllamaClient(closed_port_url, timeout=2).pull("mistral"))


def test_ollama_delete_removes_model(fake_ollama, client):
    client.delete("llama3.2")
    assert fake_ollama.installed() == []
    assert fake_ollama.requests_to("/api/delete")[0].json == {"model": "llama3.2"}


def test_ollama_delete_unknown_model(client):
    with pytest.raises(ModelNotFound, match="'ghost' is not installed"):
        client.delete("ghost")


def test_ollama_copy_adds_a_tag(fake_ollama, client):
    client.copy("llama3.2", "llama3.2:backup")
    assert fake_ollama.installed() == ["llama3.2:backup", "llama3.2:latest"]
    assert fake_ollama.requests_to("/api/copy")[0].json == {"source": "llama3.2",
                                                             "destination": "llama3.2:backup"}


def test_ollama_copy_unknown_source(client):
    with pytest.raises(ModelNotFound, match="'ghost'"):
        client.copy("ghost", "x")
