"""A long chat opens on its newest messages and brings the rest in pages.

The pure window arithmetic (``studio/chat/window.py``), then ``ChatPage`` handlers called as
plain functions against the fake Ollama on a 1,000-message chat written through the store:
loading earlier reaches the first message; edit, retry, send, the reply follower of a
reopened page, export and a search hit all work on a partial view.
"""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import gradio as gr
import pytest

from studio.chat import window as window_module
from studio.chat.window import MOST, OPEN, PAGE, around, counts, earlier, later, newest
from studio.ui.chat_handlers import ChatPage
from studio.ui.chat_values import new_session
from tests.long_chat import make_long_chat

MODEL = "ollama:llama3.2:latest"
N = 1000


def request(session: str = "page-1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, username=None, client=None)


# ------------------------------------------------------------------ the arithmetic

def test_window_doctests_pass():
    assert doctest.testmod(window_module).failed == 0


@pytest.mark.parametrize("seqs, n, expected", [
    ([], 5, (None, None)), ([1, 2, 3], 5, (None, None)), ([1, 2, 3], 3, (None, None)),
    ([1, 2, 3, 4], 3, (2, None)), ([2, 5, 9, 11], 2, (9, None))])
def test_window_newest(seqs, n, expected):
    assert newest(seqs, n) == expected


def test_window_earlier_steps_reach_the_first_and_never_show_more_than_most():
    seqs = list(range(1, 5001))
    window, steps = newest(seqs), 0
    while counts(seqs, window)[0]:
        window = earlier(seqs, window)
        start, stop = counts(seqs, window)
        assert 0 < 5000 - start - stop <= MOST
        steps += 1
    assert window[0] is None and steps == -(-(5000 - OPEN) // PAGE)
    # ... and later steps come back to the newest, open towards new messages.
    while window[1] is not None:
        window = later(seqs, window)
    assert counts(seqs, window)[1] == 0


def test_window_around_ends_with_the_message_and_its_answer():
    seqs = list(range(1, 1001))
    assert around(seqs, 41, 10) == (33, 42)
    assert around(seqs, 999, 10) == (991, None)
    assert around(seqs, 1, 10) == (None, 2)


# ------------------------------------------------------------------ the page

@pytest.fixture
def page(services):
    return ChatPage(services)


@pytest.fixture
def long_chat(services):
    return make_long_chat(services.settings.db_path.parent, N, "old")


def text_of(row) -> str | None:
    """A row's text: handlers give a string, and the events that stream replies give it
    as Gradio sends it (a list of blocks: chat_wire.py); None for a picture."""
    content = row["content"]
    if isinstance(content, list):
        return "".join(b["text"] for b in content if b.get("type") == "text") or None
    return content if isinstance(content, str) else None


def texts(rows) -> list[str]:
    """The messages' texts, without the rows of buttons under the turns (↻, ‹ n/m ›)."""
    return [t for t in map(text_of, rows)
            if t and not t.startswith('<span class="turn-tools">')]


def number(text: str) -> int:
    """The message number in make_long_chat's text: 'old message 17: words…' -> 17."""
    return int(text.split("message ", 1)[1].split(":", 1)[0])


def opened(page, value, sess=None, req=None):
    return page.on_open(value, sess or new_session(), request=req or request())


def test_page_a_long_chat_opens_on_its_newest_messages(page, long_chat):
    sess, rows, *_rest, earlier_btn, newer_btn = opened(page, long_chat)
    assert [number(t) for t in texts(rows)] == list(range(N - OPEN + 1, N + 1))
    assert earlier_btn["visible"] is True and f"({N - OPEN:,} more)" in earlier_btn["value"]
    assert newer_btn["visible"] is False
    assert (sess["first"], sess["last"]) == (N - OPEN + 1, None)


def test_page_load_earlier_reaches_the_first_message(page, long_chat):
    sess = opened(page, long_chat)[0]
    shown = []
    for _ in range(20):
        sess, rows, earlier_btn, newer_btn = page.on_earlier(sess, request=request())
        shown.append(len(texts(rows)))
        if not earlier_btn["visible"]:
            break
    assert number(texts(rows)[0]) == 1
    assert max(shown) <= MOST
    assert newer_btn["visible"] is True  # the newest went past MOST: they come back in pages
    while newer_btn["visible"]:
        sess, rows, earlier_btn, newer_btn = page.on_newer(sess, request=request())
    assert number(texts(rows)[-1]) == N and sess["last"] is None


def test_page_edit_after_loading_earlier_changes_the_message_shown(page, services, long_chat,
                                                                    fake_ollama):
    sess = opened(page, long_chat)[0]
    sess, rows, *_ = page.on_earlier(sess, request=request())
    row = next(i for i, r in enumerate(rows) if r["role"] == "user")
    seq = sess["index"][row]
    assert number(rows[row]["content"]) == seq  # the row shows the stored message seq
    fake_ollama.queue_reply("A new answer.")
    edit = gr.EditData(None, {"index": row, "value": "edited question",
                                 "previous_value": rows[row]["content"]})
    updates = list(page.on_edit(edit, sess, MODEL, "", 0.8, 0.9, 0, -1, 0, "auto",
                                request=request()))
    final_rows = updates[-1][1]
    assert texts(final_rows)[-2:] == ["edited question", "A new answer."]
    stored = services.store.messages(long_chat)
    assert len(stored) == seq + 1
    assert [m.content for m in stored[-2:]] == ["edited question", "A new answer."]
    # The model saw the history before the edited message, then the edit.
    prompt = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert prompt[-1]["content"] == "edited question" and number(prompt[-2]["content"]) == seq - 1


def test_page_send_after_loading_earlier_appends_once_and_shows_the_newest(page, services,
                                                                          long_chat, fake_ollama):
    sess = opened(page, long_chat)[0]
    for _ in range(5):
        sess, *_ = page.on_earlier(sess, request=request())
    assert sess["last"] is not None
    fake_ollama.queue_reply("Answer at the end.")
    updates = list(page.on_send("a new question", [], sess, MODEL, "", False,
                                0.8, 0.9, 0, -1, 0, "auto", request=request()))
    sess, rows = updates[-1][:2]
    assert texts(rows)[-2:] == ["a new question", "Answer at the end."]
    assert number(texts(rows)[-3]) == N and len(texts(rows)) == OPEN
    assert sess["last"] is None and updates[-1][-1]["visible"] is False
    stored = services.store.messages(long_chat)
    assert len(stored) == N + 2
    assert [m.content for m in stored].count("a new question") == 1


def test_page_retry_of_a_hidden_answer_is_refused_in_a_sentence(page, long_chat, fake_ollama):
    sess = opened(page, long_chat)[0]
    for _ in range(5):
        sess, *_ = page.on_earlier(sess, request=request())
    with pytest.raises(gr.Error, match="last answer, which is further down"):
        list(page.on_retry(sess, MODEL, "", 0.8, 0.9, 0, -1, 0, "auto", request=request()))
    assert fake_ollama.requests_to("/api/chat") == []


def test_page_retry_on_the_newest_messages_redoes_the_last_answer(page, services, long_chat,
                                                                 fake_ollama):
    sess = opened(page, long_chat)[0]
    fake_ollama.queue_reply("Another go.")
    updates = list(page.on_retry(sess, MODEL, "", 0.8, 0.9, 0, -1, 0, "auto",
                                 request=request()))
    assert texts(updates[-1][1])[-1] == "Another go." and len(texts(updates[-1][1])) == OPEN
    assert services.store.messages(long_chat)[-1].content == "Another go."
    assert len(services.store.messages(long_chat)) == N


def test_page_reopened_while_a_reply_streams_follows_it_on_the_newest(page, services, long_chat,
                                                                     fake_ollama):
    fake_ollama.queue_reply(["Slow ", "answer."], delay=[0.3, 0.3])
    services.chat.send(long_chat, "question at the end", model=MODEL, user="owner")
    shown = page.on_open(long_chat, new_session(), request=request("page-2"))
    updates = list(page.on_follow(shown[0], request=request("page-2")))
    first_rows, last_rows = shown[1], updates[-1][1]
    # Once followed, the page's next on_follow (after "More chats…") starts no second one.
    assert list(page.on_follow(updates[-1][0], request=request("page-2"))) == \
        [(gr.skip(),) * 4]
    assert texts(first_rows)[-1] == "question at the end" or \
        texts(first_rows)[-2] == "question at the end"
    assert texts(last_rows)[-2:] == ["question at the end", "Slow answer."]
    assert number(texts(last_rows)[0]) == N + 2 - OPEN + 1
    # Loading earlier waits for the reply: while it streams the page says so.
    fake_ollama.queue_reply(["More."], delay=[1.0])
    sess = updates[-1][0]
    services.chat.send(long_chat, "one more", model=MODEL, user="owner")
    assert page.on_earlier(sess, request=request("page-2")) == (gr.skip(),) * 4


def test_page_export_after_a_partial_open_has_the_whole_chat(page, long_chat):
    sess = opened(page, long_chat)[0]
    path = page.on_export_markdown(sess, request=request())["value"]
    body = open(path, encoding="utf-8").read()
    assert "old message 1:" in body and f"old message {N}:" in body


def test_page_search_hit_opens_the_chat_at_that_old_message(page, long_chat):
    # "41" is not the last word, so it is matched whole (the last one also as a prefix).
    update, _note = page.on_search("message 41 words", request=request())
    value = next(v for label, v in update["choices"] if "[41]" in label and "@" in v)
    sess, rows, *_rest, earlier_btn, newer_btn = opened(page, value)
    numbers = [number(t) for t in texts(rows)]
    assert numbers[-2:] == [41, 42] and len(numbers) == 42  # the hit and its answer, last
    assert earlier_btn["visible"] is False and newer_btn["visible"] is True
    assert sess["last"] == 42


def test_page_versions_inside_a_window_read_the_shown_branch_and_keep_the_start(
        page, services, long_chat, fake_ollama):
    sess = opened(page, long_chat)[0]
    sess, rows, *_ = page.on_earlier(sess, request=request())
    start = sess["first"]
    row = next(i for i, r in enumerate(rows) if r["role"] == "user"
               and sess["index"][i] is not None)
    seq = sess["index"][row]
    fake_ollama.queue_reply("A new answer.")
    edit = gr.EditData(None, {"index": row, "value": "edited question",
                              "previous_value": rows[row]["content"]})
    list(page.on_edit(edit, sess, MODEL, "", 0.8, 0.9, 0, -1, 0, "auto", request=request()))
    # Reopened, the chat shows the newest OPEN messages of the new (shorter) branch.
    sess, rows, *_rest, earlier_btn, newer_btn = opened(page, long_chat)
    assert texts(rows)[-2:] == ["edited question", "A new answer."]
    assert len([s for s in sess["index"] if s is not None]) >= OPEN
    assert sess["first"] == seq + 1 - OPEN + 1 and earlier_btn["visible"] is True
    # Load earlier pages back along the shown branch down to the window start seen before.
    while sess["first"] is not None and sess["first"] > start:
        sess, rows, *_ = page.on_earlier(sess, request=request())
    first = sess["first"]
    # ‹ shows the old version with its 1,000-message branch, from the same window start.
    updates = list(page.on_turn_action(f"prev {seq} 1", sess, MODEL, "", 0.8, 0.9, 0, -1, 0,
                                       "auto", request=request()))
    sess, rows, _stats, _stop, _conv, _queue, earlier_btn, newer_btn = updates[-1]
    assert sess["first"] == first and number(texts(rows)[-1]) == N and sess["last"] is None
    assert newer_btn["visible"] is False and earlier_btn["visible"] is (first is not None)
    shown = [m.seq for m in services.store.messages(long_chat, first=first)]
    assert [s for s in dict.fromkeys(s for s in sess["index"] if s is not None)] == shown
    assert any('class="turn-version">1/2<' in (text_of(r) or "") for i, r in enumerate(rows)
               if sess["index"][i] is None)
    # Retry by row after all that: the stored answer at that row gets a new version.
    answer_row = max(i for i, s in enumerate(sess["index"]) if s is not None
                     and rows[i]["role"] == "assistant")
    answer_seq = sess["index"][answer_row]
    fake_ollama.queue_reply("Answered again.")
    updates = list(page.on_turn_action(f"retry {answer_seq} 2", sess, MODEL, "", 0.8, 0.9, 0,
                                       -1, 0, "auto", request=request()))
    assert texts(updates[-1][1])[-1] == "Answered again."
    last = services.store.messages(long_chat)[-1]
    assert last.seq == answer_seq == N and last.versions == 2
