"""studio.chat.service: the chat verbs at the service level, against the fake Ollama (and
the fake OpenRouter for budgets) through the official clients. No browser, no subprocess:
a refusal must leave the database exactly as it was, and each user sees only their own."""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from studio.chat.models import ChatModels
from studio.chat.replies import ReplyManager, update_gap
from studio.chat.router import Router
from studio.chat.service import ChatService
from studio.chat.streams import ChatStreams
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.costs.accounting import Accounting
from studio.costs.budget import Budget
from studio.errors import BudgetExceeded, InvalidInput, NotFound, StorageFailed
from studio.events import ChatOptions, Usage
from studio.models.gpu_coordinator import ModelsInUse
from studio.store.db import storage_fault
from studio.store.usage import UsageStore
from tests.fakes.ollama_server import make_tokens
from tests.fakes.openrouter_server import DEFAULT_KEY

LOCAL = "ollama:llama3.2:latest"
VISION = "ollama:llava:latest"
CLOUD = "openrouter:openai/gpt-4o-mini"


@pytest.fixture
def ollama(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=10)
    yield client
    client.close()


def make_service(store, tmp_path, ollama, *, openrouter=None, budget=None, fallbacks=None,
                 max_chars=1000):
    router = Router({"ollama": ollama,
                     "openrouter": openrouter or OpenRouterClient("", "http://127.0.0.1:9")},
                    budget=budget, fallbacks=fallbacks)
    replies = ReplyManager(ChatStreams(router, in_use=ModelsInUse()).open, store,
                           flush_every=0.01)
    return ChatService(store, replies, router, uploads_dir=tmp_path / "uploads",
                       exports_dir=tmp_path / "exports", max_message_chars=max_chars,
                       supports_images=ChatModels(ollama).supports_images, budget=budget)


@pytest.fixture
def chat(store, tmp_path, ollama):
    return make_service(store, tmp_path, ollama)


def done(started):
    """Wait until the reply is over and stored; return its last snapshot."""
    assert started.reply.settled.wait(10)
    return started.reply.snapshot()


def database(store) -> list:
    """Everything a chat writes, to compare before and after a refusal."""
    return ([tuple(r) for r in store.db.execute("SELECT * FROM conversations ORDER BY id")]
            + [tuple(r) for r in store.db.execute("SELECT * FROM messages ORDER BY id")])


def picture(tmp_path, name="cat.png") -> str:
    path = tmp_path / name
    Image.new("RGB", (8, 8), "red").save(path)
    return str(path)


def a_chat_of_two_turns(chat, fake_ollama):
    fake_ollama.queue_reply("first answer")
    first = chat.send(None, "first question", model=LOCAL, user="owner")
    done(first)
    fake_ollama.queue_reply("second answer")
    done(chat.send(first.chat_id, "second question", model=LOCAL, user="owner"))
    return first.chat_id


# -- send ------------------------------------------------------------------------------------


