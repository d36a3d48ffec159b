"""The page's quick send (studio/ui/chat_quick.py): a message posted to /studio/send starts
its reply at once and streams its text; the page's Gradio send event then follows that
reply with the ticket, and nothing is sent twice. Who may: only from a page the caller
opened; anything but the plain case gets no ticket and goes the usual way."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import httpx
import pytest
import sqlite_utils

from studio.ui import chat_quick
from tests.fakes.ollama_server import make_tokens
from tests.lazy_tabs import queue_call
from tests.test_access_events import sign_in
from tests.test_live_text import iter_events, read_events
from tests.test_live_text import signed as live_studio  # noqa: F401 - the fixture

MODEL = "ollama:llama3.2:latest"
PARAMS = [0.8, 0.9, 0, -1, 0, "auto"]


@pytest.fixture(scope="module")
def signed(live_studio):
    """test_live_text's studio (users ann and bob), with the page's config."""
    ann = sign_in(live_studio.url, "ann")
    config = ann.get("/config").json()
    ann.close()
    return SimpleNamespace(**vars(live_studio), config=config)


def dependency(config: dict, *, api_name: str | None = None, load: bool = False) -> dict:
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    for d in config["dependencies"]:
        if api_name and d.get("api_name") == api_name:
            return d
        if load and d["targets"] and d["targets"][0][1] == "load" and any(
                kinds.get(o) == "chatbot" for o in d["outputs"]):
            return d
    raise AssertionError(f"no such event: {api_name or 'the chat load'}")


def open_page(signed, client: httpx.Client) -> str:
    """A page session opened as a browser opens one (the chat's load event)."""
    page = uuid.uuid4().hex[:11]
    load = dependency(signed.config, load=True)
    assert queue_call(client, load["id"], ["", None], page)["success"]
    return page


def quick(client: httpx.Client, page: str, message: str, **extra) -> tuple[dict, list]:
    """POST /studio/send: (the answer's first JSON: the ticket, or the "started" event's
    data with ``saved`` added, what its one "saved" event said, None without one; the text
    events after it, read to the end, without the one "go" and the "saved" among them)."""
    body = {"page": page, "text": message, "model": MODEL, "system": "", "incognito": False,
            "params": PARAMS, **extra}
    with client.stream("POST", "/studio/send", json=body) as response:
        assert response.status_code == 200, response.read()
        if not response.headers["content-type"].startswith("text/event-stream"):
            return json.loads(response.read()), []
        events = read_events(response)
    assert events[0][0] == "started", events[:2]
    assert [name for name, _ in events].count("go") == 1, events
    said = [data["saved"] for name, data in events if name == "saved"]
    assert len(said) <= 1, events
    return ({**events[0][1], "saved": said[0] if said else None},
            [e for e in events[1:] if e[0] not in ("go", "saved")])


def quick_behind(client: httpx.Client, page: str, message: str):
    """``quick`` on a thread of its own, for a stream that stays open while its turn waits
    to be written: (the thread, the (event, data) read so far, growing as they come)."""
    import threading

    seen: list = []

    def read() -> None:
        body = {"page": page, "text": message, "model": MODEL, "system": "",
                "incognito": False, "params": PARAMS}
        with client.stream("POST", "/studio/send", json=body, timeout=60) as response:
            seen.extend(iter_events(response))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, seen


def streamed(seen: list) -> str:
    return "".join(data["text"] for name, data in list(seen) if name == "message")


def send_event(signed, client: httpx.Client, page: str, text: str, ticket: str) -> dict:
    """The page's Gradio send event, as its js step hands it over: its last message, with
    the warnings it showed under "warnings"."""
    send = dependency(signed.config, api_name="send")
    client.post("/gradio_api/queue/join", json={
        "data": [text, None, None, MODEL, "", False, *PARAMS, ticket], "event_data": None,
        "fn_index": send["id"], "trigger_id": None, "session_hash": page}).raise_for_status()
    warnings = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": page},
                       timeout=30) as stream:
        for line in stream.iter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            if msg.get("msg") == "log":
                warnings.append(msg.get("log", ""))
            if msg.get("msg") == "process_completed":
                return {**msg, "warnings": warnings}
    raise AssertionError("the send event did not complete")


