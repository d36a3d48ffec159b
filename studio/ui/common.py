"""Small helpers shared by the tab modules: turning StudioErrors into Gradio alerts, who is
calling, which page a follower writes into, and combining component updates."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import uuid
from typing import Callable

import gradio as gr
from gradio.context import Context

from ..costs.accounting import OWNER  # the user of every page while there is no sign-in
from ..errors import StudioError
from .lazy import building

log = logging.getLogger(__name__)

UNEXPECTED = "Something unexpected failed ({name}). The studio log has the details."


def ui_errors(fn=None, *, scrub: Callable[[str], str] | None = None):
    """Show StudioError messages as gr.Error, logged as one line without a traceback; log
    anything else with its traceback and show a short pointer to the log.

    ``scrub`` rewrites each StudioError message first (the Images tab cuts ComfyUI's address
    out of them): ``@ui_errors(scrub=...)``.
    """
    if fn is None:
        return functools.partial(ui_errors, scrub=scrub)

    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, StudioError):
            return refusal(scrub(str(exc)) if scrub is not None else str(exc), fn.__name__)
        log.exception("handler %s failed", fn.__name__)
        # Already logged with its traceback just above: Gradio needn't print it again.
        return gr.Error(UNEXPECTED.format(name=type(exc).__name__), print_exception=False)

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


def refusal(message: str, where: str = "") -> gr.Error:
    """An expected refusal (a StudioError's sentence, a page's own check) as gr.Error, logged
    as one line. Gradio prints a full traceback for every gr.Error unless told not to, which
    buried the log's real bugs under "this model reads no images"."""
    log.info("refused%s: %s", f" in {where}" if where else "", message)
    return gr.Error(message, print_exception=False)


def page_user(request: gr.Request | None) -> str:
    """Who is calling: the signed-in name, or the owner when there is no sign-in."""
    return user_of(request)[0]


def user_of(request: gr.Request | None) -> tuple[str, str]:
    """(user, fairness lane): the login name; without sign-in, the owner and the browser's
    address (so two people on one studio still take turns for the GPU)."""
    name = getattr(request, "username", None) if request is not None else None
    if name:
        return name, name
    host = getattr(getattr(request, "client", None), "host", None) if request is not None else None
    return OWNER, f"addr:{host}" if host else OWNER


def unique(components: list) -> list:
    """The components once each, in order (an event's outputs may not repeat one)."""
    seen, result = set(), []
    for component in components:
        if id(component) not in seen:
            seen.add(id(component))
            result.append(component)
    return result


def merge_updates(updates: dict, more: dict) -> dict:
    """Add ``more`` to ``updates``; two gr.update()s for one component are combined."""
    for component, value in more.items():
        old = updates.get(component)
        if isinstance(old, dict) and isinstance(value, dict):
            value = {**old, **value}
        updates[component] = value
    return updates


class PageViews:
    """Which follower owns each page's view, per area (chat, images, models...).

    A handler that streams into a page first claims the page; when the same page starts
    another follower (opens another chat, another job), the older one sees it lost the
    claim and stops writing into the page, while its work goes on on the server.
    """

    def __init__(self, limit: int = 10_000):
        self._viewing: dict[str, str] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def claim(self, request: gr.Request | None) -> tuple[str, str] | None:
        """Claim the page that sent ``request``; None when there is no page (a test call)."""
        return self.claim_page(getattr(request, "session_hash", None) if request is not None
                               else None)

    def claim_page(self, session: str | None) -> tuple[str, str] | None:
        """Claim the page whose Gradio session hash is ``session``."""
        if not session:
            return None
        token = uuid.uuid4().hex
        with self._lock:
            if len(self._viewing) > self._limit:  # pages that closed long ago
                self._viewing.clear()
            self._viewing[session] = token
        return session, token

    def holds(self, view: tuple[str, str] | None) -> bool:
        """Whether ``view`` (from ``claim``) is still the page's latest claim."""
        with self._lock:
            return view is None or self._viewing.get(view[0]) == view[1]


LATER = "studio-later"  # the class assets/studio.js and studio.css know these blocks by


def drawn_later(elem_id: str, label: str) -> gr.Accordion:
    """A block whose contents the page draws a frame after its message box (issue 16,
    item 4), for the parts of the Chat tab that are not the conversation itself.

    Gradio's frontend builds every shown component before the first paint, and the page is
    usable only after the last one. A closed ``gr.Accordion`` builds its contents only when
    opened, and that is all this is: ``assets/studio.js`` opens every such block once the
    message box is on screen, and ``studio.css`` lays it out as if it were not there (no
    heading, no frame: ``display: contents``). The components stay in the page's config, so
    their values, events and API are the same as before; only their drawing waits.

    For blocks in the page as it opens only: the script opens those mounted with the page
    (and, for a few frames, those that appear inside them), not one a ``LazyTab`` or a
    ``gr.render`` makes later. One the script can't open is shown as the accordion it is,
    headed ``label``, for the person to open.
    """
    return gr.Accordion(label, open=False, elem_id=elem_id, elem_classes=[LATER])


def tab_opened(tab: gr.Tab | None = None) -> list | None:
    """The triggers of a tab's loading events: selecting ``tab`` (by default the ``gr.Tab``
    being built, if any), so a tab not shown does no work and sends nothing until it is
    opened; inside a ``LazyTab``'s build, its first and every later opening (``ui/lazy.py``);
    None (the page's load) when built outside a tab (a test's Blocks)."""
    lazy = building.get()
    if lazy is not None and tab in (None, lazy.tab):
        return lazy.opened_again()
    if tab is None and isinstance(Context.block, gr.Tab):
        tab = Context.block
    return [tab.select] if tab is not None else None


def model_picker(models, preferred: str = "", *, warn: bool = True, cached: bool = False):
    """What the Chat and Arena pickers offer (``ChatModels.picker``): local models that can
    chat first, then cloud ones with prices. Each backend that can't be asked shows a
    warning (unless ``warn`` is False). ``cached``: from the lists known, no backend asked."""
    picker = models.picker(preferred, cached=cached)
    for problem in picker.problems if warn else ():
        gr.Warning(problem)
    return picker
