"""CloudStore: the m006 tables (cached catalogue, arena runs and answers) on a real SQLite."""

from __future__ import annotations

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from studio.errors import InvalidInput, StudioError
from studio.store.migrations import migrations
from studio.store.cloud import ANSWER_FIELDS, CloudStore

CLOUD_MODEL_COLUMNS = {
    "id": str, "name": str, "context_length": int, "input_modalities": str,
    "output_modalities": str, "price_prompt": str, "price_completion": str, "price_image": str,
    "price_request": str, "fetched_at": str,
}
ARENA_RUN_COLUMNS = {
    "id": str, "created_at": str, "user": str, "prompt": str, "system_prompt": str,
    "options": str, "blind": int, "voted_at": str, "winner_slot": int,
}
ARENA_ANSWER_COLUMNS = {
    "id": int, "run_id": str, "slot": int, "model_id": str, "backend": str, "answered_by": str,
    "status": str, "error": str, "content": str, "thinking": str, "prompt_tokens": int,
    "completion_tokens": int, "ttft_ms": float, "tokens_per_s": float, "total_ms": float,
    "cost_usd": float, "cost_is_estimate": int, "updated_at": str,
}
LOCAL, CLOUD, CLOUD2 = "ollama:llama3.2:latest", "openrouter:openai/gpt-4o-mini", "openrouter:x/y"


@pytest.fixture
def cloud(store):
    return CloudStore(store)


def model_row(model_id="openai/gpt-4o-mini", **extra):
    row = {"id": model_id, "name": f"Name of {model_id}", "context_length": 128000,
           "input_modalities": ["text", "image"], "output_modalities": ["text"],
           "price_prompt": "0.00000015", "price_completion": "0.0000006",
           "price_image": "0.000217", "price_request": "0"}
    row.update(extra)
    return row


def test_store_cloud_migration_creates_the_tables():
    db = Database(memory=True)
    migrations.apply(db)
    assert db["cloud_models"].columns_dict == CLOUD_MODEL_COLUMNS
    assert db["arena_runs"].columns_dict == ARENA_RUN_COLUMNS
    assert db["arena_answers"].columns_dict == ARENA_ANSWER_COLUMNS
    [fk] = db["arena_answers"].foreign_keys
    assert (fk.column, fk.other_table, fk.on_delete) == ("run_id", "arena_runs", "CASCADE")


def test_store_cloud_migration_upgrades_an_older_database_and_is_idempotent():
    db = Database(memory=True)
    older = Migrations("studio")  # a database from before the cloud tables (m006)
    for step in migrations._migrations:
        if step.name < "m006":
            older(name=step.name)(step.fn)
    older.apply(db)
    assert "cloud_models" not in db.table_names() and "messages" in db.table_names()
    migrations.apply(db)
    migrations.apply(db)
    assert {"cloud_models", "arena_runs", "arena_answers"} <= set(db.table_names())


def test_store_cloud_catalogue_round_trips_and_is_replaced_wholesale(cloud):
    assert cloud.cloud_models() == []
    cloud.replace_cloud_models([model_row(), model_row("b/free", price_prompt=None)])
    first = cloud.cloud_models()
    assert [m.id for m in first] == ["b/free", "openai/gpt-4o-mini"]
    gpt = first[1]
    assert gpt.input_modalities == ("text", "image") and gpt.context_length == 128000
    assert gpt.price_prompt == "0.00000015" and first[0].price_prompt is None
    stamp = cloud.replace_cloud_models([model_row("c/new")])
    assert [(m.id, m.fetched_at) for m in cloud.cloud_models()] == [("c/new", stamp)]


def test_store_cloud_create_run_has_one_streaming_answer_per_model(cloud):
    run = cloud.create_arena_run("Which is best?", [LOCAL, CLOUD], system_prompt="Be brief.",
                                 options={"temperature": 0.2}, blind=True)
    assert run.prompt == "Which is best?" and run.blind and not run.voted
    assert run.options == {"temperature": 0.2} and run.system_prompt == "Be brief."
    assert [(a.slot, a.model_id, a.status) for a in run.answers] == [
        (0, LOCAL, "streaming"), (1, CLOUD, "streaming")]


