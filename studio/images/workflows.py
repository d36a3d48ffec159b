"""ComfyUI workflow templates: load them, fill in the studio's parameters, read custom graphs.

A template is an API-format graph (``workflows/<name>.json``, what ComfyUI's "Save (API)"
writes) plus a sidecar ``workflows/<name>.params.json`` that maps each studio parameter
(prompt, seed, width...) to the node inputs it fills::

    {"title": "SD 1.5 text to image", "family": "sd15",
     "params": {"prompt": "6.text", "lora_strength": ["10.strength_model", "10.strength_clip"]},
     "defaults": {"width": 512, "height": 512}, "required": ["prompt"]}

Everything here is pure: plain data in, plain data out, no network. The one exception is
``load_templates``, which reads the folder. Checking a graph against a server's node
catalogue is ``validation.py``. No gradio imports here.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidInput, StudioError

# Every parameter the studio knows, with the Python type its value is coerced to.
PARAM_TYPES: dict[str, type] = {
    "prompt": str,
    "negative": str,
    "seed": int,
    "steps": int,
    "cfg": float,
    "sampler": str,
    "scheduler": str,
    "width": int,
    "height": int,
    "batch_size": int,
    "checkpoint": str,
    "denoise": float,
    "lora_name": str,
    "lora_strength": float,
    "input_image": str,
    "control_strength": float,
    "color": int,
    "filename_prefix": str,
}

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": {"width": 512, "height": 512},
    "sdxl": {"width": 1024, "height": 1024},
}

SIDECAR_SUFFIX = ".params.json"
# A ComfyUI graph nests about four deep (graph, node, inputs, a link); an upload nested far
# deeper is not one, and copying or dumping it would run out of stack.
MAX_WORKFLOW_DEPTH = 32
MAX_SEED = 2**32 - 1  # what most UIs show; ComfyUI itself accepts up to 2**64 - 1


class TemplateError(StudioError):
    """A template or its sidecar is broken: a programming/packaging error, not user input."""


@dataclass(frozen=True)
class Target:
    """One node input a parameter writes to."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


@dataclass(frozen=True)
class Template:
    """An API-format graph and how studio parameters map onto it."""

    name: str
    graph: dict
    mapping: dict[str, tuple[Target, ...]]
    title: str = ""
    family: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    source: str = ""

    @property
    def params(self) -> frozenset[str]:
        """Names of the parameters this template accepts."""
        return frozenset(self.mapping)


@dataclass(frozen=True)
class WorkflowProblem:
    node: str
    message: str

    def __str__(self) -> str:
        return self.message


def random_seed() -> int:
    """A fresh seed in 0..2**32-1 (the range every sampler and UI accepts)."""
    return secrets.randbelow(MAX_SEED + 1)


# --------------------------------------------------------------------------- loading


def load_templates(directory: str | Path) -> dict[str, Template]:
    """Load every ``<name>.json`` with its ``<name>.params.json`` sidecar from ``directory``.

    Returns ``{name: Template}`` sorted by name. Raises TemplateError naming the file when
    a graph is not API format, a sidecar is missing or malformed, or a mapping points at a
    node id or input that the graph doesn't have.
    """
    directory = Path(directory)
    templates: dict[str, Template] = {}
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith(SIDECAR_SUFFIX):
            continue
        sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
        graph = _read_json(path)
        if not is_api_format(graph):
            raise TemplateError(f"{path} is not an API-format ComfyUI workflow.",
                                hint="Export it with ComfyUI's \"Save (API)\".")
        meta = _read_json(sidecar) if sidecar.exists() else None
        if meta is None:
            raise TemplateError(f"{path} has no sidecar {sidecar.name}.",
                                hint="Add one mapping the studio's parameters to node inputs.")
        templates[path.stem] = template_from_sidecar(path.stem, graph, meta, source=str(path))
    return templates


