"""A client for one OpenAI-compatible local server: llama.cpp's ``llama-server``, vLLM,
LM Studio, SGLang, or another studio's ``/v1``.

Its models come from ``GET {base}/models`` (``data[].id``); chat goes through the official
``openai`` client, streamed, asking for usage (``stream_options.include_usage``). Thinking
arrives as ``delta.reasoning_content`` (llama.cpp, vLLM) or ``delta.reasoning``. Work on
these servers is local work: no price, accounted like Ollama's. Failures become
``StudioError``s with a sentence; the key, when one is set, never appears in one. No retries
here (``max_retries=0``): the router and the host pool decide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import httpx

if TYPE_CHECKING:
    import openai

from ..errors import (BackendRejected, BackendUnavailable, ModelNotFound, StreamInterrupted,
                      StudioError)
from ..events import ChatDone, ChatMessage, ChatOptions, Usage
from .openrouter_types import StreamPieces, build_chat_request
from .tls import tls_context

BACKEND = "local"
CONNECT_TIMEOUT = 5.0


def _openai():
    import openai  # noqa: PLC0415 - imported on first use, as the OpenRouter client does

    return openai


@dataclass(frozen=True)
class ServerModel:
    """One model a server offers. ``context_length`` and ``size`` when it says (llama.cpp's
    ``meta``; vLLM's ``max_model_len``)."""

    name: str
    owned_by: str = ""
    context_length: int | None = None
    size: int | None = None


class OpenAICompatClient:
    """Talks to one server at ``base_url`` (``http://box:8080/v1``); thread-safe."""

    def __init__(self, base_url: str, *, key: str = "", timeout: float = 300.0,
                 shown_as: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._key = key
        self.shown_as = shown_as or self.base_url
        connect = min(CONNECT_TIMEOUT, timeout)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, verify=tls_context(),
                                  timeout=httpx.Timeout(timeout, connect=connect))
        # Servers without a key still need a non-empty api_key for the openai client. Its
        # timeout is the openai package's own Timeout: from openai 3.61 that is httpx2's, which
        # refuses an httpx.Timeout.
        self._openai = _openai().OpenAI(api_key=key or "none", base_url=self.base_url,
                                        max_retries=0,
                                        timeout=_openai().Timeout(timeout, connect=connect))

    def __repr__(self) -> str:
        return f"OpenAICompatClient({self.base_url!r}, key={'set' if self._key else 'none'})"

    def close(self) -> None:
        self._http.close()
        self._openai.close()

    # -- models

    def list_models(self) -> list[ServerModel]:
        try:
            response = self._http.get("/models")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code in (401, 403):
            raise BackendRejected(f"The server at {self.shown_as} refused the key "
                                  f"({response.status_code}).",
                                  hint="Check key= for it in STUDIO_OPENAI_SERVERS.",
                                  status=response.status_code)
        try:
            response.raise_for_status()
            rows = response.json()["data"]
            models = []
            for row in rows:
                meta = row.get("meta") or {}
                models.append(ServerModel(
                    name=str(row["id"]), owned_by=str(row.get("owned_by") or ""),
                    context_length=meta.get("n_ctx_train") or row.get("max_model_len"),
                    size=meta.get("size")))
        except (httpx.HTTPStatusError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendRejected(f"The server at {self.shown_as} answered /models, but not "
                                  "like an OpenAI-compatible server.",
                                  hint="Its address in STUDIO_OPENAI_SERVERS should end in "
                                       "/v1 (e.g. http://box:8080/v1).") from exc
        return sorted(models, key=lambda m: m.name)

    # -- chat

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None) -> Iterator:
        """Stream a reply: ChatThinking / ChatDelta / ChatToolCall pieces, then ChatDone.
        Raises BackendUnavailable, ModelNotFound or BackendRejected before the first piece,
        StreamInterrupted after (the pieces already yielded stay valid)."""
        request = build_chat_request(model, messages, options)
        request.pop("extra_body", None)  # OpenRouter's extras; local servers don't take them
        if options is not None and options.think is not None:
            request["extra_body"] = {"chat_template_kwargs": {"enable_thinking": options.think}}
        started = time.monotonic()
        try:
            stream = self._openai.chat.completions.create(**request)
        except _openai().APIError as err:
            raise self._error(err, model) from err
        usage: Any = None
        finish: str | None = None
        pieces = StreamPieces(time.monotonic, ("reasoning_content", "reasoning"))
        with stream:
            try:
                for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        yield from pieces.events(choice.delta)
                        finish = choice.finish_reason or finish
            except _openai().APIError as err:
                raise StreamInterrupted(f"The server at {self.shown_as} broke off the reply "
                                        f"from '{model}'.",
                                        hint="The text so far is kept; try again.") from err
        if finish is None:
            raise StreamInterrupted(f"The server at {self.shown_as} ended the reply from "
                                    f"'{model}' before finishing it.",
                                    hint="The text so far is kept; try again.")
        yield from pieces.tool_calls()
        ended = time.monotonic()
        completion = getattr(usage, "completion_tokens", None)
        first_at = pieces.first_at
        rate = (completion / (ended - first_at) if completion and first_at is not None
                and ended > first_at else None)
        yield ChatDone(backend=BACKEND, model=model, usage=Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", None), completion_tokens=completion,
            total_ms=(ended - started) * 1000, tokens_per_s=rate, done_reason=finish))

    # -- errors

    def _unreachable(self, exc: BaseException) -> StudioError:
        if isinstance(exc, (httpx.TimeoutException, _openai().APITimeoutError)):
            return BackendUnavailable(f"The server at {self.shown_as} didn't answer in time.",
                                      hint="Check that it is running and not overloaded.")
        return BackendUnavailable(f"Can't reach the server at {self.shown_as}.",
                                  hint="Check that it is running, and its address in "
                                       "STUDIO_OPENAI_SERVERS.")

    def _error(self, err: "openai.APIError", model: str) -> StudioError:
        openai = _openai()
        if isinstance(err, (openai.APIConnectionError, openai.APITimeoutError)):
            return self._unreachable(err)
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        detail = ""
        if isinstance(body, dict):
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            detail = str(inner.get("message") or "")
        detail = detail.replace(self._key, "…") if self._key else detail
        if status == 404:
            return ModelNotFound(f"The server at {self.shown_as} has no model '{model}'"
                                 + (f" ({detail})" if detail else "") + ".",
                                 hint="Pick one of the models it lists.")
        if status in (401, 403):
            return BackendRejected(f"The server at {self.shown_as} refused the key ({status}).",
                                   hint="Check key= for it in STUDIO_OPENAI_SERVERS.",
                                   status=status)
        return BackendRejected(f"The server at {self.shown_as} refused the request from "
                               f"'{model}' ({status})" + (f": {detail}" if detail else "") + ".",
                               hint="Its own log says more.", status=status)
