"""OpenRouter's wire shapes as plain data: the errors it can answer with, what its REST
endpoints return (``OpenRouterModel``, ``KeyInfo``, ``Credits``) and the pure translations
between the studio's chat types and OpenAI-style requests (docs/protocols.md section 3).

No I/O here (``openrouter.py`` sends and receives), no prices turned into money (that is
``studio.costs``: a model's ``pricing`` stays the strings OpenRouter sent), no gradio imports.
"""

from __future__ import annotations

import base64
import email.utils
import time
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import BackendRejected, BackendUnavailable
from ..events import ChatDelta, ChatMessage, ChatOptions, ChatThinking, ChatToolCall

_DETAIL_LIMIT = 300


# -- errors particular to OpenRouter ---------------------------------------------------------


class NoApiKey(BackendUnavailable):
    """No key is configured, so the cloud is off (raised before any request)."""


class BadApiKey(BackendRejected):
    """401: the key is missing, revoked or mistyped."""


class OutOfCredit(BackendRejected):
    """402: the account (or this key's limit) has no credit left. Not worth retrying."""


class RateLimited(BackendRejected):
    """429: too many requests. ``retry_after`` is the server's ``Retry-After`` in seconds, if sent."""

    def __init__(self, message: str, *, hint: str = "", status: int | None = 429,
                 retry_after: float | None = None):
        super().__init__(message, hint=hint, status=status)
        self.retry_after = retry_after


class ProviderError(BackendRejected):
    """408/5xx: OpenRouter or the provider behind it failed; may carry ``retry_after``."""

    def __init__(self, message: str, *, hint: str = "", status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message, hint=hint, status=status)
        self.retry_after = retry_after


# -- what the REST endpoints return -----------------------------------------------------------


@dataclass(frozen=True)
class OpenRouterModel:
    """One model from ``GET /models``, as OpenRouter describes it.

    ``pricing`` is OpenRouter's own object: decimal strings in USD per token under
    ``prompt``, ``completion``, ``image``, ``request`` (``"-1"`` for variable-price routers,
    keys missing when a price doesn't apply). ``studio.costs`` turns it into money.
    """

    id: str
    name: str
    context_length: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    pricing: Mapping[str, Any] = field(default_factory=dict)


def parse_model(row: Mapping[str, Any]) -> OpenRouterModel:
    """A ``GET /models`` entry as an ``OpenRouterModel``."""
    arch = row.get("architecture") or {}
    context = row.get("context_length") or (row.get("top_provider") or {}).get("context_length")
    pricing = row.get("pricing")
    return OpenRouterModel(
        id=str(row["id"]), name=str(row.get("name") or row["id"]),
        context_length=int(context) if isinstance(context, (int, float)) else None,
        input_modalities=tuple(arch.get("input_modalities") or ("text",)),
        output_modalities=tuple(arch.get("output_modalities") or ("text",)),
        pricing=dict(pricing) if isinstance(pricing, Mapping) else {})


@dataclass(frozen=True)
class KeyInfo:
    """``GET /key``: what this key has spent and may still spend (USD; ``None`` = no limit)."""

    label: str
    usage: float | None
    limit: float | None
    limit_remaining: float | None
    is_free_tier: bool
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Credits:
    """``GET /credits``; ``reason`` says why the figures are missing (ordinary keys get 403)."""

    total_credits: float | None
    total_usage: float | None
    reason: str = ""

    @classmethod
    def unavailable(cls, reason: str) -> "Credits":
        return cls(total_credits=None, total_usage=None, reason=reason)

    @property
    def available(self) -> bool:
        return self.total_credits is not None

    @property
    def remaining(self) -> float | None:
        if self.total_credits is None or self.total_usage is None:
            return None
        return self.total_credits - self.total_usage


# -- chat requests ---------------------------------------------------------------------------


