"""ComfyUI client: queue API-format graphs, follow them over the websocket, fetch the images.

HTTP goes through httpx, the event stream through websocket-client (one socket and one
client id per job, opened *before* the prompt is queued so no event is missed). The
protocol details follow a real ComfyUI 0.8.0 (``shared/docs/protocols.md`` section 2 and
the recorded transcripts): duplicated ``status`` frames, ``progress_state``, cached
reruns, binary previews (type 1, or type 4 after negotiating ``supports_preview_metadata``),
``execution_error`` / ``execution_interrupted``, and the final ``executing {node: null}``.

If the websocket drops mid-run the client reconnects with the same client id and falls
back to polling ``/history/{prompt_id}``, so a finished image is never lost. Jobs are
tracked by a client-chosen prompt id, so a restarted studio can ``wait_for`` them.

Transport failures become ``StudioError``s (original exception as ``__cause__``).
No gradio imports here.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Union
from urllib.parse import urlsplit, urlunsplit

import httpx
import websocket
from PIL import Image

from .. import workflows
from ..errors import BackendRejected, BackendUnavailable, GenerationFailed, InvalidInput

log = logging.getLogger(__name__)

START_HINT = "Is it running? Start it with `python main.py --listen 127.0.0.1`."


# --------------------------------------------------------------------------- errors


class PromptRejected(BackendRejected):
    """ComfyUI answered 400 to POST /prompt: nothing was queued.

    ``error_type`` is ComfyUI's ``error.type`` (``invalid_prompt``,
    ``prompt_outputs_failed_validation``...), ``node_errors`` its per-node dict and
    ``problems`` one readable sentence per node error.
    """

    def __init__(self, message: str, *, error_type: str, node_errors: dict, problems: list[str]):
        super().__init__(message, status=400)
        self.error_type = error_type
        self.node_errors = node_errors
        self.problems = problems


class WorkflowInvalid(InvalidInput):
    """The graph was checked against /object_info before queueing and can't run."""

    def __init__(self, message: str, *, problems: list[str]):
        super().__init__(message)
        self.problems = problems


class ExecutionFailed(GenerationFailed):
    """A node raised while ComfyUI ran the job (``execution_error``)."""

    def __init__(self, message: str, *, prompt_id: str, node_id: str | None = None,
                 node_type: str | None = None, exception_type: str = "",
                 exception_message: str = "", traceback: tuple[str, ...] = ()):
        super().__init__(message)
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback


class GenerationTimeout(GenerationFailed):
    """The job did not finish within the run timeout; it may still be queued or running."""

    def __init__(self, message: str, *, prompt_id: str):
        super().__init__(message)
        self.prompt_id = prompt_id


