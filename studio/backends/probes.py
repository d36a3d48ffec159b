"""Health probes for each engine, over the same clients the studio talks through.

A probe takes a host and answers a ``Health``: whether it is up and, where the engine says,
which models it has, which are loaded and how long its queue is. The clients are made once
per host and reused.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from ..clients.comfyui import ComfyUIClient
from ..clients.ollama import OllamaClient
from ..errors import BackendRejected, StudioError
from .health import Health
from .hosts import HostSpec

C = TypeVar("C")


class Clients(Generic[C]):
    """One client per host, made on first use by ``make(spec)``."""

    def __init__(self, make: Callable[[HostSpec], C]) -> None:
        self._make = make
        self._clients: dict[str, C] = {}
        self._lock = threading.Lock()

    def get(self, spec: HostSpec) -> C:
        with self._lock:
            client = self._clients.get(spec.name)
            if client is None:
                client = self._clients[spec.name] = self._make(spec)
            return client


def ollama_clients(timeout: float) -> Clients[OllamaClient]:
    return Clients(lambda spec: OllamaClient(spec.url, timeout=timeout, key=spec.key))


def ollama_probe(clients: Clients[OllamaClient]) -> Callable[[HostSpec], Health]:
    """Up when ``/api/tags`` answers; models from it, loaded ones from ``/api/ps``."""

    def probe(spec: HostSpec) -> Health:
        client = clients.get(spec)
        try:
            models = tuple(m.name for m in client.list_models())
            loaded = tuple(m.name for m in client.running())
        except StudioError as exc:
            return Health(False, problem=str(exc))
        return Health(True, models=models, loaded=loaded)

    return probe


def comfyui_probe(clients: Clients[ComfyUIClient]) -> Callable[[HostSpec], Health]:
    """Up when ``/queue`` answers; its running and waiting prompts are the queue. Models
    are the files of ``/models/checkpoints`` and ``/models/loras`` (a ComfyUI without a
    loras folder just lists its checkpoints)."""

    def probe(spec: HostSpec) -> Health:
        client = clients.get(spec)
        try:
            state = client.queue()
            models = client.models("checkpoints")
            try:
                models += client.models("loras")
            except BackendRejected as exc:
                if exc.status != 404:
                    raise
        except StudioError as exc:
            return Health(False, problem=str(exc))
        return Health(True, models=tuple(models), queue=len(state.running) + len(state.pending))

    return probe
