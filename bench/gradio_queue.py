"""One call through Gradio's queue, exactly as the page makes it: ``POST
/gradio_api/queue/join``, then the SSE stream ``GET /gradio_api/queue/data``. Shared by the
benchmarks that time what reaches a browser."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class Message:
    kind: str  # "process_generating" or "process_completed"
    at: float  # the clock when the message was read
    size: int  # bytes on the wire, the blank line included
    values: list  # every output's value so far, diffs applied
    render: dict | None = None  # a render's config (a lazy tab built), with its last message


def queue_call(http, url: str, *, data: list, fn_index: int, trigger_id: int | None,
               session: str, deadline: float, clock: Callable[[], float] = time.monotonic,
               what: str = "the app") -> Iterator[Message]:
    """Yield each output message of one queued call; ends after ``process_completed`` or
    ``close_stream``. ``deadline`` is on ``clock``; a message with an error raises."""
    from gradio_client.utils import apply_diff

    http.post(url + "gradio_api/queue/join", json={
        "data": data, "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id,
        "session_hash": session}).raise_for_status()
    values = None
    with http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session},
                     timeout=30) as resp:
        buf = b""
        for chunk in resp.iter_raw():  # Gradio sends a heartbeat at least every 15 s
            if clock() > deadline:
                raise TimeoutError(f"{what}: no complete answer in time")
            buf += chunk
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                if not raw.startswith(b"data:"):
                    continue
                msg = json.loads(raw[5:])
                kind = msg.get("msg")
                if kind == "close_stream":
                    return
                if kind not in ("process_generating", "process_completed"):
                    continue
                at = clock()
                out = (msg.get("output") or {}).get("data")
                if out is None or not msg.get("success", True):
                    raise RuntimeError(f"{what}: error in the SSE stream: {str(msg)[:300]}")
                if kind == "process_completed" or values is None:
                    values = out
                else:
                    values = [v if d is None else apply_diff(v, d) for v, d in zip(values, out)]
                yield Message(kind, at, len(raw) + 2, values,
                              (msg.get("output") or {}).get("render_config"))
                if kind == "process_completed":
                    return


LIVE_COOKIE = {"studio_live": "1"}  # what assets/studio.js sets: "this page reads /studio/live"


class LiveReader:
    """What the studio's page script does while a reply streams (``studio/ui/live.py``):
    once an update's stats line carries the marker, read ``/studio/live/<chat>?reply=<id>``
    to its end on a thread of its own. ``text`` is what it read; ``cpu_s`` that thread's
    CPU (the benchmark's client, not the server's)."""

    MARKER = re.compile(r'class="studio-live live-([\w-]+) reply-(\w+)"')

    def __init__(self, url: str) -> None:
        self.url = url
        self.text = ""
        self.events = 0
        self.cpu_s = 0.0
        self._thread: threading.Thread | None = None

    def look(self, values: list) -> None:
        """Start reading when ``values`` (an update's outputs) carry the marker."""
        if self._thread is not None:
            return
        for value in values:
            found = self.MARKER.search(value) if isinstance(value, str) else None
            if found:
                self._thread = threading.Thread(target=self._read, args=found.groups(),
                                                daemon=True)
                self._thread.start()
                return

    def _read(self, chat_id: str, reply_id: str) -> None:
        import httpx

        t0 = time.thread_time()
        with httpx.Client(timeout=30, cookies=LIVE_COOKIE) as http, http.stream(
                "GET", f"{self.url}studio/live/{chat_id}", params={"reply": reply_id}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    piece = json.loads(line[5:])
                    if "at" in piece:
                        self.text = self.text[:piece["at"]] + piece["text"]
                        self.events += 1
        self.cpu_s = time.thread_time() - t0

    def join(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def page_config(http, url: str, session: str, timeout: float = 60.0) -> dict:
    """The studio's config as a page ``session`` that opened every tab has it: each tab
    built the first time a page opens it (the studio's ``ui/lazy.py``) is built in
    ``session`` here, and its components and events join /config's. Events of those tabs
    exist only in the session that built them, so call them in ``session``."""
    config = http.get(url + "config").json()
    components, dependencies = list(config["components"]), list(config["dependencies"])
    for dep in config["dependencies"]:
        if dep.get("render_id") is None:
            continue
        for msg in queue_call(http, url, data=[], fn_index=dep["id"], trigger_id=None,
                              session=session, deadline=time.monotonic() + timeout,
                              what="building a tab"):
            if msg.render is not None:
                components += msg.render["components"]
                dependencies += msg.render["dependencies"]
    return {**config, "components": components, "dependencies": dependencies}
