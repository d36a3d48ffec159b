"""A fake ComfyUI that speaks the real wire protocol on 127.0.0.1 (HTTP + websocket).

Built on aiohttp like ComfyUI itself, so headers, JSON spacing and empty 200 bodies match.
Behaviour follows the recordings of a real ComfyUI 0.8.0 in
``shared/docs/comfyui-transcripts`` (see INDEX.md there): frame order, the duplicated
``status`` frames, ``progress_state``, the final ``executing {node: null}``, cached reruns,
interrupts, execution errors, binary previews (type 1, or type 4 after a client
negotiated ``supports_preview_metadata``) and the 400 bodies of ``/prompt``. The node
catalog (``/object_info``, and validation of queued graphs) is the recorded
``get_object_info.json``, with model lists filled from ``FakeComfyUI.models``.

"Executing" a graph makes solid-colour PNGs of the size the graph asks for, with the
graph embedded in the ``prompt`` text chunk like SaveImage. Nodes with a ``steps`` input
(KSampler, the recorded SlowProgress test node) send progress steps and JPEG previews.

Controls for tests: ``step_delay``, ``fail_next(node_id, message)``,
``drop_ws_after(steps)``, ``pause_after_step(n, job=k)`` / ``wait_paused()`` / ``resume()``,
``fail_http(path, status)`` (aiohttp's own 500 page, as when a ComfyUI route raises),
``hang_http(path)`` / ``release_hung()`` (a server that takes the request and never answers,
as a ComfyUI whose event loop is blocked does), ``wait_idle()``, and ``requests`` (every
HTTP request received).

Standalone: ``python -m tests.fakes.comfyui_server --port 8188``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import copy
import io
import json
import os
import random
import socket
import string
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

TRANSCRIPTS_ENV = "COMFYUI_TRANSCRIPTS_DIR"
_REPO = Path(__file__).resolve().parents[2]


def transcripts_dir() -> Path:
    """Where the recorded ComfyUI traffic lives.

    ``$COMFYUI_TRANSCRIPTS_DIR``, else ``docs/comfyui-transcripts`` in the repo, else
    ``shared/docs/comfyui-transcripts`` inside or beside the repo (CI lays shared/ beside it),
    else the copy in ``tests/fixtures`` (so a bare checkout still runs its tests).
    """
    candidates = [os.environ.get(TRANSCRIPTS_ENV, ""),
                  _REPO / "docs" / "comfyui-transcripts",
                  _REPO / "shared" / "docs" / "comfyui-transcripts",
                  _REPO.parent / "shared" / "docs" / "comfyui-transcripts",
                  _REPO / "tests" / "fixtures" / "comfyui-transcripts"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "get_object_info.json").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "The ComfyUI transcripts (get_object_info.json...) were not found in "
        f"{', '.join(str(c) for c in candidates[1:])}. Set {TRANSCRIPTS_ENV} to their folder.")


def _recorded_body(name: str) -> Any:
    data = json.loads((transcripts_dir() / name).read_text())
    return data["response"]["body"]


_CATALOG_CACHE: dict[str, dict] = {}
_CURRENT_RECORD: contextvars.ContextVar["RecordedRequest"] = contextvars.ContextVar("record")


def recorded_catalog() -> dict:
    """The recorded /object_info (546 node classes), loaded once per process."""
    if "catalog" not in _CATALOG_CACHE:
        _CATALOG_CACHE["catalog"] = json.loads((transcripts_dir() / "get_object_info.json").read_text())
    return _CATALOG_CACHE["catalog"]


DEFAULT_MODELS = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"],
    "loras": ["my_style.safetensors"],
    "controlnet": ["control_v11p_sd15_canny.pth"],
    "vae": [],
    "upscale_models": [],
}

# COMBO inputs whose options are files in a model folder ("input" = uploaded images).
_FILE_COMBOS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("VAELoader", "vae_name"): "vae",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LoadImage", "image"): "input",
    ("LoadImageMask", "image"): "input",
}
_PREVIEW_NODES = {"KSampler", "KSamplerAdvanced", "SamplerCustom"}
_SERVER_FLAGS = {"supports_preview_metadata": True, "max_upload_size": 104857600,
                 "extension": {"manager": {"supports_v4": True}}}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Job:
    number: int | float
    prompt_id: str
    graph: dict
    extra_data: dict
    outputs: list[str]
    client_id: str | None

    def queue_item(self) -> list:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    preview_metadata: bool = False


class _Interrupted(Exception):
    pass


class _NodeFailed(Exception):
    def __init__(self, message: str, exception_type: str):
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class _RunState:
    job: _Job
    number: int = 0  # 1 = the first job this server ran
    nodes: dict[str, dict] = field(default_factory=dict)  # progress_state map
    executed: list[str] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)
    messages: list = field(default_factory=list)
    current: str | None = None


def _ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _sort_key(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


class FakeComfyUI:
    """A ComfyUI stand-in on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, *, port: int = 0, step_delay: float = 0.0, previews: bool = True,
                 feature_flags: bool = True, models: dict[str, list[str]] | None = None,
                 listen: str = "127.0.0.1"):
        """``feature_flags=False`` plays an older ComfyUI: no negotiation, type-1 previews only.
        ``listen`` is the address to listen on, as ComfyUI's ``--listen`` (another loopback
        address, 127.0.0.2, plays a second machine)."""
        self.listen = listen
        self.port = port
        self.feature_flags = feature_flags
        self.step_delay = step_delay
        self.previews = previews
        self.models = copy.deepcopy(DEFAULT_MODELS if models is None else models)
        self.requests: list[RecordedRequest] = []
        self.ws_messages: list[tuple[str, Any]] = []  # (client_id, parsed text frame)
        self.paused = threading.Event()
        self.ws_connections: list[str] = []  # client id of every websocket accepted
        self._seen = threading.Condition()
        self.files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, name) -> bytes
        self.history: dict[str, dict] = {}
        self._catalog = recorded_catalog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._sockets: dict[str, _Socket] = {}
        self._pending: list[_Job] = []
        self._running: _RunState | None = None
        self._number = 0
        self._cache: dict[str, tuple[str, dict | None, tuple]] = {}  # id -> (signature, ui, image)
        self._fail_next: dict[str, tuple[str, str, int | None]] = {}
        self._drop_after: tuple[int, bool] | None = None
        self._refuse_ws: set[str] = set()
        self._pause_steps: list[tuple[int, int | None]] = []  # (step, job number or None)
        self._jobs_run = 0  # jobs taken off the queue since start (pause_after_step's job=)
        self._http_faults: list[list] = []  # [path, "fail" | "hang", status, times left]
        self._hung: asyncio.Event | None = None
        self._resume: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._interrupt = False
        self._aborting = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    def start(self) -> "FakeComfyUI":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen, self.port))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                        name=f"fake-comfyui-{self.port}")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake ComfyUI did not start within 10 s")
        return self

    def stop(self) -> None:
        if not self._loop or not self._thread:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> "FakeComfyUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, sock: socket.socket) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._setup(sock))
        self._started.set()
        self._loop.run_forever()

    async def _setup(self, sock: socket.socket) -> None:
        self._resume = asyncio.Event()
        self._wake = asyncio.Event()
        self._hung = asyncio.Event()
        app = web.Application(middlewares=[self._record], client_max_size=100 * 1024 * 1024)
        routes = [
            ("GET", "/ws", self._ws_handler), ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt), ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue), ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/history", self._get_history), ("GET", "/history/{prompt_id}", self._get_history_id),
            ("POST", "/history", self._post_history), ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload), ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_one),
            ("GET", "/system_stats", self._system_stats), ("GET", "/models", self._models),
            ("GET", "/models/{folder}", self._models_folder), ("GET", "/embeddings", self._embeddings),
            ("POST", "/free", self._free), ("GET", "/features", self._features),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._worker_task = asyncio.get_running_loop().create_task(self._worker())

    async def _shutdown(self) -> None:
        self._hung.set()  # else runner.cleanup() waits for hung handlers (60 s)
        self._worker_task.cancel()
        closing = [asyncio.ensure_future(s.ws.close()) for s in list(self._sockets.values())]
        if closing:
            # A client that stopped reading never answers the close frame; don't wait for it.
            await asyncio.wait(closing, timeout=0.5)
        await self._runner.cleanup()

    def _call(self, fn, *args) -> None:
        assert self._loop is not None, "start() the fake first"
        self._loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ test controls

    def fail_next(self, node_id: str, message: str, *, exception_type: str = "RuntimeError",
                  at_step: int | None = None) -> None:
        """Make node ``node_id`` of the next job raise (after step ``at_step`` if given)."""
        self._fail_next[str(node_id)] = (message, exception_type, at_step)

    def drop_ws_after(self, steps: int, *, reconnect: bool = True) -> None:
        """Close the job client's websocket after ``steps`` progress steps of the next job.

        With ``reconnect=False`` the server also refuses that client's websocket until the
        job is over, so the client can only learn the result from /history.
        """
        self._drop_after = (steps, reconnect)

    def pause_after_step(self, step: int, *, job: int | None = None) -> None:
        """Hold the next progress node after it sent step ``step`` (0 = before the first);
        with ``job=k``, only in the k-th job this server runs (1 = the first since start).

        ``paused`` is set while held; ``resume()`` or an interrupt lets it go on.
        """
        self._pause_steps.append((step, job))

    def fail_http(self, path: str, status: int = 500, *, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``path`` (or below it: "/history" covers
        "/history/{id}"; the "/api" twin too) with ``status`` and aiohttp's plain error page."""
        self._http_faults.append([path, "fail", status, times])

    def hang_http(self, path: str, *, times: int = 1) -> None:
        """Take the next ``times`` requests to ``path`` and never answer them, until
        ``release_hung()`` or ``stop()`` (then they get a 503)."""
        self._http_faults.append([path, "hang", 503, times])

    def release_hung(self) -> None:
        self._call(self._hung.set)

    def wait_paused(self, timeout: float = 5.0) -> bool:
        return self.paused.wait(timeout)

    def resume(self) -> None:
        self.paused.clear()
        self._call(self._resume.set)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no job is running or pending."""
        return self._idle.wait(timeout)

    def restart(self) -> None:
        """Play a ComfyUI restart: the running job vanishes, queue/history/cache are emptied,
        every websocket is closed, prompt numbers start again at 0. Files stay."""
        asyncio.run_coroutine_threadsafe(self._restart(), self._loop).result(5)

    async def _restart(self) -> None:
        self._aborting = bool(self._running)
        self._interrupt = True
        self._resume.set()
        self._pending.clear()
        self.history.clear()
        self._cache.clear()
        self._refuse_ws.clear()
        self._number = 0
        for client_id, target in list(self._sockets.items()):
            self._sockets.pop(client_id, None)
            try:
                await asyncio.wait_for(target.ws.close(), 0.5)
            except asyncio.TimeoutError:
                pass

    def add_input_image(self, name: str, data: bytes, subfolder: str = "") -> None:
        self.files[("input", subfolder, name)] = data

    def wait_until(self, condition, timeout: float = 5.0) -> bool:
        """Wait until ``condition(fake)`` is true; re-checked on each request, connection, pause."""
        with self._seen:
            return self._seen.wait_for(lambda: condition(self), timeout)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _record(self, request: web.Request, handler):
        record = RecordedRequest(request.method, request.path, dict(request.query),
                                 headers=dict(request.headers))
        if request.content_type == "application/json" and request.can_read_body:
            try:
                record.json = json.loads(await request.read() or b"null")
            except ValueError:
                record.json = None
        _CURRENT_RECORD.set(record)
        with self._seen:
            self.requests.append(record)
            self._seen.notify_all()
        fault = self._take_fault(request.path)
        if fault is not None:
            kind, status = fault
            if kind == "hang":
                await self._hung.wait()
            return web.Response(status=status, content_type="text/plain",
                                text=f"{status} {_REASONS.get(status, 'Error')}\n\n"
                                     "Server got itself in trouble")
        return await handler(request)

    def _take_fault(self, path: str) -> tuple[str, int] | None:
        bare = path[4:] if path.startswith("/api/") else path
        for fault in self._http_faults:
            target, kind, status, times = fault
            if times > 0 and (bare == target or bare.startswith(target.rstrip("/") + "/")):
                fault[3] -= 1
                return kind, status
        return None

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"{}")
        except ValueError:
            return {}

    def _queue_remaining(self) -> int:
        return len(self._pending) + (1 if self._running else 0)

    # ------------------------------------------------------------------ websocket

    async def _ws_handler(self, request: web.Request):
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        if client_id in self._refuse_ws:
            return web.Response(status=503)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        entry = _Socket(ws)
        self._sockets[client_id] = entry  # a reconnect with the same id replaces the old socket
        with self._seen:
            self.ws_connections.append(client_id)
            self._seen.notify_all()
        try:
            await ws.send_json({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": self._queue_remaining()}}, "sid": client_id}})
            run = self._running
            if run and run.job.client_id == client_id and run.current:
                # Real ComfyUI re-sends the running node, without prompt_id (transcript 13).
                await ws.send_json({"type": "executing", "data": {"node": run.current}})
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                self.ws_messages.append((client_id, data))
                if first and self.feature_flags and isinstance(data, dict) \
                        and data.get("type") == "feature_flags":
                    entry.preview_metadata = bool((data.get("data") or {}).get("supports_preview_metadata"))
                    await ws.send_json({"type": "feature_flags", "data": _SERVER_FLAGS})
                first = False
        finally:
            if self._sockets.get(client_id) is entry:
                del self._sockets[client_id]
        return ws

    async def _send(self, event: str, data: dict, sid: str | None) -> None:
        targets = list(self._sockets.values()) if sid is None else [self._sockets.get(sid)]
        for target in targets:
            if target is None or target.ws.closed:
                continue
            try:
                await target.ws.send_json({"type": event, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    async def _send_bytes(self, payload_for, sid: str | None) -> None:
        targets = list(self._sockets.values()) if sid is None else [self._sockets.get(sid)]
        for target in targets:
            if target is None or target.ws.closed:
                continue
            try:
                await target.ws.send_bytes(payload_for(target.preview_metadata))
            except (ConnectionError, RuntimeError):
                pass

    async def _status(self) -> None:
        await self._send("status", {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}, None)

    # ------------------------------------------------------------------ HTTP routes

    async def _get_prompt(self, request):
        return web.json_response({"exec_info": {"queue_remaining": self._queue_remaining()}})

    async def _post_prompt(self, request):
        body = await self._json_body(request)
        if not isinstance(body, dict):
            body = {}
        if "number" in body:
            number: int | float = float(body["number"])
        else:
            number = self._number
            if body.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in body:
            return _error(400, "no_prompt", "No prompt provided", "No prompt provided")
        graph = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        verdict = self._validate(graph)
        if verdict["error"] is not None:
            return web.json_response({"error": verdict["error"], "node_errors": verdict["node_errors"]},
                                     status=400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = _ms()
        job = _Job(number, prompt_id, graph, extra_data, verdict["outputs"], body.get("client_id"))
        self._pending.append(job)
        self._pending.sort(key=lambda j: j.number)
        self._idle.clear()
        await self._status()
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number,
                                  "node_errors": verdict["node_errors"]})

    async def _get_queue(self, request):
        running = [self._running.job.queue_item()] if self._running else []
        return web.json_response({"queue_running": running,
                                  "queue_pending": [j.queue_item() for j in self._pending]})

    async def _post_queue(self, request):
        body = await self._json_body(request)
        if body.get("clear"):
            self._pending.clear()
            await self._status()
        if "delete" in body:
            ids = set(body["delete"] or [])
            self._pending = [j for j in self._pending if j.prompt_id not in ids]
            await self._status()
        if not self._pending and not self._running:
            self._idle.set()
        return web.Response(status=200)

    async def _post_interrupt(self, request):
        body = await self._json_body(request)
        target = body.get("prompt_id") if isinstance(body, dict) else None
        if self._running and (target is None or target == self._running.job.prompt_id):
            self._interrupt = True
            self._resume.set()
        return web.Response(status=200)

    async def _get_history(self, request):
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        items = list(self.history.items())
        if max_items is not None:
            count = int(max_items)
            if offset < 0:
                offset = max(0, len(items) - count)
            items = items[offset:offset + count]
        elif offset > 0:
            items = items[offset:]
        return web.json_response(dict(items))

    async def _get_history_id(self, request):
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def _post_history(self, request):
        body = await self._json_body(request)
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or []:
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def _view(self, request):
        query = request.query
        name = query.get("filename")
        if name is None:
            return web.Response(status=404)
        kind = query.get("type", "output")
        subfolder = query.get("subfolder", "")
        if not name or name.startswith("/") or ".." in name or kind not in ("output", "input", "temp"):
            return web.Response(status=400)
        if subfolder.startswith("/") or ".." in subfolder.split("/"):
            return web.Response(status=403)
        data = self.files.get((kind, subfolder, name))
        if data is None:
            return web.Response(status=404)
        content_type = "image/png" if name.lower().endswith(".png") else "application/octet-stream"
        preview = query.get("preview")
        if preview:
            fmt, _, quality = preview.partition(";")
            if fmt in ("webp", "jpeg"):
                buf = io.BytesIO()
                Image.open(io.BytesIO(data)).convert("RGB").save(
                    buf, format=fmt.upper(), quality=int(quality or 90))
                data, content_type = buf.getvalue(), f"image/{fmt}"
        return web.Response(body=data, content_type=content_type,
                            headers={"Content-Disposition": f'filename="{name}"'})

    async def _upload(self, request):
        post = await request.post()
        image = post.get("image")
        _CURRENT_RECORD.get().form = {k: str(v) for k, v in post.items() if k != "image"}
        kind = post.get("type") or "input"
        if kind not in ("input", "temp", "output") or not hasattr(image, "file"):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        if subfolder.startswith("/") or ".." in subfolder.split("/") or "/" in filename:
            return web.Response(status=400)
        data = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            counter = 1
            while (kind, subfolder, filename) in self.files:
                if self.files[(kind, subfolder, filename)] == data:
                    break
                filename = f"{stem} ({counter}){ext}"
                counter += 1
        self.files[(kind, subfolder, filename)] = data
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    def object_info(self) -> dict:
        """The catalog as /object_info serves it: recorded classes, current file lists."""
        info = dict(self._catalog)
        for (class_type, name), folder in _FILE_COMBOS.items():
            if class_type not in info:
                continue
            node = copy.deepcopy(info[class_type])
            spec = node["input"]["required"][name]
            options = (sorted(f"{sub}/{n}" if sub else n for (k, sub, n) in self.files if k == "input")
                       if folder == "input" else list(self.models.get(folder, [])))
            node["input"]["required"][name] = [options, *spec[1:]]
            info[class_type] = node
        return info

    async def _object_info(self, request):
        return web.json_response(self.object_info())

    async def _object_info_one(self, request):
        name = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({name: info[name]} if name in info else {})

    async def _system_stats(self, request):
        return web.json_response(_recorded_body("get_system_stats.json"))

    async def _models(self, request):
        return web.json_response(_recorded_body("get_models.json"))

    async def _models_folder(self, request):
        folder = request.match_info["folder"]
        known = set(_recorded_body("get_models.json")) | set(self.models)
        if folder not in known:
            return web.Response(status=404)
        return web.json_response(list(self.models.get(folder, [])))

    async def _embeddings(self, request):
        return web.json_response([])

    async def _free(self, request):
        return web.Response(status=200)

    async def _features(self, request):
        return web.json_response(_SERVER_FLAGS)

    # ------------------------------------------------------------------ validation

    def _validate(self, graph: Any) -> dict:
        """execution.py validate_prompt, as far as the recordings show it."""
        result: dict[str, Any] = {"error": None, "node_errors": {}, "outputs": []}
        if not isinstance(graph, dict):
            result["error"] = _err("invalid_prompt", "Invalid prompt", "prompt must be an object")
            return result
        catalog = self.object_info()
        outputs = []
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                result["error"] = _err("invalid_prompt", "Cannot execute because a node is missing "
                                       "the class_type property.", f"Node ID '#{node_id}'")
                return result
            info = catalog.get(node["class_type"])
            if info is None:
                result["error"] = _err("invalid_prompt", f"Cannot execute because node "
                                       f"{node['class_type']} does not exist.", f"Node ID '#{node_id}'")
                return result
            if info.get("output_node"):
                outputs.append(node_id)
        if not outputs:
            result["error"] = _err("prompt_no_outputs", "Prompt has no outputs", "")
            return result
        good, node_errors = [], {}
        validated: dict[str, list] = {}
        for output in sorted(outputs, key=_sort_key):
            try:
                failed = self._validate_node(graph, catalog, output, validated)
            except KeyError as exc:
                failed = {output: [{"type": "exception_during_validation",
                                    "message": "Exception when validating node", "details": str(exc),
                                    "extra_info": {"exception_type": "KeyError"}}]}
            if not failed:
                good.append(output)
                continue
            for node_id, errors in failed.items():
                entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                         "class_type": graph[node_id]["class_type"]})
                entry["dependent_outputs"].append(output)
        result["node_errors"] = node_errors
        result["outputs"] = good
        if not good:
            result["error"] = _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
        return result

    def _validate_node(self, graph, catalog, node_id, validated) -> dict[str, list]:
        if node_id in validated:
            return validated[node_id]
        validated[node_id] = {}
        node = graph[node_id]
        info = catalog[node["class_type"]]
        inputs = node.get("inputs", {})
        spec_all = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        errors: list[dict] = []
        failed: dict[str, list] = {}
        for name in info["input"].get("required", {}):
            if name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})
        for name, value in inputs.items():
            spec = spec_all.get(name)
            if spec is None:
                continue
            if _is_link(value):
                source = value[0]
                if source not in graph:
                    raise KeyError(source)
                try:
                    failed.update(self._validate_node(graph, catalog, source, validated))
                except KeyError as exc:
                    failed[source] = [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node", "details": repr(exc.args[0]),
                        "extra_info": {"input_name": name, "input_config": spec,
                                       "exception_message": repr(exc.args[0]), "exception_type": "KeyError",
                                       "traceback": ["  File \"fake_comfyui\", in validate_inputs\n"],
                                       "linked_node": [source, value[1]]}}]
                    continue
                source_outputs = catalog[graph[source]["class_type"]].get("output", [])
                received = source_outputs[value[1]] if value[1] < len(source_outputs) else None
                wanted = spec[0]
                if isinstance(wanted, str) and received and wanted not in ("*", received) \
                        and received != "*" and wanted != "COMBO":
                    errors.append({"type": "return_type_mismatch",
                                   "message": "Return type mismatch between linked nodes",
                                   "details": f"{name}, received_type({received}) mismatch input_type({wanted})",
                                   "extra_info": {"input_name": name, "input_config": spec,
                                                  "received_type": received, "linked_node": value}})
                continue
            errors.extend(self._validate_value(node["class_type"], name, value, spec))
        if errors:
            failed[node_id] = errors
        validated[node_id] = failed
        return failed

    def _validate_value(self, class_type: str, name: str, value: Any, spec: list) -> list[dict]:
        config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        kind = spec[0]
        if class_type in ("LoadImage", "LoadImageMask") and name == "image":
            sub, _, base = str(value).rpartition("/")
            if ("input", sub, base) not in self.files:
                return [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                         "details": f"image - Invalid image file: {value}", "extra_info": {"input_name": name}}]
            return []
        options = kind if isinstance(kind, list) else config.get("options") if kind == "COMBO" else None
        if options is not None:
            if value in options:
                return []
            list_info, input_config = str(options), spec
            if len(options) > 20:
                list_info, input_config = f"(list of length {len(options)})", None
            return [{"type": "value_not_in_list", "message": "Value not in list",
                     "details": f"{name}: '{value}' not in {list_info}",
                     "extra_info": {"input_name": name, "input_config": input_config, "received_value": value}}]
        if kind in ("INT", "FLOAT"):
            try:
                number = int(value) if kind == "INT" else float(value)
            except (TypeError, ValueError) as exc:
                return [{"type": "invalid_input_type",
                         "message": f"Failed to convert an input value to a {kind} value",
                         "details": f"{name}, {value}, {exc}",
                         "extra_info": {"input_name": name, "input_config": spec, "received_value": value,
                                        "exception_message": str(exc)}}]
            extra = {"input_name": name, "input_config": spec, "received_value": value}
            if "min" in config and number < config["min"]:
                return [{"type": "value_smaller_than_min", "message": f"Value {number} smaller than min "
                         f"of {config['min']}", "details": name, "extra_info": extra}]
            if "max" in config and number > config["max"]:
                return [{"type": "value_bigger_than_max", "message": f"Value {number} bigger than max "
                         f"of {config['max']}", "details": name, "extra_info": extra}]
        return []

    # ------------------------------------------------------------------ execution

    async def _worker(self) -> None:
        while True:
            while not self._pending:
                if not self._running:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            job = self._pending.pop(0)
            self._jobs_run += 1
            self._running = run = _RunState(job, number=self._jobs_run)
            await self._status()
            status = await self._execute(run)
            if self._aborting:  # restart(): the job is forgotten, as if the process died
                self._aborting = False
                self._running = None
                continue
            self.history[job.prompt_id] = {
                "prompt": job.queue_item(), "outputs": run.outputs,
                "status": {"status_str": status, "completed": status == "success", "messages": run.messages},
                "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                         for nid in run.outputs},
            }
            self._running = None
            self._refuse_ws.discard(job.client_id)
            await self._status()
            if job.client_id is not None:
                await self._send("executing", {"node": None, "prompt_id": job.prompt_id}, job.client_id)
            if not self._pending:
                self._idle.set()

    async def _message(self, run: _RunState, event: str, data: dict, *, broadcast: bool = False) -> None:
        """execution.py add_message: kept for /history, sent only to the job's client."""
        run.messages.append([event, data])
        if run.job.client_id is not None or broadcast:
            await self._send(event, data, run.job.client_id)

    async def _execute(self, run: _RunState) -> str:
        job = run.job
        self._interrupt = False
        fails, self._fail_next = self._fail_next, {}
        drop, self._drop_after = self._drop_after, None
        pid = job.prompt_id
        await self._message(run, "execution_start", {"prompt_id": pid, "timestamp": _ms()})
        order = self._execution_order(job.graph, job.outputs)
        signatures = {nid: self._signature(job.graph, nid, {}) for nid in order}
        cached = [nid for nid in order if self._cache.get(nid, (None,))[0] == signatures[nid]]
        await self._message(run, "execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _ms()})
        images: dict[str, tuple] = {}
        new_cache: dict[str, tuple] = {}
        for nid in cached:
            _, ui, image = self._cache[nid]
            images[nid] = image
            new_cache[nid] = self._cache[nid]
            if ui is not None:
                run.outputs[nid] = ui
                if job.client_id is not None:
                    await self._send("executed", {"node": nid, "display_node": nid, "output": ui,
                                                  "prompt_id": pid}, job.client_id)
                run.nodes[nid] = _node_state(pid, nid, 1, 1, "finished")
                await self._send("progress_state", {"prompt_id": pid, "nodes": run.nodes}, job.client_id)
        try:
            for nid in order:
                if nid in cached:
                    continue
                run.current = nid
                node = job.graph[nid]
                run.nodes[nid] = _node_state(pid, nid, 0.0, 1.0, "running")
                await self._send("progress_state", {"prompt_id": pid, "nodes": run.nodes}, job.client_id)
                if job.client_id is not None:
                    await self._send("executing", {"node": nid, "display_node": nid, "prompt_id": pid},
                                     job.client_id)
                await self._checkpoint(run)
                ui, image = await self._run_node(run, nid, node, images, fails.get(nid), drop)
                images[nid] = image
                run.executed.append(nid)
                new_cache[nid] = (signatures[nid], ui, image)
                if ui is not None:
                    run.outputs[nid] = ui
                    if job.client_id is not None:
                        await self._send("executed", {"node": nid, "display_node": nid, "output": ui,
                                                      "prompt_id": pid}, job.client_id)
                state = run.nodes[nid]
                state.update(value=state["max"], state="finished")
                await self._send("progress_state", {"prompt_id": pid, "nodes": run.nodes}, job.client_id)
        except _Interrupted:
            await self._message(run, "execution_interrupted", {
                "prompt_id": pid, "node_id": run.current, "node_type": job.graph[run.current]["class_type"],
                "executed": run.executed, "timestamp": _ms()}, broadcast=True)
            self._cache = new_cache
            run.current = None
            return "error"
        except _NodeFailed as exc:
            node = job.graph[run.current]
            await self._message(run, "execution_error", {
                "prompt_id": pid, "node_id": run.current, "node_type": node["class_type"],
                "executed": run.executed, "exception_message": f"{exc}\n",
                "exception_type": exc.exception_type,
                "traceback": [f"  File \"fake_comfyui/nodes.py\", line 1, in {node['class_type']}\n"],
                "current_inputs": {k: [("<linked>" if _is_link(v) else v)] for k, v in node["inputs"].items()},
                "current_outputs": list(job.graph), "timestamp": _ms()})
            self._cache = new_cache
            run.current = None
            return "error"
        run.current = None
        self._cache = new_cache
        await self._message(run, "execution_success", {"prompt_id": pid, "timestamp": _ms()})
        return "success"

    def _execution_order(self, graph: dict, outputs: list[str]) -> list[str]:
        order: list[str] = []

        def visit(nid: str) -> None:
            if nid in order:
                return
            for value in graph[nid].get("inputs", {}).values():
                if _is_link(value) and value[0] in graph:
                    visit(value[0])
            order.append(nid)

        for output in sorted(outputs, key=_sort_key):
            visit(output)
        return order

    def _signature(self, graph: dict, nid: str, memo: dict) -> str:
        if nid not in memo:
            node = graph[nid]
            parts = {k: (["link", self._signature(graph, v[0], memo), v[1]] if _is_link(v) else v)
                     for k, v in sorted(node.get("inputs", {}).items())}
            memo[nid] = json.dumps([node["class_type"], parts], sort_keys=True)
        return memo[nid]

    async def _checkpoint(self, run: _RunState) -> None:
        if self._interrupt:
            self._interrupt = False
            raise _Interrupted()

    async def _run_node(self, run: _RunState, nid: str, node: dict, images: dict, fail, drop):
        """Produce (ui_output | None, image) for one node, sending progress as it goes."""
        class_type = node["class_type"]
        inputs = node.get("inputs", {})
        image = self._image_for(class_type, inputs, images)
        fail_at = fail[2] if fail else None
        if fail and fail_at is None:
            raise _NodeFailed(fail[0], fail[1])
        steps = inputs.get("steps")
        if class_type == "SaveImageWebsocket":
            await self._websocket_images(run, nid, image)
            return None, image
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
            if class_type == "SlowProgress" and inputs.get("fail_at_step"):
                fail = (f"SlowProgress: deliberate failure at step {inputs['fail_at_step']}", "RuntimeError")
                fail_at = inputs["fail_at_step"]
            send_preview = inputs.get("send_preview", self.previews) if class_type == "SlowProgress" \
                else (self.previews and class_type in _PREVIEW_NODES)
            await self._maybe_pause(run, 0)
            for step in range(1, steps + 1):
                await self._checkpoint(run)
                if self.step_delay:
                    await asyncio.sleep(self.step_delay)
                await self._progress(run, nid, step, steps, _preview_jpeg(image, step, steps) if send_preview else None)
                if drop and step == drop[0]:
                    await self._drop_socket(run, reconnect=drop[1])
                if fail and fail_at == step:
                    raise _NodeFailed(fail[0], fail[1])
                await self._maybe_pause(run, step)
            await self._checkpoint(run)
        if class_type == "SaveImage":
            return {"images": self._save(run, image, str(inputs.get("filename_prefix", "ComfyUI")), "output")}, image
        if class_type == "PreviewImage":
            prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            return {"images": self._save(run, image, prefix, "temp")}, image
        return None, image

    async def _maybe_pause(self, run: _RunState, step: int) -> None:
        match = next((p for p in self._pause_steps if p[0] == step and p[1] in (None, run.number)),
                     None)
        if match is not None:
            self._pause_steps.remove(match)
            self._resume.clear()
            with self._seen:
                self.paused.set()
                self._seen.notify_all()
            await self._resume.wait()
            self.paused.clear()
            await self._checkpoint(run)

    async def _progress(self, run: _RunState, nid: str, value: int, total: int, jpeg: bytes | None,
                        image_type: str = "image/jpeg") -> None:
        job = run.job
        pid = job.prompt_id
        run.nodes[nid].update(value=value, max=total)
        await self._send("progress_state", {"prompt_id": pid, "nodes": run.nodes}, job.client_id)
        progress = {"value": value, "max": total, "prompt_id": pid, "node": nid}
        if jpeg is None:
            await self._send("progress", progress, job.client_id)
            return
        metadata = json.dumps({"node_id": nid, "prompt_id": pid, "display_node_id": nid,
                               "parent_node_id": None, "real_node_id": nid,
                               "image_type": image_type}).encode()
        code = 1 if image_type == "image/jpeg" else 2

        def legacy(meta: bool) -> bytes:
            return struct.pack(">II", 1, code) + jpeg

        def with_meta(meta: bool) -> bytes:
            return struct.pack(">II", 4, len(metadata)) + metadata + jpeg

        # Recorded order: metadata clients get the preview before "progress", legacy after it.
        sockets = list(self._sockets.items()) if job.client_id is None else \
            [(job.client_id, self._sockets.get(job.client_id))]
        for sid, target in sockets:
            if target is None:
                continue
            if target.preview_metadata:
                await self._send_bytes(with_meta, sid)
                await self._send("progress", progress, sid)
            else:
                await self._send("progress", progress, sid)
                await self._send_bytes(legacy, sid)

    async def _websocket_images(self, run: _RunState, nid: str, image: tuple) -> None:
        width, height, batch, rgb = image
        for index in range(batch):
            buf = io.BytesIO()
            Image.new("RGB", (width, height), rgb).save(buf, format="PNG")
            await self._progress(run, nid, index, batch, buf.getvalue(), image_type="image/png")

    async def _drop_socket(self, run: _RunState, *, reconnect: bool) -> None:
        client_id = run.job.client_id
        if client_id is None:
            return
        if not reconnect:
            self._refuse_ws.add(client_id)
        target = self._sockets.pop(client_id, None)
        if target is not None:
            try:
                await asyncio.wait_for(target.ws.close(), 2.0)
            except asyncio.TimeoutError:
                pass

    def _image_for(self, class_type: str, inputs: dict, images: dict) -> tuple:
        """(width, height, batch, rgb) of the image/latent a node produces."""
        upstream = next((images[v[0]] for k, v in inputs.items()
                         if _is_link(v) and v[0] in images and k in (
                             "image", "images", "samples", "pixels", "latent_image", "image1")), None)
        width, height, batch, rgb = upstream or (512, 512, 1, (128, 128, 128))
        if class_type == "LoadImage":
            sub, _, name = str(inputs.get("image", "")).rpartition("/")
            data = self.files.get(("input", sub, name))
            if data:
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
                    rgb = img.convert("RGB").resize((1, 1)).getpixel((0, 0))
            batch = 1
        if isinstance(inputs.get("width"), int) and inputs["width"] > 0:
            width = inputs["width"]
        if isinstance(inputs.get("height"), int) and inputs["height"] > 0:
            height = inputs["height"]
        if isinstance(inputs.get("batch_size"), int):
            batch = inputs["batch_size"]
        if class_type == "EmptyImage":
            color = int(inputs.get("color", 0))
            rgb = ((color >> 16) & 255, (color >> 8) & 255, color & 255)
        if class_type == "ImageInvert":
            rgb = tuple(255 - c for c in rgb)
        if isinstance(inputs.get("seed"), int) and inputs.get("steps"):
            rnd = random.Random(inputs["seed"])
            rgb = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        return (max(1, width), max(1, height), max(1, batch), tuple(rgb))

    def _save(self, run: _RunState, image: tuple, prefix: str, kind: str) -> list[dict]:
        width, height, batch, rgb = image
        subfolder, _, base = prefix.rpartition("/")
        existing = [n for (k, s, n) in self.files if k == kind and s == subfolder and n.startswith(base + "_")]
        counter = 1 + max((int(n[len(base) + 1:].split("_")[0]) for n in existing
                           if n[len(base) + 1:].split("_")[0].isdigit()), default=0)
        info = PngInfo()
        info.add_text("prompt", json.dumps(run.job.graph))
        for key, value in (run.job.extra_data.get("extra_pnginfo") or {}).items():
            info.add_text(key, json.dumps(value))
        refs = []
        for index in range(batch):
            name = f"{base}_{counter + index:05}_.png"
            buf = io.BytesIO()
            Image.new("RGB", (width, height), rgb).save(buf, format="PNG", pnginfo=info)
            self.files[(kind, subfolder, name)] = buf.getvalue()
            refs.append({"filename": name, "subfolder": subfolder, "type": kind})
        return refs


_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _node_state(pid: str, nid: str, value, total, state: str) -> dict:
    return {"value": value, "max": total, "state": state, "node_id": nid, "prompt_id": pid,
            "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}


def _preview_jpeg(image: tuple, step: int, steps: int) -> bytes:
    width, height, _, rgb = image
    size = (max(8, min(512, width // 8)), max(8, min(512, height // 8)))
    shade = tuple(int(c * step / steps) for c in rgb)
    buf = io.BytesIO()
    Image.new("RGB", size, shade).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _err(kind: str, message: str, details: str) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _error(status: int, kind: str, message: str, details: str) -> web.Response:
    return web.json_response({"error": _err(kind, message, details), "node_errors": {}}, status=status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake ComfyUI server.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--step-delay", type=float, default=0.1,
                        help="seconds per sampler step (default 0.1)")
    args = parser.parse_args(argv)
    fake = FakeComfyUI(port=args.port, step_delay=args.step_delay).start()
    print(f"Fake ComfyUI listening on {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
