"""The audit log: sign-ins and admin actions (who, what, when, from which address), kept
``keep_days`` and readable by admins in Settings. Never a password, token or hash in it.
No gradio imports here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..store.access import AccessStore, stamp
from ..store.db import Store


@dataclass(frozen=True)
class AuditEntry:
    at: str
    user: str
    action: str
    detail: str
    address: str


class Audit:
    def __init__(self, store: Store, *, keep_days: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._rows = AccessStore(store)
        self._keep_s = keep_days * 86400
        self._clock = clock
        self._last_prune = 0.0

    def record(self, user: str, action: str, detail: str = "", address: str = "") -> None:
        now = self._clock()
        self._rows.add_audit(at=stamp(now), user=user or "", action=action,
                             detail=(detail or "")[:500], address=address or "")
        if now - self._last_prune > 3600:  # keep the table to its days without a timer
            self._last_prune = now
            self.prune()

    def recent(self, limit: int = 200, *, user: str | None = None) -> list[AuditEntry]:
        return [AuditEntry(**row) for row in self._rows.audit(limit, user)]

    def prune(self) -> int:
        if self._keep_s <= 0:
            return 0
        return self._rows.delete_audit_before(stamp(self._clock() - self._keep_s))
