"""The page itself (GET /) rendered once per caller and address and sent compressed
(studio/ui/assets.py PageCache): the same page Gradio renders, never another person's."""

from __future__ import annotations

import json
import re

import brotli
import httpx

from studio.ui.preload import with_preloads
from tests.test_access_events import sign_in
from tests.test_live_text import signed  # noqa: F401 - the fixture (users ann and bob)


def page_config(html: str) -> dict:
    """The config Gradio writes into the page."""
    found = re.search(r"window\.gradio_config\s*=\s*(\{.*?\});\s*</script>", html, re.S)
    assert found, html[:300]
    return json.loads(found.group(1))


def fetch(client: httpx.Client, path: str = "/", **headers) -> httpx.Response:
    with client.stream("GET", path, headers={"accept-encoding": "br", **headers}) as response:
        response.raw_bytes = b"".join(response.iter_raw())
    return response


def test_page_is_sent_compressed_and_is_the_page_gradio_renders(signed):
    ann = sign_in(signed.url, "ann")
    first, second = fetch(ann), fetch(ann)
    assert first.status_code == 200 and first.headers["content-encoding"] == "br"
    assert first.raw_bytes == second.raw_bytes
    html = brotli.decompress(first.raw_bytes).decode()
    # A query string is rendered by Gradio each time: the kept page is the same text, with
    # the files its first paint needs named in its head (ui/preload.py).
    fresh = ann.get("/?fresh=1", headers={"accept-encoding": "identity"})
    assert html == with_preloads(fresh.content).decode() != fresh.text
    assert page_config(html)["username"] == "ann"
    # Kept by nobody: the page names who is signed in.
    assert second.headers["cache-control"] == "no-store"
    assert second.headers.get_list("x-content-type-options") == ["nosniff"]
    ann.close()


def test_page_names_its_own_caller_and_the_address_it_was_asked_at(signed):
    ann, bob = sign_in(signed.url, "ann"), sign_in(signed.url, "bob")
    fetch(ann)
    assert page_config(bob.get("/").text)["username"] == "bob"
    assert page_config(ann.get("/").text)["username"] == "ann"
    behind = ann.get("/", headers={"x-forwarded-host": "studio.example.org",
                                   "x-forwarded-proto": "https"}).text
    assert page_config(behind)["root"] == "https://studio.example.org"
    assert page_config(ann.get("/").text)["root"] != "https://studio.example.org"
    ann.close()
    bob.close()


def test_page_is_not_sent_to_a_visitor(signed):
    with httpx.Client(base_url=signed.url, timeout=10) as visitor:
        answer = visitor.get("/")
    assert "gradio_config" not in answer.text
    assert answer.status_code in (302, 303, 401) or "sign" in answer.text.lower()


def test_assets_answered_from_memory_carry_one_nosniff(signed):
    ann = sign_in(signed.url, "ann")
    name = re.search(r"/assets/(index-[A-Za-z0-9_-]{8}\.js)", ann.get("/").text).group(1)
    for _ in range(3):
        answer = fetch(ann, f"/assets/{name}")
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"]
    ann.close()


class Renders:
    """A stand-in app behind the cache: the page names the address it was asked at and
    how many times it was rendered."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, scope, receive, send) -> None:
        self.count += 1
        host = next((v for k, v in scope["headers"] if k == b"x-gradio-server"), b"-").decode()
        body = f"<html>{host} {self.count}</html>".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": body})


def ask(cache, user: str, *headers: tuple[bytes, bytes]) -> str:
    import asyncio
    import threading

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "scheme": "http", "root_path": "", "state": {"studio_user": user},
             "headers": [(b"accept-encoding", b"identity"), (b"host", b"studio.lan"),
                         *headers]}
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    # In a thread of its own: the browser tests' Playwright may hold this thread's loop.
    ran = threading.Thread(target=asyncio.run, args=(cache(scope, receive, send),))
    ran.start()
    ran.join(10)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"
                    ).decode()


def test_page_cache_keeps_the_pages_asked_for_most_recently():
    from studio.ui.assets import PageCache

    app = Renders()
    cache = PageCache(app, most=2)
    first_ann = ask(cache, "ann")
    ask(cache, "bob")
    assert ask(cache, "ann") == first_ann  # asked again: now the most recent
    ask(cache, "cy")  # one too many: bob's goes, not ann's
    assert ask(cache, "ann") == first_ann
    rendered = app.count
    ask(cache, "bob")
    assert app.count == rendered + 1


def test_page_cache_keys_the_address_gradio_builds_the_page_from():
    """Gradio reads the first of a repeated header, and ``x-gradio-server`` for the page's
    root address: a page asked with another one is another page."""
    from studio.ui.assets import PageCache

    cache = PageCache(Renders())
    plain = ask(cache, "ann")
    other = ask(cache, "ann", (b"x-gradio-server", b"http://elsewhere:7860"))
    assert "elsewhere" in other and "elsewhere" not in plain
    assert ask(cache, "ann") == plain
    first = ask(cache, "ann", (b"x-gradio-server", b"http://a"), (b"x-gradio-server", b"b"))
    assert ask(cache, "ann", (b"x-gradio-server", b"http://a")) == first
