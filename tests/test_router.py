import doctest
from collections import deque
from decimal import Decimal

import pytest

from studio.chat import router as router_module
from studio.clients.openrouter import (BadApiKey, NoApiKey, OpenRouterClient, OutOfCredit,
                                       ProviderError, RateLimited)
from studio.costs.pricing import ModelPrices
from studio.errors import (BackendRejected, BackendUnavailable, BudgetExceeded, GenerationFailed,
                           InvalidInput, ModelNotFound, StreamInterrupted, StudioError)
from studio.events import (ChatDelta, ChatDone, ChatMessage, ChatNotice, ChatOptions, ChatThinking,
                           Usage)
from studio.chat.router import (NoModelAnswered, RetryPolicy, Router, can_fall_back, fallback_chain,
                                is_retryable)
from tests.fakes.openrouter_server import DEFAULT_KEY
from tests.streams import collect, text_of

LOCAL = "ollama:llama3.2:3b"
CLOUD = "openrouter:openai/gpt-4o-mini"
CLOUD_FREE = "openrouter:meta-llama/llama-3.2-3b-instruct:free"
HELLO = [ChatMessage("user", "x" * 40)]  # 10 tokens + 4 framing = 14 estimated prompt tokens
PRICES = {CLOUD: ModelPrices.per_million("1", "2")}

OLLAMA_DOWN = BackendUnavailable("Can't reach Ollama at http://127.0.0.1:11434.",
                                 hint="Is `ollama serve` running?")


def reply(backend, model, *texts, cost=None, usage=None):
    usage = usage or Usage(prompt_tokens=14, completion_tokens=len(texts), cost_usd=cost)
    return [*(ChatDelta(t) for t in texts), ChatDone(backend=backend, model=model, usage=usage)]


class ScriptedBackend:
    """Plays one script per chat_stream call: an exception (raised on the first read) or a list
    of events in which an exception is raised when reached. Records calls and closes."""

    def __init__(self, backend, *scripts):
        self.backend = backend
        self.scripts = deque(scripts)
        self.calls = []
        self.options = []
        self.closed = 0

    def chat_stream(self, model, messages, options=None):
        self.calls.append(model)
        self.options.append(options)
        script = self.scripts.popleft() if self.scripts else reply(self.backend, model, "default")
        return self._play(script)

    def _play(self, script):
        try:
            if isinstance(script, Exception):
                raise script
            for item in script:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1


class FakeBudget:
    def __init__(self, refuse=False):
        self.refuse = refuse
        self.reserved, self.settled, self.released = [], [], []

    def reserve_reply(self, user, model_id, cost, min_tokens=64):
        if self.refuse:
            raise BudgetExceeded("The daily cloud budget of $1.00 is used up.")
        self.reserved.append((user, model_id, cost.at(cost.max_tokens)))
        return len(self.reserved)

    def settle(self, reservation, actual_usd):
        self.settled.append((reservation, actual_usd))

    def release(self, reservation):
        self.released.append(reservation)


def make_router(local_scripts=(), cloud_scripts=(), *, fallbacks=None, budget=None, sleeps=None,
                retry=RetryPolicy(), prices=PRICES):
    local = ScriptedBackend("ollama", *local_scripts)
    cloud = ScriptedBackend("openrouter", *cloud_scripts)
    router = Router({"ollama": local, "openrouter": cloud}, fallbacks=fallbacks, budget=budget,
                    prices=prices.get, retry=retry,
                    sleep=(sleeps.append if sleeps is not None else _no_sleep))
    return router, local, cloud


def _no_sleep(seconds):
    raise AssertionError(f"unexpected sleep({seconds})")


# -- pure decisions --------------------------------------------------------------------------


@pytest.mark.parametrize("attempt, retry_after, expected", [
    (1, None, 1.0), (2, None, 2.0), (1, 7.0, 7.0), (1, 0.0, 0.0), (1, 61.0, None), (3, None, None),
])
def test_retry_policy_delay_backs_off_and_honours_retry_after(attempt, retry_after, expected):
    assert RetryPolicy(max_attempts=3, base_delay=1, max_delay=30,
                       max_retry_after=60).delay(attempt, retry_after) == expected


def test_retry_policy_delay_is_capped():
    assert RetryPolicy(max_attempts=10, base_delay=1, max_delay=5).delay(6, None) == 5


