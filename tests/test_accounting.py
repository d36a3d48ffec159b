import csv
import doctest
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlite_utils import Database

from studio.costs import accounting as accounting_module
from studio.costs.accounting import (CSV_COLUMNS, Accounting, UsageFilter, nvml_power_watts,
                               period_start)
from studio.config import Settings
from studio.costs.pricing import ModelPrices
from studio.errors import ConfigError, InvalidInput
from studio.events import Usage
from studio.store.migrations import migrations
from studio.store.db import Store
from studio.store.usage import UsageStore
from tests.test_gpu import BARE_CARD, RTX_3090, FakeNvml

# Five hours behind UTC: an evening reply falls on the next UTC day, so these tests tell
# local days from UTC days.
TZ = timezone(timedelta(hours=-5))
MINI = ModelPrices.per_million("0.15", "0.60")  # openai/gpt-4o-mini


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


class Clock:
    def __init__(self, now: str = "2025-01-15 12:00"):
        self.now = at(now)

    def __call__(self) -> datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path / "data"), energy_price_kwh=0.30, gpu_watts=250.0)


@pytest.fixture
def accounting(store, settings, clock):
    prices = {"openrouter:openai/gpt-4o-mini": MINI}
    return Accounting(UsageStore(store), settings, power_reader=lambda: 300.0, prices=prices.get,
                      clock=clock)


def chat(accounting, backend="ollama", model="llama3.2", *, user="owner", prompt=100,
         completion=200, cost=None, estimate=False, duration=10.0, **kwargs):
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost,
                  cost_is_estimate=estimate)
    return accounting.record_chat(user, backend, model, usage, duration, **kwargs)


# -- schema ----------------------------------------------------------------------------------


def test_usage_migration_creates_usage_and_charges_tables():
    db = Database(memory=True)
    migrations.apply(db)

    assert db["usage"].columns_dict == {
        "id": int, "created_at": str, "day": str, "user": str, "backend": str, "model": str,
        "kind": str, "prompt_tokens": int, "completion_tokens": int, "images": int,
        "duration_s": float, "cost_usd": float, "cost_is_estimate": int, "energy_kwh": float,
        "energy_cost": float, "gpu_watts": float, "conversation_id": str, "message_id": int,
        "job_id": str, "via": str, "source": str, "generation_id": str}
    assert {tuple(i.columns) for i in db["usage"].indexes} >= {
        ("day",), ("user", "day"), ("backend", "day"), ("model", "day")}
    assert db["budget_charges"].columns_dict == {
        "id": int, "created_at": str, "day": str, "user": str, "model": str, "state": str,
        "estimate_usd": float, "actual_usd": float}


