"""The reply manager: generation on a server thread that outlives the request following it."""

import threading

import pytest

from studio.errors import StreamInterrupted
from studio.events import ChatDelta, ChatDone, ChatMessage, ChatNotice, ChatOptions, ChatThinking, Usage
from studio.chat.replies import RAMP_S, START_GAP_S, STOPPED_BY_USER, ReplyManager, update_gap


class RecordingStore:
    def __init__(self):
        self.updates = []

    def update_message(self, message_id, **fields):
        self.updates.append((message_id, fields))


def scripted(*events, gate: threading.Event | None = None, after: int = 0, closed=None):
    """A stream_fn yielding events; optionally blocks on ``gate`` after ``after`` events."""
    def stream_fn(model_id, messages, options, *, user="owner"):
        def gen():
            try:
                for i, ev in enumerate(events):
                    if gate is not None and i == after:
                        gate.wait(5)
                    if isinstance(ev, Exception):
                        raise ev
                    yield ev
            finally:
                if closed is not None:
                    closed.set()
        return gen()
    return stream_fn


def run_to_end(manager, **kw):
    reply = manager.start("ollama:m", [ChatMessage("user", "hi")], ChatOptions(), **kw)
    snaps = list(manager.follow(reply, interval=0))
    return reply, snaps


def test_replies_complete_reply_collects_text_and_usage():
    done = ChatDone("ollama", "m", Usage(completion_tokens=2, tokens_per_s=40.0))
    manager = ReplyManager(scripted(ChatThinking("hmm"), ChatDelta("Hel"), ChatDelta("lo"), done))
    _, snaps = run_to_end(manager)
    last = snaps[-1]
    assert (last.status, last.text, last.thinking) == ("complete", "Hello", "hmm")
    assert last.usage.completion_tokens == 2 and last.backend == "ollama"
    assert last.ttft_ms is not None and last.ttft_ms >= 0


def test_replies_reply_is_stored_when_nobody_follows():
    store = RecordingStore()
    finished = threading.Event()
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDelta("b"), ChatDone("ollama", "m")), store)
    manager.start("ollama:m", [], ChatOptions(), message_id=7, on_finish=lambda s: finished.set())
    assert finished.wait(5)
    message_id, fields = store.updates[-1]
    assert message_id == 7 and fields["content"] == "ab" and fields["status"] == "complete"


def test_replies_cut_stream_keeps_partial_text_marked_partial():
    store = RecordingStore()
    cut = StreamInterrupted("The connection to Ollama dropped in the middle of the reply.")
    manager = ReplyManager(scripted(ChatDelta("half an "), ChatDelta("answer"), cut), store)
    _, snaps = run_to_end(manager, message_id=1)
    assert snaps[-1].status == "partial" and snaps[-1].text == "half an answer"
    assert "dropped" in snaps[-1].error
    assert store.updates[-1][1]["status"] == "partial"
    assert store.updates[-1][1]["content"] == "half an answer"


def test_replies_cut_reply_keeps_its_figures_so_far_and_one_instruction():
    store = RecordingStore()
    cut = StreamInterrupted("The connection to Ollama dropped in the middle of the reply.",
                            hint="What arrived so far is kept; send the message again to retry.")
    manager = ReplyManager(scripted(ChatThinking("hm"), ChatDelta("half an "), ChatDelta("answer"),
                                    cut), store)
    _, snaps = run_to_end(manager, message_id=1)
    last = snaps[-1]
    assert last.usage.completion_tokens == 3  # one a piece, thinking included
    assert last.usage.tokens_per_s is None or last.usage.tokens_per_s > 0
    assert last.usage.cost_usd is None  # no cost made up
    stored = store.updates[-1][1]
    assert stored["completion_tokens"] == 3 and stored["ttft_ms"] is not None
    # What happened, without the client's own way to retry: the page gives one (↻).
    assert stored["error"] == "The connection to Ollama dropped in the middle of the reply."


