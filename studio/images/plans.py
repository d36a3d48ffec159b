"""Image plans: from the Images tab's form to the exact graphs ComfyUI will run.

Pure where it can be (no gradio imports, no server needed):

* ``WorkflowLibrary``: the templates of ``workflows/`` plus the owner's uploads (API-format
  JSON, or a ComfyUI PNG, whose ``prompt`` chunk is read as JSON data only).
* ``ImageRequest`` (what the form asks for), ``check_request`` (every "clear message
  before queueing" that needs no server), ``plan_items`` (prompts x seeds x a parameter
  sweep -> one parameter set per image) and ``render_item`` (one graph per image).

The job service that runs these plans is ``images.py``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from . import workflows
from ..errors import InvalidInput, StudioError
from .files import PNG_SIGNATURE, read_png_metadata, write_atomic
from ..presets import StylePreset, apply_style

log = logging.getLogger(__name__)

DEFAULT_WORKFLOW = "sd15_txt2img"  # what the Images tab and /v1/images start on
MAX_JOB_ITEMS = 500  # images (ComfyUI prompts) per job
MAX_SEEDS = 100
MAX_BATCH_SIZE = 64
MAX_SWEEP_VALUES = 16
# The form's parameters, in the order the UI shows them.
FORM_PARAMS = ("steps", "cfg", "sampler", "scheduler", "width", "height", "batch_size",
               "checkpoint", "denoise", "lora_name", "lora_strength", "control_strength")
SWEEPABLE = ("cfg", "steps", "denoise", "sampler", "scheduler", "lora_strength",
             "control_strength")
# Loader inputs that name the model a graph runs, for the gallery's model filter.
_MODEL_INPUTS = (("CheckpointLoaderSimple", "ckpt_name"), ("CheckpointLoader", "ckpt_name"),
                 ("ImageOnlyCheckpointLoader", "ckpt_name"), ("UNETLoader", "unet_name"))


# --------------------------------------------------------------------------- workflows


def graph_from_upload(data: bytes) -> dict:
    """The API-format graph in an uploaded file: workflow JSON, or a PNG made by ComfyUI.

    A PNG's ``prompt`` text chunk is parsed as JSON (data only). Raises InvalidInput with
    the reason (not JSON, UI format with export instructions, a PNG without a workflow).
    """
    if data.startswith(PNG_SIGNATURE):
        chunks = read_png_metadata(data)
        prompt = chunks.get("prompt")
        if not isinstance(prompt, dict):
            raise InvalidInput("That PNG holds no ComfyUI workflow (no \"prompt\" text chunk).",
                               hint="Upload the workflow JSON from ComfyUI's Export (API).")
        return workflows.parse_workflow_json(json.dumps(prompt))
    return workflows.parse_workflow_json(data)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]
    return slug or "workflow"


class WorkflowLibrary:
    """The built-in templates (``workflows/``) and custom ones (a folder in the data dir).

    A ``.json`` with a ``.params.json`` sidecar is a template; one without is a custom API
    graph whose inputs are found by ``workflows.detect_inputs``. A broken file is left
    out and reported in ``problems`` instead of stopping the studio.
    """

    def __init__(self, builtin_dir: str | Path, custom_dir: str | Path | None = None):
        self.builtin_dir = Path(builtin_dir)
        self.custom_dir = Path(custom_dir) if custom_dir is not None else None
        self._lock = threading.Lock()
        self._templates: dict[str, workflows.Template] | None = None
        self.problems: list[str] = []

    def templates(self) -> dict[str, workflows.Template]:
        with self._lock:
            if self._templates is None:
                self._templates, self.problems = self._load()
            return dict(self._templates)

    def refresh(self) -> dict[str, workflows.Template]:
        with self._lock:
            self._templates = None
        return self.templates()

    def get(self, name: str) -> workflows.Template:
        template = self.templates().get(name or "")
        if template is None:
            raise InvalidInput(f"There is no workflow {name!r}.",
                               hint="Pick one from the Workflow list (⟳ reloads it).")
        return template

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) for the picker: built-in ones first, then custom, by title."""
        templates = self.templates()
        return sorted(((t.title or n, n) for n, t in templates.items()),
                      key=lambda c: (c[1].startswith("custom_"), c[1].startswith("test_"),
                                     c[0].lower()))

    def add_custom(self, filename: str, data: bytes) -> workflows.Template:
        """Save an uploaded API workflow (or ComfyUI PNG) as a custom template and return it."""
        if self.custom_dir is None:
            raise InvalidInput("Custom workflows are not enabled here.")
        graph = graph_from_upload(data)
        templates = self.templates()
        base = "custom_" + _slug(Path(filename or "workflow").stem)
        name, n = base, 2
        while name in templates:
            name, n = f"{base}_{n}", n + 1
        self.custom_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.custom_dir / f"{name}.json", json.dumps(graph, indent=2).encode())
        self.refresh()
        return self.get(name)

    def is_custom(self, name: str) -> bool:
        """Whether workflow ``name`` is one of the uploads (the custom folder's)."""
        template = self.templates().get(name or "")
        return (template is not None and self.custom_dir is not None
                and Path(template.source).parent == self.custom_dir)

    def map_inputs(self, name: str, targets: Mapping[str, str | None]) -> workflows.Template:
        """Say by hand which node inputs an uploaded workflow's ``workflows.MAPPABLE``
        parameters fill: ``targets`` maps each to "node.input" (several joined by commas),
        or to "" for none. Saved as the workflow's ``.params.json`` (what a hand-written
        sidecar holds, with the inputs found before for the other parameters); returns
        the workflow as it is now. Raises InvalidInput (not an upload, a node or input the
        graph lacks or of the wrong type)."""
        template = self.get(name)
        if not self.is_custom(name):
            raise InvalidInput(f"{template.title!r} comes with the studio; only uploaded "
                               "workflows can have their inputs mapped here.",
                               hint="Its .params.json sidecar in workflows/ says what it fills.")
        mapping = dict(template.mapping)
        for param, spec in targets.items():
            if param not in workflows.MAPPABLE:
                raise InvalidInput(f"{param} can't be mapped by hand.",
                                   hint=f"Map one of: {', '.join(workflows.MAPPABLE)}.")
            if spec:
                mapping[param] = workflows.parse_targets(template.graph, param, spec,
                                                         title=template.title)
            else:
                mapping.pop(param, None)
        meta = {"title": template.title, "description": template.description,
                "params": {param: [str(t) for t in ts] for param, ts in sorted(mapping.items())}}
        write_atomic(Path(template.source).with_name(name + workflows.SIDECAR_SUFFIX),
                     json.dumps(meta, indent=2).encode())
        self.refresh()
        return self.get(name)

    def _load(self) -> tuple[dict[str, workflows.Template], list[str]]:
        found: dict[str, workflows.Template] = {}
        problems: list[str] = []
        for directory, custom in ((self.builtin_dir, False), (self.custom_dir, True)):
            if directory is None or not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                if path.name.endswith(workflows.SIDECAR_SUFFIX):
                    continue
                try:
                    template = _load_one(path, custom)
                except (StudioError, OSError) as exc:
                    problems.append(f"{path.name}: {exc}")
                    log.warning("workflow %s left out: %s", path, exc)
                    continue
                if template.name in found:
                    problems.append(f"{path.name}: a workflow named {template.name!r} exists.")
                    continue
                found[template.name] = template
        return found, problems