class JobLost(GenerationFailed):
    """ComfyUI no longer knows the job (e.g. it was restarted while the job was queued)."""

    def __init__(self, message: str, *, prompt_id: str):
        super().__init__(message)
        self.prompt_id = prompt_id


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ImageRef:
    """A file ComfyUI wrote: what ``/view`` needs to serve it."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], node: str = "") -> "ImageRef":
        return cls(str(data["filename"]), str(data.get("subfolder") or ""),
                   str(data.get("type") or "output"), node)


@dataclass(frozen=True)
class QueuedPrompt:
    prompt_id: str
    number: float
    node_errors: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueueItem:
    number: float
    prompt_id: str
    client_id: str | None = None


@dataclass(frozen=True)
class QueueState:
    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()

    def is_running(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.running)

    def is_pending(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.pending)

    def position(self, prompt_id: str) -> int | None:
        """Jobs ahead of ``prompt_id`` (0 = running or next); None if not in the queue."""
        if self.is_running(prompt_id):
            return 0
        ordered = sorted(self.pending, key=lambda item: item.number)
        for index, item in enumerate(ordered):
            if item.prompt_id == prompt_id:
                return index + len(self.running)
        return None


@dataclass(frozen=True)
class Timings:
    """Seconds: waiting in the queue, executing (ComfyUI's own clock), and in all."""

    queued_s: float | None = None
    execution_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One finished job from ``/history``."""

    prompt_id: str
    status: str  # "success" or "error"
    completed: bool
    outputs: dict
    messages: tuple = ()

    @property
    def images(self) -> list[ImageRef]:
        return _images_from_outputs(self.outputs)

    @property
    def interrupted(self) -> bool:
        return any(name == "execution_interrupted" for name, _ in self.messages)

    @property
    def error(self) -> dict | None:
        return next((data for name, data in self.messages if name == "execution_error"), None)

    @property
    def execution_s(self) -> float | None:
        stamps = {name: data.get("timestamp") for name, data in self.messages if isinstance(data, dict)}
        start = stamps.get("execution_start")
        end = next((stamps.get(n) for n in ("execution_success", "execution_error",
                                             "execution_interrupted") if stamps.get(n)), None)
        return (end - start) / 1000 if start and end else None


@dataclass(frozen=True)
class Device:
    name: str
    type: str
    index: int | None
    vram_total: int
    vram_free: int


@dataclass(frozen=True)
class SystemStats:
    comfyui_version: str
    python_version: str
    pytorch_version: str
    os: str
    ram_total: int
    ram_free: int
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class UploadedImage:
    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def value(self) -> str:
        """What to put in ``LoadImage.inputs.image``."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


@dataclass(frozen=True)
class PromptStatus:
    """Where a job stands, from /history and /queue (see ``ComfyUIClient.wait_for``).

    ``state``: ``done``, ``failed``, ``cancelled``, ``running``, ``queued`` or ``unknown``
    (ComfyUI has never heard of it, e.g. it was restarted).
    """

    prompt_id: str
    state: str
    images: tuple[ImageRef, ...] = ()
    position: int | None = None
    message: str = ""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Queued:
    prompt_id: str
    position: int | None  # jobs ahead of ours; None if unknown


@dataclass(frozen=True)
class Started:
    prompt_id: str


@dataclass(frozen=True)
class Cached:
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Executing:
    node: str
    class_type: str


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    node: str | None = None


@dataclass(frozen=True)
class Preview:
    image: Image.Image
    node: str | None = None


@dataclass(frozen=True)
class Done:
    images: tuple[ImageRef, ...]
    prompt_id: str
    timings: Timings = Timings()
    cached: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cancelled:
    """The job was interrupted or removed from the queue; no images."""

    prompt_id: str
    node: str | None = None


Event = Union[Queued, Started, Cached, Executing, Progress, Preview, Done, Cancelled]


@dataclass(frozen=True)
class RunResult:
    prompt_id: str
    images: tuple[ImageRef, ...]
    cancelled: bool = False
    timings: Timings = Timings()
    cached: tuple[str, ...] = ()


def _images_from_outputs(outputs: Mapping[str, Any]) -> list[ImageRef]:
    """Saved images (type ``output``) of every node; temp previews only if nothing was saved."""
    refs = []
    for node in sorted(outputs, key=lambda n: (0, int(n), "") if str(n).isdigit() else (1, 0, str(n))):
        for image in (outputs[node] or {}).get("images", []) or []:
            if isinstance(image, dict) and "filename" in image:
                refs.append(ImageRef.from_dict(image, str(node)))
    saved = [ref for ref in refs if ref.type == "output"]
    return saved or refs


# --------------------------------------------------------------------------- client


class ComfyUIClient:
    """Talks to one ComfyUI server. Thread-safe; one websocket per running job.

    ``timeout`` bounds each HTTP request and websocket connect; ``run_timeout`` bounds a
    whole job (queue wait included) unless ``run``/``stream`` get their own.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0, run_timeout: float = 600.0,
                 poll_interval: float = 1.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.run_timeout = run_timeout
        self.poll_interval = poll_interval
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
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
            raise BackendUnavailable(f"ComfyUI at {self.base_url} didn't answer {method} {path} "
                                     f"within {self.timeout:g} s.",
                                     hint="It may be busy loading a model; try again.") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"Can't reach ComfyUI at {self.base_url}.", hint=START_HINT) from exc
        if response.status_code >= 400 and not (path == "/prompt" and response.status_code == 400):
            raise self._http_error(method, path, response)
        return response

    def _http_error(self, method: str, path: str, response: httpx.Response) -> BackendRejected:
        status = response.status_code
        if status == 403:
            return BackendRejected(
                f"ComfyUI at {self.base_url} refused {method} {path} (403 Forbidden).",
                hint="Its origin check blocks requests through some proxies; connect to it directly.",
                status=status)
        if status >= 500:
            return BackendRejected(f"ComfyUI at {self.base_url} failed on {method} {path} "
                                   f"({status}). Its console window shows why.", status=status)
        body = response.text.strip()[:200]
        return BackendRejected(f"ComfyUI at {self.base_url} answered {status} to {method} {path}"
                               f"{': ' + body if body else '.'}", status=status)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise BackendRejected(f"ComfyUI at {self.base_url} sent something that isn't JSON for "
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
            raise _prompt_rejected(self.base_url, data, graph)
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
                raise BackendRejected(f"ComfyUI at {self.base_url} has no {ref.type} image "
                                      f"{ref.subfolder + '/' if ref.subfolder else ''}{ref.filename}"
                                      " any more (temp images vanish when ComfyUI restarts).",
                                      status=404) from exc
            raise

    def fetch_images(self, refs: Iterable[ImageRef]) -> list[bytes]:
        """The bytes of each image, in order, via /view."""
        return [self.view(ref) for ref in refs]

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

    def clear_queue(self) -> None:
        self._request("POST", "/queue", json={"clear": True})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt; with ``prompt_id`` only that job is stopped, if it is running."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    def system_stats(self) -> SystemStats:
        data = self._json("GET", "/system_stats")
        system = data.get("system", {})
        devices = tuple(Device(str(d.get("name", "")), str(d.get("type", "")), d.get("index"),
                               int(d.get("vram_total") or 0), int(d.get("vram_free") or 0))
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
                raise BackendRejected(f"ComfyUI at {self.base_url} has no model folder {folder!r}.",
                                      status=404) from exc
            raise

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models / free VRAM once the current job is done."""
        self._request("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    # ------------------------------------------------------------------ checks

    def problems(self, graph: Mapping[str, Any]) -> list[str]:
        """``workflows.validate`` against this server's /object_info (refreshed once on doubt)."""
        found = workflows.validate(graph, self.object_info())
        if found:  # a model added since the cache was filled would show up as a problem
            found = workflows.validate(graph, self.object_info(refresh=True))
        return found

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
        """One look at a job: /history first, then /queue."""
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
                    f"ComfyUI at {self.base_url} doesn't know job {prompt_id}; it was probably "
                    "restarted before the job finished. Run it again."))
        if entry.status == "success":
            return PromptStatus(prompt_id, "done", tuple(entry.images))
        if entry.interrupted:
            return PromptStatus(prompt_id, "cancelled", message="The job was cancelled.")
        return PromptStatus(prompt_id, "failed", message=_error_sentence(entry.error or {}))

    def wait_for(self, prompt_id: str, *, timeout: float = 0.0, poll_interval: float | None = None,
                 cancel: threading.Event | None = None) -> PromptStatus:
        """Resume a job by id (e.g. after the studio restarted), polling /history and /queue.

        Returns as soon as the job is done, failed, cancelled or unknown to ComfyUI; after
        ``timeout`` seconds (0 = look once) returns its ``queued``/``running`` status.
        """
        deadline = time.monotonic() + timeout
        interval = self.poll_interval if poll_interval is None else poll_interval
        waiter = cancel or threading.Event()
        while True:
            current = self.status(prompt_id)
            if current.state not in ("queued", "running"):
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0 or waiter.wait(min(interval, remaining)):
                return current

    def run(self, graph: Mapping[str, Any], *, on_event: Callable[[Event], None] | None = None,
            cancel: threading.Event | None = None, timeout: float | None = None,
            prompt_id: str | None = None, check: bool = True,
            extra_data: Mapping[str, Any] | None = None) -> RunResult:
        """Queue ``graph``, follow it to the end and return its images.

        ``on_event`` sees every event of ``stream``. Setting ``cancel`` interrupts or
        dequeues the job; the result then has ``cancelled=True``. Raises WorkflowInvalid
        (``check``), PromptRejected, ExecutionFailed, GenerationTimeout, JobLost or
        BackendUnavailable.
        """
        for event in self.stream(graph, cancel=cancel, timeout=timeout, prompt_id=prompt_id,
                                 check=check, extra_data=extra_data):
            if on_event is not None:
                on_event(event)
            if isinstance(event, Done):
                return RunResult(event.prompt_id, event.images, False, event.timings, event.cached)
            if isinstance(event, Cancelled):
                return RunResult(event.prompt_id, (), True)
        raise GenerationFailed("The ComfyUI job ended without a result.")  # not reached

    def stream(self, graph: Mapping[str, Any], *, cancel: threading.Event | None = None,
               timeout: float | None = None, prompt_id: str | None = None, check: bool = True,
               extra_data: Mapping[str, Any] | None = None) -> Iterator[Event]:
        """Queue ``graph`` and yield typed events until ``Done`` or ``Cancelled``.

        Order: Queued, Started, Cached?, then Executing/Progress/Preview as the job runs.
        Same errors as ``run``.
        """
        if check:
            problems = self.problems(graph)
            if problems:
                raise WorkflowInvalid("This workflow can't run on ComfyUI at "
                                      f"{self.base_url}: " + " ".join(problems), problems=problems)
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


