"""Who is using a data folder: a running studio holds ``studio.lock`` in it.

The studio takes a shared lock (``flock``) on the file at start and keeps it while the
process lives; the kernel lets it go when the process ends, however it ends, so a crash
leaves no stale lock. A restore asks for an exclusive lock: it gets it only when no
studio runs on the folder, and while it holds it no studio can start there. Several
studios (or tests) in one folder share the lock; that is not this module's question.
No gradio imports here.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StudioError

LOCK_FILE = "studio.lock"


class DataFolderBusy(StudioError):
    """The data folder is in use (a studio runs on it, or a restore is under way)."""


class DataLock:
    """A held lock on a data folder's ``studio.lock``; ``release`` (or the process's end)
    lets it go."""

    def __init__(self, handle, path: Path):
        self._handle = handle
        self.path = path

    @classmethod
    def for_studio(cls, data_dir: str | Path) -> "DataLock":
        """The running studio's shared lock. Raises DataFolderBusy while a restore runs."""
        lock = cls._take(data_dir, fcntl.LOCK_SH)
        if lock is None:
            raise DataFolderBusy(f"A restore is writing into {data_dir}; the studio can't "
                                 "start on it now.",
                                 hint="Wait for `studio restore` to finish, then start again.")
        lock._handle.seek(0)
        lock._handle.truncate()
        lock._handle.write(f"{os.getpid()}\n")  # for a person looking: which process, roughly
        lock._handle.flush()
        return lock

    @classmethod
    def exclusive(cls, data_dir: str | Path) -> "DataLock":
        """The lock a restore holds; raises DataFolderBusy when a studio runs on the folder."""
        lock = cls._take(data_dir, fcntl.LOCK_EX)
        if lock is None:
            try:
                pid = (Path(data_dir) / LOCK_FILE).read_text(encoding="ascii").strip()
            except (OSError, UnicodeError):
                pid = ""
            who = f" (process {pid})" if pid.isdigit() else ""
            raise DataFolderBusy(f"A studio is running on {data_dir}{who}.",
                                 hint="Stop it first (docker compose stop studio, or Ctrl+C), "
                                      "then restore; --force restores anyway.")
        return lock

    @classmethod
    def _take(cls, data_dir: str | Path, mode: int) -> "DataLock | None":
        """The lock in ``mode``, or None when another holder's lock is in the way."""
        path = Path(data_dir) / LOCK_FILE
        handle = _open(path)
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(handle, path)

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> "DataLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a+", encoding="ascii")
    except OSError as err:  # the same words as Store.open's: it is the same problem
        raise StudioError(f"The data directory {path.parent} is not writable.",
                          hint="Set STUDIO_DATA_DIR to a folder you can write to, or fix its "
                               "permissions.") from err
