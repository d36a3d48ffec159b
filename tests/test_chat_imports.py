"""Importing Open WebUI's chat export and ChatGPT's conversations.json into the history
(studio/chat/imports.py, ChatService.import_chats), from hand-written fixtures in the
documented shapes (tests/fixtures/imports/): the shown branch of each tree, times and model
names kept, system/tool messages and non-text parts counted, a wrong file refused with a
sentence before anything is written, and the same file twice adding nothing."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.chat.imports import CHATGPT, OPEN_WEBUI, read_export
from studio.chat.replies import ReplyManager
from studio.chat.service import ChatService
from studio.errors import InvalidInput, StudioError

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
OPEN_WEBUI_FILE = FIXTURES / "openwebui-chat-export.json"
CHATGPT_FILE = FIXTURES / "chatgpt-conversations.json"
MB = 1024 * 1024


@pytest.fixture
def chat(store, tmp_path):
    def no_stream(*args, **kwargs):
        raise AssertionError("an import never asks a model")

    return ChatService(store, ReplyManager(no_stream, store), router=None,
                       uploads_dir=tmp_path / "uploads", exports_dir=tmp_path / "exports",
                       max_message_chars=1000, supports_images=lambda m: False,
                       max_import_bytes=MB)


def stored_chats(store, user="owner") -> dict[str, list[tuple]]:
    return {c.title: [(m.role, m.content, m.model) for m in store.messages(c.id)]
            for c in store.list_conversations(user=user, limit=100)}


def test_imports_open_webui_reads_the_shown_branch_with_times_and_models():
    parsed = read_export(OPEN_WEBUI_FILE.read_bytes(), max_bytes=MB)

    assert parsed.source == OPEN_WEBUI
    starter, rust = parsed.chats
    assert [(m.role, m.content, m.model) for m in starter.messages] == [
        ("user", "My sourdough starter smells like nail polish. Is it dead?", ""),
        ("assistant", "No: an acetone smell means the starter is hungry. Feed it twice a day.",
         "llama3.1:8b"),
        ("user", "How much flour per feed?", ""),
        ("assistant", "Equal weights of starter, flour and water: 50 g each.", "qwen2.5:7b")]
    assert (starter.source_id, starter.created_at, starter.updated_at) == (
        "5f1c2a9e-7b7e-4d8e-9a51-0c7d2e6b1a01", "2024-06-03T08:00:00.000Z",
        "2024-06-03T08:02:05.000Z")
    assert starter.messages[1].created_at == "2024-06-03T08:01:00.000Z"
    assert rust.title == "Rust lifetimes"
    assert (parsed.empty, parsed.unreadable, parsed.non_text, parsed.system_or_tool) == (
        1, 0, 1, 0)


def test_imports_chatgpt_reads_the_current_node_s_branch_and_counts_what_stays_behind():
    parsed = read_export(CHATGPT_FILE.read_bytes(), max_bytes=MB)

    assert parsed.source == CHATGPT
    lisbon, sine = parsed.chats
    assert [(m.role, m.content, m.model) for m in lisbon.messages] == [
        ("user", "Plan two days in Lisbon for me.", ""),
        ("assistant", "Day one: Alfama and the castle. Day two: Belem.", "gpt-4o"),
        ("user", "Where should we eat pastel de nata?", ""),  # the edit, not the old branch
        ("assistant", "Pasteis de Belem, early, before the queue.", "gpt-4o-mini")]
    assert (lisbon.created_at, lisbon.updated_at) == ("2023-11-14T22:13:20.123Z",
                                                      "2023-11-14T22:20:00.500Z")
    # The picture and the code run stay behind; the text around them comes along.
    assert [(m.role, m.content) for m in sine.messages] == [
        ("user", "Draw this curve as a sine wave with matplotlib."),
        ("assistant", "Here is the sine wave, plotted from 0 to 2 pi.")]
    # Hidden system prompt, the call to python and python's output; the image part; the
    # damaged conversation.
    assert (parsed.system_or_tool, parsed.non_text, parsed.unreadable, parsed.empty) == (
        3, 1, 1, 0)


def test_imports_store_the_chats_and_report_what_was_skipped(chat, store):
    report = chat.import_chats(CHATGPT_FILE, user="owner")

    assert (report.imported, report.messages, report.already, report.unreadable) == (2, 6, 0, 1)
    assert report.lines() == [
        "Imported 2 chats (6 messages) from ChatGPT.",
        "Skipped 1 chat the studio could not read (damaged or of an unknown shape).",
        "Left out 3 system or tool messages.",
        "Left out 1 part that is not text (pictures, files, code runs, browsing)."]
    chats = stored_chats(store)
    assert set(chats) == {"Weekend in Lisbon", "Plot a sine wave"}
    assert chats["Plot a sine wave"][1] == (
        "assistant", "Here is the sine wave, plotted from 0 to 2 pi.", "gpt-4")
    # Imported chats keep their own times, so they sort among the old ones.
    assert [c.title for c in store.list_conversations(user="owner")] == [
        "Plot a sine wave", "Weekend in Lisbon"]
    # An imported chat opens like any other, with no model picked for it.
    lisbon = next(c for c in store.list_conversations(user="owner")
                  if c.title == "Weekend in Lisbon")
    opened = chat.open(lisbon.id, user="owner")
    assert opened.model_id is None and len(opened.turns) == 4
    assert [h.title for h in store.search("nata", user="owner")] == ["Weekend in Lisbon"]


def test_imports_the_same_file_twice_adds_nothing(chat, store):
    chat.import_chats(OPEN_WEBUI_FILE, user="owner")
    before = stored_chats(store)

    again = chat.import_chats(OPEN_WEBUI_FILE, user="owner")

    assert (again.imported, again.already, again.messages) == (0, 2, 0)
    assert again.lines()[:2] == [
        "Imported 0 chats (0 messages) from Open WebUI.",
        "Skipped 2 chats already imported (importing the same file again adds nothing)."]
    assert stored_chats(store) == before and store.count_conversations("owner") == 2


def test_imports_belong_to_whoever_imported_them(chat, store):
    chat.import_chats(OPEN_WEBUI_FILE, user="alice")
    report = chat.import_chats(OPEN_WEBUI_FILE, user="bob")

    assert report.imported == 2  # bob's copy; alice's import doesn't count as his
    assert store.count_conversations("alice") == store.count_conversations("bob") == 2
    assert store.count_conversations("owner") == 0
    alice_chat = store.list_conversations(user="alice")[0].id
    assert chat.conversations(user="bob", query="sourdough")[0].chat_id != alice_chat


def test_imports_read_chatgpt_s_zip(chat, store, tmp_path):
    path = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("chat.html", "<html></html>")
        archive.write(CHATGPT_FILE, "conversations.json")

    assert chat.import_chats(path, user="owner").imported == 2


@pytest.mark.parametrize("content, sentence", [
    (b"\x89PNG\r\n\x1a\n not an export", "is not a chat export the studio can read"),
    (b'{"name": "some settings file"}', "is not a chat export the studio can read"),
    (b'[{"role": "user", "content": "a list of something else"}]',
     "is not a chat export the studio can read"),
    (b"[]", "This export holds no chats."),
    (b"PK\x03\x04 a broken zip", "This zip file is damaged"),
])
def test_imports_refuse_a_wrong_file_with_a_sentence(chat, store, tmp_path, content,
                                                     sentence):
    path = tmp_path / "upload.json"
    path.write_bytes(content)

    with pytest.raises(InvalidInput, match=sentence) as refused:
        chat.import_chats(path, user="owner")

    assert refused.value.hint  # what to do next
    assert store.count_conversations() == 0


def test_imports_refuse_a_zip_without_conversations(chat, tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("user.json", "{}")

    with pytest.raises(InvalidInput, match="no conversations.json"):
        chat.import_chats(path, user="owner")


def test_imports_are_bounded_in_size_even_inside_a_zip(chat, store, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MB + 1))
    with pytest.raises(InvalidInput, match="the limit is 1 MB"):
        chat.import_chats(big, user="owner")

    # 3 MB of JSON packs into a few KB: the size unpacked is what counts.
    bomb = tmp_path / "small.zip"
    conversations = json.loads(CHATGPT_FILE.read_text())
    conversations[0]["title"] = "x" * (3 * MB)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", json.dumps(conversations))
    bomb.write_bytes(buffer.getvalue())
    assert bomb.stat().st_size < MB
    with pytest.raises(InvalidInput, match="unpacked; the limit is 1 MB"):
        chat.import_chats(bomb, user="owner")
    assert store.count_conversations() == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)
KEYS = ["mapping", "current_node", "message", "parent", "author", "role", "content", "parts",
        "content_type", "create_time", "chat", "history", "messages", "currentId", "parentId",
        "timestamp", "created_at", "updated_at", "id", "title", "model", "files", "recipient"]


def shaken(value, data):
    """The fixture with some values swapped for anything JSON can hold, keys kept."""
    if isinstance(value, dict):
        return {k: (data.draw(JSON) if data.draw(st.integers(0, 9)) == 0 else shaken(v, data))
                for k, v in value.items()}
    if isinstance(value, list):
        return [shaken(v, data) for v in value]
    return data.draw(JSON) if data.draw(st.integers(0, 4)) == 0 else value


@settings(max_examples=60, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), which=st.sampled_from([OPEN_WEBUI_FILE, CHATGPT_FILE]))
def test_imports_any_damage_is_a_count_or_a_sentence(data, which):
    export = shaken(json.loads(which.read_text()), data)
    if data.draw(st.booleans()):
        export = [{key: data.draw(JSON) for key in data.draw(st.sets(st.sampled_from(KEYS),
                                                                    max_size=6))}]
    try:
        parsed = read_export(json.dumps(export).encode(), max_bytes=MB)
    except StudioError as exc:
        assert str(exc).endswith(".")
        return
    assert len(parsed.chats) + parsed.empty + parsed.unreadable <= max(len(export), 1)
    for chat in parsed.chats:
        assert chat.messages and all(m.role in ("user", "assistant") for m in chat.messages)
        assert chat.created_at <= chat.updated_at
