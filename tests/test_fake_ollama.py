"""The fake Ollama server itself: wire format, endpoints and controls, read raw where it matters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import ollama
import pytest

from tests.fakes import ollama_server
from tests.fakes.ollama_server import FakeOllama, go_json, make_tokens, parse_keep_alive, split_tokens

fake_ollama = pytest.fixture(ollama_server.fake_ollama)  # the same fixture conftest.py wires in

REPLY_KEYS = {"model", "created_at", "message", "done"}
FINAL_KEYS = {"done_reason", "total_duration", "load_duration", "prompt_eval_count",
              "prompt_eval_duration", "eval_count", "eval_duration"}
HELLO = {"model": "llama3.2", "messages": [{"role": "user", "content": "hello world"}]}


def raw_exchange(url: str, method: str, path: str, body: dict | None = None) -> tuple[str, list[bytes], bool]:
    """Send one request on a bare socket; return (head, chunk payloads, saw the terminating chunk)."""
    host, port = url.removeprefix("http://").split(":")
    data = b"" if body is None else json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head.decode(), chunks, rest == b"\r\n"
        chunks.append(rest[:size])
        assert rest[size:size + 2] == b"\r\n", "chunk not followed by CRLF"
        rest = rest[size + 2:]
    return head.decode(), chunks, False


def ndjson_lines(response: httpx.Response) -> list[dict]:
    text = response.read().decode()
    assert text.endswith("\n") and "\n\n" not in text and not text.startswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_fake_health_get_and_head(fake_ollama):
    for method in ("GET", "HEAD"):
        response = httpx.request(method, fake_ollama.url + "/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-length"] == "17"
        assert response.text == ("Ollama is running" if method == "GET" else "")


def test_fake_version_and_unknown_path(fake_ollama):
    assert httpx.get(fake_ollama.url + "/api/version").json() == {"version": "0.12.6"}
    missing = httpx.get(fake_ollama.url + "/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


def test_fake_chat_stream_framing_is_one_object_per_chunk(fake_ollama):
    fake_ollama.queue_reply(["Hi", " <b>&", " there"])
    head, chunks, terminated = raw_exchange(fake_ollama.url, "POST", "/api/chat", HELLO)

    assert head.startswith("HTTP/1.1 200 OK\r\n")
    headers = head.lower()
    assert "content-type: application/x-ndjson" in headers
    assert "transfer-encoding: chunked" in headers and "content-length" not in headers
    assert terminated
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)
    assert b"\\u003cb\\u003e\\u0026" in chunks[1]  # Go's HTML escaping
    objects = [json.loads(c) for c in chunks]
    assert [o["message"]["content"] for o in objects] == ["Hi", " <b>&", " there", ""]
    for obj in objects:
        assert REPLY_KEYS <= obj.keys() and obj["message"]["role"] == "assistant"
        assert obj["model"] == "llama3.2" and obj["created_at"].endswith("Z")
    assert [o["done"] for o in objects] == [False, False, False, True]
    final = objects[-1]
    assert FINAL_KEYS <= final.keys() and final["done_reason"] == "stop"
    assert all(isinstance(final[k], int) and final[k] > 0 for k in FINAL_KEYS - {"done_reason"})
    assert final["eval_count"] == 3
    assert final["total_duration"] >= final["eval_duration"]
    assert not FINAL_KEYS & objects[0].keys()


def test_fake_chat_stream_read_with_httpx(fake_ollama):
    with httpx.stream("POST", fake_ollama.url + "/api/chat", json=HELLO) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        lines = ndjson_lines(response)
    assert "".join(o["message"]["content"] for o in lines) == "You said: hello world"


def test_fake_chat_stream_false_is_one_json_object(fake_ollama):
    fake_ollama.queue_reply(["a", "b"])
    response = httpx.post(fake_ollama.url + "/api/chat", json={**HELLO, "stream": False})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert "content-length" in response.headers
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "ab"}
    assert body["done"] is True and FINAL_KEYS <= body.keys()


def test_fake_thinking_model_thinks_first_unless_told_not_to(fake_ollama):
    fake_ollama.add_model("qwen3", capabilities=("completion", "thinking"))
    fake_ollama.queue_reply(["Yes."], thinking=["Hmm, ", "yes."])
    fake_ollama.queue_reply(["No thinking."], thinking=["unused"])
    request = {**HELLO, "model": "qwen3"}
    with httpx.stream("POST", fake_ollama.url + "/api/chat", json=request) as response:
        thinking = ndjson_lines(response)
    with httpx.stream("POST", fake_ollama.url + "/api/chat", json={**request, "think": False}) as response:
        plain = ndjson_lines(response)
    assert [(o["message"].get("thinking"), o["message"]["content"]) for o in thinking] == [
        ("Hmm, ", ""), ("yes.", ""), (None, "Yes."), (None, "")]
    assert thinking[-1]["eval_count"] == 3
    assert all("thinking" not in o["message"] for o in plain)


def test_fake_think_on_model_without_thinking_is_400(fake_ollama):
    response = httpx.post(fake_ollama.url + "/api/chat", json={**HELLO, "think": True})
    assert response.status_code == 400
    assert response.json() == {"error": '"llama3.2" does not support thinking'}


@pytest.mark.parametrize("path, body, what", [
    ("/api/chat", {"model": "nomic-embed-text", "messages": [{"role": "user", "content": "hi"}]},
     "chat"),
    ("/api/chat", {"model": "nomic-embed-text", "messages": []}, "chat"),  # a load, too
    ("/api/generate", {"model": "nomic-embed-text", "prompt": "hi"}, "generate"),
])
def test_fake_embedding_model_refuses_chat_with_400(fake_ollama, path, body, what):
    fake_ollama.add_model("nomic-embed-text", family="nomic-bert", capabilities=("embedding",))
    response = httpx.post(fake_ollama.url + path, json=body)
    assert response.status_code == 400
    assert response.json() == {"error": f'"nomic-embed-text" does not support {what}'}


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"model": "ghost", "messages": []}),
    ("/api/generate", {"model": "ghost", "prompt": "hi"}),
    ("/api/show", {"model": "ghost"}),
])
def test_fake_unknown_model_is_404(fake_ollama, path, body):
    response = httpx.post(fake_ollama.url + path, json=body)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {"error": "model 'ghost' not found"}


@pytest.mark.parametrize("raw, error", [(b"", "missing request body"), (b'{"messages": []}', "model is required"),
                                        (b"{nope", "invalid character"), (b"[]", "cannot unmarshal")])
def test_fake_bad_chat_request_is_400(fake_ollama, raw, error):
    response = httpx.post(fake_ollama.url + "/api/chat", content=raw)
    assert response.status_code == 400 and error in response.json()["error"]


def test_fake_error_after_sends_error_line_then_ends(fake_ollama):
    fake_ollama.queue_reply(make_tokens(5), error_after=2, error="boom")
    head, chunks, terminated = raw_exchange(fake_ollama.url, "POST", "/api/chat", HELLO)
    assert head.startswith("HTTP/1.1 200 OK")
    assert [json.loads(c) for c in chunks][2:] == [{"error": "boom"}]
    assert len(chunks) == 3 and terminated


def test_fake_error_before_any_output_is_status_500(fake_ollama):
    fake_ollama.queue_reply(make_tokens(5), error_after=0, error="boom")
    response = httpx.post(fake_ollama.url + "/api/chat", json=HELLO)
    assert (response.status_code, response.json()) == (500, {"error": "boom"})
    assert response.headers["content-type"] == "application/json"


def test_fake_status_error_plan(fake_ollama):
    fake_ollama.queue_reply("unused", status_error=(503, "server busy"))
    response = httpx.post(fake_ollama.url + "/api/chat", json=HELLO)
    assert (response.status_code, response.json()) == (503, {"error": "server busy"})
    assert fake_ollama.pending_replies == 0


def test_fake_cut_after_drops_connection_mid_body(fake_ollama):
    fake_ollama.queue_reply(make_tokens(5), cut_after=2)
    head, chunks, terminated = raw_exchange(fake_ollama.url, "POST", "/api/chat", HELLO)
    assert head.startswith("HTTP/1.1 200 OK")
    assert [json.loads(c)["message"]["content"] for c in chunks] == ["tok0 ", "tok1 "]
    assert not terminated
    assert fake_ollama.done_chunks == []


def test_fake_num_predict_stops_with_length(fake_ollama):
    fake_ollama.queue_reply(make_tokens(5))
    with httpx.stream("POST", fake_ollama.url + "/api/chat", json={**HELLO, "options": {"num_predict": 2}}) as r:
        lines = ndjson_lines(r)
    assert len(lines) == 3 and lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 2


def test_fake_chat_load_and_unload(fake_ollama):
    loaded = httpx.post(fake_ollama.url + "/api/chat", json={"model": "llama3.2", "messages": []})
    assert loaded.json()["done_reason"] == "load"
    assert [m["name"] for m in httpx.get(fake_ollama.url + "/api/ps").json()["models"]] == ["llama3.2:latest"]

    unloaded = httpx.post(fake_ollama.url + "/api/chat",
                          json={"model": "llama3.2", "messages": [], "keep_alive": 0, "stream": True})

    assert unloaded.headers["content-type"] == "application/json; charset=utf-8"
    body = unloaded.json()
    assert body["done_reason"] == "unload" and body["done"] is True
    assert body["message"] == {"role": "assistant", "content": ""} and body["model"] == "llama3.2"
    assert httpx.get(fake_ollama.url + "/api/ps").json() == {"models": []}


def test_fake_generate_stream_and_unload(fake_ollama):
    fake_ollama.queue_reply(["Once ", "upon"])
    with httpx.stream("POST", fake_ollama.url + "/api/generate", json={"model": "llama3.2", "prompt": "Tell"}) as r:
        lines = ndjson_lines(r)
    assert [o["response"] for o in lines] == ["Once ", "upon", ""]
    assert all({"model", "created_at", "response", "done"} <= o.keys() for o in lines)
    assert FINAL_KEYS <= lines[-1].keys() and isinstance(lines[-1]["context"], list)
    assert fake_ollama.running_models() == ["llama3.2:latest"]

    unloaded = httpx.post(fake_ollama.url + "/api/generate", json={"model": "llama3.2", "keep_alive": 0}).json()

    assert (unloaded["response"], unloaded["done_reason"]) == ("", "unload")
    assert fake_ollama.running_models() == []


@pytest.mark.parametrize("keep_alive", ["0", 0, "0s"])
def test_fake_keep_alive_zero_unloads_after_the_reply(fake_ollama, keep_alive):
    httpx.post(fake_ollama.url + "/api/chat", json={**HELLO, "stream": False, "keep_alive": keep_alive})
    assert fake_ollama.running_models() == []


@pytest.mark.parametrize("value, seconds", [(None, None), (30, 30), (-1, -1), ("5m", 300), ("1h30m", 5400),
                                            ("0", 0), ("300ms", 0.3), ("-1m", -60)])
def test_fake_parse_keep_alive(value, seconds):
    assert parse_keep_alive(value) == seconds


def test_fake_parse_keep_alive_rejects_junk():
    with pytest.raises(ValueError, match='invalid duration "soon"'):
        parse_keep_alive("soon")


def test_fake_forever_keep_alive_shows_far_future_expiry(fake_ollama):
    httpx.post(fake_ollama.url + "/api/chat", json={"model": "llama3.2", "messages": [], "keep_alive": -1})
    [loaded] = httpx.get(fake_ollama.url + "/api/ps").json()["models"]
    assert loaded["expires_at"] > "2300"


def test_fake_tags_and_ps_shapes(fake_ollama):
    [model] = httpx.get(fake_ollama.url + "/api/tags").json()["models"]
    assert model["name"] == model["model"] == "llama3.2:latest"
    assert model["size"] == 2_019_393_189 and len(model["digest"]) == 64
    assert model["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                                "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
    httpx.post(fake_ollama.url + "/api/chat", json={"model": "llama3.2", "messages": []})
    [running] = httpx.get(fake_ollama.url + "/api/ps").json()["models"]
    assert {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"} <= running.keys()


def test_fake_show_fields(fake_ollama):
    fake_ollama.add_model("llava", family="llava", capabilities=("completion", "vision"))
    fake_ollama.add_model("oldie", capabilities=None)
    text = httpx.post(fake_ollama.url + "/api/show", json={"model": "llama3.2"}).json()
    vision = httpx.post(fake_ollama.url + "/api/show", json={"name": "llava"}).json()
    old = httpx.post(fake_ollama.url + "/api/show", json={"model": "oldie"}).json()
    for info in (text, vision, old):
        assert {"model_info", "details", "modelfile", "parameters", "template", "license"} <= info.keys()
    assert text["capabilities"] == ["completion"] and "projector_info" not in text
    assert vision["capabilities"] == ["completion", "vision"] and vision["projector_info"]
    assert "capabilities" not in old
    assert ollama.Client(host=fake_ollama.url).show("llava").capabilities == ["completion", "vision"]


def pull_lines(url: str, model: str) -> list[dict]:
    with httpx.stream("POST", url + "/api/pull", json={"model": model}) as response:
        assert response.status_code == 200
        return ndjson_lines(response)


def test_fake_pull_stream_shape(fake_ollama):
    fake_ollama.add_remote_model("qwen3:0.6b", family="qwen3", size=522_653_767)
    lines = pull_lines(fake_ollama.url, "qwen3:0.6b")

    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                          {"status": "success"}]
    layers = lines[1:-3]
    digests = list(dict.fromkeys(line["digest"] for line in layers))
    assert len(digests) == 4
    for digest in digests:
        progress = [line for line in layers if line["digest"] == digest]
        assert all(line["status"] == "pulling " + digest.removeprefix("sha256:")[:12] for line in progress)
        assert digest.startswith("sha256:") and len(digest) == 7 + 64
        assert "completed" not in progress[0]  # omitted while 0
        completed = [line.get("completed", 0) for line in progress]
        assert completed == sorted(completed) and completed[-1] == progress[0]["total"]
    assert sum(line["total"] for line in layers if line.get("completed") == line["total"]) == 522_653_767
    assert "qwen3:0.6b" in [m["name"] for m in httpx.get(fake_ollama.url + "/api/tags").json()["models"]]


def test_fake_pull_installed_model_reports_layers_complete_at_once(fake_ollama):
    lines = pull_lines(fake_ollama.url, "llama3.2")
    layers = lines[1:-3]
    assert len(layers) == 4 and all(line["completed"] == line["total"] for line in layers)


def test_fake_pull_unknown_model(fake_ollama):
    assert pull_lines(fake_ollama.url, "no-such-model") == [
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]


def test_fake_pull_without_stream(fake_ollama):
    fake_ollama.add_remote_model("gemma3")
    ok = httpx.post(fake_ollama.url + "/api/pull", json={"model": "gemma3", "stream": False})
    bad = httpx.post(fake_ollama.url + "/api/pull", json={"model": "nope", "stream": False})
    assert (ok.status_code, ok.json()) == (200, {"status": "success"})
    assert (bad.status_code, bad.json()) == (500, {"error": "pull model manifest: file does not exist"})


def test_fake_pull_through_the_ollama_client(fake_ollama):
    fake_ollama.add_remote_model("gemma3")
    statuses = [p.status for p in ollama.Client(host=fake_ollama.url).pull("gemma3", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"


def test_fake_pull_speed_is_controllable(fake_ollama):
    fake_ollama.add_remote_model("gemma3")
    fake_ollama.pull_delay, fake_ollama.pull_steps = 0.01, 2
    started = time.monotonic()
    lines = pull_lines(fake_ollama.url, "gemma3")
    assert len(lines) == 1 + 4 * 3 + 3
    assert time.monotonic() - started >= (len(lines) - 1) * 0.01


def test_fake_delete_and_copy(fake_ollama):
    copied = httpx.post(fake_ollama.url + "/api/copy", json={"source": "llama3.2", "destination": "backup"})
    assert (copied.status_code, copied.content) == (200, b"")
    assert fake_ollama.installed() == ["backup:latest", "llama3.2:latest"]
    deleted = httpx.request("DELETE", fake_ollama.url + "/api/delete", json={"model": "backup"})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert fake_ollama.installed() == ["llama3.2:latest"]

    missing = httpx.request("DELETE", fake_ollama.url + "/api/delete", json={"model": "backup"})
    bad_copy = httpx.post(fake_ollama.url + "/api/copy", json={"source": "ghost", "destination": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'backup' not found"})
    assert (bad_copy.status_code, bad_copy.json()) == (404, {"error": 'model "ghost" not found'})


def test_fake_records_requests(fake_ollama):
    client = ollama.Client(host=fake_ollama.url)
    client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], options={"seed": 1})
    request = fake_ollama.wait_for_request("/api/chat", timeout=2)
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.json == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                            "tools": [], "stream": False, "options": {"seed": 1}}
    assert request.headers["user-agent"].startswith("ollama-python/")
    with pytest.raises(TimeoutError):
        fake_ollama.wait_for_request("/api/chat", timeout=0.05, count=2)


def test_fake_default_reply_echoes_last_user_message(fake_ollama):
    fake_ollama.default_delay = 0.01
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second one"}]
    started = time.monotonic()
    reply = httpx.post(fake_ollama.url + "/api/chat", json={"model": "llama3.2", "messages": messages,
                                                            "stream": False}).json()
    assert reply["message"]["content"] == "You said: second one"
    assert time.monotonic() - started >= 4 * 0.01


def test_fake_replies_are_fifo(fake_ollama):
    fake_ollama.queue_reply("one")
    fake_ollama.queue_reply("two")
    replies = [httpx.post(fake_ollama.url + "/api/chat", json={**HELLO, "stream": False}).json() for _ in range(3)]
    assert [r["message"]["content"] for r in replies] == ["one", "two", "You said: hello world"]


def test_fake_notices_a_client_going_away(fake_ollama):
    fake_ollama.queue_reply(make_tokens(100), delay=0.05)
    with httpx.stream("POST", fake_ollama.url + "/api/chat", json=HELLO) as response:
        next(response.iter_lines())
    assert fake_ollama.client_gone.wait(timeout=2)
    assert fake_ollama.disconnects == 1


def test_fake_serves_streams_concurrently(fake_ollama):
    fake_ollama.queue_reply(make_tokens(10), delay=0.02)
    fake_ollama.queue_reply(make_tokens(3))
    with httpx.Client() as client:
        with client.stream("POST", fake_ollama.url + "/api/chat", json=HELLO) as slow:
            lines = slow.iter_lines()
            next(lines)
            with client.stream("POST", fake_ollama.url + "/api/chat", json=HELLO) as fast:
                assert len(ndjson_lines(fast)) == 4
            assert len(list(lines)) == 10
    assert fake_ollama.max_streams_active == 2


def test_fake_stop_ends_streams_in_flight():
    fake = FakeOllama().start()
    fake.add_model("llama3.2")
    fake.queue_reply(make_tokens(3), delay=[0, 10])
    with httpx.stream("POST", fake.url + "/api/chat", json=HELLO) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["message"]["content"] == "tok0 "
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)
    assert fake.disconnects == 0  # stopping is not a client going away


def test_fake_helpers():
    assert make_tokens(3) == ["tok0 ", "tok1 ", "tok2 "]
    assert "".join(split_tokens("  a  b c ")) == "  a  b c "
    assert go_json({"t": "<&> é"}) == '{"t":"\\u003c\\u0026\\u003e é"}'.encode()


def test_fake_runs_standalone():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--port", "0", "--models", "llama3.2,llava"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        names = [m["name"] for m in httpx.get(url + "/api/tags", timeout=5).json()["models"]]
        assert sorted(names) == ["llama3.2:latest", "llava:latest"]
        assert ollama.Client(host=url).show("llava").capabilities == ["completion", "vision"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
