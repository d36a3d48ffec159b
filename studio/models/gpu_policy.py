"""Pure GPU-sharing policy: who gives way when Ollama and ComfyUI want the same card.

Given figures the caller already has (free VRAM from ``gpu.py``, loaded models from
Ollama's ``/api/ps``, whether ComfyUI holds models), these functions return a
``Decision``: do nothing, ask the person, or free memory (unload idle Ollama models, or
ask ComfyUI to free its models). They never talk to a backend themselves.
No I/O, no gradio.

Policies: ``"off"`` never frees anything, ``"ask"`` proposes and lets the person
confirm, ``"automatic"`` frees without asking. A busy model is never unloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

from ..errors import InvalidInput

GiB = 2**30
MiB = 2**20
POLICIES = ("off", "ask", "automatic")

# Rough peak VRAM of one ComfyUI job at the usual sizes (model weights, text encoders,
# VAE decode), rounded up; settings can override any of them.
DEFAULT_VRAM_BY_FAMILY: dict[str, int] = {
    "sd15": 4 * GiB,
    "sd2": 5 * GiB,
    "sdxl": 8 * GiB,
    "sd3": 10 * GiB,
    "flux": 12 * GiB,
    "default": 8 * GiB,
}
_FAMILY_ALIASES = {
    "sd1": "sd15", "sd15": "sd15", "sd1x": "sd15", "sd": "sd15",
    "sd2": "sd2", "sd20": "sd2", "sd21": "sd2", "sd2x": "sd2",
    "sdxl": "sdxl", "xl": "sdxl", "pony": "sdxl", "illustrious": "sdxl",
    "sd3": "sd3", "sd35": "sd3",
    "flux": "flux", "flux1": "flux",
}
# Ollama needs more than the model file: KV cache and compute buffers.
CHAT_HEADROOM_BYTES = 1 * GiB


class LoadedModel(NamedTuple):
    """An Ollama model in memory (from ``/api/ps``); plain (name, size_vram, busy) tuples
    work too."""

    name: str
    size_vram: int
    busy: bool


@dataclass(frozen=True)
class Decision:
    """What to do before a job. ``reason`` is a sentence for the person at the screen
    (for ``"ask"`` it reads as the question to confirm)."""

    action: str
    models_to_unload: tuple[str, ...] = ()
    reason: str = ""
    frees_bytes: int = 0


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"Unknown GPU sharing policy {policy!r}.",
                           hint="Use one of: off, ask, automatic.")
    return policy


def decide_before_image_job(free_vram_bytes: int | None, needed_bytes: int, policy: str,
                            loaded_ollama_models: Iterable[tuple[str, int, bool]]) -> Decision:
    """Decide whether to unload Ollama models before a ComfyUI job.

    Picks idle models, largest first, until the job fits; busy models are never chosen.
    If unloading every idle model still leaves the job short, they are all proposed
    (ComfyUI then offloads the rest to system RAM, slower but working).
    ``free_vram_bytes`` None means no GPU readings: nothing is done.
    Returns action ``"none"``, ``"ask"`` or ``"unload"``; raises InvalidInput for an
    unknown policy.
    """
    _check_policy(policy)
    if free_vram_bytes is None:
        return Decision("none", reason="GPU readings are off, so free memory can't be checked; "
                                       "the image job starts as it is.")
    if free_vram_bytes >= needed_bytes:
        return Decision("none", reason=f"The image job fits: it needs about {_gib(needed_bytes)} "
                                       f"and {_gib(free_vram_bytes)} is free.")
    short = (f"needs about {_gib(needed_bytes)} of GPU memory and only "
             f"{_gib(free_vram_bytes)} is free")
    models = [LoadedModel(*m) for m in loaded_ollama_models]
    if policy == "off":
        return Decision("none", reason=f"The image job {short}. GPU sharing is off, so Ollama "
                                       "keeps its models; the job may run slowly or run out of "
                                       "memory.")
    idle = sorted((m for m in models if not m.busy and m.size_vram > 0),
                  key=lambda m: (-m.size_vram, m.name))
    if not idle:
        busy = [m.name for m in models if m.busy]
        why = (f"Ollama is busy with {', '.join(busy)}" if busy
               else "Ollama has no models on the GPU to unload")
        return Decision("none", reason=f"The image job {short}. {why}, so nothing is freed; "
                                       "the job may run slowly or run out of memory.")
    chosen: list[LoadedModel] = []
    freed = 0
    for model in idle:
        if free_vram_bytes + freed >= needed_bytes:
            break
        chosen.append(model)
        freed += model.size_vram
    names = tuple(m.name for m in chosen)
    listing = ", ".join(f"{m.name} ({_gib(m.size_vram)})" for m in chosen)
    still_short = needed_bytes - free_vram_bytes - freed
    tail = ("" if still_short <= 0 else
            f" Even then it is {_gib(still_short)} short; ComfyUI will use system RAM for the rest "
            "(slower).")
    if policy == "ask":
        return Decision("ask", names, f"The image job {short}. Unload {listing} from Ollama to "
                                      f"make room?{tail}", freed)
    return Decision("unload", names, f"The image job {short}; unloading {listing} from Ollama."
                                     f"{tail}", freed)


def decide_before_chat(model_size_bytes: int, free_vram_bytes: int | None, policy: str,
                       comfyui_has_models_loaded: bool, *, model_loaded: bool = False,
                       headroom_bytes: int = CHAT_HEADROOM_BYTES) -> Decision:
    """Decide whether to ask ComfyUI to free its models before loading an Ollama model.

    The model needs ``model_size_bytes`` plus ``headroom_bytes`` (KV cache). A model
    that is already loaded, or no GPU readings (``free_vram_bytes`` None), needs nothing.
    Returns action ``"none"``, ``"ask"`` or ``"free_comfyui"``; raises InvalidInput for
    an unknown policy.
    """
    _check_policy(policy)
    if model_loaded:
        return Decision("none", reason="The model is already loaded.")
    if free_vram_bytes is None:
        return Decision("none", reason="GPU readings are off, so free memory can't be checked; "
                                       "the chat starts as it is.")
    needed = model_size_bytes + headroom_bytes
    if free_vram_bytes >= needed:
        return Decision("none", reason=f"The model fits: it needs about {_gib(needed)} and "
                                       f"{_gib(free_vram_bytes)} is free.")
    short = (f"The model needs about {_gib(needed)} of GPU memory and only "
             f"{_gib(free_vram_bytes)} is free")
    if not comfyui_has_models_loaded:
        return Decision("none", reason=f"{short}. ComfyUI holds nothing to free, so Ollama will "
                                       "run part of the model on the CPU (slower).")
    if policy == "off":
        return Decision("none", reason=f"{short}. GPU sharing is off, so ComfyUI keeps its models "
                                       "and Ollama will run part of the model on the CPU (slower).")
    if policy == "ask":
        return Decision("ask", reason=f"{short}. Ask ComfyUI to free its models (the next image "
                                      "job loads them again)?")
    return Decision("free_comfyui", reason=f"{short}; asking ComfyUI to free its models.")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)((?:i?B)?)\s*$", re.IGNORECASE)
_UNIT = {"": GiB, "K": 2**10, "M": MiB, "G": GiB, "T": 2**40}


def _parse_size(family: str, value: object) -> int:
    """Override values: a number of GiB (``10``, ``6.5``) or a size string (``"9500 MiB"``)."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, (int, float)):
        size = float(value) * GiB
    else:
        match = _SIZE.match(str(value))
        if match is None:
            size = -1.0
        else:
            number, prefix, suffix = match.groups()
            if not prefix and suffix:  # a bare "B" means bytes
                size = float(number)
            else:
                size = float(number) * _UNIT[prefix.upper()]
    if not size > 0:
        raise InvalidInput(f"The VRAM estimate for image family {family!r} is not a size: "
                           f"{value!r}.",
                           hint="Write a number of GiB like 10, or a size like '9500 MiB'.")
    return int(size)


