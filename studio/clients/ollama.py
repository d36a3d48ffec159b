"""The Ollama backend: installed and loaded models, model facts, streamed chat, embeddings.

Built on the official ``ollama`` package (``ollama.Client``). What it can't ask for
(``GET /api/version``, and ``/api/show``'s ``projector_info``, which its ShowResponse drops)
goes through one ``httpx.Client`` the instance owns beside it, with the same base URL and
timeouts. Returns the studio's own small types (``ModelInfo``, ``RunningModel`` and the chat
events of ``studio.events``), never raw SDK objects, and raises only ``StudioError``
subclasses, made by one function (``_translate``) and keeping the original as ``__cause__``.

No gradio imports here, and nothing happens at import time.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

import httpx
import ollama

from ..errors import (
    BackendRejected,
    BackendUnavailable,
    GenerationFailed,
    InvalidInput,
    ModelNotFound,
    StreamInterrupted,
    StudioError,
)
from ..events import (ChatDelta, ChatDone, ChatMessage, ChatOptions, ChatThinking, ChatToolCall,
                      EmbedResult, Usage)
from .tls import tls_context

# /api/version is the "is it up?" probe: it should fail fast, not wait out a model load.
VERSION_TIMEOUT = 5.0
# A wrong address in OLLAMA_HOST should not hang the UI for the whole request timeout.
CONNECT_TIMEOUT = 10.0

_RETRY_HINT = "What arrived so far is kept; send the message again to retry."


def format_size(size: int) -> str:
    """Bytes in the units ``ollama list`` uses (decimal, one decimal place under 10).

    >>> format_size(2_019_393_189)
    '2.0 GB'
    >>> format_size(274_302_450)
    '274 MB'
    >>> format_size(512)
    '512 B'
    """
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class ModelInfo:
    """One installed model, as /api/tags describes it."""

    name: str
    size: int
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    modified_at: str = ""
    digest: str = ""

    @property
    def label(self) -> str:
        """E.g. ``'llama3.2:latest · 2.0 GB · llama 3.2B Q4_K_M'``."""
        facts = " ".join(p for p in (self.family, self.parameter_size, self.quantization) if p)
        return " · ".join(p for p in (self.name, format_size(self.size), facts) if p)


@dataclass(frozen=True)
class RunningModel:
    """One model loaded in memory, as /api/ps describes it."""

    name: str
    size: int
    size_vram: int
    expires_at: str
    context_length: int | None = None


@dataclass(frozen=True)
class PullProgress:
    """One status line of a pull. ``digest`` (``sha256:…``), ``total`` and ``completed``
    are set only on the lines of a layer being downloaded."""

    status: str
    digest: str = ""
    total: int | None = None
    completed: int | None = None

    @property
    def layer(self) -> str:
        """The 12 hex characters Ollama shows for the layer (``""`` when none)."""
        return self.digest.split(":", 1)[-1][:12]


class OllamaClient:
    """Talks to one Ollama server; safe to share between threads."""

    def __init__(self, host: str, *, timeout: float = 300.0, key: str = ""):
        """``host`` is already normalised (``http://127.0.0.1:11434``); ``timeout`` is the
        longest wait, in seconds, for any single read (including between streamed tokens);
        ``key``, when set, goes as a bearer token (an Ollama behind a proxy that asks)."""
        self.url = host.rstrip("/")
        self.timeout = timeout
        self._connect_timeout = min(CONNECT_TIMEOUT, timeout)
        timeouts = httpx.Timeout(timeout, connect=self._connect_timeout)
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._ollama = ollama.Client(host=self.url, timeout=timeouts, headers=headers,
                                     verify=tls_context())
        self._http = httpx.Client(base_url=self.url, timeout=timeouts, headers=headers,
                                  verify=tls_context())
        self._vision: dict[str, bool] = {}
        self._vision_lock = threading.Lock()

    def close(self) -> None:
        self._ollama.close()
        self._http.close()

    def version(self) -> str:
        """The server's version string. Raises BackendUnavailable / BackendRejected."""
        timeout = min(VERSION_TIMEOUT, self.timeout)
        try:
            response = self._http.get("/api/version", timeout=timeout)
            response.raise_for_status()
            return str(response.json()["version"])
        except httpx.HTTPError as exc:
            raise self._translate(exc, timeout=timeout) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendRejected(f"The server at {self.url} answered /api/version, but not like Ollama.",
                                  hint="Check that OLLAMA_HOST points at Ollama.") from exc

    def list_models(self) -> list[ModelInfo]:
        """Installed models, sorted by name (an empty list when there are none)."""
        try:
            listing = self._ollama.list()
        except _ERRORS as exc:
            raise self._translate(exc) from exc
        models = []
        for m in listing.models:
            details = m.details.model_dump() if m.details else {}
            models.append(ModelInfo(
                name=m.model or "", size=int(m.size or 0), family=details.get("family") or "",
                parameter_size=details.get("parameter_size") or "",
                quantization=details.get("quantization_level") or "",
                modified_at=m.modified_at.isoformat() if m.modified_at else "", digest=m.digest or ""))
        return sorted(models, key=lambda m: m.name)

    def show(self, model: str) -> dict:
        """Facts about one model: ``capabilities`` (list), ``template``, ``parameters``,
        ``modelfile``, ``license`` (strings, "" when absent), ``details`` and ``model_info``
        (dicts). Raises ModelNotFound when it is not installed."""
        info = self._show(model)
        return {
            "capabilities": list(info.capabilities or []),
            "template": info.template or "",
            "parameters": info.parameters or "",
            "modelfile": info.modelfile or "",
            "license": info.license or "",
            "details": info.details.model_dump() if info.details else {},
            "model_info": dict(info.modelinfo or {}),
        }

    def capabilities(self, model: str) -> tuple[str, ...] | None:
        """What ``model`` can do, as ``/api/show`` reports it ("completion", "embedding",
        "vision", "tools", "thinking", "insert"...); None from a server before v0.6.4, which
        doesn't say. Raises ModelNotFound when it is not installed."""
        info = self._show(model)
        return None if info.capabilities is None else tuple(info.capabilities)

    def supports_vision(self, model: str) -> bool:
        """Whether ``model`` accepts images; asked once per model name, then remembered."""
        with self._vision_lock:
            if model in self._vision:
                return self._vision[model]
        info = self._show(model)
        if info.capabilities is not None:
            vision = "vision" in info.capabilities
        else:
            # Servers before v0.6.4 report no capabilities; their vision models carry
            # projector_info, which ollama-python's ShowResponse drops, so read it raw.
            vision = bool(self._show_raw(model).get("projector_info"))
        with self._vision_lock:
            self._vision[model] = vision
        return vision

    def running(self) -> list[RunningModel]:
        """Models loaded in memory right now (/api/ps), as Ollama orders them."""
        try:
            loaded = self._ollama.ps()
        except _ERRORS as exc:
            raise self._translate(exc) from exc
        return [RunningModel(name=m.name or m.model or "", size=int(m.size or 0),
                             size_vram=int(m.size_vram or 0),
                             expires_at=m.expires_at.isoformat() if m.expires_at else "",
                             context_length=m.context_length)
                for m in loaded.models]

    def unload(self, model: str) -> None:
        """Free the model's memory now (a chat with no messages and keep_alive 0)."""
        try:
            self._ollama.chat(model=model, messages=[], keep_alive=0)
        except _ERRORS as exc:
            raise self._translate(exc, model=model) from exc

    def embed(self, model: str, inputs: list[str], *, dimensions: int | None = None
              ) -> EmbedResult:
        """One vector per text of ``inputs``, in order (POST /api/embed; Ollama L2-normalises
        them). ``dimensions`` asks for shorter vectors (servers that predate it ignore it).

        Raises ModelNotFound when ``model`` is not installed, InvalidInput when it is not an
        embedding model (Ollama answers 501 "this model does not support embeddings"),
        BackendRejected for other refusals, BackendUnavailable when Ollama can't be reached.
        """
        try:
            answer = self._ollama.embed(model=model, input=list(inputs), dimensions=dimensions)
        except ollama.ResponseError as exc:
            if exc.status_code in (400, 501) and "does not support" in exc.error:
                raise InvalidInput(f"The model '{model}' can't make embeddings: {exc.error}.",
                                   hint="Pick an embedding model, e.g. nomic-embed-text "
                                        "(`ollama pull nomic-embed-text`).") from exc
            raise self._translate(exc, model=model) from exc
        except _ERRORS as exc:
            raise self._translate(exc, model=model) from exc
        return EmbedResult(vectors=[[float(x) for x in vector] for vector in answer.embeddings],
                           prompt_tokens=answer.prompt_eval_count,
                           total_ms=_ms(answer.total_duration))

    def pull(self, model: str) -> Iterator[PullProgress]:
        """Pull ``model`` from the registry, yielding each status line as it arrives.

        Nothing is sent until the first ``next()``. Closing the generator early closes the
        HTTP connection, which makes Ollama stop the download (what it fetched so far is
        kept, so a later pull resumes). The last line of a good pull has status
        ``"success"``. Raises ModelNotFound when the registry has no such model,
        BackendRejected for other refusals (with Ollama's own error text),
        BackendUnavailable or StreamInterrupted.
        """
        stream = self._ollama.pull(model, stream=True)
        received = False
        try:
            for part in stream:
                received = True
                yield PullProgress(status=part.status or "", digest=part.digest or "",
                                   total=part.total, completed=part.completed)
        except _ERRORS as exc:
            raise self._translate(exc, model=model, pulling=True, received=received) from exc
        finally:
            stream.close()

    def delete(self, model: str) -> None:
        """Remove an installed model. Raises ModelNotFound when it is not installed."""
        try:
            self._ollama.delete(model)
        except _ERRORS as exc:
            raise self._translate(exc, model=model) from exc

    def copy(self, source: str, destination: str) -> None:
        """Install ``source`` again under the name ``destination`` (a tag; no bytes are
        copied). Raises ModelNotFound when ``source`` is not installed, BackendRejected
        for a name Ollama refuses."""
        try:
            self._ollama.copy(source, destination)
        except _ERRORS as exc:
            raise self._translate(exc, model=source) from exc

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None) -> Iterator[ChatDelta | ChatThinking | ChatDone]:
        """Stream a reply: ChatThinking / ChatDelta pieces, then one ChatDone with the figures.

        Nothing is sent until the first ``next()``. Closing the generator early closes the
        HTTP connection, which makes Ollama stop generating (the Stop button). Raises
        BackendUnavailable, ModelNotFound, BackendRejected, GenerationFailed or
        StreamInterrupted; the pieces already yielded stay valid.
        """
        request = {"model": model, "stream": True,
                   "messages": [_ollama_message(m) for m in messages]}
        request["options"] = _ollama_options(options) or None
        if options is not None:
            if options.think is not None:
                request["think"] = options.think
            if options.tools and options.tool_choice != "none":
                request["tools"] = list(options.tools)
            request["format"] = _ollama_format(options.response_format)
        stream = self._ollama.chat(**request)
        received = False
        final = None
        calls = 0
        try:
            for part in stream:
                if part.message.thinking:
                    received = True
                    yield ChatThinking(part.message.thinking)
                if part.message.content:
                    received = True
                    yield ChatDelta(part.message.content)
                for call in part.message.tool_calls or ():
                    received = True
                    calls += 1
                    yield ChatToolCall(id=getattr(call, "id", None) or f"call_{uuid.uuid4().hex[:24]}",
                                       name=call.function.name,
                                       arguments=json.dumps(dict(call.function.arguments or {}),
                                                            ensure_ascii=False))
                if part.done:
                    final = part
        except _ERRORS as exc:
            raise self._translate(exc, model=model, streaming=True, received=received) from exc
        finally:
            stream.close()  # on early close: leaves ollama's `with client.stream(...)`, dropping the socket
        if final is None:
            raise StreamInterrupted("Ollama ended the reply before finishing it.", hint=_RETRY_HINT)
        yield ChatDone(backend="ollama", model=model, usage=_usage(final))

    # -- helpers ------------------------------------------------------------------------------

    def _show(self, model: str) -> ollama.ShowResponse:
        try:
            return self._ollama.show(model)
        except _ERRORS as exc:
            raise self._translate(exc, model=model) from exc

    def _show_raw(self, model: str) -> dict:
        try:
            response = self._http.post("/api/show", json={"model": model})
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as exc:
            raise self._translate(exc, model=model) from exc

    def _translate(self, exc: BaseException, *, model: str | None = None, streaming: bool = False,
                   pulling: bool = False, received: bool = False,
                   timeout: float | None = None) -> StudioError:
        """The StudioError a person should see for a failure of the ollama client or of
        ``self._http``. ``streaming``: a chat reply; ``pulling``: a pull of ``model``;
        ``received``: whether part of the stream already arrived."""
        if isinstance(exc, httpx.HTTPStatusError):
            exc = ollama.ResponseError(exc.response.text, exc.response.status_code)
        if isinstance(exc, ollama.ResponseError) and pulling:
            if exc.status_code == -1:  # an {"error": ...} line: the registry refused
                cls = ModelNotFound if "does not exist" in exc.error or "not found" in exc.error \
                    else BackendRejected
                return cls(f"Ollama could not pull '{model}': {exc.error}.",
                           hint="Check the name on ollama.com/library (e.g. llama3.2 or qwen2.5:7b).")
            return BackendRejected(f"Ollama refused to pull '{model}': {exc.error} "
                                   f"(HTTP {exc.status_code}).", status=exc.status_code)
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == -1:  # an {"error": ...} line inside a stream
                return GenerationFailed(f"Ollama reported an error while writing the reply: {exc.error}",
                                        hint=_RETRY_HINT)
            if exc.status_code == 400 and model and any(
                    f"does not support {what}" in exc.error for what in ("chat", "generate")):
                # An embedding model asked to chat (Ollama's capability check).
                return BackendRejected(f"'{model}' can't chat: Ollama says {exc.error}. It is "
                                       "probably an embedding model, for the API's embeddings.",
                                       hint="Pick a chat model; the Models tab says what each "
                                            "model is for.", status=400)
            if exc.status_code == 404 and model:
                return ModelNotFound(f"Model '{model}' is not installed in Ollama at {self.url}.",
                                     hint=f"Pull it with `ollama pull {model}` or from the Models tab.",
                                     status=404)
            return BackendRejected(f"Ollama at {self.url} refused the request: {exc.error} "
                                   f"(HTTP {exc.status_code}).", status=exc.status_code)
        if pulling and received and not isinstance(exc, (httpx.ConnectError, ConnectionError)):
            return StreamInterrupted(f"The connection to Ollama dropped while pulling '{model}'.",
                                     hint="Pull it again; Ollama resumes from what it already has.")
        if isinstance(exc, httpx.ConnectTimeout):
            seconds = min(timeout or self.timeout, self._connect_timeout)
            return BackendUnavailable(f"Can't reach Ollama at {self.url}: no answer within {seconds:g} s.",
                                      hint="Check that the machine is on and OLLAMA_HOST is right.")
        if isinstance(exc, httpx.TimeoutException):
            seconds = timeout or self.timeout
            if received:
                return StreamInterrupted(f"Ollama stopped sending the reply: nothing arrived for {seconds:g} s.",
                                         hint=_RETRY_HINT)
            return BackendUnavailable(f"Ollama at {self.url} did not answer: timed out after {seconds:g} s.",
                                      hint="A large model may still be loading; try again, "
                                           "or raise STUDIO_REQUEST_TIMEOUT.")
        # Refused connections: a builtin ConnectionError from ollama's non-streaming calls, the
        # raw httpx.ConnectError from its streaming path.
        if isinstance(exc, (httpx.ConnectError, ConnectionError)):
            return BackendUnavailable(f"Can't reach Ollama at {self.url}.",
                                      hint="Start it with `ollama serve` (or check OLLAMA_HOST).")
        if streaming:
            where = "in the middle of the reply" if received else "before the reply started"
            return StreamInterrupted(f"The connection to Ollama dropped {where}.", hint=_RETRY_HINT)
        return BackendUnavailable(f"The connection to Ollama at {self.url} failed: {exc}.",
                                  hint="Check that Ollama is running and try again.")


