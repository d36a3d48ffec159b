"""The studio's state as the operations endpoints read it: store, backends, GPU, spend,
queues. One gathering serves ``/readyz``, ``/status.json`` and the scrape-time part of
``/metrics``, so each figure is computed in one place.

Everything is read when asked (a scrape, a dashboard poll), from state the features
already keep: nothing here runs on a reply's path. Backend probes come from the status
strip's ``StatusBoard`` (parallel, short timeouts, cached a few seconds). No gradio imports.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from ..costs.budget import CapStatus
from ..models.gpu import GpuReading
from .status import BackendStatus


@dataclass(frozen=True)
class StoreCheck:
    ok: bool
    latency_ms: float


@dataclass(frozen=True)
class Readings:
    """One look at the studio. ``backends`` holds the configured ones only; ``budget_caps``
    the overall caps that are set (never per user); disk figures are those of the
    filesystem that holds the outputs folder, None when it can't be read."""

    store: StoreCheck
    backends: tuple[BackendStatus, ...]
    gpu: GpuReading
    spend_today_usd: Decimal
    cloud_today_usd: Decimal
    budget_caps: tuple[CapStatus, ...]
    image_queue: int
    active_replies: int
    active_pulls: int
    active_downloads: int
    disk_free_bytes: int | None
    disk_total_bytes: int | None


class _Pinged(Protocol):
    def ping(self, timeout: float = ...) -> bool: ...


class Operations:
    """Reads the studio's state for health, status and metrics. Each collaborator is the
    feature's own object (see ``build_services``); ``gpu`` is anything with ``sample()``."""

    def __init__(self, *, store: _Pinged, status, gpu, accounting, budget, replies, images,
                 pulls, downloads, outputs_dir: Path, store_timeout: float = 2.0) -> None:
        self._store = store
        self._status = status
        self._gpu = gpu
        self._accounting = accounting
        self._budget = budget
        self._replies = replies
        self._images = images
        self._pulls = pulls
        self._downloads = downloads
        self._outputs_dir = Path(outputs_dir)
        self._store_timeout = store_timeout

    def store(self) -> StoreCheck:
        """Does the database answer a ``SELECT 1``, and how fast."""
        started = time.monotonic()
        ok = self._store.ping(self._store_timeout)
        return StoreCheck(ok, round((time.monotonic() - started) * 1000, 1))

    def backends(self) -> tuple[BackendStatus, ...]:
        """The configured backends' reachability (OpenRouter only with a key)."""
        return tuple(s for s in self._status.statuses() if s.configured)

    def read(self) -> Readings:
        """Everything at once (a few SQLite queries, an NVML reading, cached probes)."""
        spend = self._accounting.spend("today")
        caps = tuple(c for c in self._budget.budget_status().caps if c.scope == "all")
        free, total = _disk(self._outputs_dir)
        return Readings(
            store=self.store(), backends=self.backends(), gpu=self._gpu.sample(record=False),
            spend_today_usd=spend.total_usd, cloud_today_usd=spend.cloud_usd,
            budget_caps=caps, image_queue=self._images.queue_depth(),
            active_replies=self._replies.active_count(),
            active_pulls=len(self._pulls.active()),
            active_downloads=sum(1 for d in self._downloads.list() if not d.finished),
            disk_free_bytes=free, disk_total_bytes=total)


def _disk(path: Path) -> tuple[int | None, int | None]:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None, None
    return usage.free, usage.total

