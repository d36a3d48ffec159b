"""Backups that restore: the data folder copied while the studio runs, checked, and put back.

A backup is a folder (or the same folder as a ``.tar.gz``) holding ``studio.db`` (copied
with SQLite's online backup API, never as a file), the user-data folders (``uploads``,
``outputs``, ``exports``, ``workflows``), the API's link-signing key, and
``manifest.json``: every file's relative path, size and sha256, the schema steps the
database has, the studio version, the time and the folder it came from.

``make_backup`` writes one, ``restore_backup`` checks every file before it touches the
data folder and refuses a damaged backup, one from a newer studio, or a folder a studio
is running on. ``BackupSchedule`` makes one every few hours on a thread and keeps the
newest few. What is left out on purpose: the lock file, the SQLite -wal/-shm files
(the copy is complete without them), hidden temp files being written, and folders put
aside by earlier restores. No gradio imports here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

from ..errors import StudioError
from ..store import snapshot
from .data_lock import DataFolderBusy, DataLock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # the manifest's layout; a restore refuses one it doesn't know
DATABASE = "studio.db"
FOLDERS = ("uploads", "outputs", "exports", "workflows")  # people's files, all of them
# The API's link-signing secret (studio.api.images.SIGNING_KEY_FILE): restoring it keeps
# image links already handed out working. A test checks the two names agree.
FILES = ("api-url-signing.key",)
SCHEDULED_PREFIX = "studio-backup-"
_SCHEDULED = re.compile(r"^studio-backup-\d{8}T\d{6}Z(-\d+)?$")
_CHUNK = 1 << 20


class BackupRefused(StudioError):
    """A backup can't be made or restored as asked; nothing was changed."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    files: int
    bytes: int
    skipped: tuple[str, ...]  # files that vanished while being copied


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    files: int
    set_aside: Path | None  # what the data folder held before, moved here (None: it was empty)
    relocated: int  # stored file paths pointed at the new data folder


# --------------------------------------------------------------------------- backup


