"""API keys: per user, shown once when made, kept only as a SHA-256, revocable. A request
with a key acts as its user (their limits, budgets and usage). No gradio imports here."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from ..errors import InvalidInput
from ..store.access import AccessStore, token_hash
from ..store.db import Store

PREFIX = "hs-"
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str  # the first characters, to tell keys apart
    created_at: str
    last_used: str | None
    revoked: bool


class ApiKeys:
    def __init__(self, store: Store):
        self._rows = AccessStore(store)
        self._touched: dict[int, float] = {}

    def create(self, user: str, name: str) -> tuple[ApiKey, str]:
        """A new key for ``user``: (its record, the key itself, shown this once only)."""
        name = (name or "").strip()[:60]
        if not name:
            raise InvalidInput("Give the key a name (what uses it: 'laptop', 'home assistant').")
        secret = PREFIX + secrets.token_urlsafe(32)
        key_id = self._rows.add_key(user=user, name=name, key_hash=token_hash(secret),
                                    prefix=secret[:10])
        return next(k for k in self.list(user) if k.id == key_id), secret

    def list(self, user: str) -> list[ApiKey]:
        return [ApiKey(r["id"], r["name"], r["prefix"], r["created_at"], r["last_used"],
                       r["revoked_at"] is not None) for r in self._rows.keys(user)]

    def revoke(self, user: str, key_id: int) -> bool:
        """Revoke one of ``user``'s keys; False when it isn't theirs or already revoked."""
        return self._rows.revoke_key(user, key_id)

    def user_for(self, secret: str | None) -> tuple[str, str] | None:
        """(user, key name) for a live key, else None."""
        if not secret:
            return None
        found = self._rows.key_owner(token_hash(secret))
        if found is None:
            return None
        key_id, user, name = found
        now = time.monotonic()
        if now - self._touched.get(key_id, -1e9) > TOUCH_EVERY_S:
            self._touched[key_id] = now
            self._rows.touch_key(key_id)
        return user, name
