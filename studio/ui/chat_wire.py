"""Values of the events that stream a reply (send, retry, edit, a turn's buttons), as
Gradio sends them to the page.

Those events are wired with ``postprocess=False`` (``ui/chat.py``): Gradio then sends
what they yield as it is. With postprocessing, every update ran each of the nine outputs'
``postprocess`` on a worker thread (a thread hop each) and rebuilt the whole chatbot's
messages: ~1.2 ms of the ~3 ms of server CPU an update cost (bench/profile_stream.py).
So what they yield must already be what postprocessing would have made of it: the
chatbot's rows through Gradio's own ``Chatbot.postprocess`` (here, once per row: the rows
before a streaming reply are shaped once per stream), the line under the chat through
``inspect.cleandoc`` as ``Markdown.postprocess`` does; the buttons' labels, the radios'
values, the browser state and the session pass through postprocessing unchanged, and a
``gr.update`` is handled by Gradio as before. gradio_client and the page get the same
values as before.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence

import gradio as gr


class ChatWire:
    """Shapes chatbot rows and the stats line the way Gradio's postprocessing does."""

    def __init__(self) -> None:
        # Not placed in any page: only its postprocess is used (it reads no settings).
        self._chatbot = gr.Chatbot(render=False)

    def rows(self, rows: list[dict]) -> list[dict]:
        """``chat_values.chatbot_value`` rows as the Chatbot's wire value."""
        return self._chatbot.postprocess(rows).model_dump()

    @staticmethod
    def text(value: str) -> str:
        """A Markdown component's value as its postprocess leaves it."""
        return inspect.cleandoc(value)


def preprocessed(fn: Callable, inputs: Sequence[gr.components.Component]) -> Callable:
    """``fn`` (a generator handler) for an event wired with ``preprocess=False``: its
    inputs' ``preprocess`` run here, one after the other in the handler's own thread, as
    Gradio would have run them (the value validated by the component's data model, then
    its ``preprocess``; a State passes as it is).

    Gradio preprocesses each input of an event in a thread hop of its own
    (``anyio.to_thread.run_sync``): eleven for /send. Twenty messages sent at once were
    220 hops interleaved on the event loop, and every send left preprocessing only when
    all twenty did (bench/profile_send.py: 55-240 ms after Gradio started them)."""
    shapers = [None if getattr(c, "stateful", False) else c for c in inputs]

    def shaped(component, value):
        if component is None:
            return value
        model = getattr(component, "data_model", None)
        if model is not None and value is not None:
            value = model.model_validate(value, context={"validate_meta": True})
        return component.preprocess(value)

    @functools.wraps(fn)
    def gen(*args, **kwargs):
        n = len(shapers)
        values = [shaped(c, v) for c, v in zip(shapers, args[:n])]
        yield from fn(*values, *args[n:], **kwargs)

    return gen