def template_from_sidecar(name: str, graph: dict, meta: Mapping[str, Any], *,
                          source: str = "") -> Template:
    """Build a Template from a graph and its sidecar dict; checks every mapping target."""
    where = source or name
    raw_params = meta.get("params")
    if not isinstance(raw_params, dict):
        raise TemplateError(f"The sidecar of {where} needs a \"params\" object.")
    mapping: dict[str, tuple[Target, ...]] = {}
    for param, spec in raw_params.items():
        if param not in PARAM_TYPES:
            raise TemplateError(f"{where} maps unknown parameter {param!r}; known: "
                                f"{', '.join(sorted(PARAM_TYPES))}.")
        specs = [spec] if isinstance(spec, str) else spec
        targets = []
        for item in specs:
            if not isinstance(item, str) or "." not in item:
                raise TemplateError(f"{where}: parameter {param!r} must map to \"node.input\" "
                                    f"strings (got {item!r}).")
            node, _, inp = item.partition(".")
            targets.append(Target(node, inp))
        mapping[param] = tuple(targets)
    template = Template(
        name=name, graph=graph, mapping=mapping, title=meta.get("title", name),
        family=meta.get("family", ""), description=meta.get("description", ""),
        defaults={**FAMILY_DEFAULTS.get(meta.get("family", ""), {}), **meta.get("defaults", {})},
        required=tuple(meta.get("required", ())), source=source,
    )
    _check_targets(template)
    return template


def _check_targets(template: Template) -> None:
    where = template.source or template.name
    for param, targets in template.mapping.items():
        for target in targets:
            node = template.graph.get(target.node)
            if node is None:
                raise TemplateError(f"{where}: parameter {param!r} points at node "
                                    f"{target.node}, which the graph doesn't have.")
            if target.input not in node.get("inputs", {}):
                raise TemplateError(
                    f"{where}: parameter {param!r} points at input {target.input!r} of node "
                    f"{target.node} ({node.get('class_type')}), which that node doesn't have.")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc


# --------------------------------------------------------------------------- rendering


def render(template: Template, params: Mapping[str, Any]) -> dict:
    """Return a new API-format graph with ``params`` written into the mapped node inputs.

    ``params`` values of ``None`` are skipped (the template's default stays). Sidecar
    defaults are applied first. Never mutates ``template``. Raises InvalidInput when a
    parameter is unknown to the template, has the wrong type, or a required one is
    missing; TemplateError when a mapping points at a node/input the graph lacks.
    """
    where = template.source or template.name
    values = {k: v for k, v in template.defaults.items() if k in template.mapping}
    values.update({k: v for k, v in params.items() if v is not None})
    unknown = sorted(set(values) - set(template.mapping))
    if unknown:
        raise InvalidInput(
            f"The workflow {template.title or template.name!r} has no "
            f"{'parameter' if len(unknown) == 1 else 'parameters'} {', '.join(unknown)}.",
            hint=f"It accepts: {', '.join(sorted(template.mapping))}.")
    missing = [p for p in template.required if values.get(p) in (None, "")]
    if missing:
        raise InvalidInput(f"The workflow {template.title or template.name!r} needs "
                           f"{', '.join(missing)}.")
    graph = copy.deepcopy(template.graph)
    for param, value in values.items():
        coerced = coerce_param(param, value)
        for target in template.mapping[param]:
            node = graph.get(target.node)
            if node is None or target.input not in node.get("inputs", {}):
                raise TemplateError(f"{where}: parameter {param!r} points at "
                                    f"{target}, which the graph doesn't have.")
            node["inputs"][target.input] = coerced
    return graph


def coerce_param(name: str, value: Any) -> Any:
    """Convert ``value`` to the type of parameter ``name``; raise InvalidInput if it can't.

    >>> coerce_param("steps", 20.0)
    20
    >>> coerce_param("cfg", "7")
    7.0
    >>> coerce_param("seed", 2**63 + 1)
    9223372036854775809
    """
    kind = PARAM_TYPES.get(name, type(value))
    try:
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, int):
                return value  # exact: a seed past 2**53 would lose digits through float
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return int(value)
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if kind is str:
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        raise InvalidInput(f"{name} must be {'a whole number' if kind is int else 'a number'} "
                           f"(got {value!r}).") from None
    return value


