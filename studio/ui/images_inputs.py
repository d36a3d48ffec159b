"""The Images tab's input mapping: for an uploaded workflow, which node input its prompt,
negative prompt, seed, size and steps fill, picked from lists instead of written by hand
in a ``.params.json``. Shown under "Custom workflow" while an upload is chosen.

Components and their values only; saving is ``WorkflowLibrary.map_inputs`` (its checks and
its file), called by the tab's ``on_map_inputs`` (studio/ui/images.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..images.workflows import MAPPABLE, Template, input_choices
from .images_values import md_literal

LABELS = {"prompt": "Prompt", "negative": "Negative prompt", "seed": "Seed", "width": "Width",
          "height": "Height", "steps": "Steps"}
NONE = ("(none)", "")


def mapping_choices(template: Template, param: str) -> tuple[list[tuple[str, str]], str]:
    """(choices, value) of one parameter's list: "(none)", then each node input of the
    right type; the value is what the workflow fills now ("6.text_g,6.text_l" when the
    studio found several, offered as one choice)."""
    choices = [NONE, *input_choices(template.graph, param)]
    current = ",".join(str(t) for t in template.mapping.get(param, ()))
    if current and current not in {value for _, value in choices}:
        choices.append((f"{current.replace(',', ' + ')} (as found)", current))
    return choices, current


def mapping_note(template: Template) -> str:
    """Markdown above the lists: what they are for, and what the workflow can't vary."""
    lacks = [LABELS[p].lower() for p in ("prompt", "seed") if p not in template.params]
    warning = (f" It has no {' or '.join(lacks)} input yet, so a batch would repeat one "
               "image." if lacks else "")
    return (f"**Inputs of {md_literal(template.title)}**: the node input each fills."
            f"{warning}")


def render() -> SimpleNamespace:
    """Build the (hidden) mapping panel inside the current Blocks context. ``panel(t)``
    gives its updates for a workflow (``None``: hide it), by component."""
    with gr.Group(visible=False, elem_id="img-map") as group:
        note = gr.Markdown("", elem_id="img-map-info")
        dropdowns = {}
        for row in (MAPPABLE[:3], MAPPABLE[3:]):
            with gr.Row():
                for param in row:
                    dropdowns[param] = gr.Dropdown(label=LABELS[param], choices=[NONE], value="",
                                                   elem_id=f"img-map-{param}")
        save_btn = gr.Button("Save inputs", size="sm", elem_id="img-map-save")

    def panel(template: Template | None) -> dict:
        if template is None:
            return {group: gr.update(visible=False)}
        updates = {group: gr.update(visible=True), note: mapping_note(template)}
        for param, dropdown in dropdowns.items():
            choices, value = mapping_choices(template, param)
            updates[dropdown] = gr.update(choices=choices, value=value)
        return updates

    return SimpleNamespace(group=group, note=note, dropdowns=dropdowns, save_btn=save_btn,
                           panel=panel, outputs=[group, note, *dropdowns.values()])