def _load_one(path: Path, custom: bool) -> workflows.Template:
    sidecar = path.with_name(path.stem + workflows.SIDECAR_SUFFIX)
    text = path.read_bytes()
    if sidecar.exists():
        graph = workflows.parse_workflow_json(text)
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError as exc:  # bad JSON or bad UTF-8
            raise workflows.TemplateError(f"{sidecar.name} isn't valid JSON ({exc}).") from exc
        if not isinstance(meta, dict):
            raise workflows.TemplateError(f"{sidecar.name} must hold a JSON object.")
        return workflows.template_from_sidecar(path.stem, graph, meta, source=str(path))
    graph = workflows.parse_workflow_json(text)
    name = path.stem
    title = name.removeprefix("custom_").replace("_", " ") + " (custom)"
    return replace(workflows.template_from_graph(name, graph, title=title), source=str(path))


def form_defaults(template: workflows.Template) -> dict[str, Any]:
    """The value of each parameter the template maps: the sidecar default, else what the
    graph itself holds. The UI fills the form with these when the workflow is picked."""
    values = effective_params(template, template.graph)
    values.update({k: v for k, v in template.defaults.items() if k in template.mapping})
    return values


def effective_params(template: workflows.Template, graph: Mapping[str, Any]) -> dict[str, Any]:
    """Every mapped parameter as it stands in ``graph`` (its first target)."""
    values = {}
    for param, targets in template.mapping.items():
        node = graph.get(targets[0].node) or {}
        value = (node.get("inputs") or {}).get(targets[0].input)
        if not isinstance(value, list):  # a link, not a value
            values[param] = value
    return values


