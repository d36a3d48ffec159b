"""Prometheus metrics: ``GET /metrics`` in the text format, through ``prometheus_client``.

Two kinds of figures, kept in a private ``CollectorRegistry`` (several studios in one
process, as in tests, never collide):

- **Events**, counted as they happen by two hooks that already run once per piece of work:
  ``observe_reply`` (a chat or API reply settled; ``ReplyManager``'s ``on_settled`` after
  accounting) and ``observe_image_job`` (an image job finished). O(1) per reply; the
  streaming loop is untouched.
- **State**, read at scrape time from ``Operations`` (``readings.py``): backends up, GPU
  gauges, budget use, queues, free disk.

Labels stay bounded: a kind from a fixed list, a StudioError class name, a backend, and the
model that answered (a model that exists: failed replies carry no model label); never a
conversation, a prompt, a user or free text. The token check for ``/metrics`` and
``/status.json`` lives here too. No gradio imports.
"""

from __future__ import annotations

import hmac
from importlib import metadata
from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import StudioError
from .readings import Operations, Readings
from .status import backend_key

KINDS = ("chat_page", "api", "image")
OUTCOMES = ("done", "partial", "failed", "cancelled")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
NO_TOKEN = ("Set STUDIO_METRICS_TOKEN and send it as 'Authorization: Bearer <token>': with "
            "sign-in on, /metrics and /status.json answer only with that token.")
BAD_TOKEN = "Send STUDIO_METRICS_TOKEN as 'Authorization: Bearer <token>'."


def error_label(kind: str) -> str:
    """A StudioError class name as it is, anything else "Other" (labels stay bounded).

    >>> error_label("BackendUnavailable"), error_label("Ignore previous instructions")
    ('BackendUnavailable', 'Other')
    """
    return kind if kind in _error_names() else "Other"


