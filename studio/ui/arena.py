"""The Arena tab: one prompt to 2-4 models (local and cloud mixed), answers side by side.

Thin layer over ``services.arena`` (``studio.arena``): the answers are generated on server
threads, this tab only follows them. Each column shows one answer with its time to first
token, speed, tokens and cost; a blind run hides which model wrote what, those figures and
why an answer failed until the vote (``studio.chat.arena.BLIND_FIGURES``).
Below: the win table per model and the past comparisons.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..chat.arena import MAX_MODELS, SLOT_NAMES, AnswerView, RunView
from ..errors import StudioError
from .common import model_picker, page_user, tab_opened, ui_errors

log = logging.getLogger(__name__)

SCORE_HEADERS = ["Model", "Votes", "Wins", "Ties", "Losses", "Win rate"]


def answer_markdown(answer: AnswerView) -> str:
    """The answer as shown in its column: thinking folded away, a note when it failed."""
    text = answer.text
    if answer.thinking:
        text = (f"<details><summary>Thinking</summary>\n\n{answer.thinking}\n\n</details>\n\n"
                + text)
    if answer.status == "error":
        text = f"⚠️ **No answer.** {answer.error}"
    elif answer.status == "partial":
        text = f"{text}\n\n⚠️ **Cut off.** {answer.error}"
    elif answer.status == "streaming" and not text:
        text = "_…_"
    return text


def status_text(view: RunView | None) -> str:
    if view is None:
        return "Pick 2 to 4 models, type a prompt and press **Compare**."
    if not view.done:
        writing = sum(1 for a in view.answers if not a.done)
        return f"Comparing… {writing} of {len(view.answers)} answers still being written."
    if view.voted:
        return f"**{view.verdict}** The win table below counts it."
    if view.blind:
        return "**Which answer is better?** Vote to reveal which model wrote each one."
    return "Vote for the better answer if you like: votes make the win table below."


def score_frame(scores) -> pd.DataFrame:
    rows = [[name, s.votes, s.wins, s.ties, s.losses, f"{s.win_rate:.0%}"] for name, s in scores]
    return pd.DataFrame(rows, columns=SCORE_HEADERS)


def render(services) -> SimpleNamespace:
    """Build the Arena tab inside the current Blocks context."""
    arena = services.arena
    opened = tab_opened()  # the tab's loading events' triggers, before any inner block
    settings = services.settings

    def history_update(user: str, selected: str | None = None):
        choices = [(h.label, h.run_id) for h in arena.history(limit=100, user=user)]
        value = selected if selected in {c[1] for c in choices} else None
        return gr.update(choices=choices, value=value)

    # -- layout ---------------------------------------------------------------------------

    state = gr.State({"run_id": None})
    with gr.Row(equal_height=True):
        models_dd = gr.Dropdown(choices=[], value=[], multiselect=True, max_choices=MAX_MODELS,
                                filterable=True, label="Models to compare (2 to 4)",
                                info="Local and cloud models can be mixed. Type to search.",
                                elem_id="arena-models", scale=5)
        with gr.Column(scale=2, min_width=200):
            blind_box = gr.Checkbox(label="Blind: hide the names until I vote", value=False,
                                    elem_id="arena-blind")
            refresh_btn = gr.Button("⟳ Refresh model list", size="sm", elem_id="arena-refresh")
    with gr.Accordion("System prompt", open=False):
        system_box = gr.Textbox(label="System prompt (sent to every model)", lines=2,
                                elem_id="arena-system")
    prompt_box = gr.Textbox(label="Prompt", lines=3, max_lines=12, elem_id="arena-prompt",
                            placeholder="What should every model answer?")
    with gr.Row():
        run_btn = gr.Button("Compare", variant="primary", elem_id="arena-run")
        stop_btn = gr.Button("■ Stop", variant="stop", visible=False, elem_id="arena-stop")
    status_md = gr.Markdown(status_text(None), elem_id="arena-status")

    slot_parts = []  # per slot: column, title, answer, figures, vote button
    with gr.Row(equal_height=False, elem_id="arena-answers"):
        for slot in range(MAX_MODELS):
            letter = SLOT_NAMES[slot]
            with gr.Column(visible=slot < 2, min_width=240, elem_id=f"arena-col-{slot}",
                           elem_classes=["arena-col"]) as column:
                title = gr.Markdown(f"### Model {letter}", elem_id=f"arena-title-{slot}")
                answer = gr.Markdown("", elem_id=f"arena-answer-{slot}")
                figures = gr.Markdown("", elem_id=f"arena-figures-{slot}")
                vote_btn = gr.Button(f"{letter} is better", visible=False, size="sm",
                                     elem_id=f"arena-vote-{slot}")
            slot_parts.append((column, title, answer, figures, vote_btn))
    tie_btn = gr.Button("It's a tie", visible=False, size="sm", elem_id="arena-tie")

    with gr.Accordion("Win table", open=True):
        scores_df = gr.Dataframe(value=pd.DataFrame([], columns=SCORE_HEADERS),
                                 interactive=False, elem_id="arena-scores")
    with gr.Accordion("Past comparisons", open=False):
        history_dd = gr.Dropdown(choices=[], label="Open a past comparison",
                                 elem_id="arena-history")

    view_outputs = [status_md, stop_btn, tie_btn]
    for parts in slot_parts:
        view_outputs += list(parts)

    def view_updates(view: RunView | None) -> list:
        """Values for ``view_outputs`` showing ``view`` (None: the empty arena)."""
        done = view is not None and view.done
        can_vote = done and not view.voted
        out = [status_text(view), gr.update(visible=view is not None and not view.done),
               gr.update(visible=can_vote)]
        for slot in range(MAX_MODELS):
            letter = SLOT_NAMES[slot]
            if view is None or slot >= len(view.answers):
                out += [gr.update(visible=view is None and slot < 2), f"### Model {letter}",
                        "", "", gr.update(visible=False)]
                continue
            a = view.answers[slot]
            crown = "🏆 " if view.voted and view.winner_slot == slot else ""
            out += [gr.update(visible=True), f"### {crown}{a.title}", answer_markdown(a),
                    a.figures, gr.update(visible=can_vote)]
        return out

    # -- handlers -----------------------------------------------------------------------

    def picker_update(picker, current):
        """The models picker showing ``picker`` (``ChatModels.picker``), keeping the models
        picked that are still offered. The arena preselects nothing."""
        values = set(picker.values)
        return gr.update(choices=picker.choices, value=[m for m in current or [] if m in values])

    def on_load(request: gr.Request = None):
        user = page_user(request)
        # The Chat tab's load on the same page already warns about a backend that's down.
        return (gr.update(choices=model_picker(services.models, warn=False).choices),
                score_frame(arena.scores(user=user)), history_update(user))

    @ui_errors
    def on_refresh(current):
        if services.catalog is not None:
            try:
                services.catalog.refresh()
                gr.Info(services.catalog.state().summary)
            except StudioError as exc:
                gr.Warning(f"Could not refresh the cloud model list: {exc}")
        return picker_update(model_picker(services.models), current)

    @ui_errors
    def on_run(model_ids, prompt, system_prompt, blind, sess, request: gr.Request = None):
        user = page_user(request)
        run_id = arena.start(prompt, model_ids or [], system_prompt=system_prompt or "",
                             blind=bool(blind), user=user)
        sess = {"run_id": run_id}
        for view in arena.follow(run_id, interval=settings.stream_interval, user=user):
            history = history_update(user, run_id) if view.done else gr.skip()
            yield (sess, *view_updates(view), history)

    @ui_errors
    def on_stop(sess, request: gr.Request = None):
        if sess and sess.get("run_id"):
            arena.stop(sess["run_id"], user=page_user(request))

    def make_vote(slot: int | None):
        @ui_errors
        def on_vote(sess, request: gr.Request = None):
            if not sess or not sess.get("run_id"):
                raise StudioError("There is no comparison to vote on yet.")
            user = page_user(request)
            view = arena.vote(sess["run_id"], slot, user=user)
            return (*view_updates(view), score_frame(arena.scores(user=user)),
                    history_update(user, sess["run_id"]))
        on_vote.__name__ = "on_vote_tie" if slot is None else f"on_vote_{SLOT_NAMES[slot].lower()}"
        return on_vote

    @ui_errors
    def on_open(run_id, sess, request: gr.Request = None):
        if not run_id:
            return
        sess = {"run_id": run_id}
        for view in arena.follow(run_id, interval=settings.stream_interval,
                                 user=page_user(request)):
            yield (sess, *view_updates(view))

    # -- wiring ---------------------------------------------------------------------------

    # When the tab is opened, not when the page loads (``tab_opened``).
    gr.on(opened, on_load, None, [models_dd, scores_df, history_dd], api_visibility="private",
          concurrency_limit=None, concurrency_id="arena-load", show_progress="hidden")
    refresh_btn.click(on_refresh, [models_dd], [models_dd], api_visibility="private",
                      concurrency_id="arena-refresh")
    run_inputs = [models_dd, prompt_box, system_box, blind_box, state]
    # Every comparison follows its own answers for minutes: no limit, or one person's run
    # would make the next wait (the answers themselves run on server threads).
    run_evt = run_btn.click(on_run, run_inputs, [state, *view_outputs, history_dd],
                            api_name="arena_compare", concurrency_limit=None,
                            concurrency_id="arena-run", show_progress="hidden")
    stop_btn.click(on_stop, [state], None, api_name="arena_stop", queue=False)
    vote_outputs = [*view_outputs, scores_df, history_dd]
    for slot, parts in enumerate(slot_parts):
        parts[4].click(make_vote(slot), [state], vote_outputs, api_visibility="private",
                       concurrency_limit=None, concurrency_id=f"arena-vote-{slot}")
    tie_btn.click(make_vote(None), [state], vote_outputs, api_visibility="private",
                  concurrency_limit=None, concurrency_id="arena-vote-tie")
    history_dd.input(on_open, [history_dd, state], [state, *view_outputs],
                     api_visibility="private", concurrency_limit=None,
                     concurrency_id="arena-open", show_progress="hidden")
    return SimpleNamespace(models_dd=models_dd, run_event=run_evt, picker_update=picker_update)
