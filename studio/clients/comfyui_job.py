"""One ComfyUI run followed to its end: the websocket (``_Socket``) and ``_Job``, with
``/history`` as the safety net when the socket drops. Used by ``ComfyUIClient.run``;
no gradio imports."""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import websocket
from PIL import Image

from ..errors import BackendRejected, BackendUnavailable
from .comfyui_types import (START_HINT, Cached, Cancelled, Done, Event, Executing,
                            GenerationTimeout, HistoryEntry, ImageRef, JobLost, Preview, Progress,
                            ResultUnread, Started, Timings, execution_failed)

if TYPE_CHECKING:
    from .comfyui import ComfyUIClient

log = logging.getLogger(__name__)


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
            raise BackendUnavailable(f"Can't open ComfyUI's websocket at {self.client.shown_as}.",
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
    # Waits between reads of /history/{id} at the end of a job when one fails with a 5xx or
    # no answer: a ComfyUI busy writing its history (or a proxy hiccup) answers on a later
    # try; five tries in under 4 s, then the job's result is left for later (ResultUnread).
    HISTORY_RETRIES = (0.25, 0.5, 1.0, 2.0)

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
        grace = getattr(client, "unreachable_grace", None)
        if grace is not None:
            self.UNREACHABLE_GRACE = grace

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
            raise execution_failed(self.prompt_id, data)
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
                f"ComfyUI at {self.client.shown_as} didn't finish job {self.prompt_id} within "
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
            entry = self._read_history()
            if entry is not None:
                break
            self._pause(0.05)
        if entry is not None and entry.status != "success":
            if entry.interrupted:
                return Cancelled(self.prompt_id, self.current_node)
            raise execution_failed(self.prompt_id, entry.error or {})
        if entry is None and self.cancel_deadline is not None:
            return Cancelled(self.prompt_id, self.current_node)
        images = entry.images if entry is not None else _dedupe(self.executed_images)
        now = time.monotonic()
        timings = Timings(
            queued_s=(self.t_started - self.t_queued) if self.t_started else None,
            execution_s=entry.execution_s if entry is not None else None,
            total_s=now - self.t_queued)
        return Done(tuple(images), self.prompt_id, timings, self.cached)


    def _read_history(self) -> HistoryEntry | None:
        """``/history/{id}``, tried again after a 5xx or no answer (``HISTORY_RETRIES``);
        raises ``ResultUnread`` when every try failed, other errors at once."""
        for wait in (*self.HISTORY_RETRIES, None):
            try:
                return self.client.history(self.prompt_id)
            except (BackendRejected, BackendUnavailable) as exc:
                status = getattr(exc, "status", None)
                if isinstance(exc, BackendRejected) and not (status or 0) >= 500:
                    raise
                if wait is None:
                    tries = len(self.HISTORY_RETRIES) + 1
                    answer = f"answered {status}" if status else "didn't answer"
                    raise ResultUnread(
                        f"ComfyUI at {self.client.shown_as} finished job {self.prompt_id}, but "
                        f"GET /history/{self.prompt_id} {answer} all {tries} times the studio "
                        "asked.", prompt_id=self.prompt_id, status=status) from exc
                log.info("ComfyUI's /history for %s failed (%s); trying again in %g s",
                         self.prompt_id, status or "no answer", wait)
                self._idle.wait(wait)
        return None  # not reached: the last try returns or raises


def _dedupe(refs: list[ImageRef]) -> list[ImageRef]:
    seen, result = set(), []
    for ref in refs:
        if ref not in seen:
            seen.add(ref)
            result.append(ref)
    saved = [r for r in result if r.type == "output"]
    return saved or result