# --------------------------------------------------------------------------- one job


class _Disconnected(Exception):
    pass


class _Socket:
    """The job's websocket: connect (sending feature flags), receive with a short timeout."""

    RECV_POLL = 0.25  # seconds; how often cancel and the deadline are looked at

    def __init__(self, client: ComfyUIClient, client_id: str):
        self.client = client
        self.client_id = client_id
        self.ws: websocket.WebSocket | None = None

    def connect(self) -> None:
        url = self.client._ws_url(self.client_id)
        ws = websocket.WebSocket(skip_utf8_validation=True)
        try:
            ws.connect(url, timeout=self.client.timeout)
            # Ask for type-4 previews (they carry the prompt id); servers that don't know
            # the flag ignore it and send type 1.
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            ws.settimeout(self.RECV_POLL)
        except (OSError, websocket.WebSocketException) as exc:
            ws.close()
            raise BackendUnavailable(f"Can't open ComfyUI's websocket at {url}.",
                                     hint=START_HINT) from exc
        self.ws = ws

    def recv(self) -> str | bytes | None:
        """A frame, or None after RECV_POLL seconds of silence; raises _Disconnected."""
        if self.ws is None:
            raise _Disconnected()
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as exc:
            self.close()
            raise _Disconnected() from exc
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return data.decode("utf-8", "replace")
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return data
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.close()
            raise _Disconnected()
        return None

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close(timeout=0.5)
            except (OSError, websocket.WebSocketException):
                pass
            self.ws = None


