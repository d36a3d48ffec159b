"""Ollama pulls that run on the server and outlive the page that started them.

``PullManager.start(model)`` runs one pull per model on a daemon thread, reading Ollama's
progress lines (``OllamaClient.pull``) into a ``PullJob``. Any request, from any page,
reads ``snapshots()`` or follows changes with ``jobs.wait_changed``; reloading or closing the
page changes nothing for the pull. ``cancel`` stops it: the state says "cancelled" at once
and the worker closes the HTTP stream at the next line, which makes Ollama stop
downloading (it keeps the part it has, so pulling again resumes).

Jobs live in memory: a restart forgets them (Ollama itself keeps partial downloads).
No gradio imports here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import InvalidInput, StudioError
from ..live import Live, Registry

log = logging.getLogger(__name__)

STATES = ("running", "done", "failed", "cancelled")
CANCELLED_MESSAGE = ("Cancelled. Ollama keeps the part it already fetched; pull it again to "
                     "resume.")
_SPEED_WINDOW_S = 5.0


def full_model_name(name: str) -> str:
    """Ollama's name with the default tag added: ``llama3.2`` -> ``llama3.2:latest``.

    >>> full_model_name("llama3.2"), full_model_name("qwen3:8b"), full_model_name("a/b:1")
    ('llama3.2:latest', 'qwen3:8b', 'a/b:1')
    """
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def check_model_name(name: str) -> str:
    """The name to pull, stripped; raises InvalidInput when it is empty or has spaces."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("Type the name of a model to pull.",
                           hint="For example llama3.2, qwen3:8b or llava.")
    if any(c.isspace() for c in name):
        raise InvalidInput(f"Model names have no spaces (got {name!r}).",
                           hint="Copy the name from ollama.com/library, like qwen2.5:7b.")
    return name


@dataclass(frozen=True)
class PullSnapshot:
    """What any page sees of a pull at one moment. ``completed``/``total`` add up every
    layer seen so far; ``percent`` is None until a layer reports its size."""

    id: str
    model: str
    state: str
    status: str
    layer: str
    completed: int
    total: int
    percent: float | None
    speed_bps: float
    message: str
    started_at: float  # time.time() when it started
    version: int
    host: str = ""  # the one Ollama host it pulls onto; "" = every host (or the only one)

    @property
    def finished(self) -> bool:
        return self.state != "running"


@dataclass(eq=False)
class PullJob(Live):
    id: str
    model: str
    host: str = ""
    started_at: float = field(default_factory=time.time)
    state: str = "running"
    status: str = "starting"
    layer: str = ""
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> (done, total)
    speed_bps: float = 0.0
    message: str = "Starting."
    error: StudioError | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    samples: deque = field(default_factory=deque)

    def _snapshot_locked(self) -> PullSnapshot:
        done = sum(c for c, _t in self.layers.values())
        total = sum(t for _c, t in self.layers.values())
        percent = round(100 * done / total, 1) if total else None
        if self.state == "done":
            percent = 100.0
        return PullSnapshot(self.id, self.model, self.state, self.status, self.layer, done,
                            total, percent, self.speed_bps, self.message, self.started_at,
                            self.version, self.host)


