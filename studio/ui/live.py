"""The page's lean channel for a streaming reply's text (issue 16, item 1).

Through Gradio, each update of a streaming reply costs the server ~2 ms of CPU whatever it
carries (its queue, the event's bookkeeping, the diff and the SSE message; a bare Gradio
generator costs as much), and ~8 updates a second make that most of a paced reply's cost.
So a page that can (``assets/studio.js`` says so with the ``studio_live`` cookie) gets the
answer's text here instead, as plain server-sent events of what was added:

    GET /studio/live/{chat_id}?reply={reply_id}
    data: {"at": 0, "text": "Hello"}          the text from offset ``at`` on
    data: {"at": 5, "text": " world"}
    event: done                               the reply ended; the page's Gradio update
    data: {}                                  with the finished message follows

The Gradio event that sent the message still runs: it shows the first words the moment
they come, the Stop button, the thinking, and the finished message rendered as Markdown,
but while the text flows it updates the page about once a second (``LEAN_TEXT_INTERVAL_S``)
instead of ~8 times. A page without the script, or an API caller, is served as before.

Who may: the front door (``access/web.py``) lets no one through without a session, and the
chat is looked up as the caller's own (``ChatService.live_reply`` raises ``NotFound`` for
another's), so a reply id alone opens nothing. One person holds at most ``MOST_PER_USER``
streams at once (429 beyond that; the page then shows Gradio's updates). Pacing is the same as Gradio's
(``replies.update_gap``): a wait of the gap between looks, never a wake per token.
"""

from __future__ import annotations

import asyncio
import json
import time

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..chat.replies import START_GAP_S, update_gap
from ..errors import NotFound

PATH = "/studio/live/{chat_id}"
COOKIE = "studio_live"
# While the text flows over this channel, how often the Gradio event still updates the
# page (the thinking, the stats line, the Stop button; the Markdown rendered by Gradio).
LEAN_TEXT_INTERVAL_S = 1.0
# Streams one person may hold open at once (without sign-in, the whole household is one
# person): a page follows one reply at a time; beyond this it is a script, and each stream
# is a loop on the server's event loop. A page refused falls back to Gradio's updates.
MOST_PER_USER = 32
# Before the first words, how long one wait for them lasts (then it looks again).
FIRST_WAIT_S = 15.0
# How long a quick send's stream, its reply ended, waits for the turn's write to be known
# (``saved``): a write queued behind a long one (an import) is slow. Past it, it ends
# without saying, and the page compares the message's text instead.
SAVED_MOST_S = 600.0
# The most a quick send's page holds its Gradio event back for others' first words
# (``FirstWords``), from its own send's arrival.
GO_MOST_S = 0.3


def lean_page(request) -> bool:
    """Whether the page behind a Gradio request reads the text over this channel."""
    cookies = getattr(request, "cookies", None) or {}
    return cookies.get(COOKIE) == "1"


def marker(chat_id: str, reply_id: str) -> str:
    """What the stats line carries while a lean page's reply streams: the page's script
    finds it and opens the channel (the sanitizer keeps classes only)."""
    return f'<span class="studio-live live-{chat_id} reply-{reply_id}"></span>'


