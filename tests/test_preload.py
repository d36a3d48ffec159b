"""The page names the files its first paint needs (studio/ui/preload.py): read from the
installed Gradio's built frontend, exactly those the page loads, and nothing when that
frontend is not as expected."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from studio.ui.preload import (FRONTEND, Frontend, config_kinds, read_frontend,
                               with_preloads)


def page_html(kinds: list[str]) -> bytes:
    config = {"components": [{"id": i, "type": kind} for i, kind in enumerate(kinds)]}
    return (b"<html><head><title>x</title><script>window.gradio_config = "
            + json.dumps(config).encode() + b";</script></head><body></body></html>")


def test_the_installed_frontend_is_read():
    frontend = read_frontend()
    assets = FRONTEND / "assets"
    assert any(name.startswith("Blocks-") for name in frontend.boot)
    for kind in ("chatbot", "textbox", "button", "markdown", "state", "sidebar", "radio"):
        assert any(name.startswith("Index-") for name in frontend.kinds[kind]), kind
    named = set(frontend.boot) | {name for files in frontend.kinds.values() for name in files}
    assert named and all((assets / name).is_file() for name in named)
    # The page's own script and style are not named again.
    assert len(frontend.in_page) == 2 and frontend.in_page <= named
    assert not set(frontend.files(list(frontend.kinds))) & frontend.in_page


def test_a_page_names_the_files_of_its_kinds_once_each_in_its_head():
    frontend = read_frontend()
    html = with_preloads(page_html(["column", "chatbot", "textbox", "chatbot", "api"]), frontend)
    head, body = html.split(b"</head>")
    links = [part.split(b'"')[0].decode() for part in head.split(b'href="./assets/')[1:]]
    assert len(links) == len(set(links))
    assert set(links) == set(frontend.boot + frontend.kinds["column"]
                             + frontend.kinds["chatbot"] + frontend.kinds["textbox"]
                             + frontend.kinds["state"]) - frontend.in_page  # "api": a state
    assert b'rel="modulepreload"' in head and b'rel="preload" as="style"' in head
    assert frontend.kinds["dropdown"][0] not in links and body == b"<body></body></html>"
    # Scripts as modules, styles as styles, each asked after the page's own script.
    for tag in head.split(b"<link ")[1:]:
        assert b'fetchpriority="low"' in tag and b"crossorigin" in tag
        assert (b".js" in tag) == (b"modulepreload" in tag)


def test_every_component_kind_of_the_frontend_is_read_and_hidden_ones_are_not_named():
    frontend = read_frontend()
    core = next(FRONTEND.glob("assets/core-*.js")).read_text(encoding="utf-8")
    keys = set(re.findall(r"[{,]([a-z0-9_]+):\{[^{}]*component:\(\)=>", core))
    # "core" is Gradio's core module, there with no table of needs: a boot file here.
    assert "model3d" in frontend.kinds and keys - {"core"} <= set(frontend.kinds)
    assert any(name.startswith("core-") for name in frontend.boot)
    shown = {"type": "dropdown", "props": {"visible": True}}
    hidden = {"type": "slider", "props": {"visible": False}}
    html = (b"<script>window.gradio_config = "
            + json.dumps({"components": [shown, hidden]}).encode() + b";</script>")
    assert config_kinds(html) == ["dropdown"]


def test_a_page_without_a_config_or_a_frontend_not_as_expected_is_left_as_it_is(tmp_path):
    plain = b"<html><head></head><body>hi</body></html>"
    assert with_preloads(plain) == plain
    assert config_kinds(b"window.gradio_config = {not json;</script>") == []
    assert config_kinds(b"window.gradio_config = [1];</script>") == []
    # A Gradio release that writes its imports another way: nothing is named.
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(
        '<script type="module" crossorigin src="./assets/index-abc.js"></script>')
    (tmp_path / "assets" / "index-abc.js").write_text("import('./other.js')")
    assert read_frontend(tmp_path) == Frontend()
    page = page_html(["chatbot"])
    assert with_preloads(page, read_frontend(tmp_path)) == page
    assert read_frontend(tmp_path / "missing") == Frontend()
    # A table of another shape fails inside; the page still goes out as it is.
    odd = Frontend(boot=["Blocks-x.js"], kinds={"chatbot": [None]})  # type: ignore[list-item]
    assert with_preloads(page, odd) == page


def first_page_files(browser_context, url: str) -> tuple[set[str], list[str]]:
    """The scripts and styles a page loaded until its box was usable, and every request
    for one (a file asked twice shows twice), with the browser's cache off so that each
    load is a request."""
    page = browser_context.new_page()
    cdp = browser_context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.split("/assets/")[-1])
            if "/assets/" in r.url and r.url.split("?")[0].endswith((".js", ".css")) else None)
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_timeout(500)
    page.close()
    return set(asked), asked


@pytest.mark.browser
def test_browser_the_studio_preloads_exactly_what_its_first_page_loads(studio, browser_context):
    """The page names exactly the files the same page without the names loads (a query
    string is never kept by the page cache, so ``?plain=1`` is Gradio's page as rendered),
    and each is asked once: a preload the page's own request does not match would be
    fetched twice."""
    html = httpx.get(studio.url, headers={"accept-encoding": "identity"}).content
    head = html.split(b"</head>")[0]
    in_page = read_frontend().in_page  # Gradio's own script and style
    named = {part.split(b'"')[0].decode()
             for part in head.split(b'href="./assets/')[1:]} - in_page
    plain = httpx.get(studio.url + "?plain=1", headers={"accept-encoding": "identity"})
    assert b"modulepreload" not in plain.content
    own, _ = first_page_files(browser_context, studio.url + "?plain=1")
    assert len(named) > 40 and named == own - in_page
    loaded, asked = first_page_files(browser_context, studio.url)
    assert loaded == own
    assert len(asked) == len(loaded), sorted(n for n in loaded if asked.count(n) > 1)
