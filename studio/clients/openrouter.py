"""OpenRouter client: streamed chat through the official ``openai`` client, plus the
OpenRouter-only endpoints (``/models`` with prices, ``/key``, ``/credits``, ``/generation``) via httpx.

It owns the wire details of docs/protocols.md section 3 and turns every failure into a
``StudioError`` with a sentence for the person at the screen (original kept as ``__cause__``).
It never retries by itself (``max_retries=0``): the router decides about retries and fallbacks.
The API key never appears in a message, log line or ``repr``. No gradio imports here.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import httpx

if TYPE_CHECKING:  # imported for real on first use, see _openai()
    import openai

from ..costs.pricing import ModelPrices, format_price_per_million, to_decimal
from ..errors import (BackendRejected, BackendUnavailable, GenerationFailed, ModelNotFound,
                      StreamInterrupted, StudioError)
from ..events import ChatDelta, ChatDone, ChatMessage, ChatOptions, ChatThinking, Usage

log = logging.getLogger(__name__)

BACKEND = "openrouter"
CREDITS_URL = "https://openrouter.ai/credits"
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


# -- small result types ----------------------------------------------------------------------


@dataclass(frozen=True)
class CloudModel:
    """One model from ``GET /models``; prices are USD per token (``ModelPrices``)."""

    id: str
    name: str
    context_length: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    prices: ModelPrices

    @property
    def is_free(self) -> bool:
        return self.prices.is_free

    @property
    def supports_images(self) -> bool:
        return "image" in self.input_modalities

    @property
    def label(self) -> str:
        """Picker label, e.g. ``OpenAI: GPT-4o-mini · $0.15/M in, $0.60/M out · 128K ctx``."""
        if self.is_free:
            price = "free"
        elif not self.prices.is_known:
            price = "price unknown"
        else:
            price = (f"{format_price_per_million(self.prices.prompt)} in, "
                     f"{format_price_per_million(self.prices.completion)} out")
        parts = [self.name or self.id, price]
        if self.context_length:
            parts.append(f"{format_context(self.context_length)} ctx")
        return " · ".join(parts)


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


@dataclass(frozen=True)
class Generation:
    """``GET /generation?id=``: the final bill of one reply."""

    id: str
    model: str
    total_cost: Decimal | None
    tokens_prompt: int | None
    tokens_completion: int | None
    provider_name: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# -- the client ------------------------------------------------------------------------------


class OpenRouterClient:
    """Chat with cloud models on OpenRouter (or any OpenAI-compatible proxy at ``base_url``).

    Constructing it does no I/O; an empty ``api_key`` is allowed and every call then raises
    ``NoApiKey`` before sending anything.
    """

    def __init__(self, api_key: str, base_url: str = "https://openrouter.ai/api/v1", *,
                 referer: str = "", title: str = "", timeout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api_key = api_key or ""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self._headers: dict[str, str] = {}
        if referer:
            self._headers["HTTP-Referer"] = referer
        if title:
            self._headers["X-Title"] = title
        self._openai: openai.OpenAI | None = None
        if self._api_key:
            # max_retries=0: retrying (and honouring Retry-After) is the router's job, and the
            # SDK's own retries would hide 429s from it.
            self._openai = _openai().OpenAI(api_key=self._api_key, base_url=self.base_url,
                                         default_headers=self._headers, max_retries=0,
                                         timeout=timeout)

    def __repr__(self) -> str:
        return f"OpenRouterClient(base_url={self.base_url!r}, key={'set' if self._api_key else 'missing'})"

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    # -- chat ----------------------------------------------------------------------------

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None
                    ) -> Iterator[ChatDelta | ChatThinking | ChatDone]:
        """Stream a reply from ``model`` (an OpenRouter id such as ``openai/gpt-4o-mini``).

        Yields ``ChatThinking`` (from ``delta.reasoning``) and ``ChatDelta`` pieces, then one
        ``ChatDone`` naming the model that actually answered, with OpenRouter's token counts and
        cost. Raises ``NoApiKey``, ``BadApiKey``, ``OutOfCredit``, ``RateLimited``,
        ``ProviderError``, ``ModelNotFound``, ``BackendRejected``, ``BackendUnavailable``
        (unreachable, timeout) before the first piece, and ``StreamInterrupted`` once the
        stream has started (the caller keeps the text so far). Closing the generator early
        closes the connection, which stops generation (and billing) upstream.
        """
        client = self._require_client()
        request = build_chat_request(model, messages, options)
        log.debug("OpenRouter chat request: model=%s messages=%d", model, len(messages))
        started = self._clock()
        try:
            stream = client.chat.completions.create(**request)
        except _openai().APIError as err:
            raise self._error_from_openai(err, model) from err

        answered_model = model
        usage: Any = None
        finish_reason: str | None = None
        first_token_at: float | None = None
        with stream:
            try:
                for chunk in stream:
                    answered_model = chunk.model or answered_model
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        delta = choice.delta
                        reasoning = getattr(delta, "reasoning", None) if delta else None
                        if isinstance(reasoning, str) and reasoning:
                            first_token_at = first_token_at or self._clock()
                            yield ChatThinking(reasoning)
                        if delta is not None and delta.content:
                            first_token_at = first_token_at or self._clock()
                            yield ChatDelta(delta.content)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        if choice.finish_reason == "error":
                            error = (choice.model_extra or {}).get("error") or {}
                            raise StreamInterrupted(
                                f"OpenRouter stopped the reply from '{answered_model}' part way"
                                f"{_detail_suffix(error, self._api_key)}.",
                                hint="The text so far is kept; try again or pick another model.")
            except _openai().APIError as err:
                raise self._interrupted(err, answered_model) from err
        if usage is None and finish_reason is None:
            raise StreamInterrupted(
                f"OpenRouter's stream for '{answered_model}' ended before the reply was complete.",
                hint="The text so far is kept; try again.")
        yield ChatDone(backend=BACKEND, model=answered_model,
                       usage=self._usage(usage, finish_reason, started, first_token_at))

    def _usage(self, usage: Any, finish_reason: str | None, started: float,
               first_token_at: float | None) -> Usage:
        ended = self._clock()
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        cost = getattr(usage, "cost", None)
        tokens_per_s = None
        if completion_tokens and first_token_at is not None and ended > first_token_at:
            tokens_per_s = completion_tokens / (ended - first_token_at)
        return Usage(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            total_ms=(ended - started) * 1000, tokens_per_s=tokens_per_s,
            cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
            cost_is_estimate=False, done_reason=finish_reason)

    # -- OpenRouter-only endpoints ------------------------------------------------------------

    def list_models(self, *, output_modalities: str | None = None) -> list[CloudModel]:
        """Models OpenRouter offers, with per-token prices. Works without a key (anonymous)."""
        params = {"output_modalities": output_modalities} if output_modalities else None
        payload = self._get("/models", params=params, key_required=False)
        rows = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise BackendRejected(f"OpenRouter at {self.base_url} sent a model list in an unknown shape.")
        return [parse_model(row) for row in rows if isinstance(row, dict) and row.get("id")]

    def key_info(self) -> KeyInfo:
        """Usage and limit of the configured key (``GET /key``)."""
        data = self._get("/key").get("data") or {}
        return KeyInfo(
            label=str(data.get("label") or ""), usage=_float(data.get("usage")),
            limit=_float(data.get("limit")), limit_remaining=_float(data.get("limit_remaining")),
            is_free_tier=bool(data.get("is_free_tier")), raw=data)

    def credits(self) -> Credits:
        """Account credits (``GET /credits``). Ordinary keys get 403 from current OpenRouter:
        that is returned as ``Credits.unavailable(reason)``, not raised."""
        try:
            data = self._get("/credits").get("data") or {}
        except BackendRejected as err:
            if err.status != 403:
                raise
            return Credits.unavailable(
                "OpenRouter shows account credits only to management keys; "
                "the key's own usage and limit are under key info.")
        return Credits(total_credits=_float(data.get("total_credits")),
                       total_usage=_float(data.get("total_usage")))

    def generation(self, generation_id: str, *, attempts: int = 1, delay: float = 1.0,
                   sleep: Callable[[float], None] = time.sleep) -> Generation:
        """The final bill of a reply. OpenRouter answers 404 for a short while after a reply
        ends, so up to ``attempts`` tries are made, ``delay`` seconds apart (doubling)."""
        for attempt in range(1, attempts + 1):
            try:
                data = self._get("/generation", params={"id": generation_id}).get("data") or {}
                break
            except BackendRejected as err:
                if err.status != 404:
                    raise
                if attempt == attempts:
                    raise BackendRejected(
                        f"OpenRouter has no record of generation {generation_id!r} (yet).",
                        hint="Records appear a few seconds after a reply ends; try again.",
                        status=404) from err
                sleep(delay * 2 ** (attempt - 1))
        return Generation(
            id=str(data.get("id") or generation_id), model=str(data.get("model") or ""),
            total_cost=to_decimal(data.get("total_cost")),
            tokens_prompt=data.get("tokens_prompt"), tokens_completion=data.get("tokens_completion"),
            provider_name=data.get("provider_name"), raw=data)

    # -- plumbing ---------------------------------------------------------------------------

    def _require_client(self) -> openai.OpenAI:
        if self._openai is None:
            raise NoApiKey("No OpenRouter key. Set OPENROUTER_API_KEY (in .env or the environment) "
                           "to use cloud models.")
        return self._openai

    def _get(self, path: str, *, params: Mapping[str, str] | None = None,
             key_required: bool = True) -> dict[str, Any]:
        if key_required:
            self._require_client()
        headers = dict(self._headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = self.base_url + path
        try:
            response = httpx.get(url, params=params, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as err:
            raise self._timeout() from err
        except httpx.HTTPError as err:
            raise self._unreachable() from err
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            error = payload.get("error") if isinstance(payload, dict) else None
            raise self._error_from_status(
                response.status_code, error if isinstance(error, dict) else {},
                response.headers, model=None, path=path)
        if not isinstance(payload, dict):
            raise BackendRejected(f"OpenRouter at {self.base_url} answered {path} with something "
                                  "that isn't JSON.", hint="Check OPENROUTER_BASE_URL.",
                                  status=response.status_code)
        return payload

    def _unreachable(self) -> BackendUnavailable:
        return BackendUnavailable(f"Can't reach OpenRouter at {self.base_url}.",
                                  hint="Check the network connection and OPENROUTER_BASE_URL.")

    def _timeout(self) -> BackendUnavailable:
        return BackendUnavailable(f"OpenRouter at {self.base_url} did not answer within "
                                  f"{self.timeout:g} s.",
                                  hint="It may be busy: try again, or raise STUDIO_REQUEST_TIMEOUT.")

    def _error_from_openai(self, err: openai.APIError, model: str) -> StudioError:
        if isinstance(err, _openai().APITimeoutError):
            return self._timeout()
        if isinstance(err, _openai().APIConnectionError):
            return self._unreachable()
        if isinstance(err, _openai().APIStatusError):
            body = err.body if isinstance(err.body, dict) else {}
            return self._error_from_status(err.status_code, body, err.response.headers, model=model)
        return GenerationFailed(f"OpenRouter failed to answer for '{model}'"
                                f"{_detail_suffix({'message': err.message}, self._api_key)}.")

    def _interrupted(self, err: openai.APIError, model: str) -> StreamInterrupted:
        if isinstance(err, _openai().APITimeoutError):
            text = f"OpenRouter stopped sending the reply from '{model}' for {self.timeout:g} s."
        elif isinstance(err, _openai().APIConnectionError):
            text = f"The connection to OpenRouter dropped part way through the reply from '{model}'."
        else:  # the mid-stream error chunk: openai raises APIError with the chunk's `error` as body
            body = err.body if isinstance(err.body, dict) else {"message": err.message}
            text = (f"OpenRouter stopped the reply from '{model}' part way"
                    f"{_detail_suffix(body, self._api_key)}.")
        return StreamInterrupted(text, hint="The text so far is kept; try again or pick another model.")

    def _error_from_status(self, status: int, error: Mapping[str, Any], headers: Mapping[str, str],
                           *, model: str | None, path: str = "/chat/completions") -> StudioError:
        detail = f" ({status}: {_message(error, self._api_key)})"
        subject = f"'{model}'" if model else path
        if status == 401:
            if not self._api_key:
                return NoApiKey("No OpenRouter key. Set OPENROUTER_API_KEY (in .env or the "
                                "environment) to use cloud models.")
            return BadApiKey(f"OpenRouter rejected the API key{detail}.",
                             hint="Check OPENROUTER_API_KEY.", status=status)
        if status == 402:
            return OutOfCredit(f"OpenRouter account is out of credit{detail}.",
                               hint=f"Add credits at {CREDITS_URL} or pick a local model.",
                               status=status)
        if status == 429:
            return RateLimited(f"OpenRouter is rate limiting requests for {subject}{detail}.",
                               hint="Wait a moment and try again, or pick another model.",
                               status=status, retry_after=parse_retry_after(headers))
        if status == 408 or status >= 500:
            return ProviderError(f"OpenRouter's provider failed for {subject}{detail}.",
                                 hint="Try again in a moment, or pick another model.",
                                 status=status, retry_after=parse_retry_after(headers))
        if model and (status == 404 or (status == 400 and _is_unknown_model(error))):
            return ModelNotFound(f"OpenRouter can't serve the model '{model}'{detail}.",
                                 hint="Pick another model from the list, or refresh it.",
                                 status=status)
        if status == 403:
            return BackendRejected(f"OpenRouter refused the request for {subject}{detail}.",
                                   hint="The prompt may have been flagged by moderation, or the "
                                        "key lacks permission.", status=status)
        return BackendRejected(f"OpenRouter rejected the request for {subject}{detail}.",
                               status=status)


# -- pure helpers ----------------------------------------------------------------------------


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
        for name in ("temperature", "top_p", "seed", "max_tokens"):
            value = getattr(options, name)
            if value is not None:
                request[name] = value
        if options.think is not None:
            extra_body["reasoning"] = {"enabled": options.think}
    request["extra_body"] = extra_body
    return request


def _openai():
    """The openai package, imported on first use: it costs about half a second of start-up,
    which only people who use cloud models should pay."""
    import openai

    return openai


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A ``ChatMessage`` as an OpenAI chat message; images become ``data:`` URL content parts."""
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


