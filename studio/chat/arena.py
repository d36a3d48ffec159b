"""The comparison arena: one prompt to 2-4 models at once, answers side by side, votes.

Each answer is an ordinary server-side reply (``ReplyManager``), so answers stream in
parallel on their own threads and complete even when the page closes. The arena asks for
exact models: it uses the router without fallbacks (a comparison where one model quietly
stood in for another would be meaningless), but with its retries and budget. Results go
to the database through ``CloudStore`` as each answer ends, so they can be browsed later.

In blind mode the models are shuffled into the slots and shown as "Model A", "Model B"…
until the owner votes; the vote then reveals the names. Votes feed a win table per model.
No gradio imports here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Iterator, Sequence

from ..costs.pricing import format_usd
from ..errors import InvalidInput, StudioError
from ..events import ChatMessage, ChatOptions
from ..live import wait_any
from ..model_id import CLOUD_BACKENDS, ModelId
from .replies import LiveReply, ReplyManager, ReplySnapshot
from ..store.cloud import ArenaRun, CloudStore, ModelScore

log = logging.getLogger(__name__)

MIN_MODELS, MAX_MODELS = 2, 4
SLOT_NAMES = "ABCD"
RESTART_REASON = "The studio stopped before this answer finished."
# Until the vote of a blind run, nothing that differs by backend is shown: a cost line
# ("local (no cloud cost)" against "$0.0014"), the speed and time to first token of a
# local card against a cloud provider, token counts of different tokenizers, or an error
# that names Ollama or OpenRouter (issue 14). By whether the answer is done:
BLIND_FIGURES = {False: "writing…",
                 True: "Time, speed, tokens and cost are shown after the vote."}


@dataclass(frozen=True)
class AnswerView:
    """One slot as the arena shows it. ``model_id`` and ``name`` are None while hidden."""

    slot: int
    title: str
    model_id: str | None
    name: str | None
    text: str
    thinking: str
    status: str
    error: str
    figures: str

    @property
    def done(self) -> bool:
        return self.status != "streaming"


@dataclass(frozen=True)
class RunView:
    """A comparison as the arena shows it at one moment."""

    run_id: str
    prompt: str
    blind: bool
    voted: bool
    winner_slot: int | None
    answers: tuple[AnswerView, ...]

    @property
    def done(self) -> bool:
        return all(a.done for a in self.answers)

    @property
    def revealed(self) -> bool:
        return not self.blind or self.voted

    @property
    def verdict(self) -> str:
        """"Model B (OpenAI: GPT-4o-mini) won", "A tie", or "" before the vote."""
        if not self.voted:
            return ""
        if self.winner_slot is None:
            return "A tie."
        winner = self.answers[self.winner_slot]
        return f"{winner.title} won."


@dataclass(frozen=True)
class RunSummary:
    """One line of the arena's history."""

    run_id: str
    label: str


