"""A conversation of thousands of messages, written straight into a data folder's database
(one bulk insert), for the tests and the benchmark of long chats."""

from __future__ import annotations

from pathlib import Path

MODEL = "llama3.2:latest"  # on Ollama, as the studio stores a chat's model


def make_long_chat(data_dir, n: int, marker: str) -> str:
    """A conversation titled "long <marker>" of n messages ("<marker> message <i>: …",
    user and assistant in turn) in ``data_dir``/studio.db; returns its id."""
    from studio.store.db import Store

    store = Store.open(Path(data_dir) / "studio.db")
    try:
        conv = store.create_conversation(f"long {marker}", model=MODEL, backend="ollama")
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
