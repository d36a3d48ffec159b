"""A fake Ollama server: the real wire protocol on 127.0.0.1, with scripted replies.

Speaks Ollama's REST API the way ``ollama serve`` does (docs/protocols.md section 1), so the
official ``ollama`` client and plain httpx talk to it unchanged: NDJSON streams in chunked
transfer encoding, one object per chunk, each ended by exactly one ``\\n``; errors as
``{"error": ...}`` with the server's status codes and texts; integer nanosecond durations
measured from real elapsed time. Standard library only (``ThreadingHTTPServer``, HTTP/1.1
keep-alive, chunked encoding written by hand), one thread per connection.

Tests steer it through the ``FakeOllama`` object: install models, queue reply plans (slow,
cut, failing), then read back ``requests``, ``done_chunks`` and ``disconnects``. Also runs
standalone for manual testing::

    python -m tests.fakes.ollama_server --port 11434 --models llama3.2,llava --delay 0.05

``POST /api/embed`` answers with deterministic unit vectors (``embedding_of``) for models that
have the "embedding" capability (``add_model(name, capabilities=("embedding",))``); /api/chat
and /api/generate refuse those with Ollama's 400 ``"name" does not support chat``.

Not covered: the deprecated /api/embeddings, /api/create, /api/push, blobs, tools, structured
output, logprobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import struct
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Sequence

DEFAULT_VERSION = "0.12.6"
DEFAULT_STREAM_ERROR = "an error was encountered while running the model"
DEFAULT_THINKING = ("Okay, ", "the user wants ", "an answer.")
UNKNOWN_MODEL_PULL_ERROR = "pull model manifest: file does not exist"
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)  # Go's max time.Duration: keep_alive < 0
TEMPLATE = "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
PARAMETERS = 'stop                           "<|start_header_id|>"\nstop                           "<|eot_id|>"'
LICENSE = "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT (fake text for tests)"
EMBED_DIMENSIONS = 8  # the length of every vector the fake makes (real models: 384 to 4096)
# What a real server answers for a model without an embedding head: the runner's 501, passed
# through /api/embed (runner/ollamarunner/runner.go embeddings(), server/routes.go EmbedHandler).
NOT_AN_EMBEDDING_MODEL = (501, "this model does not support embeddings")


def make_tokens(n: int) -> list[str]:
    """``n`` short deterministic tokens for benchmarks: ``['tok0 ', 'tok1 ', ...]``."""
    return [f"tok{i} " for i in range(n)]


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens that join back to it.

    >>> split_tokens("You said: hi there")
    ['You ', 'said: ', 'hi ', 'there']
    """
    return re.findall(r"\s*\S+\s*", text)


def stop_at(tokens: list[str], stops: Sequence[str]) -> list[str]:
    """The tokens up to the first stop sequence, which is left out (as Ollama does)."""
    text = "".join(tokens)
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut < 0:
        return tokens
    kept, length = [], 0
    for token in tokens:
        if length + len(token) > cut:
            if cut > length:
                kept.append(token[:cut - length])
            break
        kept.append(token)
        length += len(token)
    return kept


def go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped, UTF-8 kept)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode()


def rfc3339_utc() -> str:
    """Now as Go's ``time.Now().UTC()`` marshals it: nanoseconds, trailing zeros trimmed."""
    secs, nanos = divmod(time.time_ns(), 1_000_000_000)
    frac = f"{nanos:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + (f".{frac}" if frac else "") + "Z"


def local_time(delta: timedelta = timedelta()) -> str:
    return (datetime.now().astimezone() + delta).isoformat()


def parameter_count(size_label: str) -> int:
    """'3.2B' -> 3200000000; '270M' -> 270000000; anything else -> 0."""
    match = re.fullmatch(r"([\d.]+)([BM])", size_label)
    return int(float(match[1]) * (1e9 if match[2] == "B" else 1e6)) if match else 0


