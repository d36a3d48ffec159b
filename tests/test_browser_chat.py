"""Real-browser tests: headless Debian chromium through Playwright against `python app.py`."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlite_utils

from tests.conftest import free_port
from tests.fakes.ollama_server import make_tokens

pytestmark = pytest.mark.browser


def chat_text(page) -> str:
    return page.inner_text("#chatbot")


def wait_chat_contains(page, text: str, timeout: float = 20_000) -> None:
    page.wait_for_function("(t) => document.querySelector('#chatbot').innerText.includes(t)",
                           arg=text, timeout=timeout)


def open_studio(page, studio, *, new_chat: bool = True) -> None:
    """Open the page; by default start a new chat (the browser reopens its last one)."""
    page.goto(studio.url)
    page.wait_for_selector("#chat-input textarea")
    # The model list is filled on load; wait until a model is picked.
    page.wait_for_function(
        "() => { const i = document.querySelector('#model-picker input');"
        " return i && i.value && i.value.length > 0; }")
    if new_chat:
        page.click("#new-chat")
        page.wait_for_function("() => !document.querySelector('#chatbot .message')")


def send(page, text: str) -> None:
    page.fill("#chat-input textarea", text)
    page.press("#chat-input textarea", "Enter")


def stored(studio, marker: str) -> dict:
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    rows = list(db.query(  # the newest answer to the newest message with the marker
        "select a.* from messages u join messages a on a.parent_id = u.id "
        "where u.role = 'user' and u.content like ? order by u.id, a.id", [f"%{marker}%"]))
    return rows[-1] if rows else {}


def test_browser_reply_streams_into_the_page(studio, page):
    open_studio(page, studio)
    tokens = make_tokens(40)
    studio.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"stream please {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, tokens[2].strip())
    # Part of the reply is on screen while the rest is still being generated.
    assert tokens[-1].strip() not in chat_text(page)
    wait_chat_contains(page, tokens[-1].strip())
    wait_chat_contains(page, "tok/s")


def test_browser_stop_during_slow_reply_keeps_partial(studio, page):
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(300)
    studio.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"long one {marker}")
    wait_chat_contains(page, tokens[3].strip())
    page.click("#stop-btn")
    wait_chat_contains(page, "Stopped by you")
    assert tokens[-1].strip() not in chat_text(page)
    row = stored(studio, marker)
    assert row["status"] == "partial" and 4 <= row["content"].count("tok") < 300


def test_browser_reply_completes_after_page_closes_and_reopens(studio, browser_context):
    page = browser_context.new_page()
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(160)
    studio.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"survive closing {marker}")
    wait_chat_contains(page, tokens[1].strip())
    page.close()  # the phone locks / the tab closes mid-reply

    again = browser_context.new_page()
    open_studio(again, studio, new_chat=False)
    # The same browser reopens its last conversation, still streaming, then finished.
    wait_chat_contains(again, marker)
    # The reopened page picks the stream up, its text over /studio/live as before.
    again.wait_for_function(
        "() => { const o = document.querySelector('#chatbot .studio-live-text');"
        " return o && o.innerText.includes('tok1'); }")
    wait_chat_contains(again, tokens[-1].strip(), timeout=30_000)
    assert stored(studio, marker)["status"] == "complete"
    assert stored(studio, marker)["content"] == "".join(tokens)
    again.close()


def test_browser_finished_reply_is_stored_with_no_page_open(studio, browser_context):
    page = browser_context.new_page()
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(30)
    studio.ollama.queue_reply(tokens, delay=0.03)
    send(page, f"nobody watching {marker}")
    wait_chat_contains(page, tokens[0].strip())
    page.close()
    deadline = time.monotonic() + 20
    while stored(studio, marker).get("status") != "complete" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(studio, marker)["content"] == "".join(tokens)


def test_browser_reload_finds_conversation_in_sidebar_and_search(studio, page):
    open_studio(page, studio)
    marker = f"zebra{uuid.uuid4().hex[:6]}"
    studio.ollama.queue_reply(["Stripes ", "are ", "unique."])
    send(page, f"Tell me about the {marker} 🦓")
    wait_chat_contains(page, "Stripes are unique.")
    page.reload()
    page.wait_for_selector("#conv-list")
    page.wait_for_function("(m) => document.querySelector('#conv-list').innerText.includes(m)",
                           arg=marker)
    # Start a new chat, then find the old one through full-text search of the reply text.
    page.click("#new-chat")
    page.wait_for_function("() => !document.querySelector('#chatbot').innerText.includes('Stripes')")
    page.fill("#conv-search input, #conv-search textarea", "stripes unique")
    page.wait_for_function(
        "(m) => { const l = document.querySelector('#conv-list');"
        " return l.innerText.includes(m) && l.querySelectorAll('label').length === 1; }",
        arg=marker)
    page.click(f"#conv-list label:has-text('{marker}')")
    wait_chat_contains(page, "Stripes are unique.")
    # An emoji is found too, and a search that finds nothing says so (issue 14, item 8).
    page.fill("#conv-search input, #conv-search textarea", "🦄")
    page.wait_for_function(
        "() => { const n = document.querySelector('#conv-search-note');"
        " return n && n.innerText.includes('No chats match “🦄”'); }")
    page.fill("#conv-search input, #conv-search textarea", "🦓")
    page.wait_for_function(
        "(m) => document.querySelector('#conv-list').innerText.includes(m)", arg=marker)
    assert not page.is_visible("#conv-search-note")


def wait_chat_lacks(page, text: str) -> None:
    page.wait_for_function("(t) => !document.querySelector('#chatbot').innerText.includes(t)",
                           arg=text)


def test_browser_retry_keeps_each_answer_and_pages_between_them(studio, page):
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply("First draft.")
    send(page, f"draft {marker}")
    wait_chat_contains(page, "First draft.")
    for text, shown in (("Second draft.", "2/2"), ("Third draft.", "3/3")):
        studio.ollama.queue_reply(text)
        page.locator("#chatbot button.act-retry").last.click()
        wait_chat_contains(page, text)
        wait_chat_contains(page, shown)
    assert "First draft." not in chat_text(page)
    # The model was asked the question alone, never with an earlier draft.
    sent = studio.ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == [f"draft {marker}"]

    page.click("#chatbot button.act-prev")
    wait_chat_contains(page, "Second draft.")
    wait_chat_contains(page, "2/3")
    assert "Third draft." not in chat_text(page)
    page.reload()  # the browser reopens the chat, on the version it showed
    page.wait_for_selector("#chat-input textarea")
    wait_chat_contains(page, "Second draft.")
    wait_chat_contains(page, "2/3")
    page.click("#chatbot button.act-next")
    wait_chat_contains(page, "Third draft.")
    wait_chat_lacks(page, "Second draft.")
    assert stored(studio, marker)["content"] == "Third draft."


def test_browser_chat_list_folds_away_and_back(studio, page):
    """On a wide screen the chat list is open beside the chat; its toggle folds it to a
    strip (the chat takes the room) and opens it again. On a phone it is an overlay that a
    tap beside it closes."""
    open_studio(page, studio, new_chat=False)
    toggle = page.locator("#conv-toggle")
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.is_visible("#new-chat") and page.is_visible("#conv-search")
    wide = page.locator("#chatbot").bounding_box()["width"]
    toggle.click()
    page.wait_for_selector("#new-chat", state="hidden")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert page.locator("#chatbot").bounding_box()["width"] > wide + 150
    toggle.click()
    page.wait_for_selector("#new-chat", state="visible")
    assert toggle.get_attribute("aria-expanded") == "true"

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector("#conv-toggle")
    assert not page.is_visible("#new-chat")
    page.click("#conv-toggle")
    page.wait_for_selector("#new-chat", state="visible")
    # A tap beside the list, on the message box: it closes the list and does no more.
    box = page.locator("#chat-input textarea").bounding_box()
    assert box["x"] + box["width"] > 330
    page.mouse.click(max(box["x"], 330) + 5, box["y"] + box["height"] / 2)
    page.wait_for_selector("#new-chat", state="hidden")
    assert page.get_attribute("#conv-toggle", "aria-expanded") == "false"
    assert not page.evaluate("document.activeElement === "
                             "document.querySelector('#chat-input textarea')")
    page.mouse.click(max(box["x"], 330) + 5, box["y"] + box["height"] / 2)
    page.wait_for_function("document.activeElement === "
                           "document.querySelector('#chat-input textarea')")  # list closed


def test_browser_versions_page_on_a_phone_sized_screen(studio, page):
    page.set_viewport_size({"width": 390, "height": 844})
    open_studio(page, studio, new_chat=False)
    # On a phone the chat list starts closed (off the screen, over nothing), opens over
    # the chat from its toggle, and closes again once a new chat is started.
    assert not page.is_visible("#new-chat")
    page.click("#conv-toggle")
    page.wait_for_function("() => { const r = document.querySelector('#new-chat')"
                           ".getBoundingClientRect(); return r.left >= 0 && r.right <= 390; }")
    page.click("#new-chat")
    page.wait_for_function("() => !document.querySelector('#chatbot .message')"
                           " && !document.querySelector('#conv-sidebar.conv-open')")
    assert page.get_attribute("#conv-toggle", "aria-expanded") == "false"
    studio.ollama.queue_reply("Small one.")
    send(page, f"phone {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, "Small one.")
    studio.ollama.queue_reply("Small two.")
    page.locator("#chatbot button.act-retry").last.click()
    wait_chat_contains(page, "2/2")
    pager = page.locator("#chatbot button.act-prev").last
    box = pager.bounding_box()
    assert box["width"] >= 28 and box["height"] >= 28  # a finger can hit it
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390  # on screen, not cut off
    pager.click()
    wait_chat_contains(page, "Small one.")
    wait_chat_contains(page, "1/2")


def test_browser_edit_keeps_the_earlier_branch(studio, page):
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply("Answer to cats.")
    send(page, f"tell me about cats {marker}")
    wait_chat_contains(page, "Answer to cats.")
    studio.ollama.queue_reply("Answer to dogs.")
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    box = page.locator("#chatbot textarea").first
    box.fill(f"tell me about dogs {marker}")
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    wait_chat_contains(page, "Answer to dogs.")
    wait_chat_contains(page, "2/2")
    assert "Answer to cats." not in chat_text(page)
    sent = studio.ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == [f"tell me about dogs {marker}"]
    assert stored(studio, marker)["content"] == "Answer to dogs."
    # Paging back to the message as first written brings its answer back with it.
    page.click("#chatbot button.act-prev")
    wait_chat_contains(page, "Answer to cats.")
    wait_chat_contains(page, f"tell me about cats {marker}")
    wait_chat_contains(page, "1/2")
    assert "Answer to dogs." not in chat_text(page)


def test_browser_reply_text_comes_over_the_lean_channel_then_gradio_renders_it(studio, page):
    """The page's script reads a streaming reply's text (ui/live.py), here as the answer of
    its quick send (ui/chat_quick.py), and draws it into the reply's bubble (escaped, light
    Markdown) while Gradio's copy, updated about once a second, stays hidden; the finished
    message is Gradio's, shown once. One stream of the text, no second one."""
    lives, sends = [], []
    page.on("request", lambda r: lives.append(r.url) if "/studio/live/" in r.url else None)
    page.on("request", lambda r: sends.append(r.url) if "/studio/send" in r.url else None)
    open_studio(page, studio)
    tokens = (["Here ", "is ", "**bold** ", "and ", "<img src=x onerror=alert(3)> "]
              + make_tokens(50) + ["\n\n```py\nprint(1)\n```\n", "end"])
    studio.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"lean please {uuid.uuid4().hex[:6]}")
    page.wait_for_function(
        "(t) => { const o = document.querySelector('#chatbot .studio-live-text');"
        " return o && o.innerText.includes(t); }", arg=tokens[25].strip())
    drawn = page.evaluate("""() => {
        const o = document.querySelector('#chatbot .studio-live-text');
        const gradios = o.parentElement.querySelector(':scope > .md:not(.studio-live-text)');
        return {html: o.innerHTML, hidden: getComputedStyle(gradios).display === 'none'}; }""")
    assert drawn["hidden"] and "<strong>bold</strong>" in drawn["html"]
    assert "&lt;img src=x" in drawn["html"]
    assert page.locator("#chatbot img[src='x']").count() == 0
    page.wait_for_function("() => !document.querySelector('#chatbot .studio-live-text')"
                           " && document.querySelector('#chatbot').innerText.includes('end')")
    text = chat_text(page)
    assert text.count(tokens[30].strip() + " ") == 1 and "<img src=x onerror=alert(3)>" in text
    assert "print(1)" in page.locator("#chatbot pre code").last.inner_text()
    assert len(sends) == 1 and lives == []


