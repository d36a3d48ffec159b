"""Chat routing: which backend answers a model id, with retries, fallbacks and a budget hook.

Model ids name their backend: ``ollama:llama3.2:3b``, ``openrouter:openai/gpt-4o-mini``.
The ``Router`` streams from the backend the id names. Before the first piece of the reply
it may retry (429 and 5xx, with backoff, honouring ``Retry-After``) and fall back along a
configured chain (say, a local model to a cloud one when Ollama is down). Once text has
streamed, an error goes to the caller, who keeps the partial text: a reply never silently
restarts on another model. Each wait before a retry is announced with a ``ChatRetrying``
line (what failed, when the next try comes), so the person sees why nothing arrives yet. A switch is announced with a ``ChatNotice`` before the new
model's first piece, and the final ``ChatDone`` carries ``fallback_reason``.

It depends only on the ``ChatBackend`` protocol (any object with ``chat_stream``) and on the
error classes in ``studio.errors``; the decisions themselves are small pure functions.
No gradio imports; nothing runs at import time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import astuple, dataclass, replace
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from ..costs.pricing import (CHARS_PER_TOKEN, MIN_REPLY_TOKENS, ModelPrices, ReplyCost,
                             bound_messages_tokens, estimate_messages_tokens, reply_cost,
                             to_decimal)
from ..errors import (BackendRejected, BackendUnavailable, BudgetExceeded, GenerationFailed,
                     InvalidInput, ModelNotFound, StreamInterrupted, StudioError)
from ..events import (ChatDelta, ChatDone, ChatGeneration, ChatMessage, ChatNotice, ChatOptions,
                      ChatRetrying, ChatThinking, ChatToolCall, Usage)
from ..model_id import CLOUD_BACKENDS, ModelId

DEFAULT_MAX_TOKENS = 1024

ChatEvent = (ChatDelta | ChatThinking | ChatToolCall | ChatNotice | ChatGeneration | ChatRetrying
             | ChatDone)

# How a retry line names a backend.
BACKEND_NAMES = {"ollama": "Ollama", "openrouter": "OpenRouter", "local": "The local server"}


class ChatBackend(Protocol):
    """What the router needs from a chat client (OllamaClient and OpenRouterClient fit)."""

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None
                    ) -> Iterator[ChatDelta | ChatThinking | ChatDone]: ...


class Budget(Protocol):
    """Spending guard for cloud requests. Amounts are USD ``Decimal``; ``None`` = unknown.

    ``reserve_reply`` raises ``BudgetExceeded`` to refuse a request; its reservation's
    ``max_tokens`` (None: no limit to send) is the reply length its estimate covers, and
    ``limited_by`` names the cap that shortened it ("" when none did). Every reservation is
    later either settled (the request ran; ``actual_usd`` is the reported or estimated
    cost) or released (it failed before producing anything).
    """

    def reserve_reply(self, user: str, model_id: str, cost: ReplyCost, *,
                      min_tokens: int = MIN_REPLY_TOKENS) -> Any: ...

    def check(self, user: str, estimate_usd: Decimal | None) -> None: ...

    def settle(self, reservation: Any, actual_usd: Decimal | None) -> None: ...

    def release(self, reservation: Any) -> None: ...


class NoModelAnswered(StudioError):
    """The requested model and all its fallbacks failed; ``failures`` lists (model id, error)."""

    def __init__(self, failures: Sequence[tuple[str, StudioError]]):
        self.failures = list(failures)
        details = " ".join(f"{model_id}: {_sentence(err.message)}" for model_id, err in failures)
        super().__init__(f"No model could answer. {details}",
                         hint="Check that the backends are running, or pick another model.")


# -- decisions (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry one model before falling back.

    ``max_attempts`` counts the first try. Without ``Retry-After`` the wait doubles from
    ``base_delay`` up to ``max_delay``. A ``Retry-After`` longer than ``max_retry_after``
    is not waited out: the router falls back (or gives up) at once.
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after failed try number ``attempt`` (1-based); ``None`` = stop trying.

        >>> RetryPolicy().delay(1, None), RetryPolicy().delay(2, None), RetryPolicy().delay(1, 7)
        (1.0, 2.0, 7)
        >>> RetryPolicy(max_attempts=2).delay(2, None) is None
        True
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def is_retryable(err: StudioError) -> bool:
    """429, 408 and 5xx answers, and streams cut before their first piece, are worth a retry."""
    if isinstance(err, StreamInterrupted):
        return True
    status = getattr(err, "status", None)
    return isinstance(err, BackendRejected) and isinstance(status, int) and (
        status in (408, 429) or status >= 500)


def can_fall_back(err: StudioError) -> bool:
    """Whether another model may stand in after ``err`` (raised before the first piece).

    Yes: unreachable backend (down, timeout, no key), unknown model, out of credit (402),
    over budget, a failed generation, and retryable errors once retries are used up.
    No: problems the person has to fix (bad key, moderation, malformed request, bad input).
    """
    if isinstance(err, (BackendUnavailable, ModelNotFound, BudgetExceeded, GenerationFailed)):
        return True
    return is_retryable(err) or (isinstance(err, BackendRejected) and err.status == 402)


def fallback_chain(model_id: str, fallbacks: Mapping[str, Sequence[str]]) -> list[str]:
    """The requested id followed by its configured fallbacks, without repeats (not transitive).

    >>> fallback_chain("a:x", {"a:x": ["b:y", "a:x", "b:y", "c:z"]})
    ['a:x', 'b:y', 'c:z']
    """
    chain = [model_id]
    for candidate in fallbacks.get(model_id, ()):
        if candidate not in chain:
            chain.append(candidate)
    return chain


def retry_line(backend: str, err: StudioError, wait: float, attempt: int,
               max_attempts: int) -> str:
    """What the reply shows while the router waits ``wait`` seconds after failed try
    ``attempt`` (1-based) of ``max_attempts``.

    >>> retry_line("openrouter", BackendRejected("x", status=429), 8, 1, 3)
    'OpenRouter is busy (429); trying again in 8 s (2 of 3)…'
    >>> retry_line("openrouter", BackendRejected("x", status=502), 1.2, 2, 3)
    'OpenRouter answered 502; trying again in 2 s (3 of 3)…'
    >>> retry_line("ollama", StreamInterrupted("cut"), 1, 1, 3)
    'Ollama dropped the connection before the reply began; trying again in 1 s (2 of 3)…'
    """
    name = BACKEND_NAMES.get(backend, backend)
    status = getattr(err, "status", None)
    if status == 429:
        what = f"{name} is busy (429)"
    elif isinstance(status, int):
        what = f"{name} answered {status}"
    else:
        what = f"{name} dropped the connection before the reply began"
    seconds = max(1, math.ceil(wait))
    return f"{what}; trying again in {seconds} s ({attempt + 1} of {max_attempts})…"


def switch_notice(to_model_id: str, from_model_id: str, reason: str) -> str:
    """``Switched to X because Y`` as the reply shows it."""
    return f"Switched to {to_model_id} because {from_model_id} couldn't answer: {_sentence(reason)}"


# -- the router ------------------------------------------------------------------------------


class Router:
    """Streams chat replies from the backend a model id names, with retries and fallbacks.

    ``backends`` maps backend names ("ollama", "openrouter") to clients. ``fallbacks`` maps a
    model id to the ids to try, in order, when it can't answer. ``budget`` (optional) guards
    requests to ``cloud_backends``; ``prices`` looks up a model id's prices for its estimates.
    ``sleep`` is injectable so tests never wait.
    """

    def __init__(self, backends: Mapping[str, ChatBackend], *,
                 fallbacks: Mapping[str, Sequence[str]] | None = None,
                 budget: Budget | None = None,
                 prices: Callable[[str], ModelPrices | None] | None = None,
                 retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep,
                 cloud_backends: Iterable[str] = CLOUD_BACKENDS,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.backends = dict(backends)
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        self.budget = budget
        self.prices = prices or (lambda model_id: None)
        self.retry = retry
        self.sleep = sleep
        self.cloud_backends = frozenset(cloud_backends)
        self.default_max_tokens = default_max_tokens

    def chat_stream(self, model_id: str | ModelId, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None, *, user: str = ""
                    ) -> Iterator[ChatEvent]:
        """Stream a reply for ``model_id`` (``backend:model``).

        Yields ``ChatRetrying`` before each wait for a retry, ``ChatNotice`` (only when a
        fallback answers, before its first piece), ``ChatThinking``/``ChatDelta`` pieces, then ``ChatDone`` (with ``fallback_reason`` set
        after a switch). Raises the backend's ``StudioError`` when it can't fall back, the
        error mid-stream once text has been yielded, ``NoModelAnswered`` when the whole chain
        failed, and ``InvalidInput`` for a malformed model id.
        """
        model_id = str(ModelId.parse(model_id))
        chain = fallback_chain(model_id, self.fallbacks)
        failures: list[tuple[str, StudioError]] = []
        for candidate in chain:
            reason = failures[0][1].message if failures else None
            notice = switch_notice(candidate, model_id, reason) if reason else None
            try:
                yield from self._stream_one(candidate, messages, options, user, notice, reason)
                return
            except _CannotAnswer as cannot:
                failures.append((candidate, cannot.error))
                if not can_fall_back(cannot.error):
                    break
        if len(failures) == 1:
            raise failures[0][1]
        raise NoModelAnswered(failures) from failures[-1][1]

    def _stream_one(self, model_id: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None, user: str, notice: str | None,
                    reason: str | None) -> Iterator[ChatEvent]:
        """Stream from one model with retries. Raises ``_CannotAnswer`` while nothing has been
        yielded, and the backend's own error once something has."""
        try:
            backend_name, model = astuple(ModelId.parse(model_id))
        except InvalidInput as err:
            raise _CannotAnswer(err) from err
        backend = self.backends.get(backend_name)
        if backend is None:
            err = BackendUnavailable(f"No '{backend_name}' backend is configured for {model_id}.")
            raise _CannotAnswer(err)
        cloud = backend_name in self.cloud_backends
        prices = self.prices(model_id) if cloud else None
        prompt_tokens = estimate_messages_tokens(_prompt_texts(messages, options))
        reservation = None
        if cloud and self.budget is not None:
            cost = self._reply_cost(prices, messages, options)
            try:
                reservation = self.budget.reserve_reply(user, model_id, cost)
            except BudgetExceeded as err:
                raise _CannotAnswer(err) from err
            # The reply is held to what the reservation covers: a cap is a guarantee, so
            # a reply that runs long is cut by the provider, not paid for beyond the cap.
            limit = getattr(reservation, "max_tokens", None)
            if limit is not None and (options is None or options.max_tokens != limit):
                options = replace(options or ChatOptions(), max_tokens=limit)
            limited_by = getattr(reservation, "limited_by", "")
            if limited_by:
                budget_note = (f"This reply is limited to {limit:,} tokens to stay within "
                               f"{limited_by}.")
                notice = f"{notice}\n\n{budget_note}" if notice else budget_note

        started = False
        streamed_chars = 0
        finished = False
        try:
            attempt = 0
            retry: tuple[StudioError, float] | None = None
            while True:
                if retry is not None:  # said first, then waited: the page shows why
                    yield ChatRetrying(retry_line(backend_name, retry[0], retry[1], attempt,
                                                  self.retry.max_attempts))
                    self.sleep(retry[1])
                    retry = None
                attempt += 1
                stream = backend.chat_stream(model, messages, options)
                generation: ChatGeneration | None = None
                try:
                    for event in stream:
                        if isinstance(event, ChatGeneration):
                            # Passed on with the first piece: until then a retry or a
                            # fallback may still replace this request.
                            generation = event
                            continue
                        if not started:
                            yield from _opening(notice, generation)
                        started = True
                        if isinstance(event, ChatDone):
                            done = self._finish(event, prices, reason)
                            if reservation is not None:
                                finished = True
                                self.budget.settle(reservation, _cost_of(done))
                            yield done
                            return
                        if isinstance(event, (ChatDelta, ChatThinking)):
                            streamed_chars += len(event.text)
                        elif isinstance(event, ChatToolCall):
                            streamed_chars += len(event.name) + len(event.arguments)
                        yield event
                except StudioError as err:
                    if started:
                        raise
                    wait = self.retry.delay(attempt, getattr(err, "retry_after", None)) \
                        if is_retryable(err) else None
                    if wait is None:
                        raise _CannotAnswer(err) from err
                    retry = (err, wait)
                    continue
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                # The backend ended without ChatDone: close the reply ourselves.
                done = ChatDone(backend=backend_name, model=model, fallback_reason=reason,
                                usage=Usage(generation_id=generation and generation.id))
                if not started:
                    yield from _opening(notice, generation)
                started = True
                if reservation is not None:
                    finished = True
                    self.budget.settle(reservation, _estimated_cost(prices, prompt_tokens,
                                                                   streamed_chars))
                yield done
                return
        finally:
            if reservation is not None and not finished:
                if started:
                    # Cut short (error or the reader stopped): pay for what was generated.
                    self.budget.settle(reservation, _estimated_cost(prices, prompt_tokens,
                                                                   streamed_chars))
                else:
                    self.budget.release(reservation)

    def admit(self, model_id: str | ModelId, messages: Sequence[ChatMessage],
              options: ChatOptions | None = None, *, user: str = "") -> None:
        """Refuse now a request that the budget would refuse and no fallback could take,
        so a caller can say so before it writes anything. Books nothing; the request
        itself still reserves (a cap may be reached in between). Raises ``BudgetExceeded``.
        """
        model = ModelId.parse(model_id)
        if self.budget is None or model.backend not in self.cloud_backends:
            return
        if len(fallback_chain(str(model), self.fallbacks)) > 1:
            return  # over budget, a fallback answers: that is not a refusal
        cost = self._reply_cost(self.prices(str(model)), messages, options)
        # The shortest reply the budget would still send (a longer one is cut to fit).
        self.budget.check(user, cost.at(min(MIN_REPLY_TOKENS, cost.max_tokens)))

    def _reply_cost(self, prices: ModelPrices | None, messages: Sequence[ChatMessage],
                    options: ChatOptions | None) -> ReplyCost:
        """What a request costs by the length of its reply: the prompt at most (its bound in
        tokens, its images), and each reply token up to the request's limit or the default."""
        prompt_tokens = bound_messages_tokens(_prompt_texts(messages, options))
        images = sum(len(m.images) for m in messages)
        asked = bool(options and options.max_tokens)
        max_tokens = options.max_tokens if asked else self.default_max_tokens
        return ReplyCost.of(prices, prompt_tokens, max_tokens, images=images, asked=asked)

    @staticmethod
    def _finish(done: ChatDone, prices: ModelPrices | None, reason: str | None) -> ChatDone:
        usage = done.usage
        if usage.cost_usd is None and prices is not None:
            cost = reply_cost(prices, usage.prompt_tokens, usage.completion_tokens)
            if cost is not None:
                usage = replace(usage, cost_usd=float(cost), cost_is_estimate=True)
        return replace(done, usage=usage, fallback_reason=reason or done.fallback_reason)


class _CannotAnswer(Exception):
    """Internal: this model failed before yielding anything; the chain may go on."""

    def __init__(self, error: StudioError):
        super().__init__(str(error))
        self.error = error


def _opening(notice: str | None, generation: "ChatGeneration | None") -> Iterator[ChatEvent]:
    """What goes before a reply's first piece: the notice, then the backend's id for it."""
    if notice:
        yield ChatNotice(notice)
    if generation is not None:
        yield generation


def _prompt_texts(messages: Sequence[ChatMessage], options: ChatOptions | None) -> list[str]:
    """What a request sends as prompt: the messages, their tool calls and the tools offered."""
    texts = [m.content + "".join(c.name + c.arguments for c in m.tool_calls) for m in messages]
    if options is not None and options.tools:
        texts.append(json.dumps(list(options.tools)))
    return texts


def _cost_of(done: ChatDone) -> Decimal | None:
    return to_decimal(done.usage.cost_usd)


def _estimated_cost(prices: ModelPrices | None, prompt_tokens: int, chars: int) -> Decimal | None:
    return reply_cost(prices, prompt_tokens, -(-chars // CHARS_PER_TOKEN))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."
