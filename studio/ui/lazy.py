"""Tabs whose contents are built the first time a page opens them (issue 16, item 4).

Gradio's frontend fetches and runs the module of every component kind in the page's config
before the first paint, and every page's session keeps a copy of that config; a tab never
opened still cost both. ``LazyTab`` leaves the tab's contents out of the config: the first
select on a page flips the tab's ``opened`` state (``opening``, from the one event of the
tab strip, ``ui/app.py``), and a ``@gr.render`` on that change builds the contents for that
page only. The state changes once per page, so opening the tab again never rebuilds it (nor
loses what was typed in it).

What a render creates lives in the page's session, not in ``demo.fns``, so the role check
and concurrency policy ``ui/app.py`` gives the app's events at build time would miss it:
``policy`` is called with every event function the render made, before the render returns
(so before the page can call any of them). Two more rules follow from how Gradio 6's
frontend merges a render's events: a rendered event must not listen to a trigger outside
the render that other events already listen to (the page keeps only the rendered ones for
that trigger), which is why no event outside a lazy tab listens to its ``gr.Tab``'s select:
that trigger is left to the tab's own events for "opened again" (the tab strip's select
opens it). The page's load is the exception (``arrived``): its events are fired from each
one's own list, so a render's events may listen to it (it fires as the render arrives).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Callable, Iterable

import gradio as gr
from gradio.block_function import BlockFunction
from gradio.context import LocalContext

# The lazy tab whose contents are being built (``common.tab_opened`` reads it).
building: ContextVar["LazyTab | None"] = ContextVar("studio_lazy_tab", default=None)

Policy = Callable[[Iterable[BlockFunction]], None]


class LazyTab:
    """``gr.Tab(label, id=tab_id)`` whose contents ``build()`` makes on the page's first
    opening of it; ``policy`` is applied to the event functions ``build`` created. Use inside
    ``gr.Tabs``, whose select sets ``opened`` (``opening``). ``tab`` is the ``gr.Tab``;
    ``opened`` its per-page state (one block: each block in the page's config costs its
    load ~0.5 ms, issue 16 item 4)."""

    def __init__(self, label: str, tab_id: str, build: Callable[[], object], policy: Policy):
        self.build, self.policy = build, policy
        # Placed outside the tab (``place``): Gradio's frontend fires the change of a
        # component not drawn yet whenever an event's output reaches it with a value other
        # than its own, and every event sends its ``State`` outputs as null; inside the tab,
        # the first switch of tabs built every tab. A drawn ``State`` fires its change
        # only for a value the server changed.
        self.opened = gr.State(False, render=False)
        with gr.Tab(label, id=tab_id) as self.tab:

            @gr.render(triggers=[self.opened.change], concurrency_limit=None,
                       concurrency_id=f"tab-{tab_id}", show_progress="hidden")
            def contents():
                self._build()

    def _build(self) -> None:
        token = building.set(self)
        try:
            self.build()
        finally:
            building.reset(token)
        finish_render(self.policy)

    def opened_again(self) -> list:
        """Triggers of the tab's loading events inside ``build``: the render's arrival in
        the page (the first opening) and every later opening (the tab's own select, which
        no event outside the tab listens to)."""
        return [arrived(), self.tab.select]


def place(tabs: Iterable[LazyTab]) -> None:
    """Put the tabs' ``opened`` states in the current Blocks context, outside the tab strip
    (the page's top level)."""
    for tab in tabs:
        tab.opened.render()


def opening(tabs: Iterable[LazyTab], shown: str) -> list:
    """The ``opened`` states' new values as the tab labelled ``shown`` is selected: it is
    opened (a change only the first time, which builds it), the others are left alone.

    For the tab strip's select event, which must go through the queue: Gradio's frontend
    fires a state's change events only after a queued event (with ``queue=False`` the tab
    was never built)."""
    return [True if tab.tab.label == shown else gr.skip() for tab in tabs]


def arrived():
    """Inside a render's function: the trigger of its events that fires as the render
    arrives in the page (the page's load, which Gradio's frontend fires then for them)."""
    config = LocalContext.blocks_config.get(None)
    root = config.root_block if config is not None else gr.context.Context.root_block
    return root.load


def finish_render(policy: Policy) -> None:
    """At the end of a ``gr.render``'s function (a lazy tab's, the Chat tab's later parts):
    ``policy`` applied to the event functions it made, before the page can call any of
    them, and their components' interactivity settled."""
    renderable = LocalContext.renderable.get(None)
    config = LocalContext.blocks_config.get(None)
    if renderable is not None and config is not None:
        made = [fn for fn in config.fns.values() if fn.rendered_in is renderable]
        policy(made)
        settle_interactivity(config, renderable)


def settle_interactivity(config, renderable) -> None:
    """Say whether each component the render made takes input, when it didn't say itself.

    Gradio's frontend decides that for a component without ``interactive`` from the events
    it knew when the page opened (an input of one: yes; else an output of one: no; else
    yes when it is empty), and does not look again at a render's events: every field of a
    lazy tab with a value came up disabled, and every empty output table editable. The
    same rule, here, over the events the page has now.
    """
    inputs, outputs = set(), set()
    for fn in config.fns.values():
        inputs.update(block._id for block in fn.inputs)
        outputs.update(block._id for block in fn.outputs)
    for block in config.blocks.values():
        if (getattr(block, "rendered_in", None) is renderable
                and getattr(block, "interactive", False) is None):
            block.interactive = block._id in inputs or (
                block._id not in outputs and is_empty(getattr(block, "value", None)))


def is_empty(value) -> bool:
    """The frontend's "empty" (an empty list or string, 0, None, False)."""
    if value is None or isinstance(value, (list, str, int, float, bool)):
        return not value
    return False  # a table, a dict, a file...: a value
