"""Costs the cloud reports late: a reply whose stream ended without a usage report (cut off,
stopped, a proxy that sends none) is billed all the same, so its cost is asked for by its
generation id (OpenRouter's ``GET /generation?id=``) after the reply has been recorded.

``GenerationCosts.ask(row_id, generation_id, model_id)`` queues a usage row; one worker
thread asks ``lookup`` at growing intervals (OpenRouter answers 404 for a few seconds after a
completion) and stores the answer with ``UsageStore.set_usage_cost``. Until then the row is
marked as an estimate. ``resume`` picks up, at start-up, the rows a restart left waiting.
No gradio imports here; nothing runs at import time (the thread starts on the first ask).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable, Sequence

from ..errors import StudioError
from ..store.usage import UsageStore

log = logging.getLogger(__name__)

# Seconds to wait before each question: OpenRouter stores a generation a few seconds after
# it ends (protocols.md 3.7); after the last one the row stays an estimate.
DELAYS = (2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)

Lookup = Callable[[str], "float | None"]


@dataclass(order=True)
class _Question:
    due: float
    row_id: int = field(compare=False)
    generation_id: str = field(compare=False)
    model_id: str = field(compare=False)
    attempt: int = field(default=0, compare=False)


class GenerationCosts:
    """Asks the cloud what replies cost when their stream didn't say (see the module doc).

    ``lookup(generation_id)`` returns the USD cost, None while it isn't known yet, or raises
    ``StudioError``; both are asked again later. ``delays`` and ``clock`` are injectable so
    tests don't wait. ``on_answer(row_id, cost_or_None)`` is called once per row when it is
    settled or given up (tests and metrics follow it).
    """

    def __init__(self, ledger: UsageStore, lookup: Lookup, *,
                 delays: Sequence[float] = DELAYS,
                 clock: Callable[[], float] = time.monotonic,
                 on_answer: Callable[[int, "float | None"], None] | None = None) -> None:
        self.ledger = ledger
        self.lookup = lookup
        self.delays = tuple(delays)
        self.clock = clock
        self.on_answer = on_answer
        self._queue: list[_Question] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def ask(self, row_id: int, generation_id: str, model_id: str) -> None:
        """Ask, soon, what the reply of usage row ``row_id`` cost (its ``generation_id``;
        ``model_id`` is its ``backend:model``, for the budget charge the row takes over)."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._queue, _Question(self.clock() + self.delays[0], row_id,
                                                  generation_id, model_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="generation-costs")
                self._thread.start()
            self._cond.notify()

    def resume(self, today: date, *, days: int = 2) -> int:
        """Queue the rows of the last ``days`` days still waiting for their cost (a restart
        came between the reply and the answer); return how many."""
        rows = self.ledger.usage_awaiting_cost((today - timedelta(days=days)).isoformat())
        for row in rows:
            self.ask(row.id, row.generation_id, f"{row.backend}:{row.model}")
        return len(rows)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                        not self._queue or self._queue[0].due > self.clock()):
                    wait = self._queue[0].due - self.clock() if self._queue else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                question = heapq.heappop(self._queue)
            self._answer(question)

    def _answer(self, question: _Question) -> None:
        try:
            cost = self.lookup(question.generation_id)
        except StudioError as err:
            log.info("asking the cost of %s failed: %s", question.generation_id, err)
            cost = None
        except Exception:  # noqa: BLE001 - the worker must outlive one bad answer
            log.exception("asking the cost of %s failed", question.generation_id)
            cost = None
        if cost is not None:
            self.ledger.set_usage_cost(question.row_id, cost, charge_model=question.model_id)
            self._answered(question.row_id, cost)
            return
        question.attempt += 1
        if question.attempt >= len(self.delays):
            log.warning("no cost came for %s; usage row %d stays an estimate",
                        question.generation_id, question.row_id)
            self._answered(question.row_id, None)
            return
        question.due = self.clock() + self.delays[question.attempt]
        with self._cond:
            heapq.heappush(self._queue, question)

    def _answered(self, row_id: int, cost: float | None) -> None:
        if self.on_answer is not None:
            try:
                self.on_answer(row_id, cost)
            except Exception:  # noqa: BLE001
                log.exception("on_answer hook failed")