def test_usage_migration_upgrades_a_chat_only_database(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m003_create_usage_tables")
    assert not old["usage"].exists()
    old.close()

    store = Store.open(path)

    assert migrations.pending(store.db) == []
    assert UsageStore(store).usage_records() == []
    store.close()


def test_usage_migration_gives_old_rows_their_use(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m012_add_source_to_usage")
    row = dict(created_at="2025-01-01T00:00:00.000Z", day="2025-01-01", user="owner",
               backend="openrouter", model="m", cost_is_estimate=0)
    old["usage"].insert_all([{**row, "kind": "chat", "via": ""},
                             {**row, "kind": "image", "via": ""},
                             {**row, "kind": "chat", "via": "api: laptop"},
                             {**row, "kind": "image", "via": "api: laptop"}])
    old.close()

    store = Store.open(path)

    assert [r.source for r in UsageStore(store).usage_records()][::-1] == [
        "chat", "images", "api", "api"]
    assert ("source", "day") in {tuple(i.columns) for i in store.db["usage"].indexes}
    store.close()


# -- recording -------------------------------------------------------------------------------


@pytest.mark.parametrize("record, source", [
    (lambda a: chat(a), "chat"),
    (lambda a: chat(a, source="arena"), "arena"),
    (lambda a: chat(a, "openrouter", "openai/gpt-4o-mini", via="api: laptop"), "api"),
    (lambda a: chat(a, source="arena", via="api: laptop"), "api"),
    (lambda a: a.record_image("owner", "comfyui", "sdxl", 4.0), "images"),
    (lambda a: a.record_image("owner", "comfyui", "sdxl", 4.0, via="api: cli"), "api"),
])
def test_accounting_records_what_each_cost_was_for(accounting, record, source):
    assert record(accounting).source == source
    assert accounting.recent()[0].source == source


def test_accounting_refuses_an_unknown_use(accounting):
    with pytest.raises(ValueError, match="source must be one of"):
        chat(accounting, source="chess")


def test_accounting_spend_per_use_and_the_use_filter(accounting):
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.01)
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.03, source="arena")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.02, via="api: laptop")
    accounting.record_image("owner", "comfyui", "sdxl", 4.0)

    spend = {s.source: s.spend.cloud_usd for s in accounting.spend_per_source("month")}
    assert spend == {"arena": Decimal("0.03"), "api": Decimal("0.02"),
                     "chat": Decimal("0.01"), "images": Decimal(0)}
    assert [s.label for s in accounting.spend_per_source("month")][:2] == ["Arena", "API"]
    assert [r.cost_usd for r in accounting.recent(UsageFilter.from_inputs(source="arena"))] == [
        0.03]
    assert [r.via for r in accounting.recent(UsageFilter.from_inputs(source="API"))] == [
        "api: laptop"]
    assert len(accounting.recent(UsageFilter.from_inputs(source="all"))) == 4
    with pytest.raises(InvalidInput, match="'chess' isn't a use"):
        UsageFilter.from_inputs(source="chess")


def test_accounting_cloud_reply_keeps_the_reported_cost(accounting):
    record = chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.0042,
                  conversation_id="c1", message_id=7)

    assert (record.cost_usd, record.cost_is_estimate) == (0.0042, False)
    assert (record.energy_kwh, record.energy_cost, record.gpu_watts) == (None, None, None)
    [stored] = accounting.recent()
    assert stored == record
    assert (stored.conversation_id, stored.message_id, stored.kind) == ("c1", 7, "chat")


def test_accounting_cloud_reply_keeps_the_routers_estimate_flag(accounting):
    record = chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.001, estimate=True)

    assert record.cost_is_estimate is True


def test_accounting_cloud_reply_without_cost_is_priced_from_the_catalogue(accounting):
    record = chat(accounting, "openrouter", "openai/gpt-4o-mini", prompt=1000, completion=500)

    assert record.cost_is_estimate is True
    assert Decimal(str(record.cost_usd)) == Decimal("0.00045")


def test_accounting_cloud_reply_with_unknown_price_is_left_unknown(accounting):
    record = chat(accounting, "openrouter", "someone/unlisted-model")

    assert (record.cost_usd, record.cost_is_estimate) == (None, False)
    assert accounting.spend("today").unknown_cost == 1


def test_accounting_local_reply_energy_from_the_power_reader(accounting):
    record = chat(accounting, duration=60.0)  # 300 W for a minute at $0.30/kWh

    assert record.cost_usd == 0.0
    assert record.gpu_watts == 300.0
    assert Decimal(str(record.energy_kwh)) == Decimal("0.005")
    assert Decimal(str(record.energy_cost)) == Decimal("0.0015")


@pytest.mark.parametrize("reader", [lambda: None, lambda: 1 / 0], ids=["no reading", "fails"])
def test_accounting_local_reply_falls_back_to_configured_watts(store, settings, clock, reader):
    accounting = Accounting(UsageStore(store), settings, power_reader=reader, clock=clock)

    record = chat(accounting, duration=36.0)

    assert record.gpu_watts == 250.0
    assert Decimal(str(record.energy_kwh)) == Decimal("0.0025")


def test_accounting_explicit_watts_win_over_the_reader(accounting):
    assert chat(accounting, duration=1.0, watts=120.0).gpu_watts == 120.0