def full_name(name: str) -> str:
    """'llama3.2' -> 'llama3.2:latest' (the tag defaults to latest)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds: a number of seconds or a Go duration string; < 0 = forever."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        sign, rest = (-1, value[1:]) if value.startswith("-") else (1, value.lstrip("+"))
        if rest == "0":
            return 0.0
        parts = _DURATION.findall(rest)
        if parts and "".join(n + u for n, u in parts) == rest:
            return sign * sum(float(n) * _UNIT_S[u] for n, u in parts)
    raise ValueError(f"time: invalid duration {json.dumps(str(value))}")


def embedding_of(text: str, dimensions: int = EMBED_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for ``text`` (from its SHA-256), in float32 steps as Go's
    []float32 holds them; cut to ``dimensions`` and normalised again, as Ollama does.

    >>> v = embedding_of("hello")
    >>> len(v), round(sum(x * x for x in v), 5), v == embedding_of("hello"), v == embedding_of("hi")
    (8, 1.0, True, False)
    """
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(byte - 127.5) / 127.5 for byte in digest[:min(dimensions, EMBED_DIMENSIONS)]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


@dataclass
class ReplyPlan:
    """How the fake answers one /api/chat or /api/generate request (see ``queue_reply``)."""

    tokens: list[str]
    thinking: list[str] | None = None
    delay: float | Sequence[float] = 0.0
    cut_after: int | None = None
    error_after: int | None = None
    status_error: tuple[int, str] | None = None
    error: str = DEFAULT_STREAM_ERROR
    tool_calls: list[tuple[str, dict]] | None = None

    def delay_before(self, index: int) -> float:
        if isinstance(self.delay, (int, float)):
            return float(self.delay)
        return float(self.delay[index]) if index < len(self.delay) else 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    json: Any
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeModel:
    name: str
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization: str = "Q4_K_M"
    size: int = 2_019_393_189
    capabilities: tuple[str, ...] | None = ("completion",)
    digest: str = ""
    modified_at: str = field(default_factory=local_time)

    def __post_init__(self) -> None:
        self.digest = self.digest or hashlib.sha256(self.name.encode()).hexdigest()

    def details(self) -> dict:
        return {"parent_model": "", "format": "gguf", "family": self.family, "families": [self.family],
                "parameter_size": self.parameter_size, "quantization_level": self.quantization}

    def layers(self) -> list[tuple[str, int]]:
        """(sha256 hex, size) of each blob: weights, template, license, params."""
        small = [1429, 7711, 96]
        sizes = [max(1, self.size - sum(small)), *small]
        return [(hashlib.sha256(f"{self.digest}/{i}".encode()).hexdigest(), n) for i, n in enumerate(sizes)]

    def show(self) -> dict:
        """The /api/show reply."""
        arch = self.family
        reply = {
            "license": LICENSE,
            "modelfile": (f'# Modelfile generated by "ollama show"\n# FROM {self.name}\n\n'
                          f"FROM /root/.ollama/models/blobs/sha256-{self.layers()[0][0]}\n"
                          f'TEMPLATE """{TEMPLATE}"""\n'
                          + "".join(f"PARAMETER {line.split()[0]} {line.split()[1]}\n"
                                    for line in PARAMETERS.splitlines())),
            "parameters": PARAMETERS,
            "template": TEMPLATE,
            "details": self.details(),
            "model_info": {"general.architecture": arch, "general.file_type": 15,
                           "general.parameter_count": parameter_count(self.parameter_size),
                           "general.quantization_version": 2, f"{arch}.context_length": 131072,
                           f"{arch}.embedding_length": 3072, f"{arch}.block_count": 28,
                           "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": None,
                           "tokenizer.ggml.merges": None},
            "modified_at": self.modified_at,
        }
        if self.capabilities is not None:
            reply["capabilities"] = list(self.capabilities)
        if "vision" in (self.capabilities or ()) or "llava" in self.family:
            reply["projector_info"] = {"general.architecture": "clip", "clip.has_llava_projector": True,
                                       "clip.vision.image_size": 336, "clip.vision.embedding_length": 1024}
        return reply


