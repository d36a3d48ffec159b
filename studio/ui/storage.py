"""The Models tab's Storage section: output retention (keep N days / N GB, never the
gallery's favourites) and the report of models unused for N days, deleted only on a
confirmed request. The decisions are ``studio.hygiene``'s; this is the thin layer.
"""

from __future__ import annotations

import os
import time
from dataclasses import astuple
from datetime import datetime
from html import escape
from types import SimpleNamespace
from typing import Callable

import gradio as gr
import pandas as pd

from ..models.files import delete_model_file
from ..errors import InvalidInput, StudioError
from ..model_id import ModelId
from ..models.gpu import format_bytes
from ..models.hygiene import (GB, RetentionPlan, delete_outputs, model_records, retention_plan,
                       scan_outputs, unused_models)
from ..models.pulls import full_model_name
from .common import ui_errors


def render(services, *, favourites: Callable[[], list[str]],
           comfy_disk_files: Callable[[], dict], busy_models: Callable[[], set[str]],
           require_models_dir: Callable[[], str]) -> SimpleNamespace:
    """Build the section in the current Blocks; returns its handlers (for tests)."""
    settings = services.settings
    ollama = services.ollama
    models_store = services.models_store
    private = dict(api_visibility="private")
    quick = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")

    def on_delete_keep():
        return gr.update(value="", visible=False), gr.update(visible=False)

    def current_plan(days, gb) -> RetentionPlan:
        return retention_plan(scan_outputs(services.outputs_dir, favourites()),
                              keep_days=float(days or 0), keep_bytes=int(float(gb or 0) * GB),
                              now=time.time())

    @ui_errors
    def on_retention_check(days, gb):
        plan = current_plan(days, gb)
        base = str(services.outputs_dir)
        rows = [[os.path.relpath(f.path, base), format_bytes(f.size),
                 f"{(time.time() - f.mtime) / 86400:.0f}"] for f in plan.delete]
        frame = pd.DataFrame(rows, columns=["File", "Size", "Age (days)"])
        button = gr.update(visible=not plan.empty,
                           value=f"Delete these {len(plan.delete)} files "
                                 f"({format_bytes(plan.freed_bytes)})")
        return plan.summary, frame, [f.path for f in plan.delete], button

    @ui_errors
    def on_retention_delete(shown, days, gb):
        if not shown:
            raise InvalidInput("Check the outputs first; nothing was listed for deletion.")
        # Only what was shown, and only if the rule (and the favourites) still say so now.
        plan = current_plan(days, gb)
        allowed = set(shown)
        chosen = tuple(f for f in plan.delete if f.path in allowed)
        deleted, freed, problems = delete_outputs(
            RetentionPlan(chosen, 0, 0, sum(f.size for f in chosen), ""), services.outputs_dir)
        gr.Info(f"Deleted {deleted} file(s), {format_bytes(freed)} freed.")
        for problem in problems[:5]:
            gr.Warning(problem)
        return on_retention_check(days, gb)

    def unused_report(days):
        try:
            installed = ollama.list_models()
        except StudioError as exc:
            gr.Warning(f"Ollama's models are left out: {exc}")
            installed = []
        used = models_store.last_used() if models_store is not None else {}
        records = model_records(installed, comfy_disk_files(), used)
        return unused_models(records, int(days or 0), now=datetime.now().astimezone())

    @ui_errors
    def on_unused(days):
        report = unused_report(days)
        rows = [[u.backend, u.name, format_bytes(u.size), u.idle_days,
                 f"{u.last_used:%Y-%m-%d}" if u.last_used else "never (through the studio)"]
                for u in report]
        frame = pd.DataFrame(rows, columns=["Backend", "Model", "Size", "Idle days", "Last used"])
        # A file in a subfolder of a model folder is reported but not offered: deletes go
        # through delete_model_file, which takes plain names in a model folder only.
        offered = [u for u in report if u.backend == "ollama" or u.name.count("/") == 1]
        choices = [(u.label, str(ModelId(u.backend, u.name))) for u in offered]
        note = (f"{len(report)} model(s), {format_bytes(sum(u.size for u in report))}, unused for "
                f"{int(days)} days or more. Tick the ones to delete; nothing is deleted "
                "without your confirmation." if report else
                f"No model has been unused for {int(days)} days.")
        if len(offered) < len(report):
            note += (f" {len(report) - len(offered)} file(s) in subfolders are listed only: "
                     "delete those in ComfyUI's models folder itself.")
        return note, frame, gr.update(choices=choices, value=[])

    @ui_errors
    def on_unused_delete_ask(keys):
        if not keys:
            raise InvalidInput("Tick the models to delete first.")
        busy = busy_models()
        lines = [f"Delete these {len(keys)} model(s)? This can't be undone."]
        for key in keys:
            backend, name = astuple(ModelId.parse(key))
            warn = (" — ⚠️ a chat is answering with it right now; it will be skipped"
                    if backend == "ollama" and full_model_name(name) in busy else "")
            lines.append(f"- {escape(backend)}: {escape(name)}{warn}")
        return gr.update(value="\n".join(lines), visible=True), gr.update(visible=True)

    @ui_errors
    def on_unused_delete(keys, days):
        busy = busy_models()
        deleted, problems = [], []
        for key in keys or []:
            backend, name = astuple(ModelId.parse(key))
            try:
                if backend == "ollama":
                    if full_model_name(name) in busy:
                        problems.append(f"{name} is answering a chat; kept.")
                        continue
                    ollama.delete(name)
                else:
                    folder, _, filename = name.partition("/")
                    delete_model_file(require_models_dir(), folder, filename)
                deleted.append(name)
            except StudioError as exc:
                problems.append(str(exc))
        if deleted:
            gr.Info(f"Deleted {', '.join(deleted)}.")
        for problem in problems[:5]:
            gr.Warning(problem)
        return (*on_unused(days), gr.update(value="", visible=False), gr.update(visible=False))

    # -- layout --------------------------------------------------------------------------------

    gr.Markdown("### Storage")
    with gr.Row(equal_height=False):
        with gr.Column():
            with gr.Row():
                days_box = gr.Number(value=settings.output_retention_days, precision=0, minimum=0,
                                     label="Keep outputs for days (0 = forever)")
                gb_box = gr.Number(value=settings.output_retention_gb, minimum=0,
                                   label="Keep at most GB (0 = no limit)")
            check_btn = gr.Button("Check outputs", size="sm", elem_id="models-retention-check")
            retention_md = gr.Markdown("", elem_id="models-retention")
            retention_table = gr.Dataframe(pd.DataFrame([], columns=["File", "Size", "Age (days)"]),
                                           interactive=False, max_height=240)
            shown_paths = gr.State([])
            retention_delete_btn = gr.Button("Delete these files", variant="stop", size="sm",
                                             visible=False, elem_id="models-retention-delete")
        with gr.Column():
            unused_days = gr.Number(value=settings.unused_model_days, precision=0, minimum=1,
                                    label="Models unused for days")
            unused_btn = gr.Button("Find unused models", size="sm", elem_id="models-unused-btn")
            unused_md = gr.Markdown("", elem_id="models-unused")
            unused_table = gr.Dataframe(
                pd.DataFrame([], columns=["Backend", "Model", "Size", "Idle days", "Last used"]),
                interactive=False, max_height=240)
            unused_pick = gr.CheckboxGroup(choices=[], label="Delete", elem_id="models-unused-pick")
            unused_delete_btn = gr.Button("Delete ticked…", size="sm",
                                          elem_id="models-unused-delete")
            unused_question = gr.Markdown(visible=False)
            with gr.Row(visible=False) as unused_row:
                unused_confirm_btn = gr.Button("Yes, delete them", variant="stop", size="sm",
                                               elem_id="models-unused-confirm")
                unused_keep_btn = gr.Button("Keep them", size="sm")

    # -- wiring --------------------------------------------------------------------------------

    check_btn.click(on_retention_check, [days_box, gb_box],
                    [retention_md, retention_table, shown_paths, retention_delete_btn],
                    concurrency_id="models-retention", **quick)
    retention_delete_btn.click(on_retention_delete, [shown_paths, days_box, gb_box],
                               [retention_md, retention_table, shown_paths, retention_delete_btn],
                               concurrency_id="models-retention-delete", **quick)
    unused_btn.click(on_unused, [unused_days], [unused_md, unused_table, unused_pick],
                     concurrency_id="models-unused", **quick)
    unused_delete_btn.click(on_unused_delete_ask, [unused_pick], [unused_question, unused_row],
                            concurrency_id="models-unused-ask", **quick)
    unused_confirm_btn.click(on_unused_delete, [unused_pick, unused_days],
                             [unused_md, unused_table, unused_pick, unused_question, unused_row],
                             concurrency_id="models-unused-delete", **quick)
    unused_keep_btn.click(on_delete_keep, None, [unused_question, unused_row], queue=False,
                          **private)

    return SimpleNamespace(
        on_retention_check=on_retention_check, on_retention_delete=on_retention_delete,
        on_unused=on_unused, on_unused_delete_ask=on_unused_delete_ask,
        on_unused_delete=on_unused_delete)
