"""The usage ledger and the budget charges: what replies and image jobs cost, and the cloud
requests still running.

``UsageStore`` wraps the studio's ``Store`` (``StoreTables``, safe to share between handler
and generation threads like the Store itself) and adds the methods
for the ``usage`` and ``budget_charges`` tables (migration m003). What goes in them
is decided by ``costs/accounting.py`` and ``costs/budget.py``. Callers get plain dataclasses,
never rows. No gradio imports here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .db import StoreTables, _reject_unknown

USAGE_FIELDS = ("created_at", "day", "user", "backend", "model", "kind", "prompt_tokens",
                "completion_tokens", "images", "duration_s", "cost_usd", "cost_is_estimate",
                "energy_kwh", "energy_cost", "gpu_watts", "conversation_id", "message_id",
                "job_id", "via", "source", "generation_id")
_USAGE_SUMS = """count(*) AS requests, total(prompt_tokens) AS prompt_tokens,
    total(completion_tokens) AS completion_tokens, total(images) AS images,
    total(duration_s) AS duration_s, total(cost_usd) AS cost_usd,
    total(energy_kwh) AS energy_kwh, total(energy_cost) AS energy_cost,
    total(cost_is_estimate) AS estimated, total(cost_usd IS NULL) AS unknown_cost"""


@dataclass(frozen=True)
class UsageRecord:
    """One accounted reply or image job (a row of ``usage``). ``None`` = not reported."""

    id: int
    created_at: str
    day: str
    user: str
    backend: str
    model: str
    kind: str
    prompt_tokens: int | None
    completion_tokens: int | None
    images: int | None
    duration_s: float | None
    cost_usd: float | None
    cost_is_estimate: bool
    energy_kwh: float | None
    energy_cost: float | None
    gpu_watts: float | None
    conversation_id: str | None
    message_id: int | None
    job_id: str | None
    via: str = ""  # "" from a page, "api: <key name>" through /v1
    source: str = "chat"  # what it was for: "chat", "arena", "images" or "api"
    generation_id: str | None = None  # the cloud's id for the reply ("gen-…")


@dataclass(frozen=True)
class UsageSums:
    """Totals over some usage rows. Sums of unreported figures count as 0; ``unknown_cost``
    says how many rows had no cost at all, ``estimated`` how many had an estimated one."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    duration_s: float = 0.0
    cost_usd: float = 0.0
    energy_kwh: float = 0.0
    energy_cost: float = 0.0
    estimated: int = 0
    unknown_cost: int = 0


@dataclass(frozen=True)
class CloudCommitments:
    """Cloud spending in the current day and month, overall and for one user.

    ``spent_*`` is what requests cost (usage rows plus finished requests whose row isn't
    written yet); ``reserved_*`` the estimates of requests still running.
    """

    spent_day: float
    spent_month: float
    spent_day_user: float
    spent_month_user: float
    reserved_day: float
    reserved_month: float
    reserved_day_user: float
    reserved_month_user: float


