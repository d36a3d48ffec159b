"""An image job while it runs, and what followers see of it: ``LiveJob`` (a ``live.Live``
written by the item threads), its ``JobSnapshot`` with the ``ItemProgress`` of the image
being made and the ``ShownImage``s made so far, and the ``FinishedJob`` the accounting
hook is told about. Running, scheduling and storing are ``jobs.py`` and ``runner.py``.

No gradio imports here.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..live import Live
from ..store.images import GalleryImage, ImageJob


@dataclass(frozen=True)
class ItemProgress:
    """Where the image being made stands. ``state``: queued (in ComfyUI's queue),
    running, resumed (picked up after a studio restart) or storing."""

    seq: int
    state: str
    position: int | None = None
    node: str = ""
    node_class: str = ""
    step: int = 0
    steps: int = 0
    host: str = ""  # the ComfyUI host making it, as a page names it ("" with one host)
    note: str = ""  # why it is there: another host failed it first


@dataclass(frozen=True)
class ShownImage:
    id: int
    path: str  # absolute
    thumb: str
    caption: str


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    user: str
    title: str
    workflow: str
    status: str  # queued | running | done | partial | failed | cancelled
    total: int
    done: int  # items finished (with images)
    failed: int
    cancelled: int
    images: tuple[ShownImage, ...]
    current: ItemProgress | None
    waiting_ahead: int | None  # images of other jobs before ours while we wait in the studio
    preview: Any  # a PIL image or None
    preview_version: int
    error: str
    version: int
    created_at: str = ""

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")

    @property
    def settled(self) -> int:
        return self.done + self.failed + self.cancelled


@dataclass(eq=False)
class LiveJob(Live):
    """One job while it runs; followers read snapshots, item threads write under ``cond``."""

    job_id: str
    user: str
    lane: str
    title: str
    workflow: str
    total: int
    created_at: str
    order: int  # submission order, for fairness ties
    via: str = ""  # how it came in: "" from a page, "api: <key name>" through /v1
    status: str = "queued"
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    images: list[ShownImage] = field(default_factory=list)
    progress: dict[int, ItemProgress] = field(default_factory=dict)  # item id -> progress
    preview: Any = None
    preview_version: int = 0
    error: str = ""
    waiting_ahead: int | None = None
    gpu_seconds: float = 0.0
    model: str = ""
    pending: deque = field(default_factory=deque)  # item ids not sent (scheduler's lock)
    inflight: dict[int, threading.Event] = field(default_factory=dict)  # item id -> cancel
    # Items handed to a worker thread that hasn't returned yet (scheduler's lock). Until the
    # thread registers its item in ``inflight`` this is the only trace of it, and a job
    # finished in that gap would be stored "done" with an image still to come.
    slots: int = 0
    cancel_requested: bool = False
    finishing: bool = False
    # Gallery images of this job already accounted when it finished once before: a job
    # reopened at start-up (an image left for it, ``ImageJobs.start``) books only the rest.
    booked_images: int = 0

    def _snapshot_locked(self) -> JobSnapshot:
        current = None
        if self.progress:
            running = [p for p in self.progress.values() if p.state == "running"]
            current = (running or list(self.progress.values()))[-1]
        return JobSnapshot(
            job_id=self.job_id, user=self.user, title=self.title, workflow=self.workflow,
            status=self.status, total=self.total, done=self.done, failed=self.failed,
            cancelled=self.cancelled, images=tuple(self.images), current=current,
            waiting_ahead=self.waiting_ahead, preview=self.preview,
            preview_version=self.preview_version, error=self.error, version=self.version,
            created_at=self.created_at)

    def update_progress(self, item_id: int, **updates: Any) -> None:
        with self.cond:
            current = self.progress.get(item_id)
            if current is None:
                return
            self.progress[item_id] = replace(current, **updates)
            self.notify()


@dataclass(frozen=True)
class FinishedJob:
    """What the accounting hook is told about a job that ended."""

    job_id: str
    user: str
    workflow: str
    model: str
    status: str
    images: int
    gpu_seconds: float
    via: str = ""


def snapshot_from_db(job: ImageJob, images: Sequence[ShownImage], counts: Mapping[str, int]
                     ) -> JobSnapshot:
    """A finished (or not yet picked up) job as followers see it, from its rows."""
    return JobSnapshot(job_id=job.id, user=job.user, title=job.title, workflow=job.workflow,
                       status=job.status, total=job.total, done=counts.get("done", 0),
                       failed=counts.get("failed", 0), cancelled=counts.get("cancelled", 0),
                       images=tuple(images), current=None, waiting_ahead=None, preview=None,
                       preview_version=0, error=job.error, version=0, created_at=job.created_at)


# --------------------------------------------------------------------------- the service


def shown_image(image: GalleryImage, outputs_dir: Path) -> ShownImage:
    """How the page shows a stored image: absolute paths and a caption."""
    caption = (f"seed {image.seed}" if image.seed is not None
               else image.params.get("workflow_title") or image.workflow)
    return ShownImage(image.id, str(outputs_dir / image.path), str(outputs_dir / image.thumb),
                      caption)