@pytest.mark.parametrize("err, retryable, falls_back", [
    (RateLimited("429"), True, True),
    (ProviderError("502", status=502), True, True),
    (BackendRejected("408", status=408), True, True),
    (StreamInterrupted("cut"), True, True),
    (OutOfCredit("402", status=402), False, True),
    (BackendUnavailable("down"), False, True),
    (NoApiKey("no key"), False, True),
    (ModelNotFound("missing", status=404), False, True),
    (BudgetExceeded("cap"), False, True),
    (GenerationFailed("oom"), False, True),
    (BadApiKey("401", status=401), False, False),
    (BackendRejected("403", status=403), False, False),
    (BackendRejected("400", status=400), False, False),
    (InvalidInput("bad"), False, False),
])
def test_error_classification(err, retryable, falls_back):
    assert is_retryable(err) is retryable
    assert can_fall_back(err) is falls_back


def test_fallback_chain_keeps_order_without_repeats():
    assert fallback_chain(LOCAL, {LOCAL: [CLOUD, LOCAL, CLOUD, CLOUD_FREE]}) == [LOCAL, CLOUD, CLOUD_FREE]
    assert fallback_chain(CLOUD, {LOCAL: [CLOUD]}) == [CLOUD]


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id, backend, model", [
    (LOCAL, "ollama", "llama3.2:3b"), (CLOUD, "openrouter", "openai/gpt-4o-mini"),
])
def test_router_picks_backend_by_model_id(model_id, backend, model):
    router, local, cloud = make_router()
    events = list(router.chat_stream(model_id, HELLO))
    assert {"ollama": local, "openrouter": cloud}[backend].calls == [model]
    assert (events[-1].backend, events[-1].model) == (backend, model)
    assert events[-1].fallback_reason is None
    assert not any(isinstance(e, ChatNotice) for e in events)


def test_router_passes_thinking_and_options_through():
    router, local, _ = make_router([[ChatThinking("hmm"), *reply("ollama", "llama3.2:3b", "hi")]])
    options = ChatOptions(temperature=0.1)
    events = list(router.chat_stream(LOCAL, HELLO, options))
    assert events[:2] == [ChatThinking("hmm"), ChatDelta("hi")]
    assert local.options == [options]


def test_router_unknown_backend_is_unavailable():
    router, _, _ = make_router()
    with pytest.raises(BackendUnavailable, match="No 'comfy' backend"):
        list(router.chat_stream("comfy:sdxl", HELLO))


def test_router_malformed_model_id_is_invalid_input():
    router, local, _ = make_router()
    with pytest.raises(InvalidInput):
        list(router.chat_stream("llama3.2", HELLO))
    assert local.calls == []


# -- fallbacks -------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    OLLAMA_DOWN,
    ModelNotFound("Model 'llama3.2:3b' is not installed in Ollama.", status=404),
    GenerationFailed("Ollama could not load llama3.2:3b: out of memory."),
])
def test_router_local_failure_falls_back_to_cloud_with_notice(failure):
    router, local, cloud = make_router([failure], fallbacks={LOCAL: [CLOUD]})
    events = list(router.chat_stream(LOCAL, HELLO))
    assert events[0] == ChatNotice(
        f"Switched to {CLOUD} because {LOCAL} couldn't answer: {failure.message}")
    assert text_of(events) == "default"
    done = events[-1]
    assert (done.backend, done.model) == ("openrouter", "openai/gpt-4o-mini")
    assert done.fallback_reason == failure.message
    assert (local.calls, cloud.calls) == (["llama3.2:3b"], ["openai/gpt-4o-mini"])


@pytest.mark.parametrize("failure", [
    BackendUnavailable("Can't reach OpenRouter at https://openrouter.ai/api/v1."),
    NoApiKey("No OpenRouter key. Set OPENROUTER_API_KEY."),
    OutOfCredit("OpenRouter account is out of credit (402: Insufficient credits).", status=402),
    ModelNotFound("OpenRouter can't serve the model 'openai/gpt-4o-mini'.", status=404),
])
def test_router_cloud_failure_falls_back_to_local_with_notice(failure):
    router, local, cloud = make_router(cloud_scripts=[failure], fallbacks={CLOUD: [LOCAL]})
    events = list(router.chat_stream(CLOUD, HELLO))
    assert isinstance(events[0], ChatNotice)
    assert events[0].text.startswith(f"Switched to {LOCAL} because {CLOUD} couldn't answer: ")
    assert failure.message.rstrip(".") in events[0].text
    assert (events[-1].backend, events[-1].model) == ("ollama", "llama3.2:3b")
    assert events[-1].fallback_reason == failure.message
    assert len(cloud.calls) == 1


