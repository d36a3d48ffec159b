"""Whose file is it: the owner of a picture or an attachment in the data folder, looked
up by its path, for the file route that serves a file only to its owner. Read-only SQL
over the Store's connection. No gradio imports here.
"""

from __future__ import annotations

import json

from .db import Store


class FileOwnerStore:
    def __init__(self, store: Store):
        self.store = store

    def image_owner(self, relative: str) -> str | None:
        """The user of the gallery image whose file or thumbnail is ``relative`` (a path
        relative to the outputs folder, as stored)."""
        row = self.store.db.execute(
            "SELECT user FROM images WHERE path = ? OR thumb = ? LIMIT 1",
            [relative, relative]).fetchone()
        return row[0] if row else None

    def input_owner(self, path: str) -> str | None:
        """The user of the image job that kept ``path`` as its input picture."""
        needle = json.dumps(path)  # as the item's params JSON holds it
        row = self.store.db.execute(
            "SELECT j.user FROM image_job_items i JOIN image_jobs j ON j.id = i.job_id "
            "WHERE instr(i.params, ?) > 0 LIMIT 1", [needle]).fetchone()
        return row[0] if row else None
