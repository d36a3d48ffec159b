"""Typed events that chat backends stream, shared by every chat client and the router.

A chat stream is an iterator of these; the last one is always ``ChatDone`` unless the
stream raises a ``StudioError``. ``EmbedResult`` is the whole answer of an embedding request.
Pure data: no I/O, no gradio.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChatDelta:
    """A piece of the answer text."""

    text: str


@dataclass(frozen=True)
class ChatThinking:
    """A piece of the model's reasoning ("thinking"), shown apart from the answer."""

    text: str


@dataclass(frozen=True)
class ChatToolCall:
    """The model asks the caller to run a tool: OpenAI's shape, ``arguments`` a JSON text.

    Only API callers send tools; the reply ends after its calls (finish reason
    ``tool_calls``) and the caller sends the results back as ``role="tool"`` messages."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatGeneration:
    """The backend's own id for this reply (OpenRouter's ``gen-…``), sent before its first
    piece: when the stream ends without a usage report (cut off, stopped), what the reply
    cost can still be asked for by this id (``costs/generation_costs.py``)."""

    id: str


@dataclass(frozen=True)
class ChatNotice:
    """Something the reply should say about itself, e.g. a fallback to another model."""

    text: str


@dataclass(frozen=True)
class ChatRetrying:
    """The backend failed before the reply began and the router waits to try again: a line
    the reply shows while it waits ("OpenRouter is busy (429); trying again in 8 s…"), gone
    once text arrives. Never stored: it says what is happening, not what was answered."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Figures a backend reports about one reply. ``None`` means "not reported"."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    load_ms: float | None = None
    prompt_eval_ms: float | None = None
    eval_ms: float | None = None
    total_ms: float | None = None
    tokens_per_s: float | None = None
    cost_usd: float | None = None
    cost_is_estimate: bool = False
    done_reason: str | None = None
    generation_id: str | None = None  # the backend's id for the reply (see ChatGeneration)


@dataclass(frozen=True)
class ChatDone:
    """End of a reply: which backend and model actually answered, and its figures.

    ``fallback_reason`` is set (by the router) when another model answered than the one asked
    for: why the switch happened, e.g. "OpenRouter account is out of credit".
    """

    backend: str
    model: str
    usage: Usage = field(default_factory=Usage)
    fallback_reason: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    """One message sent to a backend: role, text and optional images (raw bytes)."""

    role: str  # system | user | assistant | tool
    content: str
    images: tuple[bytes, ...] = ()
    tool_calls: tuple[ChatToolCall, ...] = ()  # on an assistant message that called tools
    tool_call_id: str | None = None  # on a tool message: the call it answers
    name: str | None = None  # on a tool message: the tool that produced ``content``


@dataclass(frozen=True)
class ChatOptions:
    """Generation parameters; ``None`` leaves the backend's default."""

    temperature: float | None = None
    top_p: float | None = None
    num_ctx: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    think: bool | None = None
    stop: tuple[str, ...] | None = None
    # OpenAI's shape: {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}
    response_format: dict | None = None
    tools: tuple[dict, ...] | None = None  # OpenAI's (and Ollama's) function tools
    tool_choice: str | dict | None = None  # "auto" | "none" | "required" | a named function


@dataclass(frozen=True)
class EmbedResult:
    """Vectors for a list of texts, one per text in the same order, and the backend's figures
    (``None`` = not reported): tokens read, what it cost (cloud) and how long it took."""

    vectors: list[list[float]]
    prompt_tokens: int | None = None
    cost_usd: float | None = None
    total_ms: float | None = None
