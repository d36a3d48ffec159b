"""The studio database's schema history, as ``sqlite_utils.Migrations`` steps.

Append-only: once a step has shipped, never edit, rename or reorder it (its name is
its identity in ``_sqlite_migrations``); add a new ``mNNN_verb_object`` step instead.
Nothing runs at import time: ``Store.open`` calls ``migrations.apply(db)``.
Only this module and ``store.py`` write SQL. No gradio imports here.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.db import ForeignKey
from sqlite_utils.migrations import Migrations

migrations = Migrations("studio")


@migrations()
def m001_create_chat_tables(db: Database) -> None:
    db["conversations"].create(
        {
            # uuid4 hex, made by the store: ids can be shown in URLs and exported
            # without revealing how many chats exist.
            "id": str,
            "title": str,
            "user": str,
            "model": str,
            "backend": str,
            "system_prompt": str,
            "params": str,  # JSON object of generation parameters
            "created_at": str,  # ISO 8601 UTC with milliseconds, sorts as text
            "updated_at": str,
            "pinned": int,
        },
        pk="id",
        not_null=["title", "user", "model", "backend", "system_prompt", "params",
                  "created_at", "updated_at", "pinned"],
        defaults={"title": "", "user": "owner", "model": "", "backend": "",
                  "system_prompt": "", "params": "{}", "pinned": 0},
    )
    db["messages"].create(
        {
            "id": int,
            "conversation_id": str,
            "seq": int,  # position in the conversation, 1-based
            "role": str,
            "content": str,
            "thinking": str,
            "images": str,  # JSON list of file paths
            "model": str,
            "backend": str,
            # 'complete' | 'partial' | 'error' | 'streaming'. Checked in the store, not by a
            # CHECK constraint, so a new status needs no table rebuild.
            "status": str,
            "error": str,
            # Stats stay NULL when the backend did not report them (unknown is not zero).
            "prompt_tokens": int,
            "completion_tokens": int,
            "ttft_ms": float,
            "tokens_per_s": float,
            "load_ms": float,
            "total_ms": float,
            "cost_usd": float,
            "meta": str,  # JSON object for whatever a backend returns beyond the above
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[
            # Deleting a conversation takes its messages with it.
            ForeignKey("messages", "conversation_id", "conversations", "id",
                       on_delete="CASCADE"),
        ],
        not_null=["conversation_id", "seq", "role", "content", "thinking", "images",
                  "model", "backend", "status", "error", "meta", "created_at", "updated_at"],
        defaults={"content": "", "thinking": "", "images": "[]", "model": "",
                  "backend": "", "status": "complete", "error": "", "meta": "{}"},
    )
    # Also serves the foreign key (cascade deletes) and "next seq" lookups.
    db["messages"].create_index(["conversation_id", "seq"], unique=True)
    db["conversations"].create_index(["updated_at"])
    db["conversations"].create_index(["user", "updated_at"])
    # The sidebar lists pinned chats first, then the most recent: with pinned in the
    # index that is a plain index walk that stops after `limit` rows, no sort.
    db["conversations"].create_index(["pinned", "updated_at"])
    db["conversations"].create_index(["user", "pinned", "updated_at"])


@migrations()
def m002_add_search_index(db: Database) -> None:
    # External-content FTS5 keyed on messages.id (an INTEGER PRIMARY KEY, so VACUUM
    # keeps it stable): the text is not stored twice.
    db.execute("""
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""")
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    # Hand-written rather than enable_fts(create_triggers=True): "AFTER UPDATE OF content"
    # skips re-indexing on the status/stats-only updates a streaming reply makes.
    db.execute("""
        CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""")
    db.execute("""
        CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
        END""")
    db.execute("""
        CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""")

    # conversations has a TEXT primary key, so its rowid may change on VACUUM and an
    # external-content index could point at the wrong row. This one stores the id
    # (unindexed) with the title instead; titles are short, so the copy costs little.
    db.execute("""
        CREATE VIRTUAL TABLE conversations_fts USING fts5(
            conversation_id UNINDEXED, title,
            tokenize='unicode61 remove_diacritics 2'
        )""")
    db.execute("INSERT INTO conversations_fts(conversation_id, title) "
               "SELECT id, title FROM conversations")
    db.execute("""
        CREATE TRIGGER conversations_fts_ai AFTER INSERT ON conversations BEGIN
            INSERT INTO conversations_fts(conversation_id, title) VALUES (new.id, new.title);
        END""")
    db.execute("""
        CREATE TRIGGER conversations_fts_ad AFTER DELETE ON conversations BEGIN
            DELETE FROM conversations_fts WHERE conversation_id = old.id;
        END""")
    # "OF title": touching updated_at on every new message must not rewrite the index.
    db.execute("""
        CREATE TRIGGER conversations_fts_au AFTER UPDATE OF title ON conversations BEGIN
            DELETE FROM conversations_fts WHERE conversation_id = old.id;
            INSERT INTO conversations_fts(conversation_id, title) VALUES (new.id, new.title);
        END""")