def stored_user_messages(signed, marker: str) -> list[dict]:
    db = sqlite_utils.Database(signed.data / "studio.db")
    return list(db.query("select * from messages where role = 'user' and content like ?",
                         [f"%{marker}%"]))


def chatbot_text(msg: dict) -> str:
    return json.dumps(msg["output"]["data"])


def test_quick_send_streams_the_reply_and_the_send_event_follows_it(signed):
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(30)
    signed.ollama.queue_reply(tokens, delay=0.01)
    started, events = quick(ann, page, f"quick {marker}")
    assert started["ticket"] and started["chat"] and started["reply"]
    assert started["saved"] is True  # its turn is written: the page need not give it back
    # The reply's text, piece after piece, then the end.
    text = ""
    for name, data in events[:-1]:
        assert name == "message" and data["at"] == len(text)
        text += data["text"]
    assert events[-1][0] == "done" and text == "".join(tokens)
    # The send event with the ticket shows the turn and sends nothing again.
    final = send_event(signed, ann, page, f"quick {marker}", started["ticket"])
    assert final["success"], final
    assert marker in chatbot_text(final) and tokens[-1].strip() in chatbot_text(final)
    assert len(stored_user_messages(signed, marker)) == 1
    # Its ticket is spent: the same again starts nothing and says so.
    again = send_event(signed, ann, page, f"quick {marker}", started["ticket"])
    assert any("lost track" in w for w in again["warnings"])
    assert len(stored_user_messages(signed, marker)) == 1
    ann.close()


def test_quick_send_continues_the_pages_chat(signed):
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    first, second = (f"{uuid.uuid4().hex[:8]}" for _ in range(2))
    signed.ollama.queue_reply(["one."])
    started, _ = quick(ann, page, f"first {first}")
    send_event(signed, ann, page, f"first {first}", started["ticket"])
    signed.ollama.queue_reply(["two."])
    again, _ = quick(ann, page, f"second {second}")
    assert again["chat"] == started["chat"]  # the chat the page shows, not a new one
    final = send_event(signed, ann, page, f"second {second}", again["ticket"])
    assert first in chatbot_text(final) and second in chatbot_text(final)
    ann.close()


def test_quick_send_only_from_a_page_the_caller_opened(signed):
    ann, bob = sign_in(signed.url, "ann"), sign_in(signed.url, "bob")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    # Nobody signed in: the front door stops it before the route.
    with httpx.Client(base_url=signed.url, timeout=10) as anonymous:
        refused = anonymous.post("/studio/send", json={"page": page, "text": marker})
        assert refused.status_code in (303, 401)
    # Bob, with ann's page id (seen or guessed), or with a page nobody opened: no ticket,
    # nothing sent, and ann's page is not made busy.
    assert quick(bob, page, f"bob {marker}") == ({"ticket": ""}, [])
    assert quick(ann, uuid.uuid4().hex[:11], f"nobody's {marker}") == ({"ticket": ""}, [])
    assert stored_user_messages(signed, marker) == []
    signed.ollama.queue_reply(["fine."])
    started, _ = quick(ann, page, f"ann {marker}")
    assert started["ticket"]
    # A ticket is its page's and its sender's only: bob's own page can't follow ann's reply.
    bobs = open_page(signed, bob)
    taken = send_event(signed, bob, bobs, "x", started["ticket"])
    assert any("lost track" in w for w in taken["warnings"])
    assert f"ann {marker}" not in chatbot_text(taken)
    assert send_event(signed, ann, page, "x", started["ticket"])["success"]
    ann.close()
    bob.close()