def test_chat_send_stores_the_turn_and_the_streamed_reply(chat, store, fake_ollama):
    fake_ollama.queue_reply("Hello there friend")
    started = chat.send(None, "Hi!\nmore", model=LOCAL, system_prompt="Be brief.",
                        options=ChatOptions(temperature=0.1), user="owner")
    assert started.created and done(started).status == "complete"
    conv = store.get_conversation(started.chat_id)
    assert (conv.title, conv.model, conv.backend, conv.system_prompt, conv.user) == (
        "Hi!", "llama3.2:latest", "ollama", "Be brief.", "owner")
    stored = store.messages(started.chat_id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "Hi!\nmore", "complete"), ("assistant", "Hello there friend", "complete")]
    sent = fake_ollama.requests_to("/api/chat")[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi!\nmore"}]
    assert sent["options"]["temperature"] == 0.1


def test_chat_send_in_an_existing_chat_sends_the_history(chat, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question")]
    assert [t.content for t in chat.turns(chat_id, user="owner")] == [
        "first question", "first answer", "second question", "second answer"]


def test_chat_send_attaches_images_for_a_vision_model(chat, fake_ollama, tmp_path):
    started = chat.send(None, "what is this?", [picture(tmp_path)], model=VISION, user="owner")
    done(started)
    [user_turn] = [t for t in chat.turns(started.chat_id, user="owner") if t.role == "user"]
    [saved] = user_turn.images
    assert Path(saved).parent == tmp_path / "uploads" / started.chat_id
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"][-1]
    assert sent["images"] and len(sent["images"]) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(text="hi", model=""), "No model is selected"),
    (dict(text="hi", model="llama3.2"), "not a model from the list"),
    (dict(text="x" * 1001, model=LOCAL), "1,001 characters; the limit is 1,000"),
    (dict(text="look", model=LOCAL, image=True), "llama3.2:latest can't read images"),
    (dict(text="read", model=VISION, file="notes.txt"), "notes.txt is not an image"),
    (dict(text="  ", model=LOCAL), "The message is empty"),
])
def test_chat_send_refusals_write_nothing(chat, store, tmp_path, kwargs, message):
    files = []
    if kwargs.pop("image", False):
        files = [picture(tmp_path)]
    if name := kwargs.pop("file", None):
        (tmp_path / name).write_text("hello")
        files = [str(tmp_path / name)]
    with pytest.raises(InvalidInput, match=message):
        chat.send(None, kwargs["text"], files, model=kwargs["model"], user="owner")
    assert database(store) == []
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_chat_send_on_a_full_disk_writes_nothing_not_even_the_new_chat(store, tmp_path, ollama):
    from tests.test_store import fill_disk

    chat = make_service(store, tmp_path, ollama, max_chars=100_000)
    fill_disk(store)
    with pytest.raises(StorageFailed, match="is full"):
        chat.send(None, "a long first question " * 2000, model=LOCAL, user="owner")
    assert database(store) == []


def full_disk_for_replies(store, monkeypatch):
    """The next reply's placeholder can't be written, as on a disk that just filled up."""
    def add_message(*args, **kwargs):
        raise storage_fault(sqlite3.OperationalError("database or disk is full"))
    monkeypatch.setattr(store, "add_message", add_message)


def full_uploads_disk(monkeypatch, uploads_dir: Path) -> None:
    """Copies into ``uploads_dir`` fail part way with ENOSPC, as on a disk that just filled
    up; every other copy (Gradio's own uploads) goes on as usual."""
    real = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        if Path(dst).resolve().is_relative_to(Path(uploads_dir).resolve()):
            Path(dst).write_bytes(b"\x89PNG half")  # what fitted before the disk filled
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)


@pytest.mark.parametrize("earlier", [False, True], ids=["new-chat", "second-turn"])
def test_chat_send_with_a_picture_on_a_full_disk_is_the_disk_sentence_and_writes_nothing(
        store, tmp_path, fake_ollama, ollama, monkeypatch, earlier):
    chat = make_service(store, tmp_path, ollama)
    chat_id = None
    if earlier:
        fake_ollama.queue_reply("first answer")
        first = chat.send(None, "first question", model=VISION, user="owner")
        done(first)
        chat_id = first.chat_id
    before = database(store)
    full_uploads_disk(monkeypatch, tmp_path / "uploads")
    with pytest.raises(StorageFailed) as failure:
        chat.send(chat_id, "what is this?", [picture(tmp_path)], model=VISION, user="owner")
    assert str(failure.value) == (
        "The disk holding the studio's data (STUDIO_DATA_DIR) is full, so this wasn't saved. "
        "Free some space there and try again; what you typed is still on the page.")
    assert database(store) == before
    assert not [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()]  # no half copy
    assert len(fake_ollama.requests_to("/api/chat")) == (1 if earlier else 0)


def test_chat_send_asks_the_model_while_its_turn_is_written(chat, store, fake_ollama):
    """The model's request goes out before the turn is written (here another writer holds
    the store meanwhile), under the chat id the turn then gets; the reply, over before its
    turn was written, is stored once it is."""
    fake_ollama.queue_reply("Hello there")
    heard, result = [], []
    with store._write_lock:  # another writer, for as long as this block
        sender = threading.Thread(target=lambda: result.append(
            chat.send(None, "hi", model=LOCAL, user="owner", on_started=heard.append)))
        sender.start()
        deadline = time.monotonic() + 10
        while not fake_ollama.requests_to("/api/chat") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake_ollama.requests_to("/api/chat") and sender.is_alive()
        assert heard and store.get_conversation(heard[0].chat_id) is None
    sender.join(10)
    started = result[0]
    assert (started.chat_id, started.reply) == (heard[0].chat_id, heard[0].reply)
    assert done(started).status == "complete"
    assert [(m.role, m.content) for m in store.messages(started.chat_id)] == [
        ("user", "hi"), ("assistant", "Hello there")]


