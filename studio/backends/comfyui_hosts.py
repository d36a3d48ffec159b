"""The ComfyUI hosts of ``COMFYUI_URL``: one client each, their health, and which of them
can run a graph and should get the next prompt.

``ComfyUIHosts`` is there for one host or several (``services.comfyui_hosts``):

- ``pool``: what is known of each host (``HostPool``): up or down, latency, its checkpoints
  and LoRAs, its queue, its cooldown after a failure. With several hosts a
  ``HealthChecker`` probes ``/queue`` and ``/models`` every ``STUDIO_HEALTH_INTERVAL``
  seconds, so a host that stops answering leaves the rotation and one back up rejoins;
- ``client_for(name)`` / ``clients()``: one ``ComfyUIClient`` per host, made once;
- ``label(name)``: how a page names a host: its name from ``COMFYUI_URL``, else "host 2".
  Never its address: ComfyUI has no sign-in (issue 3), so ``public`` cuts every host's
  address out of a text;
- ``capable(graph)``: the hosts whose ``/object_info`` (cached per client) has the node
  classes, checkpoint and LoRAs the graph needs, and ``route(...)``: the one of them with the
  shortest queue (the studio's own prompts in flight there, or ComfyUI's ``/queue`` when
  longer) and a free slot.

Which prompt goes when, and moving a prompt when its host fails, is ``images/jobs.py``'s
business. No gradio imports here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..clients.comfyui import ComfyUIClient
from ..errors import StudioError
from ..images.validation import validate
from .health import HealthChecker
from .hosts import HostSpec, host_label
from .pool import HostPool
from .probes import Clients, comfyui_probe

# A host whose cached /object_info lacks what a graph needs is asked afresh at most this
# often: the catalogue is large (megabytes), and a batch asks once per prompt.
REFRESH_S = 30.0
# With several hosts, a job waits this long for a host that went away mid-run before its
# prompt moves to another host (one host: the client's 60 s, time for a ComfyUI restart).
MOVE_AFTER_S = 3.0


@dataclass(frozen=True)
class Route:
    """Where a prompt goes: ``host``, or nowhere yet (``wait``: every host that can run it
    is busy), or nowhere at all (both empty: no host can run it)."""

    host: str | None = None
    wait: bool = False


class ComfyUIHosts:
    """See the module's docstring. ``clients`` makes one ``ComfyUIClient`` per host."""

    def __init__(self, pool: HostPool, clients: Clients[ComfyUIClient],
                 checker: HealthChecker | None = None) -> None:
        self.pool = pool
        self.health = checker
        self._clients = clients
        self._refreshed: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def single(cls, client: ComfyUIClient, name: str = "comfyui") -> "ComfyUIHosts":
        """One host around an existing client (tests, and callers that built one)."""
        spec = HostSpec(name, client.base_url)
        return cls(HostPool([spec]), Clients(lambda _spec: client))

    @property
    def several(self) -> bool:
        return len(self.pool) > 1

    @property
    def first(self) -> ComfyUIClient:
        return self.client_for(self.pool.names[0])

    def stored_host(self, name: str | None) -> str:
        """The host a stored prompt went to: ``name``, or the first host when none was
        stored (one host) or COMFYUI_URL no longer names it."""
        names = self.pool.names
        return name if name in names else names[0]

    def client_for(self, name: str) -> ComfyUIClient:
        return self._clients.get(self.pool.spec(name))

    def clients(self) -> list[tuple[HostSpec, ComfyUIClient]]:
        """Every host and its client, in the setting's order."""
        return [(v.spec, self._clients.get(v.spec)) for v in self.pool.views()]

    def label(self, name: str) -> str:
        """A host as a page may name it: the name given in COMFYUI_URL, else its place in
        the list ("host 2"), since an unnamed host's name is its address."""
        return host_label(self.pool.spec(name), self.pool.names.index(name))

    def public(self, text: str) -> str:
        """``text`` with every host's address replaced by where it is configured."""
        for index, (spec, _client) in enumerate(self.clients()):
            place = (f"{host_label(spec, index)} in COMFYUI_URL" if self.several
                     else "the address in COMFYUI_URL")
            for needle in (spec.url, spec.url.split("://", 1)[-1]):
                text = text.replace(needle, place)
        return text

    def close(self) -> None:
        if self.health is not None:
            self.health.close()
        for _spec, client in self.clients():
            client.close()

    # -- which host

    def capable(self, graph: Mapping[str, Any], exclude: Iterable[str] = ()) -> list[str]:
        """The hosts that can run ``graph``, in the setting's order: nothing in it is
        missing from their ``/object_info`` (fetched once per client and cached; asked
        again, at most every REFRESH_S, when something is missing, since a model may have
        been added). A host that can't be asked now, or is out of the rotation, is kept: it
        may answer by its turn, and if not its own error says why. With one host, that
        host."""
        names = [n for n in self.pool.names if n not in set(exclude)]
        if not self.several:
            return names
        return [n for n in names if self._can_run(n, graph)]

    def _can_run(self, name: str, graph: Mapping[str, Any]) -> bool:
        if not self.pool.is_ready(name):
            # Out of the rotation (down, cooling down): only ever a last resort, and asking
            # it now could wait out its timeout on every prompt. Asked once it is back.
            return True
        client = self.client_for(name)
        try:
            if not validate(graph, client.object_info()):
                return True
            now = time.monotonic()
            with self._lock:
                if now - self._refreshed.get(name, float("-inf")) < REFRESH_S:
                    return False
                self._refreshed[name] = now
            return not validate(graph, client.object_info(refresh=True))
        except StudioError:
            return True

    def route(self, capable: Iterable[str], in_flight: Mapping[str, int],
              per_host: int) -> Route:
        """Which of the ``capable`` hosts gets a prompt now. A host takes ``per_host`` ×
        its weight prompts at once (so ComfyUI's queue isn't flooded: the rest wait in the
        studio, where the fair turns between people are taken); of the hosts in rotation
        with room, the one with the shortest queue per unit of weight, ties in the
        setting's order. When none is in rotation (all down or cooling down) the one the
        pool ranks first is tried, so its own error, a sentence, reaches the person."""
        capable = list(capable)
        self.pool.asked()  # a prompt to place: the health checks stay awake
        if not capable:
            return Route()
        views = {v.name: v for v in self.pool.views()}

        def room(name: str) -> bool:
            return in_flight.get(name, 0) < per_host * views[name].spec.weight

        ready = [n for n in capable if self.pool.is_ready(n)]
        if ready:
            free = [n for n in ready if room(n)]
            if not free:
                return Route(wait=True)

            def queue(name: str) -> tuple[float, int]:
                view = views[name]
                # ComfyUI's /queue (as of the last health check) counts our prompts too; it
                # says more only when other clients queue there.
                own = in_flight.get(name, 0)
                return max(own, view.queue) / view.spec.weight, self.pool.names.index(name)

            return Route(min(free, key=queue))
        last = next(s.name for s in self.pool.order(exclude=set(self.pool.names) - set(capable)))
        return Route(last) if room(last) else Route(wait=True)