def test_replies_reported_figures_are_kept_when_a_reply_is_cut_after_them():
    done = ChatDone("ollama", "m", Usage(completion_tokens=40, tokens_per_s=12.0))
    manager = ReplyManager(scripted(ChatDelta("a"), done, StreamInterrupted("late")))
    _, snaps = run_to_end(manager)
    assert (snaps[-1].usage.completion_tokens, snaps[-1].usage.tokens_per_s) == (40, 12.0)


def test_replies_failure_before_any_text_is_an_error():
    manager = ReplyManager(scripted(StreamInterrupted("gone")))
    _, snaps = run_to_end(manager)
    assert snaps[-1].status == "error" and snaps[-1].text == ""


def test_replies_unexpected_exception_settles_reply_with_pointer_to_log():
    manager = ReplyManager(scripted(ChatDelta("x"), KeyError("boom")))
    _, snaps = run_to_end(manager)
    assert snaps[-1].status == "partial" and "log" in snaps[-1].error


def test_replies_stop_freezes_text_and_closes_stream():
    gate, closed = threading.Event(), threading.Event()
    store = RecordingStore()
    manager = ReplyManager(scripted(ChatDelta("one "), ChatDelta("two"), ChatDone("ollama", "m"),
                                    gate=gate, after=1, closed=closed), store)
    reply = manager.start("ollama:m", [], ChatOptions(), message_id=3)
    follower = manager.follow(reply, interval=0)
    first = next(follower)
    while first.text != "one ":
        first = next(follower)
    assert manager.stop(reply.reply_id)
    gate.set()
    rest = list(follower)
    assert rest[-1].status == "partial" and rest[-1].text == "one "
    assert rest[-1].error == STOPPED_BY_USER
    assert rest[-1].usage.completion_tokens == 1  # the figures so far stay
    assert closed.wait(5)
    assert store.updates[-1][1]["status"] == "partial"
    assert store.updates[-1][1]["completion_tokens"] == 1


def test_replies_two_followers_see_the_same_reply():
    gate = threading.Event()
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDelta("b"), ChatDone("ollama", "m"),
                                    gate=gate, after=1))
    reply = manager.start("ollama:m", [], ChatOptions(), conversation_id="c1")
    assert manager.active_in("c1") is reply
    gate.set()
    one = list(manager.follow(reply, interval=0))[-1]
    two = list(manager.follow(reply, interval=0))[-1]
    assert one.text == two.text == "ab"
    assert manager.active_in("c1") is None


def test_replies_notice_is_kept():
    manager = ReplyManager(scripted(ChatNotice("Switched to x"), ChatDelta("hi"),
                                    ChatDone("openrouter", "x")))
    _, snaps = run_to_end(manager)
    assert snaps[-1].notices == ("Switched to x",)
    assert snaps[-1].answered_by == "x"


def test_replies_follow_coalesces_updates():
    events = [ChatDelta(f"t{i} ") for i in range(500)] + [ChatDone("ollama", "m")]
    manager = ReplyManager(scripted(*events))
    reply = manager.start("ollama:m", [], ChatOptions())
    snaps = list(manager.follow(reply, interval=0.05))
    assert snaps[-1].text.count("t") == 500
    assert len(snaps) < 100


@pytest.mark.parametrize("interval", [0.125, 0.3, 0.04, 0.01])
def test_replies_update_gap_grows_from_the_start_gap_to_the_interval(interval):
    gaps = [update_gap(t / 10, interval) for t in range(-1, 40)]
    assert gaps[0] == gaps[1] == min(START_GAP_S, interval)  # the first words: finest
    assert gaps == sorted(gaps)  # never finer later on
    assert max(gaps) == pytest.approx(interval)
    assert update_gap(RAMP_S, interval) == pytest.approx(interval)


