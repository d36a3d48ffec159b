"""The Models tab: Ollama and ComfyUI models, pulls and downloads, the GPU panel, GPU sharing
and storage hygiene.

With several Ollama hosts the model table says which host has each model (and where it is
loaded), and pull, delete and unload act on the host chosen, or on all of them; with several
ComfyUI hosts a table shows each host's files of the chosen folder. The hosts come from
``services.hosts`` (``backends/board.py``); the GPU panel adds each host's own view (ComfyUI's
``/system_stats``, another machine's Ollama ``/api/ps``) beside this machine's NVML readings.

Thin layer over ``services``: pulls run in ``services.pulls`` and downloads in
``services.downloads`` on server threads (they outlive the page; any page that opens this
tab follows them), GPU-sharing actions go through ``services.gpu_coordinator`` (which logs
them). The Storage section (retention, unused models) is ``ui/storage.py``, over
``studio.hygiene``. What is read from the services (and the following of pulls and
downloads) is ``models_data``, values for components are shaped in ``models_values``;
handlers are closures in ``render`` and are returned so tests can call them directly.

Cost: the tab is built only on pages that open it (``ui/lazy.py``); its GPU timer is the
app's, off until the tab is shown, and ``ui/app.py`` pauses it while another tab is shown;
every page shares one reading per poll interval.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..backends.board import OLLAMA, build_host_board
from ..models.files import delete_model_file, plan_download
from ..errors import InvalidInput, StudioError
from ..models.gpu import format_bytes
from ..models.pulls import check_model_name, full_model_name
from . import models_data, storage
from .models_gpu import GpuPanel
from .common import PageViews, tab_opened, ui_errors
from .models_values import (cancel_choices, comfy_hosts_frame, delete_question,
                            details_markdown, jobs_html, log_frame, model_places, ollama_frame,
                            running_frame, vram_frame)

ALL_HOSTS = "*"  # the host chooser's "All hosts"

# One click pulls these; names as on ollama.com/library (older favourites and their
# current equivalents).
SUGGESTED = [
    ("llama3.2", "Meta Llama 3.2 3B, general chat"),
    ("llama3.1:8b", "Meta Llama 3.1 8B"),
    ("mistral", "Mistral 7B"),
    ("qwen3:8b", "Qwen3 8B, thinks"),
    ("gemma3", "Google Gemma 3 4B, sees images"),
    ("phi4-mini", "Microsoft Phi-4 mini (Phi-3's successor)"),
    ("codellama", "Code Llama 7B"),
    ("qwen2.5-coder:7b", "Qwen2.5 Coder 7B"),
    ("starcoder2", "StarCoder2 3B, code completion"),
    ("llava", "LLaVA 7B, sees images"),
]


# -- the tab ------------------------------------------------------------------------------------


def gpu_poll_seconds(settings) -> float:
    """Seconds between the GPU panel's readings (STUDIO_GPU_POLL_SECONDS, at least 1)."""
    return max(1.0, float(settings.gpu_poll_seconds))


