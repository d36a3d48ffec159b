"""Replies that are generated on the server and outlive the browser request.

A ``LiveReply`` is fed by a background thread reading a backend's chat stream. Browser
requests only *follow* it: when a phone locks or a tab closes, the thread goes on, the
reply completes and is stored, and any page that opens the conversation later follows
the same reply (still streaming, or finished). The store is written about once a second
while streaming, and once more at the end, so even a crash keeps most of a reply.

No gradio imports here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

from ..errors import StreamInterrupted, StudioError
from ..model_id import ModelId
from ..events import (ChatDelta, ChatDone, ChatGeneration, ChatMessage, ChatNotice, ChatOptions,
                      ChatRetrying, ChatThinking, ChatToolCall, Usage)
from ..live import Live, Registry

log = logging.getLogger(__name__)

# stream_fn(model_id, messages, options, *, user) -> iterator of chat events
StreamFn = Callable[..., Iterator[object]]

STOPPED_BY_USER = "Stopped by you before the reply finished."

# How a page follows a reply (``ReplyManager.follow``). Each update costs the server a few
# ms whatever it carries (Gradio rebuilds, diffs and sends the outputs: bench/
# profile_stream.py), so updates are coalesced by the reply's own pace: the first words go
# out the moment they arrive; after each update the follower lets tokens pile up for a gap
# that starts at START_GAP_S and grows to the follower's ``interval`` over RAMP_S of
# streaming (the start of a reply reads as typed, then ~8 updates a second read as smooth);
# a token that comes after the gap has passed goes out at once, so a slow model's every
# token shows when it lands.
START_GAP_S = 0.04
RAMP_S = 1.0
# How long a reply's thread waits, once the reply ended, for the turn it goes into to be
# written (``ReplyManager.start(unplaced=True)``) before it says so in the log. It then
# waits on: a write behind a long one (an import) may take longer, and the one caller
# (``ChatService._start``) always says ``place`` or ``abandon``. Given up, a turn written
# late would keep an empty "streaming" answer the reply never fills in.
PLACE_SLOW_S = 60.0


def update_gap(streaming_s: float, interval: float) -> float:
    """Seconds a follower waits after an update, ``streaming_s`` seconds after the reply's
    first token, when updates come at most every ``interval`` once the reply streams
    steadily. Grows from ``min(START_GAP_S, interval)`` to ``interval`` over ``RAMP_S``.

    >>> [round(update_gap(t, 0.125), 4) for t in (0.0, 0.5, 1.0, 5.0)]
    [0.04, 0.0825, 0.125, 0.125]
    >>> update_gap(2.0, 0.01)  # finer than the start: that interval throughout
    0.01
    """
    start = min(START_GAP_S, interval)
    return start + (interval - start) * min(1.0, max(0.0, streaming_s) / RAMP_S)


@dataclass(frozen=True)
class ReplySnapshot:
    """What a follower sees of a reply at one moment (immutable, cheap to copy)."""

    reply_id: str
    conversation_id: str | None
    message_id: int | None
    model_id: str
    text: str
    thinking: str
    notices: tuple[str, ...]
    status: str  # streaming | complete | partial | error
    error: str
    ttft_ms: float | None
    elapsed_ms: float
    usage: Usage
    backend: str
    answered_by: str
    version: int
    via: str = ""  # how the request came in: "" from a page, "api: <key name>"
    tool_calls: tuple[ChatToolCall, ...] = ()  # tools the model asked an API caller to run
    # The StudioError class that ended the reply ("" when none did), for the error metrics:
    # a name from the code, never the message.
    failure_kind: str = ""
    # While the router waits to retry: what failed and when it tries again ("" otherwise).
    # Shown in place of the answer until text arrives; never stored.
    retrying: str = ""

    @property
    def done(self) -> bool:
        return self.status != "streaming"


@dataclass(eq=False)
class LiveReply(Live):
    reply_id: str
    conversation_id: str | None
    message_id: int | None
    model_id: str
    via: str = ""
    started: float = field(default_factory=time.monotonic)
    text_parts: list[str] = field(default_factory=list)
    thinking_parts: list[str] = field(default_factory=list)
    pieces: int = 0  # answer and thinking pieces received: the token count of a cut-off reply
    notices: list[str] = field(default_factory=list)
    tool_calls: list[ChatToolCall] = field(default_factory=list)
    status: str = "streaming"
    error: str = ""
    first_token: float | None = None
    usage: Usage = field(default_factory=Usage)
    backend: str = ""
    answered_by: str = ""
    fallback_reason: str = ""  # why another model answered than the one asked for
    failure: StudioError | None = None  # what ended it, for callers that map errors (the API)
    failure_kind: str = ""  # its class name, or "UnexpectedError" (the error metrics)
    retrying: str = ""  # the router's line while it waits to retry (ChatRetrying)
    cancel: threading.Event = field(default_factory=threading.Event)
    # Set once the worker is all done: the reply stored, accounted and its on_finish run.
    settled: threading.Event = field(default_factory=threading.Event)
    # Set when the reply ends (``finished``): a follower waiting out its gap wakes for the
    # end only, not for every token (a wake per token is CPU for nothing).
    ended: threading.Event = field(default_factory=threading.Event)
    # Set once the reply's place in the store is known (``ReplyManager.place``), or that it
    # has none (``abandon``): a reply may start before its turn is written, and nothing of
    # it is stored, accounted or finished before then. Set from the start unless ``start``
    # was told otherwise.
    placed: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # its turn could not be written: it is stored nowhere
    # Joined text cached per version, so followers don't re-join a 5,000-part list each time.
    _joined: tuple[int, str, str] = (-1, "", "")

    def notify(self) -> None:
        super().notify()
        if self.finished is not None:
            self.ended.set()

    def _snapshot_locked(self) -> ReplySnapshot:
        if self._joined[0] != self.version:
            self._joined = (self.version, "".join(self.text_parts), "".join(self.thinking_parts))
        end = self.finished or time.monotonic()
        return ReplySnapshot(
            reply_id=self.reply_id, conversation_id=self.conversation_id,
            message_id=self.message_id, model_id=self.model_id,
            text=self._joined[1], thinking=self._joined[2], notices=tuple(self.notices),
            status=self.status, error=self.error,
            ttft_ms=None if self.first_token is None else (self.first_token - self.started) * 1000,
            elapsed_ms=(end - self.started) * 1000, usage=self.usage, backend=self.backend,
            answered_by=self.answered_by or self.model_id, version=self.version, via=self.via,
            tool_calls=tuple(self.tool_calls),
            failure_kind=self.failure_kind,
            retrying=self.retrying if self.status == "streaming" else "")


class ReplyManager:
    """Starts replies on background threads and lets any request follow them.

    ``stream_fn(model_id, messages, options)`` yields ChatDelta / ChatThinking /
    ChatNotice / ChatRetrying / ChatDone and raises StudioError on failure. ``store`` may be None
    (incognito replies are never written).
    """

    def __init__(self, stream_fn: StreamFn, store=None, *, flush_every: float = 1.0,
                 keep_finished: float = 600.0, keep_count: int = 256,
                 on_settled: Callable[[ReplySnapshot, str], None] | None = None):
        self._stream_fn = stream_fn
        self._store = store
        # Called once per reply when it ends (complete, partial or error), with its user:
        # the place usage accounting hooks in, for stored and incognito replies alike.
        self._on_settled = on_settled
        self._flush_every = flush_every
        # Finished replies stay findable for a while (a page reopening the chat, a late
        # follower), but at most ``keep_count`` of them: their text is in the store, and a
        # busy studio kept ~10 KB per turn for ten minutes (bench/bench_memory.py).
        self._replies: Registry[LiveReply] = Registry(keep=keep_count, keep_s=keep_finished)

    def start(self, model_id: str, messages: Sequence[ChatMessage], options: ChatOptions, *,
              conversation_id: str | None = None, message_id: int | None = None,
              user: str = "owner", via: str = "", exact: bool = False,
              on_progress: Callable[[ReplySnapshot], None] | None = None,
              on_finish: Callable[[ReplySnapshot], None] | None = None,
              unplaced: bool = False) -> LiveReply:
        """Start generating; returns at once. With ``message_id`` the reply is stored there.
        ``via`` says how the request came in (kept with its usage); ``exact`` asks for that
        model only, no fallback (``ChatStreams.open``).

        ``unplaced``: the reply's turn is still being written. The model's request goes out
        now and its text streams to followers, but nothing is stored, accounted or
        finished until ``place`` says where it goes, or ``abandon`` that it goes nowhere.

        ``on_progress`` gets a snapshot as often as a stored reply is flushed (``flush_every``),
        for callers that keep the text elsewhere (the arena), so a restart loses little."""
        reply = LiveReply(reply_id=uuid.uuid4().hex, conversation_id=conversation_id,
                          message_id=message_id, model_id=model_id, via=via)
        if not unplaced:
            reply.placed.set()
        self._replies.add(reply.reply_id, reply)
        thread = threading.Thread(target=self._run,
                                  args=(reply, list(messages), options, user, on_progress,
                                        on_finish, exact),
                                  name=f"reply-{reply.reply_id[:8]}", daemon=True)
        thread.start()
        return reply

    def place(self, reply: LiveReply, *, conversation_id: str | None,
              message_id: int | None) -> None:
        """An ``unplaced`` reply's turn is written: its text goes into ``message_id``."""
        with reply.cond:
            reply.conversation_id, reply.message_id = conversation_id, message_id
            reply.placed.set()
            reply.notify()  # a quick send's stream says the turn is saved (ui/live.py)

    def abandon(self, reply: LiveReply, error: str) -> None:
        """An ``unplaced`` reply's turn could not be written: the reply stops, with
        ``error`` as its end, and is stored nowhere. It is accounted and its ``on_finish``
        called as for any reply (``reply.abandoned`` says it went nowhere)."""
        with reply.cond:
            reply.abandoned = True
            reply.cancel.set()
            if reply.status == "streaming":
                reply.finished = time.monotonic()
                _keep_figures_so_far(reply)
            # Also when it had ended: a whole answer that went nowhere is not "complete".
            reply.status, reply.error = "error", error
            reply.placed.set()
            reply.notify()

    def get(self, reply_id: str) -> LiveReply | None:
        return self._replies.get(reply_id)

    def for_message(self, message_id: int) -> LiveReply | None:
        """The latest reply stored into this message, if it is still remembered."""
        return next((r for r in reversed(self._replies.items()) if r.message_id == message_id),
                    None)

    def active_in(self, conversation_id: str) -> LiveReply | None:
        """The reply still streaming in this conversation, if any."""
        reply = next((r for r in reversed(self._replies.items())
                      if r.conversation_id == conversation_id), None)
        return reply if reply is not None and reply.status == "streaming" else None

    def active_model_ids(self) -> list[str]:
        """Model ids (``backend:name``) of the replies streaming right now."""
        return [r.model_id for r in self._replies.items() if r.status == "streaming"]

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every reply still remembered has settled (stored, accounted, its
        ``on_finish`` run); True when all did within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return all(reply.settled.wait(max(0.0, deadline - time.monotonic()))
                   for reply in self._replies.items())

    def active_count(self) -> int:
        return len(self.active_model_ids())

    def stop(self, reply_id: str) -> bool:
        """Stop a reply now: its text freezes at once and the stream is closed promptly."""
        reply = self.get(reply_id)
        if reply is None:
            return False
        with reply.cond:
            if reply.status != "streaming":
                return False
            reply.cancel.set()
            reply.status = "partial"
            reply.error = STOPPED_BY_USER
            reply.finished = time.monotonic()
            _keep_figures_so_far(reply)
            reply.notify()
        self._persist(reply, final=True)
        return True

    def follow(self, reply: LiveReply, *, interval: float = 0.125, first_wait: float = 0.0,
               timeout: float = 3600.0, text_interval: float | None = None
               ) -> Iterator[ReplySnapshot]:
        """Yield snapshots as the reply grows; the last is done. Updates are coalesced by
        the reply's pace (``update_gap``): the first one with text the moment it arrives,
        then at most one per gap, the gap growing from ``START_GAP_S`` to ``interval``.

        Coalescing matters: at full speed a model emits thousands of tokens a second, and
        at a model's pace (30-100 tokens/s) one browser update per token would cost the
        server more CPU than reading the model's stream.

        ``first_wait``: before the first snapshot, wait up to this long for something to
        show (a token, a notice, the end); the wait ends the moment one arrives. A fast
        model's first update then carries text, and the first token is not queued behind
        an update that only says "waiting".

        ``text_interval``: once the answer's text flows, at most one snapshot per that many
        seconds (a page that receives the text itself over ``/studio/live``, ``ui/live.py``,
        needs the rest of the reply only now and then); the end still comes at once.
        """
        deadline = time.monotonic() + timeout
        if first_wait > 0:
            reply.wait_until(lambda: reply.text_parts or reply.thinking_parts
                             or reply.notices or reply.retrying
                             or reply.finished is not None, first_wait)
        version = -1
        while True:
            snap = reply.wait_newer(version, timeout=max(0.0, min(30.0, deadline - time.monotonic())))
            if snap.version != version or snap.done:
                version = snap.version
                yield snap
            if snap.done or time.monotonic() > deadline:
                return
            first_token = reply.first_token
            if interval and first_token is not None:
                # Let tokens pile up for a moment; the end wakes us early. Not before the
                # first token: that one goes out the moment it arrives.
                gap = update_gap(time.monotonic() - first_token, interval)
                if text_interval is not None and snap.text:
                    gap = max(gap, text_interval)
                reply.ended.wait(gap)

    # -- the worker ---------------------------------------------------------------------

    def _run(self, reply: LiveReply, messages: list[ChatMessage], options: ChatOptions,
             user: str, on_progress, on_finish, exact: bool = False) -> None:
        last_flush = time.monotonic()
        stream = None
        try:
            # Only asked for when wanted: a stream_fn may not take the keyword.
            stream = self._stream_fn(reply.model_id, messages, options, user=user,
                                     **({"exact": True} if exact else {}))
            for event in stream:
                if reply.cancel.is_set():
                    break
                with reply.cond:
                    if reply.status != "streaming":
                        break
                    if not isinstance(event, ChatNotice):
                        reply.retrying = ""  # the wait is over: text (or the end) came
                    if isinstance(event, ChatRetrying):
                        reply.retrying = event.text
                    elif isinstance(event, ChatDelta):
                        if event.text:
                            reply.text_parts.append(event.text)
                            reply.pieces += 1
                            self._mark_first_token(reply)
                    elif isinstance(event, ChatThinking):
                        if event.text:
                            reply.thinking_parts.append(event.text)
                            reply.pieces += 1
                            self._mark_first_token(reply)
                    elif isinstance(event, ChatToolCall):
                        reply.tool_calls.append(event)
                        self._mark_first_token(reply)
                    elif isinstance(event, ChatNotice):
                        reply.notices.append(event.text)
                    elif isinstance(event, ChatGeneration):
                        reply.usage = replace(reply.usage, generation_id=event.id)
                    elif isinstance(event, ChatDone):
                        reply.usage = (event.usage if event.usage.generation_id else replace(
                            event.usage, generation_id=reply.usage.generation_id))
                        reply.backend = event.backend
                        reply.answered_by = event.model
                        reply.fallback_reason = event.fallback_reason or ""
                    reply.notify()
                if time.monotonic() - last_flush >= self._flush_every:
                    last_flush = time.monotonic()
                    self._persist(reply, final=False)
                    if on_progress is not None:
                        try:
                            on_progress(reply.snapshot())
                        except Exception:  # noqa: BLE001 - a failed flush must not end the reply
                            log.exception("on_progress hook failed for reply %s", reply.reply_id)
            self._finish(reply, "complete", "")
        except StudioError as exc:
            reply.failure = exc
            reply.failure_kind = type(exc).__name__
            # A stream cut midway: what happened, without the client's "try again" (the
            # page's note under the reply gives the one way to retry, its ↻).
            said = exc.message if isinstance(exc, StreamInterrupted) else str(exc)
            self._finish(reply, "partial" if reply.text_parts else "error", said)
        except Exception as exc:  # noqa: BLE001 - a worker thread must always settle its reply
            log.exception("reply %s failed", reply.reply_id)
            reply.failure_kind = "UnexpectedError"
            self._finish(reply, "partial" if reply.text_parts else "error",
                         f"Unexpected error while generating ({type(exc).__name__}). "
                         "The studio log has the details.")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()  # closes the HTTP stream so the backend stops generating
                except Exception:  # noqa: BLE001
                    log.debug("closing stream failed", exc_info=True)
            if not reply.placed.wait(PLACE_SLOW_S):
                log.warning("reply %s: its turn is not written after %s s; still waiting",
                            reply.reply_id, PLACE_SLOW_S)
                reply.placed.wait()
            self._persist(reply, final=True)
            if self._on_settled is not None:
                try:
                    self._on_settled(reply.snapshot(), user)
                except Exception:  # noqa: BLE001 - accounting must never break a reply
                    log.exception("accounting hook failed for reply %s", reply.reply_id)
            if on_finish is not None:
                try:
                    on_finish(reply.snapshot())
                except Exception:  # noqa: BLE001
                    log.exception("on_finish hook failed")
            reply.settled.set()

    @staticmethod
    def _mark_first_token(reply: LiveReply) -> None:
        if reply.first_token is None:
            reply.first_token = time.monotonic()

    @staticmethod
    def _finish(reply: LiveReply, status: str, error: str) -> None:
        with reply.cond:
            if reply.status == "streaming":  # a Stop may have settled it already
                reply.status = status
                reply.error = error
                reply.finished = time.monotonic()
                _keep_figures_so_far(reply)
            reply.notify()

    def _persist(self, reply: LiveReply, *, final: bool) -> None:
        # Not placed yet: the reply's own thread stores it once it is (``_run``).
        if (self._store is None or not reply.placed.is_set() or reply.abandoned
                or reply.message_id is None):
            return
        snap = reply.snapshot()
        if not final and snap.done:
            return
        fields = {"content": snap.text, "thinking": snap.thinking, "status": snap.status,
                  "error": snap.error}
        if final:
            u = snap.usage
            fields.update(
                model=snap.answered_by, backend=snap.backend or ModelId.parse(snap.model_id).backend,
                prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                ttft_ms=snap.ttft_ms, tokens_per_s=u.tokens_per_s, load_ms=u.load_ms,
                total_ms=snap.elapsed_ms, cost_usd=u.cost_usd,
                meta={"notices": list(snap.notices), "done_reason": u.done_reason,
                      "cost_is_estimate": u.cost_is_estimate, "requested": snap.model_id,
                      "fallback_reason": reply.fallback_reason or None})
        try:
            self._store.update_message(reply.message_id, **fields)
        except Exception:  # noqa: BLE001 - a deleted conversation must not kill the stream
            log.warning("could not store reply %s", reply.reply_id, exc_info=True)


def _keep_figures_so_far(reply: LiveReply) -> None:
    """A reply that ended before the backend's figures came (cut off, stopped) keeps what
    is known: one token per piece received (Ollama streams one token a piece; cloud
    providers about that) and their rate since the first. Called with ``reply.cond`` held.
    Reported figures are never replaced, and no cost is made up (it needs the prompt's)."""
    u = reply.usage
    if u.completion_tokens is not None or not reply.pieces or reply.finished is None:
        return
    seconds = reply.finished - reply.first_token if reply.first_token is not None else 0.0
    reply.usage = replace(u, completion_tokens=reply.pieces,
                          tokens_per_s=reply.pieces / seconds if seconds > 0 else None)