def test_replies_follow_piles_tokens_up_during_its_gap_and_the_end_cuts_it_short():
    """A follower waiting out its gap (woken by the reply's end only, not by each token)
    sends what came meanwhile as one update."""
    gate = threading.Event()
    events = [ChatDelta("a")] + [ChatDelta("b")] * 50 + [ChatDone("ollama", "m")]
    manager = ReplyManager(scripted(*events, gate=gate, after=1))
    reply = manager.start("ollama:m", [], ChatOptions())
    follower = manager.follow(reply, interval=30.0, first_wait=5.0)
    first = next(follower)
    gate.set()  # the other tokens and the end come while the follower waits (30 s gap)
    rest = list(follower)  # the end cut the gap short
    assert first.text == "a" and len(rest) == 1 and rest[0].text == "a" + "b" * 50


@pytest.mark.parametrize("unknown", ["nope", ""])
def test_replies_stop_unknown_reply_is_false(unknown):
    assert ReplyManager(scripted()).stop(unknown) is False


def test_replies_settled_hook_gets_every_ending_once_with_user():
    seen, finished = [], threading.Event()
    done = ChatDone("ollama", "m", Usage(completion_tokens=1))
    manager = ReplyManager(scripted(ChatDelta("x"), done),
                           on_settled=lambda snap, user: seen.append((snap.status, user)))
    manager.start("ollama:m", [], ChatOptions(), user="alice",
                  on_finish=lambda snap: finished.set())  # runs after the settled hook
    assert finished.wait(5)
    assert seen == [("complete", "alice")]


def test_replies_follow_sends_first_token_without_waiting_the_interval():
    first_gate, rest_gate = threading.Event(), threading.Event()

    def stream_fn(model_id, messages, options, *, user="owner"):
        first_gate.wait(5)
        yield ChatDelta("first")
        rest_gate.wait(5)  # the reply stays unfinished while we look
        yield ChatDone("ollama", "m")

    manager = ReplyManager(stream_fn)
    reply = manager.start("ollama:m", [], ChatOptions())
    follower = manager.follow(reply, interval=30.0)  # a huge interval must not delay token 1
    assert next(follower).text == ""
    first_gate.set()
    got = []
    reader = threading.Thread(target=lambda: got.append(next(follower)))
    reader.start()
    reader.join(5)
    rest_gate.set()
    assert got and got[0].text == "first" and not got[0].done


def gated_first_token():
    """A stream_fn whose first token waits for ``first``; the reply then waits for ``rest``."""
    first, rest = threading.Event(), threading.Event()

    def stream_fn(model_id, messages, options, *, user="owner"):
        first.wait(5)
        yield ChatDelta("first")
        rest.wait(5)
        yield ChatDone("ollama", "m")
    return stream_fn, first, rest


def test_replies_follow_first_wait_lets_a_quick_first_token_lead():
    stream_fn, first, rest = gated_first_token()
    manager = ReplyManager(stream_fn)
    reply = manager.start("ollama:m", [], ChatOptions())
    threading.Timer(0.05, first.set).start()
    try:
        snap = next(manager.follow(reply, interval=30.0, first_wait=5.0))
        assert snap.text == "first" and not snap.done  # no "waiting" update before it
    finally:
        rest.set()


def test_replies_follow_first_wait_gives_up_for_a_slow_model():
    import time

    stream_fn, first, rest = gated_first_token()
    manager = ReplyManager(stream_fn)
    reply = manager.start("ollama:m", [], ChatOptions())
    try:
        t0 = time.monotonic()
        snap = next(manager.follow(reply, interval=30.0, first_wait=0.1))
        waited = time.monotonic() - t0
        assert snap.text == "" and not snap.done  # the page shows the sent message meanwhile
        assert 0.09 <= waited < 3.0
    finally:
        first.set()
        rest.set()


