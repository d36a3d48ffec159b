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
    presets = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StudioError(f"Preset {path} is not valid JSON: {exc}.") from exc
        presets.append(parse_preset(path.stem, data, str(path)))
    return sorted(presets, key=lambda p: p.name.lower())


def apply_preset(defaults: dict, preset: ChatPreset | None) -> dict:
    """Defaults overlaid with the preset's parameters (a new dict).

    >>> apply_preset({"temperature": 0.8, "top_p": 0.9}, ChatPreset("c", "C", params={"temperature": 0.2}))
    {'temperature': 0.2, 'top_p': 0.9}
    """
    merged = dict(defaults)
    if preset is not None:
        merged.update(preset.params)
    return merged
