"""Messages a page sent while its own reply was still streaming: they wait here, per page,
and go one by one, in order, as each reply completes.

A page is Gradio's session hash, so the queue lives as long as the page stays open on the
server (a reload starts a new page with an empty queue). One page has at most one *owner*:
the handler streaming that page's reply. A message sent while there is an owner waits; the
owner takes the next waiting message when its reply completes. When a reply does not
complete (it failed, was stopped, or the page moved to another chat), the waiting messages
are *held* with that reason: they are never sent into a state the person didn't see, and a
held message goes back into the box when clicked. Nothing typed is dropped here: a message
leaves only by being sent or by being taken back.

Plain Python, no gradio: ``ChatPage`` (chat_handlers.py) calls it and shapes the view.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace

from ..events import ChatOptions

# Why waiting messages were held, as the chip says it ("Not sent (<reason>): …").
FAILED = "the reply failed"
STOPPED = "you stopped the reply"
LEFT = "you opened another chat"
CLOSED = "the page stopped following the reply"
BEHIND = "a message before it was not sent"


@dataclass(frozen=True)
class Queued:
    """One message waiting: what was typed and the settings it was sent with."""

    id: str
    message: dict  # {"text": str, "files": [paths]}, as the MultimodalTextbox gave it
    model: str = ""
    system_prompt: str = ""
    options: ChatOptions | None = None
    held: str = ""  # why it is not going by itself ('' while it waits its turn)

    @classmethod
    def new(cls, message: dict, **settings) -> "Queued":
        return cls(id=uuid.uuid4().hex[:12], message=message, **settings)


@dataclass
class _Page:
    owner: str | None = None
    items: list[Queued] = field(default_factory=list)


class PageQueues:
    """The waiting messages of every open page. ``page`` None means "no page" (a test or an
    API call without a session): nothing is tracked and every message goes at once."""

    def __init__(self, limit: int = 10_000):
        self._pages: dict[str, _Page] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def begin(self, page: str | None, token: str, item: Queued | None = None) -> bool:
        """Take the page for a reply (True), or, when one of its replies is still
        streaming, put ``item`` in the queue (False). ``item`` None (a retry, an edit)
        takes the page only if it is free, and says True either way."""
        if page is None:
            return True
        with self._lock:
            state = self._page(page)
            if state.owner is None:
                state.owner = token
                return True
            if item is None:
                return True
            state.items.append(item)
            return False

    def claim(self, page: str, token: str) -> bool:
        """Take the page for a reply only if none of its replies is streaming (the quick
        send, ``chat_quick.py``: a busy page's message goes the usual way, to be queued)."""
        with self._lock:
            state = self._page(page)
            if state.owner is not None:
                return False
            state.owner = token
            return True

    def ended(self, page: str | None, token: str, *, completed: bool,
              reason: str = FAILED) -> Queued | None:
        """The owner's reply is over: the next waiting message to send (the owner keeps
        the page), or None (the page is free; after a reply that did not complete, the
        waiting messages are held with ``reason``)."""
        if page is None:
            return None
        with self._lock:
            state = self._pages.get(page)
            if state is None or state.owner != token:
                return None  # the page moved on meanwhile (another chat, a new reply)
            if completed:
                for i, item in enumerate(state.items):
                    if not item.held:
                        return state.items.pop(i)
            else:
                state.items = [i if i.held else replace(i, held=reason) for i in state.items]
            state.owner = None
            self._forget_if_empty(page)
            return None

    def refused(self, page: str | None, token: str, item: Queued | None, reason: str) -> None:
        """Sending ``item`` (taken by ``ended``) was refused: it goes back first in line,
        held with the refusal's sentence, and the page is free. The messages behind it are
        held too: with no reply streaming, nothing would send them, and they were written
        after the refused one."""
        if page is None:
            return
        with self._lock:
            state = self._page(page)
            state.items = [i if i.held else replace(i, held=BEHIND) for i in state.items]
            if item is not None:
                state.items.insert(0, replace(item, held=reason))
            if state.owner == token:
                state.owner = None
            self._forget_if_empty(page)

    def leave(self, page: str | None, reason: str = LEFT) -> None:
        """The page opened another chat: its reply stops being its own, waiting messages
        are held (they were meant for the chat it left)."""
        if page is None:
            return
        with self._lock:
            state = self._pages.get(page)
            if state is None:
                return
            state.owner = None
            state.items = [i if i.held else replace(i, held=reason) for i in state.items]
            self._forget_if_empty(page)

    def take(self, page: str | None, item_id: str) -> Queued | None:
        """Remove one message (clicked to take it back into the box); None if it went."""
        if page is None:
            return None
        with self._lock:
            state = self._pages.get(page)
            if state is None:
                return None
            item = next((i for i in state.items if i.id == item_id), None)
            if item is not None:
                state.items.remove(item)
                self._forget_if_empty(page)
            return item

    def items(self, page: str | None) -> list[Queued]:
        """The page's messages in order (waiting and held)."""
        if page is None:
            return []
        with self._lock:
            state = self._pages.get(page)
            return list(state.items) if state is not None else []

    def _page(self, page: str) -> _Page:
        state = self._pages.get(page)
        if state is None:
            if len(self._pages) > self._limit:  # pages that closed long ago (held messages
                # of a page nobody follows are the only thing lost, and only at this size)
                self._pages = {k: v for k, v in self._pages.items() if v.owner is not None}
            state = self._pages[page] = _Page()
        return state

    def _forget_if_empty(self, page: str) -> None:
        state = self._pages.get(page)
        if state is not None and state.owner is None and not state.items:
            del self._pages[page]