def test_browser_text_that_looks_like_html_shows_as_typed(studio, page):
    open_studio(page, studio)
    marker = uuid.uuid4().hex[:6]
    typed = (f"<script>alert(1)</script> and <img src=x onerror=alert(2)> {marker} **bold**"
             "\n\n```\ncode <b>kept</b>\n```")
    studio.ollama.queue_reply(["Use ", "<b>tags</b> ", "like **this** and ", "`<i>`", "."])
    send(page, typed)
    wait_chat_contains(page, "like this and")
    text = chat_text(page)
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(2)>" in text
    assert "Use <b>tags</b> like this and <i>." in text.replace("\n", "")
    # Markdown and code still render, in the person's message and in the model's reply.
    bold = page.locator("#chatbot strong").all_inner_texts()
    assert "bold" in bold and "this" in bold
    assert "code <b>kept</b>" in page.locator("#chatbot pre code").first.inner_text()
    assert page.locator("#chatbot img[src='x'], #chatbot script").count() == 0


def test_browser_preset_fills_system_prompt_and_is_sent(studio, page):
    open_studio(page, studio)
    page.locator("#preset-picker input").click()
    page.get_by_role("option", name="Coder").click()
    page.wait_for_function(
        "() => document.querySelector('#system-prompt textarea').value.includes('software engineer')")
    studio.ollama.queue_reply("ok")
    send(page, f"preset {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, "ok")
    request = studio.ollama.requests_to("/api/chat")[-1].json
    assert request["messages"][0]["role"] == "system"
    assert "software engineer" in request["messages"][0]["content"]
    assert request["options"]["temperature"] == 0.2


def test_browser_typing_during_a_reply_is_kept(studio, page):
    open_studio(page, studio)
    tokens = make_tokens(60)
    studio.ollama.queue_reply(tokens, delay=0.04)
    send(page, f"long answer please {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, tokens[2].strip())
    page.fill("#chat-input textarea", "my next question")
    wait_chat_contains(page, tokens[20].strip())
    assert page.input_value("#chat-input textarea") == "my next question"
    wait_chat_contains(page, tokens[-1].strip())
    wait_chat_contains(page, "tok/s")
    assert page.input_value("#chat-input textarea") == "my next question"


def test_browser_a_refused_message_stays_in_the_box(tmp_path, session_ollama, page):
    from tests.conftest import start_studio, stop_studio
    small = start_studio(tmp_path, session_ollama.url, {"STUDIO_MAX_MESSAGE_CHARS": "40"})
    try:
        open_studio(page, small)
        too_long = "tell me everything about " + "x" * 40
        send(page, too_long)
        page.wait_for_selector("text=the limit is 40", timeout=20_000)
        assert page.input_value("#chat-input textarea") == too_long
        assert not page.query_selector("#chatbot .message")
        # A message within the limit goes through and empties the box.
        session_ollama.queue_reply("short answer")
        send(page, "short one")
        wait_chat_contains(page, "short answer")
        assert page.input_value("#chat-input textarea") == ""
    finally:
        stop_studio(small)


def test_browser_an_empty_message_warns_and_stays_in_the_box(studio, page):
    open_studio(page, studio)
    send(page, "   ")
    page.wait_for_selector("text=the message is empty", timeout=20_000)
    assert page.input_value("#chat-input textarea") == "   "
    assert not page.query_selector("#chatbot .message")


def pick_model(page, search: str, label_part: str) -> None:
    page.click("#model-picker input")
    page.fill("#model-picker input", search)
    page.click(f"#model-picker li[data-testid=dropdown-option]:has-text('{label_part}')")


# "+ Image"'s own file input (Gradio's UploadButton puts it beside the button), and a
# picture shown as attached under the box.
ATTACH_INPUT = "#composer input[type=file]"
ATTACHED = "#chat-attached tr.file"


def open_with_picture(page, studio, tmp_path, model: str, colour: tuple) -> bytes:
    """A new chat on ``model`` with a small PNG attached; returns the PNG's bytes."""
    from PIL import Image

    path = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), colour).save(path)
    open_studio(page, studio)
    pick_model(page, model, f"{model}:latest")
    page.set_input_files(ATTACH_INPUT, str(path))
    page.wait_for_selector(ATTACHED, timeout=20_000)
    return path.read_bytes()


