"""The Chat tab's event handlers: plain methods that call the chat service and turn what it
returns into component values. ``studio/ui/chat.py`` lays the tab out and wires these; a test
can call them without a browser (pass ``request=None``: the page's user is then "owner").

The service does every write and every refusal; nothing here touches the store. Per-page
state is the small dict of ``chat_values.new_session``, plus the messages a page sent while
its own reply streamed (``chat_queue.PageQueues``, kept on the server per page: they go one
by one as each reply completes, and are lost on a page reload).
"""

from __future__ import annotations

import logging
import uuid

import gradio as gr

from ..chat.conversations import stats_line
from ..chat.history import turn_with_snapshot
from ..chat.replies import STOPPED_BY_USER, ReplySnapshot
from ..chat.service import ChatView, OpenChat, Started
from ..chat.window import MOST, OPEN, earlier, later, newest
from ..errors import InvalidInput, NotFound, StudioError
from ..model_id import ModelId
from ..models.pulls import full_model_name
from ..presets import apply_preset
from .chat_quick import QuickSends
from .chat_queue import CLOSED, FAILED, LEFT, STOPPED, PageQueues, Queued
from .chat_sidebar import GROUP, MORE, Sidebars
from .chat_wire import ChatWire
from .chat_values import (chatbot_value, collect_options, merge_into_box, new_session,
                          no_match_note, parse_turn_action, queued_label, split_message,
                          typed_from_shown)
from .common import PageViews, model_picker, page_user, ui_errors
from .live import LEAN_TEXT_INTERVAL_S, lean_page, marker

log = logging.getLogger(__name__)

STOP_LABEL = "■ Stop"
MODEL_INFO = "Local models, then cloud ones with price per million tokens. Type to search."
DEFAULT_PARAMS = {"temperature": 0.8, "top_p": 0.9, "num_ctx": 0, "seed": -1, "max_tokens": 0}

# How long a new reply's first update waits for the first token. A fast model's first
# update then carries text instead of "waiting" (an update costs the server several ms,
# which delayed the first token behind it: bench/bench_chat.py); a slow model's page shows
# the sent message this much later, which nobody notices.
FIRST_UPDATE_WAIT_S = 0.05
EMPTY_MESSAGE = "Nothing was sent: the message is empty. Type something or attach an image first."
# How long the page waits, after a reply's last token, for it to be stored in full before
# deciding on the queue (a queued message's prompt includes that answer); the store write
# follows the last token by milliseconds.
SETTLE_WAIT_S = 10.0
GONE_MODEL = ("{model} is no longer offered (deleted, or it can't chat); the model picker "
              "now shows {now}. Pick another one if you like.")
QUEUE_LABEL = ("Queued messages go when the reply ends · click one to take it back "
               "into the box")
QUICK_LOST = ("Your message was sent, but this page lost track of its answer. Open the chat "
              "from the sidebar to see it.")
EARLIER_LABEL = "↑ Load earlier messages"
NEWER_LABEL = "↓ Load newer messages"
BUSY_WINDOW = ("Earlier and newer messages can be loaded once the reply being written in "
               "this chat has finished.")
RETRY_HIDDEN = "↻ redoes this chat's last answer, which is further down than this view shows."


def window_labels(shown: ChatView) -> tuple[str, str]:
    """The "Load earlier" and "Load newer" buttons' labels for what a page shows."""
    return (f"{EARLIER_LABEL} ({shown.earlier:,} more)" if shown.earlier else EARLIER_LABEL,
            f"{NEWER_LABEL} ({shown.later:,} more)" if shown.later else NEWER_LABEL)


def window_buttons(shown: ChatView | None) -> tuple:
    """Updates of the two buttons: each shown only when there is something to load."""
    if shown is None:
        return gr.update(visible=False), gr.update(visible=False)
    before, after = window_labels(shown)
    return (gr.update(value=before, visible=shown.earlier > 0),
            gr.update(value=after, visible=shown.later > 0))


def with_window(sess: dict, shown: ChatView) -> dict:
    """The page's session showing ``shown`` (its window's first and last seq)."""
    return {**sess, "first": shown.window[0], "last": shown.window[1]}