def test_router_over_budget_falls_back_to_local_without_calling_cloud():
    budget = FakeBudget(refuse=True)
    router, local, cloud = make_router(fallbacks={CLOUD: [LOCAL]}, budget=budget)
    events = list(router.chat_stream(CLOUD, HELLO, user="alice"))
    assert "daily cloud budget of $1.00 is used up" in events[0].text
    assert events[-1].backend == "ollama"
    assert events[-1].fallback_reason == "The daily cloud budget of $1.00 is used up."
    assert cloud.calls == []


def test_router_over_budget_without_fallback_raises():
    router, _, cloud = make_router(budget=FakeBudget(refuse=True))
    with pytest.raises(BudgetExceeded, match="used up"):
        list(router.chat_stream(CLOUD, HELLO))
    assert cloud.calls == []


def test_router_without_fallback_raises_the_backend_error_unchanged():
    router, local, _ = make_router([OLLAMA_DOWN])
    with pytest.raises(BackendUnavailable) as caught:
        list(router.chat_stream(LOCAL, HELLO))
    assert caught.value is OLLAMA_DOWN


@pytest.mark.parametrize("failure", [
    BadApiKey("OpenRouter rejected the API key (401: User not found).", status=401),
    BackendRejected("OpenRouter refused the request (403: flagged).", status=403),
    InvalidInput("The image is not a PNG or JPEG."),
])
def test_router_does_not_fall_back_on_errors_the_user_must_fix(failure):
    router, local, _ = make_router(cloud_scripts=[failure], fallbacks={CLOUD: [LOCAL]})
    with pytest.raises(StudioError) as caught:
        list(router.chat_stream(CLOUD, HELLO))
    assert caught.value is failure
    assert local.calls == []


def test_router_never_falls_back_after_the_first_token():
    cut = StreamInterrupted("The connection to OpenRouter dropped part way through the reply.")
    router, local, _ = make_router(cloud_scripts=[[ChatDelta("Once"), ChatDelta(" upon"), cut]],
                                   fallbacks={CLOUD: [LOCAL]})
    events, error = collect(router.chat_stream(CLOUD, HELLO))
    assert text_of(events) == "Once upon"
    assert error is cut
    assert local.calls == []
    assert not any(isinstance(e, (ChatNotice, ChatDone)) for e in events)


def test_router_never_retries_after_the_first_thinking_piece():
    router, _, cloud = make_router(cloud_scripts=[[ChatThinking("hm"), RateLimited("429", retry_after=1)]],
                                   sleeps=[])
    events, error = collect(router.chat_stream(CLOUD, HELLO))
    assert events == [ChatThinking("hm")]
    assert isinstance(error, RateLimited)
    assert len(cloud.calls) == 1


def test_router_tries_fallbacks_in_order_and_cites_the_first_failure():
    router, local, cloud = make_router(
        [OLLAMA_DOWN],
        [OutOfCredit("OpenRouter account is out of credit.", status=402)],
        fallbacks={LOCAL: [CLOUD, CLOUD_FREE]})
    events = list(router.chat_stream(LOCAL, HELLO))
    notices = [e for e in events if isinstance(e, ChatNotice)]
    assert notices == [ChatNotice(f"Switched to {CLOUD_FREE} because {LOCAL} couldn't answer: "
                                  f"{OLLAMA_DOWN.message}")]
    assert events[-1].model == "meta-llama/llama-3.2-3b-instruct:free"
    assert cloud.calls == ["openai/gpt-4o-mini", "meta-llama/llama-3.2-3b-instruct:free"]


def test_router_all_models_failing_lists_every_failure():
    no_credit = OutOfCredit("OpenRouter account is out of credit.", status=402)
    router, _, _ = make_router([OLLAMA_DOWN], [no_credit], fallbacks={LOCAL: [CLOUD]})
    events, error = collect(router.chat_stream(LOCAL, HELLO))
    assert events == []
    assert isinstance(error, NoModelAnswered)
    assert error.failures == [(LOCAL, OLLAMA_DOWN), (CLOUD, no_credit)]
    assert f"{LOCAL}: Can't reach Ollama" in str(error)
    assert f"{CLOUD}: OpenRouter account is out of credit." in str(error)
    assert error.__cause__ is no_credit


def test_router_fallback_to_a_missing_backend_is_reported():
    router = Router({"ollama": ScriptedBackend("ollama", OLLAMA_DOWN)}, fallbacks={LOCAL: [CLOUD]})
    with pytest.raises(NoModelAnswered, match="No 'openrouter' backend is configured"):
        list(router.chat_stream(LOCAL, HELLO))


# -- retries ---------------------------------------------------------------------------------


