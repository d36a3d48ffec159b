"""A fake OpenRouter on 127.0.0.1 that speaks the real wire protocol (docs/protocols.md, section 3).

The official ``openai`` client and plain httpx talk to it unchanged. It serves
``POST /api/v1/chat/completions`` (JSON or SSE with ``: OPENROUTER PROCESSING`` comments,
``data:`` chunks, a usage chunk with ``cost`` in either shape, ``data: [DONE]``),
``POST /api/v1/embeddings`` (OpenAI's list shape, float or base64, for the models in
``embedding_models``), ``GET /api/v1/models``, ``/key``, ``/credits`` (403 unless the key is a
management key) and ``/generation?id=``. It checks the Bearer key and records every request. A request's
``max_tokens`` (or ``max_completion_tokens``) is honoured as OpenRouter does: the reply stops
there with finish reason ``length``, and the usage and the bill count only what was sent.
``/generation`` knows every completion by its ``gen-…`` id, with what it cost (for a stream
cut short: the tokens sent before the cut); like OpenRouter it answers 404 for a while just
after the completion when ``generation_misses`` says so.

A test queues per-request outcomes for chat completions with ``queue_reply`` (text, a status
error with OpenRouter's error body, a mid-stream error chunk, a cut connection), then inspects
``requests``. Failures on the other endpoints (embeddings included) are queued with
``fail_next``.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

from .ollama_server import embedding_of, stop_at

PREFIX = "/api/v1"
DEFAULT_KEY = "sk-or-v1-fake-0123456789abcdef"

# A small catalogue in the shape of GET /models: a paid model, a free one, a vision one.
DEFAULT_MODELS: list[dict[str, Any]] = [
    {
        "id": "openai/gpt-4o-mini", "canonical_slug": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini", "created": 1721260800, "description": "Small and cheap.",
        "context_length": 128000,
        "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image"],
                         "output_modalities": ["text"], "tokenizer": "GPT", "instruct_type": None},
        "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0",
                    "image": "0.000217", "input_cache_read": "0.000000075"},
        "top_provider": {"context_length": 128000, "max_completion_tokens": 16384,
                         "is_moderated": True},
        "per_request_limits": None, "supported_parameters": ["tools", "temperature"],
    },
    {
        "id": "meta-llama/llama-3.2-3b-instruct:free", "canonical_slug": "meta-llama/llama-3.2-3b-instruct",
        "name": "Meta: Llama 3.2 3B Instruct (free)", "created": 1727222400, "description": "Free.",
        "context_length": 131072,
        "architecture": {"modality": "text->text", "input_modalities": ["text"],
                         "output_modalities": ["text"], "tokenizer": "Llama3", "instruct_type": None},
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {"context_length": 131072, "max_completion_tokens": None,
                         "is_moderated": False},
        "per_request_limits": None, "supported_parameters": ["temperature"],
    },
    {
        "id": "anthropic/claude-3.5-sonnet", "canonical_slug": "anthropic/claude-3.5-sonnet",
        "name": "Anthropic: Claude 3.5 Sonnet", "created": 1718841600, "description": "Vision.",
        "context_length": 200000,
        "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image", "file"],
                         "output_modalities": ["text"], "tokenizer": "Claude", "instruct_type": None},
        "pricing": {"prompt": "0.000003", "completion": "0.000015", "image": "0.0048"},
        "top_provider": {"context_length": 200000, "max_completion_tokens": 8192,
                         "is_moderated": True},
        "per_request_limits": None, "supported_parameters": ["tools", "temperature"],
    },
]

# Embedding models live apart from GET /models, as on OpenRouter (its text-model list).
DEFAULT_EMBEDDING_MODELS: list[dict[str, Any]] = [
    {"id": "openai/text-embedding-3-small", "name": "OpenAI: Text Embedding 3 Small",
     "pricing": {"prompt": "0.00000002", "completion": "0"}},
]

ERROR_TYPES = {
    400: "invalid_request", 401: "authentication", 402: "payment_required",
    403: "permission_denied", 404: "not_found", 408: "timeout", 429: "rate_limit_exceeded",
    500: "server", 502: "provider_unavailable", 503: "provider_overloaded",
}
ERROR_MESSAGES = {
    400: "Invalid request", 401: "User not found.",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Only management keys can perform this operation", 404: "No endpoints found for this model",
    408: "Request timed out", 429: "Rate limit exceeded: free-models-per-min.",
    500: "Internal Server Error", 502: "Provider returned error", 503: "No available providers",
}


@dataclass
class Reply:
    """One scripted outcome of ``POST /chat/completions``."""

    tokens: list[str]
    delay: float = 0.0
    cut_after: int | None = None
    cut_mode: str = "abort"
    error_mid_stream: dict[str, Any] | None = None
    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    usage_shape: str = "empty_choices"
    model: str | None = None
    reasoning: list[str] = field(default_factory=list)
    cost: float | None = None
    prompt_tokens: int = 10
    comments: int = 1
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish_reason: str = "stop"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any


class FakeOpenRouter:
    """Fake OpenRouter server; ``url`` is the base URL to hand to clients (``.../api/v1``).

    Use as a context manager, or call ``start()``/``stop()``.
    """

    def __init__(self, api_key: str = DEFAULT_KEY, *, models: list[dict[str, Any]] | None = None,
                 management_key: bool = False, key_data: dict[str, Any] | None = None,
                 credits_data: dict[str, Any] | None = None) -> None:
        self.api_key = api_key
        self.models = list(DEFAULT_MODELS if models is None else models)
        self.management_key = management_key
        self.key_data = key_data or {
            "label": "sk-or-v1-fak...def", "limit": 10.0, "limit_remaining": 7.5,
            "limit_reset": None, "usage": 2.5, "usage_daily": 0.25, "usage_weekly": 1.0,
            "usage_monthly": 2.5, "is_free_tier": False, "is_management_key": management_key,
            "expires_at": None,
        }
        self.credits_data = credits_data or {"total_credits": 100.5, "total_usage": 25.75}
        self.embedding_models = list(DEFAULT_EMBEDDING_MODELS)
        self.requests: list[RecordedRequest] = []
        self.generations: dict[str, dict[str, Any]] = {}
        # How many lookups of a new generation answer 404 before it shows (OpenRouter takes
        # a moment to store one: protocols.md 3.7).
        self.generation_misses = 0
        self._lookups: dict[str, int] = {}
        self._replies: deque[Reply] = deque()
        self._failures: dict[str, deque[tuple[int, str | None, float | None]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeOpenRouter":
        handler = type("Handler", (_EmbeddingRoutes,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, and tests stop many servers.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True,
                                        name="fake-openrouter")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenRouter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeOpenRouter is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    # -- scripting -------------------------------------------------------------------------

    def queue_reply(self, tokens: Sequence[str] | str = ("Hello", " from", " the fake."), *,
                    delay: float = 0.0, cut_after: int | None = None, cut_mode: str = "abort",
                    error_mid_stream: str | dict[str, Any] | None = None, status: int | None = None,
                    retry_after: float | None = None, message: str | None = None,
                    metadata: dict[str, Any] | None = None, usage_shape: str = "empty_choices",
                    model: str | None = None, reasoning: Sequence[str] = (),
                    cost: float | None = None, prompt_tokens: int = 10, comments: int = 1,
                    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Script the next chat completion.

        ``tokens``: content pieces, one per chunk. ``delay``: seconds before the response starts.
        ``cut_after``: send that many token chunks, then drop the connection (``cut_mode``
        "abort": no chunked terminator; "eof": a clean end with no usage and no ``[DONE]``).
        ``error_mid_stream``: after the tokens, send OpenRouter's error chunk (a message, or an
        ``{"code", "message", "metadata"}`` dict) and end. ``status``: answer with that HTTP error
        and OpenRouter's error body (``message``/``metadata`` override), with ``Retry-After``
        when ``retry_after`` is given. ``usage_shape``: "empty_choices" (usage chunk with
        ``choices: []``) or "one_choice" (usage on a last chunk with one empty delta).
        ``model``: the model the chunks report (default: the one requested). ``cost``: the
        usage cost (default: computed from the catalogue prices). ``tool_calls``: (name,
        arguments) the model calls after its text when the request offered tools, streamed
        as OpenAI does (the id and name first, the arguments JSON in pieces), finish reason
        ``tool_calls``. A request's ``stop`` sequences cut the text before the first one.
        """
        if usage_shape not in ("empty_choices", "one_choice"):
            raise ValueError(f"usage_shape must be 'empty_choices' or 'one_choice', not {usage_shape!r}")
        if cut_mode not in ("abort", "eof"):
            raise ValueError(f"cut_mode must be 'abort' or 'eof', not {cut_mode!r}")
        if isinstance(error_mid_stream, str):
            error_mid_stream = {"code": 502, "message": error_mid_stream,
                                "metadata": {"error_type": "provider_unavailable"}}
        with self._lock:
            self._replies.append(Reply(
                tokens=[tokens] if isinstance(tokens, str) else list(tokens), delay=delay,
                cut_after=cut_after, cut_mode=cut_mode, error_mid_stream=error_mid_stream,
                status=status, retry_after=retry_after, message=message, metadata=metadata,
                usage_shape=usage_shape, model=model, reasoning=list(reasoning), cost=cost,
                prompt_tokens=prompt_tokens, comments=comments, tool_calls=list(tool_calls)))

    def fail_next(self, path: str, status: int, message: str | None = None,
                  retry_after: float | None = None) -> None:
        """Make the next request to ``path`` (e.g. "/models", "/embeddings") answer ``status``
        with an error body."""
        with self._lock:
            self._failures.setdefault(PREFIX + path, deque()).append((status, message, retry_after))

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == PREFIX + "/chat/completions"]

    @property
    def last_chat(self) -> RecordedRequest:
        return self.chat_requests[-1]

    # -- helpers used by the handler ---------------------------------------------------------

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else Reply(tokens=["Hello", " from", " the fake."])

    def _next_failure(self, path: str) -> tuple[int, str | None, float | None] | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.popleft() if queue else None

    def _new_generation_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"gen-{1717000000 + self._counter}-fake"

    def _model(self, model_id: str) -> dict[str, Any] | None:
        return next((m for m in self.models if m["id"] == model_id), None)

    def _cost(self, model_id: str, prompt_tokens: int, completion_tokens: int) -> float:
        model = self._model(model_id) or {}
        pricing = model.get("pricing", {})
        try:
            return float(prompt_tokens * Decimal(str(pricing.get("prompt", 0)))
                         + completion_tokens * Decimal(str(pricing.get("completion", 0))))
        except ArithmeticError:
            return 0.0


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenRouter
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _record(self) -> tuple[str, dict[str, list[str]], Any]:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        query = parse_qs(parts.query)
        self.fake.requests.append(RecordedRequest(
            method=self.command, path=parts.path, query=query,
            headers={k.lower(): v for k, v in self.headers.items()}, json=body))
        return parts.path, query, body

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str | None = None,
                    metadata: dict[str, Any] | None = None, retry_after: float | None = None) -> None:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = _format_seconds(retry_after)
        if status in (408, 429) or status >= 500:
            headers["x-should-retry"] = "false"  # protocols.md 3.9: keep openai from retrying
        body = {"error": {"code": status, "message": message or ERROR_MESSAGES.get(status, "Error"),
                          "metadata": metadata if metadata is not None
                          else {"error_type": ERROR_TYPES.get(status, "unmapped")}}}
        self._send_json(status, body, headers)

    def _authorized(self, *, required: bool = True) -> bool:
        auth = self.headers.get("Authorization")
        if auth is None and not required:
            return True
        if auth is None:
            self._send_error(401, "Missing Authentication header")
            return False
        if auth != f"Bearer {self.fake.api_key}":
            self._send_error(401, "User not found.")
            return False
        return True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, query, _ = self._record()
        failure = self.fake._next_failure(path)
        if path == PREFIX + "/models":
            if not self._authorized(required=False):
                return
            if failure:
                return self._send_error(failure[0], failure[1], retry_after=failure[2])
            return self._send_json(200, {"data": self.fake.models})
        if not self._authorized():
            return
        if failure:
            return self._send_error(failure[0], failure[1], retry_after=failure[2])
        if path in (PREFIX + "/key", PREFIX + "/auth/key"):
            return self._send_json(200, {"data": self.fake.key_data})
        if path == PREFIX + "/credits":
            if not self.fake.management_key:
                return self._send_error(403, "Only management keys can perform this operation")
            return self._send_json(200, {"data": self.fake.credits_data})
        if path == PREFIX + "/generation":
            gen_id = (query.get("id") or [""])[0]
            gen = self.fake.generations.get(gen_id)
            with self.fake._lock:
                seen = self.fake._lookups[gen_id] = self.fake._lookups.get(gen_id, 0) + 1
            if gen is None or seen <= self.fake.generation_misses:
                return self._send_error(404, "Resource not found")
            return self._send_json(200, {"data": gen})
        self._send_error(404, "Not Found")

    def do_POST(self) -> None:
        path, _, body = self._record()
        if path != PREFIX + "/chat/completions":
            return self._send_error(404, "Not Found")
        if not self._authorized():
            return
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._send_error(400, "Input required: specify \"model\"")
        if self.fake._model(body["model"]) is None:
            return self._send_error(400, f"{body['model']} is not a valid model ID",
                                    {"availability": {"code": "model_not_found"}})
        reply = self.fake._next_reply()
        if reply.delay and self.fake._stopping.wait(reply.delay):
            return
        if reply.status is not None:
            return self._send_error(reply.status, reply.message, reply.metadata, reply.retry_after)
        stops = body.get("stop") or []
        reply = replace(reply, tokens=stop_at(reply.tokens, [stops] if isinstance(stops, str)
                                               else stops),
                        tool_calls=reply.tool_calls if body.get("tools") else [])
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and len(reply.reasoning) + len(reply.tokens) > limit:
            # The provider stops at the limit: reasoning counts first, then the text.
            reasoning = reply.reasoning[:limit]
            reply = replace(reply, reasoning=reasoning,
                            tokens=reply.tokens[:limit - len(reasoning)], tool_calls=[],
                            finish_reason="length")
        gen_id = self.fake._new_generation_id()
        model = reply.model or body["model"]
        sent = reply.tokens if reply.cut_after is None else reply.tokens[:reply.cut_after]
        completion_tokens = len(sent) + len(reply.reasoning)
        cost = reply.cost if reply.cost is not None else self.fake._cost(
            model, reply.prompt_tokens, completion_tokens)
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": reply.prompt_tokens + completion_tokens, "cost": cost,
                 "is_byok": False, "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": len(reply.reasoning)}}
        self.fake.generations[gen_id] = {
            "id": gen_id, "model": model, "total_cost": cost, "streamed": bool(body.get("stream")),
            "cancelled": reply.cut_after is not None, "provider_name": "FakeProvider",
            "latency": 120, "generation_time": 340,
            "finish_reason": None if reply.cut_after is not None else reply.finish_reason,
            "native_finish_reason": None if reply.cut_after is not None else reply.finish_reason,
            "tokens_prompt": reply.prompt_tokens, "tokens_completion": completion_tokens,
            "native_tokens_prompt": reply.prompt_tokens,
            "native_tokens_completion": completion_tokens, "usage": cost, "is_byok": False,
            "created_at": "2026-01-01T00:00:00Z",
        }
        if body.get("stream"):
            return self._stream(reply, gen_id, model, usage)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.tokens),
                                   "reasoning": "".join(reply.reasoning) or None}
        finish = reply.finish_reason
        if reply.tool_calls:
            finish = "tool_calls"
            message["tool_calls"] = [
                {"id": f"call_{i}_{gen_id}", "type": "function", "index": i,
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, args) in enumerate(reply.tool_calls)]
        self._send_json(200, {
            "id": gen_id, "provider": "FakeProvider", "model": model,
            "object": "chat.completion", "created": int(time.time()),
            "choices": [{"index": 0, "finish_reason": finish, "native_finish_reason": finish,
                         "message": message}],
            "usage": usage,
        }, {"X-Generation-Id": gen_id})

    def _stream(self, reply: Reply, gen_id: str, model: str, usage: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Generation-Id", gen_id)
        self.end_headers()
        self.close_connection = True
        base = {"id": gen_id, "provider": "FakeProvider", "model": model,
                "object": "chat.completion.chunk", "created": int(time.time())}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                         "native_finish_reason": finish}], **extra}

        for _ in range(reply.comments):
            self._chunk(b": OPENROUTER PROCESSING\n\n")
        for i, piece in enumerate(reply.reasoning):
            self._event(chunk({"role": "assistant", "content": "", "reasoning": piece}
                              if i == 0 else {"content": "", "reasoning": piece}))
        tokens = reply.tokens
        for i, piece in enumerate(tokens):
            if reply.cut_after is not None and i >= reply.cut_after:
                break
            last = i == len(tokens) - 1
            finish = reply.finish_reason if last and reply.usage_shape == "empty_choices" and not (
                reply.error_mid_stream or reply.cut_after is not None or reply.tool_calls) else None
            delta = {"content": piece} if i or reply.reasoning else {"role": "assistant", "content": piece}
            self._event(chunk(delta, finish))
        if reply.cut_after is not None:
            if reply.cut_mode == "eof":
                self._chunk(b"")  # the chunked terminator: a clean end, but no usage, no [DONE]
            return  # "abort": the socket closes without the terminator
        for i, (name, args) in enumerate(reply.tool_calls):
            text = json.dumps(args)
            last = i == len(reply.tool_calls) - 1
            self._event(chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": i, "id": f"call_{i}_{gen_id}", "type": "function",
                 "function": {"name": name, "arguments": ""}}]}))
            pieces = [text[j:j + 7] for j in range(0, len(text), 7)]
            for k, piece in enumerate(pieces):
                end = last and k == len(pieces) - 1 and reply.usage_shape == "empty_choices"
                self._event(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]},
                                  "tool_calls" if end else None))
        if reply.error_mid_stream is not None:
            self._event(chunk({"content": ""}, "error", error=reply.error_mid_stream))
            self._chunk(b"")
            return
        if reply.usage_shape == "empty_choices":
            self._event({**base, "choices": [], "usage": usage})
        else:
            self._event(chunk({"content": ""},
                              "tool_calls" if reply.tool_calls else reply.finish_reason,
                              usage=usage))
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _EmbeddingRoutes(_Handler):
    """``POST /embeddings`` beside the chat routes of ``_Handler``."""

    def do_POST(self) -> None:
        if urlsplit(self.path).path != PREFIX + "/embeddings":
            return super().do_POST()
        path, _, body = self._record()
        if not self._authorized():
            return
        failure = self.fake._next_failure(path)
        if failure:
            return self._send_error(failure[0], failure[1], retry_after=failure[2])
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._send_error(400, 'Input required: specify "model"')
        model = next((m for m in self.fake.embedding_models if m["id"] == body["model"]), None)
        if model is None:
            return self._send_error(400, f"{body['model']} is not a valid model ID",
                                    {"availability": {"code": "model_not_found"}})
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) and t for t in texts):
            return self._send_error(400, "Input must be a non-empty string or a list of them")
        size = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 1536
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector: Any = embedding_of(text, size)
            if base64_wanted:
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(max(1, math.ceil(len(text) / 4)) for text in texts)
        cost = float(tokens * Decimal(str(model["pricing"].get("prompt", 0))))
        self._send_json(200, {
            "id": self.fake._new_generation_id(), "object": "list", "data": data,
            "model": model["id"], "provider": "FakeProvider",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "cost": cost}})