class LiveText:
    """The ``/studio/live`` route over ``ChatService``."""

    def __init__(self, chat, *, interval: float, most_per_user: int = MOST_PER_USER) -> None:
        self.chat = chat
        self.interval = interval
        self.most_per_user = most_per_user
        self._open: dict[str, int] = {}  # streams open per user (touched on the event loop only)
        self.firsts = FirstWords()

    def routes(self) -> list[Route]:
        return [Route(PATH, self.stream, methods=["GET"])]

    async def stream(self, request: Request) -> Response:
        user = request.scope.get("state", {}).get("studio_user")
        if not user:  # the front door sets it; without one, nobody signed in
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        chat_id = request.path_params["chat_id"]
        try:
            reply = await run_sync(lambda: self.chat.live_reply(chat_id, user=user))
        except NotFound:
            reply = None
        want = request.query_params.get("reply")
        if reply is None or (want and reply.reply_id != want):
            return JSONResponse({"error": "No reply is streaming in that chat."},
                                status_code=404)
        return self.respond(reply, user) or JSONResponse(
            {"error": f"You have {self.most_per_user} replies open in other tabs already; "
                      "close some and reload."}, status_code=429)

    def respond(self, reply, user: str, started: dict | None = None,
                gate: _Gate | None = None) -> Response | None:
        """The stream of ``reply``'s text for ``user``; None when they hold too many open.
        ``started``: a first event, ``started``, carrying it, and ``gate``: the quick send's
        place in ``firsts`` (the quick send's answer, ``chat_quick.py``). Call on the event
        loop."""
        if self._open.get(user, 0) >= self.most_per_user:
            return None
        self._open[user] = self._open.get(user, 0) + 1
        return _Released(self._events(reply, started, gate), lambda: self._release(user, gate),
                         media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _release(self, user: str, gate: _Gate | None = None) -> None:
        if gate is not None:  # a stream that never began (the browser went first)
            self.firsts.leave(gate)
        left = self._open.get(user, 1) - 1
        if left > 0:
            self._open[user] = left
        else:
            self._open.pop(user, None)

    async def _events(self, reply, started: dict | None = None, gate: _Gate | None = None):
        sent = 0
        # A quick send's page learns whether its turn was saved (``saved``), as soon as it
        # is known, and always before ``done`` (a reply that ended waits for its write): a
        # send event that fails then knows whose message to give back (studio.js).
        unsaid = started is not None

        def saved() -> str:
            return f"event: saved\ndata: {json.dumps({'saved': not reply.abandoned})}\n\n"

        try:
            # The browser's retry after a dropped connection starts a new request, from 0.
            yield "retry: 2000\n\n"
            if started is not None:
                yield f"event: started\ndata: {json.dumps(started)}\n\n"
            while True:
                snap = reply.snapshot()
                # After the snapshot: an ``abandon`` that ended the reply placed it as well.
                if unsaid and reply.placed.is_set():
                    unsaid = False
                    yield saved()
                grew = len(snap.text) > sent
                if grew:
                    yield f"data: {json.dumps({'at': sent, 'text': snap.text[sent:]})}\n\n"
                    sent = len(snap.text)
                if gate is not None:
                    if sent or snap.done:
                        self.firsts.worded(gate)
                    if not gate.went and (self.firsts.clear(gate) or snap.done):
                        gate.went = True
                        yield "event: go\ndata: {}\n\n"
                    if gate.went and gate.worded:  # others no longer wait for this one
                        self.firsts.leave(gate)
                        gate = None
                if snap.done:
                    if unsaid and await reply.wait_until_async(reply.placed.is_set,
                                                               SAVED_MOST_S):
                        yield saved()
                    yield "event: done\ndata: {}\n\n"
                    return
                if not sent:
                    # No text yet: wait for the first words, woken the moment they land (a
                    # quick send's page draws them: chat_quick.py), or for the end.
                    wait = reply.wait_until_async(
                        lambda: (reply.text_parts or reply.finished is not None
                                 or (unsaid and reply.placed.is_set())), FIRST_WAIT_S)
                else:
                    # After text went out, let the next pile up for the gap; while none
                    # comes, look again soon, so a slow model's token shows about when it
                    # lands.
                    first = reply.first_token
                    wait = asyncio.sleep(update_gap(time.monotonic() - first, self.interval)
                                         if grew and first is not None else START_GAP_S)
                await (wait if gate is None or gate.went else self.firsts.either(wait, gate))
        finally:
            if gate is not None:
                self.firsts.leave(gate)


class _Gate:
    """One quick send's stream in ``FirstWords``."""

    __slots__ = ("at", "worded", "went")

    def __init__(self, at: float) -> None:
        self.at = at
        self.worded = False  # its first words (or its end) went out
        self.went = False  # its page was told to send its Gradio event


class FirstWords:
    """The quick sends whose first words have not gone out yet, and when each page may send
    its Gradio event (the ``go`` event of its stream).

    A page's Gradio send event, once it follows its quick send, is a few milliseconds of the
    one interpreter (the queue's join, the event's bookkeeping, the Stop button and the
    sidebar rebuilt): with twenty pages sending at once, those of the first pages ran
    between the later pages' sends and their first words, and held them up. So a page is
    told to send its Gradio event once no other quick send still waits for its first words,
    or ``GO_MOST_S`` after its own send arrived, whichever comes first; alone, at once. A
    send waits from its arrival (``enter``) until its own first words, even after its own
    ``go``. Its question and words are on its screen meanwhile (``assets/studio.js``); the
    Stop button comes with the Gradio event. Issue 16, item 3: twenty at once, p95 of the
    first words 122 ms with this, 182 without (medians of 8 rounds, one run). Touched on
    the event loop only."""

    def __init__(self, most: float = GO_MOST_S) -> None:
        self.most = most
        self._gates: set[_Gate] = set()
        self._waiting = 0  # gates not worded yet
        self._changed = asyncio.Event()

    def enter(self) -> _Gate:
        """A quick send arrived: it counts as waiting for its first words from now on, so
        that pages whose sends came just before it wait for it too. ``leave`` it when its
        stream ends, or at once when it starts no stream."""
        gate = _Gate(time.monotonic())
        self._gates.add(gate)
        self._waiting += 1
        return gate

    def worded(self, gate: _Gate) -> None:
        """Its first words (or its end) went out."""
        if gate in self._gates and not gate.worded:
            gate.worded = True
            self._waiting -= 1
            self._wake()

    def leave(self, gate: _Gate) -> None:
        if gate in self._gates:
            self.worded(gate)
            self._gates.discard(gate)

    def clear(self, gate: _Gate) -> bool:
        """Whether ``gate``'s page may send its Gradio event now."""
        others = self._waiting - (0 if gate.worded else 1)
        return others <= 0 or time.monotonic() - gate.at >= self.most

    async def either(self, wait, gate: _Gate) -> None:
        """Await ``wait``, or less: until another quick send's first words went out or
        ``gate``'s time is up."""
        task = asyncio.ensure_future(wait)
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=max(0.0, gate.at + self.most - time.monotonic()))
        finally:
            for t in (task, changed):
                if not t.done():
                    t.cancel()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class _Released(StreamingResponse):
    """A stream that calls ``release`` once it is over: ended, failed, or cancelled
    because the browser went (Starlette cancels the response then)."""

    def __init__(self, content, release, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._released = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._released()