class Arena:
    """Starts comparisons, follows them, records votes and answers from history.

    ``replies`` runs the answers (give it ``ChatStreams.open`` with ``exact=True`` and no
    store: the arena stores its own). ``names`` turns a model id into a display name. ``shuffle`` orders the
    models of a blind run (injectable so tests can fix it).
    """

    def __init__(self, replies: ReplyManager, cloud: CloudStore, *,
                 names: Callable[[str], str] | None = None,
                 shuffle: Callable[[list], None] = random.shuffle) -> None:
        self.replies = replies
        self.cloud = cloud
        self._names = names or (lambda model_id: ModelId.parse(model_id).name)
        self._shuffle = shuffle
        self._lock = threading.Lock()
        self._live: dict[str, list[LiveReply]] = {}
        # Set once each answer is in the database (just after its reply ends).
        self._stored: dict[str, list[threading.Event]] = {}

    # -- running ------------------------------------------------------------------------

    def start(self, prompt: str, model_ids: Sequence[str], *, system_prompt: str = "",
              options: ChatOptions | None = None, blind: bool = False,
              user: str = "owner") -> str:
        """Send ``prompt`` to every model at once; returns the comparison's id at once.

        Raises ``InvalidInput`` for a blank prompt, fewer than 2 or more than 4 models,
        a model picked twice, or a malformed model id. Nothing is stored then.
        """
        models = check_models(prompt, model_ids)
        if blind:
            self._shuffle(models)
        options = options or ChatOptions()
        run = self.cloud.create_arena_run(
            prompt, models, system_prompt=system_prompt or "", blind=blind, user=user,
            options={k: v for k, v in asdict(options).items() if v is not None})
        messages = ([ChatMessage("system", system_prompt.strip())]
                    if system_prompt and system_prompt.strip() else [])
        messages.append(ChatMessage("user", prompt))
        live = []
        with self._lock:
            self._stored[run.id] = [threading.Event() for _ in models]
        for slot, model_id in enumerate(models):
            live.append(self.replies.start(
                model_id, messages, options, user=user,
                on_progress=partial(self._save_progress, run.id, slot),
                on_finish=partial(self._save, run.id, slot)))
        with self._lock:
            self._forget_finished_locked()
            self._live[run.id] = live
        log.info("Arena run %s: %s%s", run.id[:8], ", ".join(models), " (blind)" if blind else "")
        return run.id

    def stop(self, run_id: str, *, user: str | None = None) -> bool:
        """Stop every answer still streaming; what each wrote so far is kept. Raises
        ``StudioError`` for an unknown comparison (or, with ``user``, another's)."""
        self._require(run_id, user)
        stopped = False
        for slot, reply in enumerate(self._live_replies(run_id) or []):
            if self.replies.stop(reply.reply_id):
                stopped = True
                self._save(run_id, slot, reply.snapshot())
        return stopped

    def follow(self, run_id: str, *, interval: float = 0.05, timeout: float = 3600.0,
               user: str | None = None) -> Iterator[RunView]:
        """Yield views as the answers grow (at most one per ``interval``); the last is done.
        A finished or stored comparison yields its one view. With ``user``, another user's
        comparison is "no longer exists" like a missing one."""
        self._require(run_id, user)
        live = self._live_replies(run_id)
        if live is None:
            yield self.view(run_id)
            return
        deadline = time.monotonic() + timeout
        versions: list[int] = [-1] * len(live)
        while True:
            snaps = [r.snapshot() for r in live]
            if all(s.done for s in snaps):
                # The last view waits for the answers to be stored, so "done" means saved.
                for stored in self._stored_events(run_id):
                    stored.wait(timeout=10)
            if [s.version for s in snaps] != versions or all(s.done for s in snaps):
                versions = [s.version for s in snaps]
                view = self._live_view(run_id, snaps)
                yield view
                if view.done:
                    return
            if time.monotonic() > deadline:
                return
            # Wake on any unfinished answer's change, then let tokens from every model pile
            # up for a moment (an answer that ends meanwhile wakes us early).
            pending = [(r, s.version) for r, s in zip(live, snaps) if not s.done]
            wait_any(pending, timeout=max(0.0, min(30.0, deadline - time.monotonic())))
            if interval:
                pending[0][0].wait_finished(interval)

    # -- voting and history ---------------------------------------------------------------

    def vote(self, run_id: str, winner_slot: int | None, *,
             user: str | None = None) -> RunView:
        """Record the verdict (a slot, or None for a tie) and return the revealed view.

        Raises ``InvalidInput`` while answers are still streaming or when already voted,
        ``StudioError`` for an unknown comparison (or, with ``user``, another's)."""
        current = self.view(run_id, user=user)
        if not current.done:
            raise InvalidInput("Some answers are still being written.",
                               hint="Wait for them to finish (or press Stop), then vote.")
        self.cloud.vote_arena(run_id, winner_slot)
        return self.view(run_id)

    def view(self, run_id: str, *, user: str | None = None) -> RunView:
        """The comparison now: live answers while they stream, else from the database.
        Raises ``StudioError`` for an unknown id (or, with ``user``, another's)."""
        self._require(run_id, user)
        live = self._live_replies(run_id)
        if live is not None:
            # Live even once done: an answer is stored just after it ends, not at that instant.
            return self._live_view(run_id, [r.snapshot() for r in live])
        run = self.cloud.arena_run(run_id)
        if run is None:
            raise StudioError("That comparison no longer exists.",
                              hint="Pick another one from the list of past comparisons.")
        return self._stored_view(run)

    def history(self, *, limit: int = 50, user: str | None = None) -> list[RunSummary]:
        """Past comparisons, newest first, labelled for a list."""
        return [RunSummary(run.id, self._summary(run))
                for run in self.cloud.arena_runs(limit=limit, user=user)]

    def scores(self, *, user: str | None = None) -> list[tuple[str, ModelScore]]:
        """(display name, score) per model over the voted comparisons (``user``'s), best first."""
        return [(self._name(s.model_id), s) for s in self.cloud.arena_scores(user=user)]

    def delete(self, run_id: str, *, user: str | None = None) -> None:
        self.stop(run_id, user=user)
        with self._lock:
            self._live.pop(run_id, None)
            self._stored.pop(run_id, None)
        self.cloud.delete_arena_run(run_id)

    # -- internals ------------------------------------------------------------------------

    def _require(self, run_id: str, user: str | None) -> None:
        """Raise ``StudioError`` unless the comparison exists (and, with ``user``, is theirs)."""
        if user is None:
            return
        run = self.cloud.arena_run(run_id)
        if run is None or run.user != user:
            raise StudioError("That comparison no longer exists.",
                              hint="Pick another one from the list of past comparisons.")

    def _save(self, run_id: str, slot: int, snap: ReplySnapshot) -> None:
        u = snap.usage
        try:
            self.cloud.update_arena_answer(
                run_id, slot, backend=snap.backend or ModelId.parse(snap.model_id).backend,
                answered_by=snap.answered_by, status=snap.status, error=snap.error,
                content=snap.text, thinking=snap.thinking, prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens, ttft_ms=snap.ttft_ms,
                tokens_per_s=tokens_per_second(snap), total_ms=snap.elapsed_ms,
                cost_usd=u.cost_usd, cost_is_estimate=u.cost_is_estimate)
        except StudioError:
            log.warning("could not store arena answer %s/%d", run_id[:8], slot, exc_info=True)
        finally:  # whatever happened to the write, followers waiting for it must go on
            events = self._stored_events(run_id)
            if slot < len(events):
                events[slot].set()

    def _save_progress(self, run_id: str, slot: int, snap: ReplySnapshot) -> None:
        """The text so far, while the answer streams: a restart keeps it (as 'partial')."""
        self.cloud.update_arena_answer(run_id, slot, content=snap.text, thinking=snap.thinking)

    def _live_replies(self, run_id: str) -> list[LiveReply] | None:
        with self._lock:
            return self._live.get(run_id)

    def _stored_events(self, run_id: str) -> list[threading.Event]:
        with self._lock:
            return self._stored.get(run_id, [])

    def _forget_finished_locked(self, keep_s: float = 600.0) -> None:
        now = time.monotonic()
        for run_id, live in list(self._live.items()):
            if all(r.finished is not None and now - r.finished > keep_s for r in live):
                del self._live[run_id]
                self._stored.pop(run_id, None)

    def _name(self, model_id: str) -> str:
        try:
            return self._names(model_id)
        except Exception:  # noqa: BLE001 - a name is cosmetic; never fail a view over it
            return model_id

    def _title(self, slot: int, model_id: str, hidden: bool) -> str:
        if hidden:
            return f"Model {SLOT_NAMES[slot]}"
        return f"Model {SLOT_NAMES[slot]}: {self._name(model_id)}"

    def _live_view(self, run_id: str, snaps: list[ReplySnapshot]) -> RunView:
        run = self.cloud.arena_run(run_id)
        blind = bool(run and run.blind)
        voted = bool(run and run.voted)
        hidden = blind and not voted
        answers = tuple(
            self._slot_view(i, s.model_id, hidden, text=s.text, thinking=s.thinking,
                            status=s.status, error=s.error, ttft_ms=s.ttft_ms,
                            tokens_per_s=tokens_per_second(s),
                            completion_tokens=s.usage.completion_tokens,
                            cost_usd=s.usage.cost_usd,
                            cost_is_estimate=s.usage.cost_is_estimate, backend=s.backend)
            for i, s in enumerate(snaps))
        return RunView(run_id=run_id, prompt=run.prompt if run else "", blind=blind, voted=voted,
                       winner_slot=run.winner_slot if run else None, answers=answers)

    def _stored_view(self, run: ArenaRun) -> RunView:
        hidden = run.blind and not run.voted
        answers = tuple(
            self._slot_view(a.slot, a.model_id, hidden, text=a.content, thinking=a.thinking,
                            status=a.status, error=a.error, ttft_ms=a.ttft_ms,
                            tokens_per_s=a.tokens_per_s, completion_tokens=a.completion_tokens,
                            cost_usd=a.cost_usd, cost_is_estimate=a.cost_is_estimate,
                            backend=a.backend)
            for a in run.answers)
        return RunView(run_id=run.id, prompt=run.prompt, blind=run.blind, voted=run.voted,
                       winner_slot=run.winner_slot, answers=answers)

    def _slot_view(self, slot: int, model_id: str, hidden: bool, *, text: str, thinking: str,
                   status: str, error: str, ttft_ms: float | None, tokens_per_s: float | None,
                   completion_tokens: int | None, cost_usd: float | None,
                   cost_is_estimate: bool, backend: str) -> AnswerView:
        """One slot, live or stored; ``hidden`` (blind, not voted yet) keeps back the name
        and everything that differs by backend (see ``BLIND_FIGURES``)."""
        done = status != "streaming"
        if hidden:
            return AnswerView(slot=slot, title=self._title(slot, model_id, True), model_id=None,
                              name=None, text=text, thinking=thinking, status=status,
                              error=blind_error(status), figures=BLIND_FIGURES[done])
        figures = figures_line(ttft_ms=ttft_ms, tokens_per_s=tokens_per_s,
                               completion_tokens=completion_tokens, cost_usd=cost_usd,
                               cost_is_estimate=cost_is_estimate,
                               backend=backend or ModelId.parse(model_id).backend, done=done)
        return AnswerView(slot=slot, title=self._title(slot, model_id, False),
                          model_id=model_id, name=self._name(model_id), text=text,
                          thinking=thinking, status=status, error=error, figures=figures)

    def _summary(self, run: ArenaRun) -> str:
        when = run.created_at[:16].replace("T", " ")
        prompt = " ".join(run.prompt.split())
        if len(prompt) > 50:
            prompt = prompt[:50].rstrip() + "…"
        if run.blind and not run.voted:
            who = f"{len(run.answers)} models, blind, not voted yet"
        else:
            who = " vs ".join(self._name(m) for m in run.model_ids)
            if run.voted:
                who += (" · tie" if run.winner_slot is None
                        else f" · {self._name(run.answers[run.winner_slot].model_id)} won")
        return f"{when} · {prompt} · {who}"


