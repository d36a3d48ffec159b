"""Conversation titles written by a small local model (STUDIO_TITLE_MODEL), through the chat
path against the fake Ollama: after the first reply, in the background, never over a title
the person chose, accounted like other local work, and a failure leaves the first words."""

from __future__ import annotations

import logging
import queue

import pytest

from studio.chat.conversations import TITLE_INSTRUCTIONS
from studio.chat.replies import ReplyManager
from studio.chat.router import Router
from studio.chat.service import ChatService
from studio.chat.streams import ChatStreams, record_usage
from studio.chat.titles import TitleWriter
from studio.clients.ollama import OllamaClient
from studio.config import Settings
from studio.costs.accounting import Accounting
from studio.models.gpu_coordinator import ModelsInUse
from studio.store.usage import UsageStore

LOCAL = "ollama:llama3.2:latest"
QUESTION = "how do I keep my sourdough starter alive while on holiday"


class RecordingTitles(TitleWriter):
    """The real writer; each title reply it starts is handed to the test to wait on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started: queue.Queue = queue.Queue()

    def after_first_reply(self, *args, **kwargs):
        reply = super().after_first_reply(*args, **kwargs)
        self.started.put(reply)
        return reply

    def next_title_reply(self):
        reply = self.started.get(timeout=10)
        assert reply is not None and reply.settled.wait(10)
        return reply


@pytest.fixture
def ollama(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=10)
    yield client
    client.close()


def make_chat(store, tmp_path, ollama, title_model="llama3.2:latest", fallbacks=None):
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path)}, dotenv_path=None)
    router = Router({"ollama": ollama}, fallbacks=fallbacks)
    accounting = Accounting(UsageStore(store), settings, power_reader=lambda: None)
    replies = ReplyManager(ChatStreams(router, in_use=ModelsInUse()).open, store,
                           flush_every=0.01, on_settled=record_usage(accounting))
    titles = RecordingTitles(replies, store, title_model)
    chat = ChatService(store, replies, router, uploads_dir=tmp_path / "uploads",
                       exports_dir=tmp_path / "exports", max_message_chars=10_000,
                       supports_images=lambda model: False, titles=titles)
    return chat, titles


def first_turn(chat, fake_ollama, title_reply="Keeping a starter alive", **queued):
    fake_ollama.queue_reply("Feed it and put it in the fridge.")
    fake_ollama.queue_reply(title_reply, **queued)
    started = chat.send(None, QUESTION, model=LOCAL, user="owner")
    assert started.reply.settled.wait(10)
    return started


def test_titles_a_new_chat_after_its_first_reply(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    started = first_turn(chat, fake_ollama, title_reply=['Title: "Keeping', " a starter",
                                                         ' alive."'])
    titles.next_title_reply()

    conv = store.get_conversation(started.chat_id)
    assert (conv.title, conv.title_source) == ("Keeping a starter alive", "model")
    asked = fake_ollama.requests_to("/api/chat")[-1].json
    assert asked["model"] == "llama3.2:latest" and asked["think"] is False
    assert asked["messages"][0] == {"role": "system", "content": TITLE_INSTRUCTIONS}
    assert QUESTION in asked["messages"][1]["content"]
    assert "Feed it and put it in the fridge." in asked["messages"][1]["content"]
    # Only the chat's own messages are stored: the title's exchange is not a turn.
    assert [m.role for m in store.messages(started.chat_id)] == ["user", "assistant"]


def test_titles_never_hold_up_the_reply(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    # The title model is slow; the chat's reply is complete and stored before it answers.
    started = first_turn(chat, fake_ollama, title_reply=["Slow", " title"], delay=0.5)

    assert started.reply.snapshot().status == "complete"
    assert store.get_conversation(started.chat_id).title == QUESTION  # the first words
    titles.next_title_reply()
    assert store.get_conversation(started.chat_id).title == "Slow title"


def test_titles_never_replace_a_title_the_person_chose(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    started = first_turn(chat, fake_ollama, title_reply=["Model", " title"], delay=0.3)
    chat.rename(started.chat_id, "My holiday starter", user="owner")  # while it is written
    titles.next_title_reply()

    conv = store.get_conversation(started.chat_id)
    assert (conv.title, conv.title_source) == ("My holiday starter", "person")


def test_titles_only_for_a_chat_s_first_reply(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    started = first_turn(chat, fake_ollama)
    titles.next_title_reply()
    fake_ollama.queue_reply("Second answer")
    second = chat.send(started.chat_id, "and in summer?", model=LOCAL, user="owner")
    assert second.reply.settled.wait(10)

    assert titles.started.empty()
    assert len(fake_ollama.requests_to("/api/chat")) == 3


def test_titles_are_accounted_as_local_work(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    first_turn(chat, fake_ollama)
    titles.next_title_reply()

    rows = store.db.execute("SELECT backend, model, via, conversation_id FROM usage "
                            "ORDER BY id").fetchall()
    assert [(r[0], r[2]) for r in rows] == [("ollama", ""), ("ollama", "title")]
    assert rows[1][3] is None  # not a turn of the chat


def test_titles_failure_leaves_the_first_words_and_logs_one_line(store, tmp_path, ollama,
                                                                 fake_ollama, caplog):
    chat, titles = make_chat(store, tmp_path, ollama, title_model="tiny-missing:1b")
    fake_ollama.queue_reply("Feed it and put it in the fridge.")
    caplog.set_level(logging.INFO, logger="studio.chat.titles")
    started = chat.send(None, "keep my starter alive", model=LOCAL, user="owner")
    assert started.reply.settled.wait(10)
    reply = titles.next_title_reply()

    assert reply.snapshot().status == "error"
    conv = store.get_conversation(started.chat_id)
    assert (conv.title, conv.title_source) == ("keep my starter alive", "words")
    lines = [r for r in caplog.records if r.name == "studio.chat.titles"]
    assert len(lines) == 1 and "first words stay" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_titles_never_fall_back_to_another_model(store, tmp_path, ollama, fake_ollama):
    # STUDIO_FALLBACKS may send a failing chat model elsewhere (even to the cloud); a title
    # asks for its model only.
    chat, titles = make_chat(store, tmp_path, ollama, title_model="tiny-missing:1b",
                             fallbacks={"ollama:tiny-missing:1b": ("ollama:llama3.2:latest",)})
    fake_ollama.queue_reply("An answer.")
    started = chat.send(None, "a question", model=LOCAL, user="owner")
    assert started.reply.settled.wait(10)
    titles.next_title_reply()

    assert [r.json["model"] for r in fake_ollama.requests_to("/api/chat")] == [
        "llama3.2:latest", "tiny-missing:1b"]
    assert store.get_conversation(started.chat_id).title == "a question"


def test_titles_off_without_a_model(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama, title_model="")
    fake_ollama.queue_reply("An answer.")
    started = chat.send(None, "a question", model=LOCAL, user="owner")
    assert started.reply.settled.wait(10)

    assert titles.started.get(timeout=10) is None
    assert len(fake_ollama.requests_to("/api/chat")) == 1
    assert store.get_conversation(started.chat_id).title == "a question"


def test_titles_not_for_an_incognito_chat(store, tmp_path, ollama, fake_ollama):
    chat, titles = make_chat(store, tmp_path, ollama)
    fake_ollama.queue_reply("An answer.")
    started = chat.send(None, "a secret question", model=LOCAL, user="owner", incognito=True)
    assert started.reply.settled.wait(10)

    assert titles.started.empty()
    assert len(fake_ollama.requests_to("/api/chat")) == 1
