"""Nothing typed is lost: a message sent while the page's reply streams waits, then goes.

``ChatPage`` handlers called as plain generators against the fake Ollama (no browser): the
first send's generator is the page's stream; a second ``on_send`` from the same page (the
same session hash) while it runs is queued, and the first generator, drained, sends it when
its reply completes.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from studio.config import Settings
from studio.services import build_services
from studio.ui.chat_handlers import QUEUE_LABEL, ChatPage
from studio.ui.chat_queue import FAILED, STOPPED
from studio.ui.chat_values import new_session
from tests.fakes.ollama_server import make_tokens

MODEL = "ollama:llama3.2:latest"
# The first reply takes about a second, so the page is surely mid-reply when the test
# sends again right after the first update (which comes with the first token).
SLOW = dict(delay=[0.0] + [0.2] * 5)


@pytest.fixture
def page(tmp_path, fake_ollama):
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "OLLAMA_HOST": fake_ollama.url}, dotenv_path=None)
    services = build_services(settings)
    yield ChatPage(services)
    services.store.close()


def request(session: str = "page-1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, username=None, client=None)


def send(page, text, sess=None, *, session="page-1", files=()):
    """on_send as the page calls it; returns the generator."""
    return page.on_send(text, list(files), sess or new_session(), MODEL, "",
                        False, 0.8, 0.9, 0, -1, 0, "auto", request=request(session))


def mid_reply(page, fake_ollama, tokens=None, **plan):
    """Send "first question" and take its first update: (the page's stream, its session)."""
    fake_ollama.queue_reply(tokens or make_tokens(6), **(plan or SLOW))
    first = send(page, "first question")
    sess = next(first)[0]
    # The first update may come before the request reached the model on a busy box.
    fake_ollama.wait_for_request("/api/chat", timeout=10)
    return first, sess


def queue_of(update) -> dict:
    """The queue's update in a handler's update (found by its label: its position differs
    between send, retry and new)."""
    return next(u for u in update if isinstance(u, dict) and u.get("label") == QUEUE_LABEL)


def chips(update) -> list[str]:
    """The queue's chip labels in an update."""
    return [label for label, _id in queue_of(update)["choices"]]


def stored_turns(page, sess) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in page.chat.turns(sess["chat_id"], user="owner")]


def test_queue_message_sent_during_a_reply_waits_then_goes_in_order(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama)
    fake_ollama.queue_reply("Second answer.")
    fake_ollama.queue_reply("Third answer.")
    for text in ("second question", "third question"):
        updates = list(send(page, text, sess))
        assert len(updates) == 1 and updates[0][:6] == (gr.skip(),) * 6
    assert chips(updates[0]) == ["Queued: second question ✕", "Queued: third question ✕"]
    assert len(fake_ollama.requests_to("/api/chat")) == 1  # nothing sent yet

    rest = list(first)
    assert chips(rest[-1]) == []
    assert stored_turns(page, sess) == [
        ("user", "first question"), ("assistant", "".join(make_tokens(6))),
        ("user", "second question"), ("assistant", "Second answer."),
        ("user", "third question"), ("assistant", "Third answer.")]
    # Each queued message went with the answers before it in its prompt.
    prompts = [r.json["messages"] for r in fake_ollama.requests_to("/api/chat")]
    assert [m[-1]["content"] for m in prompts] == ["first question", "second question",
                                                   "third question"]
    assert prompts[2][-2]["content"] == "Second answer."


def test_queue_taken_back_goes_into_the_box_and_is_never_sent(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama)
    queued = list(send(page, "second thoughts", sess))[0]
    item_id = queue_of(queued)["choices"][0][1]

    queue, box, attached = page.on_take_back(item_id, "", None, request=request())
    assert (box, attached) == ("second thoughts", None)
    assert queue["visible"] is False and queue["choices"] == []
    list(first)
    assert len(fake_ollama.requests_to("/api/chat")) == 1
    assert [c for _r, c in stored_turns(page, sess)][0::2] == ["first question"]


def test_queue_taken_back_keeps_what_the_box_holds(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama)
    item_id = queue_of(list(send(page, "later", sess))[0])["choices"][0][1]
    _queue, box, _attached = page.on_take_back(item_id, "typing now", None, request=request())
    assert box == "typing now\n\nlater"
    list(first)


def test_queue_taken_back_puts_its_pictures_after_those_attached(page, fake_ollama, tmp_path):
    """The box is text, the pictures sit under it (ui/chat.py): a queued message with a
    picture comes back as its text in the box and its picture after the one attached."""
    from PIL import Image

    first, sess = mid_reply(page, fake_ollama)
    queued_pic, attached_pic = tmp_path / "queued.png", tmp_path / "attached.png"
    for path in (queued_pic, attached_pic):
        Image.new("RGB", (4, 4), (9, 9, 9)).save(path)
    queued = page.on_send("look", [str(queued_pic)], sess, "ollama:llava:latest", "", False,
                          0.8, 0.9, 0, -1, 0, "auto", request=request())
    item_id = queue_of(list(queued)[0])["choices"][0][1]
    _queue, box, attached = page.on_take_back(item_id, "", [str(attached_pic)],
                                              request=request())
    assert (box, attached) == ("look", [str(attached_pic), str(queued_pic)])
    list(first)
    assert len(fake_ollama.requests_to("/api/chat")) == 1


