"""Values for the Images tab's components: progress HTML, gallery items and captions, image
details, the form read into an ``ImageRequest``, and what a workflow, a reused image or an
uploaded workflow put into the form (with the browser functions that fill it in the page).
Plain functions of the studio's own types; no components and no handlers here
(``studio/ui/images.py`` builds the tab).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping

from PIL import Image

from ..errors import StudioError
from ..images.files import check_input_image
from ..images.plans import (DEFAULT_WORKFLOW, FORM_PARAMS, ImageRequest, form_defaults,
                            parse_sweep)
from ..images.workflows import Template
from ..images.live_job import JobSnapshot
from ..store.images import GalleryImage, GalleryPage

log = logging.getLogger(__name__)

FALLBACK_SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim"]
FALLBACK_SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple"]


def progress_html(snap: JobSnapshot | None) -> str:
    """The progress block: which image of the job, the step, the running node or the
    queue position, with two bars. ``data-*`` attributes carry the figures for tests."""
    if snap is None:
        return "<div class='img-progress idle' data-state='idle'>Ready.</div>"
    step = steps = 0
    state = snap.status
    if snap.finished:
        label = {"done": f"Done: {len(snap.images)} image{'s' if len(snap.images) != 1 else ''}.",
                 "partial": f"Finished with problems: {escape(snap.error)}",
                 "failed": f"Failed: {escape(snap.error)}",
                 "cancelled": escape(snap.error or "Cancelled.")}[snap.status]
    elif snap.current is None:
        ahead = snap.waiting_ahead
        label = ("Waiting for the GPU" + (f": {ahead} image{'s' if ahead != 1 else ''} "
                                           "ahead." if ahead else "…"))
        state = "waiting"
    else:
        current = snap.current
        state = current.state
        step, steps = current.step, current.steps
        node = (f"{escape(current.node_class)} (node {escape(current.node)})"
                if current.node_class else (f"node {escape(current.node)}" if current.node else ""))
        if current.state == "queued":
            position = current.position
            label = ("In ComfyUI's queue" + (f": {position} job{'s' if position != 1 else ''} "
                                             "ahead." if position else ": next."))
        elif current.state == "storing":
            label = "Saving the image…"
        elif current.state == "resumed":
            label = "Picked up after a studio restart; waiting for ComfyUI…"
        elif steps:
            label = f"Step {step} of {steps}" + (f" · {node}" if node else "")
        else:
            label = f"Running {node}…" if node else "Starting…"
        if current.host:  # several ComfyUI hosts: where it runs, and why there
            label += f" · on ComfyUI {escape(current.host)}"
        if current.note:
            label += f" <span class='img-moved'>{escape(current.note)}</span>"
    index = min(snap.settled + (0 if snap.finished else 1), snap.total)
    job_line = f"Image {index} of {snap.total}" if snap.total > 1 else ""
    bars = ""
    if not snap.finished:
        bar = "style='display:block;width:100%;height:10px;margin-top:4px'"
        bars = (f"<progress class='img-steps' value='{step}' max='{max(steps, 1)}' {bar}></progress>"
                + (f"<progress class='img-job' value='{snap.settled}' max='{snap.total}' {bar}>"
                   "</progress>" if snap.total > 1 else ""))
    return (f"<div class='img-progress {escape(snap.status)}' data-state='{escape(state)}' "
            f"data-step='{step}' data-steps='{steps}' data-done='{snap.done}' "
            f"data-total='{snap.total}' data-job='{escape(snap.job_id)}'>"
            f"<div class='img-progress-label'>{job_line + ' · ' if job_line else ''}{label}</div>"
            f"{bars}</div>")


def refused_html(message: str) -> str:
    """The progress block for a job that was not started: the reason stays in the page after
    the warning toast has gone (a phone user looking away misses a toast)."""
    return ("<div class='img-progress refused' data-state='refused'>"
            f"<div class='img-progress-label'>Not started: {escape(message)}</div></div>")


def preview_image(image, smallest: int = 256):
    """ComfyUI's previews are often 1/8 of the final size: scale them up to be seen."""
    longest = max(image.size)
    if longest >= smallest:
        return image
    factor = -(-smallest // longest)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.BILINEAR)


def jobs_choices(snaps: list[JobSnapshot]) -> list[tuple[str, str]]:
    """(label, job id) for the job picker, newest first."""
    choices = []
    for s in snaps:
        title = s.title if len(s.title) <= 40 else s.title[:39] + "…"
        choices.append((f"{s.created_at[11:16]} · {title} · {s.done}/{s.total} · {s.status}",
                        s.job_id))
    return choices


def gallery_value(page: GalleryPage, thumb_of) -> list[tuple[str, str]]:
    """Thumbnails (path, caption) of one gallery page; ``thumb_of(image)`` -> a file path."""
    return [(thumb_of(image), _caption(image)) for image in page.images]


def _caption(image: GalleryImage) -> str:
    prompt = (image.params.get("prompt_typed") or image.prompt
              or image.params.get("workflow_title") or image.workflow)
    return prompt if len(prompt) <= 60 else prompt[:59] + "…"


def page_label(page: GalleryPage) -> str:
    if not page.total:
        return "No images match." if page.images == [] else ""
    return f"Page {page.page} of {page.pages} · {page.total:,} image{'s' if page.total != 1 else ''}"


def image_details(image: GalleryImage, title: str = "") -> str:
    """Markdown describing a stored image: prompt, seed, its workflow by ``title`` (else
    the title it had when the image was made, else its file name), every parameter,
    timings."""
    p = image.params
    title = title or p.get("workflow_title") or image.workflow
    lines = [f"**Prompt:** {md_literal(image.prompt) or '—'}"]
    if image.negative:
        lines.append(f"**Negative:** {md_literal(image.negative)}")
    facts = [f"seed {image.seed}" if image.seed is not None else "",
             f"{image.width}×{image.height}" if image.width else "",
             f"workflow {title}", f"model {image.model}" if image.model else "",
             f"style {p['style']}" if p.get("style") else ""]
    lines.append(" · ".join(md_literal(f) for f in facts if f))
    shown = [f"{k} {v}" for k, v in p.items() if k in FORM_PARAMS and k not in (
        "width", "height", "checkpoint") and v not in (None, "")]
    if shown:
        lines.append(" · ".join(md_literal(s) for s in shown))
    t = image.timings or {}
    times = [f"queued {t['queued_s']:.1f} s" if t.get("queued_s") is not None else "",
             f"ran {t['execution_s']:.1f} s" if t.get("execution_s") is not None else "",
             f"total {t['total_s']:.1f} s" if t.get("total_s") is not None else ""]
    if any(times):
        lines.append(" · ".join(x for x in times if x))
    lines.append(f"{image.created_at[:19].replace('T', ' ')} UTC")
    return "\n\n".join(lines)


def md_literal(text: str) -> str:
    """Text shown literally in Markdown (prompts may hold * _ < and friends)."""
    text = escape(" ".join(str(text).split()), quote=False)
    for char in "\\`*_[]":
        text = text.replace(char, "\\" + char)
    return text


def request_from_form(*, workflow, prompt, negative, style, seed, steps, cfg, sampler, scheduler,
                      width, height, batch_size, checkpoint, denoise, lora_name, lora_strength,
                      control_strength, input_image, batch_prompts, seeds, sweep_param,
                      sweep_values) -> ImageRequest:
    """The form's values as an ImageRequest. Raises InvalidInput for a malformed sweep."""
    def number(value):
        return None if value is None or value == "" else value

    return ImageRequest(
        workflow=workflow or "", prompt=prompt or "", negative=negative or "", style=style or "",
        seed=-1 if seed in (None, "") else int(seed), steps=number(steps), cfg=number(cfg),
        sampler=sampler or None, scheduler=scheduler or None, width=number(width),
        height=number(height), batch_size=number(batch_size), checkpoint=checkpoint or None,
        denoise=number(denoise), lora_name=lora_name or None, lora_strength=number(lora_strength),
        control_strength=number(control_strength), input_image=file_path(input_image),
        prompts=tuple(line for line in (batch_prompts or "").splitlines() if line.strip()),
        seeds=int(seeds or 1), sweep_param=sweep_param or "",
        sweep_values=parse_sweep(sweep_param or "", sweep_values or ""))


def file_path(value) -> str | None:
    if not value:
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(getattr(value, "name", value))


def comfyui_banner(problem: str) -> str:
    return (f"<div class='img-banner' id='comfyui-down'><b>ComfyUI isn't available.</b> "
            f"{escape(problem)}</div>") if problem else ""


def favourite_label(favourite: bool) -> str:
    return "★ Favourite" if favourite else "☆ Favourite"


def default_workflow(choices: list[tuple[str, str]]) -> str | None:
    """The workflow the form starts on: ``DEFAULT_WORKFLOW`` when present, else the first."""
    names = [name for _, name in choices]
    return DEFAULT_WORKFLOW if DEFAULT_WORKFLOW in names else (names or [None])[0]


def comfyui_choices(comfy: dict) -> dict[str, list[str]]:
    """The dropdown choices ComfyUI reported: checkpoints, loras, samplers and schedulers
    (the last two fall back to the usual ones when ComfyUI can't be asked)."""
    return {"checkpoints": list(comfy.get("checkpoints") or ()),
            "loras": list(comfy.get("loras") or ()),
            "samplers": list(comfy.get("samplers") or FALLBACK_SAMPLERS),
            "schedulers": list(comfy.get("schedulers") or FALLBACK_SCHEDULERS)}


def workflow_fields(template: Template, comfy: dict, params: Iterable[str]
                    ) -> dict[str, tuple[bool, Any]]:
    """For each form parameter in ``params``: (shown, starting value or None to leave it).

    Values are the family's defaults with the template's own; a checkpoint or LoRA that
    ComfyUI doesn't have is replaced by the first one it does. Denoise only shows for a
    workflow that starts from an input image.
    """
    accepts = template.params
    defaults = form_defaults(template)
    fields = {}
    for param in params:
        value = defaults.get(param)
        known = {"checkpoint": comfy.get("checkpoints"), "lora_name": comfy.get("loras")}.get(param)
        if known and value not in known:
            value = known[0]
        shown = param in accepts and (param != "denoise" or "input_image" in accepts)
        fields[param] = (shown, value)
    return fields


# Form parts a workflow shows or hides, besides the parameter fields: the key the page's
# table uses, and the parameter that decides it.
FORM_TOGGLES = {"prompt": "prompt", "negative": "negative", "seed": "seed",
                "lora_row": "lora_name", "input_group": "input_image"}


def workflow_form(template: Template, comfy: dict, params: Iterable[str]) -> dict[str, Any]:
    """What choosing ``template`` puts into the form, as JSON data the page applies itself
    (``WORKFLOW_FORM_JS``, in the same browser event as the choice, so nothing typed after
    it is overwritten by a late reply): ``values`` (a starting value per parameter of
    ``params``; absent = leave the field), ``shown`` (per parameter and per
    ``FORM_TOGGLES`` key), ``stock`` (the template's own checkpoint and LoRA, before one
    ComfyUI lacks is replaced) and ``info`` (the Markdown under the picker)."""
    fields = workflow_fields(template, comfy, params)
    defaults = form_defaults(template)
    return {"values": {p: value for p, (_, value) in fields.items() if value is not None},
            "shown": {**{p: shown for p, (shown, _) in fields.items()},
                      **{key: param in template.params for key, param in FORM_TOGGLES.items()}},
            "stock": {p: defaults.get(p) for p in ("checkpoint", "lora_name")},
            "info": workflow_info(template)}


def workflow_forms(templates: Mapping[str, Template], comfy: dict, params: Iterable[str]
                   ) -> dict[str, dict[str, Any]]:
    """``workflow_form`` of every workflow, by name: the page's table for the picker."""
    params = tuple(params)
    return {name: workflow_form(template, comfy, params) for name, template in templates.items()}


def workflow_form_js(keys: list[str]) -> str:
    """A browser function (workflow name, the page's table of workflow forms) -> one value
    or update per form part in ``keys`` ("info" is the Markdown under the picker).

    Choosing a workflow fills the form in the browser, in the same event as the choice:
    a reply from the server could land after the person typed into the new form, and
    overwrite what they typed (issue 14, item 18)."""
    return f"""(name, forms) => {{
  const form = (forms || {{}})[name];
  if (!form) return undefined;
  return {json.dumps(keys)}.map((key) => {{
    if (key === "info") return form.info;
    const update = {{__type__: "update", visible: !!form.shown[key]}};
    if (form.values[key] !== undefined) update.value = form.values[key];
    return update;
  }});
}}"""


# After ComfyUI's lists arrive (page load, ⟳): a checkpoint or LoRA that ComfyUI doesn't
# have becomes one it has, unless the person changed the field meanwhile.
MODELS_FIX_JS = """(name, forms, checkpoint, lora) => {
  const form = (forms || {})[name];
  if (!form) return undefined;
  const fix = (key, now) => {
    const better = form.values[key];
    const untouched = now === form.stock[key] || now === null || now === "";
    return better !== undefined && better !== now && untouched ? better : undefined;
  };
  return [fix("checkpoint", checkpoint), fix("lora_name", lora)];
}"""


def workflow_info(template: Template) -> str:
    """Markdown under the workflow picker: its description and the inputs it fills."""
    found = (", ".join(sorted(template.params - {"filename_prefix"}))
             or "nothing the studio can fill in")
    about = template.description or ""
    fills = f"<small>Fills: {found}</small>"
    return f"{md_literal(about)}\n\n{fills}" if about else fills


def custom_workflow_note(template: Template, problems: str = "") -> str:
    """Markdown saying what an uploaded workflow was added as, the inputs found in it and
    what ComfyUI would refuse in it (``problems``, already free of ComfyUI's address)."""
    found = ", ".join(f"{param} ({' + '.join(str(t) for t in targets)})"
                      for param, targets in sorted(template.mapping.items()))
    note = (f"Added **{md_literal(template.title)}**. "
            f"Found: {md_literal(found) or 'no inputs it can fill'}.")
    return note + ("\n\n⚠ " + md_literal(problems) if problems else "")


def reuse_values(image: GalleryImage, params: Iterable[str]) -> dict[str, Any]:
    """What "Reuse these settings" puts back in the form, by form field name: the prompt
    and negative as typed, the style, the seed (-1 when unknown), each of ``params`` that
    was stored, and the input image while its file is still there."""
    p = image.params
    values = {"prompt": p.get("prompt_typed", image.prompt),
              "negative": p.get("negative_typed", image.negative),
              "style": p.get("style", ""),
              "seed": image.seed if image.seed is not None else -1}
    values.update({param: p[param] for param in params if p.get(param) is not None})
    if p.get("input_file") and Path(p["input_file"]).is_file():
        values["input_image"] = p["input_file"]
    return values


def gallery_filter_choices(workflows: Iterable[str], models: Iterable[str],
                           titles: Mapping[str, str] | None = None
                           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Choices of the gallery's workflow and model filters, "All" first; a workflow is
    labelled with its title in ``titles`` when it has one."""
    titles = titles or {}
    return ([("All workflows", "")] + [(titles.get(w, w), w) for w in workflows],
            [("All models", "")] + [(m, m) for m in models])


def input_image_note(path: str, max_megapixels: float) -> tuple[str, str]:
    """Check an uploaded input image: ("", "W×H · name") when it can be used, else (why not,
    the same as a Markdown warning)."""
    try:
        width, height = check_input_image(path, max_megapixels)
    except StudioError as exc:
        return str(exc), f"⚠ {md_literal(str(exc))}"
    return "", f"{width}×{height} · {Path(path).name}"


@dataclass(frozen=True)
class Notice:
    """Something to tell the person: a warning (``warning``) or a note."""

    text: str
    warning: bool = False


def gpu_room_notice(coordinator, library, workflow: str, public,
                    host: str | None = None) -> Notice | None:
    """Ask the GPU coordinator (Models tab) to make room for a job of ``workflow`` on the
    machine of ComfyUI ``host`` (None: one host); return what to say about it (None:
    nothing). ``public`` cuts ComfyUI's address out of a text. GPU sharing is advice: when
    asking fails it is logged and the job goes on without it."""
    try:
        family = library.get(workflow).family or "default"
        outcome = coordinator.before_image_job(family, host=host)
    except Exception:  # noqa: BLE001 - GPU sharing is advice; the job goes on without it
        log.warning("GPU coordination before an image job failed", exc_info=True)
        return None
    if outcome.needs_confirmation:
        # Policy "ask": nothing is unloaded without a yes; the Models tab has the button.
        return Notice(public(outcome.message) + " To make room, press \"Unload idle Ollama "
                      "models\" in the Models tab; the job goes ahead meanwhile.", warning=True)
    if outcome.outcome != "fits" and outcome.message:
        return Notice(public(outcome.message))
    return None