class _Job:
    """Follows one queued prompt over the websocket, with /history as the safety net."""

    CANCEL_GRACE = 15.0  # seconds to wait for execution_interrupted after asking
    UNREACHABLE_GRACE = 60.0  # seconds ComfyUI may be gone (restarting) before a run fails

    def __init__(self, client: ComfyUIClient, graph: Mapping[str, Any], prompt_id: str,
                 timeout: float, cancel: threading.Event):
        self.client = client
        self.graph = graph
        self.prompt_id = prompt_id
        self.client_id = uuid.uuid4().hex
        self.socket = _Socket(client, self.client_id)
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.cancel = cancel
        self.cancel_deadline: float | None = None
        self.started = False
        self.current_node: str | None = None
        self.cached: tuple[str, ...] = ()
        self.executed_images: list[ImageRef] = []
        self.t_queued = time.monotonic()
        self.t_started: float | None = None
        self._idle = threading.Event()  # never set: a plain interruptible wait
        self.unreachable_since: float | None = None

    def follow(self) -> Iterator[Event]:
        while True:
            outcome = self._check_cancel_and_deadline()
            if outcome is not None:
                yield outcome
                return
            try:
                frame = self.socket.recv()
            except _Disconnected:
                result = yield from self._recover()
                if result is not None:
                    yield result
                    return
                continue
            if frame is None:
                continue
            if isinstance(frame, bytes):
                preview = self._preview(frame)
                if preview is not None:
                    yield preview
                continue
            try:
                message = json.loads(frame)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            events, finished = self._handle(message.get("type"), message.get("data") or {})
            yield from events
            if finished:
                yield self._finish()
                return

    # -------------------------------------------------------------- messages

    def _handle(self, kind: str | None, data: dict) -> tuple[list[Event], bool]:
        pid = data.get("prompt_id")
        if pid is not None and pid != self.prompt_id:
            return [], False  # another job's broadcast
        if kind == "execution_start":
            self.started = True
            self.t_started = time.monotonic()
            return [Started(self.prompt_id)], False
        if kind == "execution_cached":
            self.cached = tuple(str(n) for n in data.get("nodes") or [])
            return ([Cached(self.cached)] if self.cached else []), False
        if kind == "executing":
            node = data.get("node")
            if node is None:
                return [], pid == self.prompt_id
            self.started = True  # after a reconnect this is the only sign (no prompt_id)
            self.current_node = str(node)
            class_type = str((self.graph.get(self.current_node) or {}).get("class_type", ""))
            return [Executing(self.current_node, class_type)], False
        if kind == "progress":
            return [Progress(int(data.get("value", 0)), int(data.get("max", 0)),
                             None if data.get("node") is None else str(data.get("node")))], False
        if kind == "executed" and pid == self.prompt_id:
            output = data.get("output") or {}
            node = str(data.get("node", ""))
            self.executed_images.extend(ImageRef.from_dict(i, node) for i in output.get("images", [])
                                        if isinstance(i, dict) and "filename" in i)
            return [], False
        if kind == "execution_error" and pid == self.prompt_id:
            raise _execution_failed(self.prompt_id, data)
        if kind == "execution_interrupted" and pid == self.prompt_id:
            return [Cancelled(self.prompt_id, data.get("node_id"))], True
        return [], False

    def _preview(self, frame: bytes) -> Preview | None:
        if len(frame) < 8:
            return None
        event_type = struct.unpack(">I", frame[:4])[0]
        node = self.current_node
        if event_type == 1:
            if not self.started:
                return None
            payload = frame[8:]
        elif event_type == 4:
            length = struct.unpack(">I", frame[4:8])[0]
            try:
                meta = json.loads(frame[8:8 + length])
            except ValueError:
                return None
            if meta.get("prompt_id") not in (None, self.prompt_id):
                return None
            node = meta.get("display_node_id") or meta.get("node_id") or node
            payload = frame[8 + length:]
        else:
            return None  # 3 = progress text; others are server-internal
        try:
            image = Image.open(io.BytesIO(payload))
            image.load()
        except (OSError, ValueError) as exc:
            log.debug("ComfyUI preview frame could not be decoded: %s", exc)
            return None
        return Preview(image, None if node is None else str(node))

    # -------------------------------------------------------------- endings

    def _pause(self, seconds: float) -> None:
        """Wait between polls; wakes early on cancel unless the cancel is already handled."""
        if self.cancel_deadline is None:
            self.cancel.wait(seconds)
        else:
            self._idle.wait(seconds)

    def _check_cancel_and_deadline(self) -> Event | None:
        now = time.monotonic()
        if self.cancel.is_set() and self.cancel_deadline is None:
            self.cancel_deadline = now + self.CANCEL_GRACE
            outcome = self.client.cancel(self.prompt_id)
            if outcome in ("removed", "unknown"):
                return Cancelled(self.prompt_id)
            # "interrupted": ComfyUI answers with execution_interrupted; "finished": too late,
            # the usual end-of-job messages (or /history) still deliver the images.
        if self.cancel_deadline is not None and now > self.cancel_deadline:
            return Cancelled(self.prompt_id, self.current_node)
        if now > self.deadline:
            raise GenerationTimeout(
                f"ComfyUI at {self.client.base_url} didn't finish job {self.prompt_id} within "
                f"{self.timeout:g} s. It may still be queued or running; check ComfyUI's queue.",
                prompt_id=self.prompt_id)
        return None

    def _recover(self) -> Iterator[Event]:
        """The websocket dropped: reconnect (same client id) or poll /history until done.

        Returns the final event, or None once a new socket is listening.
        """
        while True:
            outcome = self._check_cancel_and_deadline()
            if outcome is not None:
                return outcome
            try:
                self.socket.connect()
                connected = True
            except BackendUnavailable:
                connected = False
            # The job may have ended while nobody listened: /history is the truth.
            try:
                current = self.client.status(self.prompt_id)
                self.unreachable_since = None
            except BackendUnavailable:
                # ComfyUI may be restarting; keep trying for a while before giving up.
                now = time.monotonic()
                self.unreachable_since = self.unreachable_since or now
                if now - self.unreachable_since > self.UNREACHABLE_GRACE:
                    raise
                self._pause(min(self.client.poll_interval, max(0.0, self.deadline - now)))
                continue
            if current.state in ("done", "failed", "cancelled"):
                return self._finish()
            if current.state == "unknown":
                raise JobLost(current.message, prompt_id=self.prompt_id)
            if current.state == "running" and not self.started:
                self.started = True
                yield Started(self.prompt_id)
            if connected:
                return None
            self._pause(min(self.client.poll_interval, max(0.0, self.deadline - time.monotonic())))

    def _finish(self) -> Event:
        """Read /history for the final word: Done, Cancelled, or raise ExecutionFailed."""
        entry = None
        for _ in range(20):  # history is written just before "executing null"; allow a little lag
            entry = self.client.history(self.prompt_id)
            if entry is not None:
                break
            self._pause(0.05)
        if entry is not None and entry.status != "success":
            if entry.interrupted:
                return Cancelled(self.prompt_id, self.current_node)
            raise _execution_failed(self.prompt_id, entry.error or {})
        if entry is None and self.cancel_deadline is not None:
            return Cancelled(self.prompt_id, self.current_node)
        images = entry.images if entry is not None else _dedupe(self.executed_images)
        now = time.monotonic()
        timings = Timings(
            queued_s=(self.t_started - self.t_queued) if self.t_started else None,
            execution_s=entry.execution_s if entry is not None else None,
            total_s=now - self.t_queued)
        return Done(tuple(images), self.prompt_id, timings, self.cached)


