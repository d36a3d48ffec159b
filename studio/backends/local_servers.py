"""OpenAI-compatible local servers (``STUDIO_OPENAI_SERVERS``): llama.cpp's
``llama-server``, vLLM, LM Studio, SGLang, another studio.

Their models are offered in the pickers as ``local:<name>`` beside Ollama's, and a chat with
one goes to a server that lists it, routed and failed over like Ollama's hosts (the pool:
sticky conversation, least busy per weight, cooldown after a failure). Replies are local
work: no cloud price, accounted like Ollama's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

from ..clients.openai_compat import OpenAICompatClient, ServerModel
from ..errors import BackendUnavailable, StudioError
from ..events import ChatMessage, ChatOptions
from .health import Health, HealthChecker
from .hosts import HostSpec
from .pool import HostPool
from .probes import Clients
from .routing import routed_stream


class LocalServers:
    """Several (or one) OpenAI-compatible servers as one chat backend named ``local``."""

    def __init__(self, pool: HostPool, clients: Clients[OpenAICompatClient]) -> None:
        self.pool = pool
        self._clients = clients
        self._workers = ThreadPoolExecutor(max_workers=min(8, len(pool)),
                                           thread_name_prefix="local-servers")

    def close(self) -> None:
        for v in self.pool.views():
            self._clients.get(v.spec).close()
        self._workers.shutdown(wait=False)

    def list_models(self) -> list[ServerModel]:
        """Every model any server lists, each once, by name. Raises the first server's error
        when none answered."""
        views = self.pool.views()

        def one(spec: HostSpec):
            try:
                return self._clients.get(spec).list_models()
            except StudioError as err:
                return err

        results = list(self._workers.map(one, [v.spec for v in views]))
        seen: dict[str, ServerModel] = {}
        errors = []
        for view, result in zip(views, results):
            if isinstance(result, StudioError):
                errors.append(result)
                if isinstance(result, BackendUnavailable):
                    self.pool.report_health(view.name, up=False, problem=str(result))
                continue
            self.pool.report_health(view.name, up=True, latency_ms=view.latency_ms,
                                    models=[m.name for m in result])
            for m in result:
                seen.setdefault(m.name, m)
        if errors and not seen and len(errors) == len(views):
            raise errors[0]
        return sorted(seen.values(), key=lambda m: m.name)

    def supports_vision(self, model: str) -> bool:
        return False  # /v1/models doesn't say; images are not sent to these servers

    def chat_stream(self, model: str, messages: Sequence[ChatMessage],
                    options: ChatOptions | None = None) -> Iterator:
        return routed_stream(self.pool, self._clients.get, "local server", model, messages,
                             options)


def server_probe(clients: Clients[OpenAICompatClient]):
    def probe(spec: HostSpec) -> Health:
        try:
            models = clients.get(spec).list_models()
        except StudioError as exc:
            return Health(False, problem=str(exc))
        return Health(True, models=tuple(m.name for m in models))

    return probe


def build_local_servers(hosts: Sequence[HostSpec], *, timeout: float, health_interval: float,
                        probe_timeout: float = 5.0
                        ) -> tuple[LocalServers | None, HealthChecker | None]:
    """The local-servers backend and its health checker (started), or (None, None) when
    ``STUDIO_OPENAI_SERVERS`` is empty."""
    if not hosts:
        return None, None

    def clients(limit: float) -> Clients[OpenAICompatClient]:
        return Clients(lambda spec: OpenAICompatClient(
            spec.url, key=spec.key, timeout=limit,
            shown_as=spec.url if spec.name in spec.url else f"{spec.name} ({spec.url})"))

    pool = HostPool(hosts)
    checker = HealthChecker(pool, server_probe(clients(probe_timeout)),
                            interval_s=health_interval, timeout_s=probe_timeout,
                            name="local servers")
    return LocalServers(pool, clients(timeout)), checker.start()
