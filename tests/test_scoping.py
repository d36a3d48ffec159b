"""Each person sees only their own: as bob, every id of ann's (image, job, comparison) is
"not found" or empty, in the store's queries, and nothing of ann's changes."""

from __future__ import annotations

import pytest

from studio.errors import StudioError
from tests.test_arena import LOCAL, OTHER, Backend, make_arena
from tests.test_arena import finish as finish_run
from tests.test_images import fake, finish, make_jobs, small  # noqa: F401 - fixtures


def rows(store, table: str) -> list:
    return [tuple(r) for r in store.db.execute(f"SELECT * FROM {table} ORDER BY rowid")]


def test_scoping_images_and_jobs_of_another_user_are_not_found(fake, make_jobs, store):  # noqa: F811
    jobs = make_jobs(fake)
    live = jobs.submit(small(), user="ann")
    finish(jobs, live)
    [image] = jobs.gallery_page(user="ann").images
    before = rows(store, "images"), rows(store, "image_jobs")
    assert jobs.gallery_page(user="bob").images == []
    assert jobs.gallery_page(user="bob", query="fox").images == []
    assert jobs.store.gallery_filters(user="bob") == ([], [])
    assert jobs.store.get_image(image.id, user="bob") is None
    assert jobs.store.set_favourite(image.id, True, user="bob") is None
    assert jobs.delete_image(image.id, user="bob") is False
    assert jobs.get(live.job_id, user="bob") is None
    assert jobs.snapshot(live.job_id, user="bob") is None
    assert jobs.cancel(live.job_id, user="bob") is False
    assert jobs.recent("bob") == []
    assert (rows(store, "images"), rows(store, "image_jobs")) == before
    assert jobs.store.get_image(image.id, user="ann").id == image.id  # still ann's, untouched


def test_scoping_a_running_job_of_another_user_cannot_be_cancelled(fake, make_jobs):  # noqa: F811
    fake.pause_after_step(1)
    jobs = make_jobs(fake)
    live = jobs.submit(small(), user="ann")
    assert fake.wait_paused()
    assert jobs.cancel(live.job_id, user="bob") is False
    assert jobs.get(live.job_id, user="bob") is None
    fake.resume()
    assert finish(jobs, live)[-1].status == "done"


def test_scoping_comparisons_of_another_user_are_not_found(store):
    arena, _ = make_arena(store, {"ollama": Backend("ollama", "one two")})
    run_id = arena.start("hi", [LOCAL, OTHER], user="ann")
    finish_run(arena, run_id)
    arena.vote(run_id, 0, user="ann")
    before = rows(store, "arena_runs"), rows(store, "arena_answers")
    for call in (lambda: arena.view(run_id, user="bob"),
                 lambda: list(arena.follow(run_id, user="bob")),
                 lambda: arena.vote(run_id, 1, user="bob"),
                 lambda: arena.stop(run_id, user="bob"),
                 lambda: arena.delete(run_id, user="bob")):
        with pytest.raises(StudioError, match="no longer exists"):
            call()
    assert arena.history(user="bob") == [] and arena.scores(user="bob") == []
    assert (rows(store, "arena_runs"), rows(store, "arena_answers")) == before
    assert [s.votes for _, s in arena.scores(user="ann")] == [1, 1]