def test_accounting_local_duration_defaults_to_the_reported_total(accounting):
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_ms=7200.0)

    record = accounting.record_chat("owner", "ollama", "llama3.2", usage)

    assert record.duration_s == 7.2
    assert Decimal(str(record.energy_kwh)) == Decimal("0.0006")


def test_accounting_local_reply_without_duration_has_no_energy(accounting):
    record = accounting.record_chat("owner", "ollama", "llama3.2", Usage())

    assert (record.duration_s, record.energy_kwh, record.energy_cost) == (None, None, None)


def test_accounting_blank_user_is_the_owner(accounting):
    assert chat(accounting, user="").user == "owner"


def test_accounting_record_image_local_job(accounting):
    record = accounting.record_image("owner", "comfyui", "sdxl", 12.0, images=4, job_id="p-1")

    assert (record.kind, record.images, record.job_id, record.cost_usd) == (
        "image", 4, "p-1", 0.0)
    assert Decimal(str(record.energy_kwh)) == Decimal("0.001")


def test_accounting_record_image_cloud_job_uses_per_image_price(store, settings, clock):
    prices = {"openrouter:img/model": ModelPrices(prompt=Decimal(0), completion=Decimal(0),
                                                  image=Decimal("0.04"))}
    accounting = Accounting(UsageStore(store), settings, prices=prices.get, clock=clock)

    estimated = accounting.record_image("owner", "openrouter", "img/model", 3.0, images=2)
    reported = accounting.record_image("owner", "openrouter", "img/model", 3.0, cost_usd=0.05)

    assert (estimated.cost_usd, estimated.cost_is_estimate) == (0.08, True)
    assert (reported.cost_usd, reported.cost_is_estimate) == (0.05, False)
    assert estimated.energy_kwh is None


def test_nvml_power_watts_sums_the_cards():
    assert nvml_power_watts(FakeNvml([RTX_3090, RTX_3090])) == pytest.approx(431.0)


@pytest.mark.parametrize("nvml", [FakeNvml([BARE_CARD]), FakeNvml([]), FakeNvml(init_error=9)],
                         ids=["no sensor", "no card", "no driver"])
def test_nvml_power_watts_unknown_is_none(nvml):
    assert nvml_power_watts(nvml) is None


# -- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("period, today, start", [
    ("today", "2025-01-15", "2025-01-15"),
    ("week", "2025-01-15", "2025-01-13"),
    ("week", "2025-01-13", "2025-01-13"),
    ("week", "2025-01-19", "2025-01-13"),
    ("month", "2025-01-31", "2025-01-01"),
])
def test_period_start(period, today, start):
    assert period_start(period, datetime.fromisoformat(today).date()).isoformat() == start


def test_period_start_rejects_an_unknown_period():
    with pytest.raises(ValueError, match="period must be one of"):
        period_start("year", datetime(2025, 1, 1).date())


def test_accounting_periods_follow_local_days(accounting, clock):
    clock.set("2025-01-26 23:30")  # Sunday evening locally, already Monday in UTC
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=1.0)
    clock.set("2025-01-27 00:30")  # Monday, just after local midnight
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.25)

    totals = accounting.spend_summary()

    assert [totals[p].cloud_usd for p in ("today", "week", "month")] == [
        Decimal("0.25"), Decimal("0.25"), Decimal("1.25")]
    assert accounting.recent()[-1].day == "2025-01-26"


def test_accounting_month_starts_on_the_first_local_day(accounting, clock):
    clock.set("2025-01-31 22:00")
    chat(accounting, duration=3600.0)  # 0.3 kWh
    clock.set("2025-02-01 09:00")

    assert accounting.spend("month").requests == 0
    assert accounting.spend_per_day(2)[0].spend.energy_kwh == Decimal("0.3")


def test_accounting_spend_summary_for_one_user(accounting):
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.5, user="alice")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.25, user="bob")

    assert accounting.spend_summary(user="alice")["today"].cloud_usd == Decimal("0.5")
    assert accounting.spend_summary()["today"].cloud_usd == Decimal("0.75")


