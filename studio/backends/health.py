"""The background health check of a pool's hosts.

Every ``interval_s`` each host is probed at once (one short-lived thread per host, so a hung
host delays no other) and the result goes to the pool. A probe returns a ``Health``; one
that raises counts as down with the exception's text as the problem. The thread sleeps
between rounds and stops at ``close()``. With a single host no thread is started: routing
has no choice to make, and the status strip probes it already; the Settings hosts table
then asks for a round with ``check_soon()``, which runs it in the background.

Nobody asking, no probing: once no request has asked the pool for a host (``HostPool.order``)
for ``IDLE_ROUNDS`` intervals, the thread sleeps until one does, and then probes at once. A
studio with no page open and no API caller sends its hosts nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .hosts import HostSpec
from .pool import HostPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What one probe learnt. ``models``/``loaded`` None when the probe didn't ask."""

    up: bool
    models: tuple[str, ...] | None = None
    loaded: tuple[str, ...] | None = None
    queue: int | None = None
    problem: str = ""


Probe = Callable[[HostSpec], Health]

IDLE_ROUNDS = 30  # intervals without a request before the checks sleep (5 min at 10 s)


class HealthChecker:
    def __init__(self, pool: HostPool, probe: Probe, *, interval_s: float = 10.0,
                 timeout_s: float = 5.0, name: str = "hosts") -> None:
        self.pool = pool
        self._probe = probe
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._name = name
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._asked = threading.Event()  # a request asked the pool for a host
        pool.on_ask(self._asked.set)
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self._round_done = threading.Condition()
        self._soon_lock = threading.Lock()
        self._soon_running = False
        self._soon_at: float | None = None

    def start(self) -> "HealthChecker":
        if self._thread is None and len(self.pool) > 1:
            self._thread = threading.Thread(target=self._loop, name=f"health-{self._name}",
                                            daemon=True)
            self._thread.start()
        return self

    @property
    def background(self) -> bool:
        """Whether a thread of its own checks the hosts (several hosts, started)."""
        return self._thread is not None

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._asked.set()

    def check_now(self) -> None:
        """Probe every host now, in this thread (start-up, the Settings tab's ⟳, tests)."""
        self._round()

    def check_soon(self) -> None:
        """Start a round in the background unless one started by this call runs already or
        ran less than ``interval_s`` ago; returns at once. For a pool no thread checks (one
        host): a page that shows the hosts asks for fresh results without waiting on them."""
        with self._soon_lock:
            now = time.monotonic()
            if self._soon_running or (self._soon_at is not None
                                      and now - self._soon_at < self.interval_s):
                return
            self._soon_running, self._soon_at = True, now

        def run() -> None:
            try:
                self._round()
            finally:
                with self._soon_lock:
                    self._soon_running = False

        threading.Thread(target=run, name=f"health-{self._name}-soon", daemon=True).start()

    def wait_rounds(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` rounds have run in all (tests)."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self.rounds >= n, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:  # noqa: BLE001 - the checker must outlive a bug in one round
                log.exception("health check round failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()
            # Cleared before the look at the pool: a request in between either shows in
            # idle_s or sets the event again, so none is missed.
            self._asked.clear()
            if not self._stop.is_set() and self.pool.idle_s() > IDLE_ROUNDS * self.interval_s:
                self._asked.wait()  # no timeout: a request or close() wakes it

    def _round(self) -> None:
        threads = [threading.Thread(target=self._check, args=(spec,), daemon=True,
                                    name=f"probe-{spec.name}")
                   for spec in (v.spec for v in self.pool.views())]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.timeout_s + 1.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._round_done:
            self.rounds += 1
            self._round_done.notify_all()

    def _check(self, spec: HostSpec) -> None:
        started = time.monotonic()
        try:
            health = self._probe(spec)
        except Exception as exc:  # noqa: BLE001 - any failure of a probe means "down"
            health = Health(False, problem=str(exc) or type(exc).__name__)
        latency = (time.monotonic() - started) * 1000
        before = self.pool.view(spec.name).up
        self.pool.report_health(spec.name, up=health.up, latency_ms=round(latency, 1),
                                models=health.models, loaded=health.loaded, queue=health.queue,
                                problem=health.problem)
        if before is not None and before != health.up:
            log.warning("%s host %s is %s%s", self._name, spec.name,
                        "back" if health.up else "down",
                        f": {health.problem}" if health.problem else "")
