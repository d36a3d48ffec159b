"""The Settings tab: the configuration in effect (secrets shown only as set / not set)."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ..config import Settings


def settings_rows(settings: Settings) -> list[list[str]]:
    """[variable, value, help] per setting; a secret's value is never included."""
    rows = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret"):
            shown = "set" if value else "not set"
        elif f.name == "comfyui_url":
            # ComfyUI has no sign-in: its address never reaches the page (issue 3).
            shown = "set (not shown: ComfyUI has no sign-in)"
        else:
            shown = str(value) if value not in ("", None) else "(empty)"
        if f.name == "data_dir":
            shown = str(settings.data_path)
        rows.append([f.metadata["env"], shown, f.metadata["help"]])
    return rows


def render(services) -> None:
    gr.Markdown("Settings come from environment variables or a `.env` file next to `app.py` "
                "(see `.env.example`). Change them there and restart the studio.")
    gr.Dataframe(value=settings_rows(services.settings), headers=["Variable", "Value", "What it does"],
                 interactive=False, wrap=True, elem_id="settings-table")
