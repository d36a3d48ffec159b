"""OpenRouter client: streamed chat and embeddings through the official ``openai`` client,
plus the OpenRouter-only endpoints (``/models`` with prices, ``/key``, ``/credits``) through one
``httpx.Client`` owned by the instance.

It owns the sending and receiving of docs/protocols.md section 3 and turns every failure into
a ``StudioError`` with a sentence for the person at the screen (original kept as ``__cause__``).
It never retries by itself (``max_retries=0``): the router decides about retries and fallbacks.
The API key never appears in a message, log line or ``repr``. What goes over the wire, as plain
data, is ``openrouter_types.py``; prices stay OpenRouter's strings (``studio.costs`` reads them).
No gradio imports here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import httpx

if TYPE_CHECKING:  # imported for real on first use, see _openai()
    import openai

from ..errors import (BackendRejected, BackendUnavailable, GenerationFailed, ModelNotFound,
                      StreamInterrupted, StudioError)
from ..events import (ChatDelta, ChatDone, ChatGeneration, ChatMessage, ChatOptions,
                      ChatThinking, EmbedResult, Usage)
from .openrouter_types import (BadApiKey, Credits, KeyInfo, NoApiKey, OpenRouterModel, OutOfCredit,
                               ProviderError, RateLimited, StreamPieces, as_float,
                               build_chat_request,
                               detail_suffix, error_message, is_unknown_model, parse_model,
                               parse_retry_after, wait_words, without_links)
from .tls import tls_context

log = logging.getLogger(__name__)

BACKEND = "openrouter"
# Where OpenRouter sells credits now (its own 402 messages link here, or to /credits, which
# redirects); the studio names this one only.
CREDITS_URL = "https://openrouter.ai/settings/credits"
NO_KEY = "No OpenRouter key. Set OPENROUTER_API_KEY (in .env or the environment) to use cloud models."


class OpenRouterClient:
    """Chat with cloud models on OpenRouter (or any OpenAI-compatible proxy at ``base_url``).

    Constructing it does no I/O; an empty ``api_key`` is allowed and every call then raises
    ``NoApiKey`` before sending anything (except ``list_models``, which works anonymously).
    ``close()`` releases both connection pools.
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
        rest_headers = dict(self._headers)
        if self._api_key:
            rest_headers["Authorization"] = f"Bearer {self._api_key}"
        # The REST endpoints; the openai client below has its own pool for chat.
        self._http = httpx.Client(base_url=self.base_url, headers=rest_headers, timeout=timeout,
                                  verify=tls_context())
        self._openai: openai.OpenAI | None = None
        if self._api_key:
            # max_retries=0: retrying (and honouring Retry-After) is the router's job, and the
            # SDK's own retries would hide 429s from it.
            self._openai = _openai().OpenAI(api_key=self._api_key, base_url=self.base_url,
                                         default_headers=self._headers, max_retries=0,
                                         timeout=timeout)

    def close(self) -> None:
        self._http.close()
        if self._openai is not None:
            self._openai.close()

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

        Yields ``ChatGeneration`` (OpenRouter's ``gen-…`` id, once, before the first piece),
        ``ChatThinking`` (from ``delta.reasoning``) and ``ChatDelta`` pieces, then one
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
        generation_id: str | None = None
        usage: Any = None
        finish_reason: str | None = None
        pieces = StreamPieces(self._clock)
        with stream:
            try:
                for chunk in stream:
                    answered_model = chunk.model or answered_model
                    if generation_id is None and chunk.id:
                        generation_id = chunk.id
                        yield ChatGeneration(generation_id)
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        yield from pieces.events(choice.delta)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        if choice.finish_reason == "error":
                            error = (choice.model_extra or {}).get("error") or {}
                            raise StreamInterrupted(
                                f"OpenRouter stopped the reply from '{answered_model}' part way"
                                f"{detail_suffix(error, self._api_key)}.",
                                hint="The text so far is kept; try again or pick another model.")
            except _openai().APIError as err:
                raise self._interrupted(err, answered_model) from err
        if usage is None and finish_reason is None:
            raise StreamInterrupted(
                f"OpenRouter's stream for '{answered_model}' ended before the reply was complete.",
                hint="The text so far is kept; try again.")
        yield from pieces.tool_calls()
        yield ChatDone(backend=BACKEND, model=answered_model,
                       usage=self._usage(usage, finish_reason, started, pieces.first_at,
                                         generation_id))

    def _usage(self, usage: Any, finish_reason: str | None, started: float,
               first_token_at: float | None, generation_id: str | None) -> Usage:
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
            cost_is_estimate=False, done_reason=finish_reason, generation_id=generation_id)

    # -- embeddings ----------------------------------------------------------------------------

    def embed(self, model: str, inputs: list[str], *, dimensions: int | None = None
              ) -> EmbedResult:
        """One vector per text of ``inputs``, in order, from ``POST /embeddings`` (OpenAI's
        shape), with OpenRouter's token count and ``usage.cost`` when it sends one.

        Raises ``NoApiKey``, ``BadApiKey``, ``OutOfCredit``, ``RateLimited``,
        ``ProviderError``, ``ModelNotFound``, ``BackendRejected`` (also for an answer without
        one vector per text) and ``BackendUnavailable``, as ``chat_stream`` does before its
        first piece.
        """
        client = self._require_client()
        extra = {} if dimensions is None else {"dimensions": dimensions}
        started = self._clock()
        try:
            # "float" said out loud: left out, the openai client asks for base64 and decodes it.
            answer = client.embeddings.create(model=model, input=list(inputs),
                                              encoding_format="float", **extra)
        except _openai().APIError as err:
            raise self._error_from_openai(err, model) from err
        error = (answer.model_extra or {}).get("error")
        rows = sorted(answer.data or [], key=lambda row: row.index)
        if error or len(rows) != len(inputs):
            detail = (detail_suffix(error, self._api_key) if isinstance(error, dict)
                      else f" ({len(rows)} vectors for {len(inputs)} texts)")
            raise BackendRejected(f"OpenRouter answered the embeddings of '{model}' without "
                                  f"one vector per text{detail}.",
                                  hint="Try again, or pick another embedding model.")
        usage = answer.usage
        cost = getattr(usage, "cost", None)
        return EmbedResult(vectors=[[float(x) for x in row.embedding] for row in rows],
                           prompt_tokens=getattr(usage, "prompt_tokens", None),
                           cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
                           total_ms=(self._clock() - started) * 1000)

    # -- OpenRouter-only endpoints ------------------------------------------------------------

    def list_models(self) -> list[OpenRouterModel]:
        """Models OpenRouter offers, each with its ``pricing`` as sent (decimal strings, USD
        per token). Works without a key (anonymous)."""
        payload = self._get("/models", key_required=False)
        rows = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise BackendRejected(f"OpenRouter at {self.base_url} sent a model list in an unknown shape.")
        return [parse_model(row) for row in rows if isinstance(row, dict) and row.get("id")]

    def key_info(self) -> KeyInfo:
        """Usage and limit of the configured key (``GET /key``)."""
        data = self._get("/key").get("data") or {}
        return KeyInfo(
            label=str(data.get("label") or ""), usage=as_float(data.get("usage")),
            limit=as_float(data.get("limit")), limit_remaining=as_float(data.get("limit_remaining")),
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
        return Credits(total_credits=as_float(data.get("total_credits")),
                       total_usage=as_float(data.get("total_usage")))

    def generation_cost(self, generation_id: str) -> float | None:
        """What OpenRouter billed for the generation ``generation_id`` (``GET
        /generation?id=``, its ``total_cost`` in USD), or None while OpenRouter doesn't know
        it yet: it answers 404 for a few seconds after a completion (protocols.md 3.7).
        Raises ``StudioError``s like the other endpoints for other failures."""
        try:
            data = self._get("/generation", params={"id": generation_id}).get("data") or {}
        except BackendRejected as err:
            if err.status == 404:
                return None
            raise
        return as_float(data.get("total_cost"))

    # -- plumbing ---------------------------------------------------------------------------

    def _require_client(self) -> openai.OpenAI:
        if self._openai is None:
            raise NoApiKey(NO_KEY)
        return self._openai

    def _get(self, path: str, *, params: Mapping[str, str] | None = None,
             key_required: bool = True) -> dict[str, Any]:
        if key_required:
            self._require_client()
        try:
            response = self._http.get(path, params=params)  # httpx keeps base_url's /api/v1
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
                                f"{detail_suffix({'message': err.message}, self._api_key)}.")

    def _interrupted(self, err: openai.APIError, model: str) -> StreamInterrupted:
        if isinstance(err, _openai().APITimeoutError):
            text = f"OpenRouter stopped sending the reply from '{model}' for {self.timeout:g} s."
        elif isinstance(err, _openai().APIConnectionError):
            text = f"The connection to OpenRouter dropped part way through the reply from '{model}'."
        else:  # the mid-stream error chunk: openai raises APIError with the chunk's `error` as body
            body = err.body if isinstance(err.body, dict) else {"message": err.message}
            text = (f"OpenRouter stopped the reply from '{model}' part way"
                    f"{detail_suffix(body, self._api_key)}.")
        return StreamInterrupted(text, hint="The text so far is kept; try again or pick another model.")

    def _error_from_status(self, status: int, error: Mapping[str, Any], headers: Mapping[str, str],
                           *, model: str | None, path: str = "/chat/completions") -> StudioError:
        detail = f" ({status}: {error_message(error, self._api_key)})"
        subject = f"'{model}'" if model else path
        if status == 401:
            if not self._api_key:
                return NoApiKey(NO_KEY)
            return BadApiKey(f"OpenRouter rejected the API key{detail}.",
                             hint="Check OPENROUTER_API_KEY.", status=status)
        if status == 402:
            # OpenRouter's own text links a credits page too (not always this one): say
            # what it says without its link, and give one place to add credit.
            said = without_links(error_message(error, self._api_key))
            detail = f" ({status}: {said})" if said else f" ({status})"
            return OutOfCredit(f"OpenRouter account is out of credit{detail}.",
                               hint=f"Add credits at {CREDITS_URL} or pick a local model.",
                               status=status)
        if status == 429:
            retry_after = parse_retry_after(headers)
            # Said when it is long enough to matter: the router waits out short ones itself.
            wait = (f"OpenRouter asks to wait {wait_words(retry_after)}; try again then, or "
                    "pick another model." if retry_after and retry_after >= 10
                    else "Wait a moment and try again, or pick another model.")
            return RateLimited(f"OpenRouter is rate limiting requests for {subject}{detail}.",
                               hint=wait, status=status, retry_after=retry_after)
        if status == 408 or status >= 500:
            return ProviderError(f"OpenRouter's provider failed for {subject}{detail}.",
                                 hint="Try again in a moment, or pick another model.",
                                 status=status, retry_after=parse_retry_after(headers))
        if model and (status == 404 or (status == 400 and is_unknown_model(error))):
            return ModelNotFound(f"OpenRouter can't serve the model '{model}'{detail}.",
                                 hint="Pick another model from the list, or refresh it.",
                                 status=status)
        if status == 403:
            return BackendRejected(f"OpenRouter refused the request for {subject}{detail}.",
                                   hint="The prompt may have been flagged by moderation, or the "
                                        "key lacks permission.", status=status)
        return BackendRejected(f"OpenRouter rejected the request for {subject}{detail}.",
                               status=status)


def _openai():
    """The openai package, imported on first use: it costs about half a second of start-up,
    which only people who use cloud models should pay."""
    import openai

    return openai


# The wire types live in openrouter_types; callers import them from here.
__all__ = ["OpenRouterClient", "BACKEND", "CREDITS_URL", "BadApiKey", "Credits", "KeyInfo",
           "NoApiKey", "OpenRouterModel", "OutOfCredit", "ProviderError", "RateLimited",
           "build_chat_request", "parse_retry_after"]
