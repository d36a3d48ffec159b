"""Per-user limits: chat requests per minute, tokens per day, images per hour, and replies
being written at once. Each check books what it lets through in the same step, under one
lock, so a burst of simultaneous requests lets exactly the allowed number pass. A refusal
names the limit and when it resets. Admins are not limited. No gradio imports here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import datetime
from typing import Callable

from ..errors import LimitReached

MINUTE, HOUR = 60.0, 3600.0
ROLE_MEMORY_S = 10.0  # who is exempt (an admin) is asked of the store at most this often


class Limits:
    """``tokens_today(user)`` gives (tokens used today, when today ends); ``exempt(user)``
    says who is not limited (admins). A limit of 0 is no limit."""

    def __init__(self, *, chat_per_minute: int = 0, tokens_per_day: int = 0,
                 images_per_hour: int = 0, concurrent_replies: int = 0,
                 tokens_today: Callable[[str], tuple[int, datetime]] | None = None,
                 exempt: Callable[[str], bool] = lambda user: False,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = datetime.now) -> None:
        self.chat_per_minute = chat_per_minute
        self.tokens_per_day = tokens_per_day
        self.images_per_hour = images_per_hour
        self.concurrent_replies = concurrent_replies
        self._tokens_today = tokens_today
        self._exempt = exempt
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._roles: dict[str, tuple[float, bool]] = {}  # user -> (until, exempt)
        self._chats: dict[str, deque[float]] = {}
        self._images: dict[str, deque[tuple[float, int]]] = {}
        self._replies: dict[str, int] = {}

    def needs_store(self, user: str) -> bool:
        """Whether admitting ``user``'s next chat reads the store (their role not known
        lately, or a daily token limit to count): callers on an event loop then admit on a
        worker thread, so a busy store never stalls the loop."""
        with self._lock:
            known = self._roles.get(user)
            fresh = known is not None and known[0] > self._clock()
        return not fresh or bool(self.tokens_per_day and self._tokens_today is not None
                                 and not known[1])

    def _is_exempt(self, user: str) -> bool:
        """``exempt(user)``, remembered for ``ROLE_MEMORY_S`` (a new admin's limits lift
        within seconds; every request no longer asks the store)."""
        now = self._clock()
        with self._lock:
            known = self._roles.get(user)
            if known is not None and known[0] > now:
                return known[1]
        exempt = bool(self._exempt(user))
        with self._lock:
            self._roles[user] = (now + ROLE_MEMORY_S, exempt)
        return exempt

    def admit_chat(self, user: str) -> Callable[[], None]:
        """Book one chat request and one reply slot; returns what frees the slot when the
        reply ends. Raises ``LimitReached`` (nothing booked) when a limit says no."""
        if self._is_exempt(user):
            return _nothing
        used = None
        if self.tokens_per_day and self._tokens_today is not None:
            used, day_ends = self._tokens_today(user)  # a query: outside the lock
        with self._lock:
            now = self._clock()
            if self.chat_per_minute:
                times = self._chats.setdefault(user, deque())
                while times and now - times[0] >= MINUTE:
                    times.popleft()
                if len(times) >= self.chat_per_minute:
                    wait = MINUTE - (now - times[0])
                    raise LimitReached(
                        f"You have sent {len(times)} chat messages in the last minute, the "
                        f"limit (STUDIO_LIMIT_CHAT_PER_MINUTE); try again in {_seconds(wait)}.",
                        retry_after=wait)
            if used is not None and used >= self.tokens_per_day:
                left = (day_ends - self._now(day_ends.tzinfo)).total_seconds()
                raise LimitReached(
                    f"You have used {used:,} tokens today; the limit is "
                    f"{self.tokens_per_day:,} a day (STUDIO_LIMIT_TOKENS_PER_DAY). It resets "
                    f"at midnight (in {_duration(left)}).", retry_after=left)
            running = self._replies.get(user, 0)
            if self.concurrent_replies and running >= self.concurrent_replies:
                raise LimitReached(
                    f"{running} of your replies are still being written; the limit is "
                    f"{self.concurrent_replies} at once (STUDIO_LIMIT_CONCURRENT_REPLIES).",
                    hint="Wait for one to finish, or press Stop.", retry_after=5)
            if self.chat_per_minute:
                self._chats[user].append(now)
            self._replies[user] = running + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                left = self._replies.get(user, 1) - 1
                if left > 0:
                    self._replies[user] = left
                else:
                    self._replies.pop(user, None)

        return release

    def admit_images(self, user: str, count: int) -> None:
        """Book ``count`` images for ``user``; raises ``LimitReached`` (nothing booked) when
        they would pass the hourly limit."""
        if not self.images_per_hour or self._is_exempt(user):
            return
        with self._lock:
            now = self._clock()
            made = self._images.setdefault(user, deque())
            while made and now - made[0][0] >= HOUR:
                made.popleft()
            done = sum(n for _, n in made)
            if done + count > self.images_per_hour:
                wait = HOUR - (now - made[0][0]) if made else HOUR
                left = max(0, self.images_per_hour - done)
                raise LimitReached(
                    f"This job would make {count} image{'s' if count != 1 else ''}; you have "
                    f"{left} of {self.images_per_hour} left this hour "
                    f"(STUDIO_LIMIT_IMAGES_PER_HOUR). More are allowed in {_duration(wait)}.",
                    hint="Make fewer images per job, or wait." if count > left else "",
                    retry_after=wait)
            made.append((now, count))


def _nothing() -> None:
    pass


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value))} s"


def _duration(seconds: float) -> str:
    """'3 h 12 min', '14 min', '40 s'."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
