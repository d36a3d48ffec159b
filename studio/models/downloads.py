"""Model-file downloads into ComfyUI's models directory.

Owns the background ``Download`` job (httpx streaming into ``<name>.part``, resume with an
HTTP Range request, cancel, optional SHA-256 check, ``os.replace`` onto the final name only
when complete and verified) and ``DownloadManager``, which keeps jobs by id in memory so
that a reloaded page can find their progress. Where a file may go is decided before, by
``model_files.plan_download``. A file under its final name is always complete. Must not:
import gradio, talk to ComfyUI itself, or write outside the models directory.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping
from urllib.parse import urlsplit

import httpx

from ..access.urls import GuardedTransport, UrlGuard
from ..errors import (BackendRejected, BackendUnavailable, InvalidInput, StreamInterrupted,
                     StudioError)
from ..live import Live, Registry
from .gpu import format_bytes
from .files import DownloadPlan

log = logging.getLogger(__name__)

STATES = ("queued", "running", "verifying", "done", "failed", "cancelled")
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})


class DownloadFailed(StudioError):
    """A download could not be completed or saved (the message says what happened to the file)."""


class ChecksumMismatch(DownloadFailed):
    """The finished file's SHA-256 differs from the expected one; the file was deleted."""


class NotEnoughSpace(DownloadFailed):
    """The disk is (or would be) too full for the file."""


# ---------------------------------------------------------------------------- the job

@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of a job. ``total``/``percent``/``eta_s`` are None when the size is unknown."""

    id: str
    url: str
    folder: str
    filename: str
    state: str
    bytes_done: int = 0
    total: int | None = None
    percent: float | None = None
    speed_bps: float = 0.0
    eta_s: float | None = None
    resumed_from: int = 0
    message: str = ""
    path: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class _Cancelled(Exception):
    pass


class _Restart(Exception):
    """The partial file can't be continued; throw it away and start from byte 0."""


_SPEED_WINDOW_S = 5.0


def _default_client(transport: httpx.BaseTransport | None = None) -> httpx.Client:
    # Long read timeout: big CDNs sometimes pause a while; connect fails fast.
    return httpx.Client(follow_redirects=True, max_redirects=5, transport=transport,
                        timeout=httpx.Timeout(60.0, connect=15.0),
                        headers={"User-Agent": "hephaestus-studio"})


