"""Every backend host the studio talks to, as the admin sees them: each Ollama host, each
ComfyUI host and each OpenAI-compatible local server (the Settings tab's hosts table, the
Models tab's per-host lists and GPU panel).

``HostBoard.rows()`` reads what the pools already know (the health checks and the requests
themselves) and asks no backend on a page's behalf. An engine whose checker runs no thread
of its own (one host: health.py) is asked for a round in the background (``check_soon``),
at most once per health interval while a page shows the table; the page gets what is known
now, so a hung host never holds it up.

``read_host_gpus`` is the one place that asks the hosts about their GPUs for the Models
tab's panel: every ComfyUI host's ``/system_stats`` and the ``/api/ps`` of every Ollama host
on another machine. GPUs of hosts on this machine (``is_local``) are the NVML panel's, so
the panel doesn't show them twice. A host the pool knows is down is not asked: its
problem is shown instead.

No gradio imports here.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from ..clients.comfyui import ComfyUIClient
from ..clients.comfyui_types import SystemStats
from ..clients.ollama import RunningModel
from ..errors import StudioError
from .health import HealthChecker
from .hosts import THIS_MACHINE, HostSpec, machine_of, mask_keys
from .pool import HostPool, HostView
from .probes import Clients, comfyui_probe, ollama_clients, ollama_probe

OLLAMA, COMFYUI, LOCAL_SERVER = "Ollama", "ComfyUI", "Local server"
HIDDEN_ADDRESS = "not shown (ComfyUI has no sign-in)"
PROBE_TIMEOUT_S = 5.0


def comfyui_clients(timeout: float) -> Clients[ComfyUIClient]:
    """One client per ComfyUI host, naming it in messages by its name, never its address
    (ComfyUI has no sign-in)."""
    return Clients(lambda spec: ComfyUIClient(
        spec.url, timeout=timeout, shown_as=f"host {spec.name} in COMFYUI_URL"))


def is_local(url: str) -> bool:
    """Whether a host runs on this machine (its GPUs are the ones NVML reads here).

    >>> [is_local(u) for u in ("http://127.0.0.1:1", "http://[::1]:8188", "http://gpu2:8188")]
    [True, True, False]
    """
    return machine_of(url) == THIS_MACHINE


@dataclass(frozen=True)
class Engine:
    """One engine's hosts: its pool and the checker that fills it in."""

    kind: str  # OLLAMA | COMFYUI | LOCAL_SERVER
    pool: HostPool
    checker: HealthChecker | None = None


@dataclass(frozen=True)
class HostRow:
    """One host as the hosts table shows it. ``address`` has any key masked, and is
    ``HIDDEN_ADDRESS`` for ComfyUI; ``models`` None when not known yet."""

    kind: str
    name: str
    address: str
    state: str  # up | down | cooling down | not checked yet
    problem: str
    latency_ms: float | None
    models: int | None
    loaded: tuple[str, ...]
    queue: int
    local: bool


def host_row(kind: str, view: HostView, now: float) -> HostRow:
    """The row of one host from what its pool knows at ``now`` (the pool's clock)."""
    spec = view.spec
    if kind == COMFYUI:
        address = HIDDEN_ADDRESS
    else:
        address = mask_keys(f"{spec.url} key={spec.key}") if spec.key else spec.url
    state = view.state(now)
    return HostRow(kind=kind, name=spec.name, address=address, state=state,
                   problem=view.problem if state != "up" else "",
                   latency_ms=view.latency_ms if state == "up" else None,
                   models=None if view.models is None else len(view.models),
                   loaded=tuple(sorted(view.loaded)), queue=view.queue + view.active,
                   local=is_local(spec.url))