def test_router_retries_429_honouring_retry_after():
    sleeps = []
    router, _, cloud = make_router(cloud_scripts=[RateLimited("429", retry_after=7.0)], sleeps=sleeps)
    events = list(router.chat_stream(CLOUD, HELLO))
    assert sleeps == [7.0]
    assert len(cloud.calls) == 2
    assert text_of(events) == "default"
    assert not any(isinstance(e, ChatNotice) for e in events)


@pytest.mark.parametrize("failure", [
    ProviderError("502", status=502), ProviderError("503", status=503), RateLimited("429"),
    StreamInterrupted("cut before the first token"),
])
def test_router_retries_transient_errors_with_exponential_backoff(failure):
    sleeps = []
    router, _, cloud = make_router(cloud_scripts=[failure, failure], sleeps=sleeps,
                                   retry=RetryPolicy(max_attempts=3, base_delay=0.5))
    events = list(router.chat_stream(CLOUD, HELLO))
    assert sleeps == [0.5, 1.0]
    assert len(cloud.calls) == 3
    assert isinstance(events[-1], ChatDone)


def test_router_gives_up_after_max_attempts_without_fallback():
    sleeps = []
    limited = RateLimited("OpenRouter is rate limiting requests.")
    router, _, cloud = make_router(cloud_scripts=[limited] * 5, sleeps=sleeps,
                                   retry=RetryPolicy(max_attempts=2, base_delay=1))
    with pytest.raises(RateLimited) as caught:
        list(router.chat_stream(CLOUD, HELLO))
    assert caught.value is limited
    assert sleeps == [1]
    assert len(cloud.calls) == 2


def test_router_falls_back_once_retries_are_used_up():
    sleeps = []
    failure = ProviderError("OpenRouter's provider failed (502).", status=502)
    router, local, cloud = make_router(cloud_scripts=[failure] * 3, fallbacks={CLOUD: [LOCAL]},
                                       sleeps=sleeps, retry=RetryPolicy(max_attempts=3))
    events = list(router.chat_stream(CLOUD, HELLO))
    assert sleeps == [1.0, 2.0]
    assert len(cloud.calls) == 3
    # Each wait is said before it is waited; then the switch, then the fallback's reply.
    assert [type(e).__name__ for e in events[:3]] == ["ChatRetrying", "ChatRetrying",
                                                      "ChatNotice"]
    assert [e.text for e in events[:2]] == [
        "OpenRouter answered 502; trying again in 1 s (2 of 3)…",
        "OpenRouter answered 502; trying again in 2 s (3 of 3)…"]
    assert "provider failed (502)" in events[2].text
    assert events[-1].backend == "ollama"


def test_router_does_not_wait_out_a_long_retry_after():
    sleeps = []
    router, local, cloud = make_router(cloud_scripts=[RateLimited("429", retry_after=3600)],
                                       fallbacks={CLOUD: [LOCAL]}, sleeps=sleeps)
    events = list(router.chat_stream(CLOUD, HELLO))
    assert sleeps == []
    assert len(cloud.calls) == 1
    assert events[-1].backend == "ollama"


@pytest.mark.parametrize("failure", [OLLAMA_DOWN, ModelNotFound("missing", status=404)])
def test_router_does_not_retry_permanent_errors(failure):
    router, local, _ = make_router([failure, failure])
    with pytest.raises(type(failure)):
        list(router.chat_stream(LOCAL, HELLO))
    assert len(local.calls) == 1


# -- budget ----------------------------------------------------------------------------------


def test_router_reserves_an_estimate_and_settles_the_reported_cost():
    budget = FakeBudget()
    router, _, _ = make_router(cloud_scripts=[reply("openrouter", "openai/gpt-4o-mini", "hi",
                                                    cost=0.0042)], budget=budget)
    list(router.chat_stream(CLOUD, HELLO, ChatOptions(max_tokens=100), user="alice"))
    # at most 47 prompt tokens (40 bytes + 4 framing + 3) x $1/M + 100 reply tokens x $2/M
    assert budget.reserved == [("alice", CLOUD, Decimal("0.000247"))]
    assert budget.settled == [(1, Decimal("0.0042"))]
    assert budget.released == []


def test_router_reserve_uses_default_max_tokens_and_none_for_unknown_prices():
    budget = FakeBudget()
    router, _, _ = make_router(budget=budget)
    list(router.chat_stream(CLOUD, HELLO))
    list(router.chat_stream(CLOUD_FREE, HELLO))
    assert budget.reserved[0][2] == Decimal("0.000047") + 1024 * Decimal("0.000002")
    assert budget.reserved[1][2] is None


def test_router_releases_the_reservation_when_nothing_was_produced():
    budget = FakeBudget()
    router, _, _ = make_router(cloud_scripts=[BackendUnavailable("down")], budget=budget)
    with pytest.raises(BackendUnavailable):
        list(router.chat_stream(CLOUD, HELLO))
    assert budget.released == [1]
    assert budget.settled == []


