import os
import re
import sqlite3
import threading

import pytest

from studio.errors import InvalidInput, StorageFailed, StudioError
from studio.store.migrations import migrations
from studio.store.db import (Conversation, Message, SearchHit, Store, fts_match_query,
                             storage_fault)

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# Opening


def test_store_open_creates_directory_and_migrates(tmp_path):
    path = tmp_path / "nested" / "data" / "studio.db"

    store = Store.open(path)

    assert path.is_file()
    assert migrations.pending(store.db) == []
    store.close()


@pytest.mark.parametrize("pragma, expected", [
    ("journal_mode", "wal"),
    ("synchronous", 1),  # NORMAL
    ("foreign_keys", 1),
    ("busy_timeout", 5000),
])
def test_store_open_configures_connection(tmp_path, pragma, expected):
    store = Store.open(tmp_path / "studio.db")

    assert store.db.execute(f"PRAGMA {pragma}").fetchone()[0] == expected
    store.close()


def test_store_open_keeps_data_between_openings(tmp_path):
    first = Store.open(tmp_path / "studio.db")
    conv = first.create_conversation("Kept")
    first.add_message(conv.id, "user", "still here")
    first.close()

    second = Store.open(tmp_path / "studio.db")

    assert second.get_conversation(conv.id).title == "Kept"
    assert [m.content for m in second.messages(conv.id)] == ["still here"]
    second.close()


