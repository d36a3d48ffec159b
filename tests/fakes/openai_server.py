"""A fake OpenAI-compatible local server on 127.0.0.1, in the dialect of llama.cpp's
``llama-server`` (the common case), or of vLLM with ``strict_models=True``.

What it serves, as those servers do:

- ``GET /health`` → ``{"status": "ok"}``.
- ``GET /v1/models`` → ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by": "llamacpp", "meta": {"n_ctx_train", "n_params", "size", ...}}], "models": [...]}``
  (llama-server also sends an Ollama-like ``models`` array; clients should read ``data``).
- ``POST /v1/chat/completions``, streamed as SSE: ``data: {chunk}`` lines of
  ``chat.completion.chunk`` objects (``delta.content``, ``delta.reasoning_content`` for a
  thinking model), a last chunk with ``finish_reason``, then, when the request asked for
  ``stream_options.include_usage``, a chunk with empty ``choices`` and ``usage``; then
  ``data: [DONE]``. Whole (non-streamed) answers too.
- Errors in OpenAI's shape: ``{"error": {"code", "message", "type"}}`` (llama-server); with
  ``strict_models`` an unknown model is 404 ``{"object": "error", "message": "The model `x`
  does not exist.", "type": "NotFoundError", "param": null, "code": 404}`` (vLLM). A server
  started with an API key answers 401 ``Invalid API Key`` without the right Bearer token.

llama-server in single-model mode answers whatever ``model`` is asked for; vLLM only the
names it serves. Tests queue replies with ``queue_reply`` and read ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Plan:
    tokens: list[str]
    delay: float = 0.0
    status: tuple[int, str] | None = None  # answer this error at once
    cut_after: int | None = None  # close the connection after N tokens


@dataclass
class Recorded:
    method: str
    path: str
    json: Any
    headers: dict[str, str]


class FakeOpenAIServer:
    def __init__(self, models: list[str] | None = None, *, api_key: str = "",
                 strict_models: bool = False) -> None:
        self.models = list(models or ["qwen2.5-coder-7b-instruct-q4_k_m"])
        self.api_key = api_key
        self.strict_models = strict_models
        self.requests: list[Recorded] = []
        self._plans: deque[Plan] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a client is given (``http://127.0.0.1:N/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name=f"fake-openai-{self.port}").start()
        return self

    def stop(self) -> None:
        """Stop serving, as a stopped server does: open (keep-alive) connections close too."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(2)
            except OSError:
                pass

    def queue_reply(self, text: str | list[str], *, delay: float = 0.0,
                    status: tuple[int, str] | None = None, cut_after: int | None = None) -> None:
        tokens = text if isinstance(text, list) else [w + " " for w in text.split(" ")]
        if isinstance(text, str) and tokens:
            tokens[-1] = tokens[-1].rstrip(" ")
        with self._lock:
            self._plans.append(Plan(tokens, delay, status, cut_after))

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def _take(self, said: str) -> Plan:
        with self._lock:
            if self._plans:
                return self._plans.popleft()
        return Plan([f"You said: {said}"])


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server_fake._lock:
            self.server_fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server_fake._lock:
                self.server_fake._connections.discard(self.connection)

    # -- plumbing

    def _json(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, {"error": {"code": status, "message": message, "type": kind}})

    def _record(self, body: Any) -> None:
        fake = self.server_fake
        with fake._lock:
            fake.requests.append(Recorded(self.command, urlsplit(self.path).path, body,
                                          dict(self.headers.items())))

    def _authorised(self) -> bool:
        key = self.server_fake.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "Invalid API Key", "authentication_error")
            return False
        return True

    # -- routes

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self._record(None)
        if path == "/health":
            return self._json(200, {"status": "ok"})
        if not self._authorised():
            return
        if path == "/v1/models":
            fake = self.server_fake
            return self._json(200, {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 1733000000,
                          "owned_by": "llamacpp",
                          "meta": {"vocab_type": 2, "n_vocab": 152064, "n_ctx_train": 32768,
                                   "n_embd": 3584, "n_params": 7615616512,
                                   "size": 4677120000}} for m in fake.models],
                "models": [{"name": m, "model": m, "modified_at": "", "size": "", "digest": "",
                            "type": "model", "description": "", "tags": [""],
                            "capabilities": ["completion"], "parameters": "",
                            "details": {"parent_model": "", "format": "gguf", "family": "",
                                        "families": [""], "parameter_size": "",
                                        "quantization_level": ""}} for m in fake.models]})
        self._error(404, "File Not Found", "not_found_error")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        self._record(body)
        if not self._authorised():
            return
        if path != "/v1/chat/completions":
            return self._error(404, "File Not Found", "not_found_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, "'messages' is required", "invalid_request_error")
        fake = self.server_fake
        model = str(body.get("model") or "")
        if fake.strict_models and model not in fake.models:
            return self._json(404, {"object": "error",
                                    "message": f"The model `{model}` does not exist.",
                                    "type": "NotFoundError", "param": None, "code": 404})
        said = next((m.get("content") for m in reversed(body["messages"])
                     if isinstance(m, dict) and m.get("role") == "user"), "")
        plan = fake._take(said if isinstance(said, str) else "")
        if plan.status is not None:
            return self._error(plan.status[0], plan.status[1], "server_error")
        if not body.get("stream"):
            text = "".join(plan.tokens)
            return self._json(200, {
                "choices": [{"finish_reason": "stop", "index": 0,
                             "message": {"role": "assistant", "content": text}}],
                "created": int(time.time()), "model": model or fake.models[0],
                "system_fingerprint": "b4500-fake", "object": "chat.completion",
                "id": "chatcmpl-fake", "usage": self._usage(body, plan.tokens)})
        self._stream(body, model or fake.models[0], plan)

    def _usage(self, body: dict, tokens: list[str]) -> dict:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"]
                     if isinstance(m, dict))
        return {"completion_tokens": len(tokens), "prompt_tokens": prompt,
                "total_tokens": prompt + len(tokens)}

    def _stream(self, body: dict, model: str, plan: Plan) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = int(time.time())

        def send(payload: str) -> None:
            raw = payload.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({
                "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
                "created": created, "id": "chatcmpl-fake", "model": model,
                "system_fingerprint": "b4500-fake", "object": "chat.completion.chunk"}) + "\n\n"

        try:
            send(chunk({"role": "assistant", "content": None}))
            for n, token in enumerate(plan.tokens):
                if plan.cut_after is not None and n >= plan.cut_after:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if plan.delay:
                    time.sleep(plan.delay)
                send(chunk({"content": token}))
            send(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                send("data: " + json.dumps({
                    "choices": [], "created": created, "id": "chatcmpl-fake", "model": model,
                    "system_fingerprint": "b4500-fake", "object": "chat.completion.chunk",
                    "usage": self._usage(body, plan.tokens),
                    "timings": {"prompt_n": 1, "predicted_n": len(plan.tokens)}}) + "\n\n")
            send("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