# What the ollama client raises for transport and HTTP failures (see _translate).
_ERRORS = (ollama.ResponseError, httpx.HTTPError, ConnectionError)


def _ollama_options(options: ChatOptions | None) -> dict:
    """Only the options that are set, under Ollama's names (max_tokens -> num_predict)."""
    if options is None:
        return {}
    names = {"temperature": options.temperature, "top_p": options.top_p, "num_ctx": options.num_ctx,
             "seed": options.seed, "num_predict": options.max_tokens,
             "stop": list(options.stop) if options.stop else None}
    return {key: value for key, value in names.items() if value is not None}


def _ollama_message(message: ChatMessage) -> dict:
    """A ``ChatMessage`` as Ollama's: tool calls with their arguments as an object, a tool
    result with the tool's name (``tool_name``)."""
    out: dict = {"role": message.role, "content": message.content, "images": list(message.images)}
    if message.tool_calls:
        out["tool_calls"] = [{"function": {"name": call.name,
                                           "arguments": _arguments(call.arguments)}}
                             for call in message.tool_calls]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    return out


def _arguments(text: str) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ollama_format(response_format: dict | None) -> str | dict | None:
    """OpenAI's ``response_format`` as Ollama's ``format``: "json", or the JSON schema."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    return None


def _ms(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e6


def _usage(final: ollama.ChatResponse) -> Usage:
    speed = None
    if final.eval_count and final.eval_duration:
        speed = final.eval_count / final.eval_duration * 1e9
    return Usage(prompt_tokens=final.prompt_eval_count, completion_tokens=final.eval_count,
                 load_ms=_ms(final.load_duration), prompt_eval_ms=_ms(final.prompt_eval_duration),
                 eval_ms=_ms(final.eval_duration), total_ms=_ms(final.total_duration),
                 tokens_per_s=speed, done_reason=final.done_reason)
