"""studio.ops.backup: backups made while replies stream and images render restore into a
studio that finds every finished chat and image; damaged, newer and busy cases are refused
with a sentence; the schedule keeps exactly KEEP; the `studio backup` / `studio restore`
commands end to end. Loopback fakes only; every wait is bounded."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image
from sqlite_utils import Database

from studio.config import Settings
from studio.errors import ConfigError
from studio.images.plans import ImageRequest
from studio.ops import backup as backup_mod
from studio.ops.backup import (BackupRefused, BackupSchedule, make_backup, restore_backup,
                               verify_backup)
from studio.ops.data_lock import DataFolderBusy, DataLock
from studio.store import snapshot
from studio.store.db import Store
from studio.store.migrations import migrations
from tests.conftest import free_port
from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[1]
WAIT = 20  # seconds; upper bound for event waits, never a sleep
LOCAL, VISION = "ollama:llama3.2:latest", "ollama:llava:latest"


def studio_settings(data: Path, ollama_url: str, comfyui_url: str | None = None,
                    **extra: str) -> Settings:
    env = {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama_url,
           "COMFYUI_URL": comfyui_url or f"http://127.0.0.1:{free_port()}", **extra}
    return Settings.from_env(env, dotenv_path=None)


@pytest.fixture
def started():
    """build_services for a test, with its image jobs and schedule stopped afterwards."""
    from studio.services import build_services

    made = []

    def start(settings: Settings):
        services = build_services(settings)
        made.append(services)
        return services

    yield start
    for services in made:
        services.images.close(cancel=True)
        if services.backups is not None:
            services.backups.close()
        services.data_lock.release()


def small_data_folder(data: Path) -> Path:
    """A stopped studio's folder: a database with one chat, an output picture, an upload."""
    store = Store.open(data / "studio.db")
    conv = store.create_conversation("kept chat")
    store.add_message(conv.id, "user", "hello")
    store.close()
    (data / "outputs" / "2025" / "01").mkdir(parents=True)
    Image.new("RGB", (8, 8), "blue").save(data / "outputs" / "2025" / "01" / "pic.png")
    (data / "uploads" / conv.id).mkdir(parents=True)
    (data / "uploads" / conv.id / "a.txt").write_text("attachment")
    return data


def picture(path: Path) -> str:
    Image.new("RGB", (8, 8), "red").save(path)
    return str(path)


def finished_rows(store: Store) -> dict:
    """Every finished conversation (its complete messages) and every gallery image."""
    chats = {}
    for conv in store.list_conversations(limit=1000):
        chats[conv.id] = [(m.role, m.content, m.status, len(m.images))
                          for m in store.messages(conv.id) if m.status == "complete"]
    images = {row[0]: row[1:] for row in store.db.execute(
        "SELECT id, job_id, path, thumb, bytes FROM images ORDER BY id")}
    return {"chats": chats, "images": images}


# ------------------------------------------------------------------ the whole round trip