def _make_model(name: str, family: str = "llama", parameter_size: str = "3.2B",
                quantization: str = "Q4_K_M", size: int = 2_019_393_189,
                capabilities: Sequence[str] | None = ("completion",)) -> FakeModel:
    return FakeModel(full_name(name), family, parameter_size, quantization, size,
                     None if capabilities is None else tuple(capabilities))


def guess_model(name: str) -> dict:
    """add_model keyword arguments that suit a well-known model name (for the standalone mode)."""
    base = name.split(":")[0].rsplit("/", 1)[-1].lower()
    if "embed" in base:
        return {"family": "nomic-bert", "parameter_size": "137M", "quantization": "F16",
                "size": 274_302_450, "capabilities": ("embedding",)}
    if any(k in base for k in ("llava", "vision", "gemma3", "vl")):
        return {"family": "llava" if "llava" in base else base, "parameter_size": "7B",
                "size": 4_733_363_377, "capabilities": ("completion", "vision")}
    if any(k in base for k in ("qwen3", "deepseek-r1", "gpt-oss")):
        return {"family": "qwen3", "parameter_size": "8.2B", "size": 5_225_388_164,
                "capabilities": ("completion", "tools", "thinking")}
    return {}


class FakeOllama:
    """A fake Ollama on a free port of 127.0.0.1; a context manager (start/stop)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, version: str = DEFAULT_VERSION):
        self.host, self.port = host, port
        self.version = version
        self.default_delay = 0.0  # seconds before each token of the default reply
        self.pull_delay = 0.0  # seconds between /api/pull progress lines
        self.pull_steps = 3  # progress lines per layer
        self.requests: list[RecordedRequest] = []
        self.done_chunks: list[dict] = []  # every final (done:true) reply object sent
        self.disconnects = 0  # clients that went away in the middle of a stream
        self.client_gone = threading.Event()
        self.max_streams_active = 0
        self.server_errors: list[BaseException] = []  # bugs in the fake itself
        self._streams_active = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, FakeModel] = {}
        self._registry: dict[str, FakeModel] = {}
        self._running: dict[str, tuple[FakeModel, datetime, int]] = {}
        self._plans: deque[ReplyPlan] = deque()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}

    make_tokens = staticmethod(make_tokens)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "FakeOllama":
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-ollama-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open connections (idle keep-alive ones and streams) are closed."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in connections.values():
            thread.join(timeout=2)
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = None

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- controls ---------------------------------------------------------------------------

    def add_model(self, name: str, *, family: str = "llama", parameter_size: str = "3.2B",
                  quantization: str = "Q4_K_M", size: int = 2_019_393_189,
                  capabilities: Sequence[str] | None = ("completion",)) -> FakeModel:
        """Install a model. "vision" adds projector_info to /api/show; "thinking" makes replies
        start with thinking fragments unless the request says think:false. ``capabilities=None``
        plays a server older than v0.6.4, whose /api/show has no capabilities key."""
        model = _make_model(name, family, parameter_size, quantization, size, capabilities)
        with self._lock:
            self._models[model.name] = model
        return model

    def remove_model(self, name: str) -> None:
        with self._lock:
            self._models.pop(full_name(name), None)
            self._running.pop(full_name(name), None)

    def add_remote_model(self, name: str, **kwargs) -> FakeModel:
        """Make ``name`` pullable (same keywords as add_model); other unknown names fail to pull."""
        model = _make_model(name, **kwargs)
        with self._lock:
            self._registry[model.name] = model
        return model

    def installed(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def running_models(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def queue_reply(self, tokens: list[str] | str, *, thinking: list[str] | None = None,
                    delay: float | Sequence[float] = 0.0, cut_after: int | None = None,
                    error_after: int | None = None, status_error: tuple[int, str] | None = None,
                    error: str = DEFAULT_STREAM_ERROR,
                    tool_calls: Sequence[tuple[str, dict]] | None = None) -> None:
        """Queue how the next /api/chat or /api/generate request is answered (FIFO).

        ``tokens``: answer fragments (a string is split into words). ``thinking``: thinking
        fragments, sent first, only for models with the "thinking" capability. ``delay``:
        seconds before each fragment, or one value per fragment. ``cut_after=N``: close the TCP
        connection after N answer tokens (no final chunk, no end of the chunked body).
        ``error_after=N``: after N answer tokens send ``{"error": error}`` and end the stream
        (N=0 before any output: HTTP 500 with a JSON body, as Ollama does). ``status_error``:
        answer (status, message) at once instead of streaming. ``tool_calls``: (name,
        arguments) the model calls after its text, whole, in one ``done: false`` chunk as
        Ollama sends them (only when the request offered tools).
        """
        plan = ReplyPlan(split_tokens(tokens) if isinstance(tokens, str) else list(tokens),
                         None if thinking is None else list(thinking), delay, cut_after,
                         error_after, status_error, error,
                         None if tool_calls is None else list(tool_calls))
        with self._lock:
            self._plans.append(plan)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._plans)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for_request(self, path: str, timeout: float = 5.0, *, count: int = 1) -> RecordedRequest:
        """Block until ``count`` requests to ``path`` arrived; return the count-th one."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests_to(path)) >= count, timeout):
                raise TimeoutError(f"no request #{count} to {path} within {timeout} s")
            return self.requests_to(path)[count - 1]

    # -- state used by the handler ------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _find(self, name: str) -> FakeModel | None:
        with self._lock:
            return self._models.get(full_name(name))

    def _take_plan(self, said: str) -> ReplyPlan:
        with self._lock:
            if self._plans:
                return self._plans.popleft()
        return ReplyPlan(split_tokens(f"You said: {said}"), delay=self.default_delay)

    def _load(self, model: FakeModel, keep_alive: float | None, num_ctx: Any) -> None:
        keep = timedelta(seconds=300 if keep_alive is None else keep_alive)
        expires = datetime.now().astimezone() + (FOREVER if keep < timedelta() else keep)
        with self._lock:
            self._running[model.name] = (model, expires, num_ctx if isinstance(num_ctx, int) else 4096)

    def _unload(self, name: str) -> None:
        with self._lock:
            self._running.pop(full_name(name), None)

    def _install(self, model: FakeModel, name: str) -> None:
        with self._lock:
            self._models[full_name(name)] = replace(model, name=full_name(name), modified_at=local_time())

    def _stream_opened(self) -> None:
        with self._lock:
            self._streams_active += 1
            self.max_streams_active = max(self.max_streams_active, self._streams_active)

    def _stream_closed(self) -> None:
        with self._lock:
            self._streams_active -= 1

    def _client_went_away(self) -> None:
        with self._lock:
            self.disconnects += 1
        self.client_gone.set()

    def tags(self) -> dict:
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: m.modified_at, reverse=True)
        return {"models": [{"name": m.name, "model": m.name, "modified_at": m.modified_at, "size": m.size,
                            "digest": m.digest, "details": m.details()} for m in models]}

    def ps(self) -> dict:
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r[1], reverse=True)
        return {"models": [{"name": m.name, "model": m.name, "size": m.size, "digest": m.digest,
                            "details": m.details(), "expires_at": expires.isoformat(),
                            "size_vram": m.size, "context_length": ctx} for m, expires, ctx in running]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # Go's listener takes the system's backlog; 5 drops bursts
    block_on_close = False  # FakeOllama.stop closes and joins the connection threads itself
    fake: FakeOllama

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hung up on an idle keep-alive connection: normal, as in Go
        super().handle_error(request, client_address)


class _ClientGone(Exception):
    """The client closed the connection (or the fake is stopping)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing ---------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net does
        self.fake = self.server.fake
        with self.fake._lock:
            self.fake._connections[self.connection] = threading.current_thread()

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.pop(self.connection, None)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        # Like Go's net/http: a Date header, no Server header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _dispatch(self) -> None:
        self.t_start = time.perf_counter_ns()
        self.streaming = False
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        self.fake._record(RecordedRequest(self.command, path, body,
                                          {k.lower(): v for k, v in self.headers.items()}, raw))
        route = ROUTES.get((self.command, path))
        try:
            if route is None:
                self._send(404, b"404 page not found", "text/plain")
            else:
                route(self, raw)
        except _ClientGone:
            self.close_connection = True
            if not self.fake._stopping.is_set():
                self.fake._client_went_away()
        except Exception as exc:  # a bug in the fake: keep it for the test to see
            self.fake.server_errors.append(exc)
            self.close_connection = True
            if not self.streaming:
                self._send_json(500, {"error": f"fake ollama: {exc!r}"})
            raise

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)

    def _send_json(self, status: int, obj: Any, content_type: str = "application/json; charset=utf-8") -> None:
        self._send(status, go_json(obj), content_type)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _send_line(self, obj: Any) -> None:
        """One NDJSON object as one chunk; the 200 and headers go out with the first one."""
        if not self.streaming:
            self.streaming = True
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        data = go_json(obj) + b"\n"
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def _cut(self) -> None:
        """Drop the connection: no final object, no terminating chunk."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _pause(self, seconds: float) -> None:
        """Wait, noticing at once when the client hangs up (raises _ClientGone)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.fake._stopping.is_set():
                raise _ClientGone
            remaining = deadline - time.monotonic()
            try:
                readable, _, _ = select.select([self.connection], [], [], max(0.0, min(remaining, 0.05)))
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    raise _ClientGone
            except (OSError, ValueError) as exc:
                raise _ClientGone from exc
            if remaining <= 0:
                return
            if readable:  # the client sent bytes early; don't spin on them
                time.sleep(min(remaining, 0.05))

    def _require_body(self, raw: bytes) -> dict | None:
        if not raw.strip():
            self._send_json(400, {"error": "missing request body"})
            return None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._send_json(400, {"error": f"invalid character looking for beginning of value ({exc})"})
            return None
        if not isinstance(body, dict):
            self._send_json(400, {"error": f"json: cannot unmarshal {type(body).__name__} into Go value"})
            return None
        return body

    # -- endpoints ----------------------------------------------------------------------------

    def _root(self, raw: bytes) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _version(self, raw: bytes) -> None:
        self._send_json(200, {"version": self.fake.version})

    def _tags(self, raw: bytes) -> None:
        self._send_json(200, self.fake.tags())

    def _ps(self, raw: bytes) -> None:
        self._send_json(200, self.fake.ps())

    def _show(self, raw: bytes) -> None:
        body = self._require_body(raw)
        if body is None:
            return
        name = body.get("model") or body.get("name") or ""
        model = self.fake._find(name) if name else None
        if not name:
            self._send_json(400, {"error": "model is required"})
        elif model is None:
            self._send_json(404, {"error": f"model '{name}' not found"})
        else:
            self._send_json(200, model.show())

    def _delete(self, raw: bytes) -> None:
        body = self._require_body(raw)
        if body is None:
            return
        name = body.get("model") or body.get("name") or ""
        if self.fake._find(name) is None:
            self._send_json(404, {"error": f"model '{name}' not found"})
        else:
            self.fake.remove_model(name)
            self._send(200, b"", None)

    def _copy(self, raw: bytes) -> None:
        body = self._require_body(raw)
        if body is None:
            return
        source = self.fake._find(body.get("source") or "")
        if not body.get("destination"):
            self._send_json(400, {"error": "invalid model name"})
        elif source is None:
            self._send_json(404, {"error": f"model {json.dumps(body.get('source') or '')} not found"})
        else:
            self.fake._install(source, body["destination"])
            self._send(200, b"", None)

    def _chat(self, raw: bytes) -> None:
        self._complete(raw, generate=False)

    def _generate(self, raw: bytes) -> None:
        self._complete(raw, generate=True)

    def _reply(self, name: str, generate: bool, content: str = "", thinking: str = "", **extra) -> dict:
        if generate:
            reply = {"model": name, "created_at": rfc3339_utc(), "response": content}
            if thinking:
                reply["thinking"] = thinking
        else:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            reply = {"model": name, "created_at": rfc3339_utc(), "message": message}
        return {**reply, "done": False, **extra}

    def _complete(self, raw: bytes, *, generate: bool) -> None:
        """/api/chat and /api/generate: Ollama's checks in Ollama's order, then the reply plan."""
        body = self._require_body(raw)
        if body is None:
            return
        name = body.get("model") or ""
        if not name:
            return self._send_json(400, {"error": "model is required"})
        model = self.fake._find(name)
        if model is None:
            return self._send_json(404, {"error": f"model '{name}' not found"})
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return self._send_json(400, {"error": str(exc)})
        messages = body.get("messages") or []
        if generate:
            said, empty = body.get("prompt") or "", not body.get("prompt")
            prompt_words = len(said.split()) + 4
        else:
            said = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
            empty = not messages
            prompt_words = sum(len((m.get("content") or "").split()) + 4 for m in messages)
        if empty and keep_alive == 0:
            self.fake._unload(model.name)
            return self._send_json(200, self._reply(name, generate, done=True, done_reason="unload"))
        think = body.get("think")
        can_think = "thinking" in (model.capabilities or ())
        if not can_think and think not in (None, False):
            return self._send_json(400, {"error": f"{json.dumps(name)} does not support thinking"})
        if model.capabilities is not None and "completion" not in model.capabilities:
            # An embedding model: the capability check of scheduleRunner, before any load
            # (server/routes.go ChatHandler / GenerateHandler, errCapabilityCompletion).
            what = "generate" if generate else "chat"
            return self._send_json(400, {"error": f"{json.dumps(name)} does not support {what}"})
        if body.get("tools") and "tools" not in (model.capabilities or ()):
            return self._send_json(400, {"error": f"{name} does not support tools"})
        options = body.get("options") or {}
        self.fake._load(model, keep_alive, options.get("num_ctx"))
        t_loaded = time.perf_counter_ns()
        if empty:
            return self._send_json(200, self._reply(name, generate, done=True, done_reason="load"))

        plan = self.fake._take_plan(said)
        if plan.status_error:
            status, message = plan.status_error
            return self._send_json(status, {"error": message})
        thinking = list(plan.thinking or DEFAULT_THINKING) if can_think and think is not False else []
        tokens, done_reason = plan.tokens, "stop"
        limit = options.get("num_predict")
        if isinstance(limit, int) and 0 <= limit < len(tokens):
            tokens, done_reason = tokens[:limit], "length"
        tokens = stop_at(tokens, options.get("stop") or ())
        calls = (plan.tool_calls or []) if body.get("tools") and not generate else []
        stream = body.get("stream") is not False
        self.fake._stream_opened()
        try:
            t_eval = time.perf_counter_ns()
            text = self._play(plan, name, generate, thinking, tokens, stream=stream)
            if text is None:
                return
            message_calls = [{"id": f"call_{uuid.uuid4().hex[:8]}",
                              "function": {"index": i, "name": n, "arguments": args}}
                             for i, (n, args) in enumerate(calls)]
            if stream and message_calls:
                self._send_line({**self._reply(name, generate),
                                 "message": {"role": "assistant", "content": "",
                                             "tool_calls": message_calls}})
            t_end = time.perf_counter_ns()
            metrics = {"total_duration": max(1, t_end - self.t_start),
                       "load_duration": max(1, t_loaded - self.t_start),
                       "prompt_eval_count": max(1, prompt_words),
                       "prompt_eval_duration": max(1, t_eval - t_loaded)}
            evaluated = len(thinking) + len(tokens)
            if evaluated:  # Go's omitempty: zero counts and durations are left out
                metrics.update(eval_count=evaluated, eval_duration=max(1, t_end - t_eval))
            if generate and not body.get("raw"):
                metrics = {"context": list(range(1, prompt_words + evaluated + 1)), **metrics}
            final = self._reply(name, generate, done=True, done_reason=done_reason, **metrics)
            with self.fake._lock:
                self.fake.done_chunks.append(final)
            # Unload before the last bytes go out: a client that reads /api/ps right after
            # the reply must already see the model gone (no race with this thread).
            if keep_alive == 0:
                self.fake._unload(model.name)
            if stream:
                self._send_line(final)
                self._end_stream()
            else:  # Ollama collects the stream: the final object with the whole text in it
                whole = self._reply(name, generate, text[1], text[0])
                if message_calls:
                    whole["message"]["tool_calls"] = message_calls
                self._send_json(200, {**final, **{k: whole[k] for k in ("message", "response", "thinking")
                                                  if k in whole}})
        finally:
            self.fake._stream_closed()

    def _play(self, plan: ReplyPlan, name: str, generate: bool, thinking: list[str], tokens: list[str],
              *, stream: bool) -> tuple[str, str] | None:
        """Send thinking then answer fragments (without streaming, just take the time).

        Returns (thinking, answer) text, or None when the plan cut the connection or failed
        the reply instead; ``cut_after``/``error_after`` count answer tokens.
        """
        cut_at = None if plan.cut_after is None else min(plan.cut_after, len(tokens))
        fail_at = None if plan.error_after is None else min(plan.error_after, len(tokens))
        thoughts: list[str] = []
        answer: list[str] = []

        def interrupted() -> bool:
            if len(answer) == cut_at:
                self._cut()
            elif len(answer) == fail_at and self.streaming:
                self._send_line({"error": plan.error})
                self._end_stream()
            elif len(answer) == fail_at:  # nothing written yet: Ollama still sets the status
                self._send_json(500, {"error": plan.error}, "application/json")
            else:
                return False
            return True

        fragments = [(True, t) for t in thinking] + [(False, t) for t in tokens]
        for index, (is_thought, text) in enumerate(fragments):
            if not is_thought and interrupted():
                return None
            self._pause(plan.delay_before(index))
            (thoughts if is_thought else answer).append(text)
            if stream:
                self._send_line(self._reply(name, generate, "" if is_thought else text,
                                            text if is_thought else ""))
        return None if interrupted() else ("".join(thoughts), "".join(answer))

    def _pull(self, raw: bytes) -> None:
        body = self._require_body(raw)
        if body is None:
            return
        name = body.get("model") or body.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][\w.:/-]*", name):
            return self._send_json(400, {"error": "invalid model name"})
        lines = self._pull_progress(name)
        if body.get("stream") is False:
            last = {}
            for index, last in enumerate(lines):
                self._pause(self.fake.pull_delay if index else 0)
            status = 500 if "error" in last else 200
            return self._send_json(status, last)
        for index, line in enumerate(lines):
            self._pause(self.fake.pull_delay if index else 0)
            self._send_line(line)
        self._end_stream()

    def _pull_progress(self, name: str) -> Iterator[dict]:
        """The status lines of PullModel; installs the model just before "success"."""
        fake = self.fake
        with fake._lock:
            installed = fake._models.get(full_name(name))
            source = fake._registry.get(full_name(name)) or installed
        yield {"status": "pulling manifest"}
        if source is None:
            yield {"error": UNKNOWN_MODEL_PULL_ERROR}
            return
        for digest, total in source.layers():
            line = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": total}
            steps = 1 if installed else max(1, fake.pull_steps)
            for step in range(0 if not installed else 1, steps + 1):
                completed = total * step // steps
                yield {**line, "completed": completed} if completed else line
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        fake._install(source, name)
        yield {"status": "success"}

    def _embed(self, raw: bytes) -> None:
        """/api/embed: Ollama's checks in EmbedHandler's order, then one vector per input."""
        body = self._require_body(raw)
        if body is None:
            return
        name = body.get("model") or ""
        if not name:
            return self._send_json(400, {"error": "model is required"})
        given = body.get("input")
        if isinstance(given, str):
            texts = [given] if given else []
        elif isinstance(given, list) and all(isinstance(t, str) for t in given):
            texts = list(given)
        elif given is None:
            texts = []
        else:
            return self._send_json(400, {"error": "invalid input type"})
        model = self.fake._find(name)
        if model is None:
            return self._send_json(404, {"error": f"model '{name}' not found"})
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return self._send_json(400, {"error": str(exc)})
        self.fake._load(model, keep_alive, (body.get("options") or {}).get("num_ctx"))
        t_loaded = time.perf_counter_ns()
        if not texts:  # an empty input only loads the model
            return self._send_json(200, {"model": name, "embeddings": []})
        if model.capabilities is not None and "embedding" not in model.capabilities:
            status, message = NOT_AN_EMBEDDING_MODEL
            return self._send_json(status, {"error": message})
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else EMBED_DIMENSIONS
        self._send_json(200, {
            "model": name, "embeddings": [embedding_of(text, size) for text in texts],
            "total_duration": max(1, time.perf_counter_ns() - self.t_start),
            "load_duration": max(1, t_loaded - self.t_start),
            "prompt_eval_count": sum(len(text.split()) + 2 for text in texts)})


ROUTES = {
    ("GET", "/"): _Handler._root, ("HEAD", "/"): _Handler._root,
    ("GET", "/api/version"): _Handler._version, ("HEAD", "/api/version"): _Handler._version,
    ("GET", "/api/tags"): _Handler._tags, ("HEAD", "/api/tags"): _Handler._tags,
    ("GET", "/api/ps"): _Handler._ps,
    ("POST", "/api/show"): _Handler._show,
    ("POST", "/api/chat"): _Handler._chat,
    ("POST", "/api/generate"): _Handler._generate,
    ("POST", "/api/pull"): _Handler._pull,
    ("DELETE", "/api/delete"): _Handler._delete,
    ("POST", "/api/copy"): _Handler._copy,
    ("POST", "/api/embed"): _Handler._embed,
}


def fake_ollama() -> Iterator[FakeOllama]:
    """Pytest fixture body: a running FakeOllama with llama3.2:latest installed.

    Wire it in conftest.py with ``fake_ollama = pytest.fixture(ollama_server.fake_ollama)``.
    Fails the test at teardown if the fake itself crashed while serving it.
    """
    with FakeOllama() as fake:
        fake.add_model("llama3.2")
        yield fake
    if fake.server_errors:
        raise AssertionError(f"the fake Ollama server crashed: {fake.server_errors!r}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama_server",
                                     description="Serve a fake Ollama until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    parser.add_argument("--models", default="llama3.2", help="installed models, comma-separated")
    parser.add_argument("--pullable", default="qwen3,gemma3,mistral",
                        help="models /api/pull can fetch, comma-separated")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between reply tokens")
    parser.add_argument("--pull-delay", type=float, default=0.06, help="seconds between pull lines")
    args = parser.parse_args(argv)
    with FakeOllama(args.host, args.port) as fake:
        fake.default_delay, fake.pull_delay = args.delay, args.pull_delay
        for name in filter(None, args.models.split(",")):
            fake.add_model(name.strip(), **guess_model(name.strip()))
        for name in filter(None, args.pullable.split(",")):
            fake.add_remote_model(name.strip(), **guess_model(name.strip()))
        print(f"Fake Ollama listening on {fake.url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