# --------------------------------------------------------------------------- formats


def is_api_format(obj: Any) -> bool:
    """True for an API-format graph: a non-empty dict of ``{id: {"class_type", "inputs"}}``."""
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(v, dict) and "class_type" in v for v in obj.values()))


def is_ui_format(obj: Any) -> bool:
    """True for the UI ("Save") format: a dict with a ``nodes`` list (v0.4 and v1 schemas)."""
    return isinstance(obj, dict) and isinstance(obj.get("nodes"), list)


_TOO_DEEP = object()
_EXPORT_HINT = ("In ComfyUI choose Workflow → Export (API) (older versions: enable "
                "\"Dev mode options\" in the settings, then use \"Save (API Format)\") and "
                "upload that file.")


def parse_workflow_json(text: str | bytes) -> dict:
    """Parse an uploaded workflow and return its API-format graph.

    Accepts a bare API graph or a ``{"prompt": graph}`` body. Raises InvalidInput for
    invalid JSON, for UI-format files (with instructions to export API format), and for
    anything else that isn't a graph of nodes.
    """
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = (f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
                  if isinstance(exc, json.JSONDecodeError) else str(exc))
        raise InvalidInput(f"That workflow file isn't valid JSON ({detail}).") from exc
    except RecursionError:  # brackets nested thousands deep: the parser's stack gives out
        obj = _TOO_DEEP
    if obj is _TOO_DEEP or _nested_deeper_than(obj, MAX_WORKFLOW_DEPTH):
        raise InvalidInput(f"That workflow file nests its JSON more than {MAX_WORKFLOW_DEPTH} "
                           "levels deep, which no ComfyUI workflow does.", hint=_EXPORT_HINT)
    if is_ui_format(obj):
        raise InvalidInput("That file is a ComfyUI UI workflow (the \"Save\" format), which "
                           "ComfyUI can't run through its API.", hint=_EXPORT_HINT)
    if isinstance(obj, dict) and is_api_format(obj.get("prompt")):
        obj = obj["prompt"]
    if not is_api_format(obj):
        raise InvalidInput("That JSON isn't a ComfyUI workflow: expected an object of nodes, "
                           "each with \"class_type\" and \"inputs\".", hint=_EXPORT_HINT)
    for node_id, node in obj.items():
        if not isinstance(node["class_type"], str) or not node["class_type"]:
            raise InvalidInput(f"Node {node_id!r} of that workflow has no node type name "
                               f"(its class_type is {node['class_type']!r}).")
        if not isinstance(node.get("inputs", {}), dict):
            raise InvalidInput(f"Node {node_id!r} of that workflow has malformed inputs.")
    return obj


def _nested_deeper_than(obj: Any, limit: int) -> bool:
    """Whether lists and dicts in ``obj`` nest more than ``limit`` deep (no recursion)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return False


# --------------------------------------------------------------------------- detection

_SAMPLER_SEED_INPUTS = ("seed", "noise_seed")
_TEXT_ENCODERS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeSDXL": ("text_g", "text_l"),
                  "CLIPTextEncodeSDXLRefiner": ("text",), "CLIPTextEncodeFlux": ("clip_l", "t5xxl")}
_CONDITIONING_PASSTHROUGH = ("conditioning", "positive", "negative", "conditioning_to",
                             "conditioning_1")
_CHECKPOINT_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name",
                       "ImageOnlyCheckpointLoader": "ckpt_name", "UNETLoader": "unet_name"}


def is_link(value: Any) -> bool:
    """Whether an input value is a link ``[node_id, output_slot]`` rather than a literal."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int))