def build_comfyui(hosts: tuple[HostSpec, ...], *, place: str, health_interval: float,
                  timeout: float = 30.0, probe_timeout: float = 5.0,
                  move_after_s: float = MOVE_AFTER_S) -> ComfyUIHosts:
    """The studio's ComfyUI hosts with their health checker (started when there are
    several: its first round runs in the background). ``place`` is how messages name a
    single host (never its address); with several, each is named by its label.
    ``move_after_s``: how long a prompt waits for its host gone mid-run before it moves."""
    several = len(hosts) > 1
    pool = HostPool(hosts)
    index = {spec.name: i for i, spec in enumerate(hosts)}

    def shown_as(spec: HostSpec) -> str:
        if not several:
            return place
        label = host_label(spec, index[spec.name])
        return f"{label if label.startswith('host ') else 'host ' + label} in COMFYUI_URL"

    clients = Clients(lambda spec: ComfyUIClient(
        spec.url, timeout=timeout, shown_as=shown_as(spec),
        unreachable_grace=move_after_s if several else None))
    probes = Clients(lambda spec: ComfyUIClient(spec.url, timeout=probe_timeout,
                                                shown_as=shown_as(spec)))
    checker = HealthChecker(pool, comfyui_probe(probes), interval_s=health_interval,
                            timeout_s=probe_timeout, name="comfyui")
    return ComfyUIHosts(pool, clients, checker.start())