def graph_model(graph: Mapping[str, Any]) -> str:
    """The checkpoint (or diffusion model) file a graph loads, '' if none."""
    for node_id in sorted(graph, key=lambda n: (len(n), n)):
        node = graph[node_id]
        for class_type, name in _MODEL_INPUTS:
            value = (node.get("inputs") or {}).get(name)
            if node.get("class_type") == class_type and isinstance(value, str):
                return value
    return ""


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ImageRequest:
    """What the Generate form asks for. ``None`` = the workflow's own value.

    ``prompts`` (batch) replaces ``prompt`` when given; each prompt is made ``seeds``
    times (seed -1 = a random seed each, else seed, seed+1, ...), and for each of the
    ``sweep_values`` of ``sweep_param`` (all with the same seed, to compare them).
    """

    workflow: str
    prompt: str = ""
    negative: str = ""
    style: str = ""
    seed: int = -1
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int | None = None
    checkpoint: str | None = None
    denoise: float | None = None
    lora_name: str | None = None
    lora_strength: float | None = None
    control_strength: float | None = None
    input_image: str | None = None  # a local file path
    prompts: tuple[str, ...] = ()
    seeds: int = 1
    sweep_param: str = ""
    sweep_values: tuple = ()

    @property
    def all_prompts(self) -> list[str]:
        batch = [p.strip() for p in self.prompts if p and p.strip()]
        return batch or [self.prompt.strip()]

    @property
    def image_count(self) -> int:
        return len(self.all_prompts) * max(1, self.seeds) * max(1, len(self.sweep_values))


def parse_sweep(param: str, text: str) -> tuple:
    """'5, 7, 9' -> (5.0, 7.0, 9.0) for ``param``; raises InvalidInput naming the bad value.

    >>> parse_sweep("steps", "10 20,30")
    (10, 20, 30)
    >>> parse_sweep("", "")
    ()
    """
    if not param or not (text or "").strip():
        return ()
    if param not in SWEEPABLE:
        raise InvalidInput(f"{param} can't be swept.", hint=f"Sweep one of: {', '.join(SWEEPABLE)}.")
    parts = [p for p in re.split(r"[,\s;]+", text.strip()) if p]
    if len(parts) > MAX_SWEEP_VALUES:
        raise InvalidInput(f"A sweep takes at most {MAX_SWEEP_VALUES} values (got {len(parts)}).")
    return tuple(workflows.coerce_param(param, p) for p in parts)


