import re
import sqlite3

import pytest
from sqlite_utils import Database

from studio.store.migrations import migrations
from studio.store.db import Store

CONVERSATION_COLUMNS = {
    "id": str, "title": str, "user": str, "model": str, "backend": str,
    "system_prompt": str, "params": str, "created_at": str, "updated_at": str, "pinned": int,
    "title_source": str, "source": str, "source_id": str,
}
MESSAGE_COLUMNS = {
    "id": int, "conversation_id": str, "seq": int, "role": str, "content": str,
    "thinking": str, "images": str, "model": str, "backend": str, "status": str,
    "error": str, "prompt_tokens": int, "completion_tokens": int, "ttft_ms": float,
    "tokens_per_s": float, "load_ms": float, "total_ms": float, "cost_usd": float,
    "meta": str, "created_at": str, "updated_at": str, "parent_id": int, "active": int,
}


@pytest.fixture
def db():
    return Database(memory=True)


def test_migrations_blank_db_reaches_current_schema(db):
    migrations.apply(db)

    assert db["conversations"].columns_dict == CONVERSATION_COLUMNS
    assert db["messages"].columns_dict == MESSAGE_COLUMNS
    assert db["conversations"].pks == ["id"]
    assert db["messages"].pks == ["id"]


def test_migrations_messages_cascade_from_conversations(db):
    migrations.apply(db)

    [fk] = db["messages"].foreign_keys
    assert (fk.column, fk.other_table, fk.other_column, fk.on_delete) == (
        "conversation_id", "conversations", "id", "CASCADE")


def test_migrations_create_listing_indexes(db):
    migrations.apply(db)

    message_indexes = {tuple(i.columns): i.unique for i in db["messages"].indexes}
    conversation_indexes = {tuple(i.columns) for i in db["conversations"].indexes}
    # Versions of a turn share its seq (m016), so the index on seq is no longer unique.
    assert message_indexes[("conversation_id", "seq")] == 0
    assert ("conversation_id", "parent_id") in message_indexes
    assert {("updated_at",), ("user", "updated_at"), ("pinned", "updated_at"),
            ("user", "pinned", "updated_at"), ("user", "pinned", "updated_at", "id")
            } <= conversation_indexes


