"""The access service: sign-in, sessions, roles and file ownership in one place.

The front door (``studio.access.web``) and the event guard (``studio.ui.guard``) ask it
who is calling and whether they may; the Settings tab and the CLI change passwords through
it. Sign-in is on whenever users exist (or the studio is reachable from elsewhere, which
``exposure`` refuses without users), unless STUDIO_NO_AUTH turned it off. Failed sign-ins
are throttled per address and per name. No gradio imports here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InvalidInput
from .audit import Audit
from .sessions import Sessions
from .users import ADMIN, Users
from .web import SignInRefused, netloc

MAX_FAILURES = 5  # failed sign-ins per address (or name) in FAILURE_WINDOW_S before a pause
FAILURE_WINDOW_S = 600.0
WRONG = "Wrong name or password."


class Access:
    """Who is calling, and may they. ``file_owner(path)`` names the user a file of the data
    folder belongs to (None: nobody's, so nobody may read it through the file route)."""

    def __init__(self, users: Users, sessions: Sessions, audit: Audit, *, no_auth: bool,
                 session_days: float, file_owner: Callable[[Path], str | None],
                 origins: Iterable[str] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self.sessions = sessions
        self.audit = audit
        self.no_auth = no_auth
        self._session_s = int(session_days * 86400)
        self._file_owner = file_owner
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._count_cache: tuple[float, int] = (-1e9, 0)
        self._origins = {netloc(o) for o in origins if o.strip()}

    # -- the front door ---------------------------------------------------------------

    def sign_in_required(self) -> bool:
        """On once any user exists (checked every few seconds, so `studio users add` on a
        running studio turns it on), unless STUDIO_NO_AUTH."""
        if self.no_auth:
            return False
        now = self._clock()
        with self._lock:
            checked, count = self._count_cache
            if now - checked > 5.0:
                count = self.users.count()
                self._count_cache = (now, count)
        return count > 0

    def sign_in(self, name: str, password: str, *, address: str = "",
                user_agent: str = "") -> str:
        """A new session token for ``name``; raises ``SignInRefused`` with the sentence to
        show (wrong name or password, or too many failures from here)."""
        keys = (f"addr:{address}", f"name:{name.lower()}")
        wait = self._paused(keys)
        if wait:
            self.audit.record(name, "sign-in refused", "too many failed attempts", address)
            raise SignInRefused(f"Too many failed sign-ins. Try again in {wait} minute"
                                f"{'s' if wait != 1 else ''}.")
        user = self.users.verify(name, password) if name and password else None
        if user is None:
            self._fail(keys)
            self.audit.record(name, "sign-in failed", "", address)
            raise SignInRefused(WRONG)
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
        self.audit.record(user.name, "sign-in", "", address)
        return self.sessions.start(user.name, address=address, user_agent=user_agent[:200])

    def user_for(self, token: str | None) -> str | None:
        if not token:
            return None
        user = self.sessions.user_for(token)
        return user.name if user is not None else None

    def sign_out(self, token: str | None, *, address: str = "") -> None:
        name = self.user_for(token)
        if token:
            self.sessions.end(token)
        if name:
            self.audit.record(name, "sign-out", "", address)

    def session_seconds(self) -> int:
        return self._session_s

    def origin_allowed(self, seen: str) -> bool:
        return seen in self._origins

    def allow_origin(self, url: str) -> None:
        """Also accept requests from ``url``'s site (the share link, once it is known)."""
        if url:
            self._origins.add(netloc(url))

    def may_read_file(self, user: str, path: Path) -> bool:
        owner = self._file_owner(path)
        return owner is not None and owner == user

    # -- roles ------------------------------------------------------------------------

    def role_of(self, name: str | None) -> str | None:
        """"admin", "user", or None (not a user: signed out, or removed meanwhile)."""
        if not self.sign_in_required():
            return ADMIN  # one person at one machine, or the owner chose to run open
        found = self.users.get(name) if name else None
        return found.role if found is not None else None

    def is_admin(self, name: str | None) -> bool:
        return self.role_of(name) == ADMIN

    def change_password(self, name: str, current: str, new: str, repeat: str, *,
                        session: str | None = None) -> None:
        """The signed-in user's own password; their other sessions end, ``session`` (this
        device's token) stays. Raises ``InvalidInput`` with what to fix."""
        if self.users.get(name) is None:
            raise InvalidInput("Passwords can be changed once sign-in is on.",
                               hint="Add users with `studio users add NAME`.")
        if new != repeat:
            raise InvalidInput("The two new passwords differ.", hint="Type the same one twice.")
        if self.users.verify(name, current) is None:
            self.audit.record(name, "password change failed", "wrong current password")
            raise InvalidInput("The current password is wrong.")
        self.users.set_password(name, new, keep_session=session)
        self.audit.record(name, "password changed")

    # -- managing people (admins) -----------------------------------------------------

    def add_user(self, by: str, name: str, password: str, *, admin: bool) -> None:
        """An admin adds someone. Raises ``InvalidInput`` for a bad name or password."""
        user = self.users.add(name, password, admin=admin)
        self.audit.record(by, "add user", f"{user.name} ({user.role})")

    def remove_user(self, by: str, name: str) -> None:
        """An admin removes someone (their sessions end; what they made is kept)."""
        if name == by:
            raise InvalidInput("You can't remove yourself.",
                               hint="Ask another admin, or use `studio users remove` on the server.")
        self.users.remove(name)
        self.audit.record(by, "remove user", name)

    def reset_password(self, by: str, name: str, password: str) -> None:
        """An admin sets someone's password (their sessions end)."""
        self.users.set_password(name, password)
        self.audit.record(by, "set password", name)

    # -- internals --------------------------------------------------------------------

    def _paused(self, keys: tuple[str, ...]) -> int:
        """Minutes to wait when any key has too many recent failures, else 0."""
        now = self._clock()
        with self._lock:
            worst = 0.0
            for key in keys:
                times = self._failures.get(key)
                while times and now - times[0] > FAILURE_WINDOW_S:
                    times.popleft()
                if times and len(times) >= MAX_FAILURES:
                    worst = max(worst, FAILURE_WINDOW_S - (now - times[0]))
        return max(1, math.ceil(worst / 60)) if worst > 0 else 0

    def _fail(self, keys: tuple[str, ...]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:  # a flood of names: start over
                self._failures.clear()
            for key in keys:
                self._failures.setdefault(key, deque(maxlen=MAX_FAILURES * 2)).append(now)