def parse_model(row: Mapping[str, Any]) -> CloudModel:
    """A ``GET /models`` entry as a ``CloudModel``."""
    arch = row.get("architecture") or {}
    context = row.get("context_length") or (row.get("top_provider") or {}).get("context_length")
    return CloudModel(
        id=str(row["id"]), name=str(row.get("name") or row["id"]),
        context_length=int(context) if isinstance(context, (int, float)) else None,
        input_modalities=tuple(arch.get("input_modalities") or ("text",)),
        output_modalities=tuple(arch.get("output_modalities") or ("text",)),
        prices=ModelPrices.from_openrouter(row.get("pricing")))


def format_context(tokens: int) -> str:
    """``128000`` -> ``128K``, ``1048576`` -> ``1M``.

    >>> format_context(128000), format_context(131072), format_context(1048576), format_context(512)
    ('128K', '131K', '1M', '512')
    """
    if tokens >= 1_000_000:
        return f"{round(tokens / 1_000_000, 1):g}M"
    if tokens >= 1000:
        return f"{round(tokens / 1000):d}K"
    return str(tokens)


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


def _is_unknown_model(error: Mapping[str, Any]) -> bool:
    metadata = error.get("metadata") or {}
    availability = metadata.get("availability") if isinstance(metadata, dict) else None
    if isinstance(availability, dict) and availability.get("code") == "model_not_found":
        return True
    message = str(error.get("message") or "").lower()
    return "model" in message and ("not a valid" in message or "not found" in message
                                   or "does not exist" in message)


def _message(error: Mapping[str, Any], secret: str) -> str:
    text = str(error.get("message") or "no details").strip()
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + "…"
    return _redact(text, secret)


def _detail_suffix(error: Mapping[str, Any], secret: str) -> str:
    code = error.get("code")
    message = _message(error, secret)
    return f": {message} (code {code})" if code is not None else f": {message}"


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "sk-or-…") if secret else text


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
