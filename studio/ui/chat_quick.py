"""The page's quick send (issue 16, item 3): a message starts its reply before Gradio's
queue sees the send event.

Through Gradio, a message reaches ``ChatPage.on_send`` after the queue's join, its
bookkeeping and the processing of each input. That is a few milliseconds for one page, but
twenty pages sending at once wait for each other's: a bare Gradio chat that does nothing
but call Ollama showed its twentieth first token ~260 ms after the send at p95, against
17 ms for one chat alone (``bench/bench_load.py``). So the page's script (the send event's
js step, ``assets/studio.js``) first posts the message here::

    POST /studio/send   {"page": <Gradio session hash>, "text": "...", "model": "...",
                         "system": "...", "incognito": false,
                         "params": [temperature, top_p, num_ctx, seed, max_tokens, think]}

    200 text/event-stream    the reply started; its text follows, as /studio/live sends it
      event: started
      data: {"ticket": "...", "chat": <chat id>, "reply": <reply id>}
      data: {"at": 0, "text": "Hello"}
      event: go                  the page may send its Gradio event now (live.FirstWords)
      data: {}
      event: saved               once the turn's write is known, always before "done"
      data: {"saved": true}      (a reply that ended waits for it); false: given back
      ...
      event: done
    200 application/json     {"ticket": ""}: send it the usual way; {"ticket": "...", ...}:
                             started, but this person holds too many text streams open

The page draws the question and the first words itself as they come. Its Gradio send event
follows with the ticket once the stream says ``go`` (at once for a page sending alone; when
many send at once, after the others' first words); ``on_send`` then adopts the reply
instead of sending the message again, and the page gets what it always got from that
event: the Stop button, the queue of messages sent meanwhile, the sidebar, the finished
message rendered by Gradio.

Only the plain case is quick: a page the caller opened, with no reply of its own streaming
and no event of its own still to change which chat it shows (a new chat clicked just
before), a text without pictures, the incognito switch as the page's chat has it, and a message the
service accepts. Anything else gets no ticket and goes the usual way, where a refusal is
said as before (and nothing is sent twice); a busy page's message is queued there.

The answer streams from the moment the model is asked, while the turn is still being
written (``ChatService.send``'s ``on_started``): twenty turns written one after another
took ~130 ms, and each first word waited for them. The page's send event, when it comes,
waits for its turn's write (``take``); a turn that could not be written (a full disk) ends
its reply and stream at once, and the send event fails with the store's sentence, so the
page removes the turn it drew and puts the message back into the box.

Who may: the front door lets no one in without a session, and the ``page`` must be one the
caller opened (``note``): a session hash alone, guessed or seen, starts nothing in anyone
else's page. The service then checks as for every send that the chat is the caller's, the
limits and the budget.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..chat.replies import LiveReply
from ..chat.service import Started
from ..errors import StorageFailed, StudioError
from .chat_queue import CLOSED
from .chat_values import collect_options

log = logging.getLogger(__name__)

PATH = "/studio/send"
NO_TICKET = {"ticket": ""}
NOT_WRITTEN = "The studio could not save this message."
# A started reply whose Gradio event never came to adopt it (the page closed between the
# two, or its event failed): the page is freed for its next message once the reply ended
# and this long went by, or after ``UNCLAIMED_MOST_S`` whatever the reply does.
UNCLAIMED_DONE_S = 60.0
UNCLAIMED_MOST_S = 600.0
THINK_MODES = ("auto", "on", "off")
# How long the page's send event waits for its turn to be written (``Ticket.written``)
# before it says so in the log. It then waits on: a write queued behind a long one (an
# import) is slow, not failed, and giving the message back meanwhile would have it both
# in the box and, once written, in the chat.
WRITTEN_SLOW_S = 30.0


@dataclass(frozen=True)
class Ticket:
    """A reply started by a quick send, waiting for its page's send event."""

    page: str
    user: str
    token: str  # the page's ``PageQueues`` claim
    view: tuple[str, str] | None  # the page's ``PageViews`` claim
    started: Started
    at: float
    # Set once the turn is written, or failed to be (``failed`` then holds why).
    written: threading.Event = field(default_factory=threading.Event)
    failed: list = field(default_factory=list)