def test_router_settles_an_estimate_when_the_stream_breaks_midway():
    budget = FakeBudget()
    router, _, _ = make_router(cloud_scripts=[[ChatDelta("x" * 40), StreamInterrupted("cut")]],
                               budget=budget)
    with pytest.raises(StreamInterrupted):
        list(router.chat_stream(CLOUD, HELLO))
    # 14 prompt tokens x $1/M + 10 streamed tokens x $2/M
    assert budget.settled == [(1, Decimal("0.000034"))]
    assert budget.released == []


def test_router_settles_when_the_reader_stops_early_and_closes_the_backend_stream():
    budget = FakeBudget()
    router, _, cloud = make_router(cloud_scripts=[[ChatDelta("abcd"), ChatDelta("efgh"),
                                                   ChatDone("openrouter", "openai/gpt-4o-mini")]],
                                   budget=budget)
    stream = router.chat_stream(CLOUD, HELLO)
    assert next(stream) == ChatDelta("abcd")
    stream.close()
    assert cloud.closed == 1
    assert budget.settled == [(1, Decimal("0.000016"))]


def test_router_does_not_touch_the_budget_for_local_models():
    budget = FakeBudget(refuse=True)
    router, local, _ = make_router(budget=budget)
    events = list(router.chat_stream(LOCAL, HELLO))
    assert events[-1].backend == "ollama"
    assert budget.reserved == budget.settled == budget.released == []


def test_router_reservation_per_model_when_falling_back_between_cloud_models():
    budget = FakeBudget()
    router, _, _ = make_router(cloud_scripts=[OutOfCredit("402", status=402)],
                               fallbacks={CLOUD: [CLOUD_FREE]}, budget=budget)
    list(router.chat_stream(CLOUD, HELLO))
    assert [model for _, model, _ in budget.reserved] == [CLOUD, CLOUD_FREE]
    assert budget.released == [1]
    assert [r for r, _ in budget.settled] == [2]


def test_router_estimates_cost_when_the_cloud_reports_none():
    router, _, _ = make_router(cloud_scripts=[reply("openrouter", "openai/gpt-4o-mini", "a", "b")])
    usage = list(router.chat_stream(CLOUD, HELLO))[-1].usage
    assert usage.cost_usd == pytest.approx(14 * 1e-6 + 2 * 2e-6)
    assert usage.cost_is_estimate is True


def test_router_closes_a_reply_the_backend_left_without_done():
    router, _, _ = make_router([[ChatDelta("hi")]])
    events = list(router.chat_stream(LOCAL, HELLO))
    assert events == [ChatDelta("hi"), ChatDone(backend="ollama", model="llama3.2:3b")]


# -- with the real OpenRouter client against the fake server ---------------------------------


def test_router_with_openrouter_client_retries_a_real_429(fake_openrouter):
    fake_openrouter.queue_reply(status=429, retry_after=3)
    fake_openrouter.queue_reply(["fine"], cost=0.001)
    sleeps = []
    client = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5)
    router = Router({"openrouter": client}, sleep=sleeps.append)
    events = list(router.chat_stream(CLOUD, HELLO))
    assert sleeps == [3.0]
    assert len(fake_openrouter.chat_requests) == 2
    assert text_of(events) == "fine"
    assert events[-1].usage.cost_usd == 0.001 and events[-1].usage.cost_is_estimate is False


def test_router_with_openrouter_client_falls_back_to_local_on_402(fake_openrouter):
    fake_openrouter.queue_reply(status=402)
    client = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5)
    local = ScriptedBackend("ollama")
    router = Router({"openrouter": client, "ollama": local}, fallbacks={CLOUD: [LOCAL]},
                    sleep=_no_sleep)
    events = list(router.chat_stream(CLOUD, HELLO))
    assert "out of credit" in events[0].text
    assert events[-1].backend == "ollama"


def test_router_with_openrouter_client_keeps_partial_text_of_a_cut_stream(fake_openrouter):
    fake_openrouter.queue_reply(["one", " two", " three"], cut_after=2)
    client = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5)
    router = Router({"openrouter": client, "ollama": ScriptedBackend("ollama")},
                    fallbacks={CLOUD: [LOCAL]}, sleep=_no_sleep)
    events, error = collect(router.chat_stream(CLOUD, HELLO))
    assert text_of(events) == "one two"
    assert isinstance(error, StreamInterrupted)


def test_router_doctests_pass():
    assert doctest.testmod(router_module).failed == 0
