"""ModelsStore: the GPU-sharing log and model last-use, on a fresh migrated store."""

from __future__ import annotations

import pytest
from sqlite_utils import Database

from studio.errors import InvalidInput
from studio.store.migrations import migrations
from studio.store.models import LocalModelRow, ModelsStore


@pytest.fixture
def models_store(store):
    return ModelsStore(store)


def test_migration_creates_models_tables():
    db = Database(memory=True)
    migrations.apply(db)

    assert db["gpu_actions"].columns_dict == {
        "id": int, "created_at": str, "trigger": str, "policy": str, "action": str,
        "outcome": str, "models": str, "message": str, "free_bytes": int, "needed_bytes": int,
        "freed_bytes": int}
    assert db["model_uses"].columns_dict == {"backend": str, "name": str, "last_used_at": str}
    assert db["model_uses"].pks == ["backend", "name"]


def test_store_models_logs_actions_newest_first(models_store):
    models_store.log_gpu_action(trigger="image_job", policy="automatic", action="unload_ollama",
                                outcome="done", message="Unloaded llama3.2.",
                                models=["llama3.2:latest"], free_bytes=1, needed_bytes=2,
                                freed_bytes=3)
    models_store.log_gpu_action(trigger="chat", policy="ask", action="free_comfyui",
                                outcome="asked", message="Free ComfyUI?")

    second, first = models_store.gpu_actions()

    assert (second.trigger, second.outcome, second.models, second.free_bytes) == (
        "chat", "asked", [], None)
    assert (first.action, first.models, first.freed_bytes) == (
        "unload_ollama", ["llama3.2:latest"], 3)
    assert first.created_at < second.created_at


def test_store_models_limit(models_store):
    for i in range(5):
        models_store.log_gpu_action(trigger="manual", policy="off", action="none",
                                    outcome="skipped", message=str(i))
    assert [a.message for a in models_store.gpu_actions(limit=2)] == ["4", "3"]


@pytest.mark.parametrize("field, value", [("trigger", "cron"), ("action", "reboot"),
                                          ("outcome", "maybe")])
def test_store_models_rejects_unknown_values(models_store, field, value):
    kwargs = dict(trigger="manual", policy="off", action="none", outcome="skipped", message="")
    kwargs[field] = value
    with pytest.raises(InvalidInput, match=value):
        models_store.log_gpu_action(**kwargs)


def test_store_models_last_used_merges_touches_and_chats(store, models_store):
    conv = store.create_conversation("t")
    store.add_message(conv.id, "user", "hi")
    reply = store.add_message(conv.id, "assistant", "hello", model="llama3.2:latest",
                              backend="ollama")
    models_store.touch_model("comfyui", "checkpoints/sdxl.safetensors")
    models_store.touch_model("comfyui", "checkpoints/sdxl.safetensors")

    used = models_store.last_used()

    assert used[("ollama", "llama3.2:latest")] == reply.created_at
    assert used[("comfyui", "checkpoints/sdxl.safetensors")] > reply.created_at
    assert len(used) == 2


def test_store_models_touch_unknown_backend(models_store):
    with pytest.raises(InvalidInput):
        models_store.touch_model("openrouter", "x")


def test_store_models_favourites_empty_without_a_favourite_column(models_store):
    assert models_store.favourite_output_paths() == []


def test_store_models_favourites_read_from_the_gallery(store, models_store):
    for path, fav in (("a.png", 1), ("b.png", 0)):
        store.db["images"].insert({"created_at": "2025-01-01T00:00:00.000Z", "path": path,
                                   "thumb": f"thumbs/{path}.webp", "workflow": "sdxl",
                                   "favourite": fav})
    assert models_store.favourite_output_paths() == ["a.png", "thumbs/a.png.webp"]


def test_migration_creates_local_models_table():
    db = Database(memory=True)
    migrations.apply(db)

    assert db["local_models"].columns_dict == {
        "name": str, "digest": str, "size": int, "family": str, "parameter_size": str,
        "quantization": str, "modified_at": str, "capabilities": str, "listed_at": str}
    assert db["local_models"].pks == ["name"]


def test_store_models_local_models_replace_the_last_list(models_store):
    assert models_store.local_models() == []
    first = [LocalModelRow("llama3.2:latest", "a" * 64, 2_000, "llama", "3.2B", "Q4_K_M",
                           "2026-01-01T00:00:00+00:00", ("completion",)),
             LocalModelRow("old:latest", "b" * 64, 10, "llama", "", "", "", None)]
    models_store.replace_local_models(first)
    models_store.replace_local_models([first[0], LocalModelRow(
        "nomic-embed-text:latest", "c" * 64, 274, "nomic-bert", "137M", "F16", "",
        ("embedding",))])

    rows = models_store.local_models()
    assert [(r.name, r.capabilities) for r in rows] == [
        ("llama3.2:latest", ("completion",)), ("nomic-embed-text:latest", ("embedding",))]
    assert rows[0].size == 2_000 and rows[0].listed_at


def test_store_models_local_models_keep_unknown_capabilities_apart(models_store):
    models_store.replace_local_models([LocalModelRow("m:latest", "", 1, "", "", "", "", None),
                                       LocalModelRow("n:latest", "", 1, "", "", "", "", ())])

    assert [r.capabilities for r in models_store.local_models()] == [None, ()]