def guarded_client_factory(guard: UrlGuard) -> Callable[[], httpx.Client]:
    """Clients that fetch public addresses only (each redirect hop checked by ``guard``)."""
    return lambda: _default_client(GuardedTransport(guard))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class Download(Live):
    """One file download, run by ``start()`` in a background thread (or ``run()`` inline).

    Writes ``<target>.part``; an existing ``.part`` is resumed with ``Range: bytes=N-``
    (206 continues, 200 starts over, 416 means it was complete or is unusable). The final
    name appears only after the whole file arrived and matched ``plan.sha256``.
    Injected for tests: ``client_factory`` (an ``httpx.Client``), ``opener(path, mode)`` for
    the part file, ``disk_usage`` and ``clock``. ``on_progress`` is called from the worker
    thread after every chunk.
    """

    def __init__(self, plan: DownloadPlan, *, job_id: str | None = None,
                 client_factory: Callable[[], httpx.Client] = _default_client,
                 opener: Callable[[Path, str], BinaryIO] = open,
                 disk_usage: Callable[[Any], Any] = shutil.disk_usage,
                 clock: Callable[[], float] = time.monotonic, chunk_size: int = 1 << 20,
                 headers: Mapping[str, str] | None = None,
                 on_progress: Callable[[DownloadProgress], None] | None = None):
        super().__init__()
        self.plan = plan
        self.id = job_id or uuid.uuid4().hex[:12]
        self._client_factory = client_factory
        self._opener = opener
        self._disk_usage = disk_usage
        self._clock = clock
        self._chunk_size = chunk_size
        self._headers = dict(headers or {})
        self._on_progress = on_progress
        self._cancel = threading.Event()
        self._delete_partial = False
        self._thread: threading.Thread | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._free_at_start: int | None = None
        self.error: StudioError | None = None
        self._progress = DownloadProgress(self.id, plan.url, plan.folder, plan.filename, "queued",
                                          message="Waiting to start.")

    # -- public

    def start(self) -> "Download":
        """Run the download in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.run, name=f"download-{self.id}", daemon=True)
        self._thread.start()
        return self

    def _snapshot_locked(self) -> DownloadProgress:
        return self._progress

    progress = Live.snapshot  # a download's snapshot is its progress

    def cancel(self, delete_partial: bool = False) -> None:
        """Stop after the current chunk. The ``.part`` stays for a later resume unless
        ``delete_partial``; on a job that already failed or was cancelled, ``delete_partial``
        throws its ``.part`` away."""
        with self.cond:
            self._delete_partial = self._delete_partial or delete_partial
            state = self._progress.state
        self._cancel.set()
        if state in ("failed", "cancelled") and delete_partial:
            self._remove_part()

    def run(self) -> None:
        """Do the whole download in the calling thread; the outcome lands in ``progress()``."""
        try:
            if self._cancel.is_set():
                raise _Cancelled
            self._update(state="running", message="Connecting.")
            self._transfer()
            self._update(state="done", path=str(self.plan.target), eta_s=0.0, percent=100.0,
                         message=f"Saved {self.plan.filename} to {self.plan.folder}.")
        except _Cancelled:
            with self.cond:
                delete = self._delete_partial
            if delete:
                self._remove_part()
            kept = "" if delete or not self.plan.part.exists() else \
                " The partial file is kept; start it again to resume."
            self._update(state="cancelled", speed_bps=0.0, eta_s=None,
                         message=f"Cancelled {self.plan.filename}.{kept}")
        except StudioError as err:
            self.error = err
            self._update(state="failed", speed_bps=0.0, eta_s=None, message=str(err))
        except Exception as err:  # a bug or an odd OS error: keep the thread's story in the log
            log.exception("download %s of %s failed", self.id, self.plan.url)
            self.error = DownloadFailed(f"Downloading {self.plan.filename} failed unexpectedly "
                                        f"({type(err).__name__}).", hint="Details are in the log.")
            self.error.__cause__ = err
            self._update(state="failed", speed_bps=0.0, eta_s=None, message=str(self.error))

    # -- the work

    def _transfer(self) -> None:
        self.plan.check_inside()
        try:
            self.plan.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DownloadFailed(f"Could not create the folder {self.plan.target.parent}: "
                                 f"{err.strerror}.", hint="Check the models folder setting "
                                 "and that the studio's user may write there.") from err
        with self._client_factory() as client:
            for _attempt in range(3):
                try:
                    hasher = self._fetch(client)
                    break
                except _Restart:
                    self._remove_part()
            else:
                raise DownloadFailed(f"The server for {self.plan.filename} keeps refusing to "
                                     "continue the partial file.", hint="Try again later.")
        self._finish(hasher)

    def _fetch(self, client: httpx.Client) -> Any:
        """One request: stream into the part file. Returns the running hash (or None)."""
        part = self.plan.part
        offset = part.stat().st_size if part.exists() else 0
        headers = dict(self._headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        host = urlsplit(self.plan.url).hostname
        try:
            with client.stream("GET", self.plan.url, headers=headers) as response:
                if response.status_code == 416 and offset:
                    _start, total = _content_range(response.headers.get("content-range"))
                    if total != offset:
                        raise _Restart
                    self._update(bytes_done=offset, total=total, percent=100.0, resumed_from=offset)
                    return self._hash_existing(part)
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, host)
                if response.status_code == 206 and offset:
                    start, total = _content_range(response.headers.get("content-range"))
                    if start != offset:
                        raise _Restart
                else:  # 200: the server sends the whole file, so start over
                    offset = 0
                    length = response.headers.get("content-length")
                    total = int(length) if length and length.isdigit() else None
                if response.headers.get("content-type", "").startswith("text/html"):
                    raise DownloadFailed(f"The link for {self.plan.filename} returned a web page, "
                                         "not a file.", hint="On Hugging Face use the 'resolve/' "
                                         "download link, not the 'blob/' page.")
                self._check_space(offset, total)
                return self._write(response, offset, total)
        except httpx.HTTPError as err:
            raise self._transport_error(err, host) from err

    def _write(self, response: httpx.Response, offset: int, total: int | None) -> Any:
        hasher = self._hash_existing(self.plan.part) if offset and self.plan.sha256 else (
            hashlib.sha256() if self.plan.sha256 else None)
        self._samples.clear()
        self._samples.append((self._clock(), offset))
        self._update(state="running", bytes_done=offset, total=total, resumed_from=offset,
                     message="Resuming." if offset else "Downloading.")
        done = offset
        try:
            with self._opener(self.plan.part, "ab" if offset else "wb") as out:
                for chunk in response.iter_bytes(self._chunk_size):
                    if self._cancel.is_set():
                        raise _Cancelled
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    done += len(chunk)
                    self._advance(done, total)
                out.flush()
                # On disk before the rename, so a crash never leaves a short file under the
                # final name.
                try:
                    fd = out.fileno()
                except (AttributeError, io.UnsupportedOperation):
                    fd = None  # an injected writer without a real file behind it
                if fd is not None:
                    os.fsync(fd)
        except OSError as err:
            if _is_disk_full(err):
                self._remove_part()
                raise self._disk_full(total, done) from err
            raise DownloadFailed(f"Could not write {self.plan.part}: {err.strerror or err}.",
                                 hint="Check that the studio's user may write to the models "
                                      "folder.") from err
        if total is not None and done != total:
            raise StreamInterrupted(f"The download of {self.plan.filename} ended at "
                                    f"{format_bytes(done)} of {format_bytes(total)}.",
                                    hint="Start it again to resume from there.")
        return hasher

    def _finish(self, hasher: Any) -> None:
        if self.plan.sha256:
            got = hasher.hexdigest()
            if got != self.plan.sha256:
                self._remove_part()
                raise ChecksumMismatch(
                    f"{self.plan.filename} does not match its SHA-256: expected "
                    f"{self.plan.sha256}, got {got}. The file was deleted.",
                    hint="Check the checksum on the model page, then download again.")
        try:
            os.replace(self.plan.part, self.plan.target)
        except OSError as err:
            raise DownloadFailed(f"Could not rename {self.plan.part.name} to "
                                 f"{self.plan.filename}: {err.strerror}.",
                                 hint="The partial file is kept; check the folder's permissions."
                                 ) from err

    # -- helpers

    def _hash_existing(self, path: Path) -> Any:
        if not self.plan.sha256:
            return None
        self._update(state="verifying", message="Checking the part already downloaded.")
        hasher = hashlib.sha256()
        with open(path, "rb") as existing:
            for block in iter(lambda: existing.read(1 << 20), b""):
                if self._cancel.is_set():
                    raise _Cancelled
                hasher.update(block)
        return hasher

    def _check_space(self, offset: int, total: int | None) -> None:
        try:
            free = self._disk_usage(self.plan.target.parent).free
        except OSError:
            return  # can't tell; the write itself will report a full disk
        self._free_at_start = free
        if total is not None and total - offset > free:
            raise NotEnoughSpace(
                f"Not enough disk space for {self.plan.filename}: it needs "
                f"{format_bytes(total - offset)} more and only {format_bytes(free)} is free "
                f"on the disk holding {self.plan.target.parent}.",
                hint="Free up space and start it again.")

    def _disk_full(self, total: int | None, done: int) -> NotEnoughSpace:
        needed = (f"The whole file needs {format_bytes(total)}" if total is not None
                  else f"The file needs more than {format_bytes(done)}")
        free = (f" and {format_bytes(self._free_at_start)} was free when it started"
                if self._free_at_start is not None else "")
        return NotEnoughSpace(f"The disk ran out of space while saving {self.plan.filename} to "
                              f"{self.plan.target.parent}; the partial file was removed. "
                              f"{needed}{free}.", hint="Free up space and start it again.")

    def _http_error(self, status: int, host: str | None) -> BackendRejected:
        name = self.plan.filename
        if status in (401, 403):
            return BackendRejected(f"{host} refused to send {name} (HTTP {status}).", status=status,
                                   hint="The file may need a login or an access token "
                                        "(gated Hugging Face repos, Civitai).")
        if status == 404:
            return BackendRejected(f"{host} has no file at that link for {name} (HTTP 404).",
                                   status=status, hint="Check the URL.")
        if status == 429:
            return BackendRejected(f"{host} is limiting requests (HTTP 429).", status=status,
                                   hint="Wait a few minutes, then start it again.")
        return BackendRejected(f"{host} answered HTTP {status} for {name}.", status=status,
                               hint="Try again later; a partial file is kept for resuming.")

    def _transport_error(self, err: httpx.HTTPError, host: str | None) -> StudioError:
        if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)):
            return BackendUnavailable(f"Can't reach {host} to download {self.plan.filename}.",
                                      hint="Check the link and the server's internet connection.")
        progress = self.progress()
        where = (f" at {format_bytes(progress.bytes_done)} of {format_bytes(progress.total)}"
                 if progress.total else f" after {format_bytes(progress.bytes_done)}")
        why = "timed out" if isinstance(err, httpx.TimeoutException) else "the connection broke"
        return StreamInterrupted(f"The download of {self.plan.filename} stopped{where} ({why}).",
                                 hint="Start it again to resume from there.")

    def _advance(self, done: int, total: int | None) -> None:
        now = self._clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW_S:
            self._samples.popleft()
        (t0, b0) = self._samples[0]
        speed = (done - b0) / (now - t0) if now > t0 else 0.0
        eta = (total - done) / speed if total is not None and speed > 0 else None
        self._update(bytes_done=done, speed_bps=speed, eta_s=eta)

    def _update(self, **changes: Any) -> None:
        with self.cond:
            progress = replace(self._progress, **changes)
            if progress.total:
                percent = round(100 * progress.bytes_done / progress.total, 1)
                progress = replace(progress, percent=percent)
            self._progress = progress
            if progress.finished:
                self.finished = time.monotonic()
            self.notify()
        if self._on_progress is not None:
            self._on_progress(progress)

    def _remove_part(self) -> None:
        try:
            self.plan.part.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------- the manager

class DownloadManager:
    """Download jobs by id, in memory, so a reloaded page finds their progress and outcome.

    Thread-safe. ``job_options`` are passed to every ``Download`` (client_factory, opener,
    disk_usage, clock, chunk_size, headers). At most ``keep_finished`` finished jobs are kept.
    ``jobs`` is their registry: follow any change of any download with
    ``jobs.wait_changed`` (or ``live.wait_any``).
    """

    def __init__(self, *, keep_finished: int = 50, guard: UrlGuard | None = None,
                 **job_options: Any):
        self.jobs: Registry[Download] = Registry(keep=keep_finished)
        self._starting = threading.Lock()
        self._guard = guard
        if guard is not None:
            job_options.setdefault("client_factory", guarded_client_factory(guard))
        self._job_options = job_options

    def start(self, plan: DownloadPlan) -> Download:
        """Start ``plan`` in the background (resuming its ``.part`` if one is there).

        Raises InvalidInput if a job for the same file is still running, and (with a
        ``guard``) ``AddressRefused`` at once for a link to a private or local address.
        """
        if self._guard is not None:
            self._guard.check(plan.url)
        with self._starting:
            for job in self.jobs.items():
                if job.plan.target == plan.target and not job.progress().finished:
                    raise InvalidInput(f"{plan.filename} is already downloading into "
                                       f"{plan.folder}.",
                                       hint="Wait for it, or cancel it first.")
            job = Download(plan, **self._job_options)
            self.jobs.add(job.id, job)
        return job.start()

    def retry(self, job_id: str) -> Download:
        """Start a finished job's plan again; a kept ``.part`` is resumed."""
        return self.start(self.get(job_id).plan)

    def get(self, job_id: str) -> Download:
        """The job with ``job_id``; raises InvalidInput when unknown."""
        return self.jobs.require(job_id, "download")

    def progress(self, job_id: str) -> DownloadProgress:
        return self.get(job_id).progress()

    def list(self) -> list[DownloadProgress]:
        """Every kept job's progress, newest first."""
        return [job.progress() for job in reversed(self.jobs.items())]

    def cancel(self, job_id: str, *, delete_partial: bool = False) -> None:
        self.get(job_id).cancel(delete_partial=delete_partial)