def test_browser_attached_image_reaches_the_vision_model(studio, page, tmp_path):
    import base64

    picture = open_with_picture(page, studio, tmp_path, "llava", (200, 30, 30))
    studio.ollama.queue_reply("A red square.")
    send(page, "what is this?")
    wait_chat_contains(page, "A red square.")
    sent = studio.ollama.requests_to("/api/chat")[-1].json["messages"][-1]
    assert sent["content"] == "what is this?"
    assert base64.b64decode(sent["images"][0]) == picture
    assert page.input_value("#chat-input textarea") == ""
    assert not page.query_selector(ATTACHED) and not page.is_visible("#chat-attached")


def test_browser_pasted_and_dropped_pictures_are_attached_and_sent(studio, page, tmp_path):
    """The box is a plain Textbox (issue 16, item 4): a picture pasted or dropped into it is
    attached as "+ Image" would, beside one attached already, and all go with the message;
    a file that isn't a picture is left out with a line saying so; Shift+Enter still makes a
    new line."""
    import base64
    import io

    from PIL import Image

    first = open_with_picture(page, studio, tmp_path, "llava", (200, 30, 30))
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (10, 10, 240)).save(buf, format="PNG")
    pasted = buf.getvalue()
    page.fill("#chat-input textarea", "compare these")
    page.evaluate("""(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
      const box = document.querySelector('#chat-input textarea');
      box.focus();
      box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true,
                                                     cancelable: true}));
    }""", base64.b64encode(pasted).decode())
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length === 2", arg=ATTACHED,
                           timeout=20_000)
    # Dropped on the box, likewise.
    page.evaluate("""(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
      const box = document.querySelector('#chat-input textarea');
      box.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
                                               cancelable: true}));
    }""", base64.b64encode(first).decode())
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length === 3", arg=ATTACHED,
                           timeout=20_000)
    # A file that isn't a picture is left out, with a line that says so; the page stays.
    page.evaluate("""() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['%PDF-1.4'], 'notes.pdf', {type: 'application/pdf'}));
      document.querySelector('#chat-input textarea').dispatchEvent(
        new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    page.wait_for_selector("#attach-note:has-text('notes.pdf')")
    assert "Only pictures can be attached" in page.inner_text("#attach-note")
    page.wait_for_timeout(500)
    assert len(page.query_selector_all(ATTACHED)) == 3
    # Shift+Enter is a new line, not a send.
    page.press("#chat-input textarea", "End")
    page.press("#chat-input textarea", "Shift+Enter")
    page.keyboard.type("please")
    assert page.input_value("#chat-input textarea") == "compare these\nplease"  # text stays
    studio.ollama.queue_reply("A red one and a blue one.")
    page.press("#chat-input textarea", "Enter")
    wait_chat_contains(page, "A red one and a blue one.")
    sent = studio.ollama.requests_to("/api/chat")[-1].json["messages"][-1]
    assert sent["content"] == "compare these\nplease"
    assert [base64.b64decode(i) for i in sent["images"]] == [first, pasted, first]
    assert not page.query_selector(ATTACHED)


def test_browser_image_for_a_text_model_comes_back_to_the_box(studio, page, tmp_path):
    open_with_picture(page, studio, tmp_path, "llama3.2", (20, 30, 200))
    before = len(studio.ollama.requests_to("/api/chat"))
    send(page, "describe it")
    page.wait_for_selector("text=can't read images", timeout=20_000)
    page.wait_for_function(
        "() => document.querySelector('#chat-input textarea').value === 'describe it'")
    assert page.query_selector(ATTACHED)
    assert len(studio.ollama.requests_to("/api/chat")) == before


def test_browser_a_message_sent_on_a_full_disk_stays_in_the_box(tmp_path, session_ollama, page):
    from tests.conftest import launch_in_process
    from tests.test_store import fill_disk

    running = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                 "OLLAMA_HOST": session_ollama.url,
                                 "COMFYUI_URL": f"http://127.0.0.1:{free_port()}"})
    try:
        open_studio(page, running)
        fill_disk(running.services.store)
        typed = "a question worth keeping " * 400
        send(page, typed)
        page.wait_for_selector("text=The disk holding the studio's data", timeout=20_000)
        page.wait_for_function(
            "(t) => document.querySelector('#chat-input textarea').value === t", arg=typed)
        assert not page.query_selector("#chatbot .message")
    finally:
        running.close()


@pytest.mark.parametrize("answer", ["streaming", "whole"])
def test_browser_a_quick_send_that_cannot_be_saved_gives_back_its_own_message(
        tmp_path, session_ollama, page, answer):
    """A message sent while the first one's turn still waits to be written goes into the
    queue; when that write then fails, the first message comes back into the box (not the
    queued one, which the hidden box holds by then) and its drawn turn goes: whether its
    answer was still streaming then or had come whole."""
    from tests.conftest import launch_in_process
    from tests.test_store import fill_disk

    running = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                 "OLLAMA_HOST": session_ollama.url,
                                 "COMFYUI_URL": f"http://127.0.0.1:{free_port()}"})
    marker = uuid.uuid4().hex[:8]
    first = f"the first question {marker} " + "worth keeping " * 600
    store = running.services.store
    try:
        # A fresh studio opens on an empty chat. Nothing of the page's load may still be in
        # Gradio's queue: a message sent behind it goes the usual way (chat_quick.behind),
        # and a late update of the chatbot would take the drawn turn away.
        open_studio(page, running, new_chat=False)
        session = page.evaluate("window.__gradio_session_hash__")
        pending = running.demo._queue.pending_event_ids_session
        deadline = time.monotonic() + 20
        while pending.get(session) and time.monotonic() < deadline:
            time.sleep(0.05)
        page.wait_for_timeout(300)  # its last updates reach the page
        tokens = make_tokens(80 if answer == "streaming" else 3)
        session_ollama.queue_reply(tokens, delay=0.05 if answer == "streaming" else 0.0)
        with store._write_lock:  # another writer: the first turn waits to be written
            send(page, first)
            wait_chat_contains(page, tokens[2].strip())  # drawn by the page's script
            send(page, f"the second one {marker}")
            page.wait_for_function(
                "(m) => { const q = document.querySelector('#queued');"
                " return q && q.offsetParent !== null && q.innerText.includes(m); }",
                arg=f"the second one {marker}", timeout=10_000)
            fill_disk(store)
        page.wait_for_selector("text=The disk holding the studio's data", timeout=20_000)
        page.wait_for_function(
            "(t) => document.querySelector('#chat-input textarea').value === t", arg=first)
        page.wait_for_function("() => !document.querySelector('#chatbot .message')")
        assert f"the second one {marker}" in queued_chips(page)
    finally:
        running.close()


def test_browser_a_picture_attached_on_a_full_disk_stays_in_the_box(tmp_path, session_ollama,
                                                                    page, monkeypatch):
    from tests.conftest import launch_in_process
    from tests.test_chat_service import full_uploads_disk

    data = tmp_path / "data"
    running = launch_in_process({"STUDIO_DATA_DIR": str(data),
                                 "OLLAMA_HOST": session_ollama.url,
                                 "COMFYUI_URL": f"http://127.0.0.1:{free_port()}"})
    try:
        open_with_picture(page, running, tmp_path, "llava", (30, 200, 30))
        full_uploads_disk(monkeypatch, data / "uploads")
        before = len(session_ollama.requests_to("/api/chat"))
        typed = f"what is this green square? {uuid.uuid4().hex[:6]}"
        send(page, typed)
        page.wait_for_selector("text=The disk holding the studio's data", timeout=20_000)
        page.wait_for_function(
            "(t) => document.querySelector('#chat-input textarea').value === t", arg=typed)
        assert page.query_selector(ATTACHED)
        assert not page.query_selector("#chatbot .message")
        assert len(session_ollama.requests_to("/api/chat")) == before
        assert not [p for p in (data / "uploads").rglob("*") if p.is_file()]
    finally:
        running.close()


def mid_reply(page, studio) -> list[str]:
    """A new chat whose first reply (60 tokens, about 2.4 s) is streaming; its tokens."""
    open_studio(page, studio)
    tokens = make_tokens(60)
    studio.ollama.queue_reply(tokens, delay=0.04)
    send(page, f"long answer please {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, tokens[2].strip())
    return tokens


def queued_chips(page) -> str:
    chips = page.query_selector("#queued")
    return chips.inner_text() if chips and chips.is_visible() else ""


def test_browser_message_sent_during_a_reply_is_queued_then_answered(studio, page):
    marker = uuid.uuid4().hex[:8]
    tokens = mid_reply(page, studio)
    studio.ollama.queue_reply(f"Answer to the queued one {marker}.")
    send(page, f"and then this {marker}")
    page.wait_for_function(
        "(m) => { const q = document.querySelector('#queued');"
        " return q && q.offsetParent !== null && q.innerText.includes('Queued: and then this ' + m); }",
        arg=marker, timeout=10_000)
    assert tokens[-1].strip() not in chat_text(page)  # shown as waiting while the reply runs
    assert page.input_value("#chat-input textarea") == ""
    wait_chat_contains(page, f"Answer to the queued one {marker}.", timeout=30_000)
    page.wait_for_function("() => { const q = document.querySelector('#queued');"
                           " return !q || q.offsetParent === null; }")
    assert tokens[-1].strip() in chat_text(page), chat_text(page)[-1500:]
    assert chat_text(page).index(tokens[-1].strip()) < chat_text(page).index(f"and then this {marker}")
    row = stored(studio, marker)
    assert row["status"] == "complete" and row["content"] == f"Answer to the queued one {marker}."


def test_browser_queued_message_taken_back_before_it_goes(studio, page):
    marker = uuid.uuid4().hex[:8]
    tokens = mid_reply(page, studio)
    before = len(studio.ollama.requests_to("/api/chat"))
    send(page, f"on second thought {marker}")
    page.click(f"#queued label:has-text('{marker}')", timeout=10_000)
    page.wait_for_function(
        "(m) => document.querySelector('#chat-input textarea').value === 'on second thought ' + m",
        arg=marker, timeout=10_000)
    assert not queued_chips(page)
    wait_chat_contains(page, tokens[-1].strip(), timeout=30_000)
    wait_chat_contains(page, "tok/s")
    assert len(studio.ollama.requests_to("/api/chat")) == before
    assert f"on second thought {marker}" not in chat_text(page)
    assert not stored(studio, marker)
    assert page.input_value("#chat-input textarea") == f"on second thought {marker}"


def test_browser_ollama_down_is_said_once_without_covering_the_status_strip(tmp_path, page):
    from tests.conftest import start_studio, stop_studio

    down = start_studio(tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        page.goto(down.url)
        page.wait_for_selector(
            "#top-bar .status-strip [data-backend='ollama'][data-state='unreachable']")
        # The Chat tab's picker says why it is empty, in place, on the same load.
        page.wait_for_function(
            "() => document.querySelector('#model-picker').innerText.includes(\"Can't reach Ollama\")")
        page.click("button[role=tab]:has-text('Arena')")
        page.wait_for_selector("#arena-models")
        # No notice stacked over the strip: the strip and the picker say it already.
        notices = page.locator(".toast-body").all_inner_texts()
        assert not [n for n in notices if "Can't reach Ollama" in n]
        # Asking again (⟳) still says it, once.
        page.click("button[role=tab]:has-text('Chat')")
        page.click("#refresh-models")
        page.wait_for_selector(".toast-body:has-text(\"Can't reach Ollama\")")
        assert len([n for n in page.locator(".toast-body").all_inner_texts()
                    if "Can't reach Ollama" in n]) == 1
    finally:
        stop_studio(down)


def test_browser_quick_send_shows_the_first_words_before_gradios_update(studio, page):
    """The page's quick send (ui/chat_quick.py): the question and the reply's first words
    show from the send's own answer, before Gradio's send event is even joined; then
    Gradio's update takes the turn over, and the message is stored once."""
    open_studio(page, studio)
    # Hold the page's Gradio events back (its script's fetch) while the reply streams.
    page.evaluate("""() => { const plain = window.fetch;
        window.fetch = async (...args) => {
          if (String(args[0]).includes('queue/join') && window.holdJoins)
            await new Promise((go) => { window.releaseJoins = go; });
          return plain(...args); };
        window.holdJoins = true; }""")
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(60)
    studio.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"quick one {marker}")
    page.wait_for_function(
        "(t) => { const p = document.querySelector('#chatbot .studio-pending');"
        " return p && p.innerText.includes(t); }", arg=tokens[3].strip())
    pending = page.inner_text("#chatbot .studio-pending")
    assert f"quick one {marker}" in pending and tokens[0].strip() in pending
    assert page.locator("#stop-btn").is_hidden()  # Gradio has not answered: no event yet
    page.evaluate("() => { window.holdJoins = false; window.releaseJoins(); }")
    page.wait_for_selector("#stop-btn", state="visible")
    page.wait_for_function("() => !document.querySelector('#chatbot .studio-pending')")
    wait_chat_contains(page, tokens[-1].strip(), timeout=30_000)
    wait_chat_contains(page, "tok/s")
    page.wait_for_function("() => !document.querySelector('#chatbot .studio-live-text')")
    text = chat_text(page)
    assert text.count(f"quick one {marker}") == 1 and text.count(tokens[-1].strip()) == 1
    row = stored(studio, marker)
    assert row["status"] == "complete" and row["content"] == "".join(tokens)
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    assert db.execute("select count(*) from messages where content = ?",
                      [f"quick one {marker}"]).fetchone()[0] == 1