def _dedupe(refs: list[ImageRef]) -> list[ImageRef]:
    seen, result = set(), []
    for ref in refs:
        if ref not in seen:
            seen.add(ref)
            result.append(ref)
    saved = [r for r in result if r.type == "output"]
    return saved or result


# --------------------------------------------------------------------------- messages


def _node_label(node_id: str, class_type: str | None) -> str:
    return f"Node {node_id} ({class_type})" if class_type else f"Node {node_id}"


def _error_sentence(data: Mapping[str, Any]) -> str:
    label = _node_label(str(data.get("node_id", "?")), data.get("node_type"))
    exc_type = data.get("exception_type") or "Error"
    exc_message = str(data.get("exception_message") or "").strip() or "no message"
    return f"ComfyUI failed at {label}: {exc_type}: {exc_message}"


def _execution_failed(prompt_id: str, data: Mapping[str, Any]) -> ExecutionFailed:
    hint = ""
    text = str(data.get("exception_message", ""))
    if "out of memory" in text.lower() or "OutOfMemory" in str(data.get("exception_type", "")):
        hint = " Try a smaller size or batch, or free VRAM (unload other models)."
    return ExecutionFailed(_error_sentence(data) + hint, prompt_id=prompt_id,
                           node_id=data.get("node_id"), node_type=data.get("node_type"),
                           exception_type=str(data.get("exception_type", "")),
                           exception_message=text.strip(),
                           traceback=tuple(data.get("traceback") or ()))


