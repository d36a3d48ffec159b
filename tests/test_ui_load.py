"""Many people at once and a light page (issue 16, items 3, 4, 5 and 6): which events run
on a page's load, the concurrency each event is given, opening a chat in one update, a page
that waits on no backend, tabs that ask their backends only once opened, and an idle studio
whose threads wait. Behaviour only: the figures are in bench/bench_load.py."""

from __future__ import annotations

import inspect
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from studio.config import Settings
from studio.ui.guard import origin_of
from tests.conftest import launch_in_process
from tests.lazy_tabs import page_config


def unwrapped(fn):
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def name_of(block_fn) -> str:
    return origin_of(block_fn.fn)[1].rsplit(".", 1)[-1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from studio.services import build_services
    from studio.ui.app import build_app

    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path_factory.mktemp("data"))},
                                 dotenv_path=None)
    services = build_services(settings)
    yield build_app(services), services
    services.store.close()


def test_load_runs_only_the_status_strip_and_the_chat_tab(demo):
    app, _services = demo
    on_load = sorted(name_of(f) for f in app.fns.values()
                     if f.fn is not None and any(t[1] == "load" for t in f.targets))
    assert on_load == ["on_page_load", "on_status"]


def test_load_other_tabs_are_not_in_the_page_until_opened(demo):
    """Only the Chat tab's components are in the page's config; each other tab's are built
    the first time the page opens it (``ui/lazy.py``), once: opening it again changes
    nothing that builds it."""
    app, _services = demo
    from gradio.layouts import Tab

    config = app.get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert "chat-input" in ids
    assert not ids & {"gallery", "models-download-btn", "costs-refresh", "arena-run",
                      "settings-account", "rename-box", "import-file"}  # the last two: as
    # "This chat" and "Import chats" are opened (ui/chat.py)
    tabs = [b for b in app.blocks.values() if isinstance(b, Tab)]
    renders = [f for f in app.fns.values() if f.renderable is not None
               and name_of(f) not in ("this_chat", "import_chats")]  # the Chat tab's
    assert len(renders) == 5 and all(len(f.targets) == 1 for f in renders)
    opens = {f.targets[0][0] for f in renders}  # each render: its tab's "opened" state
    # One event of the tab strip opens them (and switches the timers), through the queue
    # (a state's change fires only after a queued event); no event outside a lazy tab
    # listens to that tab's own select (left to the tab's loading events).
    switch = [f for f in app.fns.values() if f.fn is not None and name_of(f) == "on_tab_switch"]
    assert len(switch) == 1 and switch[0].queue is not False
    assert opens <= {b._id for b in switch[0].outputs}
    lazy_tabs = {t._id for t in tabs if t.label != "Chat"}
    assert len(lazy_tabs) == 5
    assert not [f for f in app.fns.values() if any(t[0] in lazy_tabs for t in f.targets)]
    from studio.ui.lazy import opening
    shown = opening([SimpleNamespace(tab=t) for t in tabs if t.label != "Chat"], "Costs")
    assert [v is True for v in shown] == [t.label == "Costs" for t in tabs if t.label != "Chat"]
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in shown
               if v is not True)  # gr.skip(): the others' states left as they are


def test_load_lazy_tab_fields_take_input(demo):
    """Gradio's frontend decides whether a component without ``interactive`` takes input
    from the events it knew when the page opened, not a render's: the lazy tabs' fields
    say it themselves once built (their filled fields came up disabled in the browser)."""
    app, _services = demo
    page = page_config(app)
    fields = {b.elem_id: b for b in page.blocks.values()
              if getattr(b, "rendered_in", None) is not None and getattr(b, "elem_id", None)}
    for elem_id in ("img-steps", "img-prompt", "img-width", "arena-prompt", "models-pull-name"):
        assert fields[elem_id].interactive is True, elem_id


def test_load_settle_interactivity_follows_gradios_rule():
    from types import SimpleNamespace as NS

    from studio.ui.lazy import settle_interactivity

    render = object()
    blocks = {i: NS(_id=i, rendered_in=render, interactive=None, value=value)
              for i, value in ((1, 20), (2, 20), (3, ""), (4, 20), (5, [1]))}
    blocks[4].interactive = False  # said by the tab itself: kept
    blocks[5].rendered_in = None  # not the render's: left alone
    fns = {0: NS(inputs=[blocks[1]], outputs=[blocks[2], blocks[3]])}
    settle_interactivity(NS(fns=fns, blocks=blocks), render)
    assert [blocks[i].interactive for i in range(1, 6)] == [True, False, False, False, None]