def test_migrations_m015_keeps_old_titles_and_keys_imports_per_user(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m015_add_title_source_and_import_keys")
    old["conversations"].insert({"id": "a" * 32, "title": "Renamed long ago",
                                 "created_at": "2024-05-01T10:00:00.000Z",
                                 "updated_at": "2024-05-01T10:00:00.000Z"})
    old.close()
    store = Store.open(path)

    [conv] = store.list_conversations()
    assert (conv.title, conv.title_source, conv.source) == ("Renamed long ago", "words", "")
    # Chats of the studio's own (no source id) never collide; one import key per user.
    for user, key in (("owner", ""), ("owner", ""), ("owner", "x"), ("guest", "x")):
        store.db["conversations"].insert({"id": f"{user}{key}{len(store.list_conversations())}",
                                          "title": "t", "user": user, "source": "chatgpt",
                                          "source_id": key, "created_at": "2024",
                                          "updated_at": "2024"})
    with pytest.raises(sqlite3.IntegrityError):
        store.db["conversations"].insert({"id": "dup", "title": "t", "user": "owner",
                                          "source": "chatgpt", "source_id": "x",
                                          "created_at": "2024", "updated_at": "2024"})
    store.close()


def test_migrations_create_search_tables(db):
    migrations.apply(db)

    assert db["messages_fts"].columns_dict.keys() == {"content"}
    assert db["conversations_fts"].columns_dict.keys() == {"conversation_id", "title"}
    assert {t.name for t in db.triggers} == {
        "messages_fts_ai", "messages_fts_ad", "messages_fts_au",
        "conversations_fts_ai", "conversations_fts_ad", "conversations_fts_au",
    }


def test_migrations_apply_twice_is_noop(db):
    migrations.apply(db)
    schema, applied = db.schema, migrations.applied(db)

    migrations.apply(db)

    assert db.schema == schema
    assert migrations.applied(db) == applied
    assert migrations.pending(db) == []


def test_migrations_names_are_numbered_in_order():
    names = [m.name for m in migrations._migrations]

    assert all(re.fullmatch(r"m\d{3}_[a-z]+(_[a-z0-9]+)+", name) for name in names)
    assert [int(name[1:4]) for name in names] == list(range(1, len(names) + 1))


def test_migrations_file_with_only_m001_upgrades_and_finds_old_rows(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m002_add_search_index")
    assert not old["messages_fts"].exists()
    old["conversations"].insert_all([
        {"id": "a" * 32, "title": "Sourdough starter", "created_at": "2024-05-01T10:00:00.000Z",
         "updated_at": "2024-05-01T10:00:00.000Z"},
        {"id": "b" * 32, "title": "Kubernetes notes", "created_at": "2024-05-02T10:00:00.000Z",
         "updated_at": "2024-05-02T10:00:00.000Z"},
    ])
    old["messages"].insert_all([
        {"conversation_id": "b" * 32, "seq": 1, "role": "user",
         "content": "How do I drain a node?", "created_at": "2024-05-02T10:00:00.000Z",
         "updated_at": "2024-05-02T10:00:00.000Z"},
    ])
    old.close()

    store = Store.open(path)

    assert [m.name for m in migrations.pending(store.db)] == []
    assert [(h.conversation_id, h.message_id) for h in store.search("drain")] == [("b" * 32, 1)]
    assert [(h.conversation_id, h.message_id) for h in store.search("sourdough")] == [
        ("a" * 32, None)]
    store.close()


def test_migrations_upgraded_index_stays_in_sync(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m002_add_search_index")
    old["conversations"].insert({"id": "a" * 32, "title": "Old title",
                                 "created_at": "2024-05-01T10:00:00.000Z",
                                 "updated_at": "2024-05-01T10:00:00.000Z"})
    old["messages"].insert({"conversation_id": "a" * 32, "seq": 1, "role": "user",
                            "content": "quince jam", "created_at": "2024-05-01T10:00:00.000Z",
                            "updated_at": "2024-05-01T10:00:00.000Z"})
    old.close()
    store = Store.open(path)

    store.rename_conversation("a" * 32, "Preserves")
    store.update_message(1, content="plum jam")

    assert store.search("old") == []
    assert store.search("quince") == []
    assert [h.message_id for h in store.search("preserves")] == [None]
    assert [h.message_id for h in store.search("plum")] == [1]
    store.close()


def test_migrations_chats_before_versions_keep_their_turns_in_order(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m016_add_message_versions")
    stamp = "2024-05-01T10:00:00.000Z"
    old["conversations"].insert({"id": "a" * 32, "title": "Bread", "created_at": stamp,
                                 "updated_at": stamp})
    old["messages"].insert_all([
        {"conversation_id": "a" * 32, "seq": seq, "role": role, "content": text,
         "created_at": stamp, "updated_at": stamp}
        for seq, role, text in [(1, "user", "How?"), (2, "assistant", "Knead."),
                                (3, "user", "How long?"), (4, "assistant", "Ten minutes.")]])
    old.close()

    store = Store.open(path)
    shown = store.messages("a" * 32)
    assert [(m.seq, m.content, m.version, m.versions) for m in shown] == [
        (1, "How?", 1, 1), (2, "Knead.", 1, 1), (3, "How long?", 1, 1),
        (4, "Ten minutes.", 1, 1)]
    assert [m.parent_id for m in shown] == [None, *(m.id for m in shown[:-1])]
    # A new turn follows the old ones, and a new version of an old answer sits beside it.
    store.add_message("a" * 32, "user", "And then?")
    again = store.add_message("a" * 32, "assistant", "Fold it.", version_of=shown[1].id)
    assert (again.seq, again.parent_id) == (2, shown[0].id)
    assert [m.content for m in store.messages("a" * 32)] == ["How?", "Fold it."]
    store.close()


def m016_file_with_history(path) -> None:
    """A database as the studio left it before m017: a chat, its messages, one reply cut
    off while streaming."""
    old = Database(path)
    migrations.apply(old, stop_before="m017_add_search_prefix_indexes")
    old["conversations"].insert({"id": "a" * 32, "title": "Sourdough toast",
                                 "created_at": "2024-05-01T10:00:00.000Z",
                                 "updated_at": "2024-05-01T10:00:00.000Z"})
    parent_id = None  # one branch: each message follows the one before it (m016)
    for seq, (role, content, status) in enumerate([
            ("user", "sourdough toast or rye?", "complete"),
            ("assistant", "Toast the sourdough.", "complete"),
            ("assistant", "half a rep", "streaming")], start=1):
        parent_id = old["messages"].insert({
            "conversation_id": "a" * 32, "seq": seq, "role": role, "parent_id": parent_id,
            "content": content, "status": status, "backend": "ollama",
            "model": "llama3.2:3b" if role == "assistant" else "",
            "created_at": f"2024-05-01T10:00:0{seq}.000Z",
            "updated_at": f"2024-05-01T10:00:0{seq}.000Z"}).last_pk
    old.close()


def test_migrations_m017_rebuilds_search_with_prefix_indexes_once(tmp_path):
    path = tmp_path / "studio.db"
    m016_file_with_history(path)

    store = Store.open(path)

    assert "prefix='1 2 3'" in store.db["messages_fts"].schema
    assert "prefix='1 2 3'" in store.db["conversations_fts"].schema
    assert [h.message_id for h in store.search("sourdough t")] == [None, 2, 1]  # title first
    new = store.add_message("a" * 32, "user", "tomato on top?")  # the triggers still index
    assert [h.message_id for h in store.search("to")][:2] == [None, new.id]
    store.close()
    applied = [m.name for m in migrations.applied(Database(path))]
    assert applied.count("m017_add_search_prefix_indexes") == 1
    Store.open(path).close()  # opening again rebuilds nothing
    assert [m.name for m in migrations.applied(Database(path))] == applied


def test_migrations_m018_start_up_and_model_use_read_indexes(tmp_path):
    path = tmp_path / "studio.db"
    m016_file_with_history(path)
    store = Store.open(path)

    def plan(sql: str) -> str:
        return " ".join(str(row[-1]) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}"))

    assert "USING INDEX messages_streaming" in plan(
        "UPDATE messages SET status = 'partial' WHERE status = 'streaming'")
    from studio.store.models import _LAST_OLLAMA_USES
    model_plan = plan(_LAST_OLLAMA_USES)
    assert "SCAN messages" not in model_plan and "messages_model_use" in model_plan
    assert store.mark_interrupted_streams("cut off") == 1
    store.close()


def test_migrations_m019_keeps_the_comfyui_host_of_prompts_and_images(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m019_add_comfy_host_to_image_items")
    assert "comfy_host" not in old["image_job_items"].columns_dict
    old["image_jobs"].insert({"id": "j" * 32, "user": "ann", "lane": "ann", "workflow": "w",
                              "title": "fox", "status": "running", "total": 1, "spec": "{}",
                              "error": "", "created_at": "2024-05-01T10:00:00.000Z",
                              "updated_at": "2024-05-01T10:00:00.000Z"})
    old["image_job_items"].insert({"job_id": "j" * 32, "seq": 1, "status": "queued",
                                   "prompt_id": "p1", "params": "{}", "graph": "{}",
                                   "created_at": "2024-05-01T10:00:00.000Z",
                                   "updated_at": "2024-05-01T10:00:00.000Z"})
    old.close()

    store = Store.open(path)
    for table in ("image_job_items", "images"):
        assert store.db[table].columns_dict["comfy_host"] is str
    from studio.store.images import ImageStore
    [item] = ImageStore(store).sent_items()
    assert (item.prompt_id, item.comfy_host) == ("p1", None)  # before: the first host
    store.close()
    applied = [m.name for m in migrations.applied(Database(path))]
    Store.open(path).close()
    assert [m.name for m in migrations.applied(Database(path))] == applied
