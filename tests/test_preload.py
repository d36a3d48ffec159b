"""The page names the files its first paint needs (studio/ui/preload.py): read from the
installed Gradio's built frontend, exactly those the page loads, and nothing when that
frontend is not as expected."""

from __future__ import annotations

import json

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
    assert b"Dropdown" not in head and body == b"<body></body></html>"
    # Scripts as modules, styles as styles, each asked after the page's own script.
    for tag in head.split(b"<link ")[1:]:
        assert b'fetchpriority="low"' in tag and b"crossorigin" in tag
        assert (b".js" in tag) == (b"modulepreload" in tag)


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


@pytest.mark.browser
def test_browser_the_studio_preloads_exactly_what_its_first_page_loads(studio, browser_context):
    """Every named file is one the page loads before its box is usable, each asked once
    (a preload the page's own request does not match would be fetched twice)."""
    html = httpx.get(studio.url, headers={"accept-encoding": "identity"}).content
    head = html.split(b"</head>")[0]
    named = {part.split(b'"')[0].decode() for part in head.split(b'href="./assets/')[1:]}
    assert len(named) > 40
    page = browser_context.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.split("/assets/")[-1])
            if "/assets/" in r.url else None)
    page.goto(studio.url)
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_timeout(500)
    loaded = set(page.evaluate("""() => performance.getEntriesByType('resource')
        .filter(r => r.name.includes('/assets/')).map(r => r.name.split('/assets/').pop())"""))
    page.close()
    assert named <= loaded
    scripts = [name for name in asked if name.endswith((".js", ".css"))]
    assert len(scripts) == len(set(scripts)), sorted(n for n in scripts if scripts.count(n) > 1)
    # And nothing the first paint loads is left out (the lazy tabs' kinds come later).
    frontend = read_frontend()
    assert loaded - named - frontend.in_page <= {n for n in loaded if not n.endswith((".js", ".css"))}
