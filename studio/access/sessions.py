"""Sign-in sessions: a random token in the browser's cookie, only its SHA-256 in SQLite, so
sessions survive a restart and a copy of the database signs nobody in. No gradio imports."""

from __future__ import annotations

import secrets
import time
from typing import Callable

from ..store.access import AccessStore, seconds_of, stamp, token_hash
from ..store.db import Store
from .users import User

TOUCH_EVERY_S = 60.0  # last_seen is written at most this often per session


class Sessions:
    def __init__(self, store: Store, *, lifetime_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._rows = AccessStore(store)
        self._lifetime = lifetime_s
        self._clock = clock

    def start(self, user_name: str, *, address: str = "", user_agent: str = "") -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._rows.add_session(token_hash(token), user_name, created_at=stamp(now),
                               expires_at=stamp(now + self._lifetime), address=address,
                               user_agent=user_agent)
        return token

    def user_for(self, token: str | None) -> User | None:
        """The session's user; None when the token is unknown or expired or the user gone."""
        if not token:
            return None
        key = token_hash(token)
        row = self._rows.session(key)
        now = self._clock()
        if row is None:
            return None
        if row["expires_at"] <= stamp(now):
            self._rows.delete_session(key)
            return None
        if seconds_of(row["last_seen"]) < now - TOUCH_EVERY_S:
            self._rows.touch_session(key, stamp(now))
        return User(row["user"], row["role"])

    def end(self, token: str) -> None:
        self._rows.delete_session(token_hash(token))

    def end_all(self, user_name: str) -> int:
        return self._rows.delete_sessions(user_name)

    def prune(self) -> int:
        return self._rows.delete_expired_sessions(stamp(self._clock()))