def render(services, tab: gr.Tab | None = None, timer: gr.Timer | None = None
           ) -> SimpleNamespace:
    """Build the Models tab in the current Blocks; its data loads when the tab is opened
    (``tab``, or the tab being built: ``tab_opened``). ``timer`` ticks the GPU panel (one
    of its own when not given; ``ui/app.py`` gives one it switches with the tabs).

    Returns the handlers (for tests) and the open event's wiring.
    """
    opened = tab_opened(tab)  # the tab's loading events' triggers, before any inner block
    settings = services.settings
    ollama = services.ollama
    comfyui = services.comfyui
    pulls = services.pulls
    downloads = services.downloads
    coordinator = services.gpu_coordinator
    models_store = services.models_store
    poll_s = gpu_poll_seconds(settings)
    models_dir = settings.comfyui_models_dir.strip()
    board = getattr(services, "hosts", None) or build_host_board(
        settings=settings, ollama=ollama, ollama_health=None, comfyui=comfyui,
        local_servers=getattr(services, "local_servers", None))
    ollama_pool = board.engine(OLLAMA).pool
    several_ollama = len(ollama_pool) > 1
    several_comfyui = len(board.comfyui_clients()) > 1

    # -- data helpers (no component values) --------------------------------------------

    busy_models = services.models_in_use.names

    local = services.local_models

    def read_ollama() -> tuple[list, list, str]:
        return models_data.read_ollama(local, ollama)

    gpu_panel = GpuPanel(services.gpu, board, ollama, poll_s=poll_s,
                         policy=coordinator.policy if coordinator else None,
                         named=several_ollama or several_comfyui)

    def known_folders() -> list[str]:
        return models_data.known_folders(comfyui, models_dir)

    def require_models_dir() -> str:
        return models_data.require_models_dir(models_dir)

    def comfy_disk_files() -> dict[str, tuple[int, float]]:
        return models_data.comfy_disk_files(models_dir)

    def favourites() -> list[str]:
        return models_store.favourite_output_paths() if models_store is not None else []

    # -- component values ------------------------------------------------------------------

    def models_frame(installed):
        """The model table; with several hosts, where each model is (read after the listing
        that told the pool)."""
        return ollama_frame(installed, model_places(ollama_pool.views()) if several_ollama
                            else None)

    def chosen_host(host: str | None) -> str | None:
        return None if not several_ollama or host in (None, "", ALL_HOSTS) else host

    def ollama_values():
        installed, running, note = read_ollama()
        names = [m.name for m in installed]
        return (models_frame(installed), gr.update(choices=names),
                running_frame(running), gr.update(choices=[m.name for m in running]), note)

    def comfy_values(folder: str | None = None):
        try:
            folders = known_folders()
            note = ""
        except StudioError as exc:
            folders, note = [], f"⚠️ {exc}"
        if folder not in folders:
            folder = "checkpoints" if "checkpoints" in folders else (folders[0] if folders else None)
        files_frame, file_choices, files_note = folder_files(folder)
        return (gr.update(choices=folders, value=folder), gr.update(choices=folders, value=folder),
                files_frame, gr.update(choices=file_choices, value=None), disk_values(),
                note or files_note)

    def folder_files(folder: str | None):
        return models_data.folder_files(comfyui, models_dir, folder)

    def disk_values() -> str:
        return models_data.disk_values(models_dir)

    def gpu_values():
        summary, history, available, hosts = gpu_panel.values()
        return summary, gr.update(value=history, visible=available), hosts

    def comfy_hosts_values(folder: str | None):
        """Each ComfyUI host's files of ``folder`` (several hosts; read-only)."""
        if not several_comfyui or not folder:
            return gr.skip(), gr.skip()
        return comfy_hosts_frame(folder, board.comfyui_files(folder))

    def log_values():
        actions = models_store.gpu_actions(30) if models_store is not None else []
        return log_frame(actions)

    def jobs_values():
        snaps, dls = pulls.snapshots(), downloads.list()
        return jobs_html(snaps, dls), gr.update(choices=cancel_choices(snaps, dls), value=None)

    # -- following jobs ------------------------------------------------------------------------

    views = PageViews()
    claim_view = views.claim
    still_viewing = views.holds

    def finished_pulls() -> set[str]:
        return models_data.finished_pulls(pulls)

    def follow_jobs(view, shown: tuple[str, list] | None = None,
                    done_seen: set[str] | None = None):
        """``models_data.follow_jobs`` for as long as this page holds ``view``."""
        return models_data.follow_jobs(pulls, downloads, local, ollama,
                                       lambda: still_viewing(view),
                                       shown, done_seen, frame=models_frame)

    # -- handlers ------------------------------------------------------------------------------

    @ui_errors
    def on_open(folder, request: gr.Request = None):
        """The tab opens (or ⟳): fill everything, then follow pulls and downloads."""
        view = claim_view(request)
        done_seen = finished_pulls()  # before the table is read: a pull ending now refreshes it
        comfy = comfy_values(folder)
        first = (*ollama_values(), *jobs_values(), *comfy, *gpu_values(),
                 log_values(), *comfy_hosts_values(comfy[0]["value"]))
        yield first
        shown = (first[5], first[6]["choices"])
        for html, cancel, table, choices in follow_jobs(view, shown, done_seen):
            values = [gr.skip()] * len(first)
            values[0], values[1] = table, choices  # ollama_table, model_dd
            values[5], values[6] = html, cancel  # jobs, cancel_dd
            yield tuple(values)

    @ui_errors
    def on_pull(name, host=ALL_HOSTS, request: gr.Request = None):
        done_seen = finished_pulls()
        onto = chosen_host(host)
        snap = pulls.start(name, host=onto)
        where = f" onto {onto}" if onto else (" onto every Ollama host" if several_ollama else "")
        gr.Info(f"Pulling {snap.model}{where}; it goes on if you close this page.")
        yield from follow_jobs(claim_view(request), done_seen=done_seen)
        final = pulls.get(snap.id)
        if final.state == "failed":
            raise StudioError(final.message)

    @ui_errors
    def on_cancel(choice):
        if not choice:
            raise InvalidInput("Pick the pull or download to cancel.")
        kind, _, job_id = choice.partition(":")
        if kind == "pull":
            pulls.cancel(job_id)
        else:
            downloads.cancel(job_id)
        gr.Info("Cancelled.")
        return jobs_values()

    @ui_errors
    def on_details(model):
        if not model:
            raise InvalidInput("Pick a model first.")
        return details_markdown(model, ollama.show(model))

    @ui_errors
    def on_delete_ask(model, host=ALL_HOSTS):
        if not model:
            raise InvalidInput("Pick the model to delete first.")
        installed, running, _note = read_ollama()
        size = next((m.size for m in installed if m.name == model), None)
        question = delete_question(model, size, busy_models(),
                                   {full_model_name(m.name) for m in running},
                                   {full_model_name(p.model) for p in pulls.active()})
        if several_ollama:
            onto = chosen_host(host)
            question += (f"\n\nOnly from the host **{escape(onto)}**; the others keep it."
                         if onto else "\n\nFrom **every** Ollama host that has it.")
        return gr.update(value=question, visible=True), gr.update(visible=True)

    @ui_errors
    def on_delete(model, host=ALL_HOSTS):
        if not model:
            raise InvalidInput("Pick the model to delete first.")
        onto = chosen_host(host)
        try:
            if onto:
                ollama.delete(model, host=onto)
            else:
                ollama.delete(model)
        finally:
            local.invalidate()  # the pickers of every page follow
        gr.Info(f"Deleted {model}" + (f" from {onto}." if onto else "."))
        return (*ollama_values(), gr.update(value="", visible=False), gr.update(visible=False))

    def on_table_select(evt: gr.SelectData):
        """Clicking a row of the models table picks that model for the buttons."""
        row = evt.row_value or []
        return row[0] if row else gr.skip()

    def on_delete_keep():
        return gr.update(value="", visible=False), gr.update(visible=False)

    @ui_errors
    def on_copy(model, new_name):
        if not model:
            raise InvalidInput("Pick the model to copy first.")
        new_name = check_model_name(new_name)
        try:
            ollama.copy(model, new_name)
        finally:
            local.invalidate()
        gr.Info(f"Copied {model} to {new_name}.")
        return ollama_values()

    @ui_errors
    def on_unload(model, host=ALL_HOSTS):
        if not model:
            raise InvalidInput("Pick a loaded model to unload.")
        result = coordinator.unload_models([model], host=chosen_host(host))
        (gr.Info if result.outcome == "done" else gr.Warning)(result.message)
        return (*ollama_values()[2:4], log_values())

    @ui_errors
    def on_unload_idle():
        result = coordinator.unload_idle()
        (gr.Info if result.outcome == "done" else gr.Warning)(result.message)
        return (*ollama_values()[2:4], log_values())

    @ui_errors
    def on_free_comfyui():
        result = coordinator.free_comfyui()
        (gr.Info if result.outcome == "done" else gr.Warning)(result.message)
        return log_values()

    def on_gpu_tick():
        return (*gpu_values(), running_frame(gpu_panel.running()), log_values())

    @ui_errors
    def on_folder(folder):
        frame, choices, note = folder_files(folder)
        return frame, gr.update(choices=choices, value=None), disk_values(), note

    @ui_errors
    def on_comfy_hosts(folder):
        return comfy_hosts_values(folder)

    @ui_errors
    def on_download(url, folder, filename, sha256, request: gr.Request = None):
        plan = plan_download(url, folder or "", (filename or "").strip() or None,
                             require_models_dir(), known_folders(), sha256=sha256 or None)
        job = downloads.start(plan)
        gr.Info(f"Downloading {plan.filename} into {plan.folder}; it goes on if you close "
                "this page.")
        yield from follow_jobs(claim_view(request))
        final = downloads.progress(job.id)
        if final.state == "failed":
            raise StudioError(final.message)

    @ui_errors
    def on_file_delete_ask(folder, filename):
        if not filename:
            raise InvalidInput("Pick the file to delete first.")
        path = Path(require_models_dir(), folder, filename)
        size = f" ({format_bytes(path.stat().st_size)})" if path.is_file() else ""
        return (gr.update(value=f"Delete **{escape(filename)}**{size} from {escape(folder)}? "
                                "This can't be undone.", visible=True), gr.update(visible=True))

    @ui_errors
    def on_file_delete(folder, filename):
        freed = delete_model_file(require_models_dir(), folder, filename, known_folders())
        gr.Info(f"Deleted {filename} ({format_bytes(freed)}).")
        frame, choices, note = folder_files(folder)
        return (frame, gr.update(choices=choices, value=None), disk_values(), note,
                gr.update(value="", visible=False), gr.update(visible=False))

    # -- layout --------------------------------------------------------------------------------

    with gr.Row(equal_height=False, elem_id="models-gpu-row"):
        with gr.Column(scale=2, min_width=300):
            gpu_md = gr.Markdown("GPU readings appear here.", elem_id="models-gpu")
            with gr.Row():
                unload_idle_btn = gr.Button("Unload idle Ollama models", size="sm",
                                            elem_id="models-unload-idle")
                free_comfy_btn = gr.Button("Ask ComfyUI to free memory", size="sm",
                                           elem_id="models-free-comfyui")
        with gr.Column(scale=2, min_width=300):
            gpu_plot = gr.LinePlot(vram_frame([]), x="time", y="percent", color="series",
                                   y_lim=[0, 100], height=180, label="Last minutes (%)",
                                   elem_id="models-gpu-chart", x_title="", y_title="%")
        with gr.Column(scale=1, min_width=240):
            comfy_stats_md = gr.Markdown("", elem_id="models-comfy-stats")
    with gr.Accordion("GPU sharing log", open=False, elem_id="models-log-box"):
        log_table = gr.Dataframe(log_frame([]), interactive=False, wrap=True, max_height=260,
                                 elem_id="models-log")

    refresh_btn = gr.Button("⟳ Refresh", size="sm", elem_id="models-refresh")
    gr.Markdown("### Ollama")
    ollama_note = gr.Markdown("", elem_id="models-ollama-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ollama_table = gr.Dataframe(ollama_frame([]), interactive=False, max_height=360,
                                        elem_id="models-ollama-table", show_search="search")
        with gr.Column(scale=2, min_width=280):
            model_dd = gr.Dropdown(choices=[], label="Model", elem_id="models-model-picker")
            host_dd = gr.Dropdown(choices=[("All hosts", ALL_HOSTS)] + [(n, n) for n in
                                                                        ollama_pool.names],
                                  value=ALL_HOSTS, label="On which Ollama host (pull, delete, "
                                  "unload)", visible=several_ollama, elem_id="models-host")
            with gr.Row():
                details_btn = gr.Button("Details", size="sm", elem_id="models-details-btn")
                delete_btn = gr.Button("Delete…", size="sm", elem_id="models-delete-btn")
            delete_md = gr.Markdown(visible=False, elem_id="models-delete-question")
            with gr.Row(visible=False) as delete_row:
                confirm_delete_btn = gr.Button("Yes, delete it", variant="stop", size="sm",
                                               elem_id="models-delete-confirm")
                keep_btn = gr.Button("Keep it", size="sm", elem_id="models-delete-keep")
            with gr.Row():
                copy_box = gr.Textbox(label="Copy / tag as", placeholder="llama3.2:backup",
                                      scale=3, elem_id="models-copy-name")
                copy_btn = gr.Button("Copy", size="sm", scale=1, elem_id="models-copy-btn")
    details_md = gr.Markdown("", elem_id="models-details")

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            running_table = gr.Dataframe(running_frame([]), interactive=False,
                                         label="Loaded now (/api/ps)", elem_id="models-running")
        with gr.Column(scale=2, min_width=280):
            unload_dd = gr.Dropdown(choices=[], label="Loaded model", elem_id="models-unload-picker")
            unload_btn = gr.Button("Unload", size="sm", elem_id="models-unload-btn")

    with gr.Row(equal_height=True):
        pull_box = gr.Textbox(label="Pull a model", placeholder="llama3.2, qwen3:8b, llava…",
                              scale=4, elem_id="models-pull-name")
        pull_btn = gr.Button("Pull", variant="primary", scale=1, elem_id="models-pull-btn")
    with gr.Row(elem_id="models-suggested"):
        suggested_btns = [(name, gr.Button(name, size="sm", min_width=90, elem_classes=["suggested"]))
                          for name, _note in SUGGESTED]
    gr.Markdown(" · ".join(f"**{name}**: {note}" for name, note in SUGGESTED),
                elem_classes=["models-suggested-notes"])
    jobs = gr.HTML(jobs_html([], []), elem_id="models-jobs")
    with gr.Row():
        cancel_dd = gr.Dropdown(choices=[], label="Running pull or download", scale=3,
                                elem_id="models-cancel-picker")
        cancel_btn = gr.Button("Cancel it", size="sm", scale=1, elem_id="models-cancel-btn")

    gr.Markdown("### ComfyUI models")
    comfy_note = gr.Markdown("", elem_id="models-comfy-note")
    disk_md = gr.Markdown("", elem_id="models-disk")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            folder_dd = gr.Dropdown(choices=[], label="Folder", elem_id="models-folder")
            files_table = gr.Dataframe(pd.DataFrame([], columns=models_data.FILE_COLUMNS),
                                       interactive=False, max_height=300,
                                       elem_id="models-comfy-files")
            with gr.Row():
                file_dd = gr.Dropdown(choices=[], label="File", scale=3, elem_id="models-file")
                file_delete_btn = gr.Button("Delete…", size="sm", scale=1,
                                            elem_id="models-file-delete")
            file_delete_md = gr.Markdown(visible=False, elem_id="models-file-question")
            comfy_hosts_note = gr.Markdown("", visible=several_comfyui,
                                           elem_id="models-comfy-hosts-note")
            comfy_hosts_table = gr.Dataframe(
                pd.DataFrame([], columns=["File"]), interactive=False, max_height=300,
                label="This folder on each ComfyUI host (read-only)", visible=several_comfyui,
                elem_id="models-comfy-hosts")
            with gr.Row(visible=False) as file_delete_row:
                file_confirm_btn = gr.Button("Yes, delete the file", variant="stop", size="sm",
                                             elem_id="models-file-confirm")
                file_keep_btn = gr.Button("Keep it", size="sm")
        with gr.Column(scale=2, min_width=280):
            url_box = gr.Textbox(label="Download from URL (http/https)",
                                 placeholder="https://huggingface.co/…/resolve/main/model.safetensors",
                                 elem_id="models-url")
            dl_folder_dd = gr.Dropdown(choices=[], label="Into folder", elem_id="models-dl-folder")
            name_box = gr.Textbox(label="Save as (empty = from the URL)", elem_id="models-dl-name")
            sha_box = gr.Textbox(label="SHA-256 (optional)", elem_id="models-dl-sha")
            download_btn = gr.Button("Download", variant="primary", elem_id="models-download-btn",
                                     interactive=bool(models_dir))

    storage_parts = storage.render(
        services, favourites=favourites, comfy_disk_files=comfy_disk_files,
        busy_models=busy_models, require_models_dir=require_models_dir)

    # Inside the tab (Gradio 6 doesn't tick it until the tab was opened on that page), or
    # the app's, which starts off and ticks only while the tab is shown.
    timer = timer if timer is not None else gr.Timer(poll_s)

    # -- wiring ------------------------------------------------------------------------------

    private = dict(api_visibility="private")
    quick = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
    ollama_out = [ollama_table, model_dd, running_table, unload_dd, ollama_note]
    jobs_out = [jobs, cancel_dd]
    comfy_out = [folder_dd, dl_folder_dd, files_table, file_dd, disk_md, comfy_note]
    gpu_out = [gpu_md, gpu_plot, comfy_stats_md]
    open_out = [*ollama_out, *jobs_out, *comfy_out, *gpu_out, log_table, comfy_hosts_table,
                comfy_hosts_note]
    follow_out = [jobs, cancel_dd, ollama_table, model_dd]
    # on_open's follow-up yields fill these slots by position.
    assert [open_out.index(c) for c in (ollama_table, model_dd, jobs, cancel_dd)] == [0, 1, 5, 6]

    open_kwargs = dict(concurrency_id="models-open", **quick)
    if opened:
        gr.on(opened, on_open, [folder_dd], open_out, **open_kwargs)
    refresh_btn.click(on_open, [folder_dd], open_out, concurrency_id="models-refresh", **quick)
    timer.tick(on_gpu_tick, None, [*gpu_out, running_table, log_table],
               concurrency_id="models-gpu", **quick)

    pull_kwargs = dict(concurrency_id="models-pull", **quick)
    pull_btn.click(on_pull, [pull_box, host_dd], follow_out, **pull_kwargs)
    pull_box.submit(on_pull, [pull_box, host_dd], follow_out, **pull_kwargs)
    for name, button in suggested_btns:
        button.click(lambda n=name: n, None, [pull_box], queue=False, **private).then(
            on_pull, [pull_box, host_dd], follow_out, **pull_kwargs)
    cancel_btn.click(on_cancel, [cancel_dd], jobs_out, concurrency_id="models-cancel", **quick)

    ollama_table.select(on_table_select, None, [model_dd], queue=False, **private)
    details_btn.click(on_details, [model_dd], [details_md], concurrency_id="models-details",
                      **quick)
    delete_btn.click(on_delete_ask, [model_dd, host_dd], [delete_md, delete_row],
                     concurrency_id="models-delete-ask", **quick)
    confirm_delete_btn.click(on_delete, [model_dd, host_dd], [*ollama_out, delete_md, delete_row],
                             concurrency_id="models-delete", **quick)
    keep_btn.click(on_delete_keep, None, [delete_md, delete_row], queue=False, **private)
    copy_btn.click(on_copy, [model_dd, copy_box], ollama_out, concurrency_id="models-copy",
                   **quick)
    unload_btn.click(on_unload, [unload_dd, host_dd], [running_table, unload_dd, log_table],
                     concurrency_id="models-unload", **quick)
    unload_idle_btn.click(on_unload_idle, None, [running_table, unload_dd, log_table],
                          concurrency_id="models-unload-idle", **quick)
    free_comfy_btn.click(on_free_comfyui, None, [log_table], concurrency_id="models-free",
                         **quick)

    folder_dd.input(on_folder, [folder_dd], [files_table, file_dd, disk_md, comfy_note],
                    concurrency_id="models-folder", **quick)
    if several_comfyui:
        folder_dd.input(on_comfy_hosts, [folder_dd], [comfy_hosts_table, comfy_hosts_note],
                        concurrency_id="models-comfy-hosts", **quick)
    download_btn.click(on_download, [url_box, dl_folder_dd, name_box, sha_box], follow_out,
                       concurrency_id="models-download", **quick).then(
        on_folder, [folder_dd], [files_table, file_dd, disk_md, comfy_note], **quick)
    file_delete_btn.click(on_file_delete_ask, [folder_dd, file_dd],
                          [file_delete_md, file_delete_row], concurrency_id="models-file-ask",
                          **quick)
    file_confirm_btn.click(on_file_delete, [folder_dd, file_dd],
                           [files_table, file_dd, disk_md, comfy_note, file_delete_md,
                            file_delete_row], concurrency_id="models-file-delete", **quick)
    file_keep_btn.click(on_delete_keep, None, [file_delete_md, file_delete_row], queue=False,
                        **private)

    return SimpleNamespace(
        on_open=on_open, on_pull=on_pull, on_cancel=on_cancel, on_details=on_details,
        on_table_select=on_table_select, on_delete_ask=on_delete_ask, on_delete=on_delete, on_copy=on_copy, on_unload=on_unload,
        on_unload_idle=on_unload_idle, on_free_comfyui=on_free_comfyui, on_gpu_tick=on_gpu_tick,
        on_folder=on_folder, on_comfy_hosts=on_comfy_hosts, on_download=on_download,
        on_file_delete_ask=on_file_delete_ask,
        on_file_delete=on_file_delete, follow_jobs=follow_jobs, open_outputs=open_out,
        timer=timer, **vars(storage_parts))