@pytest.mark.parametrize("change", [
    {"text": "   "},                                     # empty: the usual way says so
    {"model": ""},                                       # no model: the service refuses
    {"incognito": True},                                 # the switch differs from the chat
    {"params": [0.8, 0.9, 0, -1, 0]},                    # not the page's controls
    {"params": [9, 0.9, 0, -1, 0, "auto"]},              # a temperature out of range
    {"params": [0.8, 0.9, 1.5, -1, 0, "auto"]},          # a fractional context length
    {"params": [0.8, 0.9, 0, -1, 0, "loud"]},            # no such thinking mode
])
def test_quick_send_leaves_all_but_the_plain_case_to_the_usual_way(signed, change):
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    assert quick(ann, page, f"odd {marker}", **change) == ({"ticket": ""}, [])
    assert stored_user_messages(signed, marker) == []
    # The page is not left busy: the next plain message goes quickly.
    signed.ollama.queue_reply(["ok."])
    started, _ = quick(ann, page, f"plain {marker}")
    assert started["ticket"]
    send_event(signed, ann, page, "x", started["ticket"])
    ann.close()


def test_quick_send_of_a_busy_page_goes_the_usual_way_and_is_queued(signed):
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    signed.ollama.queue_reply(make_tokens(40), delay=0.05)
    signed.ollama.queue_reply(["second answer."])
    body = {"page": page, "text": f"long {marker}", "model": MODEL, "system": "",
            "incognito": False, "params": PARAMS}
    with ann.stream("POST", "/studio/send", json=body) as response:
        started = json.loads(next(line for line in response.iter_lines()
                                  if line.startswith("data:"))[5:])
        # While its reply streams, the page's next message gets no ticket...
        assert quick(ann, page, f"next {marker}") == ({"ticket": ""}, [])
    # ...and its send event, the usual way, queues it behind the reply, which the ticket's
    # event follows; the queued message goes once that reply completed.
    final = send_event(signed, ann, page, f"long {marker}", started["ticket"])
    queued = send_event(signed, ann, page, f"next {marker}", "")
    assert final["success"] and queued["success"]
    messages = stored_user_messages(signed, marker)
    assert [m["content"] for m in messages] == [f"long {marker}", f"next {marker}"]
    ann.close()


def test_quick_send_never_adopted_frees_the_page(signed, monkeypatch):
    """The page went between its quick send and its send event: once the reply ended (and
    a while passed), the page is free again, and its next message is not queued forever."""
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    signed.ollama.queue_reply(["gone."])
    started, _ = quick(ann, page, f"orphan {marker}")
    assert started["ticket"]
    quick_sends = getattr(signed.demo, chat_quick.ATTRIBUTE)
    assert quick_sends._tickets[started["ticket"]].started.reply.settled.wait(10)
    monkeypatch.setattr(chat_quick, "UNCLAIMED_DONE_S", 0.0)
    signed.ollama.queue_reply(["next."])
    again, _ = quick(ann, page, f"next {marker}")
    assert again["ticket"]  # not refused as busy: the orphan's claim was given up
    assert started["ticket"] not in quick_sends._tickets
    send_event(signed, ann, page, "x", again["ticket"])
    ann.close()


def test_quick_send_waits_behind_the_pages_own_earlier_event(signed, monkeypatch):
    """A chat opened just before the message (its event still in Gradio's queue): the
    message goes the usual way, after it, into the chat opened; never into the one the page
    showed before, ahead of the opening."""
    import threading

    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    signed.ollama.queue_reply(["first."])
    first, _ = quick(ann, page, "an older chat")
    send_event(signed, ann, page, "x", first["ticket"])
    release = threading.Event()
    chat = signed.services.chat
    plain_open = chat.open
    monkeypatch.setattr(chat, "open", lambda *a, **k: release.wait(10) and plain_open(*a, **k))
    opening = dependency(signed.config, api_name="open_conversation")
    ann.post("/gradio_api/queue/join", json={
        "data": [first["chat"], None], "event_data": None, "fn_index": opening["id"],
        "trigger_id": None, "session_hash": page}).raise_for_status()
    marker = uuid.uuid4().hex[:8]
    try:
        assert quick(ann, page, f"after opening {marker}") == ({"ticket": ""}, [])
    finally:
        release.set()
    with ann.stream("GET", "/gradio_api/queue/data", params={"session_hash": page},
                    timeout=10) as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                break
    assert stored_user_messages(signed, marker) == []
    signed.ollama.queue_reply(["now."])
    now, _ = quick(ann, page, f"after opening {marker}")  # the opening done: quick again
    assert now["ticket"] and now["chat"] == first["chat"]
    send_event(signed, ann, page, "x", now["ticket"])
    ann.close()