# -- pure helpers ----------------------------------------------------------------------------


def check_models(prompt: str, model_ids: Sequence[str] | None) -> list[str]:
    """The models of a comparison, checked; raises ``InvalidInput`` with what to fix."""
    if not prompt or not prompt.strip():
        raise InvalidInput("The prompt is empty.", hint="Type what every model should answer.")
    models = [m for m in (model_ids or []) if m]
    if len(models) < MIN_MODELS:
        raise InvalidInput(f"Pick at least {MIN_MODELS} models to compare.",
                           hint="Choose them in the Models list; local and cloud can be mixed.")
    if len(models) > MAX_MODELS:
        raise InvalidInput(f"Pick at most {MAX_MODELS} models to compare (got {len(models)}).")
    if len(set(models)) != len(models):
        raise InvalidInput("A model is picked twice.", hint="Compare different models.")
    return [str(ModelId.parse(model_id)) for model_id in models]


def blind_error(status: str) -> str:
    """What a blind run says about a failed or cut-off answer before the vote: that it
    failed, not why (the reason names the backend).

    >>> blind_error("partial")
    'The answer stopped part way; why is shown after the vote.'
    """
    if status == "error":
        return "This model couldn't answer; why is shown after the vote."
    if status == "partial":
        return "The answer stopped part way; why is shown after the vote."
    return ""