def test_backup_while_a_reply_streams_and_an_image_renders_restores_every_finished_item(
        tmp_path, fake_ollama, started):
    with FakeComfyUI() as comfyui:
        source = started(studio_settings(tmp_path / "data", fake_ollama.url, comfyui.url))
        chat, images = source.chat, source.images
        finished = chat.send(None, "what is this?", [picture(tmp_path / "cat.png")],
                             model=VISION, user="owner")
        assert finished.reply.settled.wait(WAIT)
        done_job = images.submit(ImageRequest("sd15_txt2img", prompt="a fox", width=64,
                                              height=64, steps=2))
        assert list(images.follow(done_job, interval=0, timeout=WAIT))[-1].status == "done"
        before = finished_rows(source.store)
        assert before["images"] and any(len(rows) == 2 for rows in before["chats"].values())

        fake_ollama.queue_reply([f"word{i} " for i in range(40)], delay=0.05)
        streaming = chat.send(None, "tell me a long story", model=LOCAL, user="owner")
        assert streaming.reply.wait_until(lambda: streaming.reply.text_parts, WAIT)
        comfyui.pause_after_step(1)
        running_job = images.submit(ImageRequest("sd15_txt2img", prompt="a cat", width=64,
                                                 height=64, steps=3))
        assert comfyui.wait_paused(WAIT)

        made = make_backup(source.data_dir, tmp_path / "backup")

        assert not streaming.reply.settled.is_set()  # the backup ran while it streamed
        comfyui.resume()
        assert streaming.reply.settled.wait(WAIT)
        assert list(images.follow(running_job, interval=0, timeout=WAIT))[-1].finished

    manifest = json.loads((made.path / "manifest.json").read_text())
    assert manifest["schema"] == snapshot.known_schema()
    assert {e["path"] for e in manifest["files"]} >= {"studio.db", *(
        f"outputs/{p}" for _, p, t, _ in before["images"].values() for p in (p, t))}

    restored_dir = tmp_path / "elsewhere" / "data"
    result = restore_backup(made.path, restored_dir)
    assert result.set_aside is None and result.relocated >= 1  # the attachment's path moved
    restored = started(studio_settings(restored_dir, fake_ollama.url))
    after = finished_rows(restored.store)
    for chat_id, rows in before["chats"].items():
        assert after["chats"][chat_id] == rows
    assert after["images"] == before["images"]
    for _, path, thumb, size in after["images"].values():
        assert (restored.outputs_dir / path).stat().st_size == size
        assert (restored.outputs_dir / thumb).is_file()
    [attachment] = [m for m in restored.store.messages(finished.chat_id) if m.images][0].images
    assert Path(attachment).is_relative_to(restored_dir.resolve()) and Path(attachment).is_file()
    # The reply that was streaming is kept as partial by the restored studio's start.
    assert restored.store.messages(streaming.chat_id)[-1].status == "partial"


def test_restore_into_a_used_folder_sets_the_old_data_aside_and_drops_its_wal(tmp_path):
    made = make_backup(small_data_folder(tmp_path / "data"), tmp_path / "backup")
    target = tmp_path / "target"
    store = Store.open(target / "studio.db")
    store.db.execute("PRAGMA wal_autocheckpoint=0")
    store.create_conversation("newer chat, not in the backup")
    wal = (target / "studio.db-wal").read_bytes()  # as a studio killed mid-write leaves it
    store.close()
    (target / "studio.db-wal").write_bytes(wal)

    result = restore_backup(made.path, target)

    assert result.set_aside is not None and (result.set_aside / "studio.db").is_file()
    assert not (target / "studio.db-wal").exists()
    reopened = Store.open(target / "studio.db")
    assert [c.title for c in reopened.list_conversations()] == ["kept chat"]
    reopened.close()


def test_restore_of_an_older_schema_is_migrated_when_the_studio_opens_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = Database(data / "studio.db")
    db.conn.execute("PRAGMA journal_mode=WAL")
    migrations.apply(db, stop_before=snapshot.known_schema()[-1])
    db.close()
    made = make_backup(data, tmp_path / "backup")
    manifest = json.loads(made.path.joinpath("manifest.json").read_text())
    assert manifest["schema"] == snapshot.known_schema()[:-1]

    restore_backup(made.path, tmp_path / "restored")

    assert snapshot.applied_schema(tmp_path / "restored" / "studio.db") != snapshot.known_schema()
    Store.open(tmp_path / "restored" / "studio.db").close()
    assert snapshot.applied_schema(tmp_path / "restored" / "studio.db") == snapshot.known_schema()


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("damaged", ["outputs/2025/01/pic.png", "studio.db", "manifest-listed"])
def test_restore_refuses_a_backup_with_a_flipped_byte_naming_the_file(tmp_path, damaged):
    made = make_backup(small_data_folder(tmp_path / "data"), tmp_path / "backup")
    manifest = json.loads((made.path / "manifest.json").read_text())
    if damaged == "manifest-listed":  # the upload, whatever its folder is called
        damaged = next(e["path"] for e in manifest["files"] if e["path"].endswith("a.txt"))
    path = made.path / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(BackupRefused, match=f"The backup is damaged: {damaged} doesn't match"):
        restore_backup(made.path, tmp_path / "target")
    assert not (tmp_path / "target").exists()  # nothing was touched


