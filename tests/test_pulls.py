"""PullManager: pulls on server threads against the fake Ollama, followed from anywhere."""

from __future__ import annotations

import threading

import pytest

from studio.clients.ollama import OllamaClient, PullProgress
from studio.errors import InvalidInput
from studio.models.pulls import CANCELLED_MESSAGE, PullManager, full_model_name

WAIT = 10.0


@pytest.fixture
def client(fake_ollama):
    c = OllamaClient(fake_ollama.url, timeout=10)
    yield c
    c.close()


@pytest.fixture
def pulls(client):
    return PullManager(client.pull)


def test_pull_runs_to_done_with_progress(fake_ollama, pulls):
    fake_ollama.add_remote_model("mistral", size=4_000_000)
    version = pulls.jobs.version

    job = pulls.start("mistral")
    while not pulls.get(job.id).finished:
        version = pulls.jobs.wait_changed(version, timeout=WAIT)
    snap = pulls.get(job.id)

    assert snap.state == "done" and snap.percent == 100.0
    assert snap.message == "Pulled mistral."
    # Every layer's bytes were counted (the weights and the three small blobs).
    assert snap.total == 4_000_000 and snap.completed == 4_000_000
    assert len(snap.layer) == 12 and snap.status == "success"
    assert "mistral:latest" in fake_ollama.installed()


def test_pull_progress_mid_way_has_layer_bytes_and_speed(fake_ollama):
    fake_ollama.add_remote_model("mistral", size=4_000_000)
    # Feed lines by hand so the middle of the pull can be inspected without timing.
    gate = threading.Event()
    clock = iter(range(100)).__next__

    def pull_fn(model):
        yield PullProgress("pulling manifest")
        yield PullProgress("pulling abcdef012345", "sha256:abcdef0123456789", 1000, 250)
        yield PullProgress("pulling abcdef012345", "sha256:abcdef0123456789", 1000, 500)
        gate.wait(WAIT)
        yield PullProgress("success")

    pulls = PullManager(pull_fn, clock=lambda: float(clock()))
    job = pulls.start("mistral")
    version = 0
    while pulls.get(job.id).completed < 500:
        version = pulls.jobs.wait_changed(version, WAIT)
    snap = pulls.get(job.id)
    gate.set()

    assert (snap.state, snap.layer, snap.completed, snap.total, snap.percent) == (
        "running", "abcdef012345", 500, 1000, 50.0)
    assert snap.speed_bps == 250.0  # 250 bytes over one clock tick
    assert pulls.wait(job.id, WAIT).state == "done"


def test_pull_unknown_model_fails_with_ollamas_error(pulls):
    job = pulls.start("no-such-model")
    snap = pulls.wait(job.id, WAIT)
    assert snap.state == "failed"
    assert "pull model manifest: file does not exist" in snap.message


def test_pull_cancel_stops_download_and_says_so(fake_ollama, pulls):
    fake_ollama.add_remote_model("mistral")
    fake_ollama.pull_delay = 0.05
    job = pulls.start("mistral")
    version = 0
    while not pulls.get(job.id).layer:
        version = pulls.jobs.wait_changed(version, WAIT)

    assert pulls.cancel(job.id) is True

    snap = pulls.get(job.id)
    assert snap.state == "cancelled" and snap.message == CANCELLED_MESSAGE
    assert fake_ollama.client_gone.wait(WAIT)
    assert "mistral:latest" not in fake_ollama.installed()
    assert pulls.cancel(job.id) is False


def test_pull_same_model_twice_joins_the_running_pull(fake_ollama, pulls):
    fake_ollama.add_remote_model("mistral")
    fake_ollama.pull_delay = 0.02
    first = pulls.start("mistral")
    second = pulls.start("mistral:latest")
    assert first.id == second.id
    assert pulls.wait(first.id, WAIT).state == "done"
    assert len(fake_ollama.requests_to("/api/pull")) == 1


def test_pull_seen_by_a_later_reader(fake_ollama, client):
    """A page opened later (another reader of the same manager) sees the outcome."""
    fake_ollama.add_remote_model("mistral")
    pulls = PullManager(client.pull)
    job = pulls.start("mistral")
    pulls.wait(job.id, WAIT)

    [snap] = pulls.snapshots()
    assert (snap.id, snap.state) == (job.id, "done")
    assert pulls.active() == []


def test_pull_stream_ending_early_is_a_failure():
    pulls = PullManager(lambda m: iter([PullProgress("pulling manifest")]))
    snap = pulls.wait(pulls.start("x").id, WAIT)
    assert snap.state == "failed" and "before it finished" in snap.message


def test_pull_unexpected_error_is_settled():
    def boom(model):
        raise RuntimeError("bug")
        yield  # pragma: no cover

    pulls = PullManager(boom)
    snap = pulls.wait(pulls.start("x").id, WAIT)
    assert snap.state == "failed" and "RuntimeError" in snap.message


@pytest.mark.parametrize("name", ["", "   ", "llama 3"])
def test_pull_rejects_bad_names(pulls, name):
    with pytest.raises(InvalidInput):
        pulls.start(name)


def test_pull_unknown_id(pulls):
    with pytest.raises(InvalidInput):
        pulls.get("nope")


def test_pull_keeps_only_recent_finished():
    pulls = PullManager(lambda m: iter([PullProgress("success")]), keep_finished=2)
    for i in range(4):
        pulls.wait(pulls.start(f"m{i}").id, WAIT)
    pulls.wait(pulls.start("last").id, WAIT)
    assert [s.model for s in pulls.snapshots()] == ["last", "m3", "m2"]


def test_full_model_name():
    assert full_model_name("llava") == "llava:latest"


def test_pull_done_makes_the_model_list_ask_again_before_it_says_done(fake_ollama, client):
    """The pickers of every page follow a pull: LocalModels asks Ollama again at once, and
    a reader woken by "done" already gets the new list."""
    from studio.models.local import LocalModels

    fake_ollama.add_remote_model("mistral")
    local = LocalModels(client, ttl_s=3600)
    before = local.listing()
    seen_at_done = []
    pulls = PullManager(client.pull, on_pulled=local.invalidate)
    job = pulls.start("mistral")
    pulls.wait(job.id, WAIT)
    seen_at_done.append(local.listing())

    assert "mistral:latest" in [m.name for m in seen_at_done[0].models]
    assert seen_at_done[0].version > before.version
    failed = PullManager(client.pull, on_pulled=lambda: seen_at_done.append("called"))
    failed.wait(failed.start("no-such-model").id, WAIT)
    assert seen_at_done[1:] == []
