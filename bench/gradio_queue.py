"""One call through Gradio's queue, exactly as the page makes it: ``POST
/gradio_api/queue/join``, then the SSE stream ``GET /gradio_api/queue/data``. Shared by the
benchmarks that time what reaches a browser."""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import socket
import threading
import time
import urllib.parse
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
    CPU (the benchmark's client, not the server's). ``lean``: over ``LeanHttp``, not httpx
    (many pages in one process: see ``LeanHttp``)."""

    MARKER = re.compile(r'class="studio-live live-([\w-]+) reply-(\w+)"')

    def __init__(self, url: str, lean: bool = False) -> None:
        self.url = url
        self.lean = lean
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
        client = (LeanHttp(cookies=LIVE_COOKIE) if self.lean
                  else httpx.Client(timeout=30, cookies=LIVE_COOKIE))
        with contextlib.closing(client) as http, http.stream(
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


class LeanHttp:
    """The few calls the benchmarks make of ``httpx.Client`` (``post``, ``stream``, a
    response's ``iter_raw`` / ``iter_lines`` / ``read``, ``cookies``), over plain keep-alive
    sockets with each request written by hand: what twenty browsers do costs this process
    microseconds each, not httpx's ~1 ms.

    Why: the benchmark plays twenty pages from one Python process, so each page's request
    waits for the others' on this process's GIL. With an ``httpx.Client`` per page, twenty
    requests at once against a server that answers at once (a bare asyncio socket server)
    were read back p50 14-35 / p95 19-38 ms after the start, one alone in ~1 ms: the
    client's own work, in every "20 at once" figure on top of the server's. Browsers don't
    share one interpreter. Plain HTTP/1.1 only (no TLS, no redirects), for loopback."""

    def __init__(self, cookies: dict | None = None, timeout: float = 30.0) -> None:
        self.cookies = dict(cookies or {})
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def post(self, url: str, json: object = None) -> "_Response":
        with self.stream("POST", url, json=json) as resp:
            resp.read()
        return resp

    def get(self, url: str, params: dict | None = None) -> "_Response":
        with self.stream("GET", url, params=params) as resp:
            resp.read()
        return resp

    @contextlib.contextmanager
    def stream(self, method: str, url: str, *, params: dict | None = None,
               json: object = None, timeout: float | None = None) -> Iterator["_Response"]:
        parts = urllib.parse.urlsplit(url)
        query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params or {})) if q)
        target = (parts.path or "/") + (f"?{query}" if query else "")
        body = b"" if json is None else _json_bytes(json)
        head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*"]
        if self.cookies:
            head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if json is not None:
            head.append("Content-Type: application/json")
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        addr, wait = (parts.hostname, parts.port or 80), timeout or self.timeout
        conn = self._take(addr)
        if conn is not None:
            try:
                resp = conn.ask(request, wait, method)
            except (BrokenPipeError, ConnectionResetError, _Closed):
                conn.close()
                if conn.buf:  # part of an answer came: never sent twice
                    raise
                conn = None  # a kept connection the server had closed: once more, anew
            except BaseException:
                conn.close()
                raise
        if conn is None:
            conn = _Conn(addr, wait)
            try:
                resp = conn.ask(request, wait, method)
            except BaseException:
                conn.close()
                raise
        for value in (v for n, v in resp.header_list if n == "set-cookie"):
            name, _, rest = value.partition("=")
            attrs = [a.strip().lower() for a in rest.split(";")[1:]]
            if "max-age=0" in attrs:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        try:
            yield resp
        finally:
            if resp.finished and conn.reusable:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()

    def _take(self, addr: tuple[str, int]) -> "_Conn | None":
        """A kept connection to ``addr``, or None."""
        with self._lock:
            for i, conn in enumerate(self._idle):
                if conn.addr == addr:
                    return self._idle.pop(i)
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Closed(Exception):
    """The server closed a kept connection before answering anything on it."""


class _Conn:
    def __init__(self, addr: tuple[str, int], timeout: float) -> None:
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.reusable = True

    def ask(self, request: bytes, timeout: float, method: str) -> "_Response":
        self.sock.settimeout(timeout)
        self.sock.sendall(request)
        return _Response(self, method)

    def fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Response:
    """A response whose head is read; its body is read as it is iterated."""

    def __init__(self, conn: _Conn, method: str = "GET") -> None:
        self.conn = conn
        while b"\r\n\r\n" not in conn.buf:
            if not conn.fill():
                if not conn.buf:
                    raise _Closed()
                raise RuntimeError("the server closed the connection inside its answer")
        head, conn.buf = conn.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split()[1])
        # Each header as it came (Set-Cookie repeats), and by name (the last one).
        self.header_list = [(n.strip().lower(), v.strip())
                            for n, _, v in (line.partition(":") for line in lines[1:])]
        self.headers = dict(self.header_list)
        self.finished = False
        self._content: bytes | None = None
        if self.headers.get("connection", "").lower() == "close":
            conn.reusable = False
        # No body whatever the headers say (RFC 9112, 6.3).
        self._empty = (method == "HEAD" or self.status_code in (204, 304)
                       or 100 <= self.status_code < 200)

    def raise_for_status(self) -> "_Response":
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {(self._content or b'')[:200]!r}")
        return self

    def json(self):
        return json.loads(self.read())

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_raw())
        return self._content

    def iter_raw(self) -> Iterator[bytes]:
        conn = self.conn
        if self._empty:
            self.finished = True
            return
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in conn.buf:
                    if not conn.fill():
                        raise ConnectionError("the stream ended inside a chunk")
                size_line, rest = conn.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                conn.buf = rest
                while len(conn.buf) < size + 2:
                    if not conn.fill():
                        raise ConnectionError("the stream ended inside a chunk")
                data, conn.buf = conn.buf[:size], conn.buf[size + 2:]
                if size == 0:
                    self.finished = True
                    return
                yield data
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                if not conn.buf and not conn.fill():
                    raise ConnectionError("the body ended early")
                data, conn.buf = conn.buf[:left], conn.buf[left:]
                left -= len(data)
                yield data
            self.finished = True
        else:  # to the end of the connection
            conn.reusable = False
            if conn.buf:
                data, conn.buf = conn.buf, b""
                yield data
            while conn.fill():
                data, conn.buf = conn.buf, b""
                yield data
            self.finished = True

    def iter_lines(self) -> Iterator[str]:
        pending = ""
        # Incremental: a character split between two chunks; "replace", as httpx does.
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        for data in self.iter_raw():
            pending += decode(data)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.rstrip("\r")
        pending += decode(b"", final=True)
        if pending:
            yield pending
