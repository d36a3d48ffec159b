"""Usage accounting: what every reply and image job cost, for the Costs tab.

``Accounting`` records one ``usage`` row per chat reply or image job (cloud cost from the
backend's report, else catalogue prices x tokens flagged as an estimate; local work gets an
energy estimate: GPU watts x time x electricity price) and answers the Costs tab's questions
(spend per period, per day, per model, per user, recent rows, CSV, local versus cloud).
The caps (``Budget``) are ``budget.py``.

Until there are accounts everything belongs to user "owner". Days are local calendar days of
the injectable ``clock`` (an aware ``datetime``); weeks start on Monday. Money is ``Decimal``
here (the store keeps floats, rounded back on the way out). All SQL lives in
``store/usage.py``. No gradio imports here; nothing runs at import time.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..config import Settings
from .pricing import ModelPrices, energy_kwh, reply_cost, to_decimal
from ..errors import ConfigError, InvalidInput
from ..events import Usage
from ..models.gpu import read_gpus
from ..chat.router import CLOUD_BACKENDS
from ..store.usage import UsageRecord, UsageStore, UsageSums

log = logging.getLogger(__name__)

OWNER = "owner"
PERIODS = {"today": "Today", "week": "This week", "month": "This month"}
# What a cost was for: a chat reply, an arena answer, an image job (from the pages), or
# anything through the API (/v1, /api), whatever it asked for.
SOURCES = {"chat": "Chat", "arena": "Arena", "images": "Images", "api": "API"}
CSV_COLUMNS = ("id", "time", "created_at_utc", "day", "user", "backend", "model", "kind",
               "prompt_tokens", "completion_tokens", "images", "duration_s", "cost_usd",
               "cost_is_estimate", "energy_kwh", "energy_cost_usd", "gpu_watts",
               "conversation_id", "message_id", "job_id", "via", "source")
_CSV_PAGE = 5000

Clock = Callable[[], datetime]
PowerReader = Callable[[], "float | None"]
PriceLookup = Callable[[str], "ModelPrices | None"]


def local_now() -> datetime:
    """The default clock: now, as an aware datetime in the machine's time zone."""
    return datetime.now().astimezone()


def nvml_power_watts(nvml: Any | None = None) -> float | None:
    """Power drawn by all NVIDIA cards together right now, in watts; None when NVML can't
    tell (no driver, no card, or no power sensor). The default ``power_reader``."""
    reading = read_gpus(nvml)
    watts = [d.power_w for d in reading.devices if d.power_w is not None]
    return sum(watts) if reading.available and watts else None


def period_start(period: str, today: date) -> date:
    """First day of ``period`` ("today", "week" from Monday, "month") that contains ``today``.

    >>> period_start("week", date(2025, 1, 31)), period_start("month", date(2025, 1, 31))
    (datetime.date(2025, 1, 27), datetime.date(2025, 1, 1))
    """
    if period == "today":
        return today
    if period == "week":
        return today - timedelta(days=today.weekday())
    if period == "month":
        return today.replace(day=1)
    raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period!r})")


