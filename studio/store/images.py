"""The Images tab's tables: jobs, their items (one ComfyUI prompt each) and the gallery.

Wraps the studio's ``Store`` (``StoreTables``: reads on the thread's own connection, each
write one short ``store.transaction()``). Returns plain dataclasses. The
gallery stays fast with tens of thousands of images: newest first is the rowid order,
the filters have ``(column, id)`` indexes, paging reads one page, and prompt search is an
FTS5 index kept in step with the rows here (``images_fts``). The image files themselves
are written by ``images.py`` before a row is added here, so a row always has its files.

No gradio imports here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .db import StoreTables, fts_match_query

JOB_STATES = ("queued", "running", "done", "partial", "failed", "cancelled")
ACTIVE_JOB_STATES = ("queued", "running")
ITEM_STATES = ("pending", "queued", "running", "done", "failed", "cancelled")
_JOB_FIELDS = ("status", "error", "finished_at", "title", "total")
_ITEM_FIELDS = ("status", "prompt_id", "comfy_host", "error", "images", "timings", "graph",
                "params")
_IMAGE_FIELDS = ("job_id", "item_id", "user", "path", "thumb", "width", "height", "bytes",
                 "prompt", "negative", "seed", "workflow", "model", "params", "graph", "timings",
                 "comfy_prompt_id", "comfy_filename", "comfy_host")
_JSON_FIELDS = ("params", "graph", "timings", "spec")


@dataclass(frozen=True)
class ImageJob:
    id: str
    user: str
    lane: str
    workflow: str
    title: str
    status: str
    total: int
    spec: dict
    error: str
    created_at: str
    updated_at: str
    finished_at: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATES


@dataclass(frozen=True)
class JobItem:
    id: int
    job_id: str
    seq: int
    status: str
    prompt_id: str | None
    params: dict
    graph: dict
    error: str
    images: int
    timings: dict
    created_at: str
    updated_at: str
    comfy_host: str | None = None  # the COMFYUI_URL host its prompt went to


@dataclass(frozen=True)
class GalleryImage:
    id: int
    job_id: str | None
    item_id: int | None
    user: str
    created_at: str
    path: str  # relative to the outputs folder
    thumb: str
    width: int | None
    height: int | None
    bytes: int | None
    prompt: str
    negative: str
    seed: int | None
    workflow: str
    model: str
    params: dict
    graph: dict
    timings: dict
    comfy_prompt_id: str | None
    comfy_filename: str | None
    favourite: bool = False
    comfy_host: str | None = None  # the COMFYUI_URL host that made it


@dataclass(frozen=True)
class GalleryPage:
    images: list[GalleryImage]
    total: int  # matching images in all
    page: int  # 1-based, clamped to the pages there are
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


class ImageStore(StoreTables):
    """Image jobs and the gallery, on the studio's ``Store``. Safe to share between threads."""

    # Jobs

    def create_job(self, *, user: str, lane: str, workflow: str, title: str, spec: Mapping,
                   items: Sequence[tuple[Mapping, Mapping]]) -> ImageJob:
        """Insert a job and its items (``(params, graph)`` pairs, in order) in one transaction."""
        job_id = uuid.uuid4().hex
        with self.store.transaction():
            now = self.store._now()
            self.db.execute(
                "INSERT INTO image_jobs (id, user, lane, workflow, title, status, total, spec, "
                "error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, '', ?, ?)",
                [job_id, user, lane, workflow, title, len(items), json.dumps(dict(spec)), now, now])
            self.db.conn.executemany(
                "INSERT INTO image_job_items (job_id, seq, status, params, graph, created_at, "
                "updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                [(job_id, seq, json.dumps(dict(params)), json.dumps(dict(graph)), now, now)
                 for seq, (params, graph) in enumerate(items, start=1)])
            return self._get_job(job_id)

    def get_job(self, job_id: str, *, user: str | None = None) -> ImageJob | None:
        """The job; with ``user``, only if it is theirs (another's is None, like a missing one)."""
        return self._get_job(job_id, user)

    def list_jobs(self, *, user: str | None = None, limit: int = 20) -> list[ImageJob]:
        """Newest first."""
        where, params = ("WHERE user = ?", [user]) if user is not None else ("", [])
        rows = self._select(f"SELECT * FROM image_jobs {where} "
                            "ORDER BY created_at DESC, rowid DESC LIMIT ?", [*params, limit])
        return [_to_job(row) for row in rows]

    def active_jobs(self) -> list[ImageJob]:
        """Jobs still queued or running, oldest first (restart pickup, the scheduler)."""
        rows = self._select("SELECT * FROM image_jobs WHERE status IN ('queued', 'running') "
                            "ORDER BY created_at, rowid")
        return [_to_job(row) for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Change any of status, error, finished_at, title, total (sets updated_at)."""
        _reject_unknown("update_job", fields, _JOB_FIELDS)
        if "status" in fields:
            _check_state(fields["status"], JOB_STATES)
        with self.store.transaction():
            values = {**fields, "updated_at": self.store._now()}
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            self.db.execute(f"UPDATE image_jobs SET {assignments} WHERE id = :job_id",
                            {**values, "job_id": job_id})

    def now(self) -> str:
        return self.store._now()

    # Items

    def job_items(self, job_id: str, statuses: Iterable[str] | None = None) -> list[JobItem]:
        """The job's items in order, optionally only those in ``statuses``."""
        params: list[Any] = [job_id]
        where = "job_id = ?"
        if statuses is not None:
            states = list(statuses)
            where += f" AND status IN ({', '.join('?' for _ in states)})"
            params += states
        rows = self._select(f"SELECT * FROM image_job_items WHERE {where} ORDER BY seq", params)
        return [_to_item(row) for row in rows]

    def get_item(self, item_id: int) -> JobItem | None:
        rows = self._select("SELECT * FROM image_job_items WHERE id = ?", [item_id])
        return _to_item(rows[0]) if rows else None

    def item_counts(self, job_id: str) -> dict[str, int]:
        """{status: number of items}, and ``images``: images stored for the job."""
        rows = self.db.execute("SELECT status, count(*), total(images) FROM image_job_items "
                               "WHERE job_id = ? GROUP BY status", [job_id]).fetchall()
        counts = {status: count for status, count, _ in rows}
        counts["images"] = int(sum(images for _, _, images in rows))
        return counts

    def update_item(self, item_id: int, **fields: Any) -> None:
        """Change any of status, prompt_id, comfy_host, error, images, timings (dict), graph,
        params."""
        _reject_unknown("update_item", fields, _ITEM_FIELDS)
        if "status" in fields:
            _check_state(fields["status"], ITEM_STATES)
        values = {k: (json.dumps(v) if k in _JSON_FIELDS else v) for k, v in fields.items()}
        with self.store.transaction():
            values["updated_at"] = self.store._now()
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            self.db.execute(f"UPDATE image_job_items SET {assignments} WHERE id = :item_id",
                            {**values, "item_id": item_id})

    def cancel_pending_items(self, job_id: str, error: str) -> int:
        """Mark the job's items not sent yet as cancelled; returns how many."""
        with self.store.transaction():
            return self.db.execute(
                "UPDATE image_job_items SET status = 'cancelled', error = ?, updated_at = ? "
                "WHERE job_id = ? AND status = 'pending'",
                [error, self.store._now(), job_id]).rowcount

    def fail_pending_items(self, job_id: str, error: str) -> int:
        with self.store.transaction():
            return self.db.execute(
                "UPDATE image_job_items SET status = 'failed', error = ?, updated_at = ? "
                "WHERE job_id = ? AND status = 'pending'",
                [error, self.store._now(), job_id]).rowcount

    def sent_items(self) -> list[JobItem]:
        """Items handed to ComfyUI whose outcome isn't stored yet (restart pickup)."""
        rows = self._select("SELECT * FROM image_job_items WHERE status IN ('queued', 'running') "
                            "AND prompt_id IS NOT NULL ORDER BY id")
        return [_to_item(row) for row in rows]

    # Gallery

    def names_file(self, rel: str) -> bool:
        """Whether a gallery row names ``rel`` (a path under outputs/) as its picture or
        thumbnail: the start-up sweep of pending files asks this of each one."""
        return self.db.execute("SELECT 1 FROM images WHERE path = ? OR thumb = ? LIMIT 1",
                               [rel, rel]).fetchone() is not None

    def add_image(self, **fields: Any) -> GalleryImage:
        """Record one stored image (its files must already be in place) and index its prompt."""
        _reject_unknown("add_image", fields, _IMAGE_FIELDS)
        row = {k: (json.dumps(v) if k in _JSON_FIELDS else v) for k, v in fields.items()}
        with self.store.transaction():
            row["created_at"] = self.store._now()
            cursor = self.db.execute(
                f"INSERT INTO images ({', '.join(row)}) "
                f"VALUES ({', '.join(':' + name for name in row)})", row)
            image_id = cursor.lastrowid
            self.db.execute("INSERT INTO images_fts (rowid, prompt) VALUES (?, ?)",
                            [image_id, row.get("prompt") or ""])
            return self._get_image(image_id)

    def get_image(self, image_id: int, *, user: str | None = None) -> GalleryImage | None:
        """The image; with ``user``, only if it is theirs (another's is None, like a missing one)."""
        return self._get_image(image_id, user)

    def delete_image(self, image_id: int, *, user: str | None = None) -> GalleryImage | None:
        """Remove the row and its index entry; returns what was deleted (its files are the
        caller's to remove) or None if it was already gone (or, with ``user``, not theirs)."""
        with self.store.transaction():
            image = self._get_image(image_id, user)
            if image is None:
                return None
            self.db.execute("INSERT INTO images_fts (images_fts, rowid, prompt) "
                            "VALUES ('delete', ?, ?)", [image_id, image.prompt])
            self.db.execute("DELETE FROM images WHERE id = ?", [image_id])
            return image

    def set_favourite(self, image_id: int, favourite: bool, *,
                      user: str | None = None) -> GalleryImage | None:
        """Mark or unmark an image as a favourite (kept by output retention); returns the
        updated image, or None when it is gone (or, with ``user``, not theirs)."""
        mine, params = ("AND user = ?", [user]) if user is not None else ("", [])
        with self.store.transaction():
            self.db.execute(f"UPDATE images SET favourite = ? WHERE id = ? {mine}",
                            [int(bool(favourite)), image_id, *params])
            return self._get_image(image_id, user)

    def images_of_job(self, job_id: str) -> list[GalleryImage]:
        rows = self._select("SELECT * FROM images WHERE job_id = ? ORDER BY id", [job_id])
        return [_to_image(row) for row in rows]

    def gallery(self, *, query: str = "", workflow: str | None = None, model: str | None = None,
                user: str | None = None, page: int = 1, per_page: int = 48) -> GalleryPage:
        """One page of images, newest first, matching every filter given.

        ``query`` searches prompt text (every word, the last as a prefix); any text is
        safe, FTS syntax in it is matched literally. ``page`` is clamped to 1..pages.
        """
        clauses, params = [], []
        for column, value in (("workflow", workflow), ("model", model), ("user", user)):
            if value:
                clauses.append(f"i.{column} = ?")
                params.append(value)
        source = "images i"
        if query and query.strip():
            match = fts_match_query(query)
            if not match:
                return GalleryPage([], 0, 1, per_page)
            source = "images_fts JOIN images i ON i.id = images_fts.rowid"
            clauses.insert(0, "images_fts MATCH ?")
            params.insert(0, match)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        per_page = max(1, int(per_page))
        with self.store.snapshot():  # the count and the page agree
            total = self.db.execute(f"SELECT count(*) FROM {source} {where}",
                                    params).fetchone()[0]
            pages = max(1, -(-total // per_page))
            page = min(max(1, int(page)), pages)
            rows = self._select(f"SELECT i.* FROM {source} {where} ORDER BY i.id DESC "
                                "LIMIT ? OFFSET ?", [*params, per_page, (page - 1) * per_page])
        return GalleryPage([_to_image(row) for row in rows], total, page, per_page)

    def gallery_filters(self, *, user: str | None = None) -> tuple[list[str], list[str]]:
        """(workflows, models) present in the gallery (``user``'s part of it), sorted."""
        mine, params = ("AND user = ?", [user]) if user is not None else ("", [])
        workflows = [r[0] for r in self.db.execute(
            f"SELECT DISTINCT workflow FROM images WHERE workflow != '' {mine} "
            "ORDER BY workflow", params)]
        models = [r[0] for r in self.db.execute(
            f"SELECT DISTINCT model FROM images WHERE model != '' {mine} ORDER BY model",
            params)]
        return workflows, models

    def count_images(self) -> int:
        return self.db.execute("SELECT count(*) FROM images").fetchone()[0]

    # Helpers

    def _select(self, sql: str, params: Any = ()) -> list[dict]:
        return self.store._select(sql, params)

    def _get_job(self, job_id: str, user: str | None = None) -> ImageJob | None:
        mine, params = ("AND user = ?", [user]) if user is not None else ("", [])
        rows = self._select(f"SELECT * FROM image_jobs WHERE id = ? {mine}", [job_id, *params])
        return _to_job(rows[0]) if rows else None

    def _get_image(self, image_id: int, user: str | None = None) -> GalleryImage | None:
        mine, params = ("AND user = ?", [user]) if user is not None else ("", [])
        rows = self._select(f"SELECT * FROM images WHERE id = ? {mine}", [image_id, *params])
        return _to_image(rows[0]) if rows else None


def _loads(text: str | None) -> Any:
    # Rows are only written here, as json.dumps output; parsing is data-only.
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _to_job(row: dict) -> ImageJob:
    return ImageJob(**{**row, "spec": _loads(row["spec"])})


def _to_item(row: dict) -> JobItem:
    return JobItem(**{**row, "params": _loads(row["params"]), "graph": _loads(row["graph"]),
                      "timings": _loads(row["timings"])})


def _to_image(row: dict) -> GalleryImage:
    return GalleryImage(**{**row, "params": _loads(row["params"]), "graph": _loads(row["graph"]),
                           "timings": _loads(row["timings"]),
                           "favourite": bool(row.get("favourite"))})


def _check_state(value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)} (got {value!r})")


def _reject_unknown(method: str, fields: Mapping, allowed: Iterable[str]) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise TypeError(f"{method}() got unknown field(s): {', '.join(unknown)}")
