"""Who is using a data folder: a running studio holds ``studio.lock`` in it.

The studio takes a shared lock (``flock``) on the file at start and keeps it while the
process lives; the kernel lets it go when the process ends, however it ends, so a crash
leaves no stale lock. A restore asks for an exclusive lock: it gets it only when no
studio runs on the folder, and while it holds it no studio can start there. Several
studios (or tests) in one folder share the lock: the database is safe with two writers
(``store/db.py``), but a studio that starts beside another learns so (``others``) and says
so, since each runs its own image queue and backup schedule. No gradio imports here.
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
        # Process ids of other studios that held the lock when this one took it (as they
        # wrote them; one may have ended since). Empty when this studio started alone.
        self.others: tuple[str, ...] = ()

    @classmethod
    def for_studio(cls, data_dir: str | Path) -> "DataLock":
        """The running studio's shared lock; ``others`` names studios already running on
        the folder. Raises DataFolderBusy while a restore runs."""
        lock = cls._take(data_dir, fcntl.LOCK_EX)  # only granted when nobody else holds it
        alone = lock is not None
        try:
            if alone:
                fcntl.flock(lock._handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            else:
                lock = cls._take(data_dir, fcntl.LOCK_SH)
        except BlockingIOError:  # a restore took it in the moment the lock changed mode
            lock.release()
            lock = None
        if lock is None:
            raise DataFolderBusy(f"A restore is writing into {data_dir}; the studio can't "
                                 "start on it now.",
                                 hint="Wait for `studio restore` to finish, then start again.")
        if alone:
            lock._handle.seek(0)
            lock._handle.truncate()
        else:
            lock.others = _pids(lock.path)
        # For a person looking, and for the next studio: which processes, roughly.
        lock._handle.write(f"{os.getpid()}\n")
        lock._handle.flush()
        return lock

    @classmethod
    def exclusive(cls, data_dir: str | Path) -> "DataLock":
        """The lock a restore holds; raises DataFolderBusy when a studio runs on the folder."""
        lock = cls._take(data_dir, fcntl.LOCK_EX)
        if lock is None:
            pids = _pids(Path(data_dir) / LOCK_FILE)
            who = f" (process {', '.join(pids)})" if pids else ""
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


def _pids(path: Path) -> tuple[str, ...]:
    """The process ids written in a lock file, oldest first ('' lines and junk left out)."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeError):
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip().isdigit())
