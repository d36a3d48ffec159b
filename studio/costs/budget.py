"""Cloud budgets: daily and monthly spending caps, overall and per user.

``Budget`` implements the router's ``Budget`` protocol: a request's estimate is reserved
under a lock before it goes out, and settled with its actual cost afterwards, so requests
sent at once cannot together overspend a cap. What was spent comes from the usage rows
``accounting.py`` records. No gradio imports here; nothing runs at import time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .accounting import (OWNER, Clock, as_float, as_usd, check_non_negative, local_now,
                         setting_decimal, utc_stamp)
from ..config import Settings
from .pricing import MIN_REPLY_TOKENS, ReplyCost, format_usd, format_usd_apart
from ..errors import BudgetExceeded
from ..store.usage import UsageStore

log = logging.getLogger(__name__)

WARN_FRACTION = Decimal("0.8")
LEVELS = ("ok", "warning", "exceeded")


@dataclass(frozen=True)
class Reservation:
    """A cloud request's place in the budget, from ``Budget.reserve`` until settled/released.

    ``max_tokens`` (from ``reserve_reply``): the reply's token limit to send, which the
    estimate covers; None when neither a cap nor the request sets one. ``limited_by``: the
    cap that made it shorter than the request allowed, as a phrase for a notice ("" if none).
    """

    id: int
    user: str
    model_id: str
    estimate_usd: Decimal | None
    max_tokens: int | None = None
    limited_by: str = ""


@dataclass(frozen=True)
class CapStatus:
    """One configured cap: ``scope`` "all" or "user", ``period`` "day" or "month"."""

    scope: str
    period: str
    cap: Decimal
    spent: Decimal
    reserved: Decimal
    level: str

    @property
    def committed(self) -> Decimal:
        return self.spent + self.reserved

    @property
    def fraction(self) -> float:
        return float(self.committed / self.cap)

    @property
    def label(self) -> str:
        who = "all users" if self.scope == "all" else "per user"
        return f"{'Daily' if self.period == 'day' else 'Monthly'} cap ({who})"

    @property
    def env(self) -> str:
        middle = "USER_" if self.scope == "user" else ""
        return f"STUDIO_BUDGET_{middle}{'DAILY' if self.period == 'day' else 'MONTHLY'}_USD"


@dataclass(frozen=True)
class BudgetStatus:
    """Where cloud spending stands against the caps: the most pressing cap decides
    ``level`` ("ok" | "warning" from 80 % | "exceeded"), ``message``, ``spent`` and ``cap``
    (None when no cap is set); ``caps`` lists every configured cap for the bars."""

    level: str
    message: str
    spent: Decimal
    cap: Decimal | None
    reserved: Decimal = Decimal(0)
    caps: tuple[CapStatus, ...] = field(default=())


class Budget:
    """Daily and monthly cloud spending caps, overall and per user (the router's ``Budget``).

    ``reserve`` runs under one lock: it adds what the period's requests cost (``usage`` rows
    and finished requests not yet recorded) to the estimates of requests still running, and
    refuses with ``BudgetExceeded`` when this request's estimate would go over a cap;
    otherwise it books the estimate as an open charge. ``settle`` turns the charge into the
    actual cost, ``release`` drops it. One studio process per database is assumed: the lock
    does not reach other processes. Open charges left by a crash are settled at their
    estimate when a ``Budget`` is built.
    """

    def __init__(self, ledger: UsageStore, settings: Settings, *,
                 clock: Clock = local_now) -> None:
        names = ("budget_daily_usd", "budget_monthly_usd", "budget_user_daily_usd",
                 "budget_user_monthly_usd")
        check_non_negative(settings, names)
        self.ledger = ledger
        self.clock = clock
        self._caps = [(scope, period, setting_decimal(value))
                      for scope, period, value in (
                          ("all", "day", settings.budget_daily_usd),
                          ("all", "month", settings.budget_monthly_usd),
                          ("user", "day", settings.budget_user_daily_usd),
                          ("user", "month", settings.budget_user_monthly_usd))
                      if value > 0]
        self._lock = threading.Lock()
        stale = ledger.settle_stale_budget_charges()
        if stale:
            log.warning("%d cloud requests were cut off by the last shutdown; "
                        "counted at their estimate", stale)

    def reserve(self, user: str, model_id: str, estimate_usd: Decimal | None) -> Reservation:
        """Book ``estimate_usd`` (None = unknown, booked as 0) for a request about to go out.

        Raises ``BudgetExceeded`` with a sentence naming the cap when the period's spend plus
        running requests plus this estimate would pass a cap (or a cap is already used up).
        """
        user = user or OWNER
        with self._lock:
            now = self.clock()
            self._refuse_over_cap(user, estimate_usd, now)
            charge = self.ledger.open_budget_charge(
                created_at=utc_stamp(now), day=now.date().isoformat(), user=user,
                model=model_id, estimate_usd=as_float(estimate_usd))
        return Reservation(id=charge, user=user, model_id=model_id, estimate_usd=estimate_usd)

    def reserve_reply(self, user: str, model_id: str, cost: ReplyCost, *,
                      min_tokens: int = MIN_REPLY_TOKENS) -> Reservation:
        """Book a cloud chat request whose reply will be held to what the caps leave room for.

        Under the lock: the reply may be as long as ``cost.max_tokens``, or as the tightest
        cap's remaining money allows at the model's price, whichever is smaller; that is the
        ``max_tokens`` to send and its cost is the estimate booked, so requests sent at once
        cannot together pass a cap even when their replies run to the limit. Raises
        ``BudgetExceeded`` when a cap is used up, or can't pay for the prompt and a reply of
        ``min_tokens`` (or ``cost.max_tokens`` when that is smaller). With unknown prices
        the reply keeps ``cost.max_tokens`` and nothing is booked (0) but a used-up cap.
        """
        user = user or OWNER
        with self._lock:
            now = self.clock()
            caps = self._statuses(user, now)
            tokens, tight = cost.max_tokens, None
            for cap in caps:
                if cap.committed >= cap.cap:
                    raise _refusal(cap, user, Decimal(0))
                fits = cost.tokens_within(cap.cap - cap.committed)
                if fits < tokens:
                    tokens, tight = fits, cap
            shortest = min(min_tokens, cost.max_tokens)
            if tight is not None and tokens < shortest:
                raise _refusal(tight, user, cost.at(max(shortest, 0)) or Decimal(0),
                               reply_tokens=shortest)
            estimate = cost.at(tokens)
            charge = self.ledger.open_budget_charge(
                created_at=utc_stamp(now), day=now.date().isoformat(), user=user,
                model=model_id, estimate_usd=as_float(estimate))
        limited = ""
        if tight is not None:
            left = tight.cap - tight.committed
            limited = f"{_cap_name(tight, user)} ({format_usd(left)} left {_when(tight)})"
        return Reservation(id=charge, user=user, model_id=model_id, estimate_usd=estimate,
                           max_tokens=tokens if caps or cost.asked else None,
                           limited_by=limited)

    def check(self, user: str, estimate_usd: Decimal | None) -> None:
        """Raise ``BudgetExceeded`` when ``reserve`` would refuse this estimate now; books
        nothing (a caller's check before it writes anything)."""
        with self._lock:
            self._refuse_over_cap(user or OWNER, estimate_usd, self.clock())

    def _refuse_over_cap(self, user: str, estimate_usd: Decimal | None, now: datetime) -> None:
        amount = estimate_usd if estimate_usd is not None else Decimal(0)
        for cap in self._statuses(user, now):
            if cap.committed >= cap.cap or cap.committed + amount > cap.cap:
                raise _refusal(cap, user, amount)

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None:
        """The request ran: count ``actual_usd`` (its estimate when None) until the usage row
        for it is recorded. Settling twice, or after release, changes nothing."""
        with self._lock:
            if not self.ledger.settle_budget_charge(reservation.id, as_float(actual_usd)):
                log.warning("budget reservation %s was already closed", reservation.id)

    def release(self, reservation: Reservation) -> None:
        """The request failed before costing anything: drop its reservation."""
        with self._lock:
            self.ledger.release_budget_charge(reservation.id)

    def budget_status(self, user: str = OWNER) -> BudgetStatus:
        """Where ``user`` and everyone together stand against the caps (see ``BudgetStatus``)."""
        caps = self._statuses(user or OWNER, self.clock())
        if not caps:
            return BudgetStatus(level="ok", spent=Decimal(0), cap=None,
                                message="No cloud budget caps are set "
                                        "(STUDIO_BUDGET_DAILY_USD, STUDIO_BUDGET_MONTHLY_USD).")
        worst = max(caps, key=lambda c: (LEVELS.index(c.level), c.fraction))
        return BudgetStatus(level=worst.level, message=_status_message(worst), spent=worst.spent,
                            cap=worst.cap, reserved=worst.reserved, caps=tuple(caps))

    def _statuses(self, user: str, now: datetime) -> list[CapStatus]:
        if not self._caps:
            return []
        today = now.date()
        c = self.ledger.cloud_commitments(user, today=today.isoformat(),
                                         month_start=today.replace(day=1).isoformat())
        figures = {("all", "day"): (c.spent_day, c.reserved_day),
                   ("all", "month"): (c.spent_month, c.reserved_month),
                   ("user", "day"): (c.spent_day_user, c.reserved_day_user),
                   ("user", "month"): (c.spent_month_user, c.reserved_month_user)}
        statuses = []
        for scope, period, cap in self._caps:
            spent, reserved = (as_usd(v) for v in figures[scope, period])
            committed = spent + reserved
            level = ("exceeded" if committed >= cap
                     else "warning" if committed >= cap * WARN_FRACTION else "ok")
            statuses.append(CapStatus(scope, period, cap, spent, reserved, level))
        return statuses


def _when(cap: CapStatus) -> str:
    return "today" if cap.period == "day" else "this month"


def _cap_name(cap: CapStatus, user: str) -> str:
    period = "daily" if cap.period == "day" else "monthly"
    name = f"the {period} cloud budget of {format_usd(cap.cap)}"
    return name if cap.scope == "all" else f"{name} per user (for {user})"


def _refusal(cap: CapStatus, user: str, amount: Decimal, *,
             reply_tokens: int | None = None) -> BudgetExceeded:
    hint = f"Pick a local model, or raise {cap.env} (0 = no cap)."
    name = _cap_name(cap, user)
    if cap.committed >= cap.cap:
        return BudgetExceeded(f"{name[0].upper()}{name[1:]} is used up "
                              f"({format_usd(cap.committed, zero='$0')} spent {_when(cap)}).",
                              hint=hint)
    left = cap.cap - cap.committed
    cost, room = format_usd_apart(amount, left)
    what = ("This request could cost up to" if reply_tokens is None else
            f"Even with a reply of at most {reply_tokens:,} tokens, this request could cost")
    return BudgetExceeded(
        f"{what} {cost}, more than the {room} left of {name} "
        f"({format_usd(cap.committed, zero='$0')} spent or reserved {_when(cap)}).", hint=hint)


def _status_message(cap: CapStatus) -> str:
    name = f"{'Daily' if cap.period == 'day' else 'Monthly'} cloud budget" + (
        "" if cap.scope == "all" else " per user")
    figures = (f"{format_usd(cap.committed, zero='$0')} of {format_usd(cap.cap)} "
               f"spent {_when(cap)}")
    if cap.level == "exceeded":
        return (f"{name} used up: {figures}. Cloud requests are refused, or go to a local "
                "model where a fallback is set.")
    if cap.level == "warning":
        return f"{name} {cap.fraction:.0%} used: {figures}."
    return f"Within budget: {figures} ({name.lower()})."
