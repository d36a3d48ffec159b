"""Health probes for each engine, over the same clients the studio talks through.

A probe takes a host and answers a ``Health``: whether it is up and, where the engine says,
which models it has and which are loaded. The clients are made once per host and reused.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from ..clients.comfyui import ComfyUIClient
from ..clients.ollama import OllamaClient
from ..errors import StudioError
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


def comfyui_shown_as(spec: HostSpec) -> str:
    """How messages name a ComfyUI host: never its address (ComfyUI has no sign-in)."""
    return f"the host {spec.name} in COMFYUI_URL"


def comfyui_clients(timeout: float) -> Clients[ComfyUIClient]:
    return Clients(lambda spec: ComfyUIClient(spec.url, timeout=timeout,
                                              shown_as=comfyui_shown_as(spec)))


def comfyui_probe(clients: Clients[ComfyUIClient]) -> Callable[[HostSpec], Health]:
    """Up when ``/system_stats`` answers; the queue (running and waiting prompts) from
    ``/queue``, the models from ``/models/checkpoints``."""

    def probe(spec: HostSpec) -> Health:
        client = clients.get(spec)
        try:
            client.system_stats()
            queue = client.queue()
            models = tuple(client.models("checkpoints"))
        except StudioError as exc:
            return Health(False, problem=str(exc))
        return Health(True, models=models, queue=len(queue.running) + len(queue.pending))

    return probe