def test_accounting_spend_per_day_fills_days_without_usage(accounting, clock):
    clock.set("2025-01-13 10:00")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.1)
    clock.set("2025-01-15 10:00")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.2)

    days = accounting.spend_per_day(4)

    assert [(d.day, d.spend.cloud_usd) for d in days] == [
        ("2025-01-12", 0), ("2025-01-13", Decimal("0.1")), ("2025-01-14", 0),
        ("2025-01-15", Decimal("0.2"))]


def test_accounting_spend_per_model_costliest_first(accounting):
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.1)
    chat(accounting, "openrouter", "anthropic/claude-3.5-sonnet", cost=0.3)
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.1)
    chat(accounting, "ollama", "llama3.2", duration=60.0)

    rows = accounting.spend_per_model("month")

    assert [(m.label, m.spend.requests, m.spend.cloud_usd) for m in rows] == [
        ("openrouter:anthropic/claude-3.5-sonnet", 1, Decimal("0.3")),
        ("openrouter:openai/gpt-4o-mini", 2, Decimal("0.2")),
        ("ollama:llama3.2", 1, Decimal(0))]
    assert rows[2].spend.energy_usd == Decimal("0.0015")


def test_accounting_spend_per_user(accounting):
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.1, user="bob")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.4)

    assert [(u.user, u.spend.cloud_usd) for u in accounting.spend_per_user("today")] == [
        ("owner", Decimal("0.4")), ("bob", Decimal("0.1"))]


# -- recent requests, filters, CSV -----------------------------------------------------------


@pytest.fixture
def mixed(accounting, clock):
    clock.set("2025-01-10 09:00")
    chat(accounting, "ollama", "llama3.2:3b")
    clock.set("2025-01-11 09:00")
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=0.01, user="alice")
    clock.set("2025-01-12 09:00")
    chat(accounting, "openrouter", "anthropic/claude-3.5-sonnet", cost=0.02)
    accounting.record_image("alice", "comfyui", "sdxl_base", 5.0)
    return accounting


@pytest.mark.parametrize("filters, models", [
    (UsageFilter(), ["sdxl_base", "anthropic/claude-3.5-sonnet", "openai/gpt-4o-mini",
                     "llama3.2:3b"]),
    (UsageFilter(backend="openrouter"), ["anthropic/claude-3.5-sonnet", "openai/gpt-4o-mini"]),
    (UsageFilter(model="GPT"), ["openai/gpt-4o-mini"]),
    (UsageFilter(user="alice"), ["sdxl_base", "openai/gpt-4o-mini"]),
    (UsageFilter(start_day="2025-01-11", end_day="2025-01-11"), ["openai/gpt-4o-mini"]),
    (UsageFilter(start_day="2025-01-12"), ["sdxl_base", "anthropic/claude-3.5-sonnet"]),
    (UsageFilter(end_day="2025-01-10"), ["llama3.2:3b"]),
    (UsageFilter(backend="openrouter", user="alice"), ["openai/gpt-4o-mini"]),
    (UsageFilter(model="%"), []),
    (UsageFilter(model="_"), ["sdxl_base"]),
])
def test_accounting_recent_filters(mixed, filters, models):
    assert [r.model for r in mixed.recent(filters)] == models


def test_accounting_recent_limit_keeps_the_newest(mixed):
    assert [r.model for r in mixed.recent(limit=1)] == ["sdxl_base"]


@pytest.mark.parametrize("inputs, expected", [
    (("all", "", " ", "", ""), UsageFilter()),
    (("ollama", " llama ", "alice", "2025-1-2", "2025-01-31"),
     UsageFilter("ollama", "llama", "alice", "2025-01-02", "2025-01-31")),
    ((None, None, None, None, None), UsageFilter()),
])
def test_usage_filter_from_inputs(inputs, expected):
    assert UsageFilter.from_inputs(*inputs) == expected