def make_backup(data_dir: str | Path, dest: str | Path, *,
                now: Callable[[], datetime] | None = None) -> BackupResult:
    """Back up the data folder ``data_dir`` into ``dest``, a new folder (or an empty one),
    or a ``.tar.gz`` file when the name ends so. Safe while the studio runs.

    The database is copied first, then the files: a row in the copy only names files that
    were written before it, so each is in the backup unless it was deleted meanwhile.
    Files that vanish while being copied are skipped (and listed in the result).
    Raises BackupRefused (dest not empty, dest inside the data) or StudioError.
    """
    given = Path(data_dir).expanduser().absolute()
    data_dir, dest = given.resolve(), Path(dest).expanduser().absolute()
    archive = dest.name.endswith(".tar.gz")
    _check_destination(data_dir, dest, archive)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Built under a hidden name beside dest and renamed at the end, so a backup folder
        # that exists is always a whole one (the schedule's retention counts on it).
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    except OSError as err:
        raise _unwritable(dest, err) from err
    try:
        snapshot.copy_database(data_dir / DATABASE, work / DATABASE)
        entries = [_entry(work, DATABASE, _hash_file(work / DATABASE))]
        skipped: list[str] = []
        for relative in _user_files(data_dir):
            copied = _copy_hashing(data_dir / relative, work / relative)
            if copied is None:
                skipped.append(relative)
            else:
                entries.append(_entry(work, relative, copied))
        manifest = {
            "format": FORMAT,
            "studio_version": studio_version(),
            "schema": snapshot.applied_schema(work / DATABASE),
            "created_at": (now or _utcnow)().strftime("%Y-%m-%dT%H:%M:%SZ"),
            # Where the stored absolute paths point: the folder, and the name the studio
            # knew it by when that differs (a symlink), so a restore can move both.
            "data_dir": str(data_dir),
            "data_dir_given": str(given),
            "files": entries,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if archive:
            _write_archive(work, dest)
            shutil.rmtree(work)
        else:
            if dest.exists():
                dest.rmdir()  # empty, checked above
            os.replace(work, dest)
    except OSError as err:
        shutil.rmtree(work, ignore_errors=True)
        raise _unwritable(dest, err) from err
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupResult(dest, len(entries), sum(e["size"] for e in entries), tuple(skipped))


def _unwritable(dest: Path, err: OSError) -> StudioError:
    return StudioError(f"Couldn't write the backup {dest} ({err.strerror or err}).",
                       hint="Check free disk space and that the folder can be written.")


def studio_version() -> str:
    try:
        return metadata.version("hephaestus-studio")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_destination(data_dir: Path, dest: Path, archive: bool) -> None:
    if archive and dest.exists():
        raise BackupRefused(f"{dest} already exists; a backup never overwrites a file.",
                            hint="Give a new name, or move the old one away.")
    if not archive and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupRefused(f"{dest} already exists and isn't an empty folder; a backup goes "
                            "into a new folder.", hint="Give a new name, or empty it first.")
    for folder in FOLDERS:
        inside = data_dir / folder
        if dest.resolve() == inside or inside in dest.resolve().parents:
            raise BackupRefused(f"{dest} is inside the data folder's {folder}/, which the "
                                "backup copies.", hint="Put backups outside those folders.")


def _user_files(data_dir: Path) -> Iterator[str]:
    """Relative paths of the files to copy, in a stable order; no links, no hidden files."""
    for name in FILES:
        if (data_dir / name).is_file() and not (data_dir / name).is_symlink():
            yield name
    for folder in FOLDERS:
        top = data_dir / folder
        if not top.is_dir() or top.is_symlink():
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                # Hidden names are files being written (images.files.write_atomic).
                if name.startswith(".") or path.is_symlink():
                    continue
                yield path.relative_to(data_dir).as_posix()


def _copy_hashing(source: Path, target: Path) -> str | None:
    """Copy ``source`` to ``target``; the sha256 of the bytes written, None if it vanished.
    The hash is of what was copied, so a file rewritten meanwhile still checks out."""
    digest = hashlib.sha256()
    try:
        reader = open(source, "rb")
    except FileNotFoundError:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with reader, open(target, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
    with contextlib.suppress(FileNotFoundError):
        shutil.copystat(source, target)  # keep the time: output retention goes by age
    return digest.hexdigest()


def _entry(folder: Path, relative: str, sha256: str) -> dict:
    return {"path": relative, "size": (folder / relative).stat().st_size, "sha256": sha256}


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_archive(folder: Path, dest: Path) -> None:
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- check


@contextlib.contextmanager
def opened_backup(source: str | Path) -> Iterator[Path]:
    """The backup folder at ``source``; a ``.tar.gz`` is unpacked into a temp folder for
    the duration. Raises BackupRefused when there is nothing there."""
    source = Path(source).expanduser()
    if not source.exists():
        raise BackupRefused(f"There is no backup at {source}.",
                            hint="Give the folder (or .tar.gz) that `studio backup` made.")
    if source.is_dir():
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="studio-restore-") as temp:
        try:
            with tarfile.open(source, "r:*") as tar:
                tar.extractall(temp, filter="data")  # no links out, no absolute names
        except (tarfile.TarError, OSError, EOFError) as err:
            raise BackupRefused(f"The backup {source} isn't a readable .tar.gz ({err}).",
                                hint="It may be cut short; use another backup.") from err
        yield Path(temp)


def verify_backup(folder: str | Path) -> dict:
    """Check an unpacked backup against its manifest: every file there with its size and
    sha256, the database sound, its schema one this code knows. Returns the manifest.

    Raises BackupRefused naming the first file that fails, or saying what else is wrong.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        int(manifest["format"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackupRefused(f"{folder} has no readable {MANIFEST}, so it isn't a studio backup "
                            "or it is damaged.", hint="Give the folder `studio backup` made.") from err
    if manifest["format"] > FORMAT:
        raise BackupRefused(f"This backup was made by a newer studio (backup format "
                            f"{manifest['format']}).", hint="Upgrade the studio, then restore.")
    if not any(entry.get("path") == DATABASE for entry in files):
        raise BackupRefused(f"The backup in {folder} has no {DATABASE}.",
                            hint="Use another backup.")
    for entry in files:
        relative = str(entry.get("path", ""))
        path = folder / relative
        if not _safe_relative(relative):
            raise BackupRefused(f"The backup lists a file outside itself ({relative!r}); "
                                "it won't be restored.", hint="Use another backup.")
        if not path.is_file():
            raise BackupRefused(f"The backup is damaged: {relative} is missing.",
                                hint="Use another backup.")
        if path.stat().st_size != entry.get("size") or _hash_file(path) != entry.get("sha256"):
            raise BackupRefused(f"The backup is damaged: {relative} doesn't match its checksum.",
                                hint="Use another backup; this one would restore wrong data.")
    if problem := snapshot.check_integrity(folder / DATABASE):
        raise BackupRefused(f"The backup's {DATABASE} is damaged ({problem}).",
                            hint="Use another backup.")
    unknown = [name for name in snapshot.applied_schema(folder / DATABASE)
               if name not in snapshot.known_schema()]
    if unknown:
        raise BackupRefused(
            f"This backup comes from a newer studio (version "
            f"{manifest.get('studio_version', '?')}): its database has schema steps this "
            f"one doesn't know ({', '.join(unknown)}).",
            hint="Upgrade the studio to that version or later, then restore.")
    return manifest


def _safe_relative(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


# --------------------------------------------------------------------------- restore


def restore_backup(source: str | Path, data_dir: str | Path, *, force: bool = False,
                   now: Callable[[], datetime] | None = None) -> RestoreResult:
    """Restore the backup at ``source`` (folder or .tar.gz) into ``data_dir``.

    Checks every file first; nothing in ``data_dir`` changes unless all pass. Refuses a
    folder a studio is running on unless ``force``. What the folder held before (the
    database, the user-data folders) is moved into ``before-restore-<time>/`` inside it,
    never deleted. The next studio start applies any newer schema steps as usual.
    Raises BackupRefused, DataFolderBusy or StudioError.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    with opened_backup(source) as folder:
        manifest = verify_backup(folder)
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock: DataLock | None = DataLock.exclusive(data_dir)
        except DataFolderBusy:
            if not force:
                raise
            log.warning("Restoring into %s although a studio is running on it (--force); "
                        "restart that studio now.", data_dir)
            lock = None
        try:
            return _restore_locked(folder, manifest, data_dir, (now or _utcnow)())
        finally:
            if lock is not None:
                lock.release()


def _restore_locked(folder: Path, manifest: dict, data_dir: Path, moment: datetime) -> RestoreResult:
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        for entry in manifest["files"]:
            target = staging / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / entry["path"], target)
        relocated = sum(snapshot.relocate_paths(staging / DATABASE, old, str(data_dir.resolve()))
                        for old in {manifest.get("data_dir"), manifest.get("data_dir_given")}
                        if old)
        aside = data_dir / f"before-restore-{stamp}"
        moved = False
        for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", *FOLDERS, *FILES):
            if (data_dir / name).exists() or (data_dir / name).is_symlink():
                aside.mkdir(exist_ok=True)
                # The -wal of the old database must go with it: left beside the restored
                # file, SQLite would replay the old writes into it.
                os.replace(data_dir / name, aside / name)
                moved = True
        for item in staging.iterdir():
            os.replace(item, data_dir / item.name)
    except OSError as err:
        raise StudioError(f"Couldn't restore into {data_dir} ({err.strerror or err}).",
                          hint="Check free disk space and the folder's permissions; what it "
                               "held before is in before-restore-* inside it.") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(data_dir, len(manifest["files"]), aside if moved else None, relocated)