def test_queue_is_held_when_the_reply_fails(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama, error_after=2, **SLOW)
    list(send(page, "after a failure", sess))
    last = list(first)[-1]
    assert chips(last) == [f"Not sent ({FAILED}): after a failure ✕"]
    assert len(fake_ollama.requests_to("/api/chat")) == 1

    # The page is free again: a new message goes at once; the held one stays held.
    fake_ollama.queue_reply("Fresh answer.")
    updates = list(send(page, "a new question", sess))
    assert chips(updates[-1]) == [f"Not sent ({FAILED}): after a failure ✕"]
    assert stored_turns(page, sess)[-1] == ("assistant", "Fresh answer.")
    assert len(fake_ollama.requests_to("/api/chat")) == 2


def test_queue_is_held_when_the_person_stops_the_reply(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama, make_tokens(30), delay=0.1)
    list(send(page, "keep me", sess))
    page.on_stop(sess, request=request())
    last = list(first)[-1]
    assert chips(last) == [f"Not sent ({STOPPED}): keep me ✕"]
    assert len(fake_ollama.requests_to("/api/chat")) == 1


def test_queue_refuses_a_message_that_could_never_go(page, fake_ollama):
    page.chat._max_chars = 20  # as STUDIO_MAX_MESSAGE_CHARS=20 would
    first, sess = mid_reply(page, fake_ollama)
    with pytest.raises(gr.Error, match="the limit is 20"):
        list(send(page, "x" * 40, sess))  # the page then puts it back into the box
    assert page.queues.items("page-1") == []
    list(first)


def test_queue_belongs_to_one_page(page, fake_ollama):
    first, _sess = mid_reply(page, fake_ollama)
    fake_ollama.queue_reply("Other page's answer.")
    # Another page (another tab) starts its own chat at once.
    other = list(send(page, "from another tab", session="page-2"))
    assert stored_turns(page, other[-1][0])[-1] == ("assistant", "Other page's answer.")
    assert chips(other[-1]) == []
    list(first)


def test_queue_is_held_when_the_page_stops_following(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama)
    list(send(page, "still here", sess))
    live = page.chat.open(sess["chat_id"], user="owner").live
    first.close()  # the page closed: Gradio ends the handler; the reply goes on
    [item] = page.queues.items("page-1")
    assert item.held and item.message["text"] == "still here"
    # The page is free: sending again doesn't queue behind a reply nobody follows.
    assert page.queues.begin("page-1", "token")
    assert live.settled.wait(10)


def test_queue_is_held_when_the_page_opens_another_chat(page, fake_ollama):
    first, sess = mid_reply(page, fake_ollama)
    list(send(page, "meant for the first chat", sess))
    live = page.chat.open(sess["chat_id"], user="owner").live
    new = page.on_new(False, sess, request=request())
    assert chips(new) == ["Not sent (you opened another chat): meant for the first chat ✕"]
    list(first)
    assert live.settled.wait(10)
    assert len(fake_ollama.requests_to("/api/chat")) == 1


def test_queue_refused_when_its_turn_comes_is_held_with_the_reason_and_comes_back(
        page, fake_ollama, monkeypatch):
    from studio.access.limits import Limits

    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: warnings.append(message))
    # One chat message a minute: the first goes, the queued ones are refused when their turn
    # comes (as when the budget or the rate limit is reached while the reply before streams).
    page.chat._limits = Limits(chat_per_minute=1)
    first, sess = mid_reply(page, fake_ollama)
    list(send(page, "second question", sess))
    list(send(page, "third question", sess))
    last = list(first)[-1]

    [refusal] = warnings
    assert refusal.startswith("A queued message was not sent: You have sent 1 chat messages "
                              "in the last minute")
    reason = refusal.removeprefix("A queued message was not sent: ")
    # Both stay as held chips, in order: the refused one with the refusal's sentence, the
    # one behind it held too (it would otherwise say "Queued" and never go by itself).
    assert chips(last) == [f"Not sent ({reason}): second question ✕",
                           "Not sent (a message before it was not sent): third question ✕"]
    assert len(fake_ollama.requests_to("/api/chat")) == 1
    assert [c for r, c in stored_turns(page, sess) if r == "user"] == ["first question"]

    # Each comes back into the box when clicked; nothing is lost.
    box = ""
    for label in ("second question", "third question"):
        queue, box, _attached = page.on_take_back(page.queues.items("page-1")[0].id, box,
                                                  None, request=request())
        assert label in box
    assert box == "second question\n\nthird question"
    assert queue["visible"] is False and page.queues.items("page-1") == []