def describe_node_error(node_id: str, class_type: str | None, error: Mapping[str, Any]) -> str:
    """One readable sentence for one entry of a /prompt 400 ``node_errors[...]["errors"]``."""
    label = _node_label(node_id, class_type)
    kind = error.get("type", "")
    extra = error.get("extra_info") or {}
    name = extra.get("input_name") or error.get("details", "")
    if kind == "required_input_missing":
        return f"{label}: required input {name!r} is missing."
    if kind in ("value_smaller_than_min", "value_bigger_than_max"):
        return f"{label}: {name}: {error.get('message', kind)}."
    if kind == "value_not_in_list":
        return (f"{label}: {name} {extra.get('received_value')!r} isn't available on this ComfyUI "
                "(pick one it lists, or add the file to its models folder).")
    if kind == "exception_during_inner_validation":
        return f"{label}: input {name!r} links to a node that isn't in the workflow " \
               f"({error.get('details', '')})."
    details = error.get("details") or ""
    message = error.get("message") or kind
    return f"{label}: {message}{': ' + details if details else ''}."


def _prompt_rejected(base_url: str, data: Any, graph: Mapping[str, Any]) -> PromptRejected:
    data = data if isinstance(data, dict) else {}
    error = data.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    node_errors = data.get("node_errors") or {}
    problems = []
    for node_id, entry in sorted(node_errors.items()):
        class_type = entry.get("class_type") or (graph.get(node_id) or {}).get("class_type")
        for item in entry.get("errors", []):
            problems.append(describe_node_error(str(node_id), class_type, item))
    if problems:
        summary = " ".join(problems)
    else:
        message = str(error.get("message") or "the workflow is invalid").rstrip(".")
        details = error.get("details") or ""
        summary = f"{message}{' (' + details + ')' if details and details != message else ''}."
    return PromptRejected(f"ComfyUI at {base_url} refused the workflow: {summary}",
                          error_type=str(error.get("type", "")), node_errors=node_errors,
                          problems=problems)
