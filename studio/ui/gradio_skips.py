"""``gr.skip()`` without Gradio rebuilding the component it skips (issue 16, item 3).

Gradio 6 treats every update dict returned for an output the same way, the empty one that
``gr.skip()`` returns included: it constructs the component again from its arguments
(``inspect.signature`` of its class each time), then computes its config twice, each with
its API schema three times. For a Dropdown that is ~2 ms of the one interpreter, for an
output that does not change. The studio's events skip outputs often: the status tick skips
the model picker whenever the model list is unchanged (every tick of every page), and a
queued or refused message skips most of the send event's outputs.

``install`` wraps one ``Blocks``' ``postprocess_data``: an exact ``gr.skip()`` for a
component (not a ``gr.State``: Gradio handles those without rebuilding anything) is kept
out of Gradio's processing and put back into the output as the same empty update, so the
page receives exactly what it did. Only multi-output events are touched (a single output
is the function's whole return value), and only when ``postprocess_data`` has the shape
this was written for; otherwise Gradio's own runs, unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import gradio as gr
from gradio.components import _Keywords

log = logging.getLogger(__name__)

SKIP = gr.skip()


def install(blocks: gr.Blocks) -> bool:
    """Wrap ``blocks.postprocess_data``; False (nothing changed) when it is not the shape
    this module relies on."""
    if getattr(blocks, "_studio_skips", False):
        return True
    original = blocks.postprocess_data
    params = list(inspect.signature(original).parameters)
    if params[:3] != ["block_fn", "predictions", "state"] or not hasattr(
            _Keywords, "FINISHED_ITERATING"):
        log.warning("Gradio's postprocess_data has changed shape; skips rebuild components.")
        return False

    @functools.wraps(original)
    async def postprocess_data(block_fn, predictions, state, *args, **kwargs):
        skipped = _skipped(block_fn, predictions)
        if skipped:
            predictions = [_Keywords.FINISHED_ITERATING if i in skipped else p
                           for i, p in enumerate(predictions)]
        output = await original(block_fn, predictions, state, *args, **kwargs)
        if skipped and isinstance(output, list):
            for i in skipped:
                output[i] = dict(SKIP)
        return output

    blocks.postprocess_data = postprocess_data
    blocks._studio_skips = True
    return True


def _skipped(block_fn, predictions: Any) -> set[int]:
    """The positions of exact ``gr.skip()`` values for components that hold no state."""
    outputs = getattr(block_fn, "outputs", None) or []
    if (len(outputs) < 2 or not isinstance(predictions, (list, tuple))
            or len(predictions) != len(outputs) or getattr(block_fn, "batch", False)):
        return set()
    return {i for i, (value, block) in enumerate(zip(predictions, outputs))
            if isinstance(value, dict) and value == SKIP and not getattr(block, "stateful", False)}
