"""Who owns each file of the data folder, so the file route serves it to its owner only.

``uploads/<chat id>/…`` belongs to that chat's user; ``uploads/images/…`` (an image job's
input) to the job's user; ``outputs/…`` (pictures, thumbnails) to the gallery image's user;
``exports/<user>/…`` to that user. Anything else in the data folder (the database above
all) belongs to nobody. No gradio imports here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..store.files import FileOwnerStore


class FileOwners:
    """``owner(path)`` for an absolute, resolved path; None when nobody may read it."""

    def __init__(self, data_dir: Path, files: FileOwnerStore,
                 chat_owner: Callable[[str], str | None]) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.files = files
        self.chat_owner = chat_owner

    def owner(self, path: Path) -> str | None:
        try:
            parts = Path(path).resolve().relative_to(self.data_dir).parts
        except ValueError:
            return None
        if len(parts) < 3:
            return None
        area, first = parts[0], parts[1]
        if area == "uploads":
            if first == "images":
                return self.files.input_owner(str(self.data_dir.joinpath(*parts)))
            return self.chat_owner(first)
        if area == "outputs":
            return self.files.image_owner(str(Path(*parts[1:])))
        if area == "exports":
            return first
        return None
