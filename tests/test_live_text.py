"""The page's lean channel for a streaming reply's text (studio/ui/live.py): who may read
it, what it sends, and how the Gradio event of a page that reads it paces itself."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from studio.config import Settings
from tests.conftest import free_port, running_fake_ollama
from tests.fakes.ollama_server import make_tokens
from tests.test_access_events import PASSWORDS, sign_in

MODEL = "ollama:llama3.2:latest"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("live")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", PASSWORDS["ann"], admin=True)
    Users(store).add("bob", PASSWORDS["bob"])
    store.close()
    ollama = running_fake_ollama()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url}, dotenv_path=None))
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    yield SimpleNamespace(url=url.rstrip("/"), services=services, ollama=ollama, demo=demo,
                          data=data)
    demo.close()
    services.images.close()
    ollama.stop()


def iter_events(response):
    """(event name, data) of a server-sent event stream, as each comes, until it ends."""
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:])
            name = "message"


def read_events(response) -> list[tuple[str, dict]]:
    """(event name, data) of a server-sent event stream, until it ends."""
    return list(iter_events(response))


def test_live_text_streams_the_owners_reply_and_no_one_elses(signed):
    tokens = make_tokens(40)
    signed.ollama.queue_reply(tokens, delay=0.03)
    started = signed.services.chat.send(None, "count for me", model=MODEL, user="ann")
    path = f"/studio/live/{started.chat_id}?reply={started.reply.reply_id}"
    # Nobody signed in: the front door stops the request before the route.
    with httpx.Client(base_url=signed.url, timeout=20) as anonymous:
        assert anonymous.get(path).status_code in (303, 401)
    # Another user, and the owner with a reply id that isn't this one: nothing to read.
    bob = sign_in(signed.url, "bob")
    refused = bob.get(path)
    bob.close()
    assert refused.status_code == 404 and "count" not in refused.text
    ann = sign_in(signed.url, "ann")
    assert ann.get(f"/studio/live/{started.chat_id}?reply=0123").status_code == 404
    with ann.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    pieces = [data for name, data in events if name == "message"]
    assert events[-1][0] == "done"
    # Each piece starts where the last ended, and together they are the reply.
    text = ""
    for piece in pieces:
        assert piece["at"] == len(text)
        text += piece["text"]
    assert text == "".join(tokens)
    started.reply.settled.wait(10)
    stored = signed.services.chat.open(started.chat_id, user="ann").turns[-1]
    assert (stored.role, stored.content) == ("assistant", text)
    # Coalesced by the reply's pace, never a message per token.
    assert 1 < len(pieces) < len(tokens) // 2
    # Once it ended, there is nothing to follow: the page's Gradio update has it all.
    ended = ann.get(path)
    ann.close()
    assert ended.status_code == 404 and ended.json()["error"].startswith("No reply")


def page_for(chat, interval: float = 0.125):
    from studio.ui.chat_handlers import ChatPage

    return ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=interval,
                                                             max_page_sessions=500)))


def send_as(page, cookies: dict) -> list:
    from studio.ui.chat_values import new_session

    request = SimpleNamespace(cookies=cookies, session_hash="page-1", username=None,
                              client=None)
    return list(page.on_send("hi", [], new_session(), "ollama:llama3.2:latest",
                             "", False, 0.8, 0.9, 0, -1, 0, "auto", request=request))


@pytest.mark.parametrize("lean", [True, False])
def test_live_text_a_lean_page_gets_a_marker_and_an_update_a_second(store, tmp_path,
                                                                    fake_ollama, lean):
    """With the studio_live cookie, the send's updates carry the marker the page's script
    opens the channel by, and while the text flows come about once a second; without it,
    ~8 a second and no marker, as before. Either way the first words and the finished
    reply are whole."""
    from studio.clients.ollama import OllamaClient
    from studio.ui.live import COOKIE
    from tests.test_chat_service import make_service

    client = OllamaClient(fake_ollama.url, timeout=10)
    chat = make_service(store, tmp_path, client)
    tokens = make_tokens(60)
    fake_ollama.queue_reply(tokens, delay=0.03)  # ~1.8 s
    try:
        updates = send_as(page_for(chat), {COOKIE: "1"} if lean else {})
    finally:
        client.close()
    marked = [u for u in updates if "studio-live" in u[2]]
    if lean:
        chat_id = updates[-1][0]["chat_id"]
        assert marked and all(f"live-{chat_id} reply-" in u[2] for u in marked)
        assert len(updates) <= 8
    else:
        assert not marked and len(updates) >= 12
    assert "studio-live" not in updates[-1][2]  # the finished line has no marker
    answer = [r for r in updates[-1][1] if r["role"] == "assistant"
              and not r.get("metadata")][-1]
    assert answer["content"] == [{"type": "text", "text": "".join(tokens)}]


def test_live_text_an_incognito_reply_reads_like_any_other_and_only_for_its_owner(signed):
    tokens = make_tokens(20)
    signed.ollama.queue_reply(tokens, delay=0.03)
    started = signed.services.chat.send(None, "off the record", model=MODEL, user="ann",
                                        incognito=True)
    path = f"/studio/live/{started.chat_id}?reply={started.reply.reply_id}"
    bob = sign_in(signed.url, "bob")
    refused = bob.get(path)
    bob.close()
    assert refused.status_code == 404
    ann = sign_in(signed.url, "ann")
    with ann.stream("GET", path) as response:
        events = read_events(response)
    ann.close()
    assert "".join(d["text"] for name, d in events if name == "message") == "".join(tokens)


def test_live_text_one_person_holds_a_bounded_number_of_streams(signed):
    """Past ``most_per_user`` open streams a person is refused (429) with a sentence; a
    stream closed by the browser frees its place."""
    import threading

    import uvicorn
    from starlette.applications import Starlette

    from studio.ui.live import LiveText
    from tests.conftest import free_port

    live = LiveText(signed.services.chat, interval=0.05, most_per_user=2)
    app = Starlette(routes=live.routes())

    async def as_ann(scope, receive, send):  # the front door's part: who is calling
        if scope["type"] == "http":
            scope.setdefault("state", {})["studio_user"] = "ann"
        await app(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(as_ann, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    signed.ollama.queue_reply(make_tokens(200), delay=0.05)  # ~10 s: streams stay open
    started = signed.services.chat.send(None, "a long one", model=MODEL, user="ann")
    url = f"http://127.0.0.1:{port}/studio/live/{started.chat_id}?reply={started.reply.reply_id}"
    try:
        while not server.started:
            threading.Event().wait(0.02)
        with httpx.Client(timeout=20) as http:
            first, second = http.stream("GET", url), http.stream("GET", url)
            readers = []  # kept: a dropped line iterator closes its response
            for response in (first.__enter__(), second.__enter__()):
                assert response.status_code == 200
                readers.append(response.iter_lines())
                assert next(readers[-1]).startswith("retry:")
            refused = http.get(url)
            assert refused.status_code == 429 and "close some" in refused.json()["error"]
            first.__exit__(None, None, None)  # the browser closes a tab
            for _ in range(100):  # the server sees the connection go
                if live._open.get("ann", 0) < 2:
                    break
                threading.Event().wait(0.05)
            with http.stream("GET", url) as third:
                assert third.status_code == 200
            second.__exit__(None, None, None)
    finally:
        signed.services.chat.stop(started.chat_id, user="ann")
        server.should_exit = True
        thread.join(10)


def test_first_words_holds_a_page_while_another_waits_for_its_first_words():
    """live.FirstWords, the quick sends' gate: a page may send its Gradio event when no
    other quick send still waits for its first words, or when its own time is up; a wait
    ends as soon as another's first words went out."""
    import asyncio
    import time

    from studio.ui.live import FirstWords

    async def scenario():
        firsts = FirstWords(most=30.0)
        mine, other = firsts.enter(), firsts.enter()
        assert not firsts.clear(mine) and not firsts.clear(other)
        # Waiting for something long: the other's first words end the wait at once.
        asyncio.get_running_loop().call_later(0.05, firsts.worded, other)
        t0 = time.monotonic()
        await firsts.either(asyncio.sleep(20), mine)
        assert time.monotonic() - t0 < 10
        assert firsts.clear(mine)  # nobody else waits now
        assert not firsts.clear(other)  # its words are out, but ``mine``'s are still to come
        firsts.worded(mine)
        assert firsts.clear(other)
        firsts.leave(other)
        firsts.leave(mine)
        # A page's time is up: it goes even while another still waits.
        hurried = FirstWords(most=0.0)
        a, _b = hurried.enter(), hurried.enter()
        assert hurried.clear(a)
        # One that left (its stream ended) holds nobody back.
        left = FirstWords(most=30.0)
        c, d = left.enter(), left.enter()
        left.leave(d)
        assert left.clear(c)

    # On a thread of its own: a browser test earlier in the run may hold this thread's loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=60)
