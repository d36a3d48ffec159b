"""A file server on 127.0.0.1 for model-download tests: real HTTP, Range requests, and
knobs for the faults a download meets (a cut connection, a stall, a status, no Range)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

PAYLOAD = bytes(range(256)) * 160  # 40 KiB: a model file, 10 chunks of 4 KiB
WAIT = 10  # seconds a held response waits for its release, at most


class FileServer:
    """Serves ``files`` by path. Knobs: ``cut_after[path] = n`` (one shot: send n bytes of
    the body, then close), ``hold[path] = (n, event)`` (send n bytes, wait for the event),
    ``ignore_range``, ``status[path]``, ``content_type[path]``. ``requests`` records
    (path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.hold: dict[str, tuple[int, threading.Event]] = {}
        self.status: dict[str, int] = {}
        self.content_type: dict[str, str] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval only makes shutdown() at teardown quick.
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        path, range_header = req.path, req.headers.get("Range")
        self.requests.append((path, range_header))
        if path in self.status:
            req.send_response(self.status[path])
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        if path not in self.files:
            req.send_error(404)
            return
        data = self.files[path]
        status, start, body = 200, 0, data
        if range_header and not self.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                req.send_response(416)
                req.send_header("Content-Range", f"bytes */{len(data)}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
            status, body = 206, data[start:]
        req.send_response(status)
        req.send_header("Content-Type", self.content_type.get(path, "application/octet-stream"))
        req.send_header("Content-Length", str(len(body)))
        if status == 206:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        req.end_headers()
        if path in self.cut_after:
            req.wfile.write(body[:self.cut_after.pop(path)])
            req.wfile.flush()
            req.close_connection = True
            return
        if path in self.hold:
            first, release = self.hold.pop(path)
            req.wfile.write(body[:first])
            req.wfile.flush()
            release.wait(WAIT)
            body = body[first:]
        req.wfile.write(body)


@contextmanager
def running_file_server(files: dict[str, bytes]) -> Iterator[FileServer]:
    srv = FileServer()
    srv.files.update(files)
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
