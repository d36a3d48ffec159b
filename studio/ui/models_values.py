"""Values for the Models tab's components: tables, HTML and Markdown built from the studio's
own types (``ModelInfo``, ``RunningModel``, ``PullSnapshot``, ``DownloadProgress``,
``GpuReading``, ``GpuAction``), plus ``SharedPoll``. No components and no handlers here;
``studio/ui/models.py`` builds the tab.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from html import escape
from typing import Any, Callable

import pandas as pd

from ..backends.board import COMFYUI, HostGpus
from ..clients.ollama import format_size
from ..models.gpu import GpuReading, format_bytes
from ..models.hygiene import parse_time
from ..models.pulls import full_model_name

OLLAMA_HEADERS = ["Name", "For", "Size", "Family", "Parameters", "Quantization", "Modified"]
RUNNING_HEADERS = ["Name", "In GPU memory", "Size", "Loaded until"]
LOG_HEADERS = ["Time", "Why", "Policy", "Action", "Outcome", "What happened"]
HISTORY_MINUTES = 10
LICENSE_LINES = 12


# -- shaping values (no components) ----------------------------------------------------------


def _when(iso: str) -> str:
    """'2025-06-01 14:03' in local time; '' for empty text, the text itself if unreadable."""
    stamp = parse_time(iso)
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M") if stamp else (iso or "")


def ollama_frame(models, places: dict[str, str] | None = None) -> pd.DataFrame:
    """The installed-models table (``LocalModel`` list): what each is for (chat, images,
    embeddings... from Ollama's capabilities), then its facts. With ``places`` (several
    Ollama hosts: ``model_places``) a "Hosts" column says where each model is."""
    rows = [[m.name, m.uses, format_size(m.size), m.info.family, m.info.parameter_size,
             m.info.quantization, _when(m.info.modified_at)] for m in models]
    frame = pd.DataFrame(rows, columns=OLLAMA_HEADERS)
    if places is not None:
        frame.insert(1, "Hosts", [places.get(full_model_name(m.name), "") for m in models])
    return frame


def model_places(views) -> dict[str, str]:
    """Model name -> the hosts that have it, "(loaded)" after those with it in memory, from
    the pool's ``HostView``s (what the last health check or listing saw).

    >>> from studio.backends.hosts import HostSpec
    >>> from studio.backends.pool import HostView
    >>> model_places([HostView(HostSpec("a", "http://a:1"), models=frozenset({"m:latest"})),
    ...               HostView(HostSpec("b", "http://b:1"), models=frozenset({"m:latest"}),
    ...                        loaded=frozenset({"m:latest"}))])
    {'m:latest': 'a, b (loaded)'}
    """
    places: dict[str, list[str]] = {}
    for v in views:
        for model in sorted(v.models or ()):
            places.setdefault(model, []).append(
                f"{v.name} (loaded)" if model in v.loaded else v.name)
    return {model: ", ".join(names) for model, names in places.items()}


def comfy_hosts_frame(folder: str, found: list[tuple[str, list[str] | str]]
                      ) -> tuple[pd.DataFrame, str]:
    """(a table of ``folder``'s files with a column per ComfyUI host, ✓ where the host has
    the file; a line naming each host that couldn't be asked). ``found`` is (host, its file
    names or the sentence saying why not), in the setting's order.

    >>> frame, note = comfy_hosts_frame("loras", [("a", ["x.safetensors"]), ("b", "Down.")])
    >>> frame.values.tolist(), note
    ([['x.safetensors', '✓', '?']], '⚠️ b: Down.')
    """
    files = sorted({name for _host, names in found if isinstance(names, list) for name in names})
    columns = ["File"] + [host for host, _names in found]
    rows = [[name] + [("✓" if name in names else "") if isinstance(names, list) else "?"
                      for _host, names in found] for name in files]
    problems = [f"{host}: {names}" for host, names in found if isinstance(names, str)]
    note = ("⚠️ " + " ".join(problems)) if problems else ""
    if not files and not problems:
        note = f"No host has files in {folder}."
    return pd.DataFrame(rows, columns=columns), note


def _until(iso: str, now: datetime | None = None) -> str:
    stamp = parse_time(iso)
    if stamp is None:
        return iso or ""
    now = now or datetime.now().astimezone()
    left = (stamp - now).total_seconds()
    if left > 10 * 365 * 86400:
        return "kept loaded"
    if left <= 0:
        return "unloading"
    minutes = int(left // 60)
    return f"{stamp.astimezone():%H:%M:%S} (in {minutes} min)" if minutes else \
        f"{stamp.astimezone():%H:%M:%S} (in {int(left)} s)"


def running_frame(running, now: datetime | None = None) -> pd.DataFrame:
    """The loaded-models table (``RunningModel`` list from /api/ps)."""
    rows = []
    for m in running:
        share = f" ({100 * m.size_vram / m.size:.0f}%)" if m.size and m.size_vram != m.size else ""
        rows.append([m.name, format_bytes(m.size_vram) + share, format_bytes(m.size),
                     _until(m.expires_at, now)])
    return pd.DataFrame(rows, columns=RUNNING_HEADERS)


def log_frame(actions) -> pd.DataFrame:
    """The GPU-sharing log table (``GpuAction`` list)."""
    why = {"image_job": "image job", "chat": "chat", "manual": "by hand"}
    rows = [[_when(a.created_at), why.get(a.trigger, a.trigger), a.policy,
             a.action.replace("_", " "), a.outcome, a.message] for a in actions]
    return pd.DataFrame(rows, columns=LOG_HEADERS)


def vram_frame(readings: list[GpuReading], minutes: int = HISTORY_MINUTES) -> pd.DataFrame:
    """History as percent of VRAM used and load per card, from full readings."""
    data = []
    if readings:
        cutoff = readings[-1].taken_at.timestamp() - minutes * 60
        for reading in readings:
            if reading.taken_at.timestamp() < cutoff:
                continue
            stamp = reading.taken_at.replace(tzinfo=None)
            for d in reading.devices:
                if d.memory_used is not None and d.memory_total:
                    data.append((stamp, f"GPU {d.index} VRAM", 100 * d.memory_used / d.memory_total))
                if d.utilization_gpu is not None:
                    data.append((stamp, f"GPU {d.index} load", float(d.utilization_gpu)))
    frame = pd.DataFrame(data, columns=["time", "series", "percent"])
    frame["time"] = pd.to_datetime(frame["time"])
    return frame


def comfy_stats_markdown(stats=None, error: str = "", *, name: str = "",
                         devices: bool = True) -> str:
    """ComfyUI's own view of memory (``/system_stats``), or why it isn't there. ``name``:
    the host's, with several; ``devices=False`` leaves out its GPUs (this machine's, shown
    by the NVML panel above)."""
    title = f"ComfyUI {escape(name)}" if name else "ComfyUI"
    if stats is None:
        return f"**{title}:** {escape(error) or 'not asked yet.'}"
    lines = [f"**{title} {escape(stats.comfyui_version)}** "
             f"(PyTorch {escape(stats.pytorch_version)})"]
    for d in stats.devices if devices else ():
        if d.type == "cpu" or not d.vram_total:
            lines.append(f"- {escape(d.name)}: no GPU (ComfyUI runs on the CPU)")
        else:
            used = d.vram_total - d.vram_free
            torch = (f"; PyTorch holds {format_bytes(d.torch_vram_total)}, "
                     f"{format_bytes(d.torch_vram_free)} of it free" if d.torch_vram_total else "")
            lines.append(f"- {escape(d.name)}: {format_bytes(used)} used of "
                         f"{format_bytes(d.vram_total)}, {format_bytes(d.vram_free)} free{torch}")
    if not devices:
        lines.append("- its GPUs are this machine's, in the panel on the left")
    lines.append(f"- RAM: {format_bytes(stats.ram_free)} free of {format_bytes(stats.ram_total)}")
    return "\n".join(lines)


def hosts_gpus_markdown(readings: list[HostGpus], *, nvml: bool, named: bool) -> str:
    """The panel beside the NVML one: each ComfyUI host's devices (a host on this machine
    without its GPUs when NVML shows them), then each other machine's Ollama with its loaded
    models and their VRAM; a host that can't be asked gets its sentence. ``named``: name
    the hosts (several)."""
    blocks = []
    for r in readings:
        if r.kind == COMFYUI:
            blocks.append(comfy_stats_markdown(r.stats, r.problem, name=r.name if named else "",
                                               devices=not (r.local and nvml)))
        elif r.loaded is None:
            blocks.append(f"**Ollama {escape(r.name)}:** {escape(r.problem)}")
        else:
            lines = [f"**Ollama {escape(r.name)}** (another machine, /api/ps)"]
            lines += [f"- {escape(m.name)}: {format_bytes(m.size_vram)} in GPU memory"
                      for m in r.loaded] or ["- no model loaded"]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or comfy_stats_markdown()


def _bar(percent: float | None) -> str:
    if percent is None:
        return "<progress></progress>"
    return f"<progress max='100' value='{percent:.1f}'></progress>"


def _speed(bps: float) -> str:
    return f"{format_bytes(bps)}/s" if bps else ""


def jobs_html(pulls, downloads) -> str:
    """Pulls and downloads, running ones first, each with a bar and its last message."""
    items = []
    for p in pulls:
        figures = [f"layer {escape(p.layer)}" if p.layer and not p.finished else "",
                   f"{format_bytes(p.completed)} of {format_bytes(p.total)}" if p.total else "",
                   f"{p.percent:.0f}%" if p.percent is not None else "",
                   _speed(p.speed_bps) if not p.finished else ""]
        onto = f" → {escape(p.host)}" if p.host else ""
        items.append((p.finished, p.started_at, p.state,
                      f"Pull <b>{escape(p.model)}</b>{onto}", " · ".join(f for f in figures if f),
                      p.percent, p.message))
    for d in downloads:
        figures = [f"{format_bytes(d.bytes_done)} of {format_bytes(d.total)}" if d.total
                   else (format_bytes(d.bytes_done) if d.bytes_done else ""),
                   f"{d.percent:.0f}%" if d.percent is not None else "",
                   _speed(d.speed_bps) if not d.finished else "",
                   f"{d.eta_s:.0f} s left" if d.eta_s and not d.finished else ""]
        items.append((d.finished, 0.0, d.state,
                      f"Download <b>{escape(d.filename)}</b> → {escape(d.folder)}",
                      " · ".join(f for f in figures if f), d.percent, d.message))
    if not items:
        return "<div class='models-jobs-empty'>No pulls or downloads yet.</div>"
    items.sort(key=lambda i: (i[0], -i[1]))
    out = []
    for finished, _start, state, title, figures, percent, message in items:
        bar = "" if finished and state != "done" else _bar(100.0 if state == "done" else percent)
        out.append(f"<div class='models-job models-job-{state}'><div>{title} — "
                   f"<span class='models-job-state'>{state}</span>"
                   f"{' · ' + figures if figures else ''}</div>{bar}"
                   f"<div class='models-job-message'>{escape(message)}</div></div>")
    return "".join(out)


def cancel_choices(pulls, downloads) -> list[tuple[str, str]]:
    """(label, 'pull:<id>' | 'download:<id>') for each job still running."""
    choices = [(f"Pull {p.model}" + (f" onto {p.host}" if p.host else ""), f"pull:{p.id}")
               for p in pulls if not p.finished]
    choices += [(f"Download {d.filename}", f"download:{d.id}") for d in downloads
                if not d.finished]
    return choices


def delete_question(model: str, size: int | None, busy: set[str], loaded: set[str],
                    pulling: set[str]) -> str:
    """The confirmation text for deleting an Ollama model, naming every conflict."""
    name = full_model_name(model)
    text = [f"Delete **{escape(model)}**" + (f" ({format_size(size)})" if size else "") +
            " from Ollama? This can't be undone; using it again means pulling it again."]
    if name in busy:
        text.append(f"⚠️ **A chat is answering with {escape(name)} right now**: deleting it "
                    "cuts that reply off.")
    if name in loaded:
        text.append("It is loaded in GPU memory; Ollama unloads it first.")
    if name in pulling:
        text.append("⚠️ A pull of this model is still running; cancel it first or it comes back.")
    return "\n\n".join(text)


def fenced(text: str, lang: str = "") -> str:
    """``text`` in a Markdown code fence longer than any backtick run inside it."""
    run, best = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    fence = "`" * max(3, best + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def details_markdown(model: str, info: dict) -> str:
    """Template, parameters, Modelfile and the head of the license, for the details box."""
    d = info.get("details") or {}
    facts = " · ".join(f for f in (d.get("family"), d.get("parameter_size"),
                                   d.get("quantization_level"), d.get("format")) if f)
    caps = ", ".join(info.get("capabilities") or []) or "not reported"
    license_lines = (info.get("license") or "").strip().splitlines()
    head = "\n".join(license_lines[:LICENSE_LINES])
    if len(license_lines) > LICENSE_LINES:
        head += f"\n… ({len(license_lines) - LICENSE_LINES} more lines)"
    parts = [f"### {escape(model)}", f"{escape(facts)}  \nCapabilities: {escape(caps)}",
             "**Template**", fenced(info.get("template") or "(none)"),
             "**Parameters**", fenced(info.get("parameters") or "(none)"),
             "**Modelfile**", fenced(info.get("modelfile") or "(none)"),
             "**License (first lines)**", fenced(head or "(none)")]
    return "\n\n".join(parts)


def disk_markdown(usage: dict[str, int] | None, space=None, note: str = "") -> str:
    """Disk use per model folder and the free space on that disk."""
    if usage is None:
        return note
    parts = [f"{escape(name)} {format_bytes(size)}" for name, size in usage.items() if size]
    line = " · ".join(parts) or "no model files yet"
    free = (f"**Free:** {format_bytes(space.free)} of {format_bytes(space.total)}"
            if space is not None else "")
    return f"**Disk use:** {line}  \n{free}"


class SharedPoll:
    """A value fetched at most once per ``max_age`` seconds for every page together.

    While one request fetches, the others get the previous value instead of waiting (a
    slow ComfyUI must not pile up timer ticks). Thread-safe.
    """

    def __init__(self, fetch: Callable[[], Any], max_age: float,
                 clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._busy = False
        self._value: Any = None
        self._at: float | None = None

    def get(self) -> Any:
        with self._lock:
            fresh = self._at is not None and self._clock() - self._at < self._max_age
            if fresh or (self._busy and self._at is not None):
                return self._value
            self._busy = True
        try:
            value = self._fetch()
        finally:
            with self._lock:
                self._busy = False
        with self._lock:
            self._value, self._at = value, self._clock()
            return value
