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

import inspect

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
