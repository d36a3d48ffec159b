"""The comparison arena: parallel answers on server threads, saved results, blind votes,
the win table. Scripted backends for the logic, the fake Ollama and OpenRouter for the wire."""

from __future__ import annotations

import doctest
import threading
from functools import partial

import pytest

from studio.chat import arena as arena_module
from studio.chat.arena import Arena, check_models, figures_line
from studio.chat.streams import ChatStreams
from studio.models.gpu_coordinator import ModelsInUse
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.errors import BackendUnavailable, BudgetExceeded, InvalidInput, StudioError
from studio.events import ChatDelta, ChatDone, ChatOptions, Usage
from studio.chat.replies import ReplyManager
from studio.chat.router import Router
from studio.store.cloud import CloudStore
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

LOCAL = "ollama:llama3.2:latest"
CLOUD = "openrouter:openai/gpt-4o-mini"
OTHER = "ollama:llava:latest"


class Backend:
    """Answers every chat with ``text``; optionally waits at ``barrier`` first (to prove
    answers run at the same time), holds until ``release`` is set, or fails with ``error``."""

    def __init__(self, name, text="answer", *, barrier=None, release=None, error=None,
                 cost=None):
        self.name, self.text, self.barrier, self.release = name, text, barrier, release
        self.error, self.cost = error, cost
        self.calls = []

    def chat_stream(self, model, messages, options=None):
        self.calls.append((model, messages))
        return self._play(model)

    def _play(self, model):
        if self.barrier is not None:
            self.barrier.wait()
        if self.error is not None:
            raise self.error
        for word in self.text.split():
            yield ChatDelta(word + " ")
            if self.release is not None:
                assert self.release.wait(10)
        yield ChatDone(backend=self.name, model=model, usage=Usage(
            prompt_tokens=5, completion_tokens=len(self.text.split()), tokens_per_s=50.0,
            cost_usd=self.cost))


def make_arena(store, backends, *, fallbacks=None, shuffle=None, budget=None):
    router = Router(backends, fallbacks=fallbacks, budget=budget)
    arena = Arena(ReplyManager(exact(router)), CloudStore(store),
                  names=lambda m: m.split(":", 1)[1].upper(),
                  shuffle=shuffle or (lambda models: models.reverse()))
    return arena, router


def exact(router):
    """The arena's stream: exactly the model named, through the one chat stream path."""
    return partial(ChatStreams(router, in_use=ModelsInUse()).open, exact=True)


def wire_arena(store, fake_ollama, fake_openrouter):
    """An arena over the real clients, talking to the fake servers."""
    router = Router({"ollama": OllamaClient(fake_ollama.url, timeout=10),
                     "openrouter": OpenRouterClient(DEFAULT_KEY, fake_openrouter.url,
                                                    timeout=10)})
    return Arena(ReplyManager(exact(router)), CloudStore(store))


def finish(arena, run_id):
    views = list(arena.follow(run_id, interval=0))
    assert views and views[-1].done
    return views[-1]


def test_arena_answers_stream_from_every_model_at_the_same_time(store):
    barrier = threading.Barrier(2, timeout=10)  # breaks (an error answer) if run one by one
    ollama = Backend("ollama", "local words", barrier=barrier)
    cloud = Backend("openrouter", "cloud words", barrier=barrier, cost=0.0123)
    arena, _ = make_arena(store, {"ollama": ollama, "openrouter": cloud})
    view = finish(arena, arena.start("Hello?", [LOCAL, CLOUD]))
    assert [(a.status, a.text) for a in view.answers] == [
        ("complete", "local words "), ("complete", "cloud words ")]
    assert ollama.calls[0][1][-1].content == "Hello?"


def test_arena_answers_are_saved_with_their_figures(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama", "one two three"),
                                  "openrouter": Backend("openrouter", "four", cost=0.0123)})
    run_id = arena.start("Count", [LOCAL, CLOUD], system_prompt="Be terse.",
                         options=ChatOptions(temperature=0.1))
    finish(arena, run_id)
    run = CloudStore(store).arena_run(run_id)
    local, cloud = run.answers
    assert (local.content, local.backend, local.completion_tokens, local.status) == (
        "one two three ", "ollama", 3, "complete")
    assert (cloud.cost_usd, cloud.tokens_per_s, cloud.answered_by) == (
        0.0123, 50.0, "openai/gpt-4o-mini")
    assert local.ttft_ms is not None and local.total_ms >= local.ttft_ms
    assert run.system_prompt == "Be terse." and run.options == {"temperature": 0.1}
    shown = arena.view(run_id).answers
    assert shown[0].figures.endswith("3 tokens · local (no cloud cost)")
    assert "50.0 tok/s" in shown[1].figures and shown[1].figures.endswith("$0.0123")


