"""Values for the Images tab's components: progress HTML, gallery items and captions, image
details, the form read into an ``ImageRequest``. Plain functions of the studio's own types;
no components and no handlers here (``studio/ui/images.py`` builds the tab).
"""

from __future__ import annotations

from html import escape

from PIL import Image

from ..images.plans import FORM_PARAMS, ImageRequest, parse_sweep
from ..images.live_job import JobSnapshot
from ..store.images import GalleryImage, GalleryPage


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
    prompt = image.params.get("prompt_typed") or image.prompt or image.workflow
    return prompt if len(prompt) <= 60 else prompt[:59] + "…"


def page_label(page: GalleryPage) -> str:
    if not page.total:
        return "No images match." if page.images == [] else ""
    return f"Page {page.page} of {page.pages} · {page.total:,} image{'s' if page.total != 1 else ''}"


def image_details(image: GalleryImage) -> str:
    """Markdown describing a stored image: prompt, seed, every parameter, timings."""
    p = image.params
    lines = [f"**Prompt:** {md_literal(image.prompt) or '—'}"]
    if image.negative:
        lines.append(f"**Negative:** {md_literal(image.negative)}")
    facts = [f"seed {image.seed}" if image.seed is not None else "",
             f"{image.width}×{image.height}" if image.width else "",
             f"workflow {image.workflow}", f"model {image.model}" if image.model else "",
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