def parse_day(text: str | None, what: str = "date") -> str | None:
    """'2025-01-31' -> '2025-01-31'; blank -> None. Raises ``InvalidInput`` otherwise.

    >>> parse_day(" 2025-1-31 "), parse_day("")
    ('2025-01-31', None)
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        year, month, day = (int(part) for part in text.split("-"))
        return date(year, month, day).isoformat()
    except ValueError:
        raise InvalidInput(f"The {what} {text!r} isn't a date.",
                           hint="Type dates as YYYY-MM-DD, e.g. 2025-01-31.") from None


def as_usd(value: float | None) -> Decimal:
    # Sums come back from SQLite as floats; 9 decimals drop the binary noise of the sum.
    return Decimal(0) if value is None else Decimal(str(round(value, 9)))


def as_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """Totals over some usage: cloud bill, energy of local work, how many rows."""

    requests: int = 0
    cloud_usd: Decimal = Decimal(0)
    energy_usd: Decimal = Decimal(0)
    energy_kwh: Decimal = Decimal(0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0  # rows whose cloud cost was estimated from prices
    unknown_cost: int = 0  # rows with no cost at all (price unknown)

    @classmethod
    def from_sums(cls, sums: UsageSums) -> "Spend":
        return cls(requests=sums.requests, cloud_usd=as_usd(sums.cost_usd),
                   energy_usd=as_usd(sums.energy_cost), energy_kwh=as_usd(sums.energy_kwh),
                   prompt_tokens=sums.prompt_tokens, completion_tokens=sums.completion_tokens,
                   estimated=sums.estimated, unknown_cost=sums.unknown_cost)

    @property
    def total_usd(self) -> Decimal:
        return self.cloud_usd + self.energy_usd


@dataclass(frozen=True)
class DaySpend:
    day: str
    spend: Spend


@dataclass(frozen=True)
class ModelSpend:
    backend: str
    model: str
    spend: Spend

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.model}"


@dataclass(frozen=True)
class UserSpend:
    user: str
    spend: Spend


@dataclass(frozen=True)
class SourceSpend:
    """Spend of one ``source`` ("chat", "arena", "images", "api")."""

    source: str
    spend: Spend

    @property
    def label(self) -> str:
        return SOURCES.get(self.source, self.source)


@dataclass(frozen=True)
class UsageFilter:
    """Filters for the recent-requests table and the CSV export; None = any."""

    backend: str | None = None
    model: str | None = None  # part of the model name, any case
    user: str | None = None
    start_day: str | None = None  # inclusive, YYYY-MM-DD
    end_day: str | None = None
    source: str | None = None  # one of SOURCES

    @classmethod
    def from_inputs(cls, backend: str | None = None, model: str | None = None,
                    user: str | None = None, start: str | None = None,
                    end: str | None = None, source: str | None = None) -> "UsageFilter":
        """From what a person typed: blanks and "all" mean any. Raises ``InvalidInput`` for a
        malformed date, a range that ends before it starts, or a use not in ``SOURCES``."""
        start_day, end_day = parse_day(start, "start date"), parse_day(end, "end date")
        if start_day and end_day and start_day > end_day:
            raise InvalidInput(f"The date range ends ({end_day}) before it starts ({start_day}).",
                               hint="Swap the two dates.")

        def clean(text: str | None) -> str | None:
            text = (text or "").strip()
            return None if not text or text.lower() == "all" else text

        source = clean(source)
        if source is not None and source.lower() not in SOURCES:
            raise InvalidInput(f"{source!r} isn't a use the studio records.",
                               hint=f"Pick one of: {', '.join(SOURCES)} (or all).")
        return cls(backend=clean(backend), model=clean(model), user=clean(user),
                   start_day=start_day, end_day=end_day,
                   source=source.lower() if source else None)


@dataclass(frozen=True)
class LocalVsCloud:
    """What the local chat replies of a period would have cost on ``model_id``, beside what
    their electricity cost. ``cloud_usd`` is None when that model's prices are unknown."""

    period: str
    model_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    without_tokens: int  # replies that reported no token counts (left out of cloud_usd)
    energy_kwh: Decimal
    energy_usd: Decimal
    cloud_usd: Decimal | None


@dataclass(frozen=True)
class CostsOverview:
    """Everything the Costs tab shows on open, in one object."""

    period: str
    today: str
    totals: dict[str, Spend]  # "today", "week", "month"
    per_day: list[DaySpend]
    per_model: list[ModelSpend]
    per_user: list[UserSpend]
    recent: list[UsageRecord]
    per_source: list[SourceSpend] = field(default_factory=list)


# -- accounting ------------------------------------------------------------------------------


