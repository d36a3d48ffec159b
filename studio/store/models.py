"""Store methods for the Models tab: the GPU-sharing action log, when models were last used,
and the last list of Ollama models with what each can do.

Wraps the studio's ``Store``: reads on the thread's own connection, writes in
``store.transaction()``, like ``db.py`` does; hands out plain dataclasses. Tables come
from migrations ``m005_create_models_tables`` and ``m014_create_local_models``. Reads the chat and gallery tables only to learn
when a model was last used. No gradio imports here; nothing runs at import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from ..errors import InvalidInput

TRIGGERS = ("image_job", "chat", "manual")
ACTIONS = ("unload_ollama", "free_comfyui", "none")
OUTCOMES = ("done", "failed", "asked", "declined", "skipped")
BACKENDS = ("ollama", "comfyui")
# The latest Ollama reply of each model, without reading every message: a skip scan of
# the partial index messages_model_use (m018), one seek for the next model name and one
# for its newest reply, so the cost follows the number of models, not of messages.
_LAST_OLLAMA_USES = """
    WITH RECURSIVE used(model) AS (
        SELECT min(model) FROM messages WHERE role = 'assistant' AND backend = 'ollama'
        UNION ALL
        SELECT (SELECT min(model) FROM messages
                WHERE role = 'assistant' AND backend = 'ollama' AND model > used.model)
        FROM used WHERE used.model IS NOT NULL
    )
    SELECT 'ollama', model,
           (SELECT max(created_at) FROM messages
            WHERE role = 'assistant' AND backend = 'ollama' AND model = used.model)
    FROM used WHERE model IS NOT NULL"""


@dataclass(frozen=True)
class GpuAction:
    """One row of the GPU-sharing log. Byte figures are None when unknown."""

    id: int
    created_at: str
    trigger: str
    policy: str
    action: str
    outcome: str
    models: list[str]
    message: str
    free_bytes: int | None
    needed_bytes: int | None
    freed_bytes: int | None


@dataclass(frozen=True)
class LocalModelRow:
    """One Ollama model as last listed. ``capabilities`` is None when the server didn't
    report them; ``listed_at`` is when that list was saved."""

    name: str
    digest: str
    size: int
    family: str
    parameter_size: str
    quantization: str
    modified_at: str
    capabilities: tuple[str, ...] | None
    listed_at: str = ""


class ModelsStore:
    """The Models tab's tables, on a shared ``Store``. Safe to share between threads."""

    def __init__(self, store):
        self._store = store

    # GPU actions

    def log_gpu_action(self, *, trigger: str, policy: str, action: str, outcome: str,
                       message: str, models: Iterable[str] = (), free_bytes: int | None = None,
                       needed_bytes: int | None = None, freed_bytes: int | None = None
                       ) -> GpuAction:
        """Append one action to the log and return it. Raises InvalidInput for a trigger,
        action or outcome outside ``TRIGGERS`` / ``ACTIONS`` / ``OUTCOMES``."""
        for value, allowed, what in ((trigger, TRIGGERS, "trigger"), (action, ACTIONS, "action"),
                                     (outcome, OUTCOMES, "outcome")):
            if value not in allowed:
                raise InvalidInput(f"Unknown GPU action {what} {value!r}.",
                                   hint=f"Use one of: {', '.join(allowed)}.")
        store = self._store
        with store.transaction():
            created = store._now()
            cursor = store.db.execute(
                "INSERT INTO gpu_actions (created_at, trigger, policy, action, outcome, models, "
                "message, free_bytes, needed_bytes, freed_bytes) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [created, trigger, policy, action, outcome, json.dumps(list(models)), message,
                 free_bytes, needed_bytes, freed_bytes])
            row_id = cursor.lastrowid
        return GpuAction(row_id, created, trigger, policy, action, outcome, list(models), message,
                         free_bytes, needed_bytes, freed_bytes)

    def gpu_actions(self, limit: int = 50) -> list[GpuAction]:
        """The latest ``limit`` actions, newest first."""
        store = self._store
        cursor = store.db.execute(
            "SELECT id, created_at, trigger, policy, action, outcome, models, message, "
            "free_bytes, needed_bytes, freed_bytes FROM gpu_actions "
            "ORDER BY id DESC LIMIT ?", [int(limit)])
        rows = cursor.fetchall()
        return [GpuAction(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "[]"), r[7],
                          r[8], r[9], r[10]) for r in rows]

    # Model use

    def touch_model(self, backend: str, name: str) -> None:
        """Record that ``name`` was used now (ComfyUI files as ``'<folder>/<file>'``)."""
        if backend not in BACKENDS:
            raise InvalidInput(f"Unknown model backend {backend!r}.",
                               hint=f"Use one of: {', '.join(BACKENDS)}.")
        store = self._store
        with store.transaction():
            store.db.execute(
                "INSERT INTO model_uses (backend, name, last_used_at) VALUES (?, ?, ?) "
                "ON CONFLICT (backend, name) DO UPDATE SET last_used_at = excluded.last_used_at",
                [backend, name, store._now()])

    def favourite_output_paths(self) -> list[str]:
        """Paths (relative to the outputs folder) of favourite gallery images and their
        thumbnails: retention never deletes them. Empty while the gallery has no
        favourite column (``favourite``, ``favorite`` or ``starred``)."""
        store = self._store
        if "images" not in store.db.table_names():
            return []
        columns = store.db["images"].columns_dict
        flag = next((c for c in ("favourite", "favorite", "starred") if c in columns), None)
        if flag is None:
            return []
        rows = store.db.execute(
            f"SELECT path, thumb FROM images WHERE {flag}").fetchall()  # noqa: S608 - fixed names
        return [p for row in rows for p in row if p]

    def last_used(self) -> dict[tuple[str, str], str]:
        """``{(backend, name): ISO time}`` of the latest known use of each model.

        Merges ``model_uses`` with what the chat history says (the model that answered each
        Ollama reply) and, once the gallery exists, the checkpoint of each stored image.
        """
        store = self._store
        found: dict[tuple[str, str], str] = {}

        def merge(rows) -> None:
            for backend, name, when in rows:
                if name and when and when > found.get((backend, name), ""):
                    found[(backend, name)] = when

        tables = set(store.db.table_names())
        merge(store.db.execute("SELECT backend, name, last_used_at FROM model_uses").fetchall())
        merge(store.db.execute(_LAST_OLLAMA_USES).fetchall())
        if "images" in tables:  # the gallery (Images tab) stores the checkpoint file name
            merge(store.db.execute(
                "SELECT 'comfyui', model, max(created_at) FROM images GROUP BY model"
            ).fetchall())
        return found

    # The last list of Ollama models

    def replace_local_models(self, models: Iterable[LocalModelRow]) -> str:
        """Keep ``models`` as the last list of Ollama models (the previous one goes), in one
        transaction; returns the time stamped on them."""
        store = self._store
        rows = [(m.name, m.digest, int(m.size), m.family, m.parameter_size, m.quantization,
                 m.modified_at, None if m.capabilities is None else json.dumps(list(m.capabilities)))
                for m in models]
        with store.transaction():
            listed = store._now()
            store.db.execute("DELETE FROM local_models")
            store.db.conn.executemany(
                "INSERT INTO local_models (name, digest, size, family, parameter_size, "
                "quantization, modified_at, capabilities, listed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                [(*row, listed) for row in rows])
        return listed

    def local_models(self) -> list[LocalModelRow]:
        """The last saved list of Ollama models, by name ([] before Ollama was first asked)."""
        store = self._store
        rows = store.db.execute(
            "SELECT name, digest, size, family, parameter_size, quantization, modified_at, "
            "capabilities, listed_at FROM local_models ORDER BY name").fetchall()
        return [LocalModelRow(*row[:7], None if row[7] is None else tuple(json.loads(row[7])),
                              row[8]) for row in rows]
