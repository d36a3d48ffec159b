"""A cloud reply cut off before its usage report is billed all the same: its cost is asked
of OpenRouter (``GET /generation?id=``) afterwards, through the real client and the fake
OpenRouter, and the usage row and the budget are put right (issue 14)."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from studio.chat.replies import ReplyManager
from studio.chat.router import Router
from studio.chat.streams import record_usage
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.costs.accounting import Accounting
from studio.costs.budget import Budget
from studio.costs.generation_costs import GenerationCosts
from studio.errors import BackendUnavailable
from studio.events import ChatMessage, ChatOptions, Usage
from studio.store.usage import UsageStore
from tests.fakes.openrouter_server import DEFAULT_KEY

TZ = timezone(timedelta(hours=1))
# Not in the fake's catalogue prices: the studio has no price to estimate it with.
UNPRICED = "openrouter:acme/unpriced"
NOW = datetime(2025, 3, 14, 12, 0, tzinfo=TZ)


class Answers:
    """``on_answer`` of GenerationCosts: waits for a row's answer without sleeping."""

    def __init__(self):
        self.got: dict[int, float | None] = {}
        self.cond = threading.Condition()

    def __call__(self, row_id, cost):
        with self.cond:
            self.got[row_id] = cost
            self.cond.notify_all()

    def wait(self, row_id, timeout=20):
        with self.cond:
            assert self.cond.wait_for(lambda: row_id in self.got, timeout), "no answer came"
            return self.got[row_id]


@pytest.fixture
def fake(fake_openrouter):
    unpriced = dict(fake_openrouter.models[0], id="acme/unpriced", name="Acme: Unpriced",
                    pricing={"prompt": "0.000001", "completion": "0.000002"})
    fake_openrouter.models.append(unpriced)  # OpenRouter knows its price; our catalog doesn't
    return fake_openrouter


def wire(store, fake, *, delays=(0.01, 0.01, 0.01), cap=0.0):
    settings = Settings(budget_daily_usd=cap)
    client = OpenRouterClient(DEFAULT_KEY, fake.url, timeout=10)
    answers = Answers()
    costs = GenerationCosts(UsageStore(store), client.generation_cost, delays=delays,
                            on_answer=answers)
    accounting = Accounting(UsageStore(store), settings, power_reader=lambda: None,
                            clock=lambda: NOW, ask_cost=costs.ask)
    budget = Budget(UsageStore(store), settings, clock=lambda: NOW)
    router = Router({"openrouter": client}, budget=budget, prices=lambda model_id: None,
                    sleep=lambda s: None)
    replies = ReplyManager(router.chat_stream, on_settled=record_usage(accounting))
    return replies, accounting, budget, costs, answers


def run(replies, model_id=UNPRICED):
    reply = replies.start(model_id, [ChatMessage("user", "Tell me a story.")], ChatOptions())
    assert reply.settled.wait(20)
    return reply.snapshot()


@pytest.mark.parametrize("cut_mode", ["abort", "eof"])
def test_a_cut_off_reply_gets_the_cost_openrouter_billed(store, fake, cut_mode):
    fake.queue_reply(["word "] * 20, cut_after=5, cut_mode=cut_mode)
    fake.generation_misses = 2  # OpenRouter needs a moment before it knows a generation
    replies, accounting, budget, costs, answers = wire(store, fake)
    try:
        snap = run(replies)
        assert snap.status == "partial" and snap.usage.generation_id

        [row] = accounting.recent()
        # Recorded at once: no cost yet, marked as an estimate until OpenRouter answers.
        assert (row.cost_usd, row.cost_is_estimate) == (None, True)
        assert row.generation_id == snap.usage.generation_id

        billed = answers.wait(row.id)
        # 10 prompt tokens x $1/M + 5 sent tokens x $2/M, what the fake billed
        assert billed == pytest.approx(0.00002)
        [row] = accounting.recent()
        assert (row.cost_usd, row.cost_is_estimate) == (pytest.approx(0.00002), False)
        assert accounting.spend("today").cloud_usd == Decimal("0.00002")
        lookups = [r for r in fake.requests if r.path == "/api/v1/generation"]
        assert len(lookups) == 3 and lookups[0].query == {"id": [row.generation_id]}
    finally:
        costs.close()


def test_the_billed_cost_takes_over_the_budget_charge(store, fake):
    fake.queue_reply(["word "] * 20, cut_after=5)
    replies, accounting, budget, costs, answers = wire(store, fake, cap=1.0)
    try:
        snap = run(replies)
        [row] = accounting.recent()
        answers.wait(row.id)
    finally:
        costs.close()
    assert snap.status == "partial"
    assert budget.budget_status().spent == Decimal("0.00002")
    assert store.db["budget_charges"].count == 0


def test_a_complete_reply_with_its_cost_asks_nothing(store, fake):
    fake.queue_reply(["done."], cost=0.003)
    replies, accounting, _, costs, _ = wire(store, fake)
    try:
        run(replies)
    finally:
        costs.close()
    [row] = accounting.recent()
    assert (row.cost_usd, row.cost_is_estimate) == (0.003, False)
    assert not [r for r in fake.requests if r.path == "/api/v1/generation"]


def test_no_answer_leaves_the_row_an_estimate(store, fake):
    fake.queue_reply(["word "] * 20, cut_after=5)
    fake.generation_misses = 99
    replies, accounting, _, costs, answers = wire(store, fake, delays=(0.01, 0.01))
    try:
        run(replies)
        [row] = accounting.recent()
        assert answers.wait(row.id) is None
    finally:
        costs.close()
    [row] = accounting.recent()
    assert (row.cost_usd, row.cost_is_estimate) == (None, True)


def test_a_failing_lookup_is_asked_again(store):
    calls = []

    def lookup(generation_id):
        calls.append(generation_id)
        if len(calls) == 1:
            raise BackendUnavailable("Can't reach OpenRouter.")
        return 0.5

    settings = Settings()
    accounting = Accounting(UsageStore(store), settings, clock=lambda: NOW)
    row = accounting.record_chat("owner", "openrouter", "a/b", Usage(generation_id="gen-1"))
    store.db.execute("UPDATE usage SET cost_is_estimate = 1")
    answers = Answers()
    costs = GenerationCosts(UsageStore(store), lookup, delays=(0.01, 0.01), on_answer=answers)
    try:
        costs.ask(row.id, "gen-1", "openrouter:a/b")
        assert answers.wait(row.id) == 0.5
    finally:
        costs.close()
    assert calls == ["gen-1", "gen-1"]
    assert accounting.recent()[0].cost_usd == 0.5


def test_resume_asks_again_for_rows_a_restart_left_waiting(store, fake):
    fake.queue_reply(["word "] * 20, cut_after=5)
    fake.generation_misses = 99
    replies, accounting, _, costs, _ = wire(store, fake, delays=(3600,))
    run(replies)
    costs.close()  # the studio stops before OpenRouter answered
    fake.generation_misses = 0

    answers = Answers()
    again = GenerationCosts(UsageStore(store), OpenRouterClient(
        DEFAULT_KEY, fake.url, timeout=10).generation_cost, delays=(0.01,), on_answer=answers)
    try:
        assert again.resume(date(2025, 3, 14)) == 1
        [row] = accounting.recent()
        assert answers.wait(row.id) == pytest.approx(0.00002)
    finally:
        again.close()
