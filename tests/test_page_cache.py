"""The page itself (GET /) rendered once per caller and address and sent compressed
(studio/ui/assets.py PageCache): the same page Gradio renders, never another person's."""

from __future__ import annotations

import json
import re

import brotli
import httpx

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
    # A query string is rendered by Gradio each time: the kept page is the same text.
    fresh = ann.get("/?fresh=1", headers={"accept-encoding": "identity"})
    assert html == fresh.text
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