def test_restore_refuses_a_backup_missing_a_file_and_a_tar_cut_short(tmp_path):
    data = small_data_folder(tmp_path / "data")
    made = make_backup(data, tmp_path / "backup")
    (made.path / "outputs" / "2025" / "01" / "pic.png").unlink()
    with pytest.raises(BackupRefused, match="outputs/2025/01/pic.png is missing"):
        verify_backup(made.path)
    archive = make_backup(data, tmp_path / "backup.tar.gz").path
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(BackupRefused, match="isn't a readable .tar.gz"):
        restore_backup(archive, tmp_path / "target")


def test_restore_refuses_a_backup_from_a_newer_schema(tmp_path):
    made = make_backup(small_data_folder(tmp_path / "data"), tmp_path / "backup")
    conn = sqlite3.connect(made.path / "studio.db")
    with conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('studio', 'm999_add_time_travel', '2099-01-01')")
    conn.close()
    manifest = json.loads((made.path / "manifest.json").read_text())
    db_entry = next(e for e in manifest["files"] if e["path"] == "studio.db")
    db_entry["size"] = (made.path / "studio.db").stat().st_size
    db_entry["sha256"] = backup_mod._hash_file(made.path / "studio.db")
    (made.path / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(BackupRefused, match="comes from a newer studio.*m999_add_time_travel"):
        restore_backup(made.path, tmp_path / "target")


def test_restore_refuses_a_folder_a_studio_runs_on_unless_forced(tmp_path, fake_ollama, started):
    made = make_backup(small_data_folder(tmp_path / "data"), tmp_path / "backup")
    running = started(studio_settings(tmp_path / "live", fake_ollama.url))
    running.store.create_conversation("made while running")

    with pytest.raises(DataFolderBusy, match=f"A studio is running on {tmp_path / 'live'}"):
        restore_backup(made.path, tmp_path / "live")
    assert [c.title for c in running.store.list_conversations()] == ["made while running"]

    forced = restore_backup(made.path, tmp_path / "live", force=True)
    assert forced.set_aside is not None


def test_a_studio_does_not_start_while_a_restore_holds_the_folder(tmp_path, fake_ollama, started):
    with DataLock.exclusive(tmp_path / "data"):
        with pytest.raises(DataFolderBusy, match="A restore is writing into"):
            started(studio_settings(tmp_path / "data", fake_ollama.url))
    assert started(studio_settings(tmp_path / "data", fake_ollama.url)).store is not None


@pytest.mark.parametrize("dest, message", [
    ("full", "already exists and isn't an empty folder"),
    ("old.tar.gz", "already exists; a backup never overwrites a file"),
    ("data/outputs/backups", "is inside the data folder's outputs/"),
])
def test_backup_refuses_a_destination_it_would_overwrite(tmp_path, dest, message):
    data = small_data_folder(tmp_path / "data")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "old.tar.gz").write_bytes(b"mine")
    with pytest.raises(BackupRefused, match=message):
        make_backup(data, tmp_path / dest)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "old.tar.gz").read_bytes() == b"mine"


def test_backup_leaves_out_temp_files_and_the_lock(tmp_path):
    data = small_data_folder(tmp_path / "data")
    (data / "outputs" / "2025" / "01" / ".pic2.png.1234abcd.tmp").write_bytes(b"half")
    (data / "studio.lock").write_text("1\n")
    (data / "before-restore-20250101T000000Z").mkdir()
    (data / "api-url-signing.key").write_bytes(b"k" * 32)
    made = make_backup(data, tmp_path / "backup")
    listed = {e["path"] for e in json.loads((made.path / "manifest.json").read_text())["files"]}
    assert "api-url-signing.key" in listed and "outputs/2025/01/pic.png" in listed
    assert not any(".tmp" in p or "lock" in p or "before-restore" in p for p in listed)


def test_the_signing_key_file_is_backed_up_under_the_name_the_api_uses():
    from studio.api.images import SIGNING_KEY_FILE

    assert SIGNING_KEY_FILE in backup_mod.FILES


# ------------------------------------------------------------------ the schedule


