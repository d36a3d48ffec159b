"""What the Models tab reads from the services, as plain functions over explicit arguments:
Ollama's lists, ComfyUI's model folders and files (from ComfyUI, else from the models folder
on disk), the disk line, and following pulls and downloads while they run.

No components here; ``studio/ui/models.py`` lays the tab out and wires it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import pandas as pd

from ..errors import InvalidInput, StudioError
from ..live import wait_any
from ..models.files import REFUSED_FOLDERS, disk_space, folder_usage, is_inside
from ..models.gpu import format_bytes
from .models_values import cancel_choices, disk_markdown, jobs_html, ollama_frame

JOB_INTERVAL_S = 0.3  # coalesce progress: one page update per this many seconds at most
FILE_COLUMNS = ["File", "Size on disk"]


def read_ollama(local, ollama) -> tuple[list, list, str]:
    """(installed ``LocalModel``s, loaded now, a warning line), asked of Ollama now
    (``local`` is ``services.local_models``); empty lists and the reason when it can't be
    reached."""
    listing = local.listing(fresh=True)
    if not listing.reachable:
        return [], [], f"⚠️ {listing.problem}"
    installed = list(listing.models)
    try:
        running = ollama.running()
    except StudioError:
        running = []
    return installed, running, ""


def known_folders(comfyui, models_dir: str) -> list[str]:
    """ComfyUI's model folders; from the models folder on disk when ComfyUI is down (else
    ComfyUI's error is raised)."""
    try:
        return [f for f in comfyui.model_folders() if f not in REFUSED_FOLDERS]
    except StudioError:
        if models_dir and os.path.isdir(models_dir):
            return sorted(e.name for e in os.scandir(models_dir)
                          if e.is_dir() and e.name not in REFUSED_FOLDERS)
        raise


def require_models_dir(models_dir: str) -> str:
    """``models_dir``; raises InvalidInput saying how to set it when it is empty."""
    if not models_dir:
        raise InvalidInput("Model files can only be downloaded or deleted when the studio "
                           "knows ComfyUI's models folder.",
                           hint="Set COMFYUI_MODELS_DIR (e.g. the volume ComfyUI shares "
                                "in docker compose) and restart the studio.")
    return models_dir


def comfy_disk_files(models_dir: str) -> dict[str, tuple[int, float]]:
    """'<folder>/<file>' -> (size, mtime) for model files on disk (no .part files)."""
    found: dict[str, tuple[int, float]] = {}
    if not models_dir or not os.path.isdir(models_dir):
        return found
    for entry in os.scandir(models_dir):
        if not entry.is_dir() or entry.name in REFUSED_FOLDERS or not is_inside(models_dir,
                                                                                entry.path):
            continue  # a folder linked out of the models folder is not the studio's to list
        for dirpath, _dirs, names in os.walk(entry.path):
            for name in names:
                if name.endswith(".part") or name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, models_dir).replace(os.sep, "/")
                found[rel] = (st.st_size, st.st_mtime)
    return found


def folder_files(comfyui, models_dir: str, folder: str | None
                 ) -> tuple[pd.DataFrame, list[str], str]:
    """(files table, names that may be deleted, a warning line) for one model folder."""
    if not folder:
        return pd.DataFrame([], columns=FILE_COLUMNS), [], ""
    note = ""
    try:
        names = comfyui.models(folder)
    except StudioError as exc:
        on_disk = sorted(k.split("/", 1)[1] for k in comfy_disk_files(models_dir)
                         if k.split("/", 1)[0] == folder)
        if not models_dir:
            return pd.DataFrame([], columns=FILE_COLUMNS), [], f"⚠️ {exc}"
        names, note = on_disk, f"⚠️ {exc} Showing the files on disk instead."
    rows = []
    for name in names:
        size = ""
        if models_dir:
            path = Path(models_dir, folder, name)
            size = format_bytes(path.stat().st_size) if path.is_file() else "not on this disk"
        rows.append([name, size])
    deletable = [n for n in names if "/" not in n and "\\" not in n] if models_dir else []
    return pd.DataFrame(rows, columns=FILE_COLUMNS), deletable, note


def disk_values(models_dir: str) -> str:
    """The disk-use line under the ComfyUI models (how to enable it when unset)."""
    if not models_dir:
        return ("Set `COMFYUI_MODELS_DIR` to ComfyUI's models folder to download and delete "
                "model files here and to see the disk use.")
    try:
        return disk_markdown(folder_usage(models_dir), disk_space(models_dir))
    except (StudioError, OSError) as exc:
        return f"⚠️ {exc}"


def finished_pulls(pulls) -> set[str]:
    return {s.id for s in pulls.snapshots() if s.state == "done"}


def follow_jobs(pulls, downloads, local, ollama, viewing: Callable[[], bool],
                shown: tuple[str, list] | None = None,
                done_seen: set[str] | None = None,
                frame: Callable[[list], pd.DataFrame] = ollama_frame) -> Iterator[tuple]:
    """Yield (jobs html, cancel choices, ollama table, model choices) while pulls or
    downloads run and ``viewing()`` holds; ``shown`` is the (html, choices) the page already
    has, ``done_seen`` the pulls whose models its table already lists, ``frame`` makes the
    table from the installed models.

    Sleeps only while nothing changes (waking on any pull or download), and sends at most
    one update per ``JOB_INTERVAL_S``. The Ollama table is refreshed whenever a pull
    finishes, on every page following.
    """
    done_seen = set(finished_pulls(pulls) if done_seen is None else done_seen)
    last_html, last_choices = shown or (None, None)
    last_sent = float("-inf")
    while viewing():
        # Versions first: a change while the lists are read wakes the wait below at once.
        seen = [(pulls.jobs, pulls.jobs.version), (downloads.jobs, downloads.jobs.version)]
        snaps, dls = pulls.snapshots(), downloads.list()
        html = jobs_html(snaps, dls)
        choices = cancel_choices(snaps, dls)
        finished_now = {s.id for s in snaps if s.state == "done"} - done_seen
        if html != last_html or finished_now:
            table, model_choices = gr.skip(), gr.skip()
            if finished_now:
                done_seen |= finished_now
                installed, _running, _note = read_ollama(local, ollama)
                table = frame(installed)
                model_choices = gr.update(choices=[m.name for m in installed])
            cancel = gr.update(choices=choices) if choices != last_choices else gr.skip()
            yield html, cancel, table, model_choices
            last_html, last_choices = html, choices
            last_sent = time.monotonic()
        if not choices:
            return
        # The timeout only lets a page that went away end this loop.
        if wait_any(seen, timeout=5.0):
            # Coalesce: a pull reports every ~60 ms, a download every chunk.
            time.sleep(max(0.0, last_sent + JOB_INTERVAL_S - time.monotonic()))
