"""SQL for the cloud features: the cached OpenRouter catalogue and the comparison arena.

``CloudStore`` wraps the studio's ``Store`` (``StoreTables``: each thread's own connection,
writes in ``store.transaction()``, so it is safe to share between threads) and adds the methods
for the tables of migration m006. Callers get plain dataclasses, never rows. What goes in
the tables is decided by ``catalog.py`` and ``arena.py``. No gradio imports here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InvalidInput, StudioError
from .db import StoreTables

ANSWER_FIELDS = ("backend", "answered_by", "status", "error", "content", "thinking",
                 "prompt_tokens", "completion_tokens", "ttft_ms", "tokens_per_s", "total_ms",
                 "cost_usd", "cost_is_estimate")
ANSWER_STATUSES = ("streaming", "complete", "partial", "error")
_PRICE_COLUMNS = ("price_prompt", "price_completion", "price_image", "price_request")


@dataclass(frozen=True)
class CloudModelRow:
    """One cached catalogue entry. Prices are USD per token (image / request) as decimal
    text, ``None`` when unknown."""

    id: str
    name: str
    context_length: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    price_prompt: str | None
    price_completion: str | None
    price_image: str | None
    price_request: str | None
    fetched_at: str


@dataclass(frozen=True)
class ArenaAnswer:
    """One model's answer in a comparison. Figures are ``None`` when not reported."""

    slot: int
    model_id: str
    backend: str
    answered_by: str
    status: str
    error: str
    content: str
    thinking: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    tokens_per_s: float | None
    total_ms: float | None
    cost_usd: float | None
    cost_is_estimate: bool
    updated_at: str


@dataclass(frozen=True)
class ArenaRun:
    """One comparison: the prompt, its answers by slot, and the vote (if any)."""

    id: str
    created_at: str
    user: str
    prompt: str
    system_prompt: str
    options: dict
    blind: bool
    voted_at: str | None
    winner_slot: int | None  # None with voted_at set means a tie
    answers: tuple[ArenaAnswer, ...]

    @property
    def voted(self) -> bool:
        return self.voted_at is not None

    @property
    def model_ids(self) -> list[str]:
        return [a.model_id for a in self.answers]


@dataclass(frozen=True)
class ModelScore:
    """A model's record over the voted comparisons it took part in."""

    model_id: str
    votes: int
    wins: int
    ties: int

    @property
    def losses(self) -> int:
        return self.votes - self.wins - self.ties

    @property
    def win_rate(self) -> float:
        """Wins per vote, ties counting half (0.0 with no votes)."""
        return (self.wins + self.ties / 2) / self.votes if self.votes else 0.0


