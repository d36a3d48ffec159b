"""Two studios on one data folder (a restart overlapping the old process, a backup running):
writes from several processes at once all land, none fails with "database is locked", and
a studio that starts beside another learns so. Real processes, real
files in tmp_path; no network."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.config import Settings
from studio.ops.data_lock import DataFolderBusy, DataLock
from studio.services import build_services
from studio.store.db import Store

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 2.0
MESSAGES_PER_CHAT = 3

# What each process does: open the store (migrating a fresh file at the same moment as the
# others), then for SECONDS create chats with messages, plus one transaction that reads
# before it writes, the kind that SQLite refuses at once without BEGIN IMMEDIATE.
WRITER = f"""
import sys, time
from studio.store.db import Store

def write(path, tag, seconds):
    store = Store.open(path)
    made, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        conv = store.create_conversation(f"{{tag}} {{made}}", user=tag)
        for i in range({MESSAGES_PER_CHAT}):
            store.add_message(conv.id, "user", f"{{tag}} {{made}} {{i}}")
        with store.transaction():
            store.db.execute("SELECT count(*) FROM messages").fetchone()
            store.db.execute("UPDATE conversations SET pinned = 1 WHERE id = ?", [conv.id])
        made += 1
    store.close()
    return made

if __name__ == "__main__":
    print(write(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def _namespace() -> dict:
    namespace: dict = {"__name__": "writer"}
    exec(WRITER, namespace)  # the same code the subprocesses run, in this process
    return namespace


def test_two_processes_write_one_data_folder_and_every_row_lands(tmp_path):
    db_path = tmp_path / "data" / "studio.db"  # fresh: the migrations race too
    others = [subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), tag, str(SECONDS)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
              for tag in ("first", "second")]
    made = {"here": _namespace()["write"](db_path, "here", SECONDS)}
    for tag, process in zip(("first", "second"), others):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0 and "OperationalError" not in err, err
        made[tag] = int(out)

    store = Store.open(db_path)
    try:
        for tag, count in made.items():
            assert count > 0
            chats = store.list_conversations(user=tag, limit=count + 10)
            assert len(chats) == count and all(chat.pinned for chat in chats)
            for chat in chats:
                assert [m.seq for m in store.messages(chat.id)] == [1, 2, 3]
        assert store.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        store.close()


def test_store_waits_out_another_programs_short_write_lock(tmp_path):
    """A transaction that reads first (like the arena's vote or a gallery delete) waits for
    another program's write instead of failing at once with "database is locked"."""
    store = Store.open(tmp_path / "studio.db")
    conv = store.create_conversation("kept")
    store.messages(conv.id)  # this connection has read the file before the other writes
    other = sqlite3.connect(tmp_path / "studio.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE conversations SET title = 'renamed elsewhere'")
    let_go = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    let_go.start()
    try:
        with store.transaction():
            store.db.execute("SELECT count(*) FROM messages").fetchone()
            store.db.execute("UPDATE conversations SET pinned = 1 WHERE id = ?", [conv.id])
    finally:
        let_go.join()
        other.close()
    [chat] = store.list_conversations()
    assert (chat.title, chat.pinned) == ("renamed elsewhere", True)  # both writes kept
    store.close()


def test_data_lock_second_studio_learns_of_the_first(tmp_path):
    first = DataLock.for_studio(tmp_path)
    second = DataLock.for_studio(tmp_path)
    try:
        assert first.others == ()
        assert second.others == (str(os.getpid()),)
        with pytest.raises(DataFolderBusy, match=f"A studio is running on {tmp_path} "
                                                 rf"\(process {os.getpid()}, {os.getpid()}\)"):
            DataLock.exclusive(tmp_path)
    finally:
        first.release()
        second.release()
    alone = DataLock.for_studio(tmp_path)  # both gone: alone again, and the file is clean
    assert alone.others == ()
    assert (tmp_path / "studio.lock").read_text() == f"{os.getpid()}\n"
    alone.release()


def test_data_lock_another_process_counts_as_another_studio(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from studio.ops.data_lock import DataLock; "
         "held = DataLock.for_studio(sys.argv[1]); print('held', flush=True); time.sleep(30)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = DataLock.for_studio(tmp_path)
        assert lock.others == (str(holder.pid),)
        lock.release()
    finally:
        holder.kill()
        holder.wait(10)
    deadline = time.monotonic() + 5
    while (lock := DataLock.for_studio(tmp_path)).others and time.monotonic() < deadline:
        lock.release()  # the kernel lets a killed process's lock go at once, but be patient
    assert lock.others == ()
    lock.release()


def test_second_studio_on_one_data_folder_says_so_in_the_log(tmp_path, caplog):
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    first = build_services(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="studio.services"):
            second = build_services(settings)
        try:
            assert (f"Another studio (process {os.getpid()}) is already running on "
                    f"{settings.data_path}") in caplog.text
        finally:
            second.images.close(cancel=True)
            second.data_lock.release()
    finally:
        first.images.close(cancel=True)
        first.data_lock.release()