def test_store_open_can_be_used_from_another_thread(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    result = []

    worker = threading.Thread(target=lambda: result.append(store.create_conversation("x")))
    worker.start()
    worker.join(timeout=10)

    assert [c.title for c in result] == ["x"]
    store.close()


def test_store_open_when_directory_is_a_file_names_it(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")

    with pytest.raises(StudioError) as caught:
        Store.open(blocker / "studio.db")

    assert str(caught.value) == (
        f"The data directory {blocker} is not writable. Set STUDIO_DATA_DIR to a folder "
        "you can write to, or fix its permissions.")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write through any permission bits")
@pytest.mark.parametrize("locked, words", [
    ("directory", "The data directory"),
    ("file", "The database file"),
])
def test_store_open_unwritable_path_names_it(tmp_path, locked, words):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "studio.db"
    Store.open(path).close()
    target = data if locked == "directory" else path
    target.chmod(0o555 if locked == "directory" else 0o444)
    try:
        with pytest.raises(StudioError) as caught:
            Store.open(path)
    finally:
        target.chmod(0o755)

    assert str(caught.value).startswith(f"{words} {target} is not writable.")
    assert "STUDIO_DATA_DIR" in str(caught.value)


def test_store_open_non_database_file_says_so(tmp_path):
    path = tmp_path / "studio.db"
    path.write_bytes(b"this is a text file, not SQLite " * 100)

    with pytest.raises(StudioError, match="is not a SQLite database") as caught:
        Store.open(path)

    assert str(path) in str(caught.value)


def test_store_open_path_that_is_a_folder_says_so(tmp_path):
    path = tmp_path / "studio.db"
    path.mkdir()

    with pytest.raises(StudioError, match="is a folder, not a file") as caught:
        Store.open(path)

    assert str(path) in str(caught.value)


# Conversations


def test_store_create_conversation_defaults(store):
    conv = store.create_conversation()

    assert re.fullmatch(r"[0-9a-f]{32}", conv.id)
    assert (conv.title, conv.user, conv.model, conv.backend, conv.system_prompt,
            conv.params, conv.pinned) == ("New chat", "owner", "", "", "", {}, False)
    assert TIMESTAMP.fullmatch(conv.created_at)
    assert conv.updated_at == conv.created_at


def test_store_create_conversation_round_trips_fields(store):
    conv = store.create_conversation(
        "Plans", model="llama3.1:8b", backend="ollama", system_prompt="Be brief.",
        params={"temperature": 0.2, "stop": ["###"]}, user="guest")

    assert store.get_conversation(conv.id) == conv
    assert conv.params == {"temperature": 0.2, "stop": ["###"]}
    assert (conv.model, conv.backend, conv.system_prompt, conv.user) == (
        "llama3.1:8b", "ollama", "Be brief.", "guest")


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
def test_store_create_conversation_rejects_blank_title(store, title):
    with pytest.raises(InvalidInput):
        store.create_conversation(title)


def test_store_get_conversation_unknown_is_none(store):
    assert store.get_conversation("0" * 32) is None


def test_store_list_conversations_pinned_first_then_recent(store):
    old, middle, new = (store.create_conversation(t) for t in ("old", "middle", "new"))
    store.touch_conversation(old.id)
    store.update_conversation(middle.id, pinned=True)

    assert [c.title for c in store.list_conversations()] == ["middle", "old", "new"]


def test_store_list_conversations_filters_by_user(store):
    store.create_conversation("mine")
    store.create_conversation("theirs", user="guest")

    assert [c.title for c in store.list_conversations(user="guest")] == ["theirs"]
    assert [c.title for c in store.list_conversations()] == ["theirs", "mine"]


def test_store_list_conversations_pages(store):
    for n in range(5):
        store.create_conversation(f"chat {n}")

    assert [c.title for c in store.list_conversations(limit=2, offset=1)] == ["chat 3", "chat 2"]


def test_store_list_conversations_large_history_uses_one_indexed_query(store):
    # 10,000 conversations x 20 messages, the size the sidebar must stay fast for.
    store.db["conversations"].insert_all(
        ({"id": f"{n:032x}", "title": f"chat {n}", "user": "guest" if n % 3 else "owner",
          "pinned": int(n in (17, 4242)),
          "created_at": "2024-01-01T00:00:00.000Z",
          "updated_at": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T00:00:00.{n % 1000:03d}Z"}
         for n in range(10_000)), batch_size=1000)
    store.db["messages"].insert_all(
        ({"conversation_id": f"{n:032x}", "seq": s, "role": "user" if s % 2 else "assistant",
          "content": f"message {s}", "created_at": "2024-01-01T00:00:00.000Z",
          "updated_at": "2024-01-01T00:00:00.000Z"}
         for n in range(10_000) for s in range(1, 21)), batch_size=1000)
    statements = []

    with store.db.tracer(lambda sql, params: statements.append((sql, params))):
        listed = store.list_conversations(limit=100)

    everything = store.db.execute("SELECT id, pinned, updated_at FROM conversations").fetchall()
    expected = sorted(everything, key=lambda r: (r[1], r[2]), reverse=True)[:100]
    assert [c.id for c in listed] == [row[0] for row in expected]
    assert [c.title for c in listed[:2]] == ["chat 4242", "chat 17"]
    [(sql, params)] = statements
    plan = " ".join(str(row) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX" in plan and "TEMP B-TREE" not in plan


def test_store_list_conversations_for_user_uses_index(store):
    statements = []

    with store.db.tracer(lambda sql, params: statements.append((sql, params))):
        store.list_conversations(user="guest")

    [(sql, params)] = statements
    plan = " ".join(str(row) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX" in plan and "TEMP B-TREE" not in plan


def many_conversations(store, count: int, user: str = "owner", pinned=()) -> None:
    store.db["conversations"].insert_all(
        ({"id": f"{user}{n:026x}", "title": f"chat {n}", "user": user, "pinned": int(n in pinned),
          "created_at": "2024-01-01T00:00:00.000Z",
          # Many share a timestamp: ties are broken by id, never shown twice or skipped.
          "updated_at": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T00:00:00.000Z"}
         for n in range(count)), batch_size=1000)


def test_store_conversation_page_walks_every_chat_once_in_order(store):
    many_conversations(store, 2_000, pinned=(5, 1500))
    many_conversations(store, 10, user="guest")  # never seen by the owner
    seen, after = [], None

    while True:
        page = store.conversation_page(user="owner", after=after, limit=150)
        if not page:
            break
        seen += page
        last = page[-1]
        after = (int(last.pinned), last.updated_at, last.id)

    expected = sorted(store.list_conversations(user="owner", limit=5_000),
                      key=lambda c: (c.pinned, c.updated_at, c.id), reverse=True)
    assert [c.id for c in seen] == [c.id for c in expected]
    assert len(seen) == 2_000 and {c.user for c in seen} == {"owner"}
    assert [c.title for c in seen[:2]] == ["chat 5", "chat 1500"]  # pinned, newest first


def test_store_conversation_page_deep_page_is_one_index_range(store):
    many_conversations(store, 20_000)
    statements = []

    with store.db.tracer(lambda sql, params: statements.append((sql, params))):
        store.conversation_page(user="owner", after=(0, "2024-03-03T00:00:00.000Z", "f" * 32),
                                limit=200)

    [(sql, params)] = statements
    plan = " ".join(str(row) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "OFFSET" not in sql.upper()
    assert "idx_conversations_user_pinned_updated_at_id" in plan and "<(?,?,?)" in plan
    assert "TEMP B-TREE" not in plan


def test_store_set_pinned_only_for_the_owner(store):
    mine = store.create_conversation("mine")
    store.touch_conversation(mine.id)
    before = store.get_conversation(mine.id).updated_at

    assert store.set_pinned(mine.id, True, user="guest") is False
    assert store.get_conversation(mine.id).pinned is False
    assert store.set_pinned(mine.id, True, user="owner") is True
    assert store.get_conversation(mine.id).pinned is True
    assert store.get_conversation(mine.id).updated_at == before  # pinning is not activity


def test_store_generated_title_never_replaces_a_chosen_one(store):
    fresh, renamed = store.create_conversation("fresh"), store.create_conversation("named")
    store.rename_conversation(renamed.id, "My name for it")

    assert store.set_generated_title(fresh.id, "Model title", user="owner") is True
    assert store.set_generated_title(renamed.id, "Model title", user="owner") is False
    assert store.set_generated_title(fresh.id, "Another", user="owner") is False  # once
    assert store.set_generated_title(fresh.id, "Theirs", user="guest") is False
    assert [(c.title, c.title_source) for c in (store.get_conversation(fresh.id),
                                                store.get_conversation(renamed.id))] == [
        ("Model title", "model"), ("My name for it", "person")]


def test_store_import_conversation_keeps_times_and_is_idempotent_per_user(store):
    from studio.store.db import ImportedMessage

    messages = [ImportedMessage("user", "hi", "2023-05-01T10:00:00.000Z"),
                ImportedMessage("assistant", "hello", "2023-05-01T10:00:05.000Z", "gpt-4o")]
    kwargs = dict(source="chatgpt", source_id="c-1", title="Greeting",
                  created_at="2023-05-01T10:00:00.000Z", updated_at="2023-05-01T10:00:05.000Z",
                  messages=messages)
    conv_id = store.import_conversation(user="owner", **kwargs)

    assert store.import_conversation(user="owner", **kwargs) is None
    assert store.import_conversation(user="guest", **kwargs) is not None
    conv = store.get_conversation(conv_id)
    assert (conv.title, conv.title_source, conv.source, conv.created_at, conv.updated_at) == (
        "Greeting", "import", "chatgpt", "2023-05-01T10:00:00.000Z", "2023-05-01T10:00:05.000Z")
    assert [(m.seq, m.role, m.content, m.model, m.created_at) for m in store.messages(conv_id)
            ] == [(1, "user", "hi", "", "2023-05-01T10:00:00.000Z"),
                  (2, "assistant", "hello", "gpt-4o", "2023-05-01T10:00:05.000Z")]
    assert store.imported_ids("chatgpt", user="owner") == {"c-1"}
    assert [h.conversation_id for h in store.search("hello", user="owner")] == [conv_id]


def test_store_count_conversations(store):
    for user in ("owner", "owner", "guest"):
        store.create_conversation(user=user)

    assert (store.count_conversations(), store.count_conversations("owner"),
            store.count_conversations(user="nobody")) == (3, 2, 0)


def test_store_rename_conversation_keeps_its_place(store):
    conv = store.create_conversation("Untitled")

    store.rename_conversation(conv.id, "  Garden   watering ")

    renamed = store.get_conversation(conv.id)
    assert renamed.title == "Garden watering"
    assert renamed.updated_at == conv.updated_at


def test_store_update_conversation_changes_fields(store):
    conv = store.create_conversation(params={"temperature": 0.7})

    store.update_conversation(conv.id, model="qwen3:14b", backend="ollama",
                              system_prompt="You are terse.", params={"top_p": 0.9}, pinned=1)

    updated = store.get_conversation(conv.id)
    assert (updated.model, updated.backend, updated.system_prompt, updated.params,
            updated.pinned) == ("qwen3:14b", "ollama", "You are terse.", {"top_p": 0.9}, True)


def test_store_update_conversation_unknown_field_raises(store):
    conv = store.create_conversation()

    with pytest.raises(TypeError, match="colour"):
        store.update_conversation(conv.id, colour="red")


@pytest.mark.parametrize("call", [
    lambda s: s.rename_conversation("f" * 32, "x"),
    lambda s: s.update_conversation("f" * 32, pinned=True),
    lambda s: s.touch_conversation("f" * 32),
    lambda s: s.add_message("f" * 32, "user", "hi"),
])
def test_store_missing_conversation_raises_studio_error(store, call):
    with pytest.raises(StudioError, match="no longer exists"):
        call(store)


def test_store_touch_conversation_moves_it_up(store):
    first = store.create_conversation("first")
    store.create_conversation("second")

    store.touch_conversation(first.id)

    assert store.list_conversations()[0].id == first.id
    assert store.get_conversation(first.id).updated_at > first.updated_at


def test_store_delete_conversation_takes_messages(store):
    conv = store.create_conversation("Doomed")
    kept = store.create_conversation("Kept")
    message = store.add_message(conv.id, "user", "ephemeral words")
    store.add_message(kept.id, "user", "ephemeral too")

    store.delete_conversation(conv.id)

    assert store.get_conversation(conv.id) is None
    assert store.get_message(message.id) is None
    assert store.messages(conv.id) == []
    assert [h.conversation_id for h in store.search("ephemeral")] == [kept.id]
    assert store.search("doomed") == []


def test_store_delete_conversation_missing_is_noop(store):
    store.delete_conversation("f" * 32)

    assert store.count_conversations() == 0


# Messages


def test_store_add_message_numbers_in_order(store):
    conv = store.create_conversation()

    seqs = [store.add_message(conv.id, role, text).seq
            for role, text in [("user", "a"), ("assistant", "b"), ("user", "c")]]

    assert seqs == [1, 2, 3]
    assert [m.content for m in store.messages(conv.id)] == ["a", "b", "c"]


def test_store_add_message_numbers_per_conversation(store):
    one, two = store.create_conversation(), store.create_conversation()
    store.add_message(one.id, "user", "a")

    assert store.add_message(two.id, "user", "b").seq == 1


def test_store_add_message_round_trips_fields(store, tmp_path):
    conv = store.create_conversation()

    message = store.add_message(
        conv.id, "assistant", "Here you go.", thinking="hmm", images=[tmp_path / "a.png", "b.png"],
        status="partial", model="gpt-4o-mini", backend="openrouter", error="cut off",
        meta={"finish_reason": "length"}, prompt_tokens=12, completion_tokens=34, ttft_ms=210.5,
        tokens_per_s=48.2, load_ms=0.0, total_ms=900.0, cost_usd=0.000123)

    assert isinstance(message, Message)
    assert store.get_message(message.id) == message
    assert message.images == [str(tmp_path / "a.png"), "b.png"]
    assert (message.thinking, message.status, message.model, message.backend, message.error,
            message.meta) == ("hmm", "partial", "gpt-4o-mini", "openrouter", "cut off",
                              {"finish_reason": "length"})
    assert (message.prompt_tokens, message.completion_tokens, message.ttft_ms,
            message.tokens_per_s, message.load_ms, message.total_ms, message.cost_usd) == (
        12, 34, 210.5, 48.2, 0.0, 900.0, 0.000123)


def test_store_add_message_defaults(store):
    conv = store.create_conversation()

    message = store.add_message(conv.id, "user")

    assert (message.content, message.thinking, message.images, message.status, message.error,
            message.meta, message.cost_usd, message.prompt_tokens) == (
        "", "", [], "complete", "", {}, None, None)
    assert TIMESTAMP.fullmatch(message.created_at)


def test_store_add_message_bumps_conversation(store):
    older = store.create_conversation("older")
    store.create_conversation("newer")

    message = store.add_message(older.id, "user", "hello")

    assert store.get_conversation(older.id).updated_at == message.created_at
    assert store.list_conversations()[0].id == older.id


def test_store_add_message_to_missing_conversation_writes_nothing(store):
    with pytest.raises(StudioError):
        store.add_message("f" * 32, "user", "lost")

    assert store.db["messages"].count == 0


@pytest.mark.parametrize("kwargs, error", [
    ({"status": "done"}, ValueError),
    ({"speed": 3}, TypeError),
])
def test_store_add_message_rejects_bad_arguments(store, kwargs, error):
    conv = store.create_conversation()

    with pytest.raises(error):
        store.add_message(conv.id, "user", "x", **kwargs)


def test_store_update_message_changes_fields_and_updated_at(store):
    conv = store.create_conversation()
    message = store.add_message(conv.id, "assistant", "", status="streaming")

    store.update_message(message.id, content="Hello there", thinking="greet", status="complete",
                         completion_tokens=2, tokens_per_s=40.0, meta={"done": True},
                         images=["out.png"])

    updated = store.get_message(message.id)
    assert (updated.content, updated.thinking, updated.status, updated.completion_tokens,
            updated.tokens_per_s, updated.meta, updated.images) == (
        "Hello there", "greet", "complete", 2, 40.0, {"done": True}, ["out.png"])
    assert updated.updated_at > message.updated_at
    assert updated.created_at == message.created_at


def test_store_update_message_is_one_statement(store):
    conv = store.create_conversation()
    message = store.add_message(conv.id, "assistant", "", status="streaming")
    statements = []

    with store.db.tracer(lambda sql, params: statements.append(sql)):
        store.update_message(message.id, content="partial text", completion_tokens=3)

    assert len(statements) == 1 and statements[0].startswith("UPDATE messages")


@pytest.mark.parametrize("kwargs, error", [
    ({"status": "finished"}, ValueError),
    ({"role": "system"}, TypeError),
    ({"seq": 9}, TypeError),
])
def test_store_update_message_rejects_bad_fields(store, kwargs, error):
    conv = store.create_conversation()
    message = store.add_message(conv.id, "user", "x")

    with pytest.raises(error):
        store.update_message(message.id, **kwargs)


def test_store_update_message_missing_raises(store):
    with pytest.raises(StudioError, match="Message 404 no longer exists"):
        store.update_message(404, content="x")


def test_store_get_message_unknown_is_none(store):
    assert store.get_message(12345) is None


def test_store_messages_unknown_conversation_is_empty(store):
    assert store.messages("nope") == []


def test_store_delete_messages_from_cuts_the_tail(store):
    conv = store.create_conversation()
    for text in ["q1", "a1", "q2", "a2"]:
        store.add_message(conv.id, "user", text)

    deleted = store.delete_messages_from(conv.id, 3)

    assert deleted == 2
    assert [m.content for m in store.messages(conv.id)] == ["q1", "a1"]
    assert store.add_message(conv.id, "user", "q2 again").seq == 3


def test_store_delete_messages_from_leaves_other_conversations(store):
    one, two = store.create_conversation(), store.create_conversation()
    store.add_message(one.id, "user", "a")
    store.add_message(two.id, "user", "b")

    assert store.delete_messages_from(one.id, 1) == 1
    assert [m.content for m in store.messages(two.id)] == ["b"]


def test_store_mark_interrupted_streams(store):
    conv = store.create_conversation()
    streaming = [store.add_message(conv.id, "assistant", "half", status="streaming")
                 for _ in range(2)]
    done = store.add_message(conv.id, "assistant", "whole")

    count = store.mark_interrupted_streams("The studio restarted while this reply streamed.")

    assert count == 2
    for message in streaming:
        after = store.get_message(message.id)
        assert (after.status, after.error) == (
            "partial", "The studio restarted while this reply streamed.")
    assert store.get_message(done.id).status == "complete"
    assert store.mark_interrupted_streams("again") == 0


def test_store_timestamps_strictly_increase(store):
    conv = store.create_conversation()
    stamps = [store.add_message(conv.id, "user", str(n)).created_at for n in range(50)]

    assert stamps == sorted(set(stamps))
    assert all(TIMESTAMP.fullmatch(s) for s in stamps)


def test_store_concurrent_writers_and_readers(store):
    conv = store.create_conversation()
    threads, per_thread = 8, 40
    start = threading.Barrier(threads + 2)
    errors = []

    def write(n):
        start.wait()
        try:
            for i in range(per_thread):
                message = store.add_message(conv.id, "user", f"w{n} m{i}", status="streaming")
                store.update_message(message.id, content=f"w{n} m{i} done", status="complete")
        except Exception as err:  # collected and asserted on below
            errors.append(err)

    def read():
        start.wait()
        try:
            for _ in range(per_thread):
                store.list_conversations()
                store.messages(conv.id)
                store.search("done")
        except Exception as err:
            errors.append(err)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    workers += [threading.Thread(target=read) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert errors == []
    messages = store.messages(conv.id)
    assert [m.seq for m in messages] == list(range(1, threads * per_thread + 1))
    assert all(m.status == "complete" and m.content.endswith("done") for m in messages)


# Search


@pytest.fixture
def library(store):
    """Three chats: two for the owner, one for a guest; messages in creation order."""
    bread = store.create_conversation("Sourdough baking")
    store.add_message(bread.id, "user", "How long should the starter rest?")
    store.add_message(bread.id, "assistant", "Let the starter rest overnight in a warm place.")
    code = store.create_conversation("Python packaging")
    store.add_message(code.id, "user", "How do I publish a Python wheel?")
    store.add_message(code.id, "assistant", "Build it with python -m build, then twine upload.")
    guest = store.create_conversation("Guest chat", user="guest")
    store.add_message(guest.id, "user", "python snake facts please")
    return {"bread": bread, "code": code, "guest": guest}


def test_store_search_finds_message_text(store, library):
    hits = store.search("twine")

    assert hits == [SearchHit(
        conversation_id=library["code"].id, title="Python packaging",
        message_id=store.messages(library["code"].id)[1].id, role="assistant",
        snippet="Build it with python -m build, then [twine] upload.",
        updated_at=store.messages(library["code"].id)[1].updated_at)]


def test_store_search_finds_conversation_title(store, library):
    [hit] = store.search("sourdough")

    assert (hit.conversation_id, hit.message_id, hit.role, hit.snippet) == (
        library["bread"].id, None, None, "[Sourdough] baking")


@pytest.mark.parametrize("typed, expected", [
    ("pyth", 4),           # prefix on the last word: 1 title + 3 messages
    ("python wheel", 1),   # every word must match
    ("pyth wheel", 0),     # only the last word is a prefix
    ("wheel pyth", 1),
    ("STARTER", 2),        # case-insensitive
    ("rest starter", 2),   # words in any order
])
def test_store_search_matches_words(store, library, typed, expected):
    assert len(store.search(typed)) == expected


def test_store_search_orders_titles_then_newest_messages(store, library):
    hits = store.search("python")

    assert [(h.conversation_id, h.role) for h in hits] == [
        (library["code"].id, None),
        (library["guest"].id, "user"),
        (library["code"].id, "assistant"),
        (library["code"].id, "user"),
    ]


def test_store_search_filters_by_user(store, library):
    assert {h.conversation_id for h in store.search("python", user="guest")} == {
        library["guest"].id}
    assert {h.conversation_id for h in store.search("python", user="owner")} == {
        library["code"].id}


@pytest.mark.parametrize("limit, expected", [(0, 0), (1, 1), (2, 2), (50, 4)])
def test_store_search_limits_hits(store, library, limit, expected):
    assert len(store.search("python", limit=limit)) == expected


def test_store_search_follows_edited_content(store, library):
    message = store.messages(library["bread"].id)[1]

    store.update_message(message.id, content="Use a banneton for the final proof.")

    assert [h.message_id for h in store.search("banneton")] == [message.id]
    assert [h.message_id for h in store.search("overnight")] == []


def test_store_search_forgets_deleted_messages(store, library):
    store.delete_messages_from(library["bread"].id, 2)

    assert store.search("overnight") == []
    assert len(store.search("starter")) == 1


def test_store_search_finds_phrase_with_punctuation(store, library):
    assert [h.role for h in store.search("-m build,")] == ["assistant"]


NASTY_QUERIES = [
    '"', '""', '"python', 'python"', "'", "*", "python*", "**", "NEAR", "NEAR(python wheel)",
    "NEAR/2", "AND", "OR", "NOT", "python AND", "OR wheel", "NOT python", "python NOT",
    "(", ")", "(python", "python)", "()", "-", "-python", "python -wheel", ":", "title:python",
    "content:python", "^python", "+python", "{content}: python", "python:", "[", "]",
    "", " ", "   \t\n ", "\x00", "py\x00thon", "\ud800", "🐍", "Pythön", "?", "a" * 10_000,
    "python " * 200, "'; DROP TABLE messages; --", "%", "_", "\\", "messages_fts",
]


@pytest.mark.parametrize("typed", NASTY_QUERIES)
def test_store_search_never_raises_on_typed_text(store, library, typed):
    hits = store.search(typed)

    assert isinstance(hits, list)
    assert store.db["messages"].count == 5


@pytest.mark.parametrize("typed", ["", " ", "\t\n", "?!", "***", '"', "( )", "\x00"])
def test_store_search_without_words_is_empty(store, library, typed):
    assert store.search(typed) == []


@pytest.mark.parametrize("typed", ['"python', "python)", "(python", "python*", "python:",
                                   "-python", "+python", "Pythön"])
def test_store_search_treats_syntax_characters_as_text(store, library, typed):
    assert len(store.search(typed)) >= 3


@pytest.fixture
def symbols(store):
    """Chats whose words are symbols FTS5's tokenizer leaves out."""
    food = store.create_conversation("🍕 plans")
    friday = store.add_message(food.id, "user", "Friday night: 🍕 and a film")
    code = store.create_conversation("Languages")
    cpp = store.add_message(code.id, "user", "I write C++ templates every day")
    store.add_message(code.id, "user", "c is fine, and so is C#")
    arrow = store.add_message(code.id, "assistant", "Map a->b with a lambda")
    guest = store.create_conversation("Guest food", user="guest")
    store.add_message(guest.id, "user", "🍕 for the guest")
    return {"food": food, "friday": friday, "cpp": cpp, "arrow": arrow}


@pytest.mark.parametrize("typed, found", [
    ("🍕", [("food", None, "[🍕] plans"), ("friday", "user", "Friday night: [🍕] and a film")]),
    ("C++", [("cpp", "user", "I write [C++] templates every day")]),
    ("c++", [("cpp", "user", "I write [C++] templates every day")]),
    ("->", [("arrow", "assistant", "Map a[->]b with a lambda")]),
    ("templates C++", [("cpp", "user", "I write C++ [templates] every day")]),
    ("film 🍕", [("friday", "user", "Friday night: 🍕 and a [film]")]),
])
def test_store_search_finds_symbols_and_emoji(store, symbols, typed, found):
    hits = store.search(typed, user="owner")

    expected_ids = [(symbols[key].id if role is None else symbols[key].conversation_id,
                     None if role is None else symbols[key].id, role, snippet)
                    for key, role, snippet in found]
    assert [(h.conversation_id, h.message_id, h.role, h.snippet) for h in hits] == expected_ids


@pytest.mark.parametrize("typed", ["🍔", "F#", "<-", "🍕🍕"])
def test_store_search_symbols_that_no_chat_holds_find_nothing(store, symbols, typed):
    assert store.search(typed, user="owner") == []


def test_store_search_symbols_look_through_the_newest_messages(store, symbols, monkeypatch):
    import studio.store.db as db_module

    monkeypatch.setattr(db_module, "LITERAL_SCAN", 2)  # the two newest messages only

    assert [h.message_id for h in store.search("C++", user="owner")] == []
    assert [h.message_id for h in store.search("->", user="owner")] == [symbols["arrow"].id]


@pytest.mark.parametrize("typed, expected", [
    ("pyth", '"pyth"*'),
    ("python wheel", '"python" AND "wheel"*'),
    ('say "hi"', '"say" AND """hi"""*'),
    ("NEAR(a b)", '"NEAR(a" AND "b)"*'),
    ("python ?", '"python"*'),
    ("py\x00thon", '"py" AND "thon"*'),
    ("  ", ""),
    ("-- ::", ""),
])
def test_fts_match_query_quotes_each_word(typed, expected):
    assert fts_match_query(typed) == expected


def test_store_returns_dataclasses(store):
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "hi")

    assert isinstance(store.list_conversations()[0], Conversation)
    assert isinstance(store.messages(conv.id)[0], Message)


# -- faults of the disk ------------------------------------------------------------------------

def fill_disk(store: Store) -> None:
    """A real SQLITE_FULL from now on: the file may not grow by one more page, on every
    connection the store has (one per thread) and on those it opens later."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    cap = f"PRAGMA max_page_count = {pages}"
    with store._registry_lock:
        for db in list(store._open):
            db.execute(cap)
    connect = store._connect

    def capped():
        conn = connect()
        conn.execute(cap)
        return conn

    store._connect = capped


def test_store_full_disk_is_a_sentence_and_writes_nothing(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    conv = store.create_conversation("kept", user="owner")
    fill_disk(store)
    with pytest.raises(StorageFailed, match=r"data \(STUDIO_DATA_DIR\) is full") as failure:
        store.add_message(conv.id, "user", "a long question " * 2000)
    assert "still on the page" in str(failure.value)
    assert isinstance(failure.value, sqlite3.OperationalError)  # sqlite-utils still rolls back
    assert store.messages(conv.id) == []
    assert store.ping()
    store.close()


def test_store_lock_held_by_another_program_is_a_sentence(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    store.db.execute("PRAGMA busy_timeout = 50")  # the default 5 s, shortened for the test
    other = sqlite3.connect(tmp_path / "studio.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. a sqlite3 shell in the middle of a change
    try:
        with pytest.raises(StorageFailed, match="Another program kept the studio's database "
                                                "locked"):
            store.create_conversation("waits", user="owner")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.create_conversation("now", user="owner").title == "now"
    store.close()


@pytest.mark.parametrize("words, sentence", [
    ("database or disk is full", "is full"),
    ("disk I/O error", "reported an I/O error"),
    ("database is locked", "kept the studio's database locked for 5 seconds"),
])
def test_storage_fault_names_the_fault_from_sqlites_words(words, sentence):
    fault = storage_fault(sqlite3.OperationalError(words))
    assert isinstance(fault, StorageFailed) and sentence in str(fault)


def test_storage_fault_leaves_other_errors_alone():
    assert storage_fault(sqlite3.OperationalError("no such table: nope")) is None
    with pytest.raises(sqlite3.OperationalError, match="no such table") as raised:
        Store.memory().db.execute("SELECT * FROM nope")
    assert not isinstance(raised.value, StudioError)


# Versions of a turn (issue 14 item 6)


def test_store_a_version_sits_beside_its_turn_and_is_shown(store):
    conv = store.create_conversation("v")
    question = store.add_message(conv.id, "user", "q")
    first = store.add_message(conv.id, "assistant", "a1")
    store.add_message(conv.id, "user", "later")
    again = store.add_message(conv.id, "assistant", "a2", version_of=first.id)
    assert (again.seq, again.parent_id) == (2, question.id)
    assert [(m.content, m.version, m.versions) for m in store.messages(conv.id)] == [
        ("q", 1, 1), ("a2", 2, 2)]
    assert store.show_version(conv.id, again.id, -1) == first.id
    assert [m.content for m in store.messages(conv.id)] == ["q", "a1", "later"]


def test_store_show_version_stops_at_the_ends_and_stays_in_its_chat(store):
    conv = store.create_conversation("v")
    other = store.create_conversation("other")
    store.add_message(conv.id, "user", "q")
    first = store.add_message(conv.id, "assistant", "a1")
    second = store.add_message(conv.id, "assistant", "a2", version_of=first.id)
    assert store.show_version(conv.id, second.id, +1) == second.id
    assert store.show_version(conv.id, first.id, -5) == first.id
    assert store.show_version(other.id, first.id, +1) is None  # another chat's message
    assert [m.content for m in store.messages(conv.id)] == ["q", "a1"]


def test_store_a_version_of_another_chats_message_is_refused(store):
    conv = store.create_conversation("v")
    other = store.create_conversation("other")
    mine = store.add_message(other.id, "user", "q")
    with pytest.raises(StudioError, match="no longer exists"):
        store.add_message(conv.id, "user", "x", version_of=mine.id)
    assert store.messages(conv.id) == []


def test_store_connections_leave_sqlite_utils_plugins_out(tmp_path, monkeypatch):
    """A sqlite-utils plugin installed on the machine never runs on the studio's
    connections, and the studio never scans the installed packages for one."""
    import sqlite_utils
    from sqlite_utils import plugins

    monkeypatch.setattr(plugins, "_plugins_loaded", False)
    prepared = []

    class Plugin:
        @sqlite_utils.hookimpl
        def prepare_connection(self, conn):
            prepared.append(conn)

    plugin = Plugin()
    plugins.pm.register(plugin)
    try:
        store = Store.open(tmp_path / "studio.db")
        other = threading.Thread(target=lambda: store.db.execute("select 1"))  # a second connection
        other.start()
        other.join()
        store.close()
        Store.memory().close()
    finally:
        plugins.pm.unregister(plugin)
    assert prepared == []
    assert plugins._plugins_loaded is False


def test_store_a_turn_written_in_one_transaction_looks_nothing_up(store):
    """A new chat's first turn (chat, question, placeholder) is three INSERTs in one
    transaction: the write lock is held for as few statements as can be (issue 16, item 3),
    and the turns land where the slower path puts them. A second turn in the same chat
    still finds its place and steps a sibling aside."""
    from studio.chat.history import StoredHistory
    from studio.model_id import ModelId

    model = ModelId.parse("ollama:llama3.2:latest")
    history = StoredHistory(store, None, user="owner")
    db, sql = store.db, []
    execute = db.execute
    db.execute = lambda statement, *args, **kwargs: (sql.append(statement.split()[0]),
                                                     execute(statement, *args, **kwargs))[1]
    try:
        with history.writing():
            history.begin(title="first", model=model, system_prompt="")
            asked = history.add_user("hello", ())
            answer = history.add_placeholder(model, after=asked)
    finally:
        del db.execute
    assert sql == ["INSERT", "INSERT", "INSERT"]  # and BEGIN, COMMIT around them
    assert (asked.seq, answer.seq) == (1, 2)
    shown = store.messages(history.conversation_id)
    assert [(m.role, m.seq, m.status) for m in shown] == [("user", 1, "complete"),
                                                          ("assistant", 2, "streaming")]
    # The next turn goes after the answer, looked up as before.
    with history.writing():
        history.begin(title="", model=model, system_prompt="")
        again = history.add_user("more", (), after=answer)
        history.add_placeholder(model, after=again)
    assert [m.seq for m in store.messages(history.conversation_id)] == [1, 2, 3, 4]
    # Outside a transaction "fresh" is refused: nothing would vouch for it.
    with pytest.raises(ValueError):
        store.add_message(history.conversation_id, "user", "x", after=again.message_id,
                          fresh=True)