def test_arena_sends_the_system_prompt_to_every_model(store):
    ollama, cloud = Backend("ollama"), Backend("openrouter")
    arena, _ = make_arena(store, {"ollama": ollama, "openrouter": cloud})
    finish(arena, arena.start("Q", [LOCAL, CLOUD], system_prompt=" Be terse. "))
    for backend in (ollama, cloud):
        assert [(m.role, m.content) for m in backend.calls[0][1]] == [
            ("system", "Be terse."), ("user", "Q")]


def test_arena_blind_run_hides_names_until_the_vote(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama", "local"),
                                  "openrouter": Backend("openrouter", "cloud")})
    run_id = arena.start("Which?", [LOCAL, CLOUD], blind=True)  # shuffle: reversed
    view = finish(arena, run_id)
    assert [a.title for a in view.answers] == ["Model A", "Model B"]
    assert all(a.model_id is None and a.name is None for a in view.answers)
    assert [a.text for a in view.answers] == ["cloud ", "local "]
    assert "OPENAI" not in arena.history()[0].label and "blind" in arena.history()[0].label
    assert [a.figures for a in view.answers] == [arena_module.BLIND_FIGURES[True]] * 2
    assert [a.figures for a in arena.view(run_id).answers] == [
        arena_module.BLIND_FIGURES[True]] * 2
    revealed = arena.vote(run_id, 1)
    assert [a.title for a in revealed.answers] == ["Model A: OPENAI/GPT-4O-MINI",
                                                   "Model B: LLAMA3.2:LATEST"]
    assert revealed.verdict == "Model B: LLAMA3.2:LATEST won."
    assert "LLAMA3.2:LATEST won" in arena.history()[0].label