def test_quick_send_holds_its_pages_event_back_for_anothers_first_words(signed):
    """The stream's "go" tells the page when its Gradio event may follow (live.FirstWords):
    alone, at once, before its first words; while another quick send still waits for its
    first words, only after its own words (here: the other's first word takes 2 s, so "go"
    comes when GO_MOST_S has passed)."""
    import threading

    ann, bob = sign_in(signed.url, "ann"), sign_in(signed.url, "bob")
    page_a, page_b = open_page(signed, ann), open_page(signed, bob)
    slow, fast = make_tokens(3), make_tokens(30)
    signed.ollama.queue_reply(slow, delay=[2.0, 0.01, 0.01])
    signed.ollama.queue_reply(fast, delay=0.02)
    started_a = threading.Event()
    got: dict[str, list] = {}

    def stream(client, page, key, started=None):
        body = {"page": page, "text": f"gate {key}", "model": MODEL, "system": "",
                "incognito": False, "params": PARAMS}
        events, name = [], "message"
        with client.stream("POST", "/studio/send", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    if name != "saved":
                        events.append(name)
                    if name == "started" and started is not None:
                        started.set()
                    name = "message"
        got[key] = events

    first = threading.Thread(target=stream, args=(ann, page_a, "a", started_a))
    first.start()
    assert started_a.wait(10)
    stream(bob, page_b, "b")
    first.join(30)
    a, b = got["a"], got["b"]
    # Alone when it started: its page sends its event before the (slow) first words.
    assert a[:3] == ["started", "go", "message"] and a[-1] == "done", a
    # The second page's event waits: after its own first words, while the first page's
    # words are still to come.
    assert b[0] == "started" and b.count("go") == 1 and b[-1] == "done", b
    assert b.index("go") > b.index("message"), b


def test_quick_send_streams_while_its_turn_waits_to_be_written(signed):
    """The model is asked, and its words streamed, while the turn still waits for the
    store (another writer holds it here); the stream says "saved" before its end, once the
    turn is written; the page's send event shows the turn, stored once."""
    import time

    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(5)
    signed.ollama.queue_reply(tokens, delay=0.01)
    with signed.services.store._write_lock:  # another writer, for as long as this block
        reader, seen = quick_behind(ann, page, f"waiting {marker}")
        deadline = time.monotonic() + 10
        while streamed(seen) != "".join(tokens) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert streamed(seen) == "".join(tokens)
        time.sleep(0.2)
        # The whole answer is out, and the stream waits for the write to be known.
        assert [n for n, _ in seen if n in ("saved", "done")] == []
        assert stored_user_messages(signed, marker) == []
    reader.join(20)
    names = [n for n, _ in seen]
    assert names[-2:] == ["saved", "done"] and seen[-2][1] == {"saved": True}, names
    started = seen[0][1]
    final = send_event(signed, ann, page, f"waiting {marker}", started["ticket"])
    assert final["success"], final
    assert marker in chatbot_text(final) and tokens[-1].strip() in chatbot_text(final)
    assert len(stored_user_messages(signed, marker)) == 1
    stored = signed.services.store.messages(started["chat"])
    assert [(m.role, m.status) for m in stored] == [("user", "complete"),
                                                     ("assistant", "complete")]
    assert stored[-1].content == "".join(tokens)
    ann.close()


def test_quick_send_event_waits_for_a_slow_write_and_gives_nothing_back(signed, monkeypatch,
                                                                         caplog):
    """A write queued behind a long one is slow, not failed: the page's send event waits
    past the point where the log says so, and succeeds once the turn is written (giving
    the message back meanwhile would have it both in the box and in the chat)."""
    import logging
    import threading
    import time

    monkeypatch.setattr(chat_quick, "WRITTEN_SLOW_S", 0.05)
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    signed.ollama.queue_reply(make_tokens(5), delay=0.01)
    ended = []
    with caplog.at_level(logging.WARNING, logger=chat_quick.__name__), \
            signed.services.store._write_lock:  # another writer, for as long as this block
        reader, seen = quick_behind(ann, page, f"slow {marker}")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        follower = threading.Thread(target=lambda: ended.append(send_event(
            signed, ann, page, f"slow {marker}", seen[0][1]["ticket"])))
        follower.start()
        deadline = time.monotonic() + 10
        while "still waiting" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "still waiting" in caplog.text  # the event is in ``take``, past the mark
        time.sleep(0.2)
        assert ended == []
    follower.join(30)
    reader.join(20)
    assert ended and ended[0]["success"], ended
    assert ("saved", {"saved": True}) in seen
    assert len(stored_user_messages(signed, marker)) == 1
    ann.close()


def test_quick_send_whose_turn_cannot_be_written_fails_its_send_event(signed, monkeypatch):
    """A turn the store refuses (a full disk) after the answer began: the stream ends with
    the disk's sentence, and the page's send event fails with it (so the page gives the
    message back: tests/test_browser_chat.py), and the page can send again."""
    from tests.test_chat_service import full_disk_for_replies

    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    marker = uuid.uuid4().hex[:8]
    signed.ollama.queue_reply(make_tokens(40), delay=0.02)
    with monkeypatch.context() as m:
        full_disk_for_replies(signed.services.store, m)
        started, events = quick(ann, page, f"full {marker}")
        final = send_event(signed, ann, page, f"full {marker}", started["ticket"])
    assert started["ticket"] and events[-1][0] == "done"
    assert started["saved"] is False  # the page knows whose message to give back
    assert not final["success"] and "disk" in json.dumps(final["output"]), final
    assert stored_user_messages(signed, marker) == []
    # Nothing of it holds the page: the next message goes, and is stored.
    signed.ollama.queue_reply(make_tokens(3), delay=0.01)
    again, _ = quick(ann, page, f"again {marker}")
    assert again.get("ticket") and again.get("chat") != started["chat"]
    assert send_event(signed, ann, page, f"again {marker}", again["ticket"])["success"]
    assert len(stored_user_messages(signed, marker)) == 1
    ann.close()


def test_quick_send_of_an_incognito_page_keeps_nothing(signed):
    """A page switched to incognito sends quickly too: its reply streams and its send event
    shows the turn, under an incognito chat's id, and nothing reaches the database."""
    ann = sign_in(signed.url, "ann")
    page = open_page(signed, ann)
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in signed.config["components"]}
    switch = next(d for d in signed.config["dependencies"] if d["targets"]
                  and d["targets"][0][1] == "input" and ids.get(d["targets"][0][0]) == "incognito")
    assert queue_call(ann, switch["id"], [True, None], page)["success"]
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(4)
    signed.ollama.queue_reply(tokens, delay=0.01)
    started, events = quick(ann, page, f"secret {marker}", incognito=True)
    assert started["ticket"] and started["chat"].startswith("incognito-")
    assert "".join(d["text"] for name, d in events if name == "message") == "".join(tokens)
    final = send_event(signed, ann, page, f"secret {marker}", started["ticket"])
    assert final["success"] and marker in chatbot_text(final), final
    assert stored_user_messages(signed, marker) == []
    ann.close()
