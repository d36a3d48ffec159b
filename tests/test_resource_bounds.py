"""Resource bounds: a 10 MB pasted prompt is refused without freezing the page, and a
conversation of 5,000 messages opens on its newest messages and "Load earlier" reaches its
first.

The handler test calls ``ChatPage.on_send`` directly against the fake Ollama; the browser
tests run headless chromium against ``python app.py`` (the session studio of conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import sqlite_utils

from studio.chat.window import MOST, OPEN
from studio.ui.chat_handlers import ChatPage
from studio.ui.chat_sidebar import MORE, is_heading
from studio.ui.chat_values import new_session
from tests.long_chat import make_long_chat

MODEL = "ollama:llama3.2:latest"
TEN_MB = 10 * 1024 * 1024
LONG_CHAT = 5000


def request(session: str = "page-1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, username=None, client=None)


@pytest.fixture
def chat_page(services):
    return ChatPage(services)


def send(page, text, sess=None):
    return page.on_send(text, [], sess or new_session(), MODEL, "",
                        False, 0.8, 0.9, 0, -1, 0, "auto", request=request())


def test_bounds_a_10_mb_message_is_refused_at_once_and_nothing_is_stored(chat_page, services,
                                                                          fake_ollama):
    assert chat_page.chat._max_chars == 2_000_000  # the default STUDIO_MAX_MESSAGE_CHARS
    t0 = time.monotonic()
    with pytest.raises(gr.Error, match=r"10,485,760 characters; the limit is 2,000,000"):
        list(send(chat_page, "x" * TEN_MB))
    assert time.monotonic() - t0 < 5
    assert fake_ollama.requests_to("/api/chat") == []
    assert services.store.count_conversations() == 0
    # The page carries on: a normal message afterwards is answered.
    fake_ollama.queue_reply("Short answer.")
    updates = list(send(chat_page, "a normal question"))
    sess = updates[-1][0]
    assert [t.content for t in chat_page.chat.turns(sess["chat_id"], user="owner")] == [
        "a normal question", "Short answer."]


# ------------------------------------------------------------------ in the browser

def open_studio(page, studio) -> None:
    from tests.test_browser_chat import open_studio as open_page
    open_page(page, studio)


@pytest.mark.browser
def test_bounds_browser_a_pasted_10_mb_prompt_is_refused_and_the_page_stays_usable(studio, page):
    open_studio(page, studio)
    t0 = time.monotonic()
    # A paste, not typing: set the value and tell the component, as a paste's input event does.
    page.evaluate("""(n) => {
        const box = document.querySelector('#chat-input textarea');
        box.value = 'y'.repeat(n);
        box.dispatchEvent(new Event('input', {bubbles: true}));
    }""", TEN_MB)
    page.press("#chat-input textarea", "Enter")
    page.wait_for_selector("text=the limit is 2,000,000", timeout=30_000)
    assert time.monotonic() - t0 < 40
    # The text is kept in the box, nothing went into the chat.
    assert page.evaluate("() => document.querySelector('#chat-input textarea').value.length") == TEN_MB
    assert not page.query_selector("#chatbot .message")
    # The page is usable: a normal message replaces it and is answered.
    studio.ollama.queue_reply("Small reply.")
    marker = uuid.uuid4().hex[:8]
    page.fill("#chat-input textarea", f"small one {marker}")
    page.press("#chat-input textarea", "Enter")
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('Small reply.')",
                           timeout=20_000)
    assert page.input_value("#chat-input textarea") == ""


def show_long_chat(page, marker: str) -> float:
    """Find the chat titled "long <marker>" in the sidebar and open it; seconds until its
    newest message shows."""
    page.fill("#conv-search input, #conv-search textarea", f"long {marker}")
    page.wait_for_function(
        "(m) => { const l = document.querySelector('#conv-list');"
        " return l.innerText.includes(m) && l.querySelectorAll('label').length === 1; }",
        arg=marker)
    t0 = time.monotonic()
    page.click(f"#conv-list label:has-text('{marker}')")
    page.wait_for_function("(t) => document.querySelector('#chatbot').innerText.includes(t)",
                           arg=f"{marker} message {LONG_CHAT}:", timeout=60_000)
    return time.monotonic() - t0


@pytest.mark.browser
def test_bounds_browser_a_5000_message_chat_opens_on_its_newest_and_loads_earlier_to_the_first(
        studio, page):
    marker = f"long{uuid.uuid4().hex[:6]}"
    chat_id = make_long_chat(studio.data_dir, LONG_CHAT, marker)
    open_studio(page, studio)
    print(f"5,000-message chat: its newest messages shown in {show_long_chat(page, marker):.1f} s")
    last = page.get_by_text(f"{marker} message {LONG_CHAT}:").last
    last.scroll_into_view_if_needed()
    assert last.is_visible()
    # Only the newest are drawn; the first is a click of "Load earlier" away, page by page.
    # Messages only: a turn's ↻ and ‹ n/m › buttons are rows of their own in the chatbot.
    shown = page.locator("#chatbot .message").filter(has_text=f"{marker} message ")
    assert shown.count() <= 2 * OPEN
    assert page.get_by_text(f"{marker} message 1:").count() == 0
    earlier = page.locator("#load-earlier")
    assert f"({LONG_CHAT - OPEN:,} more)" in earlier.inner_text()
    clicks = 0
    while earlier.is_visible():
        label = earlier.inner_text()
        earlier.click()
        page.wait_for_function(
            "(l) => { const b = document.querySelector('#load-earlier');"
            " return !b || b.offsetParent === null || b.innerText !== l; }", arg=label,
            timeout=30_000)
        clicks += 1
        assert clicks <= 30
        assert shown.count() <= 2 * MOST
    first = page.get_by_text(f"{marker} message 1:", exact=False).first
    first.scroll_into_view_if_needed(timeout=15_000)
    assert first.is_visible()
    assert page.locator("#load-newer").is_visible()
    # A new message goes at the end of the chat, which the page then shows, and is stored once.
    studio.ollama.queue_reply("The answer after 5,000.")
    page.fill("#chat-input textarea", f"after {marker}")
    page.press("#chat-input textarea", "Enter")
    # (Gradio's update, not the page's own drawing of a quick send: ui/chat_quick.py.)
    page.wait_for_function(
        "() => !document.querySelector('#chatbot .studio-pending') &&"
        " document.querySelector('#chatbot').innerText.includes('The answer after 5,000.')",
        timeout=30_000)
    shown = page.locator("#chatbot").inner_text()
    assert f"{marker} message {LONG_CHAT}:" in shown and f"{marker} message 1:" not in shown
    assert not page.locator("#load-newer").is_visible()
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    rows = list(db.query("select seq, role, content from messages where conversation_id = ? "
                         "and seq > ? order by seq", [chat_id, LONG_CHAT]))
    assert [(r["seq"], r["role"]) for r in rows] == [(LONG_CHAT + 1, "user"),
                                                      (LONG_CHAT + 2, "assistant")]
    assert rows[0]["content"] == f"after {marker}" and rows[1]["content"] == "The answer after 5,000."


# ------------------------------------------------------------------ memory bounds

def test_bounds_the_sidebar_list_a_page_is_sent_holds_at_most_200_chats(chat_page, services):
    """Gradio keeps, per page, a copy of the last list it sent that page (to check the
    choice it sends back): that copy grows with a user's chats up to this bound, then stops
    (docs/benchmarks.md, "Memory over time")."""
    for i in range(205):
        services.store.create_conversation(f"chat {i}")
    choices = chat_page.list_update("owner")["choices"]
    # The sidebar's page of 200 chats (chat_sidebar.PAGE_SIZE), with its date heading and
    # "More chats…" for the rest.
    chats = [(label, value) for label, value in choices if not is_heading(value)]
    assert len(chats) == 200 and choices[-1][1] == MORE
    assert chats[0][0] == "chat 204"


def test_bounds_gradio_keeps_100_events_for_its_monitoring_page(tmp_path):
    """app.py sets GRADIO_ANALYTICS_MAX_EVENTS before Gradio builds its queue: Gradio's
    record of queued events (for /monitoring, which the studio turns off) stops at 100."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "STUDIO_"))}
    env.update(STUDIO_DATA_DIR=str(tmp_path / "data"), OLLAMA_HOST="http://127.0.0.1:9")
    out = subprocess.run(
        [sys.executable, "-c", "import app; print(app.demo._queue.ANALYTICS_MAX_EVENTS)"],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
        timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "100", out.stderr[-2000:]


def test_bounds_reopening_the_gallery_keeps_no_component_copies(tmp_path, fake_ollama):
    """Gradio 6.31 keeps, per page, every copy of a component that an update replaced once
    that copy is an event's input (``Blocks.preprocess_data``). The gallery sent its two
    filter lists with every opening, so each one left two dropdowns behind; now the lists go
    through a hidden box whose change event alone updates them: 20 opens keep as many
    component objects as one."""
    import gc

    import httpx

    from tests.conftest import launch_in_process
    from tests.lazy_tabs import queue_call, render_in_session

    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url,
                                "COMFYUI_URL": "http://127.0.0.1:9"})
    try:
        # One page, as a browser's: the Images tab is built in it when first opened.
        client = httpx.Client(base_url=studio.url, timeout=30)
        session = uuid.uuid4().hex
        rendered = render_in_session(client, client.get("/config").json(), session)
        event = next(d for d in rendered["dependencies"] if d.get("api_name") == "open_gallery")

        def open_gallery() -> list:
            msg = queue_call(client, event["id"], ["", None, None, 1], session)
            assert msg is not None and msg.get("success"), msg
            return msg["output"]["data"]

        def dropdowns() -> int:
            gc.collect()
            return sum(1 for o in gc.get_objects() if type(o) is gr.Dropdown)

        for _ in range(2):
            opened = open_gallery()
        before = dropdowns()
        for _ in range(20):
            open_gallery()
        assert dropdowns() == before
        assert "All workflows" in opened[-1]  # the filter lists' choices, for the hidden box
        client.close()
    finally:
        studio.close()