def test_arena_open_run_keeps_its_order_and_names(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama"), "openrouter": Backend("openrouter")})
    view = finish(arena, arena.start("Q", [CLOUD, LOCAL]))
    assert [a.model_id for a in view.answers] == [CLOUD, LOCAL]
    assert view.answers[0].title == "Model A: OPENAI/GPT-4O-MINI"


def test_arena_vote_waits_for_every_answer(store):
    release = threading.Event()
    arena, _ = make_arena(store, {"ollama": Backend("ollama", "slow words", release=release),
                                  "openrouter": Backend("openrouter")})
    run_id = arena.start("Q", [LOCAL, CLOUD])
    try:
        with pytest.raises(InvalidInput, match="still being written"):
            arena.vote(run_id, 0)
    finally:
        release.set()
    finish(arena, run_id)
    arena.vote(run_id, None)
    with pytest.raises(InvalidInput, match="already has a vote"):
        arena.vote(run_id, 0)


def test_arena_win_table_counts_votes_per_model(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama"), "openrouter": Backend("openrouter")})
    for winner in (1, 1, None):
        run_id = arena.start("Q", [LOCAL, CLOUD])
        finish(arena, run_id)
        arena.vote(run_id, winner)
    table = {name: (s.votes, s.wins, s.ties, s.losses) for name, s in arena.scores()}
    assert table == {"OPENAI/GPT-4O-MINI": (3, 2, 1, 0), "LLAMA3.2:LATEST": (3, 0, 1, 2)}
    assert arena.scores()[0][0] == "OPENAI/GPT-4O-MINI"


@pytest.mark.parametrize("prompt, models, message", [
    ("  ", [LOCAL, CLOUD], "prompt is empty"),
    ("Q", [LOCAL], "at least 2"),
    ("Q", [LOCAL, CLOUD, OTHER, "ollama:a", "ollama:b"], "at most 4"),
    ("Q", [LOCAL, LOCAL], "picked twice"),
    ("Q", [LOCAL, "gpt-4o"], "doesn't name a backend"),
])
def test_arena_rejects_bad_comparisons_before_storing_anything(store, prompt, models, message):
    arena, _ = make_arena(store, {"ollama": Backend("ollama")})
    with pytest.raises(InvalidInput, match=message):
        arena.start(prompt, models)
    assert arena.history() == []


def test_arena_never_falls_back_one_failure_does_not_spoil_the_others(store):
    down = BackendUnavailable("Can't reach Ollama at http://127.0.0.1:11434.",
                              hint="Is `ollama serve` running?")
    cloud = Backend("openrouter", "cloud answer")
    arena, _ = make_arena(store, {"ollama": Backend("ollama", error=down), "openrouter": cloud},
                          fallbacks={LOCAL: [CLOUD]})
    view = finish(arena, arena.start("Q", [LOCAL, CLOUD]))
    failed, answered = view.answers
    assert failed.status == "error" and "Can't reach Ollama" in failed.error
    assert answered.text == "cloud answer "
    assert len(cloud.calls) == 1  # the configured fallback was not used


def test_arena_honours_a_budget_attached_to_the_router_later(store):
    class Refuse:
        def reserve_reply(self, user, model_id, cost, min_tokens=64):
            raise BudgetExceeded("The daily cloud budget of $1.00 is used up.")

    arena, router = make_arena(store, {"ollama": Backend("ollama"),
                                       "openrouter": Backend("openrouter")})
    router.budget = Refuse()
    view = finish(arena, arena.start("Q", [LOCAL, CLOUD]))
    assert view.answers[0].status == "complete"
    assert view.answers[1].status == "error" and "budget" in view.answers[1].error


def test_arena_stop_keeps_what_each_answer_wrote(store):
    release = threading.Event()
    arena, _ = make_arena(store, {"ollama": Backend("ollama", "a b c d", release=release),
                                  "openrouter": Backend("openrouter", "e f g h", release=release)})
    run_id = arena.start("Q", [LOCAL, CLOUD])
    for view in arena.follow(run_id, interval=0):
        if all(a.text for a in view.answers):
            break
    assert arena.stop(run_id)
    release.set()
    stopped = finish(arena, run_id)
    assert [a.status for a in stopped.answers] == ["partial", "partial"]
    stored = CloudStore(store).arena_run(run_id).answers
    assert all(a.status == "partial" and a.content and "Stopped by you" in a.error
               for a in stored)
    assert not arena.stop(run_id)


def test_arena_follow_of_a_stored_run_yields_it_once(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama"), "openrouter": Backend("openrouter")})
    run_id = arena.start("Q", [LOCAL, CLOUD])
    finish(arena, run_id)
    later = Arena(ReplyManager(lambda *a, **k: iter(())), CloudStore(store))  # after a restart
    [view] = list(later.follow(run_id))
    assert view.done and [a.text for a in view.answers] == ["answer ", "answer "]
    with pytest.raises(StudioError, match="no longer exists"):
        later.view("nope")


def test_arena_delete_removes_the_run(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama"), "openrouter": Backend("openrouter")})
    run_id = arena.start("Q", [LOCAL, CLOUD])
    finish(arena, run_id)
    arena.delete(run_id)
    assert arena.history() == []


def test_arena_with_fake_ollama_and_fake_openrouter(store, fake_ollama):
    with FakeOpenRouter() as fake_openrouter:
        fake_ollama.queue_reply(["Local ", "reply."])
        fake_openrouter.queue_reply(["Cloud ", "reply."], cost=0.0042)
        arena = wire_arena(store, fake_ollama, fake_openrouter)
        view = finish(arena, arena.start("Say something", [LOCAL, CLOUD]))
    local, cloud = view.answers
    assert (local.text, cloud.text) == ("Local reply.", "Cloud reply.")
    assert cloud.figures.endswith("2 tokens · $0.0042") and "to first token" in cloud.figures
    assert "tok/s" in local.figures and local.figures.endswith("local (no cloud cost)")
    assert fake_openrouter.last_chat.json["messages"] == [
        {"role": "user", "content": "Say something"}]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(cost_usd=0.002, cost_is_estimate=True, backend="openrouter"), "≈$0.002"),
    (dict(cost_usd=None, cost_is_estimate=False, backend="openrouter"), "cost unknown"),
    (dict(cost_usd=0.0, cost_is_estimate=False, backend="openrouter"), "free"),
    (dict(cost_usd=None, cost_is_estimate=False, backend="ollama"), "local (no cloud cost)"),
])
def test_figures_line_says_what_the_cost_is(kwargs, expected):
    line = figures_line(ttft_ms=100, tokens_per_s=None, completion_tokens=3, **kwargs)
    assert line == f"0.10 s to first token · 3 tokens · {expected}"


def test_check_models_returns_them_in_order():
    assert check_models("Q", [CLOUD, "", LOCAL]) == [CLOUD, LOCAL]


def test_arena_doctests_pass():
    assert doctest.testmod(arena_module).failed == 0


def test_arena_a_failed_save_does_not_hold_the_page(store, monkeypatch):
    import sqlite3
    import time

    arena, _ = make_arena(store, {"ollama": Backend("ollama", "kept on screen")})

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(arena.cloud, "update_arena_answer", broken)
    t0 = time.monotonic()
    view = finish(arena, arena.start("Hi", [LOCAL, OTHER]))
    assert time.monotonic() - t0 < 8  # the follower waits up to 10 s per unsaved answer
    assert view.answers[0].text == "kept on screen "


def test_arena_answer_text_is_stored_while_it_streams_so_a_restart_keeps_it(store):
    import time

    release = threading.Event()

    class Slow(Backend):  # two words, then it holds the answer open until released
        def _play(self, model):
            yield ChatDelta("first ")
            time.sleep(0.05)  # past flush_every: the next event flushes the text so far
            yield ChatDelta("second ")
            assert release.wait(10)
            yield ChatDone(backend="ollama", model=model, usage=Usage(completion_tokens=2))

    router = Router({"ollama": Slow("ollama")})
    arena = Arena(ReplyManager(exact(router), flush_every=0.01), CloudStore(store),
                  names=lambda m: m, shuffle=lambda models: None)
    run_id = arena.start("Hi", [LOCAL, OTHER])
    cloud = CloudStore(store)
    try:
        deadline = time.monotonic() + 10
        while not all(a.content for a in cloud.arena_run(run_id).answers):
            assert time.monotonic() < deadline, "nothing was stored while streaming"
            time.sleep(0.02)
        # The studio restarts here: what was written survives as a partial answer.
        assert cloud.mark_interrupted_arena("The studio restarted.") == 2
        answers = cloud.arena_run(run_id).answers
        assert [a.status for a in answers] == ["partial", "partial"]
        assert all(a.content.startswith("first") for a in answers)
    finally:
        release.set()


def test_arena_spend_is_recorded_as_arena_not_chat(tmp_path, fake_ollama):
    from studio.config import Settings
    from studio.services import build_services

    with FakeOpenRouter() as fake_openrouter:
        fake_ollama.queue_reply(["Local ", "reply."])
        fake_openrouter.queue_reply(["Cloud ", "reply."], cost=0.0042)
        services = build_services(Settings.from_env(
            {"STUDIO_DATA_DIR": str(tmp_path), "OLLAMA_HOST": fake_ollama.url,
             "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": fake_openrouter.url},
            dotenv_path=None))
        try:
            finish(services.arena, services.arena.start("Say something", [LOCAL, CLOUD]))
            rows = services.accounting.recent()
        finally:
            services.images.close()
    assert sorted((r.backend, r.source) for r in rows) == [("ollama", "arena"),
                                                           ("openrouter", "arena")]
    assert [s.source for s in services.accounting.spend_per_source("today")] == ["arena"]


def test_arena_blind_run_gives_nothing_away_that_differs_by_backend(store, fake_ollama):
    # The issue: "local (no cloud cost)" against "$0.0014" told the models apart.
    with FakeOpenRouter() as fake_openrouter:
        fake_ollama.queue_reply(["Local ", "reply."])
        fake_openrouter.queue_reply(["Cloud ", "reply."], cost=0.0014)
        arena = wire_arena(store, fake_ollama, fake_openrouter)
        run_id = arena.start("Say something", [LOCAL, CLOUD], blind=True)
        views = list(arena.follow(run_id, interval=0))
    hidden = [views[-1], arena.view(run_id)]
    for view in [*views, *hidden]:
        for answer in view.answers:
            shown = " ".join([answer.title, answer.figures, answer.error])
            for giveaway in ("local", "cloud cost", "$", "tok/s", " tokens ·", "first token",
                             "llama", "gpt", "Ollama", "OpenRouter"):
                assert giveaway not in shown, (giveaway, shown)
    assert {a.figures for a in hidden[0].answers} == {arena_module.BLIND_FIGURES[True]}
    revealed = arena.vote(run_id, None)
    assert sorted(a.figures.rsplit(" · ", 1)[1] for a in revealed.answers) == [
        "$0.0014", "local (no cloud cost)"]


def test_arena_blind_run_hides_why_an_answer_failed_until_the_vote(store):
    down = BackendUnavailable("Can't reach Ollama at http://127.0.0.1:11434.")
    arena, _ = make_arena(store, {"ollama": Backend("ollama", error=down),
                                  "openrouter": Backend("openrouter", "cloud")})
    run_id = arena.start("Q", [LOCAL, CLOUD], blind=True)  # reversed: the local one is B
    failed = finish(arena, run_id).answers[1]
    assert failed.status == "error"
    assert failed.error == "This model couldn't answer; why is shown after the vote."
    assert "Ollama" in arena.vote(run_id, 0).answers[1].error