class PullManager:
    """Pull jobs by id, in memory. Thread-safe.

    ``pull_fn(model)`` yields ``PullProgress`` lines and raises StudioError (normally
    ``OllamaClient.pull``); with several Ollama hosts ``pull_fn(model, host=name)`` pulls
    onto one of them (``OllamaHosts.pull``). At most ``keep_finished`` finished jobs are remembered.
    ``jobs`` is their registry: follow any change of any pull with ``jobs.wait_changed``
    (or ``live.wait_any``). ``on_pulled()`` runs after each pull that succeeded (the model
    pickers ask Ollama for its list again).
    """

    def __init__(self, pull_fn: Callable[[str], Iterator], *, keep_finished: int = 20,
                 clock: Callable[[], float] = time.monotonic,
                 on_pulled: Callable[[], None] | None = None):
        self._pull_fn = pull_fn
        self._on_pulled = on_pulled
        self._clock = clock
        self.jobs: Registry[PullJob] = Registry(keep=keep_finished)
        self._starting = threading.Lock()

    # -- public

    def start(self, model: str, host: str | None = None) -> PullSnapshot:
        """Start pulling ``model`` on a server thread; returns at once. ``host`` names the
        one Ollama host to pull onto (None: every host). A pull of the same model onto the
        same hosts that is still running is returned instead of starting a second one.
        Raises InvalidInput for an empty name or one with spaces."""
        name = check_model_name(model)
        host = host or ""
        with self._starting:
            for job in self.jobs.items():
                if (job.state == "running" and job.host == host
                        and full_model_name(job.model) == full_model_name(name)):
                    return job.snapshot()
            job_id = uuid.uuid4().hex[:12]
            job = self.jobs.add(job_id, PullJob(id=job_id, model=name, host=host))
        snap = job.snapshot()
        threading.Thread(target=self._run, args=(job,), name=f"pull-{job.id}",
                         daemon=True).start()
        return snap

    def get(self, job_id: str) -> PullSnapshot:
        """The job's snapshot; raises InvalidInput when unknown (e.g. from before a restart)."""
        return self._job(job_id).snapshot()

    def snapshots(self) -> list[PullSnapshot]:
        """Every remembered pull, newest first."""
        return [j.snapshot() for j in reversed(self.jobs.items())]

    def active(self) -> list[PullSnapshot]:
        return [s for s in self.snapshots() if not s.finished]

    def cancel(self, job_id: str) -> bool:
        """Cancel a running pull now; False when it had already ended. InvalidInput if unknown."""
        job = self._job(job_id)
        with job.cond:
            if job.state != "running":
                return False
            job.cancel_event.set()
            self._settle_locked(job, "cancelled", CANCELLED_MESSAGE)
        return True

    def wait(self, job_id: str, timeout: float) -> PullSnapshot:
        """Block until the pull has ended (or ``timeout``); returns its snapshot."""
        job = self._job(job_id)
        job.wait_finished(timeout)
        return job.snapshot()

    def _job(self, job_id: str) -> PullJob:
        return self.jobs.require(job_id, "pull")

    # -- the worker

    def _run(self, job: PullJob) -> None:
        stream = None
        succeeded = False
        try:
            stream = (self._pull_fn(job.model, host=job.host) if job.host
                      else self._pull_fn(job.model))
            for line in stream:
                if job.cancel_event.is_set():
                    break
                with job.cond:
                    if job.state != "running":
                        break
                    self._apply_locked(job, line)
                    if line.status == "success":
                        succeeded = True
            if succeeded and self._on_pulled is not None:
                self._on_pulled()  # before "done": whoever it wakes reads the new list
            with job.cond:
                if job.state == "running":
                    if succeeded:
                        onto = f" onto {job.host}" if job.host else ""
                        self._settle_locked(job, "done", f"Pulled {job.model}{onto}.")
                    else:
                        self._settle_locked(job, "failed", f"Ollama ended the pull of "
                                            f"{job.model} before it finished. Pull it again to "
                                            "resume.")
        except StudioError as exc:
            with job.cond:
                job.error = exc
                self._settle_locked(job, "failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker must always settle its job
            log.exception("pull %s of %s failed", job.id, job.model)
            with job.cond:
                self._settle_locked(job, "failed", f"Pulling {job.model} failed unexpectedly "
                                    f"({type(exc).__name__}). The studio log has the details.")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()  # drops the HTTP stream: Ollama stops a cancelled download
                except Exception:  # noqa: BLE001
                    log.debug("closing pull stream failed", exc_info=True)

    def _apply_locked(self, job: PullJob, line) -> None:
        job.status = line.status
        if line.digest:
            job.layer = line.layer
            done, total = job.layers.get(line.digest, (0, 0))
            job.layers[line.digest] = (line.completed or done, line.total or total)
            now = self._clock()
            overall = sum(c for c, _t in job.layers.values())
            job.samples.append((now, overall))
            while len(job.samples) > 2 and now - job.samples[0][0] > _SPEED_WINDOW_S:
                job.samples.popleft()
            t0, b0 = job.samples[0]
            job.speed_bps = (overall - b0) / (now - t0) if now > t0 else job.speed_bps
            job.message = f"Downloading layer {job.layer}."
        else:
            job.message = line.status[:1].upper() + line.status[1:] + "." if line.status else ""
        job.notify()

    def _settle_locked(self, job: PullJob, state: str, message: str) -> None:
        job.state = state
        job.message = message
        job.speed_bps = 0.0
        job.finished = time.monotonic()
        job.notify()
