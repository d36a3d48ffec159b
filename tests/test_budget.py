import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from studio.costs.accounting import Accounting
from studio.costs.budget import Budget
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.costs.pricing import ModelPrices
from studio.errors import BudgetExceeded, ConfigError
from studio.events import ChatDone, ChatMessage, ChatNotice, ChatOptions, Usage
from studio.chat.router import Router
from studio.store.usage import UsageStore
from tests.fakes.openrouter_server import DEFAULT_KEY

TZ = timezone(timedelta(hours=2))
CLOUD = "openrouter:openai/gpt-4o-mini"
LOCAL = "ollama:llama3.2:latest"
HELLO = [ChatMessage("user", "Hello")]
# Prompt free, $0.30 per 1,000 completion tokens: with max_tokens=1000 the router reserves
# exactly $0.30 per request, and the fake bills exactly that.
THIRTY_CENTS = ModelPrices(prompt=Decimal(0), completion=Decimal("0.0003"))
MAX_1000 = ChatOptions(max_tokens=1000)


class Clock:
    def __init__(self, text="2025-03-14 12:00"):
        self.set(text)

    def set(self, text):
        self.now = datetime.fromisoformat(text).replace(tzinfo=TZ)

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make(store, clock, **caps):
    settings = Settings(**caps)
    ledger = UsageStore(store)
    return (Budget(ledger, settings, clock=clock),
            Accounting(ledger, settings, power_reader=lambda: None, clock=clock))


def spend(accounting, usd, *, user="owner", model="openai/gpt-4o-mini"):
    accounting.record_chat(user, "openrouter", model, Usage(cost_usd=usd), 1.0)


# -- caps ------------------------------------------------------------------------------------


def test_budget_without_caps_allows_everything(store, clock):
    budget, accounting = make(store, clock)
    spend(accounting, 1000.0)

    budget.reserve("owner", CLOUD, Decimal("50"))
    status = budget.budget_status()

    assert (status.level, status.cap, status.caps) == ("ok", None, ())
    assert "No cloud budget caps" in status.message