def test_chat_send_whose_turn_cannot_be_written_abandons_its_reply(chat, store, fake_ollama,
                                                                   monkeypatch):
    """The reply already asked for stops with the disk's sentence and is stored nowhere;
    the send raises it (the page keeps the message)."""
    fake_ollama.queue_reply(make_tokens(50), delay=0.02)
    heard = []
    full_disk_for_replies(store, monkeypatch)
    with pytest.raises(StorageFailed) as failure:
        chat.send(None, "hi", model=LOCAL, user="owner", on_started=heard.append)
    reply = heard[0].reply
    assert reply.settled.wait(10)
    snap = reply.snapshot()
    assert snap.status == "error" and snap.error == str(failure.value)
    assert database(store) == []


def test_chat_a_turn_whose_commit_fails_after_its_whole_answer_goes_nowhere(
        chat, store, fake_ollama, monkeypatch):
    """A fast model may finish before the write fails (in WAL mode SQLite reports a full
    disk at COMMIT): the answer the page saw whole is not "complete", nothing is stored,
    and the chat that never was is not titled."""
    import contextlib

    class Titles:
        asked: list = []

        def after_first_reply(self, *args, **kwargs):
            self.asked.append(args)

    chat._titles = Titles()
    fake_ollama.queue_reply("Hello there")
    heard = []
    real = store.transaction

    @contextlib.contextmanager
    def commit_fails():
        with real():
            yield
            assert heard[0].reply.ended.wait(10)  # the whole answer first
            raise storage_fault(sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(store, "transaction", commit_fails)
    with pytest.raises(StorageFailed) as failure:
        chat.send(None, "hi", model=LOCAL, user="owner", on_started=heard.append)
    reply = heard[0].reply
    assert reply.settled.wait(10)
    snap = reply.snapshot()
    assert snap.text == "Hello there"
    assert (snap.status, snap.error) == ("error", str(failure.value))
    assert database(store) == [] and Titles.asked == []


def test_chat_an_abandoned_reply_frees_its_reply_slot(chat, store, fake_ollama, monkeypatch):
    """One reply at a time (STUDIO_LIMIT_CONCURRENT_REPLIES=1): a send whose turn could not
    be written leaves the slot free for the next message."""
    from studio.access.limits import Limits

    chat._limits = Limits(concurrent_replies=1)
    fake_ollama.queue_reply(make_tokens(20), delay=0.02)
    heard = []
    with monkeypatch.context() as m:
        full_disk_for_replies(store, m)
        with pytest.raises(StorageFailed):
            chat.send(None, "hi", model=LOCAL, user="owner", on_started=heard.append)
    assert heard[0].reply.settled.wait(10)
    fake_ollama.queue_reply("fine")
    assert done(chat.send(None, "again", model=LOCAL, user="owner")).text == "fine"


@pytest.mark.parametrize("verb", ["retry", "edit"])
def test_chat_retry_and_edit_on_a_full_disk_keep_the_old_turns(chat, store, fake_ollama,
                                                               monkeypatch, verb):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    before = database(store)
    full_disk_for_replies(store, monkeypatch)
    with pytest.raises(StorageFailed):
        if verb == "retry":
            chat.retry(chat_id, model=LOCAL, user="owner")
        else:
            chat.edit(chat_id, store.messages(chat_id)[0].seq, "changed", model=LOCAL,
                      user="owner")
    assert database(store) == before


# -- retry and edit ----------------------------------------------------------------------------


def shown(chat, chat_id, user="owner") -> list[tuple[str, int, int]]:
    """The branch a chat shows: (text, version, versions) per turn."""
    return [(t.content, t.version, t.versions) for t in chat.turns(chat_id, user=user)]


def test_chat_retry_keeps_every_answer_as_a_version(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    for text in ("a better answer", "the best answer"):
        fake_ollama.queue_reply(text)
        done(chat.retry(chat_id, model=LOCAL, user="owner"))
    assert shown(chat, chat_id) == [("first question", 1, 1), ("first answer", 1, 1),
                                    ("second question", 1, 1), ("the best answer", 3, 3)]
    # The model was asked the question with the branch shown, never an earlier answer to it.
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == ["first question", "first answer", "second question"]
    chat.show_version(chat_id, 4, -1, user="owner")
    assert shown(chat, chat_id)[-1] == ("a better answer", 2, 3)
    chat.show_version(chat_id, 4, -1, user="owner")
    chat.show_version(chat_id, 4, -1, user="owner")  # already the first: stays there
    assert shown(chat, chat_id)[-1] == ("second answer", 1, 3)


def test_chat_the_version_shown_is_kept_and_sent_as_context(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    fake_ollama.queue_reply("another first answer")
    done(chat.retry(chat_id, seq=2, model=LOCAL, user="owner"))  # ↻ on an old turn
    # A new answer to the first question starts a branch of its own: no later turns yet.
    assert shown(chat, chat_id) == [("first question", 1, 1), ("another first answer", 2, 2)]
    chat.show_version(chat_id, 2, -1, user="owner")
    # Paging back brings the earlier answer's later turns with it, and a reload (the
    # chat opened again) shows the same.
    assert [t.content for t in chat.open(chat_id, user="owner").turns] == [
        "first question", "first answer", "second question", "second answer"]
    fake_ollama.queue_reply("third answer")
    done(chat.send(chat_id, "third question", model=LOCAL, user="owner"))
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == ["first question", "first answer", "second question",
                                            "second answer", "third question"]
    chat.show_version(chat_id, 2, +1, user="owner")
    assert shown(chat, chat_id) == [("first question", 1, 1), ("another first answer", 2, 2)]


def test_chat_edit_keeps_the_earlier_message_with_its_branch(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    first_seq = store.messages(chat_id)[0].seq
    fake_ollama.queue_reply("edited answer")
    done(chat.edit(chat_id, first_seq, "an edited question", model=LOCAL, user="owner"))
    assert shown(chat, chat_id) == [("an edited question", 2, 2), ("edited answer", 1, 1)]
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == ["an edited question"]
    chat.show_version(chat_id, first_seq, -1, user="owner")
    assert shown(chat, chat_id) == [("first question", 1, 2), ("first answer", 1, 1),
                                    ("second question", 1, 1), ("second answer", 1, 1)]


def test_chat_each_version_is_accounted_once(store, tmp_path, ollama, fake_ollama, settings):
    from studio.chat.streams import record_usage

    chat = make_service(store, tmp_path, ollama)
    chat._replies._on_settled = record_usage(Accounting(UsageStore(store), settings))
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    fake_ollama.queue_reply("again")
    done(chat.retry(chat_id, model=LOCAL, user="owner"))
    chat.show_version(chat_id, 4, -1, user="owner")
    rows = list(store.db.execute("SELECT message_id FROM usage ORDER BY id"))
    answers = [r[0] for r in store.db.execute(
        "SELECT id FROM messages WHERE role = 'assistant' ORDER BY id")]
    assert [r[0] for r in rows] == answers and len(answers) == 3


def test_chat_export_has_the_branch_shown(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    fake_ollama.queue_reply("a better answer")
    done(chat.retry(chat_id, model=LOCAL, user="owner"))
    text = chat.export(chat_id, "md", user="owner").read_text()
    assert "a better answer" in text and "second answer" not in text
    assert "version 2 of 2" in text
    data = json.loads(chat.export(chat_id, "json", user="owner").read_text())
    assert [(m["content"], m["version"], m["versions"]) for m in data["messages"]][-1] == (
        "a better answer", 2, 2)


def test_chat_paging_is_refused_while_a_reply_streams(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    fake_ollama.queue_reply("again")
    done(chat.retry(chat_id, model=LOCAL, user="owner"))
    fake_ollama.queue_reply(["slow "] * 200, delay=0.05)
    started = chat.send(chat_id, "third question", model=LOCAL, user="owner")
    try:
        with pytest.raises(InvalidInput, match="still being written"):
            chat.show_version(chat_id, 4, -1, user="owner")
    finally:
        chat.stop(chat_id, user="owner")
        done(started)


def test_chat_incognito_retry_replaces_the_answer(chat, fake_ollama):
    fake_ollama.queue_reply("first")
    started = chat.send(None, "q", model=LOCAL, user="owner", incognito=True)
    done(started)
    fake_ollama.queue_reply("second")
    done(chat.retry(started.chat_id, model=LOCAL, user="owner"))
    assert shown(chat, started.chat_id) == [("q", 1, 1), ("second", 1, 1)]


@pytest.mark.parametrize("model, text, error", [
    ("", "an edit", "No model is selected"),
    ("ollama", "an edit", "not a model from the list"),
    (LOCAL, "x" * 1001, "the limit is 1,000"),
])
def test_chat_a_refused_edit_changes_nothing(chat, store, fake_ollama, model, text, error):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    before = database(store)
    with pytest.raises(InvalidInput, match=error):
        chat.edit(chat_id, store.messages(chat_id)[0].seq, text, model=model, user="owner")
    assert database(store) == before


@pytest.mark.parametrize("model, error", [("", "No model is selected"),
                                          ("comfyui:x", "not a model from the list")])
def test_chat_a_refused_retry_changes_nothing(chat, store, fake_ollama, model, error):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    before = database(store)
    with pytest.raises(InvalidInput, match=error):
        chat.retry(chat_id, model=model, user="owner")
    assert database(store) == before


def test_chat_retry_of_an_image_turn_on_a_text_model_changes_nothing(chat, store, fake_ollama,
                                                                     tmp_path):
    done(started := chat.send(None, "what is it", [picture(tmp_path)], model=VISION,
                              user="owner"))
    before = database(store)
    with pytest.raises(InvalidInput, match="can't read images"):
        chat.retry(started.chat_id, model=LOCAL, user="owner")
    assert database(store) == before


def test_chat_nothing_to_retry_or_edit_is_none(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    answer_seq = store.messages(chat_id)[1].seq
    assert chat.retry(None, model=LOCAL, user="owner") is None
    assert chat.edit(chat_id, answer_seq, "not mine", model=LOCAL, user="owner") is None


# -- a reply still streaming -------------------------------------------------------------------


def test_chat_refuses_new_turns_while_a_reply_streams_and_stop_keeps_it(chat, store,
                                                                       fake_ollama):
    fake_ollama.queue_reply(fake_ollama.make_tokens(200), delay=0.02)
    started = chat.send(None, "tell me a story", model=LOCAL, user="owner")
    fake_ollama.wait_for_request("/api/chat")
    started.reply.wait_until(lambda: started.reply.text_parts, 5)
    before = len(store.messages(started.chat_id))
    for call in (lambda: chat.send(started.chat_id, "and?", model=LOCAL, user="owner"),
                 lambda: chat.retry(started.chat_id, model=LOCAL, user="owner"),
                 lambda: chat.edit(started.chat_id, 1, "x", model=LOCAL, user="owner")):
        with pytest.raises(InvalidInput, match="still being written"):
            call()
    assert chat.stop(started.chat_id, user="owner")
    snap = done(started)
    assert snap.status == "partial" and snap.text
    stored = store.messages(started.chat_id)
    assert len(stored) == before and stored[-1].content == snap.text
    assert stored[-1].status == "partial"


# -- budget --------------------------------------------------------------------------------------


def over_budget(store, user="owner"):
    """A $0.01 daily cap that is already used up."""
    ledger = UsageStore(store)
    settings = Settings(budget_daily_usd=0.01)
    Accounting(ledger, settings, power_reader=lambda: None).record_chat(
        user, "openrouter", "openai/gpt-4o-mini", Usage(cost_usd=0.02), 1.0)
    return Budget(ledger, settings)


def test_chat_a_budget_cap_refuses_before_anything_is_written(store, tmp_path, ollama,
                                                             fake_openrouter, fake_ollama):
    chat = make_service(store, tmp_path, ollama, budget=over_budget(store),
                        openrouter=OpenRouterClient(DEFAULT_KEY, fake_openrouter.url))
    local = a_chat_of_two_turns(chat, fake_ollama)
    before = database(store)
    with pytest.raises(BudgetExceeded, match="daily cloud budget"):
        chat.send(None, "hi", model=CLOUD, user="owner")
    with pytest.raises(BudgetExceeded):
        chat.edit(local, 1, "hi", model=CLOUD, user="owner")
    with pytest.raises(BudgetExceeded):
        chat.retry(local, model=CLOUD, user="owner")
    assert database(store) == before
    assert fake_openrouter.chat_requests == []


def test_chat_over_budget_with_a_fallback_answers_locally(store, tmp_path, ollama,
                                                         fake_openrouter, fake_ollama):
    chat = make_service(store, tmp_path, ollama, budget=over_budget(store),
                        openrouter=OpenRouterClient(DEFAULT_KEY, fake_openrouter.url),
                        fallbacks={CLOUD: [LOCAL]})
    fake_ollama.queue_reply("local answer")
    snap = done(chat.send(None, "hi", model=CLOUD, user="owner"))
    assert snap.text == "local answer" and snap.backend == "ollama"
    assert any("Switched to" in n for n in snap.notices)


# -- incognito -----------------------------------------------------------------------------------


def test_chat_incognito_keeps_nothing_in_the_database(chat, store, fake_ollama, tmp_path):
    fake_ollama.queue_reply("first answer")
    first = chat.send(None, "secret", [picture(tmp_path)], model=VISION, user="owner",
                      incognito=True)
    done(first)
    assert not first.created
    fake_ollama.queue_reply("second answer")
    done(chat.send(first.chat_id, "more", model=LOCAL, user="owner"))
    assert database(store) == []
    assert [t.content for t in chat.turns(first.chat_id, user="owner")] == [
        "secret", "first answer", "more", "second answer"]
    sent = fake_ollama.requests_to("/api/chat")[-1].json["messages"]
    assert [m["content"] for m in sent] == ["secret", "first answer", "more"]
    uploads = tmp_path / "uploads" / first.chat_id
    assert uploads.is_dir()
    chat.end(first.chat_id)
    assert not uploads.exists()
    with pytest.raises(NotFound):
        chat.turns(first.chat_id, user="owner")


def test_chat_incognito_reply_is_kept_with_no_page_following(chat, fake_ollama):
    fake_ollama.queue_reply("nobody watched this")
    started = chat.send(None, "hi", model=LOCAL, user="owner", incognito=True)
    assert started.reply.settled.wait(10)  # no follow() call at all
    turns = chat.turns(started.chat_id, user="owner")
    assert (turns[-1].content, turns[-1].status) == ("nobody watched this", "complete")


def test_chat_incognito_attachments_left_by_a_previous_run_are_deleted(store, tmp_path,
                                                                       ollama):
    leftover = tmp_path / "uploads" / "incognito-0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "a.png").write_bytes(b"x")
    kept = tmp_path / "uploads" / "a-stored-chat"
    kept.mkdir()
    make_service(store, tmp_path, ollama)
    assert not leftover.exists() and kept.exists()


# -- whose chat ---------------------------------------------------------------------------------


def test_chat_another_users_conversation_is_not_found(chat, store, fake_ollama):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    before = database(store)
    for call in (lambda: chat.open(chat_id, user="bob"),
                 lambda: chat.turns(chat_id, user="bob"),
                 lambda: chat.send(chat_id, "hi", model=LOCAL, user="bob"),
                 lambda: chat.retry(chat_id, model=LOCAL, user="bob"),
                 lambda: chat.edit(chat_id, 1, "x", model=LOCAL, user="bob"),
                 lambda: chat.show_version(chat_id, 2, -1, user="bob"),
                 lambda: chat.stop(chat_id, user="bob"),
                 lambda: chat.rename(chat_id, "mine now", user="bob"),
                 lambda: chat.delete(chat_id, user="bob"),
                 lambda: chat.export(chat_id, "md", user="bob")):
        with pytest.raises(NotFound, match="no longer exists"):
            call()
    assert database(store) == before
    assert chat.conversations(user="bob") == []
    assert chat.conversations(user="bob", query="question") == []
    assert [e.chat_id for e in chat.conversations(user="owner", query="question")] == [chat_id]


def test_chat_open_delete_and_export(chat, store, fake_ollama, tmp_path):
    chat_id = a_chat_of_two_turns(chat, fake_ollama)
    opened = chat.open(chat_id, user="owner")
    assert (opened.title, opened.model_id, opened.live) == ("first question", LOCAL, None)
    assert [t.role for t in opened.turns] == ["user", "assistant", "user", "assistant"]
    exported = chat.export(chat_id, "json", user="owner")
    assert exported.parent == tmp_path / "exports" / "owner"
    assert [m["content"] for m in json.loads(exported.read_text())["messages"]][:2] == [
        "first question", "first answer"]
    assert chat.title(chat_id, user="owner") == "first question"
    chat.rename(chat_id, "  ", user="owner")
    assert store.get_conversation(chat_id).title == "Untitled"
    assert chat.title(chat_id, user="owner") == "Untitled"
    # Another's chat and no chat have no title to show.
    assert [chat.title(c, user=u) for c, u in ((chat_id, "bob"), (None, "owner"))] == ["", ""]
    chat.delete(chat_id, user="owner")
    assert database(store) == []
    with pytest.raises(NotFound):
        chat.open(chat_id, user="owner")


def test_chat_attachments_must_be_real_images_within_the_megapixel_limit(chat, store, tmp_path):
    fake = tmp_path / "not-really.png"
    fake.write_bytes(b"just some text, not a picture")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 1_000)).save(bomb)  # 20 megapixels in a few kilobytes
    for path, message in ((fake, "isn't an image the studio can read"),
                          (bomb, "20.0 megapixels")):
        with pytest.raises(InvalidInput, match=message):
            chat.send(None, "look", [str(path)], model=VISION, user="owner")
    assert database(store) == []


def test_service_says_which_requests_it_admits_without_io(store, tmp_path, ollama):
    from studio.access.limits import Limits
    from studio.events import ChatMessage

    chat = make_service(store, tmp_path, ollama)
    text, picture = [ChatMessage("user", "hi")], [ChatMessage("user", "hi", (b"png",))]
    assert chat.admits_at_once(LOCAL, text, user="bob")
    assert not chat.admits_at_once(CLOUD, text, user="bob")  # a budget to read
    assert not chat.admits_at_once(LOCAL, picture, user="bob")  # an image to inspect
    chat._limits = Limits(chat_per_minute=5)
    assert not chat.admits_at_once(LOCAL, text, user="bob")  # bob's role not known yet
    chat._limits.admit_chat("bob")()
    assert chat.admits_at_once(LOCAL, text, user="bob")


def most_updates(streaming_s: float, interval: float) -> int:
    """The most snapshots ``follow`` may yield for a reply that streamed ``streaming_s``
    seconds after its first token: the first, one per gap of ``update_gap``, the last. A
    slower machine only makes the gaps longer, so this bounds every run."""
    count, t = 2, 0.0
    while t < streaming_s:
        t += update_gap(t, interval)
        count += 1
    return count


def test_chat_follow_paced_reply_shows_the_first_token_alone_then_coalesces(chat, fake_ollama):
    tokens = make_tokens(80)
    # The first token at once, the next after a pause (the first update can only hold the
    # first), then 50 tokens a second, as a model streams.
    fake_ollama.queue_reply(tokens, delay=[0.0, 0.3] + [0.02] * 78)
    started = chat.send(None, "hi", model=LOCAL, user="owner")
    snaps = list(chat.follow(started.reply, interval=0.125, first_wait=5.0))
    assert snaps[0].text == "tok0 " and not snaps[0].done  # no "waiting" update before it
    last = snaps[-1]
    assert last.done and last.text == "".join(tokens)
    assert len(snaps) <= most_updates((last.elapsed_ms - last.ttft_ms) / 1000, 0.125)
    assert len(snaps) <= len(tokens) // 4  # one update per token was the cost (issue 16)