def test_replies_only_the_newest_finished_replies_are_kept_in_memory():
    done = ChatDone("ollama", "m", Usage(completion_tokens=1))
    manager = ReplyManager(scripted(ChatDelta("x" * 1000), done), keep_count=5)
    replies = [run_to_end(manager)[0] for _ in range(12)]
    live = manager.start("ollama:m", [ChatMessage("user", "hi")], ChatOptions())  # forgets old
    assert live.settled.wait(5)
    kept = [r for r in replies if manager.get(r.reply_id) is not None]
    assert kept == replies[-5:]  # the newest finished ones, which a page may still ask for


def test_replies_an_unplaced_reply_streams_now_and_is_stored_once_placed():
    """A reply asked for before its turn is written: its text reaches followers at once, but
    it is stored, and its on_finish runs, only once ``place`` says where it goes, even when
    it ended before."""
    store = RecordingStore()
    finished = []
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDelta("b"), ChatDone("ollama", "m")),
                           store)
    reply = manager.start("ollama:m", [], ChatOptions(), on_finish=finished.append,
                          unplaced=True)
    snaps = list(manager.follow(reply, interval=0))
    assert snaps[-1].done and snaps[-1].text == "ab"
    assert not reply.settled.wait(0.3)
    assert store.updates == [] and finished == []
    manager.place(reply, conversation_id="c1", message_id=7)
    assert reply.settled.wait(5)
    assert store.updates[-1][0] == 7 and store.updates[-1][1]["content"] == "ab"
    assert finished and finished[0].message_id == 7 and finished[0].conversation_id == "c1"


def test_replies_an_abandoned_reply_stops_and_is_stored_nowhere():
    """Its turn could not be written: the reply stops (its stream is closed), ends with the
    reason, and nothing is stored; its on_finish still runs (what it booked is freed)."""
    store = RecordingStore()
    gate, closed = threading.Event(), threading.Event()
    finished = []
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDelta("b"), ChatDone("ollama", "m"),
                                    gate=gate, after=1, closed=closed), store)
    reply = manager.start("ollama:m", [], ChatOptions(), on_finish=finished.append,
                          unplaced=True)
    assert reply.wait_until(lambda: reply.text_parts, 5)
    manager.abandon(reply, "The disk is full.")
    gate.set()
    assert reply.settled.wait(5) and closed.wait(5)
    snap = reply.snapshot()
    assert (snap.status, snap.error, snap.text) == ("error", "The disk is full.", "a")
    assert store.updates == [] and [s.status for s in finished] == ["error"]


def test_replies_a_reply_abandoned_after_it_ended_is_an_error_stored_nowhere():
    """The whole answer came before its turn failed to be written: it ends as an error with
    the reason (not "complete"), and its on_finish says so."""
    store = RecordingStore()
    finished = []
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDone("ollama", "m")), store)
    reply = manager.start("ollama:m", [], ChatOptions(), on_finish=finished.append,
                          unplaced=True)
    assert reply.ended.wait(5) and reply.snapshot().status == "complete"
    manager.abandon(reply, "The disk is full.")
    assert reply.settled.wait(5)
    snap = reply.snapshot()
    assert (snap.status, snap.error, snap.text) == ("error", "The disk is full.", "a")
    assert store.updates == [] and [s.status for s in finished] == ["error"]


def test_replies_an_unplaced_reply_waits_for_its_place_however_long_the_write_takes(
        monkeypatch):
    """A write queued behind a long one is slow, not failed: the reply's thread waits on
    past the point where it says so, and the reply is stored once placed."""
    monkeypatch.setattr("studio.chat.replies.PLACE_SLOW_S", 0.05)
    store = RecordingStore()
    manager = ReplyManager(scripted(ChatDelta("a"), ChatDone("ollama", "m")), store)
    reply = manager.start("ollama:m", [], ChatOptions(), unplaced=True)
    assert reply.ended.wait(5)
    assert not reply.settled.wait(0.3)  # well past PLACE_SLOW_S: still waiting
    manager.place(reply, conversation_id="c1", message_id=7)
    assert reply.settled.wait(5)
    assert reply.snapshot().status == "complete" and store.updates[-1][0] == 7