@pytest.mark.parametrize("name", ["on_load", "on_load_jobs", "on_refresh", "on_open",
                                  "on_users"])
def test_load_other_tabs_load_when_their_tab_is_opened(demo, name):
    """A tab's loading events run as it is built in the page (the render's load) and on
    each later opening (its tab's select), never on the page's own load."""
    app, _services = demo
    from gradio.layouts import Tab

    lazy_tabs = {b._id for b in app.blocks.values() if isinstance(b, Tab) and b.label != "Chat"}
    page = page_config(app)
    loading = [f for f in page.fns.values() if f.fn is not None and name_of(f) == name
               and f.rendered_in is not None
               and any(t[1] == "select" and t[0] in lazy_tabs for t in f.targets)
               and any(t == (app._id, "load") for t in f.targets)]
    assert loading, f"{name} does not load when its tab is opened"


def test_load_followers_hold_no_limited_worker(demo):
    """Every event that follows work the server does (a generator: replies, image jobs,
    pulls, arena runs, a reopened chat's reply) has no concurrency limit, and never shares
    a concurrency group with a limited event."""
    app, _services = demo
    fns = [f for f in page_config(app).fns.values() if f.fn is not None]
    followers = [f for f in fns if inspect.isgeneratorfunction(unwrapped(f.fn))]
    assert {"on_send", "on_follow", "on_generate", "on_run", "on_pull"} <= \
        {name_of(f) for f in followers}
    assert [name_of(f) for f in followers if f.concurrency_limit is not None] == []
    limited = {f.concurrency_id for f in fns if f.concurrency_limit is not None}
    assert not limited & {f.concurrency_id for f in followers}


@pytest.mark.parametrize("name", ["on_send", "on_open", "on_search", "on_page_load",
                                  "on_status", "on_tick", "on_gallery_open"])
def test_load_what_a_person_waits_on_is_never_queued_behind_others(demo, name):
    app, _services = demo
    events = [f for f in page_config(app).fns.values()
              if f.fn is not None and name_of(f) == name]
    assert events and all(f.concurrency_limit is None for f in events)


def test_load_queue_settings_are_deliberate(demo):
    from studio.ui.app import launch_kwargs

    app, services = demo
    limits = {f.concurrency_limit for f in page_config(app).fns.values()}
    assert limits == {None, 4}  # none left to Gradio's default (1, or an environment variable)
    # Gradio runs at most max_threads events at once (40 by default): 40 replies streaming
    # would hold them all.
    assert launch_kwargs(services)["max_threads"] >= 200


def test_load_open_handlers_are_plain_functions():
    """A generator's last update is sent twice by Gradio (streamed, then as the event
    completes): opening a chat and loading the page are one update each."""
    from studio.ui.chat_handlers import ChatPage

    for handler in (ChatPage.on_open, ChatPage.on_page_load):
        assert not inspect.isgeneratorfunction(unwrapped(handler))
    assert inspect.isgeneratorfunction(unwrapped(ChatPage.on_follow))


# -- through Gradio's queue, as the page calls it -------------------------------------------

def queue_messages(url: str, api_name: str, values: dict) -> list[dict]:
    """Every SSE message of one call of the event named ``api_name`` in a new session."""
    with httpx.Client(base_url=url, timeout=30) as http:
        config = http.get("/config").json()
        comps = {c["id"]: c for c in config["components"]}
        dep = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
        data = [values.get(comps[c]["props"].get("elem_id")) for c in dep["inputs"]]
        session = uuid.uuid4().hex[:11]
        http.post("/gradio_api/queue/join", json={
            "data": data, "event_data": None, "fn_index": dep["id"],
            "trigger_id": dep["targets"][0][0], "session_hash": session}).raise_for_status()
        messages = []
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:]))
                    if messages[-1].get("msg") in ("process_completed", "close_stream"):
                        break
        return messages


