"""The benchmarks' plain-socket client (bench/gradio_queue.LeanHttp) against a real uvicorn
server on loopback: what it reads is what the server sent, a chunked stream as it comes,
its cookies kept, its connection used again. A client that misread would skew every
"twenty at once" figure."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gradio_queue import LeanHttp  # noqa: E402


async def echo(request: Request) -> JSONResponse:
    raw = await request.body()
    body = json.loads(raw) if raw else None
    resp = JSONResponse({"got": body, "cookie": request.headers.get("cookie", ""),
                         "peer": request.client.port, "q": request.query_params.get("q")})
    resp.set_cookie("session", "s2", httponly=True)
    return resp


async def sse(request: Request) -> StreamingResponse:
    async def events():
        for i in range(3):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0.05)
        word = "data: héllo\n\n".encode()  # a character cut in two by the chunks
        yield word[:8]
        await asyncio.sleep(0.05)
        yield word[8:]
    return StreamingResponse(events(), media_type="text/event-stream")


async def forget(request: Request) -> Response:
    resp = Response(status_code=204)
    resp.delete_cookie("session")  # Max-Age=0
    return resp


# The server closes a connection idle this long: a kept one is then found closed.
IDLE_CLOSE_S = 0.3


@pytest.fixture(scope="module")
def server():
    app = Starlette(routes=[Route("/echo", echo, methods=["POST", "GET"]),
                            Route("/sse", sse), Route("/forget", forget, methods=["POST"])])
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        timeout_keep_alive=IDLE_CLOSE_S))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


def test_bench_client_posts_json_keeps_cookies_and_its_connection(server):
    http = LeanHttp(cookies={"studio_live": "1"})
    try:
        first = http.post(server + "echo", json={"text": "héllo", "n": [1, 2]}).raise_for_status()
        answer = first.json()
        assert answer["got"] == {"text": "héllo", "n": [1, 2]}
        assert answer["cookie"] == "studio_live=1"
        second = http.post(server + "echo", json={}).json()
        assert second["cookie"] == "studio_live=1; session=s2"  # the server's Set-Cookie kept
        assert second["peer"] == answer["peer"]  # the same connection, kept alive
        third = http.get(server + "echo", params={"q": "a b&c"}).json()
        assert (third["got"], third["q"]) == (None, "a b&c")
    finally:
        http.close()


def test_bench_client_reads_a_chunked_stream_as_it_comes(server):
    http = LeanHttp()
    try:
        seen = []
        with http.stream("GET", server + "sse") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    seen.append((line, time.monotonic()))
        assert [line for line, _ in seen] == ["data: 0", "data: 1", "data: 2", "data: héllo"]
        # Each event was read when it was sent, not all at the end.
        assert seen[2][1] - seen[0][1] >= 0.08
    finally:
        http.close()


def test_bench_client_a_kept_connection_the_server_closed_is_replaced_once(server):
    http = LeanHttp()
    try:
        first = http.post(server + "echo", json={"n": 1}).json()
        time.sleep(IDLE_CLOSE_S * 3)  # the server closes the idle connection
        again = http.post(server + "echo", json={"n": 2}).json()
        assert again["got"] == {"n": 2}
        assert again["peer"] != first["peer"]  # sent once more, on a new connection
    finally:
        http.close()


def test_bench_client_an_answer_without_a_body_and_a_deleted_cookie(server):
    http = LeanHttp()
    try:
        http.post(server + "echo", json={})
        assert http.cookies == {"session": "s2"}
        t0 = time.monotonic()
        resp = http.post(server + "forget", json={})
        assert resp.status_code == 204 and resp.read() == b""
        assert time.monotonic() - t0 < IDLE_CLOSE_S  # not read until the connection closed
        assert http.cookies == {}  # Max-Age=0: the cookie is gone
        assert http.post(server + "echo", json={}).json()["cookie"] == ""
    finally:
        http.close()