def _error_names() -> frozenset[str]:
    names, todo = {"UnexpectedError"}, [StudioError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def studio_version() -> str:
    try:
        return metadata.version("hephaestus-studio")
    except metadata.PackageNotFoundError:
        return "unknown"


class StudioMetrics:
    """The event counters and histograms, and the scrape that adds the state gauges."""

    def __init__(self, *, version: str | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("studio_requests", "Replies and image jobs, by kind "
                                "(chat_page, api, image).", ["kind"], registry=registry)
        self.errors = Counter("studio_errors", "Requests refused, and replies that ended in "
                              "an error, by kind and StudioError class.", ["kind", "error"],
                              registry=registry)
        self.ttft = Histogram("studio_time_to_first_token_seconds", "Seconds from the start "
                              "of a reply to its first token.", ["backend", "model"],
                              buckets=TTFT_BUCKETS, registry=registry)
        self.duration = Histogram("studio_reply_duration_seconds", "Seconds a reply took, "
                                  "start to end.", ["backend", "model"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.tokens = Counter("studio_tokens", "Tokens read (in: the prompt) and written "
                              "(out: the reply).", ["backend", "model", "direction"],
                              registry=registry)
        self.cost = Counter("studio_cost_usd", "Cloud cost of replies in USD, as accounted "
                            "(local models count 0).", ["backend", "model"], registry=registry)
        self.image_jobs = Counter("studio_image_jobs", "Image jobs that ended, by outcome.",
                                  ["outcome"], registry=registry)
        Info("studio_build", "The studio's version.", registry=registry).info(
            {"version": version or studio_version()})
        for kind in KINDS:  # present from the start, so rates exist before any traffic
            self.requests.labels(kind)
        for outcome in OUTCOMES:
            self.image_jobs.labels(outcome)

    def observe_reply(self, snap, row) -> None:
        """A reply settled (``record_usage``'s ``observe``): ``snap`` a ``ReplySnapshot``,
        ``row`` its usage row or None."""
        kind = "api" if snap.via.startswith("api") else "chat_page"
        self.requests.labels(kind).inc()
        if snap.failure_kind:
            self.errors.labels(kind, error_label(snap.failure_kind)).inc()
        if not snap.backend:  # no model answered: an asked-for name is free text
            return
        labels = (snap.backend, snap.answered_by)
        if snap.ttft_ms is not None:
            self.ttft.labels(*labels).observe(snap.ttft_ms / 1000)
        self.duration.labels(*labels).observe(snap.elapsed_ms / 1000)
        usage = snap.usage
        self.tokens.labels(*labels, "in").inc(usage.prompt_tokens or 0)
        self.tokens.labels(*labels, "out").inc(usage.completion_tokens or 0)
        self.cost.labels(*labels).inc(max(float(row.cost_usd or 0), 0.0) if row else 0.0)

    def observe_refusal(self, kind: str, exc: Exception) -> None:
        """A request refused before a reply started (a limit, a budget, bad input, an
        unknown model): a request, and an error of its class."""
        self.requests.labels(kind).inc()
        self.errors.labels(kind, error_label(type(exc).__name__)).inc()

    def observe_image_job(self, finished) -> None:
        """An image job ended (``build_image_jobs``'s ``observe``): a ``FinishedJob``."""
        self.requests.labels("image").inc()
        if finished.status in OUTCOMES:
            self.image_jobs.labels(finished.status).inc()

    def exposition(self, readings: Readings) -> bytes:
        """The text format: the events so far, then the state in ``readings``."""
        return generate_latest(_Scrape(self.registry, readings))


class _Scrape:
    """What ``generate_latest`` reads: the registry's metrics, then the state gauges of this
    one scrape (a registry of its own each time would re-register them)."""

    def __init__(self, registry: CollectorRegistry, readings: Readings) -> None:
        self._registry = registry
        self._readings = readings

    def collect(self) -> Iterator:
        yield from self._registry.collect()
        yield from state_metrics(self._readings)


def _gauge(name: str, help: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help, labels=list(labels))


def state_metrics(r: Readings) -> list[GaugeMetricFamily]:
    """The scrape-time gauges of one ``Readings``."""
    up = _gauge("studio_backend_up", "1 when the backend answered its probe, else 0.",
                ("backend",))
    latency = _gauge("studio_backend_latency_seconds", "How long the backend's probe took.",
                     ("backend",))
    for status in r.backends:
        up.add_metric([backend_key(status)], 1.0 if status.up else 0.0)
        if status.latency_ms is not None:
            latency.add_metric([backend_key(status)], status.latency_ms / 1000)
    store = _gauge("studio_store_up", "1 when the database answers a SELECT 1.")
    store.add_metric([], 1.0 if r.store.ok else 0.0)

    gpu = {key: _gauge(f"studio_gpu_{key}", help, ("gpu",)) for key, help in (
        ("memory_used_bytes", "GPU memory in use, bytes."),
        ("memory_total_bytes", "GPU memory in all, bytes."),
        ("utilization_percent", "GPU load, percent."),
        ("temperature_celsius", "GPU temperature, degrees Celsius."),
        ("power_watts", "GPU power draw, watts."))}
    for device in r.gpu.devices if r.gpu.available else ():
        for key, value in (("memory_used_bytes", device.memory_used),
                           ("memory_total_bytes", device.memory_total),
                           ("utilization_percent", device.utilization_gpu),
                           ("temperature_celsius", device.temperature_c),
                           ("power_watts", device.power_w)):
            if value is not None:
                gpu[key].add_metric([str(device.index)], float(value))

    budget = _gauge("studio_budget_used_ratio", "Share of an overall cloud budget cap used "
                    "(spent and reserved / cap), per period (day, month).", ("period",))
    for cap in r.budget_caps:
        budget.add_metric([cap.period], cap.fraction)
    spend = _gauge("studio_spend_today_usd", "Today's spend in USD: cloud bills and the "
                   "energy of local work.")
    spend.add_metric([], float(r.spend_today_usd))
    figures = []
    for name, help, value in (
            ("studio_image_queue_depth", "Images asked for and not finished yet.",
             r.image_queue),
            ("studio_active_replies", "Chat replies being written now.", r.active_replies),
            ("studio_pulls_active", "Ollama model pulls running now.", r.active_pulls),
            ("studio_downloads_active", "Model file downloads running now.",
             r.active_downloads),
            ("studio_outputs_disk_free_bytes", "Free bytes on the filesystem of the outputs "
             "folder.", r.disk_free_bytes),
            ("studio_outputs_disk_size_bytes", "Size in bytes of the filesystem of the "
             "outputs folder.", r.disk_total_bytes)):
        if value is not None:
            figure = _gauge(name, help)
            figure.add_metric([], float(value))
            figures.append(figure)
    return [up, latency, store, *gpu.values(), budget, spend, *figures]


# -- the routes ------------------------------------------------------------------------------


def token_refusal(request: Request, token: str, sign_in_required: bool) -> Response | None:
    """None when the request may read /metrics or /status.json, else the answer: with a
    token set, ``Authorization: Bearer <token>`` is needed (401 without it); without one,
    these are open while sign-in is off and 403 with a sentence once it is on."""
    if not token:
        return JSONResponse({"error": NO_TOKEN}, status_code=403) if sign_in_required else None
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode()):
        return None
    return JSONResponse({"error": BAD_TOKEN}, status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="studio metrics"'})


class MetricsApi:
    """``GET /metrics`` over ``StudioMetrics`` and ``Operations``."""

    def __init__(self, metrics: StudioMetrics, operations: Operations, *, token: str,
                 sign_in_required: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._operations = operations
        self._token = token
        self._sign_in_required = sign_in_required

    def routes(self) -> list[Route]:
        return [Route("/metrics", self.metrics, methods=["GET"])]

    async def metrics(self, request: Request) -> Response:
        refusal = token_refusal(request, self._token, self._sign_in_required())
        if refusal is not None:
            return refusal
        # SQLite, NVML and the backend probes block: off the event loop.
        body = await run_in_threadpool(
            lambda: self._metrics.exposition(self._operations.read()))
        return Response(body, media_type=CONTENT_TYPE_LATEST)
