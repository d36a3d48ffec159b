"""Chat presets from presets/chat/*.json: a system prompt plus sparse parameter overrides.

A preset file holds only what differs from the defaults, e.g.
``{"name": "Coder", "system_prompt": "...", "temperature": 0.2}``.
Loading reads files; everything else is pure. No gradio imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StudioError

PARAM_KEYS = {"temperature": float, "top_p": float, "num_ctx": int, "seed": int, "max_tokens": int}


@dataclass(frozen=True)
class ChatPreset:
    key: str
    name: str
    system_prompt: str = ""
    params: dict = field(default_factory=dict)
    description: str = ""


def parse_preset(key: str, data: dict, source: str = "") -> ChatPreset:
    """Validate one preset dict; raises StudioError naming the file and the bad key."""
    where = source or key
    if not isinstance(data, dict):
        raise StudioError(f"Preset {where} must be a JSON object.")
    unknown = set(data) - {"name", "system_prompt", "description"} - set(PARAM_KEYS)
    if unknown:
        raise StudioError(f"Preset {where} has unknown keys: {', '.join(sorted(unknown))}.",
                          hint=f"Allowed: name, system_prompt, description, {', '.join(PARAM_KEYS)}.")
    params = {}
    for name, kind in PARAM_KEYS.items():
        if name in data:
            try:
                params[name] = kind(data[name])
            except (TypeError, ValueError):
                raise StudioError(f"Preset {where}: {name} must be a {kind.__name__}.") from None
    return ChatPreset(key=key, name=str(data.get("name") or key),
                      system_prompt=str(data.get("system_prompt") or ""),
                      params=params, description=str(data.get("description") or ""))


def load_chat_presets(directory: str | Path) -> list[ChatPreset]:
    """Every preset in ``directory`` (sorted by name). A broken file raises StudioError."""
    return _load_dir(directory, parse_preset, "Preset")


def apply_preset(defaults: dict, preset: ChatPreset | None) -> dict:
    """Defaults overlaid with the preset's parameters (a new dict).

    >>> apply_preset({"temperature": 0.8, "top_p": 0.9}, ChatPreset("c", "C", params={"temperature": 0.2}))
    {'temperature': 0.2, 'top_p': 0.9}
    """
    merged = dict(defaults)
    if preset is not None:
        merged.update(preset.params)
    return merged


# Image style presets (presets/styles/*.json), used by the Images tab.
#
# A style is ``{"name": "Cinematic", "prompt": "cinematic still of {prompt}, ...",
# "negative": "cartoon, ..."}``: ``prompt`` is a template where ``{prompt}`` stands for
# what the person typed (without the placeholder it is appended as a suffix), and
# ``negative`` is added to their negative prompt.

STYLE_KEYS = {"name", "prompt", "negative", "description"}


@dataclass(frozen=True)
class StylePreset:
    key: str
    name: str
    prompt: str = ""
    negative: str = ""
    description: str = ""


def parse_style(key: str, data: dict, source: str = "") -> StylePreset:
    """Validate one style dict; raises StudioError naming the file and the bad key."""
    where = source or key
    if not isinstance(data, dict):
        raise StudioError(f"Style {where} must be a JSON object.")
    unknown = set(data) - STYLE_KEYS
    if unknown:
        raise StudioError(f"Style {where} has unknown keys: {', '.join(sorted(unknown))}.",
                          hint=f"Allowed: {', '.join(sorted(STYLE_KEYS))}.")
    for name in STYLE_KEYS & set(data):
        if not isinstance(data[name], str):
            raise StudioError(f"Style {where}: {name} must be text.")
    template = data.get("prompt", "")
    if template.count("{prompt}") > 1 or "{" in template.replace("{prompt}", ""):
        raise StudioError(f"Style {where}: prompt may hold \"{{prompt}}\" once and no other "
                          "braces.")
    return StylePreset(key=key, name=data.get("name") or key, prompt=template,
                       negative=data.get("negative", ""), description=data.get("description", ""))


def load_style_presets(directory: str | Path) -> list[StylePreset]:
    """Every style in ``directory`` (sorted by name). A broken file raises StudioError."""
    return _load_dir(directory, parse_style, "Style")


def _load_dir(directory: str | Path, parse, kind: str) -> list:
    """Parse every ``*.json`` in ``directory`` with ``parse(key, data, source)``, by name."""
    items = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StudioError(f"{kind} {path} is not valid JSON: {exc}.") from exc
        items.append(parse(path.stem, data, str(path)))
    return sorted(items, key=lambda item: item.name.lower())


def apply_style(style: StylePreset | None, prompt: str, negative: str = "") -> tuple[str, str]:
    """The prompt and negative prompt with ``style`` applied (unchanged for None).

    >>> apply_style(StylePreset("p", "Photo", "{prompt}, 35mm photo", "cartoon"), "a fox", "blurry")
    ('a fox, 35mm photo', 'blurry, cartoon')
    >>> apply_style(StylePreset("a", "Anime", "anime style"), "a fox")
    ('a fox, anime style', '')
    """
    if style is None:
        return prompt, negative
    prompt = prompt.strip()
    if "{prompt}" in style.prompt:
        styled = style.prompt.replace("{prompt}", prompt)
    else:
        styled = ", ".join(part for part in (prompt, style.prompt.strip()) if part)
    negatives = ", ".join(part for part in (negative.strip(), style.negative.strip()) if part)
    return styled, negatives
