"""Several Ollama servers behind the one ``OllamaClient`` interface the studio uses.

With ``OLLAMA_HOST`` naming more than one host, the services get an ``OllamaHosts`` where
they would get an ``OllamaClient``, so the chat router, the pickers, the GPU policy, pulls
and the API work unchanged:

- ``chat_stream`` and ``embed`` go to the host the pool ranks first for the model (loaded
  there, else least busy; a conversation sticks to its host) and, when that host fails
  before the first token, to the next one. The reply then starts with a ``ChatNotice``
  saying where it went. A failure after the first token is the reply's own (its partial
  text is kept by the caller), as with one host.
- ``list_models`` is every model on any host that answers (each once); ``running`` every
  loaded model of every host; ``show`` and ``supports_vision`` ask a host that has it.
- ``pull`` pulls onto every host that answers, one after the other, each progress line
  naming its host; ``delete``, ``copy`` and ``unload`` act on every host that has the model.

A host that can't be reached only matters when no other host can do the work: then the
first host's error, a sentence, is raised as with one host.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterator, Sequence, TypeVar

from ..clients.ollama import ModelInfo, OllamaClient, PullProgress, RunningModel
from ..errors import (BackendUnavailable, ModelNotFound,
                      StudioError)
from ..events import ChatMessage, ChatOptions
from .pool import HostPool
from .health import HealthChecker
from .probes import Clients, ollama_clients, ollama_probe
from .routing import moves_on, routed_stream

log = logging.getLogger(__name__)
T = TypeVar("T")


class OllamaHosts:
    """See the module's docstring. ``clients`` makes one ``OllamaClient`` per host."""

    def __init__(self, pool: HostPool, clients: Clients[OllamaClient]) -> None:
        self.pool = pool
        self._clients = clients
        self._workers = ThreadPoolExecutor(max_workers=min(8, len(pool)),
                                           thread_name_prefix="ollama-hosts")

    @property
    def url(self) -> str:
        return ", ".join(v.spec.url for v in self.pool.views())

    def close(self) -> None:
        for v in self.pool.views():
            self._clients.get(v.spec).close()
        self._workers.shutdown(wait=False)

    # -- helpers

    def client_for(self, name: str) -> OllamaClient:
        """Host ``name``'s own client (the GPU policy acts on one machine's Ollama)."""
        return self._clients.get(self.pool.spec(name))

    _client = client_for

    def _each(self, ask: Callable[[OllamaClient], T]) -> list[tuple[str, T | StudioError]]:
        """``ask`` every host at once; (host, answer or its StudioError), in the pool's order.
        A host that fails is reported to the pool."""
        names = self.pool.names

        def one(name: str):
            try:
                return ask(self._client(name))
            except StudioError as err:
                if isinstance(err, BackendUnavailable):
                    self.pool.report_health(name, up=False, problem=str(err))
                return err

        return list(zip(names, self._workers.map(one, names)))

    @staticmethod
    def _answers(results: list[tuple[str, T | StudioError]]) -> list[tuple[str, T]]:
        """The answers; raises the first error when no host answered."""
        good = [(n, r) for n, r in results if not isinstance(r, StudioError)]
        if not good:
            raise next(r for _, r in results)
        return good

    def _first(self, model: str, ask: Callable[[OllamaClient], T], *, busy: bool = False) -> T:
        """``ask`` the best host for ``model``, then the next while they can't; ``busy``:
        count the request in flight on the host asked (work, not a lookup)."""
        first_error: StudioError | None = None
        for spec in self.pool.order(model):
            try:
                if busy:
                    with self.pool.use(spec.name):
                        return ask(self._clients.get(spec))
                return ask(self._clients.get(spec))
            except StudioError as err:
                first_error = first_error or err
                if not moves_on(err):
                    raise
                if isinstance(err, BackendUnavailable):
                    self.pool.failed(spec.name, str(err))
        raise first_error or ModelNotFound(f"No Ollama host has the model '{model}'.",
                                           hint="Pull it in the Models tab.")

    # -- the OllamaClient interface

    def version(self) -> str:
        return self._answers(self._each(lambda c: c.version()))[0][1]

    def list_models(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {}
        for name, models in self._answers(self._each(lambda c: c.list_models())):
            self.pool.report_health(name, up=True, models=[m.name for m in models],
                                    latency_ms=self.pool.view(name).latency_ms)
            for m in models:
                seen.setdefault(m.name, m)
        return sorted(seen.values(), key=lambda m: m.name)

    def running(self) -> list[RunningModel]:
        loaded: list[RunningModel] = []
        for _name, models in self._answers(self._each(lambda c: c.running())):
            loaded.extend(models)
        return loaded

    def show(self, model: str) -> dict:
        return self._first(model, lambda c: c.show(model))

    def supports_vision(self, model: str) -> bool:
        return self._first(model, lambda c: c.supports_vision(model))

    def embed(self, model: str, inputs: list[str], *, dimensions: int | None = None):
        return self._first(model, lambda c: c.embed(model, inputs, dimensions=dimensions),
                           busy=True)

    def _on_hosts_with(self, model: str, act: Callable[[OllamaClient], None]) -> None:
        done, errors = 0, []
        for name, result in self._each(act):
            if isinstance(result, ModelNotFound):
                continue
            if isinstance(result, StudioError):
                errors.append(result)
            else:
                done += 1
        if not done:
            raise errors[0] if errors else ModelNotFound(
                f"No Ollama host has the model '{model}'.")

    def unload(self, model: str) -> None:
        self._on_hosts_with(model, lambda c: c.unload(model))

    def delete(self, model: str) -> None:
        self._on_hosts_with(model, lambda c: c.delete(model))

    def copy(self, source: str, destination: str) -> None:
        self._on_hosts_with(source, lambda c: c.copy(source, destination))

    def pull(self, model: str) -> Iterator[PullProgress]:
        """Pull onto every host, one after the other. A host that can't be reached is
        skipped with a progress line saying so; the pull fails only when no host took it."""
        pulled, errors = 0, []
        for spec in (v.spec for v in self.pool.views()):
            try:
                for part in self._clients.get(spec).pull(model):
                    if part.status != "success":  # one "success" at the very end
                        yield replace(part, status=f"{spec.name}: {part.status}")
                pulled += 1
            except BackendUnavailable as err:
                errors.append(err)
                yield PullProgress(status=f"{spec.name}: skipped, can't be reached")
        if not pulled:
            raise errors[0]
        yield PullProgress(status="success")

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None) -> Iterator:
        """Stream from the best host; before the first piece, move on to the next host."""
        return routed_stream(self.pool, self._clients.get, "Ollama", model, messages, options)


def build_ollama(hosts, *, timeout: float, health_interval: float,
                 probe_timeout: float = 5.0) -> tuple[OllamaClient | OllamaHosts,
                                                      HealthChecker | None]:
    """The studio's Ollama: a plain client for one host; for several, an ``OllamaHosts``
    and its health checker (started: its first round runs in the background)."""
    from ..models.pulls import full_model_name

    if len(hosts) == 1:
        return OllamaClient(hosts[0].url, timeout=timeout, key=hosts[0].key), None
    pool = HostPool(hosts, canonical=full_model_name)
    checker = HealthChecker(pool, ollama_probe(ollama_clients(probe_timeout)),
                            interval_s=health_interval, timeout_s=probe_timeout, name="ollama")
    return OllamaHosts(pool, ollama_clients(timeout)), checker.start()
