"""The database file as backups see it: a consistent copy of a live WAL database, the schema
steps a copy holds, its integrity, and moving the absolute paths it stores to a new data
folder. The SQL of backups and restores lives here (with ``db.py`` and ``migrations.py``,
the only modules that write SQL). No gradio imports here.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from ..errors import StudioError
from .migrations import migrations

_BUSY_TIMEOUT_MS = 5000


def copy_database(source: str | Path, target: str | Path) -> None:
    """Copy the database at ``source`` into a new file ``target`` with SQLite's online
    backup API: one read transaction, so the copy is the database as of one moment even
    while the studio writes (a file copy of a WAL database can tear). The target is a
    plain rollback-journal file, complete on its own (no -wal beside it).

    Raises StudioError when the source can't be read.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise StudioError(f"There is no studio database at {source}.",
                          hint="Check --data-dir (or STUDIO_DATA_DIR): it names the folder "
                               "that holds studio.db.")
    try:
        # Read-write like the studio's own connection: a read-only one can't open a WAL
        # database whose -shm file isn't there yet (a stopped studio).
        src = sqlite3.connect(str(source), timeout=_BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as err:
        raise StudioError(f"Couldn't open the database {source} to back it up ({err}).") from err
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)  # all pages in one step: one snapshot, never a mix of two moments
        dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as err:
        raise StudioError(f"Couldn't copy the database {source} ({err}).",
                          hint="Check that the disk isn't full and try again.") from err
    finally:
        dst.close()
        src.close()


def known_schema() -> list[str]:
    """The names of every schema step (migration) this code knows, in order."""
    return [m.name for m in migrations.pending(Database(memory=True, execute_plugins=False))]


def applied_schema(path: str | Path) -> list[str]:
    """The schema steps applied to the database file at ``path`` (read-only)."""
    db = Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True), execute_plugins=False)
    try:
        return [m.name for m in migrations.applied(db)]
    finally:
        db.close()


def check_integrity(path: str | Path) -> str:
    """'' when SQLite finds the database file at ``path`` sound, else what it found."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return str(err)
    found = "; ".join(str(row[0]) for row in rows)
    return "" if found == "ok" else found


def relocate_paths(path: str | Path, old_dir: str, new_dir: str) -> int:
    """Point the absolute file paths the database stores (chat attachments, image jobs'
    input pictures) from the data folder ``old_dir`` to ``new_dir``; returns the rows changed.
    Gallery paths are relative to the outputs folder and need nothing."""
    old_dir, new_dir = old_dir.rstrip("/") + "/", new_dir.rstrip("/") + "/"
    if old_dir == new_dir:
        return 0
    # The paths sit inside JSON text (a list for attachments, the item's params), so
    # match them as JSON spells them.
    old_json, new_json = json.dumps(old_dir)[1:-1], json.dumps(new_dir)[1:-1]
    conn = sqlite3.connect(str(path))
    try:
        with conn:
            changed = conn.execute(
                "UPDATE messages SET images = replace(images, ?, ?) WHERE instr(images, ?) > 0",
                [old_json, new_json, old_json]).rowcount
            for table, column in (("image_job_items", "params"), ("image_jobs", "spec")):
                changed += conn.execute(
                    f"UPDATE {table} SET {column} = replace({column}, ?, ?) "
                    f"WHERE instr({column}, ?) > 0", [old_json, new_json, old_json]).rowcount
    finally:
        conn.close()
    return changed