def tokens_per_second(snap: ReplySnapshot) -> float | None:
    """The backend's figure, else answer tokens over the time after the first token."""
    u = snap.usage
    if u.tokens_per_s:
        return u.tokens_per_s
    if u.completion_tokens and snap.ttft_ms is not None and snap.done:
        seconds = (snap.elapsed_ms - snap.ttft_ms) / 1000
        if seconds > 0:
            return u.completion_tokens / seconds
    return None


def figures_line(*, ttft_ms: float | None, tokens_per_s: float | None,
                 completion_tokens: int | None, cost_usd: float | None, cost_is_estimate: bool,
                 backend: str, done: bool = True) -> str:
    """TTFT, speed, tokens and cost of one answer; unknown figures are said to be.

    >>> figures_line(ttft_ms=210, tokens_per_s=48.04, completion_tokens=310, cost_usd=0.0123,
    ...              cost_is_estimate=False, backend="openrouter")
    '0.21 s to first token · 48.0 tok/s · 310 tokens · $0.0123'
    >>> figures_line(ttft_ms=None, tokens_per_s=None, completion_tokens=None, cost_usd=None,
    ...              cost_is_estimate=False, backend="ollama", done=False)
    'waiting for the first token…'
    """
    if not done and ttft_ms is None:
        return "waiting for the first token…"
    parts = ["first token: —" if ttft_ms is None else f"{ttft_ms / 1000:.2f} s to first token"]
    if tokens_per_s:
        parts.append(f"{tokens_per_s:.1f} tok/s")
    if completion_tokens is not None:
        parts.append(f"{completion_tokens} tokens")
    if not done:
        parts.append("writing…")
    elif backend not in CLOUD_BACKENDS:
        parts.append("local (no cloud cost)")
    elif cost_usd is None:
        parts.append("cost unknown")
    else:
        parts.append(("≈" if cost_is_estimate else "") + format_usd(cost_usd))
    return " · ".join(parts)
