"""Gradio's page assets (``/assets/...``: the frontend's JavaScript, CSS and fonts), compressed
once per process and kept, and marked for the browser to keep.

Gradio compresses every asset again for every page (brotli in its middleware, ~5 ms of
server CPU for a 135 KB script) and sends no ``Cache-Control``, so each new page asks again
for the ~160 files the studio's components use: most of a page load's server time on a
small box (bench/bench_load.py). This ASGI middleware sits inside Gradio's compression, which
passes a response that already has a ``Content-Encoding`` through untouched.

The files are part of the installed Gradio (content-hashed names, ``Index-CUQnb8lN.js``),
so they never change while the process runs: a kept copy is never stale. The cache is
bounded (``limit`` bytes of compressed bodies); past it, assets are passed through as before.

``PageCache`` does the same for the page itself (``GET /``). Gradio renders it anew for each
load: the app's whole config (~140 KB) copied, walked for its URLs and written out as JSON,
with the API's description beside it, ~12 ms of server time against ~5 for a bare chat app,
and 190 KB sent uncompressed (its compression middleware looks at file extensions only).
The page depends on nothing but the config, fixed once the app is built, the address it is
asked at and the signed-in name: it is kept per caller and address, compressed once, with
the files its first paint needs named in its head (``preload.py``).
"""

from __future__ import annotations

import gzip
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .preload import with_preloads

PREFIX = "/assets/"
COMPRESSIBLE = (".js", ".css", ".json", ".svg", ".html", ".map", ".txt")
# Vite's content hash in a file name: a new Gradio version means new names.
HASHED = re.compile(r"-[A-Za-z0-9_-]{8,}\.(js|css)$")
YEAR = "public, max-age=31536000, immutable"
DAY = "public, max-age=86400"


@dataclass(frozen=True)
class Kept:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def encoding_for(accept: str, path: str) -> str:
    """The encoding this studio sends ``path`` in to a browser that accepts ``accept``."""
    if not path.endswith(COMPRESSIBLE):
        return "identity"
    accepted = {part.split(";")[0].strip() for part in accept.split(",")}
    if "br" in accepted:
        return "br"
    return "gzip" if "gzip" in accepted else "identity"


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "br":
        import brotli  # gradio's own dependency, for its middleware

        return brotli.compress(body, quality=5)  # once: Gradio's 4 every time
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=6)
    return body


class AssetCache:
    """ASGI middleware: GET ``/assets/...`` answered from memory after the first time."""

    def __init__(self, app, limit: int = 32 * 1024 * 1024) -> None:
        self.app = app
        self.limit = limit
        self._kept: dict[tuple[str, str], Kept] = {}
        self._size = 0
        self._lock = threading.Lock()

    def held_bytes(self) -> int:
        with self._lock:
            return self._size

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PREFIX) or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if b"range" in headers:
            return await self.app(scope, receive, send)
        encoding = encoding_for(headers.get(b"accept-encoding", b"").decode("latin-1"), path)
        key = (path, encoding)
        with self._lock:
            kept = self._kept.get(key)
        if kept is None:
            kept = await self._fetch(scope, receive, path, encoding)
            if kept is None:  # not a plain 200, or too big to keep: as Gradio answers it
                return await self.app(scope, receive, send)
        await answer(scope, send, kept)

    async def _fetch(self, scope, receive, path: str, encoding: str) -> Kept | None:
        """Ask the app for the file uncompressed; keep it compressed once."""
        kept = await fetch_whole(self.app, scope, receive, encoding,
                                 YEAR if HASHED.search(path) else DAY, b"Accept-Encoding")
        if kept is None:
            return None
        with self._lock:
            if (path, encoding) not in self._kept:
                if self._size + len(kept.body) > self.limit:
                    return None
                self._kept[(path, encoding)] = kept
                self._size += len(kept.body)
        return kept


async def fetch_whole(app, scope, receive, encoding: str, cache_control: str,
                      vary: bytes, transform: Callable[[bytes], bytes] | None = None
                      ) -> Kept | None:
    """The app's answer to ``scope`` asked uncompressed, changed by ``transform`` if given,
    compressed in ``encoding``, with ``cache_control`` and ``vary``; None unless it is a
    plain 200 that sets no cookie (an answer that does is not for keeping)."""
    plain = {**scope, "method": "GET",
             "headers": [(k, v) for k, v in scope.get("headers") or []
                         if k not in (b"accept-encoding", b"if-none-match",
                                      b"if-modified-since")]}
    start: dict = {}
    chunks: list[bytes] = []

    async def collect(message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(plain, receive, collect)
    if start.get("status") != 200 or any(k.lower() == b"set-cookie"
                                         for k, _ in start.get("headers", [])):
        return None
    body = b"".join(chunks)
    if transform is not None:
        body = transform(body)
    body = compress(body, encoding)
    drop = {b"content-length", b"content-encoding", b"cache-control", b"vary",
            b"transfer-encoding"}
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in drop]
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"cache-control", cache_control.encode()))
    headers.append((b"vary", vary))
    if encoding != "identity":
        headers.append((b"content-encoding", encoding.encode()))
    return Kept(200, headers, body)


async def answer(scope, send, kept: Kept) -> None:
    # A copy of the headers: a middleware outside may add to the list it is sent (the
    # front door's nosniff), and the kept one must not grow with every answer.
    await send({"type": "http.response.start", "status": kept.status,
                "headers": list(kept.headers)})
    await send({"type": "http.response.body",
                "body": b"" if scope.get("method") == "HEAD" else kept.body})


# What the page's text depends on besides the signed-in name: the address it was asked at.
# Every header Gradio builds the page's root URL from (``route_utils.get_root_url``), and
# those a proxy may set beside them.
PAGE_KEY_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port",
                    b"x-forwarded-prefix", b"forwarded", b"x-gradio-server")
# The browser asks again each time (the page names the signed-in person; signing out must
# not leave it behind), and is sent it from memory.
NO_STORE = "no-store"


class PageCache:
    """ASGI middleware: the page (``GET /``, no query) rendered by the app once per caller,
    address and encoding, then answered from memory. ``most``: the pages kept (the one
    asked for least recently goes first). Put it inside the front door, which names the
    caller in the scope."""

    def __init__(self, app, most: int = 64) -> None:
        self.app = app
        self.most = most
        self._kept: OrderedDict[tuple, Kept] = OrderedDict()
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope.get("path") != "/"
                or scope.get("method") not in ("GET", "HEAD") or scope.get("query_string")):
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or ():
            headers.setdefault(name, value)  # the first of a repeated header, as Gradio reads
        encoding = encoding_for(headers.get(b"accept-encoding", b"").decode("latin-1"),
                                "index.html")
        key = ((scope.get("state") or {}).get("studio_user"), encoding, scope.get("scheme"),
               scope.get("root_path", ""), *(headers.get(h) for h in PAGE_KEY_HEADERS))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
        if kept is None:
            kept = await fetch_whole(self.app, scope, receive, encoding, NO_STORE,
                                     b"Accept-Encoding, Cookie", transform=with_preloads)
            if kept is None:
                return await self.app(scope, receive, send)
            with self._lock:
                self._kept[key] = kept
                while len(self._kept) > self.most:
                    self._kept.popitem(last=False)
        await answer(scope, send, kept)
