"""The Images tab: generate with ComfyUI (live progress and preview), batch jobs, the gallery.

Layout and wiring over ``services.images`` (studio/images/jobs.py): jobs run on server
threads and outlive the page; handlers here only turn job snapshots and gallery pages into
component values, shaped by the plain functions of ``images_values``. The browser never
talks to ComfyUI: every image and preview is a file under the data directory or a PIL image
handed to Gradio, and error messages have ComfyUI's address replaced (``images.scrub``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from ..errors import InvalidInput, StudioError
from ..images.runner import scrub
from ..images.plans import FORM_PARAMS, SWEEPABLE
from . import images_inputs
from .common import (PageViews, merge_updates, refusal, tab_opened, ui_errors, unique,
                     user_of)
from .images_values import (FALLBACK_SAMPLERS, FALLBACK_SCHEDULERS, MODELS_FIX_JS,
                            comfyui_banner, comfyui_choices, custom_workflow_note, default_workflow,
                            favourite_label, file_path, gallery_filter_choices, gallery_value,
                            gpu_room_notice, image_details, input_image_note, jobs_choices,
                            md_literal, page_label, preview_image, progress_html, refused_html,
                            request_from_form, reuse_values, workflow_form, workflow_form_js,
                            workflow_forms)

UPDATE_INTERVAL = 0.1  # seconds between page updates while a job runs
PER_PAGE = 48


def render(services) -> SimpleNamespace:
    """Build the Images tab inside the current Blocks context."""
    jobs = services.images
    opened = tab_opened()  # the tab's loading events' triggers, before any inner block
    store = jobs.store
    library = jobs.library
    base_url = services.comfyui.base_url
    guarded = ui_errors(scrub=lambda text: scrub(text, base_url))
    # Output files never change once renamed into place: serve them directly instead of
    # hashing and copying each one into Gradio's cache every time it is shown.
    gr.set_static_paths([services.outputs_dir])

    workflow_choices = library.choices()
    # The form starts as the first workflow fills it; picking another refills it in the
    # page (workflow_form_js), from this table.
    forms = workflow_forms(library.templates(), {}, FORM_PARAMS)
    start = forms.get(default_workflow(workflow_choices) or "",
                      {"values": {}, "shown": {}, "info": ""})

    def initial(key: str, value: Any = None) -> dict:
        """A form part as the starting workflow has it: its value (else ``value``), shown."""
        return dict(value=start["values"].get(key, value), visible=start["shown"].get(key, True))

    style_choices = [("(none)", "")] + [(s.name, s.key) for s in jobs.styles.values()]

    lists = gr.State({})
    job_state = gr.State("")
    page_ids = gr.State([])
    selected = gr.State(None)

    with gr.Tabs(elem_id="img-tabs") as inner_tabs:
        with gr.Tab("Generate", id="generate"):
            banner = gr.HTML("", elem_id="img-banner", padding=False)
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=320):
                    prompt_box = gr.Textbox(label="Prompt", lines=3, max_lines=8,
                                            placeholder="What should the image show?",
                                            elem_id="img-prompt", **initial("prompt", ""))
                    negative_box = gr.Textbox(label="Negative prompt", lines=1, max_lines=4,
                                              placeholder="What to keep out (blurry, text…)",
                                              elem_id="img-negative", **initial("negative", ""))
                    with gr.Row():
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="img-generate")
                        cancel_btn = gr.Button("■ Cancel", variant="stop", visible=False,
                                               elem_id="img-cancel")
                    with gr.Row():
                        # Custom values: API callers may name a workflow uploaded since the
                        # page was built; on_generate says clearly when one doesn't exist.
                        workflow_dd = gr.Dropdown(label="Workflow", choices=workflow_choices,
                                                  value=default_workflow(workflow_choices),
                                                  allow_custom_value=True,
                                                  elem_id="img-workflow", scale=3)
                        style_dd = gr.Dropdown(label="Style", choices=style_choices, value="",
                                               elem_id="img-style", scale=2)
                    workflow_md = gr.Markdown(start["info"], elem_id="img-workflow-info")
                    # Refreshed with ComfyUI's lists (a checkpoint it lacks is replaced).
                    workflow_table = gr.JSON(forms, visible=False, elem_id="img-workflow-forms")
                    with gr.Row():
                        checkpoint_dd = gr.Dropdown(label="Checkpoint", choices=[], scale=4,
                                                    allow_custom_value=True,
                                                    elem_id="img-checkpoint",
                                                    **initial("checkpoint"))
                        refresh_btn = gr.Button("⟳", size="sm", scale=0, min_width=40,
                                                elem_id="img-refresh")
                    with gr.Row():
                        width = gr.Number(label="Width", precision=0, step=8,
                                          elem_id="img-width", **initial("width", 512))
                        height = gr.Number(label="Height", precision=0, step=8,
                                           elem_id="img-height", **initial("height", 512))
                        batch_size = gr.Number(label="Batch size", precision=0,
                                               elem_id="img-batch-size", **initial("batch_size", 1))
                    with gr.Row():
                        steps = gr.Number(label="Steps", precision=0, elem_id="img-steps",
                                          **initial("steps", 20))
                        cfg = gr.Slider(1, 20, step=0.5, label="CFG", elem_id="img-cfg",
                                        **initial("cfg", 7))
                    with gr.Row():
                        sampler_dd = gr.Dropdown(label="Sampler", choices=FALLBACK_SAMPLERS,
                                                 allow_custom_value=True, elem_id="img-sampler",
                                                 **initial("sampler", "euler"))
                        scheduler_dd = gr.Dropdown(label="Scheduler", choices=FALLBACK_SCHEDULERS,
                                                   allow_custom_value=True,
                                                   elem_id="img-scheduler",
                                                   **initial("scheduler", "normal"))
                    with gr.Row():
                        seed = gr.Number(label="Seed (-1 = random)", precision=0,
                                         elem_id="img-seed", **initial("seed", -1))
                        denoise = gr.Slider(0, 1, step=0.05, label="Denoise",
                                            elem_id="img-denoise", **initial("denoise", 1.0))
                    with gr.Row(visible=start["shown"].get("lora_row", False)) as lora_row:
                        lora_dd = gr.Dropdown(label="LoRA", choices=[], allow_custom_value=True,
                                              elem_id="img-lora", **initial("lora_name"))
                        lora_strength = gr.Slider(-2, 2, step=0.05, label="LoRA strength",
                                                  elem_id="img-lora-strength",
                                                  **initial("lora_strength", 0.8))
                    control_strength = gr.Slider(0, 2, step=0.05, label="ControlNet strength",
                                                 elem_id="img-control-strength",
                                                 **initial("control_strength", 1.0))
                    with gr.Group(visible=start["shown"].get("input_group", False)) as input_group:
                        input_file = gr.File(label="Input image (PNG, JPEG, WebP)",
                                             file_count="single", elem_id="img-input")
                        input_note = gr.Markdown("", elem_id="img-input-note")
                    with gr.Accordion("Batch: several prompts, seeds, a sweep", open=False,
                                      elem_id="img-batch"):
                        batch_prompts = gr.Textbox(label="Prompts, one per line (replaces the "
                                                   "prompt above)", lines=3, elem_id="img-prompts")
                        with gr.Row():
                            seeds_count = gr.Number(label="Seeds per prompt", value=1, precision=0,
                                                    elem_id="img-seeds")
                            sweep_param = gr.Dropdown(label="Sweep", value="",
                                                      choices=[("(none)", "")] + [(p, p) for p in SWEEPABLE],
                                                      elem_id="img-sweep-param")
                            sweep_values = gr.Textbox(label="Values", placeholder="5, 7, 9",
                                                      elem_id="img-sweep-values")
                    with gr.Accordion("Custom workflow", open=False, elem_id="img-custom"):
                        gr.Markdown("Upload a workflow saved with ComfyUI's **Export (API)**, or "
                                    "a PNG made by ComfyUI. The studio finds its prompt, seed, "
                                    "size, steps and checkpoint inputs; while an upload is "
                                    "chosen, the lists below say which node input each fills.")
                        workflow_file = gr.File(label="Workflow (.json or .png)",
                                                file_count="single", elem_id="img-workflow-upload")
                        workflow_found = gr.Markdown("", elem_id="img-workflow-found")
                        inputs_panel = images_inputs.render()
                with gr.Column(scale=4, min_width=320):
                    progress = gr.HTML(progress_html(None), elem_id="img-progress", padding=False)
                    preview = gr.Image(label="Live preview", interactive=False, type="pil",
                                       format="jpeg", height=320, elem_id="img-preview",
                                       buttons=[])
                    results = gr.Gallery(label="Results", columns=4, height=360, format="png",
                                         elem_id="img-results", object_fit="contain",
                                         buttons=["download", "fullscreen"])
                    with gr.Accordion("Jobs", open=False, elem_id="img-jobs"):
                        job_dd = gr.Dropdown(label="Follow a job", choices=[], elem_id="img-job-picker")
                        jobs_refresh = gr.Button("⟳ Jobs", size="sm", elem_id="img-jobs-refresh")
        with gr.Tab("Gallery", id="gallery") as gallery_tab:
            with gr.Row():
                search_box = gr.Textbox(placeholder="Search prompts…", show_label=False,
                                        elem_id="gal-search", scale=3, container=False)
                wf_filter = gr.Dropdown(choices=[("All workflows", "")], value="", show_label=False,
                                        elem_id="gal-workflow", scale=1, container=False)
                model_filter = gr.Dropdown(choices=[("All models", "")], value="", show_label=False,
                                           elem_id="gal-model", scale=1, container=False)
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    gallery = gr.Gallery(show_label=False, columns=6, height="auto",
                                         allow_preview=False, object_fit="cover", buttons=[],
                                         elem_id="gal-grid")
                    with gr.Row():
                        prev_btn = gr.Button("‹ Newer", size="sm", elem_id="gal-prev")
                        page_md = gr.Markdown("", elem_id="gal-page")
                        next_btn = gr.Button("Older ›", size="sm", elem_id="gal-next")
                    page_no = gr.State(1)
                with gr.Column(scale=2, visible=False, elem_id="gal-detail") as detail_col:
                    full_image = gr.Image(type="filepath", interactive=False, show_label=False,
                                          buttons=["download", "fullscreen"], elem_id="gal-full")
                    details_md = gr.Markdown("", elem_id="gal-meta")
                    with gr.Row():
                        reuse_btn = gr.Button("Reuse these settings", size="sm", elem_id="gal-reuse")
                        download_btn = gr.DownloadButton("Download", size="sm", elem_id="gal-download")
                        favourite_btn = gr.Button("☆ Favourite", size="sm", elem_id="gal-favourite")
                        delete_btn = gr.Button("Delete…", size="sm", elem_id="gal-delete")
                    confirm_btn = gr.Button("Yes, delete this image", variant="stop", size="sm",
                                            visible=False, elem_id="gal-confirm-delete")

    form = dict(workflow=workflow_dd, prompt=prompt_box, negative=negative_box, style=style_dd,
                seed=seed, steps=steps, cfg=cfg, sampler=sampler_dd, scheduler=scheduler_dd,
                width=width, height=height, batch_size=batch_size, checkpoint=checkpoint_dd,
                denoise=denoise, lora_name=lora_dd, lora_strength=lora_strength,
                control_strength=control_strength, input_image=input_file,
                batch_prompts=batch_prompts, seeds=seeds_count, sweep_param=sweep_param,
                sweep_values=sweep_values)
    param_fields = {name: form[name] for name in FORM_PARAMS}
    form_parts = {"info": workflow_md, "prompt": prompt_box, "negative": negative_box,
                  "seed": seed, "lora_row": lora_row, "input_group": input_group,
                  **param_fields}

    # -- data helpers ---------------------------------------------------------------------

    def fetch_lists(refresh: bool = False) -> tuple[dict, str]:
        try:
            return jobs.comfyui_lists(refresh=refresh), ""
        except StudioError as exc:
            return {}, jobs.public(str(exc))

    def workflow_updates(name: str, comfy: dict, *, only: frozenset | None = None) -> dict:
        """Form values and visibility for a workflow, set from the server (a reused image,
        an uploaded workflow): the same as ``workflow_form_js`` does in the page, plus the
        input mapping panel. ``only``: the fields whose value is set (None: all)."""
        try:
            template = library.get(name)
        except StudioError:
            return {workflow_md: ""}
        chosen = workflow_form(template, comfy, FORM_PARAMS)
        updates: dict[Any, Any] = {workflow_md: chosen["info"]}
        for key, component in form_parts.items():
            if key != "info":
                value = chosen["values"].get(key) if only is None or key in only else None
                updates[component] = gr.update(visible=chosen["shown"][key],
                                               **({} if value is None else {"value": value}))
        return merge_updates(updates, mapping_panel(name))

    def mapping_panel(name: str) -> dict:
        """The input mapping panel: shown with its lists for an uploaded workflow."""
        return inputs_panel.panel(library.get(name) if library.is_custom(name) else None)

    def table(comfy: dict) -> dict:
        """The page's table of workflow forms, with ComfyUI's lists."""
        return workflow_forms(library.templates(), comfy, FORM_PARAMS)

    def list_updates(comfy: dict) -> dict:
        choices = comfyui_choices(comfy)
        return {checkpoint_dd: gr.update(choices=choices["checkpoints"]),
                lora_dd: gr.update(choices=choices["loras"]),
                sampler_dd: gr.update(choices=choices["samplers"]),
                scheduler_dd: gr.update(choices=choices["schedulers"])}

    def gallery_outputs(query, workflow, model, page, user) -> tuple:
        """The user's own gallery page (nobody sees another's pictures)."""
        result = jobs.gallery_page(query=query or "", workflow=workflow or None,
                                   model=model or None, page=page or 1, per_page=PER_PAGE,
                                   user=user)
        return (gallery_value(result, jobs.thumb_path), page_label(result) or "No images yet.",
                result.page, [image.id for image in result.images])

    def filter_choices(user) -> str:
        """The filter lists' choices as a plain value for ``filters_key``.

        The open event hands them to a hidden box, whose change event alone updates the
        two dropdowns, so they are replaced only when their choices change: each
        ``gr.update`` (even ``gr.skip()``) replaces a dropdown in Gradio's state of the page,
        and Gradio 6.31 keeps every replaced one for the page's life once it is an event's
        input (``Blocks.preprocess_data`` files it under its new id): two dropdowns (~7 KB)
        were left behind by every opening of the gallery."""
        titles = {name: t.title for name, t in library.templates().items() if t.title}
        return json.dumps(gallery_filter_choices(*store.gallery_filters(user=user), titles))

    def on_filters(key):
        workflows, models = json.loads(key) if key else ([], [])
        return (gr.update(choices=[tuple(c) for c in workflows]),
                gr.update(choices=[tuple(c) for c in models]))

    # Which follower writes into each page's progress area: following another job (or
    # generating again) makes the old follower stop, while its job goes on on the server.
    views = PageViews()
    claim_view = views.claim

    def follow(live, view, user):
        """Yield (progress, preview, results, cancel, job picker) as the job changes."""
        shown_images = -1
        shown_preview = 0
        for snap in jobs.follow(live, interval=UPDATE_INTERVAL):
            if not views.holds(view):
                return
            preview_value = gr.skip()
            if snap.preview_version != shown_preview:  # a new frame, or none (next image)
                shown_preview = snap.preview_version
                preview_value = None if snap.preview is None else preview_image(snap.preview)
            results_value = gr.skip()
            if len(snap.images) != shown_images:
                shown_images = len(snap.images)
                results_value = [(i.path, i.caption) for i in snap.images]
            yield (progress_html(snap), preview_value, results_value,
                   gr.update(visible=not snap.finished),
                   gr.update(choices=jobs_choices(jobs.recent(user)), value=snap.job_id)
                   if snap.finished else gr.skip())

    # -- handlers -------------------------------------------------------------------------

    def on_load(request: gr.Request = None):
        """Tab opened: lists from ComfyUI (or why not), the workflows and their forms.

        No form values: the reply may land after the person chose a workflow and typed
        (the page fills the form itself, ``workflow_form_js``; ``MODELS_FIX_JS`` then
        swaps a checkpoint ComfyUI lacks)."""
        comfy, problem = fetch_lists()
        updates = {lists: comfy, banner: comfyui_banner(problem),
                   workflow_dd: gr.update(choices=library.choices()), workflow_table: table(comfy)}
        return merge_updates(updates, list_updates(comfy))

    def on_load_jobs(request: gr.Request = None):
        """Tab opened: the jobs list; if one of this user's jobs is running, follow it."""
        user, _ = user_of(request)
        live = jobs.latest_active(user)
        choices = jobs_choices(jobs.recent(user))
        if live is None:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.update(choices=choices), gr.skip()
            return
        view = claim_view(request)
        yield (gr.skip(), gr.skip(), gr.skip(), gr.update(visible=True),
               gr.update(choices=choices, value=live.job_id), live.job_id)
        for out in follow(live, view, user):
            yield (*out, gr.skip())

    @guarded
    def on_refresh():
        library.refresh()
        comfy, problem = fetch_lists(refresh=True)
        if problem:
            gr.Warning(problem)
        updates = {lists: comfy, banner: comfyui_banner(problem),
                   workflow_dd: gr.update(choices=library.choices()), workflow_table: table(comfy)}
        merge_updates(updates, list_updates(comfy))
        for note in library.problems:
            gr.Warning(f"Workflow left out: {note}")
        return updates

    def make_room(workflow: str, host: str | None) -> None:
        """Ask the GPU coordinator (Models tab) to make room on ``host``'s machine, and say
        what it did."""
        notice = gpu_room_notice(services.gpu_coordinator, library, workflow, jobs.public, host)
        if notice is not None:
            (gr.Warning if notice.warning else gr.Info)(notice.text)

    @guarded
    def on_generate(request: gr.Request = None, **values):
        image_request = request_from_form(**values)
        user, lane = user_of(request)
        try:  # every check first: a bad form frees no VRAM
            prepared = jobs.prepare(image_request)
        except StudioError as exc:
            yield (refused_html(jobs.public(str(exc))), *[gr.skip()] * 5)
            raise
        make_room(image_request.workflow, jobs.likely_host(image_request, prepared))
        live = jobs.submit(image_request, user=user, lane=lane, prepared=prepared)
        view = claim_view(request)
        yield (progress_html(live.snapshot()), None, [], gr.update(visible=True),
               gr.update(choices=jobs_choices(jobs.recent(user)), value=live.job_id),
               live.job_id)
        for out in follow(live, view, user):
            yield (*out, gr.skip())

    def on_cancel(job_id, request: gr.Request = None):
        if job_id and not jobs.cancel(job_id, user=user_of(request)[0]):
            gr.Info("That job had already finished.")

    @guarded
    def on_follow(job_id, request: gr.Request = None):
        if not job_id:
            return
        user, _ = user_of(request)
        view = claim_view(request)
        live = jobs.get(job_id, user=user)
        if live is None:
            snap = jobs.snapshot(job_id, user=user)
            if snap is None:
                raise StudioError("That job no longer exists.")
            yield (progress_html(snap), None, [(i.path, i.caption) for i in snap.images],
                   gr.update(visible=False), gr.skip(), job_id)
            return
        yield (progress_html(live.snapshot()), None, gr.skip(), gr.update(visible=True),
               gr.skip(), job_id)
        for out in follow(live, view, user):
            yield (*out, gr.skip())

    def on_jobs_refresh(request: gr.Request = None):
        user, _ = user_of(request)
        return gr.update(choices=jobs_choices(jobs.recent(user)))

    def on_input_upload(file):
        path = file_path(file)
        if not path:
            return gr.skip(), ""
        problem, note = input_image_note(path, jobs.max_input_megapixels)
        if problem:
            gr.Warning(problem)
        return None if problem else gr.skip(), note

    @guarded
    def on_workflow_upload(file, comfy):
        """Add an uploaded workflow and switch the form to it. A file that isn't one (UI
        format, bad JSON...) gets its sentence under the box and in a warning, and
        nothing else changes: the form stays as it was, the box is emptied."""
        path = file_path(file)
        if not path:
            return {}
        try:
            template = library.add_custom(Path(path).name, Path(path).read_bytes())
        except InvalidInput as exc:
            message = jobs.public(str(exc))
            gr.Warning(message)
            return {workflow_found: f"⚠ {md_literal(message)}", workflow_file: None}
        try:
            problems = jobs.graph_problems(template.graph)
        except StudioError:
            problems = []
        note = custom_workflow_note(template, " ".join(problems))
        updates = {workflow_dd: gr.update(choices=library.choices(), value=template.name),
                   workflow_found: note, workflow_file: None, workflow_table: table(comfy or {})}
        return merge_updates(updates, workflow_updates(template.name, comfy or {}))

    def on_inputs_panel(name):
        """A workflow was chosen: the mapping panel for it (hidden for built-in ones)."""
        return mapping_panel(name)

    @guarded
    def on_map_inputs(workflow, comfy, **targets):
        """Save which node inputs an upload's prompt, seed, size and steps fill. Fields
        that appear get the workflow's values; those already shown keep what was typed.
        A refusal is said in the panel, and nothing else changes."""
        before = library.get(workflow).params
        try:
            template = library.map_inputs(workflow, {param: targets.get(f"map_{param}") or ""
                                                     for param in images_inputs.MAPPABLE})
        except InvalidInput as exc:
            message = jobs.public(str(exc))
            gr.Warning(message)
            return {inputs_panel.note: f"⚠ {md_literal(message)}"}
        gr.Info(f"Saved the inputs of {template.title}.")
        updates = {workflow_table: table(comfy or {})}
        return merge_updates(updates, workflow_updates(
            workflow, comfy or {}, only=frozenset(template.params - before)))

    def on_gallery(query, workflow, model, page, request: gr.Request = None):
        return gallery_outputs(query, workflow, model, page, user_of(request)[0])

    def on_gallery_open(query, workflow, model, page, request: gr.Request = None):
        user = user_of(request)[0]
        return (*gallery_outputs(query, workflow, model, page, user), filter_choices(user))

    def on_prev(query, workflow, model, page, request: gr.Request = None):
        return gallery_outputs(query, workflow, model, (page or 1) - 1, user_of(request)[0])

    def on_next(query, workflow, model, page, request: gr.Request = None):
        return gallery_outputs(query, workflow, model, (page or 1) + 1, user_of(request)[0])

    def on_select(ids, evt: gr.SelectData, request: gr.Request = None):
        user = user_of(request)[0]
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        image = store.get_image(ids[index], user=user) if 0 <= index < len(ids) else None
        if image is not None and not Path(jobs.path(image.path)).exists():
            jobs.delete_image(image.id, user=user)  # removed outside the studio meanwhile
            image = None
        if image is None:
            gr.Warning("That image is gone (deleted in another tab?).")
            return (gr.update(visible=False), None, "", None, None, gr.update(visible=False),
                    favourite_label(False))
        path = jobs.path(image.path)
        template = library.templates().get(image.workflow)
        details = image_details(image, template.title if template is not None else "")
        return (gr.update(visible=True), path, details, gr.update(value=path),
                image.id, gr.update(visible=False), favourite_label(image.favourite))

    def on_favourite(image_id, request: gr.Request = None):
        """Toggle the favourite mark: output retention never deletes a favourite."""
        user = user_of(request)[0]
        image = store.get_image(image_id, user=user) if image_id is not None else None
        if image is None:
            raise refusal("Pick an image in the gallery first.")
        image = store.set_favourite(image.id, not image.favourite, user=user)
        gr.Info("Kept as a favourite: retention will never delete it." if image.favourite
                else "No longer a favourite.")
        return favourite_label(image.favourite)

    def on_delete(image_id, query, workflow, model, page, request: gr.Request = None):
        user = user_of(request)[0]
        if image_id is not None:
            if jobs.delete_image(image_id, user=user):
                gr.Info("Image deleted.")
            else:
                gr.Warning("That image is gone (deleted in another tab?).")
        return (gr.update(visible=False), None, gr.update(visible=False),
                *gallery_outputs(query, workflow, model, page, user))

    def on_reuse(image_id, comfy, request: gr.Request = None):
        image = (store.get_image(image_id, user=user_of(request)[0])
                 if image_id is not None else None)
        if image is None:
            raise refusal("Pick an image in the gallery first.")
        updates: dict[Any, Any] = {}
        if image.workflow in library.templates():
            merge_updates(updates, workflow_updates(image.workflow, comfy or {}))
            updates[workflow_dd] = image.workflow
        else:
            gr.Warning(f"The workflow {image.workflow!r} is gone; pick another one.")
        for name, value in reuse_values(image, param_fields).items():
            if name in param_fields:
                merge_updates(updates, {param_fields[name]: gr.update(value=value)})
            else:
                updates[form[name]] = value
        updates[batch_prompts] = ""
        updates[inner_tabs] = gr.Tabs(selected="generate")
        return updates

    # -- wiring ---------------------------------------------------------------------------

    # Page plumbing, not API: hidden from the API page, and no concurrency limit (each
    # listener has its own id, so a slow one never holds up another).
    private = dict(api_visibility="private", concurrency_limit=None)
    form_outputs = [lists, banner, workflow_dd, style_dd, workflow_table,
                    *form_parts.values(), *inputs_panel.outputs]
    lists_outputs = [lists, banner, workflow_dd, workflow_table, checkpoint_dd, lora_dd,
                     sampler_dd, scheduler_dd]
    # Choosing a workflow fills the form in the browser, at once. On .select, not .input:
    # Gradio also fires a dropdown's input event when a reply updates its choices, which
    # refilled the form over what had been typed since.
    in_page = dict(api_visibility="private", queue=False, show_progress="hidden")
    fill_form = dict(fn=None, inputs=[workflow_dd, workflow_table],
                     outputs=list(form_parts.values()), js=workflow_form_js(list(form_parts)),
                     **in_page)
    workflow_dd.select(**fill_form)
    workflow_dd.select(on_inputs_panel, [workflow_dd], inputs_panel.outputs, **private,
                      concurrency_id="images-inputs-panel", show_progress="hidden",
                      trigger_mode="always_last")
    inputs_panel.save_btn.click(
        on_map_inputs, inputs_kwargs={"workflow": workflow_dd, "comfy": lists, **{
            f"map_{param}": dropdown for param, dropdown in inputs_panel.dropdowns.items()}},
        outputs=unique([workflow_table, *form_parts.values(), *inputs_panel.outputs]),
        **private, concurrency_id="images-map-inputs")
    fix_models = dict(fn=None, inputs=[workflow_dd, workflow_table, checkpoint_dd, lora_dd],
                      outputs=[checkpoint_dd, lora_dd], js=MODELS_FIX_JS, **in_page)
    # When the tab is opened, not when the page loads: a page on the Chat tab asks
    # ComfyUI nothing and is sent no lists (``tab_opened``).
    gr.on(opened, on_load, inputs=[], outputs=lists_outputs, **private,
          concurrency_id="images-load", show_progress="hidden").then(**fix_models)
    follow_outputs = [progress, preview, results, cancel_btn, job_dd, job_state]
    gr.on(opened, on_load_jobs, inputs=[], outputs=follow_outputs, **private,
          concurrency_id="images-load-jobs", show_progress="hidden")
    refresh_btn.click(on_refresh, None, lists_outputs, **private,
                      concurrency_id="images-refresh").then(**fix_models)
    gallery_out = [gallery, page_md, page_no, page_ids]
    generate_evt = generate_btn.click(
        on_generate, inputs_kwargs=form, outputs=follow_outputs, api_name="generate_images",
        concurrency_limit=None, concurrency_id="images-generate", show_progress="hidden")
    generate_evt.then(on_gallery, [search_box, wf_filter, model_filter, page_no], gallery_out,
                      **private, concurrency_id="images-gallery-after", show_progress="hidden")
    cancel_btn.click(on_cancel, [job_state], None, api_name="cancel_images", queue=False)
    job_dd.input(on_follow, [job_dd], follow_outputs, **private,
                 concurrency_id="images-follow", show_progress="hidden")
    jobs_refresh.click(on_jobs_refresh, None, [job_dd], **private, concurrency_id="images-jobs")
    input_file.upload(on_input_upload, [input_file], [input_file, input_note], **private,
                      concurrency_id="images-input")
    workflow_file.upload(on_workflow_upload, [workflow_file, lists],
                         unique([workflow_found, workflow_file, *form_outputs]), **private,
                         concurrency_id="images-custom")

    gallery_in = [search_box, wf_filter, model_filter, page_no]
    filters_key = gr.Textbox(visible=False, elem_id="gallery-filters-key")
    filters_key.change(on_filters, [filters_key], [wf_filter, model_filter], **private,
                       concurrency_id="images-gallery-filters", show_progress="hidden")
    gallery_tab.select(on_gallery_open, gallery_in, [*gallery_out, filters_key],
                       api_name="open_gallery", concurrency_limit=None,
                       concurrency_id="images-gallery-open", show_progress="hidden")
    reset_page = [search_box, wf_filter, model_filter, gr.State(1)]
    for trigger in (search_box.change, wf_filter.input, model_filter.input):
        trigger(on_gallery, reset_page, gallery_out, **private, concurrency_id="images-gallery",
                show_progress="hidden", trigger_mode="always_last")
    prev_btn.click(on_prev, gallery_in, gallery_out,
                   **private, concurrency_id="images-gallery-prev", show_progress="hidden")
    next_btn.click(on_next, gallery_in, gallery_out,
                   **private, concurrency_id="images-gallery-next", show_progress="hidden")
    favourite_btn.click(on_favourite, [selected], [favourite_btn], **private,
                        concurrency_id="images-favourite")
    gallery.select(on_select, [page_ids], [detail_col, full_image, details_md, download_btn,
                                           selected, confirm_btn, favourite_btn],
                   **private, concurrency_id="images-select", show_progress="hidden")
    delete_btn.click(lambda: gr.update(visible=True), None, [confirm_btn],
                     api_visibility="private", queue=False)
    confirm_btn.click(on_delete, [selected, *gallery_in],
                      [detail_col, selected, confirm_btn, *gallery_out], **private,
                      concurrency_id="images-delete")
    reuse_btn.click(on_reuse, [selected, lists],
                    unique([inner_tabs, batch_prompts, input_file, *form_outputs]), **private,
                    concurrency_id="images-reuse")

    return SimpleNamespace(
        prompt_box=prompt_box, generate_btn=generate_btn, gallery=gallery, progress=progress,
        handlers=SimpleNamespace(
            on_load=on_load, on_generate=on_generate, on_cancel=on_cancel, on_follow=on_follow,
            on_input_upload=on_input_upload, on_workflow_upload=on_workflow_upload,
            on_gallery=on_gallery, on_select=on_select, on_delete=on_delete, on_reuse=on_reuse,
            on_favourite=on_favourite,
            on_refresh=on_refresh, on_inputs_panel=on_inputs_panel,
            on_map_inputs=on_map_inputs, gallery_outputs=gallery_outputs),
        components=SimpleNamespace(**form, lists=lists, banner=banner, workflow_md=workflow_md,
                                   progress=progress, preview=preview, results=results,
                                   workflow_table=workflow_table, inputs_panel=inputs_panel,
                                   gallery=gallery, inner_tabs=inner_tabs, job_state=job_state))