class HostBoard:
    """Every engine's hosts; see the module's docstring. ``comfyui`` gives each ComfyUI
    host with the client that talks to it."""

    def __init__(self, engines: Sequence[Engine],
                 comfyui: Callable[[], list[tuple[HostSpec, ComfyUIClient]]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engines = tuple(engines)
        self._comfyui = comfyui
        self._clock = clock

    def engine(self, kind: str) -> Engine | None:
        return next((e for e in self.engines if e.kind == kind), None)

    def rows(self) -> list[HostRow]:
        """Every host, engine by engine in the settings' order. Never waits on a host."""
        for engine in self.engines:
            if engine.checker is not None and engine.checker.background:
                engine.checker.pool.asked()  # an admin looking keeps the checks awake
            elif engine.checker is not None:
                engine.checker.check_soon()
        now = self._clock()
        return [host_row(e.kind, v, now) for e in self.engines for v in e.pool.views()]

    def comfyui_clients(self) -> list[tuple[HostSpec, ComfyUIClient]]:
        return self._comfyui()

    def comfyui_files(self, folder: str) -> list[tuple[str, list[str] | str]]:
        """Each ComfyUI host's files in model ``folder`` (``/models/{folder}``), or the
        sentence saying why not, in the setting's order; a host known to be down is not
        asked."""
        views = {v.name: v for v in self.engine(COMFYUI).pool.views()}

        def files_of(spec: HostSpec, client: ComfyUIClient) -> list[str] | str:
            view = views.get(spec.name)
            if view is not None and view.up is False:
                return view.problem or "It doesn't answer."
            try:
                return client.models(folder)
            except StudioError as exc:
                return str(exc)

        return [(spec.name, files_of(spec, client)) for spec, client in self.comfyui_clients()]


def build_host_board(*, settings, ollama, ollama_health: HealthChecker | None,
                     comfyui: ComfyUIClient, comfyui_hosts=None, local_servers=None,
                     local_health: HealthChecker | None = None) -> HostBoard:
    """The board over the studio's engines. ``ollama`` is an ``OllamaHosts`` (its pool and
    running checker are used) or a plain client (then a pool of its one host, checked on
    demand). ``comfyui_hosts`` is the ComfyUI hosts' owner when the studio has one
    (``.pool``, ``.clients()``, ``.health``); without it the hosts of COMFYUI_URL get a pool
    here, checked on demand, the first host talked to through ``comfyui``."""
    interval = settings.health_interval
    pool = getattr(ollama, "pool", None)
    if pool is None:
        from ..models.pulls import full_model_name

        pool = HostPool(settings.ollama_hosts, canonical=full_model_name)
        ollama_health = HealthChecker(pool, ollama_probe(ollama_clients(PROBE_TIMEOUT_S)),
                                      interval_s=interval, timeout_s=PROBE_TIMEOUT_S,
                                      name="ollama")
    engines = [Engine(OLLAMA, pool, ollama_health)]
    if comfyui_hosts is not None:
        # Its checker runs a thread with several hosts; with one, it is asked on demand here.
        engines.append(Engine(COMFYUI, comfyui_hosts.pool, getattr(comfyui_hosts, "health", None)))
        comfyui_list = comfyui_hosts.clients
    else:
        specs = settings.comfyui_hosts
        comfy_pool = HostPool(specs)
        engines.append(Engine(COMFYUI, comfy_pool, HealthChecker(
            comfy_pool, comfyui_probe(comfyui_clients(PROBE_TIMEOUT_S)), interval_s=interval,
            timeout_s=PROBE_TIMEOUT_S, name="comfyui")))
        others = comfyui_clients(settings.request_timeout)

        def comfyui_list() -> list[tuple[HostSpec, ComfyUIClient]]:
            return [(spec, comfyui if i == 0 else others.get(spec))
                    for i, spec in enumerate(specs)]
    if local_servers is not None:
        engines.append(Engine(LOCAL_SERVER, local_servers.pool, local_health))
    return HostBoard(engines, comfyui_list)


# -- GPUs of the other machines ------------------------------------------------------------------


@dataclass(frozen=True)
class HostGpus:
    """What one host says of its GPUs: ComfyUI's ``stats`` or Ollama's ``loaded`` models,
    or ``problem`` when it can't be asked. ``local``: on this machine (NVML's GPUs)."""

    kind: str
    name: str
    local: bool = False
    stats: SystemStats | None = None
    loaded: tuple[RunningModel, ...] | None = None
    problem: str = ""


def read_host_gpus(board: HostBoard, ollama) -> list[HostGpus]:
    """Every ComfyUI host's ``/system_stats``, then the ``/api/ps`` of each Ollama host on
    another machine (this machine's loaded models have a table of their own). ``ollama`` is
    the studio's Ollama (``running_on(host)`` with several hosts). Hosts known to be down
    are not asked (their problem is given); the others are asked at once."""
    asks: list[tuple[str, HostView, Callable[[], HostGpus]]] = []
    comfy = board.engine(COMFYUI)
    clients = dict((spec.name, client) for spec, client in board.comfyui_clients())
    for view in comfy.pool.views() if comfy else ():
        client = clients.get(view.name)
        if client is not None:
            asks.append((COMFYUI, view, lambda v=view, c=client: HostGpus(
                COMFYUI, v.name, is_local(v.spec.url), stats=c.system_stats())))
    engine = board.engine(OLLAMA)
    for view in engine.pool.views() if engine else ():
        if not is_local(view.spec.url):
            running = (lambda n=view.name: ollama.running_on(n)) \
                if hasattr(ollama, "running_on") else ollama.running
            asks.append((OLLAMA, view, lambda n=view.name, r=running: HostGpus(
                OLLAMA, n, loaded=tuple(r()))))

    def run(ask: tuple[str, HostView, Callable[[], HostGpus]]) -> HostGpus:
        kind, view, read = ask
        local = is_local(view.spec.url)
        if view.up is False:
            return HostGpus(kind, view.name, local, problem=view.problem or "It doesn't answer.")
        try:
            return read()
        except StudioError as exc:
            return HostGpus(kind, view.name, local, problem=str(exc))

    if not asks:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(asks)),
                            thread_name_prefix="remote-gpus") as workers:
        return list(workers.map(run, asks))