class QuickSends:
    """The tickets of quick sends, and the ``/studio/send`` route, over a ``ChatPage``."""

    def __init__(self, page, *, limit: int = 10_000) -> None:
        self.page = page
        self.state_id: int | None = None  # the chat's gr.State, set by ``bind``
        self._owners: OrderedDict[str, str] = OrderedDict()  # page -> who opened it
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()
        self._limit = limit
        self._writing: set[asyncio.Future] = set()  # quick sends answered before their write

    def bind(self, session_state) -> None:
        """The page's chat session (a ``gr.State``) is read from Gradio's state by its id."""
        self.state_id = session_state._id

    def note(self, page: str | None, user: str) -> None:
        """``user`` opened (or sends from) ``page``: only they may send quickly from it."""
        if not page:
            return
        with self._lock:
            self._owners[page] = user
            self._owners.move_to_end(page)
            while len(self._owners) > self._limit:
                self._owners.popitem(last=False)

    # -- the route --------------------------------------------------------------------

    async def post(self, request: Request, live) -> Response:
        """The quick send's route; ``live``: the ``/studio/live`` channel (``ui/live.py``),
        whose stream of the reply's text is the answer, after a first event ``started``."""
        user = request.scope.get("state", {}).get("studio_user")
        if not user:  # the front door sets it; without one, nobody signed in
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "Send a JSON object."}, status_code=400)
        holder = getattr(request.app, "state_holder", None)
        page = body.get("page")
        if isinstance(page, str) and self.behind(request.app.get_blocks(), page):
            return JSONResponse(NO_TICKET, headers={"Cache-Control": "no-store"})
        # From its arrival, the pages that sent just before wait for its first words before
        # sending their Gradio events (``live.FirstWords``).
        gate = live.firsts.enter()
        try:
            answer, reply = await self._started(body, user, holder)
            # Too many streams open (``live.MOST_PER_USER``): the ticket alone; the page
            # then shows the reply through Gradio's updates.
            stream = reply is not None and live.respond(reply, user, answer, gate)
        except BaseException:
            live.firsts.leave(gate)
            raise
        if stream:
            return stream
        live.firsts.leave(gate)
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    async def _started(self, body: dict, user: str, holder) -> tuple[dict, LiveReply | None]:
        """``start`` on a worker thread; its answer as soon as the reply is asked for,
        while the thread goes on writing the turn."""
        loop = asyncio.get_running_loop()
        early: asyncio.Future = loop.create_future()

        def answered(answer: dict, reply: LiveReply) -> None:  # on the worker thread
            loop.call_soon_threadsafe(
                lambda: early.done() or early.set_result((answer, reply)))

        work = asyncio.ensure_future(run_sync(lambda: self.start(body, user, holder,
                                                                 answered)))
        # Kept until done, even when this request is cancelled while it writes.
        self._writing.add(work)
        work.add_done_callback(self._writing.discard)
        await asyncio.wait((early, work), return_when=asyncio.FIRST_COMPLETED)
        if not early.done():
            early.cancel()
            return work.result()
        return early.result()

    # -- starting and adopting ----------------------------------------------------------

    def start(self, body: dict, user: str, holder, answered=None
              ) -> tuple[dict, LiveReply | None]:
        """Start the reply of ``body``'s message for ``user`` if it is the plain case:
        (its ticket, chat and reply ids, the reply); ``({"ticket": ""}, None)`` otherwise
        (the page's Gradio event then sends it). ``answered(answer, reply)`` is told the
        same the moment the reply is asked for, before the turn is written."""
        self.sweep()
        page, text = body.get("page"), body.get("text")
        if not (isinstance(page, str) and isinstance(text, str) and text.strip()):
            return NO_TICKET, None
        with self._lock:
            if self._owners.get(page) != user:
                return NO_TICKET, None
        sess = self._session(holder, page)
        options = _options(body.get("params"))
        model, system = body.get("model") or "", body.get("system") or ""
        if (sess is None or options is None or not isinstance(model, str)
                or not isinstance(system, str)
                or bool(body.get("incognito")) != bool(sess.get("incognito"))):
            return NO_TICKET, None
        chat = self.page
        token = uuid.uuid4().hex
        if not chat.queues.claim(page, token):
            return NO_TICKET, None  # a reply of this page streams: the usual way queues it
        ticket = uuid.uuid4().hex
        given: list[Ticket] = []

        def on_started(started: Started) -> None:
            given.append(Ticket(page, user, token, view, started, time.monotonic()))
            with self._lock:
                self._tickets[ticket] = given[0]
            if answered is not None:
                answered(self._answer(ticket, started), started.reply)

        try:
            view = chat.views.claim_page(page)
            started = chat.chat.send(sess.get("chat_id"), text, (), model=model,
                                     system_prompt=system, options=options, user=user,
                                     incognito=bool(sess.get("incognito")),
                                     on_started=on_started)
        except BaseException as exc:  # noqa: BLE001 - said by the usual way, or by the ticket
            if given:
                # Answered, but its turn could not be written: the reply was abandoned (its
                # stream ends with why); the page's send event fails with it (``take``,
                # which waits for this whatever ended the write).
                given[0].failed.append(exc)
                given[0].written.set()
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, StudioError):
                log.exception("quick send failed")
            if not given:  # nothing began: the usual way sends it, and says why it can't
                chat.queues.ended(page, token, completed=False)
                return NO_TICKET, None
            return self._answer(ticket, given[0].started), given[0].started.reply
        given[0].written.set()
        return self._answer(ticket, started), started.reply

    @staticmethod
    def _answer(ticket: str, started: Started) -> dict:
        return {"ticket": ticket, "chat": started.chat_id, "reply": started.reply.reply_id}

    def behind(self, blocks, page: str) -> bool:
        """Whether an event the page sent before this message is still running or waiting
        in Gradio's queue, and changes which chat the page shows (a new chat, another chat
        opened, the page's load, a retry): the message must go after it, so the usual way,
        in the queue's order. (Events that change nothing of the chat, the cost hint, the
        status tick, don't hold it up.) Call on the event loop, where the queue changes."""
        queue = getattr(blocks, "_queue", None)
        pending = getattr(queue, "pending_event_ids_session", {}).get(page) or ()
        events = getattr(queue, "event_ids_to_events", {})
        for event_id in list(pending):
            fn = getattr(events.get(event_id), "fn", None)  # None: done, its state written
            if fn is not None and any(getattr(o, "_id", None) == self.state_id
                                      for o in fn.outputs):
                return True
        return False

    def take(self, ticket: str, page: str | None, user: str) -> Ticket | None:
        """The send event of ``page`` adopts its reply, once its turn is written; None for
        a ticket that isn't this page's and caller's, or was given up (``sweep``). Raises
        what kept the turn from being written (the page is free again)."""
        self.sweep()
        with self._lock:
            found = self._tickets.get(ticket)
            if found is None or found.page != page or found.user != user:
                return None
            found = self._tickets.pop(ticket)
        if not found.written.wait(WRITTEN_SLOW_S):
            log.warning("a quick send's turn is not written after %s s; still waiting",
                        WRITTEN_SLOW_S)
            found.written.wait()
        if found.failed:
            self.page.queues.ended(found.page, found.token, completed=False)
            error = found.failed[0]
            raise error if isinstance(error, StudioError) else StorageFailed(
                NOT_WRITTEN, hint="Send it again; the studio's log says what went wrong.")
        return found

    def sweep(self) -> None:
        """Give up the tickets no send event came for: free their pages."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, t in self._tickets.items()
                     if now - t.at > UNCLAIMED_MOST_S
                     or (now - t.at > UNCLAIMED_DONE_S and t.started.reply.snapshot().done)]
            gone = [self._tickets.pop(k) for k in stale]
        for t in gone:
            self.page.queues.ended(t.page, t.token, completed=False, reason=CLOSED)

    def _session(self, holder, page: str) -> dict | None:
        """The page's chat session as its next Gradio event will read it; None for a page
        this server has no state of (restarted since it opened)."""
        if holder is None or self.state_id is None or page not in holder:
            return None
        sess = holder[page].get(self.state_id)
        return sess if isinstance(sess, dict) else None


ATTRIBUTE = "studio_quick"  # the app's QuickSends, on its gr.Blocks (``ui/app.py``)


def routes(live) -> list[Route]:
    """``/studio/send`` for ``launch()``'s app: it serves the Blocks the app was launched
    with; ``live``: the app's ``/studio/live`` (``ui/live.LiveText``)."""
    async def post(request: Request) -> Response:
        quick = getattr(request.app.get_blocks(), ATTRIBUTE, None)
        if quick is None:
            return JSONResponse({"error": "Not found."}, status_code=404)
        return await quick.post(request, live)
    return [Route(PATH, post, methods=["POST"])]


def _options(params):
    """The generation parameters posted, checked as the page's controls would give them;
    None when they aren't (the usual way then applies its own checks)."""
    if not isinstance(params, list) or len(params) != 6:
        return None
    temperature, top_p, num_ctx, seed, max_tokens, think = params
    numbers = (temperature, top_p, num_ctx, seed, max_tokens)
    if (not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers)
            or think not in THINK_MODES or not 0 <= temperature <= 2 or not 0 <= top_p <= 1
            or num_ctx < 0 or max_tokens < 0):
        return None
    if any(isinstance(n, float) and not n.is_integer() for n in (num_ctx, seed, max_tokens)):
        return None
    return collect_options(temperature, top_p, num_ctx, seed, max_tokens, think)