class UsageStore(StoreTables):
    """The ``usage`` and ``budget_charges`` tables, on ``store``'s connections."""

    # Usage (written by accounting.py)

    def add_usage(self, row: Mapping[str, Any], *, charge_model: str | None = None) -> int:
        """Insert one usage row (keys from ``USAGE_FIELDS``) and return its id.

        With ``charge_model`` (a cloud reply's ``backend:model`` id) the user's oldest settled
        budget charge, preferring one for that model, is deleted in the same transaction:
        the row now carries that cost. Raises ``TypeError`` for unknown keys.
        """
        _reject_unknown("add_usage", row, USAGE_FIELDS)
        values = dict(row)
        with self.store.transaction():
            cursor = self.db.execute(
                f"INSERT INTO usage ({', '.join(values)}) "
                f"VALUES ({', '.join(':' + name for name in values)})", values)
            if charge_model is not None:
                self._take_charge(values.get("user", "owner"), charge_model)
            return cursor.lastrowid

    def set_usage_cost(self, row_id: int, cost_usd: float, *, charge_model: str) -> bool:
        """The cloud said what the reply of row ``row_id`` cost: store it as reported (no
        longer an estimate). A row that had no cost at all also takes over its request's
        settled budget charge now, as ``add_usage`` does for one that came with a cost.
        False when the row is gone or its cost was already reported."""
        with self.store.transaction():
            row = self.db.execute("SELECT user, cost_usd FROM usage WHERE id = ? AND "
                                  "cost_is_estimate = 1", [row_id]).fetchone()
            if row is None:
                return False
            self.db.execute("UPDATE usage SET cost_usd = ?, cost_is_estimate = 0 WHERE id = ?",
                            [cost_usd, row_id])
            if row[1] is None:
                self._take_charge(row[0], charge_model)
            return True

    def usage_awaiting_cost(self, since_day: str) -> list[UsageRecord]:
        """Rows since ``since_day`` whose cost is still an estimate and that have a
        generation id to ask the cloud about, oldest first."""
        rows = self.store._select(
            "SELECT * FROM usage WHERE day >= ? AND cost_is_estimate = 1 AND "
            "generation_id IS NOT NULL ORDER BY id", [since_day])
        return [_to_usage(row) for row in rows]

    def _take_charge(self, user: str, charge_model: str) -> None:
        # The user's oldest settled charge, preferring one for that model: the row now
        # carries that cost (see budget_charges in m003).
        self.db.execute(
            "DELETE FROM budget_charges WHERE id = (SELECT id FROM budget_charges "
            "WHERE user = ? AND state = 'settled' ORDER BY model = ? DESC, id LIMIT 1)",
            [user, charge_model])

    def usage_sums(self, since: Mapping[str, str], *, user: str | None = None
                   ) -> dict[str, UsageSums]:
        """Totals of the rows from each day in ``since`` (name -> 'YYYY-MM-DD') up to now,
        in one pass: ``usage_sums({"today": "2025-01-31", "month": "2025-01-01"})``."""
        if not since:
            return {}
        names = list(since)
        params: dict[str, Any] = {f"s{i}": since[name] for i, name in enumerate(names)}
        params["first"] = min(since.values())
        columns = []
        for i in range(len(names)):
            cond = f"day >= :s{i}"
            columns += [
                f"total(CASE WHEN {cond} THEN 1 END)",
                f"total(CASE WHEN {cond} THEN prompt_tokens END)",
                f"total(CASE WHEN {cond} THEN completion_tokens END)",
                f"total(CASE WHEN {cond} THEN images END)",
                f"total(CASE WHEN {cond} THEN duration_s END)",
                f"total(CASE WHEN {cond} THEN cost_usd END)",
                f"total(CASE WHEN {cond} THEN energy_kwh END)",
                f"total(CASE WHEN {cond} THEN energy_cost END)",
                f"total(CASE WHEN {cond} THEN cost_is_estimate END)",
                f"total(CASE WHEN {cond} AND cost_usd IS NULL THEN 1 END)",
            ]
        where = "day >= :first"
        if user is not None:
            where += " AND user = :user"
            params["user"] = user
        values = self.db.execute(f"SELECT {', '.join(columns)} FROM usage WHERE {where}",
                                 params).fetchone()
        width = len(columns) // len(names)
        return {name: _to_sums(values[i * width:(i + 1) * width])
                for i, name in enumerate(names)}

    def usage_by_day(self, start_day: str, end_day: str, *, user: str | None = None
                     ) -> list[tuple[str, UsageSums]]:
        """(day, totals) for each day between the two (inclusive) that has rows, oldest first."""
        return [(row[0], _to_sums(row[1:])) for row in self._grouped(
            "day", "day", start_day, end_day, user=user)]

    def usage_by_model(self, start_day: str, end_day: str, *, user: str | None = None
                       ) -> list[tuple[str, str, UsageSums]]:
        """(backend, model, totals) for the days between the two (inclusive), costliest first."""
        return [(row[0], row[1], _to_sums(row[2:])) for row in self._grouped(
            "backend, model", "cost_usd DESC, energy_cost DESC, requests DESC, backend, model",
            start_day, end_day, user=user)]

    def usage_by_source(self, start_day: str, end_day: str, *, user: str | None = None
                        ) -> list[tuple[str, UsageSums]]:
        """(source, totals) for the days between the two (inclusive), costliest first."""
        return [(row[0], _to_sums(row[1:])) for row in self._grouped(
            "source", "cost_usd DESC, energy_cost DESC, source", start_day, end_day,
            user=user)]

    def usage_by_user(self, start_day: str, end_day: str) -> list[tuple[str, UsageSums]]:
        """(user, totals) for the days between the two (inclusive), costliest first."""
        return [(row[0], _to_sums(row[1:])) for row in self._grouped(
            "user", "cost_usd DESC, energy_cost DESC, user", start_day, end_day)]

    def usage_local_chat_sums(self, start_day: str, end_day: str, *,
                              exclude_backends: Iterable[str], user: str | None = None
                              ) -> tuple[UsageSums, int]:
        """Totals of chat replies not from ``exclude_backends`` (the cloud ones) between the
        days (inclusive), and how many of them reported no token counts."""
        excluded = sorted(set(exclude_backends))
        marks = ", ".join("?" for _ in excluded) or "NULL"
        params: list[Any] = [start_day, end_day, *excluded]
        where = f"day BETWEEN ? AND ? AND kind = 'chat' AND backend NOT IN ({marks})"
        if user is not None:
            where += " AND user = ?"
            params.append(user)
        row = self.db.execute(
            f"SELECT {_USAGE_SUMS}, total(prompt_tokens IS NULL OR completion_tokens IS NULL) "
            f"FROM usage WHERE {where}", params).fetchone()
        return _to_sums(row[:-1]), int(row[-1])

    def usage_records(self, *, backend: str | None = None, model_contains: str | None = None,
                      user: str | None = None, start_day: str | None = None,
                      end_day: str | None = None, limit: int | None = 100,
                      before_id: int | None = None, source: str | None = None
                      ) -> list[UsageRecord]:
        """Usage rows matching every filter given, newest first (by id). ``model_contains``
        matches part of the model name, ignoring case; days are inclusive. ``before_id``
        pages on: the rows older than that id. ``limit=None`` returns them all."""
        clauses, params = [], []
        for clause, value in (("backend = ?", backend), ("user = ?", user),
                              ("source = ?", source),
                              ("day >= ?", start_day), ("day <= ?", end_day),
                              ("id < ?", before_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if model_contains:
            escaped = (model_contains.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            clauses.append("model LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
            params.append(limit)
        rows = self.store._select(f"SELECT * FROM usage {where} ORDER BY id DESC{tail}", params)
        return [_to_usage(row) for row in rows]

    # Budget charges (see m003 for what they are)

    def open_budget_charge(self, *, created_at: str, day: str, user: str, model: str,
                           estimate_usd: float | None) -> int:
        """Record a cloud request about to go out, at its estimated cost; return the id."""
        with self.store.transaction():
            return self.db.execute(
                "INSERT INTO budget_charges (created_at, day, user, model, state, estimate_usd) "
                "VALUES (?, ?, ?, ?, 'open', ?)",
                [created_at, day, user, model, estimate_usd]).lastrowid

    def settle_budget_charge(self, charge_id: int, actual_usd: float | None) -> bool:
        """Mark an open charge finished at ``actual_usd`` (its estimate when None). False if
        it wasn't open (already settled or released)."""
        with self.store.transaction():
            return self.db.execute(
                "UPDATE budget_charges SET state = 'settled', "
                "actual_usd = coalesce(?, estimate_usd, 0) WHERE id = ? AND state = 'open'",
                [actual_usd, charge_id]).rowcount > 0

    def release_budget_charge(self, charge_id: int) -> bool:
        """Drop an open charge (the request failed before costing anything)."""
        with self.store.transaction():
            return self.db.execute("DELETE FROM budget_charges WHERE id = ? AND state = 'open'",
                                   [charge_id]).rowcount > 0

    def settle_stale_budget_charges(self) -> int:
        """At start-up: charges still open were cut off by a restart and may have been billed.
        Settle them at their estimate (the cautious guess); return how many."""
        with self.store.transaction():
            return self.db.execute(
                "UPDATE budget_charges SET state = 'settled', "
                "actual_usd = coalesce(estimate_usd, 0) WHERE state = 'open'").rowcount

    def cloud_commitments(self, user: str, *, today: str, month_start: str) -> CloudCommitments:
        """What cloud requests cost or may cost this day and month, overall and for ``user``.

        Reads ``usage`` and ``budget_charges`` under the store's lock, and ``add_usage``
        swaps a settled charge for its usage row in one transaction, and the three sums read one
        snapshot, so a cost is never seen twice or not at all.
        """
        sums = """total(CASE WHEN day >= :today THEN {v} END), total({v}),
                  total(CASE WHEN day >= :today AND user = :user THEN {v} END),
                  total(CASE WHEN user = :user THEN {v} END)"""
        params = {"today": today, "month": month_start, "user": user}
        with self.store.snapshot():
            used = self.db.execute(f"SELECT {sums.format(v='cost_usd')} FROM usage "
                                   "WHERE day >= :month", params).fetchone()
            settled = self.db.execute(f"SELECT {sums.format(v='actual_usd')} FROM budget_charges "
                                      "WHERE day >= :month AND state = 'settled'",
                                      params).fetchone()
            reserved = self.db.execute(f"SELECT {sums.format(v='estimate_usd')} "
                                       "FROM budget_charges WHERE day >= :month "
                                       "AND state = 'open'", params).fetchone()
        spent = [a + b for a, b in zip(used, settled)]
        return CloudCommitments(*spent, *reserved)

    def _grouped(self, keys: str, order: str, start_day: str, end_day: str, *,
                 user: str | None = None) -> list[tuple]:
        params: list[Any] = [start_day, end_day]
        where = "day BETWEEN ? AND ?"
        if user is not None:
            where += " AND user = ?"
            params.append(user)
        return self.db.execute(
            f"SELECT {keys}, {_USAGE_SUMS} FROM usage WHERE {where} "
            f"GROUP BY {keys} ORDER BY {order}", params).fetchall()


def _to_usage(row: dict) -> UsageRecord:
    return UsageRecord(**{**row, "cost_is_estimate": bool(row["cost_is_estimate"])})


def _to_sums(values: Iterable[Any]) -> UsageSums:
    (requests, prompt_tokens, completion_tokens, images, duration_s, cost_usd, energy_kwh,
     energy_cost, estimated, unknown_cost) = values
    return UsageSums(requests=int(requests), prompt_tokens=int(prompt_tokens),
                     completion_tokens=int(completion_tokens), images=int(images),
                     duration_s=duration_s, cost_usd=cost_usd, energy_kwh=energy_kwh,
                     energy_cost=energy_cost, estimated=int(estimated),
                     unknown_cost=int(unknown_cost))