def _squash(name: str) -> str:
    return re.sub(r"[\s._-]+", "", (name or "").lower())


def normalise_family(family: str) -> str:
    """Map a family name as people write it to a key of ``DEFAULT_VRAM_BY_FAMILY``.

    >>> normalise_family("SD 1.5"), normalise_family("SDXL-Turbo"), normalise_family("Flux.1 dev")
    ('sd15', 'sdxl', 'flux')
    >>> normalise_family("hunyuan")
    'default'
    """
    key = _squash(family)
    if key in _FAMILY_ALIASES:
        return _FAMILY_ALIASES[key]
    for alias in sorted(_FAMILY_ALIASES, key=len, reverse=True):
        if len(alias) > 2 and key.startswith(alias):
            return _FAMILY_ALIASES[alias]
    return "default"


def needed_vram_for_family(family: str, settings_overrides: Mapping[str, object] | None = None
                           ) -> int:
    """Bytes of GPU memory to plan for one image job of ``family`` (sd15, sdxl, flux...).

    ``settings_overrides`` maps family names (any spelling ``normalise_family`` knows, or
    ``"default"``) to a number of GiB or a size string. Unknown families use the
    ``"default"`` figure (8 GiB unless overridden). Raises InvalidInput for an override
    that is not a positive size.
    """
    overrides = settings_overrides or {}
    # An exact name wins ("hunyuan" for a family we have no default for), then any
    # spelling of the same known family, then the default figure.
    for name, value in overrides.items():
        if _squash(name) == _squash(family):
            return _parse_size(name, value)
    key = normalise_family(family)
    for name, value in overrides.items():
        if _squash(name) in DEFAULT_VRAM_BY_FAMILY or _squash(name) in _FAMILY_ALIASES:
            if normalise_family(name) == key:
                return _parse_size(name, value)
    return DEFAULT_VRAM_BY_FAMILY[key]
