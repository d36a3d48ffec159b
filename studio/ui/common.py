"""Small helpers shared by the tab modules: turning StudioErrors into Gradio alerts."""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ..errors import StudioError

log = logging.getLogger(__name__)

UNEXPECTED = "Something unexpected failed ({name}). The studio log has the details."


def ui_errors(fn):
    """Show StudioError messages as gr.Error; log anything else and show a short pointer."""

    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, StudioError):
            return gr.Error(str(exc))
        log.exception("handler %s failed", fn.__name__)
        return gr.Error(UNEXPECTED.format(name=type(exc).__name__))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise convert(exc) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise convert(exc) from exc
    return wrapper
