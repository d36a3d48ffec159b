"""Resource bounds: a 10 MB pasted prompt is refused without freezing the page, and a
conversation of 5,000 messages opens, shows its last message and scrolls to its first.

The handler test calls ``ChatPage.on_send`` directly against the fake Ollama; the browser
tests run headless chromium against ``python app.py`` (the session studio of conftest)."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import gradio as gr
import pytest

from studio.config import Settings
from studio.services import build_services
from studio.ui.chat_handlers import ChatPage
from studio.ui.chat_values import new_session

MODEL = "ollama:llama3.2:latest"
TEN_MB = 10 * 1024 * 1024
LONG_CHAT = 5000


def request(session: str = "page-1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, username=None, client=None)


@pytest.fixture
def services(tmp_path, fake_ollama):
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "OLLAMA_HOST": fake_ollama.url}, dotenv_path=None)
    services = build_services(settings)
    yield services
    services.store.close()


@pytest.fixture
def chat_page(services):
    return ChatPage(services)


def send(page, text, sess=None):
    return page.on_send({"text": text, "files": []}, sess or new_session(), MODEL, "",
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


def make_long_chat(data_dir, n: int, marker: str) -> str:
    """A conversation of n messages written straight into the store's database (bulk insert)."""
    from studio.store.db import Store

    store = Store.open(data_dir / "studio.db")
    try:
        conv = store.create_conversation(f"long {marker}", model=MODEL)
        stamp = store._now()
        first = (store.db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
                 + 1)
        # Each message follows the one before it (parent_id): one branch, as a chat writes.
        rows = [{"id": first + i, "parent_id": first + i - 1 if i else None,
                 "conversation_id": conv.id, "seq": i + 1,
                 "role": "user" if i % 2 == 0 else "assistant",
                 "content": f"{marker} message {i + 1}: " + "words in a line " * 4,
                 "thinking": "", "images": "[]", "model": MODEL, "backend": "ollama",
                 "status": "complete", "error": "", "meta": "{}",
                 "created_at": stamp, "updated_at": stamp} for i in range(n)]
        with store.db.atomic():
            store.db["messages"].insert_all(rows, batch_size=1000)
        store.touch_conversation(conv.id)
        return conv.id
    finally:
        store.close()


@pytest.mark.browser
def test_bounds_browser_a_5000_message_chat_opens_and_scrolls_to_its_first_message(studio, page):
    marker = f"long{uuid.uuid4().hex[:6]}"
    make_long_chat(studio.data_dir, LONG_CHAT, marker)
    open_studio(page, studio)
    page.fill("#conv-search input, #conv-search textarea", f"long {marker}")
    page.wait_for_function(
        "(m) => { const l = document.querySelector('#conv-list');"
        " return l.innerText.includes(m) && l.querySelectorAll('label').length === 1; }",
        arg=marker)
    t0 = time.monotonic()
    page.click(f"#conv-list label:has-text('{marker}')")
    last = f"{marker} message {LONG_CHAT}:"
    page.wait_for_function("(t) => document.querySelector('#chatbot').innerText.includes(t)",
                           arg=last, timeout=60_000)  # a bound, not a figure: see -s
    print(f"5,000-message chat shown in {time.monotonic() - t0:.1f} s")
    page.get_by_text(last).last.scroll_into_view_if_needed()
    assert page.get_by_text(last).last.is_visible()
    # Scroll to the top: the first message becomes visible.
    first = page.get_by_text(f"{marker} message 1:", exact=False).first
    first.scroll_into_view_if_needed(timeout=15_000)
    assert first.is_visible()
