"""Which host of an engine a request goes to, and what the studio knows of each host.

A ``HostPool`` holds one engine's hosts (the Ollama hosts, the ComfyUI hosts, the
OpenAI-compatible servers). It learns from two sources:

- the health checker (``report_health``): up or down, latency, the models each host has,
  those it has loaded (Ollama's ``/api/ps``) and its queue (ComfyUI's ``/queue``);
- the requests themselves (``failed`` / ``succeeded``): a host that fails a request is
  cooled down for ``cooldown_s`` and left out of the rotation meanwhile, as LiteLLM's router
  does for a deployment; the next good answer or health check brings it back.

``order(model, sticky=...)`` ranks the hosts that can take a request, best first:

1. a host the conversation already used (``sticky``), while it has the model loaded or no
   other host does: its loaded model and prompt cache make the reply start sooner;
2. hosts with the model already loaded and fewer requests in flight than their weight;
3. the least busy: requests in flight (counted by ``use``) and queued work, per unit of
   weight; then the order of the setting (the owner's preference). A health check's
   latency is shown, not ranked on: on a LAN it is noise next to a model's load time.

Hosts that are down, cooling down, or known not to have the model come last and only when
no other host can take the request, so with one host nothing is ever refused here: the
request goes to it and its own error, a sentence, reaches the person. Thread-safe; no I/O.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

from .hosts import HostSpec

COOLDOWN_S = 5.0
STICKY_LIMIT = 10_000


@dataclass(frozen=True)
class HostView:
    """What the studio knows of one host now. ``up`` is None before its first check;
    ``models`` None when not known (then any model is assumed possible)."""

    spec: HostSpec
    up: bool | None = None
    latency_ms: float | None = None
    models: frozenset[str] | None = None
    loaded: frozenset[str] = frozenset()
    queue: int = 0
    active: int = 0
    cooling_until: float = 0.0
    problem: str = ""
    checked_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def cooling(self, now: float) -> bool:
        return now < self.cooling_until

    def has(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models

    def state(self, now: float) -> str:
        """'up', 'down', 'cooling down' or 'not checked yet', for the status strip."""
        if self.cooling(now):
            return "cooling down"
        return {True: "up", False: "down", None: "not checked yet"}[self.up]


class HostPool:
    """One engine's hosts; see the module's docstring."""

    def __init__(self, specs: Iterable[HostSpec], *, cooldown_s: float = COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic,
                 canonical: Callable[[str], str] = lambda name: name):
        self._views: dict[str, HostView] = {s.name: HostView(s) for s in specs}
        if not self._views:
            raise ValueError("a pool needs at least one host")
        self._order = list(self._views)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._canonical = canonical
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.models_version = 0  # goes up when a host's models or up/down state change
        self._asked_at = clock()  # when a request last asked for a host (``order``)
        self._on_ask: list[Callable[[], None]] = []

    def on_ask(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap, non-blocking) each time a request asks for a host."""
        self._on_ask.append(listener)

    def asked(self) -> float:
        """Someone wants these hosts now (a request, an admin's hosts table): the health
        checks stay awake, or wake up. Returns the clock's time."""
        with self._lock:
            now = self._asked_at = self._clock()
        for listener in self._on_ask:
            listener()
        return now

    def idle_s(self) -> float:
        """Seconds since a request last asked for a host (since the pool was made, if none)."""
        return self._clock() - self._asked_at

    # -- what is known

    @property
    def names(self) -> list[str]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def spec(self, name: str) -> HostSpec:
        return self._views[name].spec

    def views(self) -> list[HostView]:
        """Every host, in the setting's order."""
        with self._lock:
            return [self._views[n] for n in self._order]

    def view(self, name: str) -> HostView:
        with self._lock:
            return self._views[name]

    def report_health(self, name: str, *, up: bool, latency_ms: float | None = None,
                      models: Iterable[str] | None = None, loaded: Iterable[str] | None = None,
                      queue: int | None = None, problem: str = "") -> None:
        """A health check's result. A host that answers ends its cooldown."""
        with self._lock:
            v = self._views[name]
            new = replace(
                v, up=up, latency_ms=latency_ms if up else None, problem="" if up else problem,
                models=v.models if models is None else frozenset(map(self._canonical, models)),
                loaded=(frozenset() if not up else v.loaded if loaded is None
                        else frozenset(map(self._canonical, loaded))),
                queue=v.queue if queue is None else queue,
                cooling_until=0.0 if up else v.cooling_until,
                checked_at=self._clock())
            if (new.models, new.up) != (v.models, v.up):
                self.models_version += 1
            self._views[name] = new

    def is_ready(self, name: str) -> bool:
        """Whether ``name`` is in the rotation: not known to be down, not cooling down."""
        with self._lock:
            v = self._views[name]
            return v.up is not False and not v.cooling(self._clock())

    def known_models(self) -> list[str]:
        """Every model a host that isn't known to be down has listed, each once, sorted."""
        with self._lock:
            return sorted({m for v in self._views.values() if v.up is not False
                           for m in v.models or ()})

    def failed(self, name: str, problem: str) -> None:
        """A request to ``name`` failed at the host (not at the model): leave it out of the
        rotation for the cooldown."""
        with self._lock:
            v = self._views[name]
            self._views[name] = replace(v, cooling_until=self._clock() + self._cooldown_s,
                                        problem=problem)

    def succeeded(self, name: str, model: str | None = None) -> None:
        """A request to ``name`` got its first answer: the host is up, and has ``model``
        loaded now."""
        with self._lock:
            v = self._views[name]
            loaded = v.loaded if model is None else v.loaded | {self._canonical(model)}
            self._views[name] = replace(v, up=True, cooling_until=0.0, problem="",
                                        loaded=loaded)

    @contextmanager
    def use(self, name: str) -> Iterator[HostSpec]:
        """Count a request in flight on ``name`` while the block runs."""
        self._add_active(name, 1)
        try:
            yield self._views[name].spec
        finally:
            self._add_active(name, -1)

    def _add_active(self, name: str, n: int) -> None:
        with self._lock:
            v = self._views[name]
            self._views[name] = replace(v, active=max(0, v.active + n))

    # -- routing

    def remember(self, sticky: str, name: str) -> None:
        """``sticky`` (a conversation) went to ``name``; prefer it next time."""
        with self._lock:
            self._sticky[sticky] = name
            self._sticky.move_to_end(sticky)
            while len(self._sticky) > STICKY_LIMIT:
                self._sticky.popitem(last=False)

    def order(self, model: str | None = None, *, sticky: str | None = None,
              exclude: Iterable[str] = ()) -> list[HostSpec]:
        """The hosts to try for a request, best first (see the module's docstring).
        ``exclude`` leaves out hosts already tried."""
        model = None if model is None else self._canonical(model)
        skip = set(exclude)
        now = self.asked()
        with self._lock:
            views = [self._views[n] for n in self._order if n not in skip]
            stuck = self._sticky.get(sticky) if sticky is not None else None
        ready = [v for v in views if v.up is not False and not v.cooling(now) and v.has(model)]
        loaded_anywhere = model is not None and any(model in v.loaded for v in ready)

        def rank(v: HostView) -> tuple:
            position = self._order.index(v.name)
            is_loaded = model is not None and model in v.loaded
            sticks = v.name == stuck and (is_loaded or not loaded_anywhere)
            # A loaded model is worth waiting for only while the host has room: past one
            # request in flight per unit of weight, a free host that loads it is sooner.
            is_loaded = is_loaded and v.active < v.spec.weight
            busy = (v.active + v.queue) / v.spec.weight
            return (not sticks, not is_loaded, busy, position)

        best = sorted(ready, key=rank)
        # Last resorts, so that a request is always tried somewhere and fails with the host's
        # own sentence: cooling or down hosts that may have the model, soonest back first.
        rest = sorted((v for v in views if v not in ready and v.has(model)),
                      key=lambda v: (v.up is False, v.cooling_until, self._order.index(v.name)))
        return [v.spec for v in best + rest]

    def choose(self, model: str | None = None, *, sticky: str | None = None) -> HostSpec | None:
        """The best host for a request, or None when no host has ``model``."""
        ranked = self.order(model, sticky=sticky)
        return ranked[0] if ranked else None

    def hosts_with(self, model: str) -> list[str]:
        """Names of the hosts known to have ``model`` (or not known not to)."""
        model = self._canonical(model)
        with self._lock:
            return [n for n in self._order if self._views[n].has(model)]
