"""Storage hygiene: which generated outputs a retention rule removes, and which models have
gone unused.

Pure decisions over plain data (``retention_plan``, ``unused_models``) plus two small I/O
helpers (``scan_outputs`` reads a folder, ``delete_outputs`` deletes what a plan lists,
only inside that folder). Nothing here deletes on its own: the UI shows the plan and the
owner confirms. Favourites are never part of a plan. No gradio imports here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import InvalidInput
from .gpu import format_bytes

DAY_S = 86_400.0
GB = 10**9
# Files the desktop leaves behind in folders; never outputs.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class OutputFile:
    """One generated file: ``mtime`` in seconds since the epoch."""

    path: str
    size: int
    mtime: float
    favourite: bool = False


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention rule would delete, and a sentence saying why."""

    delete: tuple[OutputFile, ...]
    kept: int
    kept_bytes: int
    freed_bytes: int
    summary: str

    @property
    def empty(self) -> bool:
        return not self.delete


def retention_plan(files: Iterable[OutputFile], *, keep_days: float = 0, keep_bytes: int = 0,
                   now: float) -> RetentionPlan:
    """The files to delete so that what remains is at most ``keep_days`` old and at most
    ``keep_bytes`` in total (0 = no such limit).

    Favourites are never deleted, but they count toward ``keep_bytes``. Age goes first
    (every non-favourite older than ``keep_days``); then, while the total is over
    ``keep_bytes``, the oldest remaining non-favourites go. Raises InvalidInput for a
    negative limit.

    >>> old = OutputFile("a.png", 10, 0.0)
    >>> new = OutputFile("b.png", 10, 9 * 86400.0)
    >>> [f.path for f in retention_plan([old, new], keep_days=5, now=10 * 86400.0).delete]
    ['a.png']
    """
    if keep_days < 0 or keep_bytes < 0:
        raise InvalidInput("Retention limits can't be negative.",
                           hint="Use 0 for 'no limit'.")
    ordered = sorted(files, key=lambda f: (f.mtime, f.path))
    doomed: list[OutputFile] = []
    remaining: list[OutputFile] = []
    cutoff = now - keep_days * DAY_S if keep_days else None
    for f in ordered:
        if cutoff is not None and f.mtime < cutoff and not f.favourite:
            doomed.append(f)
        else:
            remaining.append(f)
    total = sum(f.size for f in remaining)
    if keep_bytes:
        survivors = []
        for f in remaining:  # oldest first
            if total > keep_bytes and not f.favourite:
                doomed.append(f)
                total -= f.size
            else:
                survivors.append(f)
        remaining = survivors
    freed = sum(f.size for f in doomed)
    favourites = sum(1 for f in remaining if f.favourite)
    parts = []
    if not keep_days and not keep_bytes:
        parts.append("No retention limit is set, so nothing is due for deletion.")
    elif doomed:
        parts.append(f"{len(doomed)} file(s), {format_bytes(freed)}, are due for deletion; "
                     f"{len(remaining)} file(s), {format_bytes(total)}, stay.")
    else:
        parts.append(f"Nothing is due for deletion; {len(remaining)} file(s), "
                     f"{format_bytes(total)}, stay.")
    if favourites:
        parts.append(f"{favourites} favourite(s) are kept whatever their age.")
    if keep_bytes and total > keep_bytes:
        parts.append(f"Favourites alone take {format_bytes(total)}, more than the "
                     f"{format_bytes(keep_bytes)} limit.")
    return RetentionPlan(tuple(doomed), len(remaining), total, freed, " ".join(parts))


def scan_outputs(root: str | os.PathLike, favourites: Iterable[str] = ()) -> list[OutputFile]:
    """Every file under ``root`` (recursively) as an ``OutputFile``; ``favourites`` are paths
    (absolute, or relative to ``root``) to mark. A missing ``root`` gives ``[]``."""
    base = Path(root)
    if not base.is_dir():
        return []
    marked = {os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))
              for p in favourites}
    found = []
    for dirpath, _dirs, names in os.walk(base):
        for name in names:
            if name in IGNORED_NAMES:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed meanwhile
            found.append(OutputFile(path, st.st_size, st.st_mtime,
                                    os.path.normpath(path) in marked))
    return found