class Accounting:
    """Records usage and answers questions about it. Safe to share between threads.

    ``power_reader`` returns the GPU's draw in watts or None (default: NVML through
    ``studio.gpu``); when it gives None, ``settings.gpu_watts`` is used. ``prices`` maps a
    ``backend:model`` id to its ``ModelPrices`` (``studio.catalog.Catalog.prices`` fits) for
    cloud replies that come without a cost. ``clock`` gives an aware local ``datetime``.
    ``ask_cost(row_id, generation_id, model_id)`` (``GenerationCosts.ask``) is told about a
    cloud reply that came without a reported cost but with a generation id: the row is an
    estimate (or unknown) until the cloud says. Raises ``ConfigError`` for a negative
    electricity price or wattage.
    """

    def __init__(self, ledger: UsageStore, settings: Settings, *,
                 power_reader: PowerReader | None = None, prices: PriceLookup | None = None,
                 clock: Clock = local_now,
                 cloud_backends: Iterable[str] = CLOUD_BACKENDS,
                 ask_cost: Callable[[int, str, str], None] | None = None) -> None:
        check_non_negative(settings, ("energy_price_kwh", "gpu_watts"))
        self.ledger = ledger
        self.settings = settings
        self.power_reader = power_reader if power_reader is not None else nvml_power_watts
        self.prices = prices or (lambda model_id: None)
        self.clock = clock
        self.cloud_backends = frozenset(cloud_backends)
        self.ask_cost = ask_cost

    # -- recording -------------------------------------------------------------------------

    def record_chat(self, user: str, backend: str, model: str, usage: Usage,
                    duration_s: float | None = None, conversation_id: str | None = None,
                    message_id: int | None = None, *, watts: float | None = None,
                    via: str = "", source: str = "chat") -> UsageRecord:
        """Account one chat reply and return the stored row.

        Cloud: ``usage.cost_usd`` as reported (``usage.cost_is_estimate`` kept), else catalogue
        prices x tokens flagged as an estimate, else unknown (NULL). Local: no bill, energy =
        watts (``watts``, else the power reader, else ``STUDIO_GPU_WATTS``) x ``duration_s``
        (default ``usage.total_ms``) x ``STUDIO_ENERGY_PRICE_KWH``. A cloud row replaces the
        settled budget charge of its request (see ``Budget``). ``source``: "chat" or
        "arena"; a request through the API (``via`` "api: …") is "api" whatever it says.
        """
        if duration_s is None and usage.total_ms is not None:
            duration_s = usage.total_ms / 1000
        cost, estimate, ask = None, False, False
        if backend in self.cloud_backends:
            cost, estimate = to_decimal(usage.cost_usd), usage.cost_is_estimate
            if cost is None:
                cost = reply_cost(self.prices(f"{backend}:{model}"), usage.prompt_tokens,
                                  usage.completion_tokens)
                estimate = cost is not None
            # No reported cost (a cut-off or stopped stream): billed all the same, so the
            # cloud is asked; until it answers the row is an estimate, even with no figure.
            ask = (usage.cost_usd is None and bool(usage.generation_id)
                   and self.ask_cost is not None)
            estimate = estimate or ask
        row = dict(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   conversation_id=conversation_id, message_id=message_id, via=via,
                   source=_source(source, via), generation_id=usage.generation_id)
        record = self._record(user, backend, model, "chat", duration_s, cost, estimate, watts,
                              row)
        if ask:
            self.ask_cost(record.id, usage.generation_id, f"{backend}:{model}")
        return record

    def record_image(self, user: str, backend: str, model: str, duration_s: float | None, *,
                     images: int = 1, job_id: str | None = None,
                     cost_usd: float | Decimal | None = None, watts: float | None = None,
                     via: str = "") -> UsageRecord:
        """Account one image job (``images`` pictures) like a chat reply: local jobs get the
        GPU energy of ``duration_s``; cloud ones ``cost_usd``, else the catalogue's per-image
        price (flagged as an estimate), else unknown. ``via``: "" from a page, "api: <key
        name>" through /v1."""
        cost, estimate = None, False
        if backend in self.cloud_backends:
            cost = to_decimal(cost_usd)
            if cost is None:
                cost = reply_cost(self.prices(f"{backend}:{model}"), 0, 0, images=images)
                estimate = cost is not None
        return self._record(user, backend, model, "image", duration_s, cost, estimate, watts,
                            dict(images=images, job_id=job_id, via=via,
                                 source=_source("images", via)))

    def _record(self, user: str, backend: str, model: str, kind: str,
                duration_s: float | None, cost: Decimal | None, estimate: bool,
                watts: float | None, extra: dict) -> UsageRecord:
        now = self.clock()
        cloud = backend in self.cloud_backends
        kwh = energy = used_watts = None
        if not cloud:
            cost, estimate = Decimal(0), False
            if duration_s is not None:
                used_watts = watts if watts is not None else self._watts()
                kwh = energy_kwh(used_watts, max(duration_s, 0.0))
                energy = kwh * setting_decimal(self.settings.energy_price_kwh)
        row = dict(created_at=utc_stamp(now), day=now.date().isoformat(), user=user or OWNER,
                   backend=backend, model=model, kind=kind, duration_s=duration_s,
                   cost_usd=as_float(cost), cost_is_estimate=int(estimate),
                   energy_kwh=as_float(kwh), energy_cost=as_float(energy), gpu_watts=used_watts,
                   **extra)
        # A cloud row takes over its request's settled budget charge only when it carries a
        # cost; a reply cut short with no usage and no price keeps the router's estimate.
        takes_charge = cloud and cost is not None
        row_id = self.ledger.add_usage(
            row, charge_model=f"{backend}:{model}" if takes_charge else None)
        return UsageRecord(id=row_id, **{name: row.get(name) for name in _RECORD_FIELDS},
                           cost_is_estimate=estimate)

    def _watts(self) -> float:
        try:
            measured = self.power_reader()
        except Exception:  # noqa: BLE001 - a failed reading must not lose the usage row
            log.warning("GPU power reading failed; using STUDIO_GPU_WATTS", exc_info=True)
            measured = None
        return float(measured) if measured is not None else float(self.settings.gpu_watts)

    # -- questions -------------------------------------------------------------------------

    def today(self) -> date:
        return self.clock().date()

    def spend_summary(self, *, user: str | None = None) -> dict[str, Spend]:
        """Spend of today, this week and this month (keys of ``PERIODS``), in one query."""
        today = self.today()
        since = {period: period_start(period, today).isoformat() for period in PERIODS}
        sums = self.ledger.usage_sums(since, user=user)
        return {period: Spend.from_sums(sums[period]) for period in PERIODS}

    def tokens_today(self, user: str) -> tuple[int, datetime]:
        """(prompt + completion tokens of ``user`` today, when today ends), local time."""
        now = self.clock()
        sums = self.ledger.usage_sums({"today": now.date().isoformat()}, user=user)["today"]
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(),
                                    tzinfo=now.tzinfo)
        return int(sums.prompt_tokens + sums.completion_tokens), midnight

    def spend(self, period: str, *, user: str | None = None) -> Spend:
        """Spend of one period ("today", "week", "month")."""
        start = period_start(period, self.today()).isoformat()
        return Spend.from_sums(self.ledger.usage_sums({period: start}, user=user)[period])

    def spend_per_day(self, days: int = 30, *, user: str | None = None) -> list[DaySpend]:
        """One entry per day of the last ``days`` days (today included), oldest first; days
        without usage are there with zero spend, so a chart shows the gaps."""
        today = self.today()
        first = today - timedelta(days=days - 1)
        found = dict(self.ledger.usage_by_day(first.isoformat(), today.isoformat(), user=user))
        return [DaySpend(day, Spend.from_sums(found.get(day, UsageSums())))
                for day in ((first + timedelta(days=n)).isoformat() for n in range(days))]

    def spend_per_model(self, period: str, *, user: str | None = None) -> list[ModelSpend]:
        """Spend per backend and model in ``period``, costliest first."""
        start, end = self._range(period)
        return [ModelSpend(backend, model, Spend.from_sums(sums))
                for backend, model, sums in self.ledger.usage_by_model(start, end, user=user)]

    def spend_per_source(self, period: str, *, user: str | None = None) -> list[SourceSpend]:
        """Spend per use (chat, arena, images, api) in ``period``, costliest first."""
        start, end = self._range(period)
        return [SourceSpend(source, Spend.from_sums(sums))
                for source, sums in self.ledger.usage_by_source(start, end, user=user)]

    def spend_per_user(self, period: str) -> list[UserSpend]:
        """Spend per user in ``period``, costliest first."""
        start, end = self._range(period)
        return [UserSpend(user, Spend.from_sums(sums))
                for user, sums in self.ledger.usage_by_user(start, end)]

    def recent(self, filters: UsageFilter = UsageFilter(), *, limit: int = 100
               ) -> list[UsageRecord]:
        """The newest ``limit`` usage rows matching ``filters``."""
        return self.ledger.usage_records(backend=filters.backend, model_contains=filters.model,
                                        user=filters.user, start_day=filters.start_day,
                                        end_day=filters.end_day, limit=limit,
                                        source=filters.source)

    def iter_records(self, filters: UsageFilter = UsageFilter()) -> Iterator[UsageRecord]:
        """Every row matching ``filters``, newest first, read a page at a time."""
        before = None
        while True:
            page = self.ledger.usage_records(
                backend=filters.backend, model_contains=filters.model, user=filters.user,
                start_day=filters.start_day, end_day=filters.end_day, limit=_CSV_PAGE,
                before_id=before, source=filters.source)
            yield from page
            if len(page) < _CSV_PAGE:
                return
            before = page[-1].id

    def export_csv(self, filters: UsageFilter = UsageFilter(), *,
                   directory: str | Path | None = None) -> Path:
        """Write the rows matching ``filters`` to a new CSV file (``CSV_COLUMNS``) in
        ``directory`` (default: the data directory's exports/) and return its path."""
        folder = Path(directory) if directory is not None else self.settings.data_path / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        path = folder / f"usage-{now:%Y%m%d-%H%M%S}-{now.microsecond:06d}.csv"
        tz = now.tzinfo
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for record in self.iter_records(filters):
                writer.writerow(csv_row(record, tz))
        return path

    def local_vs_cloud(self, period: str, model_id: str, prices: ModelPrices | None, *,
                       user: str | None = None) -> LocalVsCloud:
        """What the local chat replies of ``period`` would have cost on ``model_id`` (their
        tokens x its ``prices``), beside their energy cost."""
        start, end = self._range(period)
        sums, without = self.ledger.usage_local_chat_sums(
            start, end, exclude_backends=self.cloud_backends, user=user)
        counted = sums.requests - without
        cloud = None
        if prices is not None:
            cloud = (reply_cost(prices, sums.prompt_tokens, sums.completion_tokens,
                                requests=counted) if counted else Decimal(0))
        return LocalVsCloud(period=period, model_id=model_id, requests=sums.requests,
                            prompt_tokens=sums.prompt_tokens,
                            completion_tokens=sums.completion_tokens, without_tokens=without,
                            energy_kwh=as_usd(sums.energy_kwh), energy_usd=as_usd(sums.energy_cost),
                            cloud_usd=cloud)

    def overview(self, period: str = "month", filters: UsageFilter = UsageFilter(), *,
                 days: int = 30, recent_limit: int = 100,
                 only: str | None = None) -> CostsOverview:
        """What the Costs tab loads on open: period totals, the last ``days`` days, spend per
        model and per user in ``period``, and the newest rows matching ``filters``. With
        ``only`` (a plain user), every figure is that user's alone."""
        if only is not None:
            filters = replace(filters, user=only)
        per_user = self.spend_per_user(period)
        return CostsOverview(period=period, today=self.today().isoformat(),
                             totals=self.spend_summary(user=only),
                             per_day=self.spend_per_day(days, user=only),
                             per_model=self.spend_per_model(period, user=only),
                             per_user=[u for u in per_user if only is None or u.user == only],
                             recent=self.recent(filters, limit=recent_limit),
                             per_source=self.spend_per_source(period, user=only))

    def local_tz(self) -> tzinfo | None:
        return self.clock().tzinfo

    def _range(self, period: str) -> tuple[str, str]:
        today = self.today()
        return period_start(period, today).isoformat(), today.isoformat()