@pytest.mark.parametrize("start, end, message", [
    ("yesterday", "", "start date 'yesterday' isn't a date"),
    ("", "2025-02-30", "end date '2025-02-30' isn't a date"),
    ("2025-02-01", "2025-01-01", "ends (2025-01-01) before it starts"),
])
def test_usage_filter_rejects_bad_dates(start, end, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        UsageFilter.from_inputs("all", "", "", start, end)


def test_accounting_export_csv_writes_filtered_rows(mixed, settings):
    path = mixed.export_csv(UsageFilter(backend="openrouter"))

    assert path.parent == settings.data_path / "exports"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["model"], r["cost_usd"], r["energy_kwh"]) for r in rows] == [
        ("anthropic/claude-3.5-sonnet", "0.02", ""), ("openai/gpt-4o-mini", "0.01", "")]
    assert rows[1]["time"] == "2025-01-11 09:00:00"
    assert {r["source"] for r in rows} == {"chat"}
    assert rows[1]["created_at_utc"] == "2025-01-11T14:00:00.000Z"


def test_accounting_export_csv_pages_through_every_row(mixed, tmp_path, monkeypatch):
    monkeypatch.setattr(accounting_module, "_CSV_PAGE", 2)

    path = mixed.export_csv(directory=tmp_path / "out")

    with path.open(newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == ["4", "3", "2", "1"]


# -- local versus cloud ----------------------------------------------------------------------


def test_accounting_local_vs_cloud_prices_local_tokens(accounting):
    chat(accounting, prompt=600_000, completion=200_000, duration=60.0)
    chat(accounting, prompt=400_000, completion=300_000, duration=60.0)
    chat(accounting, "openrouter", "openai/gpt-4o-mini", cost=1.0, prompt=10**6)
    accounting.record_image("owner", "comfyui", "sdxl", 60.0)

    result = accounting.local_vs_cloud("month", "openai/gpt-4o-mini", MINI)

    assert (result.requests, result.prompt_tokens, result.completion_tokens) == (
        2, 1_000_000, 500_000)
    assert result.cloud_usd == Decimal("0.45")
    assert result.energy_usd == Decimal("0.003")


def test_accounting_local_vs_cloud_leaves_out_replies_without_tokens(accounting):
    chat(accounting, prompt=1_000_000, completion=0)
    accounting.record_chat("owner", "ollama", "llama3.2", Usage(), 5.0)

    result = accounting.local_vs_cloud("today", "openai/gpt-4o-mini", MINI)

    assert (result.requests, result.without_tokens, result.cloud_usd) == (
        2, 1, Decimal("0.15"))


def test_accounting_local_vs_cloud_unknown_prices(accounting):
    chat(accounting)

    result = accounting.local_vs_cloud("week", "x/unknown", None)

    assert result.cloud_usd is None
    assert result.requests == 1


# -- settings, doctests --------------------------------------------------------------------


def test_settings_cost_variables_are_read():
    settings = Settings.from_env({"STUDIO_ENERGY_PRICE_KWH": "0.21", "STUDIO_GPU_WATTS": "320",
                                  "STUDIO_BUDGET_DAILY_USD": "2.5"}, dotenv_path=None)

    assert (settings.energy_price_kwh, settings.gpu_watts, settings.budget_daily_usd) == (
        0.21, 320.0, 2.5)
    assert (settings.budget_monthly_usd, settings.budget_user_daily_usd,
            settings.budget_user_monthly_usd) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("name, env", [("energy_price_kwh", "STUDIO_ENERGY_PRICE_KWH"),
                                       ("gpu_watts", "STUDIO_GPU_WATTS")])
def test_accounting_rejects_negative_settings(store, settings, name, env):
    with pytest.raises(ConfigError, match=f"{env} can't be negative"):
        Accounting(UsageStore(store), replace(settings, **{name: -1.0}))


def test_accounting_doctests_pass():
    assert doctest.testmod(accounting_module).failed == 0