def delete_outputs(plan: RetentionPlan, root: str | os.PathLike) -> tuple[int, int, list[str]]:
    """Delete the plan's files that lie inside ``root``: (files deleted, bytes freed,
    problems as sentences). Favourites and paths outside ``root`` are skipped, whatever
    the plan says; a file already gone is not a problem."""
    base = os.path.realpath(root)
    deleted, freed, problems = 0, 0, []
    for f in plan.delete:
        real = os.path.realpath(f.path)
        if f.favourite or os.path.commonpath([base, real]) != base:
            problems.append(f"Skipped {f.path}: not a plain output of {base}.")
            continue
        try:
            os.unlink(real)
        except FileNotFoundError:
            continue
        except OSError as err:
            problems.append(f"Could not delete {f.path}: {err.strerror or err}.")
            continue
        deleted += 1
        freed += f.size
    return deleted, freed, problems


@dataclass(frozen=True)
class ModelRecord:
    """A model either backend has: ``installed_at`` / ``last_used`` are aware datetimes
    (``last_used`` None when it was never used as far as the studio knows)."""

    backend: str
    name: str
    size: int
    installed_at: datetime | None
    last_used: datetime | None


@dataclass(frozen=True)
class UnusedModel:
    backend: str
    name: str
    size: int
    idle_days: int
    last_used: datetime | None

    @property
    def label(self) -> str:
        when = (f"last used {self.last_used:%Y-%m-%d}" if self.last_used
                else "never used through the studio")
        return f"{self.backend}: {self.name} · {format_bytes(self.size)} · {when}"


def unused_models(models: Iterable[ModelRecord], days: int, *, now: datetime
                  ) -> list[UnusedModel]:
    """Models not used for at least ``days`` days, largest first.

    A model's idle time runs from its last use, or from when it was installed if the studio
    never saw it used; a model with neither date is left out (nothing to go by). Raises
    InvalidInput when ``days`` is below 1.
    """
    if days < 1:
        raise InvalidInput("The unused-models report needs at least 1 day.",
                           hint="Pick a number of days like 30.")
    report = []
    for m in models:
        since = m.last_used or m.installed_at
        if since is None:
            continue
        idle = (now - since).total_seconds() / DAY_S
        if idle >= days:
            report.append(UnusedModel(m.backend, m.name, m.size, int(idle), m.last_used))
    return sorted(report, key=lambda u: (-u.size, u.backend, u.name))


def parse_time(value: str | None) -> datetime | None:
    """ISO 8601 text (``Z`` allowed) as an aware datetime; ``None`` for empty or bad text.

    >>> parse_time("2025-01-31T09:15:02.123Z").tzinfo is not None
    True
    """
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def model_records(ollama_models: Iterable, comfy_files: Mapping[str, tuple[int, float]],
                  last_used: Mapping[tuple[str, str], str]) -> list[ModelRecord]:
    """Join the two model lists with the last-use table.

    ``ollama_models`` are ``ModelInfo`` (name, size, modified_at); ``comfy_files`` maps
    ``'<folder>/<file>'`` to (size, mtime). A ComfyUI file also counts as used when the
    gallery recorded its bare file name.
    """
    records = []
    for m in ollama_models:
        records.append(ModelRecord("ollama", m.name, m.size, parse_time(m.modified_at),
                                   parse_time(last_used.get(("ollama", m.name)))))
    for key, (size, mtime) in comfy_files.items():
        bare = key.split("/", 1)[-1]
        stamps = [last_used.get(("comfyui", key)), last_used.get(("comfyui", bare))]
        latest = max((s for s in stamps if s), default=None)
        records.append(ModelRecord("comfyui", key, size,
                                   datetime.fromtimestamp(mtime, timezone.utc),
                                   parse_time(latest)))
    return records