_RECORD_FIELDS = ("created_at", "day", "user", "backend", "model", "kind", "prompt_tokens",
                  "completion_tokens", "images", "duration_s", "cost_usd", "energy_kwh",
                  "energy_cost", "gpu_watts", "conversation_id", "message_id", "job_id", "via",
                  "source", "generation_id")


def local_time(record: UsageRecord, tz: tzinfo | None) -> str:
    """The row's time in ``tz``, 'YYYY-MM-DD HH:MM:SS'."""
    stamp = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
    return stamp.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def csv_row(record: UsageRecord, tz: tzinfo | None) -> list[Any]:
    """One CSV line in ``CSV_COLUMNS`` order; unknown figures are empty cells."""
    values = [record.id, local_time(record, tz), record.created_at, record.day, record.user,
              record.backend, record.model, record.kind, record.prompt_tokens,
              record.completion_tokens, record.images, record.duration_s, record.cost_usd,
              int(record.cost_is_estimate), record.energy_kwh, record.energy_cost,
              record.gpu_watts, record.conversation_id, record.message_id, record.job_id,
              record.via, record.source]
    return ["" if value is None else value for value in values]


def _source(source: str, via: str) -> str:
    """What a usage row was for: API use is "api" whatever it asked for.

    >>> _source("chat", "api: laptop"), _source("arena", "")
    ('api', 'arena')
    """
    if via.startswith("api:"):
        return "api"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
    return source


def utc_stamp(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def setting_decimal(value: float) -> Decimal:
    return Decimal(str(value))


def check_non_negative(settings: Settings, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(settings, name)
        if value < 0:
            env = settings.__dataclass_fields__[name].metadata["env"]
            raise ConfigError(f"{env} can't be negative (got {value:g}).",
                              hint="Use 0 to turn it off.")