def page_of(request: gr.Request | None) -> str | None:
    """The page (Gradio's session hash) a request came from; None without one."""
    return getattr(request, "session_hash", None) if request is not None else None


def stats_text(snap: ReplySnapshot, live_in: str | None = None) -> str:
    """The line under the chat while a reply streams, then its figures. ``live_in``: the
    chat of a page that reads the text over ``/studio/live`` (``ui/live.py``): once the
    text flows, the line carries the marker its script opens the channel by."""
    if not snap.done:
        if not (snap.text or snap.thinking):
            return snap.retrying or "Waiting for the first token…"
        line = f"Generating with {ModelId.parse(snap.model_id).name}…"
        return line + marker(live_in, snap.reply_id) if live_in and snap.text else line
    u = snap.usage
    return stats_line(ttft_ms=snap.ttft_ms, tokens_per_s=u.tokens_per_s,
                      completion_tokens=u.completion_tokens, prompt_tokens=u.prompt_tokens,
                      total_ms=snap.elapsed_ms, cost_usd=u.cost_usd,
                      model=snap.answered_by, backend=snap.backend)


class ChatPage:
    """Handlers of the Chat tab over ``services.chat`` (one instance per app)."""

    def __init__(self, services) -> None:
        self.chat = services.chat
        self.models = services.models
        self.presets = services.presets
        self.settings = services.settings
        # Which follower owns each page's chatbot: opening another chat (or a new one) makes
        # the old follower stop writing into the page, while its reply goes on on the server.
        self.views = PageViews()
        self.queues = PageQueues()
        # The values of the events wired with postprocess=False (``chat_wire``).
        self.wire = ChatWire()
        # How far each page's list was paged, for as many pages as Gradio keeps state for.
        self.sidebars = Sidebars(services.chat, limit=self.settings.max_page_sessions)
        # Replies a page's script started before its send event (``chat_quick``).
        self.quick = QuickSends(self, limit=self.settings.max_page_sessions)

    # -- values -----------------------------------------------------------------------

    def list_update(self, user: str, query: str = "", selected: str | None = None,
                    page: str | None = None, *, more: bool = False):
        """The sidebar: search hits for ``query``, else the page's chats in date groups
        (as deep as it had paged; ``more`` adds the next page)."""
        if query and query.strip():
            entries = self.chat.conversations(user=user, query=query)
            # A hit on a message opens the chat at that message (``on_open``).
            choices = [(e.title + (f" — {e.snippet}" if e.snippet else ""),
                        f"{e.chat_id}@{e.message_id}" if e.message_id else e.chat_id)
                       for e in entries]
        else:
            choices = (self.sidebars.more if more else self.sidebars.refresh)(page, user)
        value = selected if selected and any(v == selected for _, v in choices) else None
        return gr.update(choices=choices, value=value)

    def queue_update(self, page: str | None):
        """The chips of the page's waiting messages (hidden when there are none)."""
        items = self.queues.items(page)
        return gr.update(choices=[(queued_label(i.message, i.held), i.id) for i in items],
                         value=None, visible=bool(items), label=QUEUE_LABEL)

    def follow(self, sess: dict, reply, view, user: str, *, wire: bool = False,
               lean: bool = False):
        """Yield (rows, index, snapshot, shown) as the live reply grows, while ``view``
        holds. The page shows from its window's first message to the newest. The rows of
        the turns before the reply are built once; each update rebuilds only the reply's.
        ``wire``: rows as Gradio sends them (``chat_wire``), for postprocess=False events.
        ``lean``: the page reads the text over ``/studio/live``: while it flows, an update
        about once a second (``live.LEAN_TEXT_INTERVAL_S``)."""
        shape = self.wire.rows if wire else (lambda rows: rows)
        shown = self.chat.view(sess["chat_id"], user=user, window=(sess.get("first"), None))
        base, last = shown.turns[:-1], shown.turns[-1]
        base_rows, base_index = chatbot_value(base)
        base_rows = shape(base_rows)
        for snap in self.chat.follow(reply, interval=self.settings.stream_interval,
                                     first_wait=FIRST_UPDATE_WAIT_S,
                                     text_interval=LEAN_TEXT_INTERVAL_S if lean else None):
            if not self.views.holds(view):
                return
            rows, index = chatbot_value([turn_with_snapshot(last, snap)])
            yield base_rows + shape(rows), base_index + index, snap, shown

    def stream(self, sess: dict, started: Started, view, user: str, lean: bool = False):
        """Stream a started reply: yields (sess, rows, stats, stop, conv_list, phase,
        earlier, newer) (the last two: the window's buttons), as Gradio sends them
        (``chat_wire``: the events that stream replies skip Gradio's postprocessing).

        Phases: "first" (shows the Stop button), "extras" (the first update after the
        reply's first words: the window's buttons, and in ``replies`` the queue's chips
        and a new chat's place in the sidebar), "middle", and "last" (or "only" when the
        first is also the last). The first update carries nothing else, so the first
        words are not held up by rebuilt components. The ones in between repeat plain
        values, which Gradio diffs to nothing: a gr.update or gr.skip makes Gradio rebuild
        that component for every update (~0.5 ms each, bench/profile_stream.py)."""
        if sess.get("chat_id") != started.chat_id:
            sess = {**sess, "first": None, "last": None}
        elif sess.get("last") is not None:
            # The page showed older messages: a new turn shows with the newest ones.
            sess = {**sess, "first": newest(self.chat.seqs(started.chat_id, user=user))[0],
                    "last": None}
        sess = {**sess, "chat_id": started.chat_id}
        stored = not sess["incognito"]
        first, extras_due, worded = True, True, False
        for rows, index, snap, shown in self.follow(sess, started.reply, view, user,
                                                    wire=True, lean=lean):
            sess = {**sess, "index": index}  # a new dict: the page has the one last sent
            stats = self.wire.text(stats_text(snap, sess["chat_id"] if lean else None))
            chat_id = sess["chat_id"] if stored else None
            if snap.done:
                conv = (self.list_update(user, "", chat_id, view[0] if view else None)
                        if stored else chat_id)
                yield sess, rows, stats, gr.update(visible=False), conv, \
                    "only" if first else "last", *window_buttons(shown)
            elif first:
                yield sess, rows, stats, gr.update(visible=True), chat_id, "first", \
                    *window_labels(shown)
            elif extras_due and worded:
                extras_due = False
                yield sess, rows, stats, STOP_LABEL, chat_id, "extras", *window_buttons(shown)
            else:
                yield sess, rows, stats, STOP_LABEL, chat_id, "middle", *window_labels(shown)
            first = False
            worded = worded or bool(snap.text or snap.thinking or snap.done)

    def replies(self, sess: dict, started: Started, view, user: str, page: str | None,
                token: str, lean: bool = False):
        """Stream ``started``, then each message the page queued meanwhile, in order, as
        each reply completes. Yields (sess, rows, stats, stop, conv_list, last_open, queue,
        earlier, newer).

        After a reply that did not complete (failed, stopped, the page left the chat), the
        waiting messages are held, not sent; a queued message the service refuses is held
        with the refusal's sentence. ``page``/``token`` come from ``PageQueues.begin``.
        Each reply's last update waits until the queue is decided, so it carries the queue
        as it then is (an API caller's result is that update)."""
        listed = not started.created
        told = False  # whether PageQueues has heard that the page's reply is over
        try:
            while True:
                last_open = started.chat_id if not sess["incognito"] else ""
                final = None
                sent_index = None  # the chatbot's index as the page's session last had it
                for sess, rows, stats, stop, conv, phase, *buttons in self.stream(
                        sess, started, view, user, lean):
                    # A new chat joins the sidebar with the extras, not the first update:
                    # the list costs a query and a rebuilt component, which the first token
                    # would wait for.
                    if not listed and phase == "extras":
                        conv = self.list_update(user, "", started.chat_id, page)
                    listed = listed or phase not in ("first", "middle")
                    if phase in ("last", "only"):
                        final = (sess, rows, stats, stop, conv, last_open)
                        continue
                    # The session goes to the page when its index changed (a row came,
                    # e.g. the thinking): a State output costs Gradio a config rebuild.
                    same = sent_index == sess["index"]
                    sent_index = list(sess["index"])
                    # Plain None in between: Gradio diffs it to nothing (``stream``).
                    yield (gr.skip() if same else sess, rows, stats, stop, conv, last_open,
                           self.queue_update(page) if phase == "extras" else None, *buttons)
                snap = started.reply.snapshot()
                if snap.done:  # a queued message's prompt must include this answer
                    started.reply.settled.wait(SETTLE_WAIT_S)
                reason = (LEFT if not self.views.holds(view) else
                          STOPPED if snap.error == STOPPED_BY_USER else
                          FAILED if snap.done else CLOSED)
                item = self.queues.ended(page, token, reason=reason, completed=(
                    snap.status == "complete" and self.views.holds(view)))
                told = item is None
                refusal = None
                if item is not None:
                    text, files = split_message(item.message)
                    try:
                        started = self.chat.send(
                            sess["chat_id"], text, files, model=item.model,
                            system_prompt=item.system_prompt, options=item.options,
                            user=user, incognito=sess["incognito"])
                    except StudioError as exc:
                        self.queues.refused(page, token, item, str(exc))
                        told, refusal = True, exc
                if final is not None:
                    yield (*final, self.queue_update(page), *buttons)
                if refusal is not None:
                    gr.Warning(f"A queued message was not sent: {refusal}")
                if told:
                    return
                listed = True
        finally:
            if not told:  # the page went away mid-reply: hold what waits, free the page
                self.queues.ended(page, token, completed=False, reason=CLOSED)

    # -- handlers ---------------------------------------------------------------------

    @ui_errors
    def on_refresh_models(self, current):
        return self.picker_update(model_picker(self.models, self.preferred_model()), current)

    def preferred_model(self) -> str:
        """STUDIO_DEFAULT_MODEL as a model id ("" when unset); "llama3.2" names the model
        Ollama lists as "llama3.2:latest"."""
        default = (self.settings.default_model or "").strip()
        return str(ModelId("ollama", full_model_name(default))) if default else ""

    def picker_update(self, picker, current, *, warn: bool = True):
        """The model picker showing ``picker`` (``ChatModels.picker``): ``current`` stays
        picked while it is offered; otherwise the picker's default (never a paid model),
        and, when ``warn``, a warning that the one picked is gone. Its help line says why
        models are missing, if some are (a page load shows no notice for that: the status
        strip says it already, and a notice stacked over the strip)."""
        value = current if current in picker.values else picker.default
        if warn and current and value != current:
            gr.Warning(GONE_MODEL.format(model=current, now=value or "nothing"))
        info = "⚠️ " + " ".join(picker.problems) if picker.problems else MODEL_INFO
        return gr.update(choices=picker.choices, value=value, info=info)

    def on_preset(self, key):
        preset = next((p for p in self.presets if p.key == key), None)
        merged = apply_preset(DEFAULT_PARAMS, preset)
        return (preset.system_prompt if preset else gr.skip(), merged["temperature"],
                merged["top_p"], merged["num_ctx"], merged["seed"], merged["max_tokens"])

    @ui_errors
    def on_open(self, chat_id, sess, request: gr.Request = None):
        """Open a stored conversation, in one update. Returns (session, chatbot, stats, stop,
        title, conv_list, model, last_open, queue, earlier, newer).

        A plain function, not a generator: Gradio sends a generator's last update twice (as
        it streams and again as the event completes), so a chat of 100 messages crossed the
        wire and was drawn twice. A reply still streaming there is followed by ``on_follow``,
        the event chained after this one."""
        user = page_user(request)
        page = page_of(request)
        if isinstance(chat_id, str) and chat_id.startswith((GROUP, MORE)):
            # "More chats…" (or a heading, which the page doesn't let anyone pick): the list
            # grows; the open chat, a reply streaming into it and its queue go on untouched.
            listed = self.list_update(user, "", sess.get("chat_id"), page,
                                      more=chat_id == MORE)
            return (*[gr.skip()] * 5, listed, *[gr.skip()] * 5)
        view = self.views.claim(request)
        self.queues.leave(page)
        # A search hit on a message is "<chat id>@<message id>": the chat opens at it.
        chat_id, _, at = str(chat_id or "").partition("@")
        if not chat_id:
            return (new_session(sess["incognito"]), [], "", gr.update(visible=False), "",
                    gr.skip(), gr.skip(), gr.skip(), self.queue_update(page),
                    *window_buttons(None))
        try:
            opened = self.chat.open(chat_id, user=user, newest_n=OPEN,
                                    at_message=int(at) if at.isdigit() else None)
        except NotFound as exc:
            gr.Warning(str(exc))
            return (new_session(), [], "", gr.update(visible=False), "",
                    self.list_update(user, page=page), gr.skip(), "", self.queue_update(page),
                    *window_buttons(None))
        return self.show(opened, sess, view, user, page)

    def show(self, opened: OpenChat, sess: dict, view, user: str, page: str | None = None):
        """The one update of ``on_open`` for a chat the service opened. The page's claim
        (``view``) stays in the session, for ``on_follow``."""
        if sess.get("incognito"):
            self.chat.end(sess.get("chat_id"))  # the page leaves its incognito chat
        sess = with_window({**new_session(), "chat_id": opened.chat_id}, opened.view)
        sess["view"], sess["streaming"] = view, opened.live is not None
        rows, sess["index"] = chatbot_value(opened.turns)
        return (sess, rows, "", gr.update(visible=opened.live is not None), opened.title,
                gr.skip(), opened.model_id or gr.skip(), opened.chat_id, self.queue_update(page),
                *window_buttons(opened.view))

    @ui_errors
    def on_follow(self, sess, request: gr.Request = None):
        """After a chat opened (``on_open``, ``on_page_load``): if a reply is still streaming
        into it, follow it until it ends or the page opens something else. Yields (session,
        chatbot, stats, stop); a single ``gr.skip()`` update when nothing streams."""
        user = page_user(request)
        sess = sess if isinstance(sess, dict) else new_session()
        view = sess.get("view")
        if not sess.get("streaming") or not sess.get("chat_id") or not self.views.holds(view):
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        try:
            live = self.chat.live_reply(sess["chat_id"], user=user)
        except NotFound:
            live = None
        if live is None:  # it ended (and was forgotten) between the open and now
            shown = self.chat.view(sess["chat_id"], user=user, window=(sess.get("first"), None))
            rows, index = chatbot_value(shown.turns)
            yield {**sess, "index": index, "streaming": False}, rows, "", gr.update(visible=False)
            return
        # Followed from here on: a later on_follow of this page (after "More chats…", which
        # opens nothing) must not start a second follower of the same reply.
        sess = {**sess, "streaming": False}
        # on_open showed the Stop button. In between, it is repeated as a plain value, which
        # Gradio diffs to nothing (a gr.update rebuilds the component every update).
        lean = lean_page(request)
        for rows, index, snap, _shown in self.follow(sess, live, view, user, lean=lean):
            sess["index"] = index
            yield (sess, rows, stats_text(snap, sess["chat_id"] if lean else None),
                   gr.update(visible=False) if snap.done else STOP_LABEL)

    @ui_errors
    def on_earlier(self, sess, request: gr.Request = None):
        """"Load earlier messages": a page more before what the chat shows (the newest
        go past ``window.MOST``). Returns (session, chatbot, earlier, newer)."""
        return self.move(sess, earlier, request)

    @ui_errors
    def on_newer(self, sess, request: gr.Request = None):
        """"Load newer messages": a page more after what the chat shows."""
        return self.move(sess, later, request)

    def move(self, sess: dict, step, request):
        user = page_user(request)
        chat_id = sess.get("chat_id")
        if not chat_id:
            return gr.skip(), gr.skip(), *window_buttons(None)
        window = step(self.chat.seqs(chat_id, user=user), (sess.get("first"), sess.get("last")))
        shown = self.chat.view(chat_id, user=user, window=window)
        if shown.live is not None:  # its follower owns the chatbot until the reply ends
            gr.Warning(BUSY_WINDOW)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        sess = with_window(sess, shown)
        rows, sess["index"] = chatbot_value(shown.turns)
        return sess, rows, *window_buttons(shown)

    @ui_errors
    def on_send(self, text, files, sess, model_id, system_prompt, incognito, temperature, top_p,
                num_ctx, seed, max_tokens, think_mode, ticket=None, request: gr.Request = None):
        """Send the message (its text and picture files), or queue it while this page's
        reply is still streaming. Yields (session, chatbot, stats, stop, conv_list,
        last_open, queue, earlier, newer). ``ticket``: the page's script sent the message
        already (``chat_quick``); its reply is followed here, nothing is sent again."""
        text, files = str(text or ""), [str(f) for f in files or []]
        user = page_user(request)
        page = page_of(request)
        self.quick.note(page, user)
        if ticket:
            yield from self.adopt(str(ticket), sess, user, request)
            return
        if not text.strip() and not files:
            # The usual outputs, unchanged, and a warning: returning nothing handed API
            # callers (gradio_client) None for the chatbot and every other output.
            gr.Warning(EMPTY_MESSAGE)
            yield (*self.unchanged(sess, user, EMPTY_MESSAGE), *[gr.skip()] * 3)
            return
        token = uuid.uuid4().hex
        options = collect_options(temperature, top_p, num_ctx, seed, max_tokens, think_mode)
        item = Queued.new({"text": text, "files": files}, model=model_id or "",
                          system_prompt=system_prompt or "", options=options)
        self.quick.sweep()  # a page whose quick send was never adopted is free again
        if not self.queues.begin(page, token, item):
            # Queued: this page's reply goes on untouched (its view isn't claimed). A message
            # that could never go is refused now, while its text can go back into the box.
            try:
                self.chat.check(text, files, model=model_id or "")
            except StudioError:
                self.queues.take(page, item.id)
                raise
            yield (*[gr.skip()] * 6, self.queue_update(page), gr.skip(), gr.skip())
            return
        try:
            view = self.views.claim(request)
            if bool(incognito) != sess["incognito"]:
                self.chat.end(sess.get("chat_id"))
                sess = new_session(incognito=bool(incognito))
            started = self.chat.send(
                sess["chat_id"], text, files, model=model_id or "",
                system_prompt=system_prompt or "", options=options, user=user,
                incognito=sess["incognito"])
        except BaseException:
            self.queues.ended(page, token, completed=False)  # refused: the page is free
            raise
        yield from self.replies(sess, started, view, user, page, token, lean_page(request))

    def adopt(self, ticket: str, sess: dict, user: str, request):
        """Follow the reply a quick send started, as if ``on_send`` had started it."""
        found = self.quick.take(ticket, page_of(request), user)
        if found is None:
            # Sent, but its page can't follow it any more (it waited too long): the chat
            # has it, and opening the chat shows it.
            gr.Warning(QUICK_LOST)
            yield (*[gr.skip()] * 6, self.queue_update(page_of(request)), gr.skip(), gr.skip())
            return
        yield from self.replies(sess, found.started, found.view, user, found.page, found.token,
                                lean_page(request))

    def on_take_back(self, item_id, box, attached, request: gr.Request = None):
        """A queued message clicked: it leaves the queue and goes back into the box (after
        what is there), its pictures after those attached. Yields nothing new when it was
        sent meanwhile. Returns (queue, box, attached)."""
        page = page_of(request)
        item = self.queues.take(page, item_id) if item_id else None
        if item is None:
            return self.queue_update(page), gr.skip(), gr.skip()
        merged = merge_into_box({"text": box or "", "files": list(attached or [])}, item.message)
        return self.queue_update(page), merged["text"], merged["files"] or None

    def unchanged(self, sess: dict, user: str, line: str):
        """on_send's outputs for a message not sent: the page's chat as it is, ``line`` under it."""
        chat_id = sess.get("chat_id")
        try:
            turns = self.chat.view(chat_id, user=user, window=(sess.get("first"), sess.get(
                "last"))).turns if chat_id else []
        except NotFound:  # deleted in another tab meanwhile
            turns = []
        last_open = "" if sess.get("incognito") else (sess.get("chat_id") or "")
        return (sess, self.wire.rows(chatbot_value(turns)[0]), self.wire.text(line), gr.skip(),
                gr.skip(), last_open)

    def on_stop(self, sess, request: gr.Request = None):
        try:
            self.chat.stop(sess.get("chat_id"), user=page_user(request))
        except NotFound:
            pass  # the chat went meanwhile: nothing is streaming into it

    @ui_errors
    def on_retry(self, sess, model_id, system_prompt, *param_values, request: gr.Request = None):
        """Regenerate the last answer (the chatbot's ↻ button)."""
        user = page_user(request)
        if sess.get("last") is not None:
            raise InvalidInput(RETRY_HIDDEN, hint=f'Press "{NEWER_LABEL}" until it shows, '
                                                  "then press ↻ again.")
        started = self.chat.retry(sess.get("chat_id"), model=model_id or "",
                                  system_prompt=system_prompt or "",
                                  options=collect_options(*param_values), user=user)
        if started is not None:
            yield from self.own_replies(sess, started, request, user)

    def own_replies(self, sess: dict, started: Started, request, user: str):
        """``replies`` for a retry or an edit: the page waits for them like for a send.
        Yields (sess, rows, stats, stop, conv_list, queue, earlier, newer)."""
        page, token = page_of(request), uuid.uuid4().hex
        self.queues.begin(page, token)
        for update in self.replies(sess, started, self.views.claim(request), user, page,
                                   token, lean_page(request)):
            yield (*update[:5], *update[6:])

    @ui_errors
    def on_edit(self, edit: gr.EditData, sess, model_id, system_prompt, *param_values,
                request: gr.Request = None):
        """Edit a user message and resend it: the edited message is a new version of its
        turn, with the new reply after it; the earlier one keeps its branch."""
        idx = edit.index if isinstance(edit.index, int) else edit.index[0]
        index = sess.get("index", [])
        if idx >= len(index) or index[idx] is None:  # a row of buttons: nothing to edit
            return
        user = page_user(request)
        # The box started from the text as shown (HTML-looking text escaped): undo that.
        text = typed_from_shown(edit.value if isinstance(edit.value, str) else str(edit.value))
        # The edit drops every turn after it, so the page shows from its window's start on.
        sess = {**sess, "last": None}
        started = self.chat.edit(sess.get("chat_id"), index[idx], text,
                                 model=model_id or "", system_prompt=system_prompt or "",
                                 options=collect_options(*param_values), user=user)
        if started is not None:
            yield from self.own_replies(sess, started, request, user)

    @ui_errors
    def on_turn_action(self, action, sess, model_id, system_prompt, *param_values,
                       request: gr.Request = None):
        """A button under a turn (``chat_values.turn_tools``): ↻ answers it again as a new
        version; ‹ › show the version before or after, with its later turns.
        Yields (sess, rows, stats, stop, conv_list, queue, earlier, newer)."""
        parsed = parse_turn_action(action)
        if parsed is None or not sess.get("chat_id"):
            return
        verb, seq = parsed
        user = page_user(request)
        if verb == "retry":
            started = self.chat.retry(sess["chat_id"], seq=seq, model=model_id or "",
                                      system_prompt=system_prompt or "",
                                      options=collect_options(*param_values), user=user)
            if started is not None:
                yield from self.own_replies(sess, started, request, user)
            return
        # The later turns change: the page keeps its window's start and shows the new
        # branch from there on (at most window.MOST turns; "Load newer" brings the rest).
        shown = self.chat.show_version(sess["chat_id"], seq, -1 if verb == "prev" else 1,
                                       user=user, first=sess.get("first"), most=MOST)
        self.views.claim(request)  # what a follower of this page still sends is stale
        sess = with_window(sess, shown)
        rows, sess["index"] = chatbot_value(shown.turns)
        rows = self.wire.rows(rows)  # postprocess=False, as for the replies it streams
        yield (sess, rows, "", gr.skip(), gr.skip(), self.queue_update(page_of(request)),
               *window_buttons(shown))

    def on_new(self, incognito, sess=None, request: gr.Request = None):
        """A new chat (button, the chatbot's trash icon, the incognito switch). Nothing is
        deleted; an incognito chat being left is forgotten."""
        self.views.claim(request)
        self.queues.leave(page_of(request))
        if sess and sess.get("incognito"):
            self.chat.end(sess.get("chat_id"))
        return (new_session(bool(incognito)), [], "", gr.update(visible=False), "",
                gr.update(value=None), "", self.queue_update(page_of(request)),
                *window_buttons(None))

    @ui_errors
    def on_search(self, query, request: gr.Request = None):
        """The chats matching ``query`` (else the page's chats, as deep as it had paged)
        and, when a search finds none, a line that says so."""
        listing = self.list_update(page_user(request), query, page=page_of(request))
        note = no_match_note(query, bool(listing["choices"]))
        return listing, gr.update(value=note, visible=bool(note))

    @ui_errors
    def on_rename(self, sess, title, request: gr.Request = None):
        user = page_user(request)
        self.chat.rename(sess.get("chat_id") if not sess["incognito"] else None, title,
                         user=user)
        return self.list_update(user, "", sess["chat_id"], page_of(request))

    @ui_errors
    def on_title(self, sess, request: gr.Request = None):
        """The open chat's title as stored now, for the box of "This chat" (a new chat's
        comes with its first message; a title model may write a better one later)."""
        return self.chat.title(sess.get("chat_id"), user=page_user(request))

    @ui_errors
    def on_pin(self, sess, request: gr.Request = None):
        """Pin the open chat to the top of the list, or unpin it. Returns the list."""
        user = page_user(request)
        chat_id = sess.get("chat_id") if not sess["incognito"] else None
        pinned = self.chat.toggle_pinned(chat_id, user=user)
        gr.Info("Pinned to the top of the list." if pinned else "Unpinned.")
        return self.list_update(user, "", chat_id, page_of(request))

    @ui_errors
    def on_import(self, upload, request: gr.Request = None):
        """Import an Open WebUI or ChatGPT export. Returns (report, list)."""
        if not upload:
            return gr.skip(), gr.skip()
        user = page_user(request)
        path = upload if isinstance(upload, str) else getattr(upload, "name", upload)
        report = self.chat.import_chats(path, user=user)
        return ("\n".join(f"- {line}" for line in report.lines()),
                self.list_update(user, page=page_of(request)))

    @ui_errors
    def on_delete(self, sess, request: gr.Request = None):
        user = page_user(request)
        if sess["incognito"] or not sess.get("chat_id"):
            return (new_session(sess["incognito"]), [], "",
                    self.list_update(user, page=page_of(request)), "", *window_buttons(None))
        self.chat.delete(sess["chat_id"], user=user)
        gr.Info("Conversation deleted.")
        return (new_session(), [], "", self.list_update(user, page=page_of(request)), "",
                *window_buttons(None))

    @ui_errors
    def on_export(self, sess, kind, request: gr.Request = None):
        path = self.chat.export(sess.get("chat_id"), kind, user=page_user(request))
        return gr.update(value=str(path), visible=True)

    def on_export_markdown(self, sess, request: gr.Request = None):
        return self.on_export(sess, "md", request)

    def on_export_json(self, sess, request: gr.Request = None):
        return self.on_export(sess, "json", request)

    def on_cost_hint(self, message, sess, model_id, max_tokens, request: gr.Request = None):
        """Estimate for the prompt as typed (cloud models), plus any budget warning."""
        text, _files = split_message(message)
        return " \n".join(self.chat.cost_hint(sess.get("chat_id"), text, model_id or "",
                                              max_tokens, user=page_user(request)))

    def on_page_load(self, last_id, sess, request: gr.Request = None):
        """A page opens: fill the lists and reopen the conversation this browser had open,
        in one update (a plain function: a generator's last update would come twice).

        Nothing here waits on a backend: the model picker is filled from the lists already
        known (``cached``), and ``app.py`` chains the check that asks Ollama after this
        update; a reply still streaming in the reopened chat is followed by ``on_follow``."""
        user = page_user(request)
        page = page_of(request)
        self.sidebars.note_zone(page, request)
        self.quick.note(page, user)
        # No notice on load: the status strip says what is down, the picker's help line too.
        models = self.picker_update(model_picker(self.models, self.preferred_model(), warn=False,
                                                 cached=True), None, warn=False)
        try:
            opened = self.chat.open(last_id, user=user, newest_n=OPEN) if last_id else None
        except NotFound:
            opened = None
        if opened is None:
            return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    self.list_update(user, page=page), models, gr.skip(), gr.skip(),
                    gr.skip(), gr.skip())
        first = list(self.show(opened, sess, self.views.claim(request), user, page))
        first[5] = self.list_update(user, "", last_id, page)
        choices = models.get("choices", []) if isinstance(models, dict) else []
        if any(value == opened.model_id for _label, value in choices):
            models["value"] = opened.model_id
        first[6] = models
        return tuple(first)