# --------------------------------------------------------------------------- schedule


class BackupSchedule:
    """Backs the data folder up into ``backup_dir/studio-backup-<UTC time>/`` every
    ``every_hours`` and keeps the newest ``keep`` (older ones are deleted). Runs on one
    daemon thread that looks at start and then every ``tick_s``; a backup is due when the newest one in the
    folder is older than the interval (so a restart doesn't reset the clock). A failed
    backup is logged as a sentence and tried again at the next tick."""

    def __init__(self, data_dir: str | Path, backup_dir: str | Path, *, every_hours: float,
                 keep: int, tick_s: float | None = None,
                 clock: Callable[[], datetime] = _utcnow):
        self.data_dir = Path(data_dir)
        self.backup_dir = Path(backup_dir).expanduser()
        self.interval_s = every_hours * 3600
        self.keep = max(1, int(keep))
        # Wake often enough to notice a due backup soon after a restart or a failure,
        # rarely enough to cost nothing.
        self.tick_s = tick_s if tick_s is not None else min(self.interval_s, 600.0)
        self.clock = clock
        self.last_error = ""
        self.last_backup: Path | None = None
        self.attempts = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "BackupSchedule":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="backup-schedule", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def wait_for(self, predicate: Callable[["BackupSchedule"], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds after an attempt (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def run_due(self) -> Path | None:
        """Make a backup if one is due and prune; the new folder, or None if none was due.
        Raises StudioError when the backup fails."""
        now = self.clock()
        newest = self.backups()[-1:] or [None]
        if newest[0] is not None:
            age = (now - _parse_stamp(newest[0].name)).total_seconds()
            if age < self.interval_s:
                return None
        path = self._new_path(now)
        make_backup(self.data_dir, path, now=lambda: now)
        self.prune()
        return path

    def backups(self) -> list[Path]:
        """The schedule's whole backups in ``backup_dir``, oldest first."""
        if not self.backup_dir.is_dir():
            return []
        return sorted((p for p in self.backup_dir.iterdir()
                       if _SCHEDULED.match(p.name) and (p / MANIFEST).is_file()),
                      key=lambda p: (p.name[:len(SCHEDULED_PREFIX) + 16], len(p.name), p.name))

    def prune(self) -> list[Path]:
        """Delete the oldest backups beyond ``keep``; returns those deleted. Only folders
        the schedule made are touched, never anything else in ``backup_dir``."""
        doomed = self.backups()[:-self.keep]
        for path in doomed:
            shutil.rmtree(path)
        return doomed

    def _new_path(self, now: datetime) -> Path:
        base = self.backup_dir / f"{SCHEDULED_PREFIX}{now:%Y%m%dT%H%M%SZ}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    def _loop(self) -> None:
        # First look at once: a studio that was off past the due time catches up on start.
        while not self._stop.is_set():
            self._attempt()
            self._stop.wait(self.tick_s)

    def _attempt(self) -> None:
        error, made = "", None
        try:
            made = self.run_due()
            if made is not None:
                log.info("Backed up the data folder into %s", made)
        except StudioError as exc:
            error = f"The scheduled backup into {self.backup_dir} failed: {exc} Trying again in {self.tick_s:g} s."
            log.error("%s", error)
        except Exception as exc:  # never take the studio down over a backup
            error = (f"The scheduled backup into {self.backup_dir} failed unexpectedly "
                     f"({type(exc).__name__}); trying again in {self.tick_s:g} s.")
            log.exception("%s", error)
        with self._cond:
            self.attempts += 1
            self.last_error = error
            if made is not None:
                self.last_backup = made
            self._cond.notify_all()


def build_backup_schedule(settings) -> BackupSchedule | None:
    """The started schedule from STUDIO_BACKUP_*; None when STUDIO_BACKUP_DIR is empty."""
    if not settings.backup_dir:
        return None
    return BackupSchedule(settings.data_path, settings.backup_dir,
                          every_hours=settings.backup_every_hours,
                          keep=settings.backup_keep).start()


def _parse_stamp(name: str) -> datetime:
    stamp = name[len(SCHEDULED_PREFIX):len(SCHEDULED_PREFIX) + 16]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