def _nearest_multiples(value: int, step: int = 8) -> str:
    low = max(step, value // step * step)
    return f"{low} or {low + step}" if low != value else str(value)


def check_request(request: ImageRequest, template: workflows.Template, *,
                  max_items: int = MAX_JOB_ITEMS) -> None:
    """Every check that needs no server; raises InvalidInput with a sentence for the form.

    Prompt missing, width/height not a positive multiple of 8, steps <= 0, batch size or
    seeds out of range, denoise outside 0..1, a sweep of a parameter the workflow lacks,
    a missing input image, or too many images in one job.
    """
    accepts = template.params
    title = template.title or template.name
    if "prompt" in accepts and not any(request.all_prompts):
        raise InvalidInput("Type a prompt first: what should the image show?")
    lacks = [param for param, wanted in (("prompt", len(request.all_prompts) > 1),
                                         ("seed", request.seeds > 1))
             if wanted and param not in accepts]
    if lacks:
        raise InvalidInput(
            f"The workflow {title!r} has no {' or '.join(lacks)} input, so the "
            f"{request.image_count} images of this batch would all be the same"
            + (" and none would use its prompt" if "prompt" in lacks else "") + ".",
            hint=f"Map its {' and '.join(lacks)} to a node under \"Custom workflow\" "
                 "(uploaded workflows), or make one image. Nothing was queued.")
    defaults = form_defaults(template)
    for name in ("width", "height"):
        value = getattr(request, name)
        if name not in accepts or value is None:
            continue
        value = workflows.coerce_param(name, value)
        if value <= 0:
            raise InvalidInput(f"{name.capitalize()} must be a positive number of pixels (got {value}).")
        if value % 8:
            raise InvalidInput(f"{name.capitalize()} {value} isn't a multiple of 8, which the "
                               f"models need. Try {_nearest_multiples(value)}.")
    steps = request.steps if request.steps is not None else defaults.get("steps")
    if "steps" in accepts and steps is not None and workflows.coerce_param("steps", steps) <= 0:
        raise InvalidInput(f"Steps must be at least 1 (got {steps}).",
                           hint="20-30 is usual; 4-8 for turbo/lightning models.")
    if request.batch_size is not None and "batch_size" in accepts and not (
            1 <= workflows.coerce_param("batch_size", request.batch_size) <= MAX_BATCH_SIZE):
        raise InvalidInput(f"Batch size must be between 1 and {MAX_BATCH_SIZE} "
                           f"(got {request.batch_size}).")
    if request.denoise is not None and "denoise" in accepts and not (
            0 <= workflows.coerce_param("denoise", request.denoise) <= 1):
        raise InvalidInput(f"Denoise must be between 0 and 1 (got {request.denoise}).")
    if not 1 <= int(request.seeds) <= MAX_SEEDS:
        raise InvalidInput(f"Seeds per prompt must be between 1 and {MAX_SEEDS} (got {request.seeds}).")
    if request.seed is not None and request.seed >= 0 and request.seed > 2**64 - 1:
        raise InvalidInput("The seed is too large; use -1 for a random one or a smaller number.")
    if request.sweep_values and request.sweep_param not in accepts:
        raise InvalidInput(f"The workflow {title!r} has no {request.sweep_param} to sweep.")
    steps_swept = [v for v in request.sweep_values if request.sweep_param == "steps" and v <= 0]
    if steps_swept:
        raise InvalidInput(f"Steps must be at least 1 (the sweep has {steps_swept[0]}).")
    if "input_image" in accepts and not request.input_image and "input_image" in template.required:
        raise InvalidInput(f"The workflow {title!r} starts from a picture: upload an input image.")
    for name in template.required:
        if name in ("prompt", "input_image"):
            continue
        if getattr(request, name, None) in (None, "") and defaults.get(name) in (None, ""):
            raise InvalidInput(f"The workflow {title!r} needs a {name.replace('_', ' ')}.")
    if request.image_count > max_items:
        raise InvalidInput(f"That batch makes {request.image_count} images; one job may make at "
                           f"most {max_items}. Use fewer prompts, seeds or sweep values.")


def plan_items(request: ImageRequest, template: workflows.Template, style: StylePreset | None,
               *, seed_source: Callable[[], int] = workflows.random_seed) -> list[dict]:
    """One parameter dict per image, in the order they will run (pure but for the seeds).

    Each holds the template's parameters from the form, the styled prompt and negative,
    the seed, the swept value, and (as ``prompt_typed``/``negative_typed``/``style``)
    what the person typed, so "reuse these settings" can fill the form again.
    """
    accepts = template.params
    base = {name: getattr(request, name) for name in FORM_PARAMS
            if name in accepts and getattr(request, name) not in (None, "")}
    if "input_image" in accepts and request.input_image:
        base["input_image"] = request.input_image
    items = []
    for prompt in request.all_prompts:
        styled, negative = apply_style(style, prompt, request.negative or "")
        for index in range(max(1, request.seeds)):
            fixed = request.seed is not None and request.seed >= 0
            seed = request.seed + index if fixed else seed_source()
            for value in request.sweep_values or (None,):
                params = dict(base)
                if "prompt" in accepts:
                    params["prompt"] = styled
                if "negative" in accepts:
                    params["negative"] = negative
                if "seed" in accepts:
                    params["seed"] = seed
                if value is not None:
                    params[request.sweep_param] = value
                # What was typed, for "reuse these settings" and captions: only what the
                # workflow used (a prompt left in a hidden box isn't this image's).
                if "prompt" in accepts:
                    params["prompt_typed"] = prompt
                if "negative" in accepts:
                    params["negative_typed"] = request.negative or ""
                params.update(style=request.style or "", seed_used=seed)
                items.append(params)
    return items


def render_item(template: workflows.Template, params: Mapping[str, Any]) -> dict:
    """The graph for one planned item (the bookkeeping keys are left out)."""
    return workflows.render(template, {k: v for k, v in params.items() if k in template.mapping})
