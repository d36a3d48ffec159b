"""Work that runs on the server and is followed by pages: chat replies, image jobs, Ollama
pulls and file downloads all build on what is here.

``Live`` is the state of one piece of such work: a worker thread changes it under ``cond``
and calls ``notify()``, which moves ``version`` up; pages follow it with ``wait_newer`` and
read ``snapshot()`` (each kind says what its snapshot holds). ``finished`` is the moment it
ended. ``Registry`` keeps live items by id and forgets finished ones after a while;
``wait_any`` blocks until one of several items or registries changed.

Knows nothing about what the work is. No gradio imports here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Protocol, TypeVar

from .errors import InvalidInput


@dataclass(kw_only=True, eq=False)
class Live:
    """One piece of work in progress. Change its state with ``change(**updates)``, or
    under ``cond`` followed by ``notify()``; subclasses say what a follower sees in
    ``_snapshot_locked``."""

    version: int = 0
    finished: float | None = None  # time.monotonic() when the work ended
    cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _woken: set[threading.Event] = field(default_factory=set, repr=False)

    def notify(self) -> None:
        """Call with ``cond`` held, after a change: followers wake and see a newer version."""
        self.version += 1
        self.cond.notify_all()
        for event in self._woken:
            event.set()

    def change(self, **updates: Any) -> None:
        """Set attributes and notify, in one step."""
        with self.cond:
            for name, value in updates.items():
                setattr(self, name, value)
            self.notify()

    def snapshot(self) -> Any:
        """What a follower sees now (immutable)."""
        with self.cond:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> Any:
        raise NotImplementedError

    def wait_newer(self, version: int, timeout: float) -> Any:
        """Block until the version passes ``version``, the work ends, or ``timeout`` passes;
        returns the snapshot then."""
        with self.cond:
            self.cond.wait_for(lambda: self.version > version or self.finished is not None,
                               timeout=timeout)
            return self._snapshot_locked()

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None) -> bool:
        """Block (under ``cond``) until ``predicate()`` is true or ``timeout`` passes."""
        with self.cond:
            return bool(self.cond.wait_for(predicate, timeout=timeout))

    async def wait_until_async(self, predicate: Callable[[], Any], timeout: float) -> bool:
        """``wait_until`` for asyncio code: waits on the event loop, holding no thread, so
        many followers (API streams) cost no thread each."""
        with self.cond:  # the common case for a fast stream: no waiting at all
            if predicate():
                return True
        loop = asyncio.get_running_loop()
        waker = _LoopWaker(loop)
        self.watch(waker)  # type: ignore[arg-type]
        deadline = loop.time() + timeout
        try:
            while True:
                # A notify after this check wakes the future made before it.
                waker.arm()
                with self.cond:
                    if predicate():
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                timer = loop.call_later(remaining, waker.wake)
                try:
                    await waker.future
                finally:
                    timer.cancel()
        finally:
            self.unwatch(waker)  # type: ignore[arg-type]

    async def wait_newer_async(self, version: int, timeout: float) -> Any:
        """``wait_newer`` for asyncio code; returns the snapshot then."""
        await self.wait_until_async(
            lambda: self.version > version or self.finished is not None, timeout)
        return self.snapshot()

    def wait_finished(self, timeout: float | None) -> bool:
        """Block until the work ended; False when ``timeout`` passed first."""
        return self.wait_until(lambda: self.finished is not None, timeout)

    def watch(self, event: threading.Event) -> None:
        """Set ``event`` on every change from now on (for ``wait_any``)."""
        with self.cond:
            self._woken.add(event)

    def unwatch(self, event: threading.Event) -> None:
        with self.cond:
            self._woken.discard(event)


class _LoopWaker:
    """Stands in for a ``threading.Event`` among a ``Live``'s watchers: a change on a
    worker thread resolves a future on the waiting coroutine's loop (a plain future and a
    timer: no task per wait, which matters at one wait per streamed piece)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future = loop.create_future()

    def arm(self) -> None:
        """A fresh future to wait on (called on the loop, before checking the state)."""
        if self.future.done():
            self.future = self._loop.create_future()

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def set(self) -> None:  # from the worker thread, as threading.Event.set
        try:
            self._loop.call_soon_threadsafe(self.wake)
        except RuntimeError:  # the loop closed: nobody is waiting any more
            pass


T = TypeVar("T", bound=Live)


class Registry(Generic[T]):
    """Live items by id, oldest first. Thread-safe.

    A finished item is forgotten once more than ``keep`` items have finished after it, or
    ``keep_s`` seconds after it finished (when ``add`` runs). ``version`` counts every
    change of any item, and every item added or forgotten, so one ``wait_changed`` (or
    ``wait_any``) follows them all.
    """

    def __init__(self, *, keep: int | None = None, keep_s: float | None = None) -> None:
        self._keep = keep
        self._keep_s = keep_s
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}
        self._woken: set[threading.Event] = set()
        self._own = 0  # items added and forgotten
        self._gone = 0  # versions of forgotten items, so ``version`` never goes back

    @property
    def version(self) -> int:
        with self._lock:
            return self._own + self._gone + sum(item.version for item in self._items.values())

    def add(self, key: str, item: T) -> T:
        """Keep ``item`` under ``key`` (after forgetting what is old); returns it."""
        with self._lock:
            self._forget_old_locked()
            self._items[key] = item
            self._own += 1
            for event in self._woken:
                event.set()
        return item

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def require(self, key: str, kind: str) -> T:
        """The item under ``key``; raises InvalidInput naming the ``kind`` ("pull") when
        there is none (e.g. one from before the studio restarted)."""
        item = self.get(key)
        if item is None:
            raise InvalidInput(f"There is no {kind} with id {key!r}.",
                               hint="It may be from before the studio restarted.")
        return item

    def items(self) -> list[T]:
        """Every kept item, oldest first."""
        with self._lock:
            return list(self._items.values())

    def wait_changed(self, since: int, timeout: float) -> int:
        """Block until some item changed after version ``since`` (or one was added) or
        ``timeout`` passed; returns the version now."""
        wait_any([(self, since)], timeout)
        return self.version

    def watch(self, event: threading.Event) -> None:
        """Set ``event`` when an item is added, and on every change of the items kept now."""
        with self._lock:
            self._woken.add(event)
            items = list(self._items.values())
        for item in items:
            item.watch(event)

    def unwatch(self, event: threading.Event) -> None:
        with self._lock:
            self._woken.discard(event)
            items = list(self._items.values())
        for item in items:
            item.unwatch(event)

    def _forget_old_locked(self) -> None:
        finished = [key for key, item in self._items.items() if item.finished is not None]
        drop = set(finished[:max(len(finished) - self._keep, 0)] if self._keep is not None
                   else ())
        if self._keep_s is not None:
            now = time.monotonic()
            drop.update(key for key in finished
                        if now - self._items[key].finished > self._keep_s)
        for key in drop:
            self._gone += self._items.pop(key).version
            self._own += 1


class Watchable(Protocol):
    version: int

    def watch(self, event: threading.Event) -> None: ...

    def unwatch(self, event: threading.Event) -> None: ...


def wait_any(watched: Iterable[tuple[Watchable, int]], timeout: float) -> bool:
    """Block until one of the (item or registry, version seen) pairs has a newer version,
    or ``timeout`` passes; True when one changed."""
    watched = list(watched)
    woken = threading.Event()
    for source, _seen in watched:
        source.watch(woken)
    try:
        if not any(source.version > seen for source, seen in watched):
            woken.wait(timeout)
        return any(source.version > seen for source, seen in watched)
    finally:
        for source, _seen in watched:
            source.unwatch(woken)
