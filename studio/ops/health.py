"""Health and status for the homelab's watchers: ``/healthz``, ``/readyz``, ``/status.json``.

- ``/healthz``: the process answers. ``ok``, no sign-in, no store or backend call (the
  compose healthcheck, Uptime Kuma's keyword monitor).
- ``/readyz``: can the studio do its work? The store must answer a ``SELECT 1`` (else 503,
  "unready"); a backend that is down makes it "degraded" (still 200: chats on the others
  and history work). No sign-in, so no address, URL, key or error text is in the answer.
- ``/status.json``: the figures a dashboard tile shows (Homepage's customapi widget,
  Organizr): backends, GPU, today's spend, queues. Behind ``STUDIO_METRICS_TOKEN`` once
  sign-in is on (``metrics.token_refusal``).

The work is ``Operations``'s (``readings.py``); this module only shapes the answers.
No gradio imports.
"""

from __future__ import annotations

from typing import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..models.gpu import GpuReading
from .metrics import token_refusal
from .readings import Operations, Readings, StoreCheck
from .status import backend_key
from .status import BackendStatus

NO_STORE = {"Cache-Control": "no-store"}


def _check(status: BackendStatus) -> dict:
    return {"ok": status.up, "latency_ms": status.latency_ms}


def readiness(store: StoreCheck, backends: tuple[BackendStatus, ...]) -> tuple[int, dict]:
    """(HTTP status, body) of ``/readyz``: 503 "unready" when the store fails, "degraded"
    when a backend is down, else "ready". Only booleans and timings, by design.

    >>> readiness(StoreCheck(False, 2000.0), ())
    (503, {'status': 'unready', 'checks': {'store': {'ok': False, 'latency_ms': 2000.0}}})
    """
    checks = {"store": {"ok": store.ok, "latency_ms": store.latency_ms}}
    checks.update((backend_key(s), _check(s)) for s in backends)
    if not store.ok:
        return 503, {"status": "unready", "checks": checks}
    state = "ready" if all(s.up for s in backends) else "degraded"
    return 200, {"status": state, "checks": checks}


def _gpus(reading: GpuReading) -> list[dict]:
    cards = []
    for d in reading.devices if reading.available else ():
        percent = (round(100 * d.memory_used / d.memory_total, 1)
                   if d.memory_used is not None and d.memory_total else None)
        cards.append({"index": d.index, "name": d.name, "memory_used_bytes": d.memory_used,
                      "memory_total_bytes": d.memory_total, "memory_used_percent": percent,
                      "temperature_c": d.temperature_c, "utilization_percent": d.utilization_gpu,
                      "power_w": d.power_w})
    return cards


def status_document(r: Readings) -> dict:
    """The body of ``/status.json``; ``gpu`` is the first card (None without NVML), ``gpus``
    every card. Flat enough for Homepage's field mappings (``backends.ollama.up``)."""
    _code, ready = readiness(r.store, r.backends)
    gpus = _gpus(r.gpu)
    return {
        "status": ready["status"],
        "backends": {backend_key(s): {"up": s.up, "latency_ms": s.latency_ms}
                     for s in r.backends},
        "backends_up": sum(s.up for s in r.backends),
        "backends_total": len(r.backends),
        "gpu": gpus[0] if gpus else None,
        "gpus": gpus,
        "spend_today_usd": round(float(r.spend_today_usd), 4),
        "cloud_today_usd": round(float(r.cloud_today_usd), 4),
        "budget_used": {cap.period: round(cap.fraction, 4) for cap in r.budget_caps},
        "image_queue": r.image_queue,
        "active_replies": r.active_replies,
        "active_pulls": r.active_pulls,
        "active_downloads": r.active_downloads,
    }


class HealthApi:
    """The three routes over ``Operations``."""

    def __init__(self, operations: Operations, *, token: str,
                 sign_in_required: Callable[[], bool]) -> None:
        self._operations = operations
        self._token = token
        self._sign_in_required = sign_in_required

    def routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
                Route("/status.json", self.status, methods=["GET"])]

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok", headers=NO_STORE)

    async def readyz(self, request: Request) -> Response:
        operations = self._operations
        store, backends = await run_in_threadpool(
            lambda: (operations.store(), operations.backends()))
        code, body = readiness(store, backends)
        return JSONResponse(body, status_code=code, headers=NO_STORE)

    async def status(self, request: Request) -> Response:
        refusal = token_refusal(request, self._token, self._sign_in_required())
        if refusal is not None:
            return refusal
        readings = await run_in_threadpool(self._operations.read)
        return JSONResponse(status_document(readings), headers=NO_STORE)