def build_chat_request(model: str, messages: Sequence[ChatMessage],
                       options: ChatOptions | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create`` (streaming, usage included)."""
    request: dict[str, Any] = {
        "model": model,
        "messages": [message_to_openai(m) for m in messages],
        "stream": True,
        # Deprecated on OpenRouter (usage is always sent) but older deployments and proxies
        # need them to report usage and cost; harmless otherwise (protocols.md 3.2, 3.9).
        "stream_options": {"include_usage": True},
    }
    extra_body: dict[str, Any] = {"usage": {"include": True}}
    if options is not None:
        for name in ("temperature", "top_p", "seed", "max_tokens", "response_format"):
            value = getattr(options, name)
            if value is not None:
                request[name] = value
        if options.stop:
            request["stop"] = list(options.stop)
        if options.tools:
            request["tools"] = list(options.tools)
            if options.tool_choice is not None:
                request["tool_choice"] = options.tool_choice
        if options.think is not None:
            extra_body["reasoning"] = {"enabled": options.think}
    request["extra_body"] = extra_body
    return request


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A ``ChatMessage`` as an OpenAI chat message; images become ``data:`` URL content parts,
    tool calls and tool results keep their ids."""
    if message.tool_calls:
        return {"role": message.role, "content": message.content or None,
                "tool_calls": [{"id": call.id, "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments}}
                               for call in message.tool_calls]}
    if message.role == "tool":
        return {"role": "tool", "content": message.content,
                "tool_call_id": message.tool_call_id or ""}
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "text": message.content})
    for image in message.images:
        parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    return {"role": message.role, "content": parts}


def data_url(image: bytes) -> str:
    """``data:image/<type>;base64,...`` for raw image bytes (type sniffed; PNG if unknown)."""
    return f"data:{image_mime(image)};base64,{base64.b64encode(image).decode('ascii')}"


def image_mime(image: bytes) -> str:
    if image.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if image.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


# -- reading errors and headers --------------------------------------------------------------


def wait_words(seconds: float) -> str:
    """A Retry-After as a person reads it.

    >>> wait_words(12), wait_words(120), wait_words(4000)
    ('12 s', '2 minutes', 'about 1 hour')
    """
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} minutes"
    hours = round(seconds / 3600)
    return f"about {hours} hour{'s' if hours != 1 else ''}"


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_unknown_model(error: Mapping[str, Any]) -> bool:
    metadata = error.get("metadata") or {}
    availability = metadata.get("availability") if isinstance(metadata, dict) else None
    if isinstance(availability, dict) and availability.get("code") == "model_not_found":
        return True
    message = str(error.get("message") or "").lower()
    return "model" in message and ("not a valid" in message or "not found" in message
                                   or "does not exist" in message)


def error_message(error: Mapping[str, Any], secret: str) -> str:
    text = str(error.get("message") or "no details").strip()
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + "…"
    return redact(text, secret)


def detail_suffix(error: Mapping[str, Any], secret: str) -> str:
    code = error.get("code")
    message = error_message(error, secret)
    return f": {message} (code {code})" if code is not None else f": {message}"


def without_links(text: str) -> str:
    """``text`` without the sentences that carry a web address.

    >>> without_links("Insufficient credits. Add more using https://openrouter.ai/credits")
    'Insufficient credits.'
    >>> without_links("Needs more credits. To increase, visit https://x.ai/c and upgrade.")
    'Needs more credits.'
    """
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(s for s in sentences if not re.search(r"https?://", s)).strip()


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "sk-or-…") if secret else text


def as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class StreamPieces:
    """Reads the deltas of an OpenAI-style chat stream (openai-python's chunk objects) into
    the studio's events: thinking (from the first of ``thinking_fields`` a delta carries),
    text, and tool calls, which arrive in fragments by index and are whole only at the end
    (``tool_calls()``). ``first_at`` is when the first piece came (``clock()``)."""

    def __init__(self, clock, thinking_fields: Sequence[str] = ("reasoning",)) -> None:
        self._clock = clock
        self._fields = tuple(thinking_fields)
        self._calls: dict[int, dict[str, str]] = {}
        self.first_at: float | None = None

    def events(self, delta: Any) -> list:
        if delta is None:
            return []
        out: list = []
        extra = getattr(delta, "model_extra", None) or {}
        for name in self._fields:
            thinking = getattr(delta, name, None) or extra.get(name)
            if isinstance(thinking, str) and thinking:
                out.append(ChatThinking(thinking))
                break
        if delta.content:
            out.append(ChatDelta(delta.content))
        for piece in delta.tool_calls or ():
            call = self._calls.setdefault(piece.index or 0, {"id": "", "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
            self._mark()
        if out:
            self._mark()
        return out

    def _mark(self) -> None:
        if self.first_at is None:
            self.first_at = self._clock()

    def tool_calls(self) -> list[ChatToolCall]:
        return [ChatToolCall(id=call["id"] or f"call_{index}", name=call["name"],
                             arguments=call["arguments"] or "{}")
                for index, call in sorted(self._calls.items())]
