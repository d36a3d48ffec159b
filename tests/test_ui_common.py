"""studio/ui/common.py: how a handler's failure reaches the page and the server log."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from studio.errors import InvalidInput
from studio.ui.common import UNEXPECTED, ui_errors

REFUSED = "llama3.2 can't read images. Pick a vision model such as llava, or remove the image."


@ui_errors
def on_refused():
    raise InvalidInput(REFUSED)


@ui_errors
def on_bug():
    return 1 / 0


@ui_errors
def on_refused_while_streaming():
    yield "started"
    raise InvalidInput(REFUSED)


def failure(handler) -> gr.Error:
    with pytest.raises(gr.Error) as raised:
        result = handler()
        if hasattr(result, "__next__"):
            list(result)
    return raised.value


@pytest.mark.parametrize("handler", [on_refused, on_refused_while_streaming])
def test_ui_errors_refusal_logs_one_line_without_traceback(handler, caplog):
    caplog.set_level(logging.DEBUG, logger="studio")
    shown = failure(handler)
    assert shown.message == REFUSED
    records = [r for r in caplog.records if r.name.startswith("studio")]
    assert len(records) == 1
    assert records[0].levelno <= logging.WARNING and REFUSED in records[0].getMessage()
    assert records[0].exc_info is None and "Traceback" not in caplog.text
    # Gradio prints every gr.Error's traceback to the console unless told not to.
    assert shown.print_exception is False


def test_ui_errors_bug_logs_its_traceback_and_shows_a_pointer(caplog):
    caplog.set_level(logging.DEBUG, logger="studio")
    shown = failure(on_bug)
    assert shown.message == UNEXPECTED.format(name="ZeroDivisionError")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "Traceback" in caplog.text and "ZeroDivisionError: division by zero" in caplog.text