def test_budget_reserve_within_the_cap(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    spend(accounting, 0.5)

    reservation = budget.reserve("owner", CLOUD, Decimal("0.5"))

    assert (reservation.user, reservation.model_id, reservation.estimate_usd) == (
        "owner", CLOUD, Decimal("0.5"))


def test_budget_refuses_a_request_that_would_pass_the_cap(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    spend(accounting, 0.85)

    with pytest.raises(BudgetExceeded) as caught:
        budget.reserve("owner", CLOUD, Decimal("0.30"))

    assert caught.value.message == (
        "This request could cost up to $0.30, more than the $0.15 left of the daily cloud "
        "budget of $1.00 ($0.85 spent or reserved today).")
    assert "STUDIO_BUDGET_DAILY_USD" in caught.value.hint


@pytest.mark.parametrize("estimate", [None, Decimal(0), Decimal("0.01")])
def test_budget_refuses_everything_once_the_cap_is_used_up(store, clock, estimate):
    budget, accounting = make(store, clock, budget_monthly_usd=2.0)
    spend(accounting, 2.0)

    with pytest.raises(BudgetExceeded, match=r"The monthly cloud budget of \$2.00 is used up "
                                             r"\(\$2.00 spent this month\)"):
        budget.reserve("owner", CLOUD, estimate)


def test_budget_unknown_estimate_is_allowed_below_the_cap(store, clock):
    budget, _ = make(store, clock, budget_daily_usd=1.0)

    assert budget.reserve("owner", CLOUD, None).estimate_usd is None


@pytest.mark.parametrize("spent, level", [
    (0.0, "ok"), (0.79, "ok"), (0.80, "warning"), (0.99, "warning"), (1.0, "exceeded"),
    (1.2, "exceeded"),
])
def test_budget_status_warns_from_80_percent(store, clock, spent, level):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    spend(accounting, spent)

    status = budget.budget_status("owner")

    assert status.level == level
    assert status.spent == Decimal(str(spent)) and status.cap == Decimal("1.0")


def test_budget_status_messages(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    spend(accounting, 0.85)
    assert budget.budget_status().message == (
        "Daily cloud budget 85% used: $0.85 of $1.00 spent today.")
    spend(accounting, 0.15)
    assert budget.budget_status().message.startswith(
        "Daily cloud budget used up: $1.00 of $1.00 spent today.")


def test_budget_status_reports_the_most_pressing_cap(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=10.0, budget_monthly_usd=1.0)
    spend(accounting, 0.9)

    status = budget.budget_status()

    assert (status.level, status.cap) == ("warning", Decimal("1.0"))
    assert [(c.period, c.level) for c in status.caps] == [("day", "ok"), ("month", "warning")]


def test_budget_per_user_cap_limits_each_user_alone(store, clock):
    budget, accounting = make(store, clock, budget_user_daily_usd=1.0)
    spend(accounting, 1.0, user="alice")

    with pytest.raises(BudgetExceeded,
                       match=r"The daily cloud budget of \$1.00 per user \(for alice\) is used up"):
        budget.reserve("alice", CLOUD, Decimal("0.01"))
    budget.reserve("bob", CLOUD, Decimal("0.9"))
    assert budget.budget_status("bob").caps[0].reserved == Decimal("0.9")


def test_budget_overall_cap_counts_every_user(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    spend(accounting, 0.6, user="alice")

    with pytest.raises(BudgetExceeded, match="daily cloud budget"):
        budget.reserve("bob", CLOUD, Decimal("0.5"))


def test_budget_blank_user_is_the_owner(store, clock):
    budget, accounting = make(store, clock, budget_user_daily_usd=1.0)
    spend(accounting, 1.0)

    with pytest.raises(BudgetExceeded, match=r"per user \(for owner\)"):
        budget.reserve("", CLOUD, None)


def test_budget_daily_cap_starts_again_at_local_midnight(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0, budget_monthly_usd=1.5)
    clock.set("2025-03-13 23:59")
    spend(accounting, 1.0)
    clock.set("2025-03-14 00:01")

    budget.reserve("owner", CLOUD, Decimal("0.5"))
    with pytest.raises(BudgetExceeded, match="monthly"):
        budget.reserve("owner", CLOUD, Decimal("0.01"))


def test_budget_rejects_negative_caps(store):
    with pytest.raises(ConfigError, match="STUDIO_BUDGET_USER_MONTHLY_USD can't be negative"):
        Budget(UsageStore(store), Settings(budget_user_monthly_usd=-5.0))


# -- reserve, settle, release ----------------------------------------------------------------


def committed(budget):
    cap = budget.budget_status().caps[0]
    return cap.spent, cap.reserved


def test_budget_open_reservation_counts_until_released(store, clock):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    reservation = budget.reserve("owner", CLOUD, Decimal("0.7"))

    assert committed(budget) == (0, Decimal("0.7"))
    with pytest.raises(BudgetExceeded):
        budget.reserve("owner", CLOUD, Decimal("0.4"))

    budget.release(reservation)
    assert committed(budget) == (0, 0)
    budget.reserve("owner", CLOUD, Decimal("0.4"))


@pytest.mark.parametrize("actual, counted", [(Decimal("0.25"), Decimal("0.25")),
                                             (None, Decimal("0.7"))])
def test_budget_settle_counts_the_actual_cost(store, clock, actual, counted):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    reservation = budget.reserve("owner", CLOUD, Decimal("0.7"))

    budget.settle(reservation, actual)

    assert committed(budget) == (counted, 0)


def test_budget_settle_twice_or_after_release_changes_nothing(store, clock):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    settled = budget.reserve("owner", CLOUD, Decimal("0.5"))
    released = budget.reserve("owner", CLOUD, Decimal("0.1"))
    budget.settle(settled, Decimal("0.2"))
    budget.release(released)

    budget.settle(settled, Decimal("0.9"))
    budget.settle(released, Decimal("0.9"))

    assert committed(budget) == (Decimal("0.2"), 0)


def test_budget_recorded_usage_replaces_the_settled_charge(store, clock):
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    reservation = budget.reserve("owner", CLOUD, Decimal("0.5"))
    budget.settle(reservation, Decimal("0.3"))

    spend(accounting, 0.3)

    assert committed(budget) == (Decimal("0.3"), 0)
    assert store.db["budget_charges"].count == 0


def test_budget_a_cut_reply_with_no_known_cost_keeps_its_settled_charge(store, clock):
    # Stopped or cut off: the router settled the estimate, but no usage chunk came, and the
    # catalog has no price to recompute it. The spend must not vanish from the cap.
    budget, accounting = make(store, clock, budget_daily_usd=1.0)
    reservation = budget.reserve("owner", CLOUD, Decimal("0.5"))
    budget.settle(reservation, Decimal("0.4"))

    accounting.record_chat("owner", "openrouter", "openai/gpt-4o-mini", Usage(), 1.0)

    assert committed(budget) == (Decimal("0.4"), 0)
    assert store.db["budget_charges"].count == 1


def test_budget_charges_left_open_by_a_crash_count_at_their_estimate(store, clock):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    budget.reserve("owner", CLOUD, Decimal("0.4"))

    restarted, _ = make(store, clock, budget_daily_usd=1.0)

    assert committed(restarted) == (Decimal("0.4"), 0)


def test_budget_ten_requests_at_once_cannot_overspend(store, clock):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    start = threading.Barrier(10)
    granted, refused = [], []

    def request():
        start.wait(5)
        try:
            reservation = budget.reserve("owner", CLOUD, Decimal("0.30"))
        except BudgetExceeded:
            refused.append(1)
            return
        granted.append(reservation)
        budget.settle(reservation, Decimal("0.30"))

    threads = [threading.Thread(target=request) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert (len(granted), len(refused)) == (3, 7)
    assert committed(budget) == (Decimal("0.9"), 0)
    assert budget.budget_status().level == "warning"


# -- through the real router and the fake OpenRouter ------------------------------------------


def make_router(fake, budget, **backends):
    client = OpenRouterClient(DEFAULT_KEY, fake.url, timeout=10)
    return Router({"openrouter": client, **backends}, budget=budget,
                  prices=lambda model_id: THIRTY_CENTS, sleep=lambda s: None)


def test_budget_router_ten_requests_at_once_only_some_reach_openrouter(store, clock,
                                                                        fake_openrouter):
    # $0.90 a day, $0.30 a request: three fit exactly, and nothing is left for a shorter one.
    budget, accounting = make(store, clock, budget_daily_usd=0.9)
    for _ in range(10):
        fake_openrouter.queue_reply(["ok"], cost=0.30)
    router = make_router(fake_openrouter, budget)
    start = threading.Barrier(10)
    done, refused = [], []

    def ask():
        start.wait(5)
        try:
            events = list(router.chat_stream(CLOUD, HELLO, MAX_1000))
        except BudgetExceeded as err:
            refused.append(err)
            return
        final = events[-1]
        accounting.record_chat("owner", final.backend, final.model, final.usage)
        done.append(final)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert (len(done), len(refused)) == (3, 7)
    assert len(fake_openrouter.chat_requests) == 3
    assert "daily cloud budget of $0.90" in refused[0].message
    assert accounting.spend("today").cloud_usd == Decimal("0.9")
    assert committed(budget) == (Decimal("0.9"), 0)


def test_budget_router_falls_back_to_local_when_over_budget(store, clock, fake_openrouter,
                                                            fake_ollama):
    budget, accounting = make(store, clock, budget_daily_usd=0.9)
    fake_openrouter.queue_reply(["cloud"], cost=0.30)
    fake_openrouter.queue_reply(["cloud"], cost=0.30)
    fake_openrouter.queue_reply(["cloud"], cost=0.30)
    fake_ollama.queue_reply(["local"])
    router = make_router(fake_openrouter, budget,
                         ollama=OllamaClient(fake_ollama.url, timeout=10))
    router.fallbacks = {CLOUD: [LOCAL]}

    answered = []
    for _ in range(4):
        events = list(router.chat_stream(CLOUD, HELLO, MAX_1000, user="owner"))
        final = events[-1]
        assert isinstance(final, ChatDone)
        accounting.record_chat("owner", final.backend, final.model, final.usage, 1.0)
        answered.append((final.backend, events))

    assert [backend for backend, _ in answered] == ["openrouter"] * 3 + ["ollama"]
    notice = answered[-1][1][0]
    assert isinstance(notice, ChatNotice) and "daily cloud budget of $0.90" in notice.text
    assert len(fake_openrouter.chat_requests) == 3
    assert budget.budget_status().level == "exceeded"
    assert accounting.spend("today").requests == 4


def test_budget_router_releases_the_reservation_when_openrouter_fails(store, clock,
                                                                      fake_openrouter):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    fake_openrouter.queue_reply(status=402)
    router = make_router(fake_openrouter, budget)

    with pytest.raises(Exception, match="out of credit"):
        list(router.chat_stream(CLOUD, HELLO, MAX_1000))

    assert committed(budget) == (0, 0)


# -- a cap is a guarantee: replies are held to what the reservation covers (issue 14) --------

LONG_REPLY = ["word "] * 3000
STORY = [ChatMessage("user", "Write a long story about the sea.")]


def catalog_prices(fake):
    """The fake catalogue's own prices, so the router reserves at what the fake bills."""
    def prices(model_id):
        model = fake._model(model_id.split(":", 1)[1])
        return ModelPrices.from_openrouter(model["pricing"]) if model else None
    return prices


def catalog_router(fake, budget):
    return Router({"openrouter": OpenRouterClient(DEFAULT_KEY, fake.url, timeout=30)},
                  budget=budget, prices=catalog_prices(fake))


def ask_at_once(router, accounting, requests):
    """Send (user, model id) requests from one thread each, all at once; return the
    finished replies and the refusals."""
    start = threading.Barrier(len(requests))
    done, refused = [], []

    def ask(user, model_id):
        start.wait(10)
        try:
            events = list(router.chat_stream(model_id, STORY, user=user))
        except BudgetExceeded as err:
            refused.append(err)
            return
        final = events[-1]
        accounting.record_chat(user, final.backend, final.model, final.usage, 1.0)
        done.append((user, events))

    threads = [threading.Thread(target=ask, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return done, refused


def test_budget_tiny_cap_holds_against_long_replies_sent_at_once(tmp_path, clock,
                                                                 fake_openrouter):
    # The issue: a $0.0001 daily cap, ten requests at once, 3,000-token replies.
    from studio.store.db import Store

    store = Store.open(tmp_path / "studio.db")
    try:
        budget, accounting = make(store, clock, budget_daily_usd=0.0001)
        for _ in range(10):
            fake_openrouter.queue_reply(LONG_REPLY)
        router = catalog_router(fake_openrouter, budget)

        done, refused = ask_at_once(router, accounting, [("owner", CLOUD)] * 10)

        assert done and refused and len(done) + len(refused) == 10
        sent = fake_openrouter.chat_requests
        assert len(sent) == len(done)
        assert all(isinstance(r.json.get("max_tokens"), int) for r in sent)
        assert accounting.spend("today").cloud_usd <= Decimal("0.0001")
        assert committed(budget)[0] <= Decimal("0.0001")
        cut = [events for _, events in done if events[-1].usage.done_reason == "length"]
        assert cut, "a 3,000-token reply fits in no $0.0001 budget: it must have been cut"
    finally:
        store.close()


def test_budget_caps_per_user_and_overall_hold_for_many_users_at_once(tmp_path, clock,
                                                                      fake_openrouter):
    from studio.store.db import Store

    store = Store.open(tmp_path / "studio.db")
    try:
        budget, accounting = make(store, clock, budget_daily_usd=0.0003,
                                  budget_user_daily_usd=0.00012)
        users = ["ann", "bob", "cy", "dee"]
        for _ in range(16):
            fake_openrouter.queue_reply(LONG_REPLY)
        router = catalog_router(fake_openrouter, budget)

        done, refused = ask_at_once(router, accounting, [(u, CLOUD) for u in users] * 4)

        assert done and refused
        assert accounting.spend("today").cloud_usd <= Decimal("0.0003")
        for user in users:
            assert accounting.spend("today", user=user).cloud_usd <= Decimal("0.00012"), user
    finally:
        store.close()


def test_budget_reply_limit_is_what_the_cap_leaves_and_says_so(store, clock, fake_openrouter):
    budget, accounting = make(store, clock, budget_daily_usd=0.0001)
    fake_openrouter.queue_reply(LONG_REPLY)
    router = catalog_router(fake_openrouter, budget)

    events = list(router.chat_stream(CLOUD, STORY))

    # 40 prompt tokens at most ($0.000006), then $0.0000006 a token: 156 tokens fit.
    assert fake_openrouter.last_chat.json["max_tokens"] == 156
    assert isinstance(events[0], ChatNotice)
    assert events[0].text == ("This reply is limited to 156 tokens to stay within the daily "
                              "cloud budget of $0.0001 ($0.0001 left today).")
    assert events[-1].usage.done_reason == "length"
    assert events[-1].usage.completion_tokens == 156


def test_budget_request_max_tokens_is_the_upper_bound(store, clock, fake_openrouter):
    budget, _ = make(store, clock, budget_daily_usd=1.0)
    fake_openrouter.queue_reply(LONG_REPLY)
    router = catalog_router(fake_openrouter, budget)

    events = list(router.chat_stream(CLOUD, STORY, ChatOptions(max_tokens=20)))

    assert fake_openrouter.last_chat.json["max_tokens"] == 20
    assert not any(isinstance(e, ChatNotice) for e in events)
    assert events[-1].usage.completion_tokens == 20


def test_budget_refuses_before_sending_when_not_even_a_short_reply_fits(store, clock,
                                                                        fake_openrouter):
    budget, accounting = make(store, clock, budget_daily_usd=0.0001)
    spend(accounting, 0.00006)
    router = catalog_router(fake_openrouter, budget)

    with pytest.raises(BudgetExceeded) as refused:
        list(router.chat_stream(CLOUD, STORY))

    assert fake_openrouter.chat_requests == []
    assert refused.value.message == (
        "Even with a reply of at most 64 tokens, this request could cost $0.000044, more "
        "than the $0.00004 left of the daily cloud budget of $0.0001 ($0.00006 spent or "
        "reserved today).")