def node_order(node_id: str):
    """Sort key for node ids: numeric ids in number order, then the others by name."""
    # isdigit alone lets "²" through, which int() refuses.
    return (0, int(node_id), "") if node_id.isascii() and node_id.isdigit() else (1, 0, node_id)


def detect_inputs(graph: Mapping[str, Any]) -> dict[str, tuple[Target, ...]]:
    """Guess where prompt, negative, seed, size, steps... live in a custom API graph.

    Looks for a sampler (a node with linked ``positive``/``negative`` inputs, e.g. KSampler),
    follows ``positive``/``negative`` back to text encoders (through ControlNet-style
    conditioning nodes), reads seed/steps/cfg/sampler/scheduler/denoise on the sampler,
    width/height/batch_size on the latent it starts from, and the checkpoint loader's
    file name. Returns a mapping like ``Template.mapping``; parameters it can't find are
    left out. Only literal (non-linked) inputs are mapped.
    """
    found: dict[str, list[Target]] = {}

    def add(param: str, node_id: str, name: str) -> None:
        node = graph.get(node_id) or {}
        inputs = node.get("inputs", {})
        if name in inputs and not is_link(inputs[name]):
            targets = found.setdefault(param, [])
            if Target(node_id, name) not in targets:
                targets.append(Target(node_id, name))

    samplers = [nid for nid in sorted(graph, key=node_order)
                if is_link(graph[nid].get("inputs", {}).get("positive"))
                and is_link(graph[nid].get("inputs", {}).get("negative"))]
    if samplers:
        sampler = samplers[0]
        inputs = graph[sampler]["inputs"]
        for name in _SAMPLER_SEED_INPUTS:
            add("seed", sampler, name)
        for param, name in (("steps", "steps"), ("cfg", "cfg"), ("sampler", "sampler_name"),
                            ("scheduler", "scheduler"), ("denoise", "denoise")):
            add(param, sampler, name)
        for param in ("positive", "negative"):
            for node_id, name in _find_text(graph, inputs[param], set()):
                add("prompt" if param == "positive" else "negative", node_id, name)
        latent = inputs.get("latent_image")
        if is_link(latent):
            for name in ("width", "height", "batch_size"):
                add(name, latent[0], name)
    for node_id in sorted(graph, key=node_order):
        node = graph[node_id]
        class_type = node.get("class_type", "")
        if class_type == "RandomNoise":
            add("seed", node_id, "noise_seed")
        if class_type in _CHECKPOINT_LOADERS and "checkpoint" not in found:
            add("checkpoint", node_id, _CHECKPOINT_LOADERS[class_type])
        if class_type.startswith("Empty") and "Latent" in class_type and "width" not in found:
            for name in ("width", "height", "batch_size"):
                add(name, node_id, name)
    return {param: tuple(targets) for param, targets in found.items()}


def _find_text(graph: Mapping[str, Any], link: list, seen: set[str]) -> list[tuple[str, str]]:
    """Follow a conditioning link ``[node_id, slot]`` back to the text inputs behind it."""
    node_id, slot = link
    if node_id in seen or node_id not in graph:
        return []
    seen.add(node_id)
    node = graph[node_id]
    inputs = node.get("inputs", {})
    names = _TEXT_ENCODERS.get(node.get("class_type", ""))
    if names is None and isinstance(inputs.get("text"), str):
        names = ("text",)
    if names:
        return [(node_id, name) for name in names if isinstance(inputs.get(name), str)]
    # Nodes like ControlNetApplyAdvanced pass both through: output 0 is positive, 1 negative.
    order = list(_CONDITIONING_PASSTHROUGH)
    if is_link(inputs.get("positive")) and is_link(inputs.get("negative")):
        order = ["positive" if slot == 0 else "negative"]
    for name in order:
        if is_link(inputs.get(name)):
            result = _find_text(graph, inputs[name], seen)
            if result:
                return result
    return []


# --------------------------------------------------------------------------- mapping by hand

# What a person maps by hand in an uploaded workflow (the Images tab's Custom workflow).
MAPPABLE = ("prompt", "negative", "seed", "width", "height", "steps")


