"""ComfyUI client: queue API-format graphs, follow them over the websocket, fetch the images.

HTTP goes through httpx, the event stream through websocket-client (one socket and one
client id per job, opened *before* the prompt is queued so no event is missed). The
protocol details follow a real ComfyUI 0.8.0 (``shared/docs/protocols.md`` section 2 and
the recorded transcripts): duplicated ``status`` frames, ``progress_state``, cached
reruns, binary previews (type 1, or type 4 after negotiating ``supports_preview_metadata``),
``execution_error`` / ``execution_interrupted``, and the final ``executing {node: null}``.

If the websocket drops mid-run the client reconnects with the same client id and falls
back to polling ``/history/{prompt_id}``, so a finished image is never lost. Jobs are
tracked by a client-chosen prompt id, so a restarted studio can follow them with ``status``.

Transport failures become ``StudioError``s (original exception as ``__cause__``).
No gradio imports here.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import BackendRejected, BackendUnavailable, GenerationFailed
from .comfyui_job import _Job
from .comfyui_types import (START_HINT, Cached, Cancelled, Device, Done, Event, Executing,
                            ExecutionFailed, GenerationTimeout, HistoryEntry, ImageRef, JobLost,
                            NoAnswer, Preview, Progress, PromptRejected, PromptStatus, QueueItem, QueueState,
                            Queued, QueuedPrompt, ResultUnread, RunResult, Started, SystemStats, Timings,
                            UploadedImage, error_sentence, prompt_rejected)
from .tls import tls_context

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- client


class ComfyUIClient:
    """Talks to one ComfyUI server. Thread-safe; one websocket per running job.

    ``timeout`` bounds each HTTP request and websocket connect; ``run_timeout`` bounds a
    whole job (queue wait included) unless ``run``/``stream`` get their own;
    ``unreachable_grace`` how long a job waits for a ComfyUI that went away mid-run.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0, run_timeout: float = 600.0,
                 poll_interval: float = 1.0, transport: httpx.BaseTransport | None = None,
                 shown_as: str | None = None, unreachable_grace: float | None = None):
        self.base_url = base_url.rstrip("/")
        # How messages name the server: its URL by default; an app that must not show the
        # address (ComfyUI has no sign-in) names where it is configured instead.
        self.shown_as = shown_as or self.base_url
        self.timeout = timeout
        self.run_timeout = run_timeout
        self.poll_interval = poll_interval
        # How long a job may find ComfyUI gone (restarting) before it fails; None: the job's
        # default. With several hosts it is short: another host can run the prompt instead.
        self.unreachable_grace = unreachable_grace
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  verify=tls_context())
        self._object_info: dict | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ComfyUIClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP basics

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise NoAnswer(f"ComfyUI at {self.shown_as} didn't answer {method} {path} "
                           f"within {self.timeout:g} s.",
                           hint="It is running but busy or stuck (loading a big model, or a "
                                "node that hangs); its console window shows which. Try again "
                                "once it answers.") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"Can't reach ComfyUI at {self.shown_as}.", hint=START_HINT) from exc
        if response.status_code >= 400 and not (path == "/prompt" and response.status_code == 400):
            raise self._http_error(method, path, response)
        return response

    def _http_error(self, method: str, path: str, response: httpx.Response) -> BackendRejected:
        status = response.status_code
        if status == 403:
            return BackendRejected(
                f"ComfyUI at {self.shown_as} refused {method} {path} (403 Forbidden).",
                hint="Its origin check blocks requests through some proxies; connect to it directly.",
                status=status)
        if status >= 500:
            return BackendRejected(f"ComfyUI at {self.shown_as} failed on {method} {path} "
                                   f"({status}). Its console window shows why.", status=status)
        body = response.text.strip()[:200]
        return BackendRejected(f"ComfyUI at {self.shown_as} answered {status} to {method} {path}"
                               f"{': ' + body if body else '.'}", status=status)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise BackendRejected(f"ComfyUI at {self.shown_as} sent something that isn't JSON for "
                                  f"{method} {path}. Is COMFYUI_URL pointing at ComfyUI?",
                                  status=response.status_code) from exc

    # ------------------------------------------------------------------ endpoints

    def queue_prompt(self, graph: Mapping[str, Any], *, prompt_id: str | None = None,
                     client_id: str | None = None, extra_data: Mapping[str, Any] | None = None,
                     front: bool = False) -> QueuedPrompt:
        """POST /prompt. Raises PromptRejected (400, with per-node problems)."""
        body: dict[str, Any] = {"prompt": graph, "prompt_id": prompt_id or str(uuid.uuid4())}
        if client_id:
            body["client_id"] = client_id
        if extra_data:
            body["extra_data"] = dict(extra_data)
        if front:
            body["front"] = True
        response = self._request("POST", "/prompt", json=body)
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"error": {"message": response.text.strip()[:200]}}
        if response.status_code == 400:
            raise prompt_rejected(self.shown_as, data, graph)
        return QueuedPrompt(str(data.get("prompt_id", body["prompt_id"])), data.get("number", 0),
                            data.get("node_errors") or {})

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """GET /history/{id}: the finished job, or None while queued/running/unknown."""
        data = self._json("GET", f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        if not entry:
            return None
        status = entry.get("status") or {}
        return HistoryEntry(prompt_id, status.get("status_str", ""), bool(status.get("completed")),
                            entry.get("outputs") or {},
                            tuple(tuple(m) for m in status.get("messages") or []))

    def view(self, ref: ImageRef) -> bytes:
        """GET /view: the raw bytes of one image."""
        try:
            return self._request("GET", "/view", params={"filename": ref.filename,
                                                         "subfolder": ref.subfolder,
                                                         "type": ref.type}).content
        except BackendRejected as exc:
            if exc.status == 404:
                raise BackendRejected(f"ComfyUI at {self.shown_as} has no {ref.type} image "
                                      f"{ref.subfolder + '/' if ref.subfolder else ''}{ref.filename}"
                                      " any more (temp images vanish when ComfyUI restarts).",
                                      status=404) from exc
            raise

    def upload_image(self, data: bytes, filename: str, *, subfolder: str = "",
                     overwrite: bool = False, kind: str = "input") -> UploadedImage:
        """POST /upload/image (multipart). Use ``.value`` as LoadImage's ``image`` input."""
        form = {"type": kind, "subfolder": subfolder}
        if overwrite:
            form["overwrite"] = "true"
        data_out = self._json("POST", "/upload/image", data=form,
                              files={"image": (filename, data, "application/octet-stream")})
        return UploadedImage(data_out["name"], data_out.get("subfolder", ""), data_out.get("type", kind))

    def object_info(self, *, refresh: bool = False) -> dict:
        """GET /object_info, cached for the client's lifetime unless ``refresh``."""
        with self._lock:
            if self._object_info is None or refresh:
                self._object_info = self._json("GET", "/object_info")
            return self._object_info

    def queue(self) -> QueueState:
        """GET /queue."""
        data = self._json("GET", "/queue")

        def items(rows) -> tuple[QueueItem, ...]:
            return tuple(QueueItem(row[0], str(row[1]),
                                   (row[3] or {}).get("client_id") if len(row) > 3 else None)
                         for row in rows or [])

        return QueueState(items(data.get("queue_running")), items(data.get("queue_pending")))

    def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """POST /queue {"delete": [...]} (only affects jobs still waiting)."""
        self._request("POST", "/queue", json={"delete": list(prompt_ids)})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt; with ``prompt_id`` only that job is stopped, if it is running."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    def system_stats(self) -> SystemStats:
        data = self._json("GET", "/system_stats")
        system = data.get("system", {})
        devices = tuple(Device(str(d.get("name", "")), str(d.get("type", "")), d.get("index"),
                               int(d.get("vram_total") or 0), int(d.get("vram_free") or 0),
                               int(d.get("torch_vram_total") or 0),
                               int(d.get("torch_vram_free") or 0))
                        for d in data.get("devices", []))
        return SystemStats(str(system.get("comfyui_version", "")), str(system.get("python_version", "")),
                           str(system.get("pytorch_version", "")), str(system.get("os", "")),
                           int(system.get("ram_total") or 0), int(system.get("ram_free") or 0), devices)

    def model_folders(self) -> list[str]:
        """GET /models: folder names (checkpoints, loras, ...)."""
        return list(self._json("GET", "/models"))

    def models(self, folder: str) -> list[str]:
        """GET /models/{folder}: file names; an unknown folder raises BackendRejected (404)."""
        try:
            return list(self._json("GET", f"/models/{folder}"))
        except BackendRejected as exc:
            if exc.status == 404:
                raise BackendRejected(f"ComfyUI at {self.shown_as} has no model folder {folder!r}.",
                                      status=404) from exc
            raise

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models / free VRAM once the current job is done."""
        self._request("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    # ------------------------------------------------------------------ jobs

    def cancel(self, prompt_id: str) -> str:
        """Stop a job: interrupt it if running, else delete it from the queue.

        Returns ``"interrupted"``, ``"removed"``, ``"finished"`` (too late) or ``"unknown"``.
        """
        state = self.queue()
        if state.is_pending(prompt_id):
            self.delete_queued([prompt_id])
            state = self.queue()  # it may have started in between
            if not state.is_running(prompt_id):
                return "removed"
        if state.is_running(prompt_id):
            self.interrupt(prompt_id)
            return "interrupted"
        return "finished" if self.history(prompt_id) else "unknown"

    def status(self, prompt_id: str) -> PromptStatus:
        """One look at a job: /history first, then /queue. The image job service polls this
        to follow jobs a previous run of the studio queued."""
        entry = self.history(prompt_id)
        if entry is None:
            state = self.queue()
            if state.is_running(prompt_id):
                return PromptStatus(prompt_id, "running", position=0)
            position = state.position(prompt_id)
            if position is not None:
                return PromptStatus(prompt_id, "queued", position=position)
            entry = self.history(prompt_id)  # it may have finished between the two looks
            if entry is None:
                return PromptStatus(prompt_id, "unknown", message=(
                    f"ComfyUI at {self.shown_as} doesn't know job {prompt_id}; it was probably "
                    "restarted before the job finished. Run it again."))
        if entry.status == "success":
            return PromptStatus(prompt_id, "done", tuple(entry.images))
        if entry.interrupted:
            return PromptStatus(prompt_id, "cancelled", message="The job was cancelled.")
        return PromptStatus(prompt_id, "failed", message=error_sentence(entry.error or {}))

    def run(self, graph: Mapping[str, Any], *, on_event: Callable[[Event], None] | None = None,
            cancel: threading.Event | None = None, timeout: float | None = None,
            prompt_id: str | None = None,
            extra_data: Mapping[str, Any] | None = None) -> RunResult:
        """Queue ``graph``, follow it to the end and return its images.

        ``on_event`` sees every event of ``stream``. Setting ``cancel`` interrupts or
        dequeues the job; the result then has ``cancelled=True``. Raises PromptRejected,
        ExecutionFailed, GenerationTimeout, JobLost or BackendUnavailable.
        """
        for event in self.stream(graph, cancel=cancel, timeout=timeout, prompt_id=prompt_id,
                                 extra_data=extra_data):
            if on_event is not None:
                on_event(event)
            if isinstance(event, Done):
                return RunResult(event.prompt_id, event.images, False, event.timings, event.cached)
            if isinstance(event, Cancelled):
                return RunResult(event.prompt_id, (), True)
        raise GenerationFailed("The ComfyUI job ended without a result.")  # not reached

    def stream(self, graph: Mapping[str, Any], *, cancel: threading.Event | None = None,
               timeout: float | None = None, prompt_id: str | None = None,
               extra_data: Mapping[str, Any] | None = None) -> Iterator[Event]:
        """Queue ``graph`` and yield typed events until ``Done`` or ``Cancelled``.

        Order: Queued, Started, Cached?, then Executing/Progress/Preview as the job runs.
        Same errors as ``run``. The graph is sent as it is: checking it against
        ``object_info()`` first is the caller's business (``studio.images.validation``).
        """
        job = _Job(self, graph, prompt_id or str(uuid.uuid4()),
                   self.run_timeout if timeout is None else timeout, cancel or threading.Event())
        try:
            job.socket.connect()
            job.t_queued = time.monotonic()
            self.queue_prompt(graph, prompt_id=job.prompt_id, client_id=job.client_id,
                              extra_data=extra_data)
            position = self._position(job.prompt_id)
            yield Queued(job.prompt_id, position)
            yield from job.follow()
        finally:
            job.socket.close()

    def _position(self, prompt_id: str) -> int | None:
        try:
            return self.queue().position(prompt_id)
        except BackendUnavailable:
            return None

    def _ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws",
                           f"clientId={client_id}", ""))


# The client's types live in comfyui_types; callers import them from here.
__all__ = ["ComfyUIClient", "Cached", "Cancelled", "Device", "Done", "Event", "Executing",
           "ExecutionFailed", "GenerationTimeout", "HistoryEntry", "ImageRef", "JobLost", "NoAnswer",
           "Preview", "Progress", "PromptRejected", "PromptStatus", "QueueItem", "QueueState",
           "Queued", "QueuedPrompt", "ResultUnread", "RunResult", "Started", "SystemStats", "Timings",
           "UploadedImage"]