def test_load_opening_a_chat_sends_it_once(tmp_path, fake_ollama):
    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url})
    try:
        store = studio.services.store
        conv = store.create_conversation("Forty messages", user="owner",
                                         model="llama3.2:latest", backend="ollama")
        for n in range(40):
            store.add_message(conv.id, "user" if n % 2 == 0 else "assistant", f"message {n}")
        messages = queue_messages(studio.url, "open_conversation", {"open-id": conv.id})
        with_chat = [m for m in messages if "message 39" in json.dumps(m)]
        assert [m["msg"] for m in with_chat] == ["process_completed"]
        assert not [m for m in messages if m.get("msg") == "process_generating"]
    finally:
        studio.close()


# -- a page in chromium ---------------------------------------------------------------------

@pytest.fixture
def silent_ollama():
    """An address that accepts connections and never answers: Ollama hung."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def asked_comfyui(fake) -> bool:
    """Whether the studio asked ComfyUI for its lists (the Images tab's load)."""
    return any(r.path.startswith("/object_info") for r in fake.requests)


def test_load_page_is_filled_while_ollama_hangs_and_images_asks_comfyui_once_opened(
        tmp_path, silent_ollama, fake_comfyui, page):
    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": silent_ollama, "COMFYUI_URL": fake_comfyui.url,
                                "STUDIO_REQUEST_TIMEOUT": "60"})
    try:
        studio.services.store.create_conversation("A chat from yesterday", user="owner",
                                                  model="llama3.2:latest", backend="ollama")
        page.goto(studio.url)
        page.wait_for_selector("#chat-input textarea")
        # The sidebar comes with the page's load, which waits on no backend: Ollama has
        # not answered anything (it never will).
        page.wait_for_function("() => document.querySelector('#conv-list')"
                               ".innerText.includes('A chat from yesterday')")
        assert not asked_comfyui(fake_comfyui), [r.path for r in fake_comfyui.requests]
        page.get_by_role("tab", name="Images").click()
        deadline = time.monotonic() + 20
        while not asked_comfyui(fake_comfyui) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert asked_comfyui(fake_comfyui)
    finally:
        studio.close()


# -- an idle studio -------------------------------------------------------------------------

WAITING = {"wait", "select", "poll", "get", "_wait_for_tstate_lock", "accept", "epoll"}


def test_load_idle_studio_threads_all_wait(tmp_path, fake_ollama):
    """After start, with no page open, every thread the studio (or Gradio) started waits on
    an event, a condition, a queue or a selector: none is busy."""
    before = set(threading.enumerate())
    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url,
                                "STUDIO_BACKUP_DIR": str(tmp_path / "backups")})
    try:
        threading.Event().wait(1.0)  # let start-up's one-off work end
        frames = sys._current_frames()
        started = [t for t in threading.enumerate() if t not in before]
        assert started, [t.name for t in threading.enumerate()]
        busy = {}
        for thread in started:
            frame = frames.get(thread.ident)
            if frame is not None and frame.f_code.co_name not in WAITING:
                busy[thread.name] = f"{frame.f_code.co_filename}:{frame.f_lineno} " \
                                    f"{frame.f_code.co_name}"
        assert busy == {}
    finally:
        studio.close()


def test_load_page_assets_are_compressed_once_and_kept_by_the_browser(tmp_path, fake_ollama):
    import re

    import brotli
    import gradio

    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url})
    try:
        with httpx.Client(base_url=studio.url, timeout=30) as http:
            page = http.get("/").text
            name = re.search(r"/assets/(index-[A-Za-z0-9_-]{8}\.js)", page).group(1)
            on_disk = (Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
                       / name).read_bytes()
            raw = []
            for _ in range(2):
                with http.stream("GET", f"/assets/{name}",
                                 headers={"accept-encoding": "br"}) as answer:
                    assert answer.headers["content-encoding"] == "br"
                    assert "immutable" in answer.headers["cache-control"]
                    raw.append(b"".join(answer.iter_raw()))
            assert brotli.decompress(raw[0]) == on_disk and raw[0] == raw[1]
            plain = http.get(f"/assets/{name}", headers={"accept-encoding": "identity"})
            assert "content-encoding" not in plain.headers and plain.content == on_disk
            assert http.get("/assets/no-such-file.js").status_code == 404
    finally:
        studio.close()