def _fits(param: str, value: Any) -> bool:
    """Whether a literal input value has the type parameter ``param`` writes."""
    kind = PARAM_TYPES[param]
    if isinstance(value, bool):
        return False
    if kind is str:
        return isinstance(value, str)
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def input_choices(graph: Mapping[str, Any], param: str) -> list[tuple[str, str]]:
    """(label, "node.input") for every literal input of ``graph`` that parameter ``param``
    could fill (text for a prompt, whole numbers for a seed, size or steps), in node order.

    >>> input_choices({"5": {"class_type": "EmptyLatentImage",
    ...                      "inputs": {"width": 512, "model": ["4", 0]}}}, "width")
    [('5 EmptyLatentImage: width (512)', '5.width')]
    """
    choices = []
    for node_id in sorted(graph, key=node_order):
        node = graph[node_id]
        name = (node.get("_meta") or {}).get("title") or node.get("class_type", "?")
        for key, value in (node.get("inputs") or {}).items():
            if not is_link(value) and _fits(param, value):
                shown = value if len(str(value)) <= 24 else f"{str(value)[:23]}…"
                choices.append((f"{node_id} {name}: {key} ({shown})", f"{node_id}.{key}"))
    return choices


def parse_targets(graph: Mapping[str, Any], param: str, spec: str, *, title: str = ""
                  ) -> tuple[Target, ...]:
    """The node inputs ``spec`` names for ``param`` ("6.text", or several joined by
    commas), each checked against ``graph``. Raises InvalidInput naming the node and the
    input when one isn't there, is linked to another node, or holds the wrong type."""
    where = f"The workflow {title!r}" if title else "The workflow"
    targets = []
    for item in (part.strip() for part in spec.split(",")):
        node_id, dot, name = item.partition(".")
        node = graph.get(node_id) if dot else None
        if node is None:
            raise InvalidInput(f"{where} has no node {node_id or item!r} for its {param}.",
                               hint="Pick one of the inputs the list offers.")
        label = f"node {node_id} ({node.get('class_type', '?')})"
        inputs = node.get("inputs") or {}
        if name not in inputs:
            raise InvalidInput(f"{where}: {label} has no input {name!r} for its {param}.",
                               hint="Pick one of the inputs the list offers.")
        if is_link(inputs[name]):
            raise InvalidInput(f"{where}: input {name!r} of {label} comes from another node, "
                               f"so it can't take the {param}.",
                               hint="Pick an input that holds a value of its own.")
        if not _fits(param, inputs[name]):
            kind = {str: "text", int: "a whole number", float: "a number"}[PARAM_TYPES[param]]
            raise InvalidInput(f"{where}: input {name!r} of {label} holds "
                               f"{inputs[name]!r}, but the {param} is {kind}.",
                               hint="Pick an input of that type.")
        targets.append(Target(node_id, name))
    return tuple(targets)


def template_from_graph(name: str, graph: dict, *, title: str = "") -> Template:
    """Wrap a custom uploaded graph as a Template using ``detect_inputs`` for the mapping."""
    return Template(name=name, graph=graph, mapping=detect_inputs(graph), title=title or name,
                    source=name)


# --------------------------------------------------------------------------- /object_info specs

def combo_options(spec: Any) -> list | None:
    """The allowed values of a COMBO input spec, or None if it isn't a COMBO.

    Handles both spellings: ``[[opt, ...], {...}]`` and V3 ``["COMBO", {"options": [...]}]``.

    >>> combo_options([["euler", "ddim"], {}])
    ['euler', 'ddim']
    >>> combo_options(["COMBO", {"options": ["x", "y"]}])
    ['x', 'y']
    >>> combo_options(["INT", {"min": 0}]) is None
    True
    """
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        options = spec[1].get("options") if len(spec) > 1 and isinstance(spec[1], dict) else None
        return list(options) if isinstance(options, list) else None
    return None
