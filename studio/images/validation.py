"""Checks of a rendered graph against what one ComfyUI server offers (its ``/object_info``).

``validate`` is pure: a graph and a node catalogue in, sentences out. ``server_problems``
asks for the catalogue through a callable (``ComfyUIClient.object_info``) and asks again,
fresh, when something looks wrong, because a model added since the catalogue was cached
would show up as a problem. The client only fetches ``/object_info``; the judging is here.
No gradio imports here.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import BackendRejected, BackendUnavailable
from .workflows import combo_options, is_link, node_order

# Friendly names for the COMBO inputs people most often get wrong.
_COMBO_NOUNS = {"ckpt_name": ("checkpoint", "models/checkpoints"),
                "lora_name": ("LoRA", "models/loras"),
                "control_net_name": ("ControlNet model", "models/controlnet"),
                "vae_name": ("VAE", "models/vae"),
                "unet_name": ("diffusion model", "models/diffusion_models"),
                "sampler_name": ("sampler", ""), "scheduler": ("scheduler", "")}


def _node_label(node_id: str, node: Mapping[str, Any]) -> str:
    title = (node.get("_meta") or {}).get("title")
    class_type = node.get("class_type", "?")
    if title and title != class_type:
        return f"Node {node_id} ({class_type} \"{title}\")"
    return f"Node {node_id} ({class_type})"


def validate(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Check a graph against ComfyUI's ``/object_info`` before queueing it.

    Returns a list of sentences, empty when nothing is wrong: unknown node classes,
    missing required inputs, links to missing nodes, COMBO values (checkpoint, LoRA,
    sampler...) not offered by the server, numbers outside min/max, latent width/height
    not a multiple of 8, steps below 1, and a graph without any output node.
    """
    problems: list[str] = []
    has_output = False
    for node_id in sorted(graph, key=node_order):
        node = graph[node_id]
        class_type = node.get("class_type")
        label = _node_label(node_id, node)
        info = object_info.get(class_type) if class_type else None
        if info is None:
            problems.append(f"{label} uses a node type this ComfyUI doesn't have. Install the "
                            f"custom node that provides it, or remove the node.")
            continue
        has_output = has_output or bool(info.get("output_node"))
        spec_inputs = info.get("input", {})
        required = spec_inputs.get("required", {}) or {}
        optional = spec_inputs.get("optional", {}) or {}
        inputs = node.get("inputs", {})
        for name in required:
            if name not in inputs:
                problems.append(f"{label} is missing its required input {name!r}.")
        produces_latent = "LATENT" in (info.get("output") or [])
        for name, value in inputs.items():
            spec = required.get(name, optional.get(name))
            if is_link(value):
                if value[0] not in graph:
                    problems.append(f"{label}: input {name!r} is linked to node {value[0]}, "
                                    f"which isn't in the workflow.")
                continue
            if spec is None:
                continue
            problems.extend(_check_value(label, name, value, spec, produces_latent))
    if graph and not has_output:
        problems.append("The workflow has no output node (such as SaveImage or PreviewImage), "
                        "so ComfyUI would refuse it. Add one.")
    return problems


def server_problems(graph: Mapping[str, Any],
                    object_info: Callable[..., Mapping[str, Any]]) -> list[str]:
    """``validate`` against a server's node catalogue, fetched fresh once on doubt.

    ``object_info(refresh=False)`` returns ``/object_info`` (``ComfyUIClient.object_info``
    fits). Returns the problems as sentences, empty when the graph can run. Raises what
    ``object_info`` raises (BackendUnavailable, BackendRejected).
    """
    found = validate(graph, object_info())
    if found:  # a model added since the cache was filled would show up as a problem
        found = validate(graph, object_info(refresh=True))
    return found


def _check_value(label: str, name: str, value: Any, spec: list, produces_latent: bool) -> list[str]:
    options = combo_options(spec)
    config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options is not None:
        # LoadImage's list is a snapshot of the input folder; a fresh upload isn't in it yet.
        if config.get("image_upload") or value in options:
            return []
        noun, folder = _COMBO_NOUNS.get(name, (name, ""))
        if not options:
            where = f" Put one in ComfyUI's {folder} folder." if folder else ""
            return [f"{label}: {noun} {value!r} isn't available; ComfyUI lists none.{where}"]
        shown = ", ".join(map(str, options[:12])) + (" …" if len(options) > 12 else "")
        return [f"{label}: {noun} {value!r} isn't available. ComfyUI has: {shown}."]
    kind = spec[0] if spec else None
    if kind not in ("INT", "FLOAT"):
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [f"{label}: {name} must be a number (got {value!r})."]
    problems = []
    if name == "steps" and value <= 0:
        return [f"{label}: steps must be at least 1 (got {value})."]
    low, high = config.get("min"), config.get("max")
    if low is not None and value < low:
        problems.append(f"{label}: {name} is {value}, below the minimum of {low}.")
    if high is not None and value > high:
        problems.append(f"{label}: {name} is {value}, above the maximum of {high}.")
    step = config.get("step")
    if (name in ("width", "height") and (produces_latent or (isinstance(step, int) and step % 8 == 0))
            and isinstance(value, int) and value % 8):
        problems.append(f"{label}: {name} {value} isn't a multiple of 8; try "
                        f"{max(8, round(value / 8) * 8)}.")
    return problems


def offered(client, public: Callable[[str], str], *, refresh: bool = False) -> dict[str, list[str]]:
    """Checkpoints, LoRAs, samplers and schedulers ComfyUI offers.

    The node catalog (/object_info, large) is cached unless ``refresh``; the model
    folders are read each time (/models/..., or the catalog's lists on a ComfyUI too old
    to have that route). Raises BackendUnavailable (address scrubbed, with how to start
    ComfyUI) or BackendRejected, each passed through ``public`` (the address scrubbed).
    """
    from .runner import COMFYUI_PLACE, START_COMFYUI

    try:
        info = client.object_info(refresh=refresh)
        lists = {}
        for folder, (node, name) in (("checkpoints", ("CheckpointLoaderSimple", "ckpt_name")),
                                     ("loras", ("LoraLoader", "lora_name"))):
            try:
                lists[folder] = client.models(folder)
            except BackendRejected:
                spec = (info.get(node) or {}).get("input", {}).get("required", {}).get(name)
                lists[folder] = combo_options(spec) or []
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"ComfyUI isn't reachable at {COMFYUI_PLACE}.",
                                 hint=START_COMFYUI) from exc
    except BackendRejected as exc:
        raise BackendRejected(public(str(exc))) from exc
    sampler = (info.get("KSampler") or {}).get("input", {}).get("required", {})
    lists["samplers"] = combo_options(sampler.get("sampler_name")) or []
    lists["schedulers"] = combo_options(sampler.get("scheduler")) or []
    return lists