def test_store_cloud_update_answer_stores_figures(cloud):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    cloud.update_arena_answer(run.id, 1, backend="openrouter", answered_by="openai/gpt-4o-mini",
                              status="complete", content="Hi", prompt_tokens=10,
                              completion_tokens=2, ttft_ms=120.0, tokens_per_s=40.0,
                              total_ms=300.0, cost_usd=0.0123, cost_is_estimate=True)
    answer = cloud.arena_run(run.id).answers[1]
    assert (answer.content, answer.status, answer.cost_usd, answer.cost_is_estimate) == (
        "Hi", "complete", 0.0123, True)
    assert (answer.ttft_ms, answer.tokens_per_s, answer.completion_tokens) == (120.0, 40.0, 2)


@pytest.mark.parametrize("fields, error", [
    ({"colour": "red"}, TypeError),
    ({"status": "done"}, ValueError),
])
def test_store_cloud_update_answer_rejects_unknown_fields_and_statuses(cloud, fields, error):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    with pytest.raises(error):
        cloud.update_arena_answer(run.id, 0, **fields)


def test_store_cloud_update_of_a_deleted_run_says_so(cloud):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    cloud.delete_arena_run(run.id)
    with pytest.raises(StudioError, match="no answer 0"):
        cloud.update_arena_answer(run.id, 0, content="late")
    assert cloud.arena_run(run.id) is None


def test_store_cloud_runs_are_listed_newest_first_with_answers(cloud):
    ids = [cloud.create_arena_run(f"p{i}", [LOCAL, CLOUD]).id for i in range(3)]
    runs = cloud.arena_runs(limit=2)
    assert [r.id for r in runs] == ids[:0:-1]
    assert all(len(r.answers) == 2 for r in runs)
    assert cloud.arena_runs(user="someone else") == []


def test_store_cloud_vote_records_winner_or_tie_once(cloud):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    voted = cloud.vote_arena(run.id, 1)
    assert voted.voted and voted.winner_slot == 1
    with pytest.raises(InvalidInput, match="already has a vote"):
        cloud.vote_arena(run.id, 0)
    tie = cloud.vote_arena(cloud.create_arena_run("p", [LOCAL, CLOUD]).id, None)
    assert tie.voted and tie.winner_slot is None


@pytest.mark.parametrize("run_id, slot, error", [
    ("missing", 0, StudioError),
    (None, 5, InvalidInput),
])
def test_store_cloud_vote_rejects_unknown_runs_and_slots(cloud, run_id, slot, error):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    with pytest.raises(error):
        cloud.vote_arena(run_id or run.id, slot)


def test_store_cloud_scores_count_wins_ties_and_losses_of_voted_runs(cloud):
    cloud.vote_arena(cloud.create_arena_run("p", [LOCAL, CLOUD]).id, 1)
    cloud.vote_arena(cloud.create_arena_run("p", [LOCAL, CLOUD, CLOUD2]).id, 1)
    cloud.vote_arena(cloud.create_arena_run("p", [CLOUD, LOCAL]).id, None)
    cloud.create_arena_run("p", [LOCAL, CLOUD2])  # not voted: not counted
    scores = {s.model_id: s for s in cloud.arena_scores()}
    assert (scores[CLOUD].votes, scores[CLOUD].wins, scores[CLOUD].ties, scores[CLOUD].losses) \
        == (3, 2, 1, 0)
    assert (scores[LOCAL].votes, scores[LOCAL].wins, scores[LOCAL].ties, scores[LOCAL].losses) \
        == (3, 0, 1, 2)
    assert (scores[CLOUD2].votes, scores[CLOUD2].losses) == (1, 1)
    assert [s.model_id for s in cloud.arena_scores()][0] == CLOUD
    assert scores[CLOUD].win_rate == pytest.approx(2.5 / 3)


def test_store_cloud_interrupted_answers_are_marked_at_start_up(cloud):
    run = cloud.create_arena_run("p", [LOCAL, CLOUD])
    cloud.update_arena_answer(run.id, 0, content="half an ans")
    assert cloud.mark_interrupted_arena("Restarted.") == 2
    answers = cloud.arena_run(run.id).answers
    assert [(a.status, a.error) for a in answers] == [("partial", "Restarted."),
                                                       ("error", "Restarted.")]
    assert cloud.mark_interrupted_arena("Restarted.") == 0


def test_store_cloud_answer_fields_match_the_table():
    assert set(ANSWER_FIELDS) < set(ARENA_ANSWER_COLUMNS)