class Clock:
    def __init__(self):
        self.now = datetime(2025, 3, 1, 4, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_schedule_keeps_exactly_keep_newest_backups_and_nothing_else_is_touched(tmp_path):
    data = small_data_folder(tmp_path / "data")
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "my-notes").mkdir()
    clock = Clock()
    schedule = BackupSchedule(data, tmp_path / "backups", every_hours=6, keep=3, clock=clock)
    made = []
    for _ in range(5):
        made.append(schedule.run_due())
        assert schedule.run_due() is None  # not due again within the interval
        clock.now += timedelta(hours=6)

    assert [p.name for p in schedule.backups()] == [p.name for p in made[-3:]]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(
        ["my-notes", *(p.name for p in made[-3:])])
    verify_backup(made[-1])


def test_schedule_logs_a_failure_as_a_sentence_and_retries_at_the_next_tick(tmp_path, caplog):
    data = small_data_folder(tmp_path / "data")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    schedule = BackupSchedule(data, blocker / "backups", every_hours=24, keep=2, tick_s=0.05)
    with caplog.at_level(logging.ERROR, logger="studio.ops.backup"):
        schedule.start()
        assert schedule.wait_for(lambda s: s.last_error, WAIT)
        assert "The scheduled backup into" in schedule.last_error
        assert "failed" in schedule.last_error and "Trying again" in schedule.last_error
        assert any("scheduled backup" in r.getMessage() for r in caplog.records)
        blocker.unlink()
        assert schedule.wait_for(lambda s: s.last_backup is not None and not s.last_error, WAIT)
    schedule.close()
    verify_backup(schedule.last_backup)


def test_studio_with_a_backup_dir_backs_up_on_start(tmp_path, fake_ollama, started):
    services = started(studio_settings(tmp_path / "data", fake_ollama.url,
                                       STUDIO_BACKUP_DIR=str(tmp_path / "backups"),
                                       STUDIO_BACKUP_KEEP="2"))
    assert services.backups.wait_for(lambda s: s.last_backup is not None, WAIT)
    assert services.backups.keep == 2
    verify_backup(services.backups.last_backup)


@pytest.mark.parametrize("env, message", [
    ({"STUDIO_BACKUP_KEEP": "0"}, "STUDIO_BACKUP_KEEP must be at least 1"),
    ({"STUDIO_BACKUP_EVERY_HOURS": "0"}, "STUDIO_BACKUP_EVERY_HOURS must be more than 0"),
])
def test_settings_refuse_a_schedule_that_cannot_work(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env, dotenv_path=None)


# ------------------------------------------------------------------ the commands


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_backup_and_restore_end_to_end_and_refusals(tmp_path, fake_ollama, started):
    data = small_data_folder(tmp_path / "data")
    archive = tmp_path / "nightly.tar.gz"

    made = cli(tmp_path, "backup", str(archive), "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    assert f"into {archive}" in made.stdout

    again = cli(tmp_path, "backup", str(archive), "--data-dir", str(data))
    assert again.returncode == 2 and "a backup never overwrites a file" in again.stderr

    restored = cli(tmp_path, "restore", str(archive), "--data-dir", str(tmp_path / "new"))
    assert restored.returncode == 0, restored.stderr
    store = Store.open(tmp_path / "new" / "studio.db")
    assert [c.title for c in store.list_conversations()] == ["kept chat"]
    store.close()

    running = started(studio_settings(tmp_path / "new", fake_ollama.url))
    busy = cli(tmp_path, "restore", str(archive), "--data-dir", str(tmp_path / "new"))
    assert busy.returncode == 2
    assert f"A studio is running on {tmp_path / 'new'} (process {os.getpid()})" in busy.stderr
    running.data_lock.release()

    folder = tmp_path / "folder-backup"
    assert cli(tmp_path, "backup", str(folder), "--data-dir", str(data)).returncode == 0
    (folder / "outputs" / "2025" / "01" / "pic.png").write_bytes(b"not the picture")
    bad = cli(tmp_path, "restore", str(folder), "--data-dir", str(tmp_path / "other"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("studio restore: The backup is damaged: "
                                 "outputs/2025/01/pic.png doesn't match its checksum.")