class CloudStore(StoreTables):
    """The m006 tables, on ``store``'s connections."""

    # -- the model catalogue ----------------------------------------------------------------

    def replace_cloud_models(self, models: Iterable[Mapping[str, Any]]) -> str:
        """Replace the cached catalogue with ``models`` (mappings with ``CloudModelRow``'s
        fields except ``fetched_at``) in one transaction; return the fetch time stamped."""
        rows = []
        for m in models:
            row = {"id": str(m["id"]), "name": str(m.get("name") or m["id"]),
                   "context_length": m.get("context_length"),
                   "input_modalities": json.dumps(list(m.get("input_modalities") or ())),
                   "output_modalities": json.dumps(list(m.get("output_modalities") or ()))}
            for column in _PRICE_COLUMNS:
                value = m.get(column)
                row[column] = None if value is None else str(value)
            rows.append(row)
        with self.store.transaction():
            fetched_at = self.store._now()
            self.db.execute("DELETE FROM cloud_models")
            for row in rows:
                row["fetched_at"] = fetched_at
                self.db.execute(
                    f"INSERT OR REPLACE INTO cloud_models ({', '.join(row)}) "
                    f"VALUES ({', '.join(':' + name for name in row)})", row)
        return fetched_at

    def cloud_models(self) -> list[CloudModelRow]:
        """The cached catalogue, by id ([] when never fetched)."""
        rows = self.store._select("SELECT * FROM cloud_models ORDER BY id")
        return [CloudModelRow(
            **{**row, "input_modalities": tuple(json.loads(row["input_modalities"])),
               "output_modalities": tuple(json.loads(row["output_modalities"]))})
            for row in rows]

    # -- the arena ----------------------------------------------------------------------

    def create_arena_run(self, prompt: str, model_ids: Sequence[str], *, system_prompt: str = "",
                         options: Mapping[str, Any] | None = None, blind: bool = False,
                         user: str = "owner") -> ArenaRun:
        """Insert a comparison with one 'streaming' answer per model (slot = list position)."""
        run = {"id": uuid.uuid4().hex, "user": user, "prompt": prompt,
               "system_prompt": system_prompt, "options": json.dumps(dict(options or {})),
               "blind": int(bool(blind))}
        with self.store.transaction():
            run["created_at"] = now = self.store._now()
            self.db.execute(f"INSERT INTO arena_runs ({', '.join(run)}) "
                            f"VALUES ({', '.join(':' + name for name in run)})", run)
            for slot, model_id in enumerate(model_ids):
                self.db.execute(
                    "INSERT INTO arena_answers (run_id, slot, model_id, updated_at) "
                    "VALUES (?, ?, ?, ?)", [run["id"], slot, model_id, now])
            return self._run(run["id"])  # type: ignore[return-value]

    def update_arena_answer(self, run_id: str, slot: int, **fields: Any) -> None:
        """Change any of ``ANSWER_FIELDS`` of one answer. Raises ``TypeError`` for an unknown
        field, ``ValueError`` for an unknown status, ``StudioError`` when the answer is gone."""
        unknown = sorted(set(fields) - set(ANSWER_FIELDS))
        if unknown:
            raise TypeError(f"update_arena_answer() got unknown field(s): {', '.join(unknown)}")
        if "status" in fields and fields["status"] not in ANSWER_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ANSWER_STATUSES)} "
                             f"(got {fields['status']!r})")
        values = dict(fields)
        if "cost_is_estimate" in values:
            values["cost_is_estimate"] = int(bool(values["cost_is_estimate"]))
        with self.store.transaction():
            values["updated_at"] = self.store._now()
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            cursor = self.db.execute(
                f"UPDATE arena_answers SET {assignments} WHERE run_id = :run_id AND slot = :slot",
                {**values, "run_id": run_id, "slot": slot})
        if cursor.rowcount == 0:
            raise StudioError(f"Comparison {run_id} has no answer {slot} (any more).",
                              hint="It may have been deleted meanwhile; nothing was saved.")

    def arena_run(self, run_id: str) -> ArenaRun | None:
        with self.store.snapshot():
            return self._run(run_id)

    def arena_runs(self, *, limit: int = 50, offset: int = 0,
                   user: str | None = None) -> list[ArenaRun]:
        """Comparisons, newest first, with their answers."""
        where, params = ("WHERE user = ?", [user]) if user is not None else ("", [])
        with self.store.snapshot():  # each run with its answers as they were
            runs = self.store._select(
                f"SELECT * FROM arena_runs {where} ORDER BY created_at DESC, rowid DESC "
                "LIMIT ? OFFSET ?", [*params, limit, offset])
            ids = [r["id"] for r in runs]
            marks = ", ".join("?" for _ in ids) or "NULL"
            answers = self.store._select(
                f"SELECT * FROM arena_answers WHERE run_id IN ({marks}) ORDER BY slot", ids)
        by_run: dict[str, list[dict]] = {}
        for a in answers:
            by_run.setdefault(a["run_id"], []).append(a)
        return [_to_run(r, by_run.get(r["id"], [])) for r in runs]

    def vote_arena(self, run_id: str, winner_slot: int | None) -> ArenaRun:
        """Record the owner's verdict once: the winning slot, or ``None`` for a tie.

        Raises ``StudioError`` for an unknown run, ``InvalidInput`` for a slot the run
        doesn't have or a run already voted on.
        """
        with self.store.transaction():
            run = self._run(run_id)
            if run is None:
                raise StudioError(f"Comparison {run_id} no longer exists.",
                                  hint="Pick one from the list of past comparisons.")
            if run.voted:
                raise InvalidInput("This comparison already has a vote.",
                                   hint="Each comparison is voted on once; run a new one.")
            if winner_slot is not None and winner_slot not in {a.slot for a in run.answers}:
                raise InvalidInput(f"This comparison has no answer {winner_slot + 1}.")
            self.db.execute("UPDATE arena_runs SET voted_at = ?, winner_slot = ? WHERE id = ?",
                            [self.store._now(), winner_slot, run_id])
            return self._run(run_id)  # type: ignore[return-value]

    def delete_arena_run(self, run_id: str) -> None:
        """Delete a comparison and its answers (a missing one is a no-op)."""
        with self.store.transaction():
            self.db.execute("DELETE FROM arena_runs WHERE id = ?", [run_id])

    def arena_scores(self, *, user: str | None = None) -> list[ModelScore]:
        """Each model's votes, wins and ties over voted comparisons (``user``'s only, when
        given); best record first."""
        mine, params = ("AND r.user = ?", [user]) if user is not None else ("", [])
        rows = self.db.execute(f"""
            SELECT a.model_id, count(*) AS votes,
                   total(r.winner_slot = a.slot) AS wins,
                   total(r.winner_slot IS NULL) AS ties
            FROM arena_answers a JOIN arena_runs r ON r.id = a.run_id
            WHERE r.voted_at IS NOT NULL {mine}
            GROUP BY a.model_id""", params).fetchall()
        scores = [ModelScore(model_id=m, votes=int(v), wins=int(w), ties=int(t))
                  for m, v, w, t in rows]
        return sorted(scores, key=lambda s: (-s.win_rate, -s.wins, -s.votes, s.model_id))

    def mark_interrupted_arena(self, reason: str) -> int:
        """At start-up: answers still 'streaming' were cut off by a restart. Mark them
        'partial' (or 'error' when empty) with ``error=reason``; return how many."""
        with self.store.transaction():
            return self.db.execute(
                "UPDATE arena_answers SET status = CASE WHEN content = '' THEN 'error' "
                "ELSE 'partial' END, error = ?, updated_at = ? WHERE status = 'streaming'",
                [reason, self.store._now()]).rowcount

    # -- helpers ------------------------------------------------

    def _run(self, run_id: str) -> ArenaRun | None:
        runs = self.store._select("SELECT * FROM arena_runs WHERE id = ?", [run_id])
        if not runs:
            return None
        answers = self.store._select(
            "SELECT * FROM arena_answers WHERE run_id = ? ORDER BY slot", [run_id])
        return _to_run(runs[0], answers)


def _to_run(row: dict, answers: list[dict]) -> ArenaRun:
    return ArenaRun(
        id=row["id"], created_at=row["created_at"], user=row["user"], prompt=row["prompt"],
        system_prompt=row["system_prompt"], options=json.loads(row["options"]),
        blind=bool(row["blind"]), voted_at=row["voted_at"], winner_slot=row["winner_slot"],
        answers=tuple(_to_answer(a) for a in answers))


def _to_answer(row: dict) -> ArenaAnswer:
    return ArenaAnswer(**{name: row[name] for name in ArenaAnswer.__dataclass_fields__
                          if name != "cost_is_estimate"},
                       cost_is_estimate=bool(row["cost_is_estimate"]))
