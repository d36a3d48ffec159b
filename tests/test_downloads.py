"""studio.downloads against a local HTTP file server (stdlib, 127.0.0.1, free port) that
supports Range requests and can cut the connection or pause part way."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
from pathlib import Path

import httpx
import pytest

from studio.models.downloads import ChecksumMismatch, Download, DownloadManager, NotEnoughSpace
from studio.errors import BackendRejected, BackendUnavailable, InvalidInput, StreamInterrupted
from studio.models.files import delete_model_file, disk_space, folder_usage, model_path, plan_download
from tests.fakes.file_server import PAYLOAD, running_file_server

CHUNK = 4096
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FOLDERS = ["checkpoints", "loras", "vae", "custom_nodes"]
WAIT = 10  # seconds; only an upper bound for events, never a sleep


@pytest.fixture
def server():
    with running_file_server({"/model.safetensors": PAYLOAD}) as srv:
        yield srv


@pytest.fixture
def models_dir(tmp_path):
    root = tmp_path / "models"
    for folder in ("checkpoints", "loras", "vae"):
        (root / folder).mkdir(parents=True)
    return root


def local_client() -> httpx.Client:
    # trust_env=False: a proxy set in the environment must not see 127.0.0.1 traffic.
    return httpx.Client(trust_env=False, follow_redirects=True, timeout=WAIT)


def make_job(plan, **options) -> Download:
    options.setdefault("client_factory", local_client)
    options.setdefault("chunk_size", CHUNK)
    return Download(plan, **options)


def plan_for(server, models_dir, path="/model.safetensors", **kwargs):
    return plan_download(server.url(path), "checkpoints", "model.safetensors", models_dir,
                         FOLDERS, **kwargs)


class FullDiskWriter:
    """Wraps a real file; raises ENOSPC once more than ``limit`` bytes would be written."""

    def __init__(self, real, limit):
        self.real, self.limit, self.written = real, limit, 0

    def write(self, data):
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(data)
        return self.real.write(data)

    def flush(self):
        self.real.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


# ------------------------------------------------------------------ downloads

def test_download_full_file_lands_under_final_name(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    job = make_job(plan)
    job.run()

    progress = job.progress()
    assert progress.state == "done", progress.message
    assert plan.target.read_bytes() == PAYLOAD
    assert not plan.part.exists()
    assert (progress.bytes_done, progress.total) == (len(PAYLOAD), len(PAYLOAD))
    assert progress.percent == 100.0
    assert progress.path == str(plan.target)
    assert server.requests == [("/model.safetensors", None)]


def test_download_in_background_thread_finishes(server, models_dir):
    job = make_job(plan_for(server, models_dir)).start()

    assert job.wait_finished(WAIT)
    assert job.progress().state == "done"


def test_download_resumes_after_a_cut_with_range_request(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    server.cut_after["/model.safetensors"] = 3 * CHUNK + 100
    first = make_job(plan)
    first.run()

    assert first.progress().state == "failed"
    assert isinstance(first.error, StreamInterrupted)
    assert "resume" in str(first.error)
    assert not plan.target.exists()
    kept = plan.part.stat().st_size
    assert 0 < kept <= 3 * CHUNK + 100

    second = make_job(plan)
    second.run()
    assert second.progress().state == "done", second.progress().message
    assert second.progress().resumed_from == kept
    assert plan.target.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/model.safetensors", f"bytes={kept}-")


def test_download_restarts_when_server_ignores_range(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    plan.part.write_bytes(b"stale bytes that are not the file")
    server.ignore_range = True
    job = make_job(plan)
    job.run()

    assert job.progress().state == "done", job.progress().message
    assert job.progress().resumed_from == 0
    assert plan.target.read_bytes() == PAYLOAD


def test_download_416_with_complete_part_just_finishes(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    plan.part.write_bytes(PAYLOAD)
    job = make_job(plan)
    job.run()

    assert job.progress().state == "done", job.progress().message
    assert plan.target.read_bytes() == PAYLOAD
    assert server.requests == [("/model.safetensors", f"bytes={len(PAYLOAD)}-")]


def test_download_416_with_oversized_part_starts_over(server, models_dir):
    plan = plan_for(server, models_dir)
    plan.part.write_bytes(PAYLOAD + b"junk")
    job = make_job(plan)
    job.run()

    assert job.progress().state == "done", job.progress().message
    assert plan.target.read_bytes() == PAYLOAD
    assert server.requests == [("/model.safetensors", f"bytes={len(PAYLOAD) + 4}-"),
                               ("/model.safetensors", None)]


def test_download_bad_checksum_deletes_file_and_names_both_hashes(server, models_dir):
    expected = "0" * 64
    plan = plan_for(server, models_dir, sha256=expected)
    job = make_job(plan)
    job.run()

    assert job.progress().state == "failed"
    assert isinstance(job.error, ChecksumMismatch)
    assert expected in str(job.error) and PAYLOAD_SHA in str(job.error)
    assert not plan.target.exists() and not plan.part.exists()


def test_download_bad_checksum_after_resume_is_caught(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    plan.part.write_bytes(b"\xff" * CHUNK)  # wrong first bytes, right length to resume from
    job = make_job(plan)
    job.run()

    assert isinstance(job.error, ChecksumMismatch)
    assert not plan.target.exists() and not plan.part.exists()


def test_download_disk_full_leaves_no_file_and_says_space_needed(server, models_dir):
    plan = plan_for(server, models_dir)
    job = make_job(plan, opener=lambda path, mode: FullDiskWriter(open(path, mode), 2 * CHUNK))
    job.run()

    assert job.progress().state == "failed"
    assert isinstance(job.error, NotEnoughSpace)
    assert "ran out of space" in str(job.error)
    assert "The whole file needs 40.0 KiB" in str(job.error)
    assert not plan.target.exists() and not plan.part.exists()


def test_download_checks_free_space_before_writing(server, models_dir):
    plan = plan_for(server, models_dir)
    tiny_disk = lambda path: disk_space(path)._replace(free=1000)  # noqa: E731
    job = make_job(plan, disk_usage=tiny_disk)
    job.run()

    assert isinstance(job.error, NotEnoughSpace)
    assert "needs 40.0 KiB more and only 1000 B is free" in str(job.error)
    assert not plan.target.exists() and not plan.part.exists()


def hold_and_watch(server, at_bytes):
    """Make the server pause after ``at_bytes``; returns (release, reached, on_progress)."""
    release, reached = threading.Event(), threading.Event()
    server.hold["/model.safetensors"] = (at_bytes, release)

    def on_progress(progress):
        if progress.bytes_done >= at_bytes:
            reached.set()

    return release, reached, on_progress


@pytest.mark.parametrize("delete_partial, part_kept", [(False, True), (True, False)])
def test_download_cancel_keeps_or_deletes_partial(server, models_dir, delete_partial, part_kept):
    plan = plan_for(server, models_dir)
    release, reached, on_progress = hold_and_watch(server, 4 * CHUNK)
    job = make_job(plan, on_progress=on_progress).start()

    assert reached.wait(WAIT)
    job.cancel(delete_partial=delete_partial)
    release.set()
    assert job.wait_finished(WAIT)

    assert job.progress().state == "cancelled"
    assert plan.part.exists() is part_kept
    assert not plan.target.exists()
    if part_kept:
        assert plan.part.read_bytes() == PAYLOAD[:4 * CHUNK]
        assert "resume" in job.progress().message


def test_download_cancelled_part_is_resumed_later(server, models_dir):
    plan = plan_for(server, models_dir, sha256=PAYLOAD_SHA)
    release, reached, on_progress = hold_and_watch(server, 4 * CHUNK)
    job = make_job(plan, on_progress=on_progress).start()
    assert reached.wait(WAIT)
    job.cancel()
    release.set()
    assert job.wait_finished(WAIT)

    again = make_job(plan)
    again.run()
    assert again.progress().state == "done"
    assert again.progress().resumed_from == 4 * CHUNK
    assert plan.target.read_bytes() == PAYLOAD


def test_download_progress_reports_speed_and_eta(server, models_dir):
    ticks = iter(range(1000))  # the fake clock advances one second per reading
    release, reached, on_progress = hold_and_watch(server, 4 * CHUNK)
    seen = []

    def record(progress):
        on_progress(progress)
        if progress.bytes_done == 4 * CHUNK and not seen:
            seen.append(progress)

    job = make_job(plan_for(server, models_dir), clock=lambda: float(next(ticks)),
                   on_progress=record).start()
    assert reached.wait(WAIT)
    release.set()
    assert job.wait_finished(WAIT)

    mid = seen[0]
    assert (mid.state, mid.total, mid.percent) == ("running", len(PAYLOAD), 40.0)
    assert mid.speed_bps == CHUNK
    assert mid.eta_s == 6.0


def test_download_after_cancel_before_start_does_nothing(server, models_dir):
    plan = plan_for(server, models_dir)
    job = make_job(plan)
    job.cancel()
    job.run()

    assert job.progress().state == "cancelled"
    assert server.requests == []


@pytest.mark.parametrize("status, error_type, words", [
    (404, BackendRejected, "HTTP 404"),
    (403, BackendRejected, "access token"),
    (500, BackendRejected, "HTTP 500"),
])
def test_download_http_error_is_reported(server, models_dir, status, error_type, words):
    server.status["/model.safetensors"] = status
    job = make_job(plan_for(server, models_dir))
    job.run()

    assert isinstance(job.error, error_type)
    assert job.error.status == status
    assert words in job.progress().message


def test_download_web_page_instead_of_file_is_refused(server, models_dir):
    server.content_type["/model.safetensors"] = "text/html; charset=utf-8"
    plan = plan_for(server, models_dir)
    job = make_job(plan)
    job.run()

    assert "web page" in str(job.error)
    assert not plan.part.exists()


def test_download_unreachable_host_is_backend_unavailable(models_dir):
    with socket.socket() as probe:  # a free port that nothing listens on afterwards
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = plan_download(f"http://127.0.0.1:{port}/m.safetensors", "vae", "", models_dir, FOLDERS)
    job = make_job(plan)
    job.run()

    assert isinstance(job.error, BackendUnavailable)
    assert "Can't reach 127.0.0.1" in str(job.error)


# ------------------------------------------------------------------ manager

def test_download_manager_keeps_jobs_by_id_for_a_reload(server, models_dir):
    manager = DownloadManager(client_factory=local_client, chunk_size=CHUNK)
    job = manager.start(plan_for(server, models_dir))
    assert job.wait_finished(WAIT)

    assert manager.progress(job.id).state == "done"
    assert [p.id for p in manager.list()] == [job.id]
    with pytest.raises(InvalidInput, match="no download with id"):
        manager.get("from-before-a-restart")


def test_download_manager_refuses_second_job_for_same_file(server, models_dir):
    release, reached, on_progress = hold_and_watch(server, CHUNK)
    manager = DownloadManager(client_factory=local_client, chunk_size=CHUNK,
                              on_progress=on_progress)
    plan = plan_for(server, models_dir)
    job = manager.start(plan)
    assert reached.wait(WAIT)

    with pytest.raises(InvalidInput, match="already downloading"):
        manager.start(plan)
    manager.cancel(job.id)
    release.set()
    assert job.wait_finished(WAIT)


def test_download_manager_retry_resumes_failed_job(server, models_dir):
    server.cut_after["/model.safetensors"] = 2 * CHUNK
    manager = DownloadManager(client_factory=local_client, chunk_size=CHUNK)
    plan = plan_for(server, models_dir)
    failed = manager.start(plan)
    assert failed.wait_finished(WAIT)
    assert failed.progress().state == "failed"

    retried = manager.retry(failed.id)
    assert retried.wait_finished(WAIT)
    assert retried.progress().state == "done"
    assert plan.target.read_bytes() == PAYLOAD
    assert [p.id for p in manager.list()] == [retried.id, failed.id]


def test_download_manager_drops_oldest_finished_jobs(server, models_dir):
    manager = DownloadManager(client_factory=local_client, keep_finished=2)
    ids = []
    for name in ("a.safetensors", "b.safetensors", "c.safetensors"):
        plan = plan_download(server.url("/model.safetensors"), "loras", name, models_dir, FOLDERS)
        job = manager.start(plan)
        assert job.wait_finished(WAIT)
        ids.append(job.id)

    manager.start(plan_download(server.url("/model.safetensors"), "vae", "d.safetensors",
                                models_dir, FOLDERS)).wait_finished(WAIT)
    assert ids[0] not in [p.id for p in manager.list()]
    assert ids[2] in [p.id for p in manager.list()]


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("url, folder, filename, words", [
    ("ftp://example.com/m.safetensors", "checkpoints", "m.safetensors", "Only http://"),
    ("file:///etc/passwd", "checkpoints", "passwd", "Only http:// and https://"),
    ("https:///nohost", "checkpoints", "m.safetensors", "Only http:// and https://"),
    ("not a url", "checkpoints", "m.safetensors", "Only http:// and https://"),
    ("https://h/m", "checkpoints", "../escape.safetensors", "plain name"),
    ("https://h/m", "checkpoints", "sub/m.safetensors", "plain name"),
    ("https://h/m", "checkpoints", "sub\\m.safetensors", "plain name"),
    ("https://h/m", "checkpoints", "..", "plain name"),
    ("https://h/m", "checkpoints", ".hidden", "starts with a dot"),
    ("https://h/m", "checkpoints", "bad\x00name", "control characters"),
    ("https://h/m", "checkpoints", "x" * 256, "255 bytes"),
    ("https://h/m", "checkpoints", "m.safetensors.part", "unfinished downloads"),
    ("https://h/", "checkpoints", "", "does not end in a file name"),
    ("https://h/m", "unknown_folder", "m.safetensors", "no model folder called 'unknown_folder'"),
    ("https://h/m", "../checkpoints", "m.safetensors", "plain name"),
    ("https://h/m", "custom_nodes", "evil.py", "extensions, not models"),
    ("https://h/m", "", "m.safetensors", "model folder is empty"),
])
def test_plan_download_rejects_bad_input(models_dir, url, folder, filename, words):
    with pytest.raises(InvalidInput) as caught:
        plan_download(url, folder, filename, models_dir, FOLDERS)
    assert words in str(caught.value)


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "0" * 63])
def test_plan_download_rejects_malformed_sha256(models_dir, sha):
    with pytest.raises(InvalidInput, match="64 hexadecimal"):
        plan_download("https://h/m.safetensors", "loras", "", models_dir, FOLDERS, sha256=sha)


def test_plan_download_takes_file_name_from_url(models_dir):
    url = "https://huggingface.co/o/r/resolve/main/my%20lora.safetensors?download=true"
    plan = plan_download(url, "loras", "  ", models_dir, FOLDERS, sha256=" " + "AB" * 32)

    assert plan.filename == "my lora.safetensors"
    assert plan.target == models_dir / "loras" / "my lora.safetensors"
    assert plan.part == models_dir / "loras" / "my lora.safetensors.part"
    assert plan.sha256 == "ab" * 32


def test_plan_download_refuses_existing_file_unless_overwrite(models_dir):
    (models_dir / "vae" / "v.safetensors").write_bytes(b"x")

    with pytest.raises(InvalidInput, match="already in vae"):
        plan_download("https://h/v.safetensors", "vae", "v.safetensors", models_dir, FOLDERS)
    plan = plan_download("https://h/v.safetensors", "vae", "v.safetensors", models_dir, FOLDERS,
                         overwrite=True)
    assert plan.target.name == "v.safetensors"


def test_plan_download_missing_models_dir_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        plan_download("https://h/m", "loras", "m", tmp_path / "nope", FOLDERS)


def test_plan_download_creates_known_folder_missing_on_disk(server, models_dir):
    plan = plan_download(server.url("/model.safetensors"), "upscale_models", "x.pth", models_dir,
                         FOLDERS + ["upscale_models"])
    make_job(plan).run()

    assert (models_dir / "upscale_models" / "x.pth").read_bytes() == PAYLOAD


# ------------------------------------------------------------------ files on disk

def test_delete_model_file_removes_file_and_returns_size(models_dir):
    (models_dir / "loras" / "style.safetensors").write_bytes(b"12345")

    assert delete_model_file(models_dir, "loras", "style.safetensors") == 5
    assert not (models_dir / "loras" / "style.safetensors").exists()


@pytest.mark.parametrize("folder, filename, words", [
    ("loras", "../checkpoints/keep.safetensors", "plain name"),
    ("..", "keep.safetensors", "plain name"),
    ("loras", ".keep", "starts with a dot"),
    ("loras", "missing.safetensors", "no file"),
    ("nope", "keep.safetensors", "no model folder"),
])
def test_delete_model_file_rejects_bad_names(models_dir, folder, filename, words):
    (models_dir / "checkpoints" / "keep.safetensors").write_bytes(b"x")

    with pytest.raises(InvalidInput, match=words):
        delete_model_file(models_dir, folder, filename, known_folders=FOLDERS)
    assert (models_dir / "checkpoints" / "keep.safetensors").exists()


def test_model_path_stays_inside_models_dir(models_dir):
    expected = Path(os.path.abspath(models_dir)) / "vae" / "a.pt"
    assert model_path(models_dir, "vae", "a.pt") == expected


def test_folder_usage_sums_each_folder(models_dir):
    (models_dir / "loras" / "a.safetensors").write_bytes(b"x" * 100)
    (models_dir / "loras" / "sdxl").mkdir()
    (models_dir / "loras" / "sdxl" / "b.safetensors").write_bytes(b"x" * 50)
    (models_dir / "checkpoints" / "c.safetensors.part").write_bytes(b"x" * 7)
    (models_dir / "stray.txt").write_bytes(b"not a folder")

    assert folder_usage(models_dir) == {"checkpoints": 7, "loras": 150, "vae": 0}


def test_folder_usage_missing_dir_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        folder_usage(tmp_path / "nope")


def test_disk_space_reports_free_bytes(models_dir):
    space = disk_space(models_dir)

    assert 0 <= space.free <= space.total


# ------------------------------------------------------------------ links out of the folder

@pytest.fixture
def outside(tmp_path, models_dir):
    """A folder beside the models folder, linked in as models/loras (loras itself removed)
    and holding a file that a download or delete must never reach."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.safetensors").write_bytes(b"x" * 40)
    (models_dir / "loras").rmdir()
    (models_dir / "loras").symlink_to(elsewhere, target_is_directory=True)
    return elsewhere


def test_plan_download_refuses_a_folder_linked_outside(server, models_dir, outside):
    with pytest.raises(InvalidInput, match="'loras' is a link to .*outside the models folder"):
        plan_download(server.url("/model.safetensors"), "loras", "new.safetensors", models_dir,
                      FOLDERS)
    assert sorted(p.name for p in outside.iterdir()) == ["precious.safetensors"]


def test_delete_model_file_refuses_a_folder_linked_outside(models_dir, outside):
    with pytest.raises(InvalidInput, match="outside the models folder"):
        delete_model_file(models_dir, "loras", "precious.safetensors", FOLDERS)
    assert (outside / "precious.safetensors").exists()


def test_delete_model_file_refuses_a_file_linked_outside(models_dir, tmp_path):
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"keep")
    (models_dir / "vae" / "linked.pt").symlink_to(precious)
    with pytest.raises(InvalidInput, match="model file 'linked.pt' is a link"):
        delete_model_file(models_dir, "vae", "linked.pt", FOLDERS)
    assert precious.read_bytes() == b"keep"


def test_download_refuses_a_folder_linked_outside_after_planning(server, models_dir, tmp_path):
    plan = plan_for(server, models_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (models_dir / "checkpoints").rmdir()
    (models_dir / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    job = make_job(plan)
    job.run()
    assert job.progress().state == "failed" and "outside the models folder" in job.progress().message
    assert list(elsewhere.iterdir()) == []


def test_a_models_folder_that_is_itself_a_link_is_fine(server, tmp_path, models_dir):
    linked = tmp_path / "models-link"
    linked.symlink_to(models_dir, target_is_directory=True)
    job = make_job(plan_for(server, linked))
    job.run()
    assert job.progress().state == "done"
    assert (models_dir / "checkpoints" / "model.safetensors").read_bytes() == PAYLOAD


def test_folder_usage_skips_a_folder_linked_outside(models_dir, outside):
    (models_dir / "vae" / "v.pt").write_bytes(b"x" * 3)
    assert folder_usage(models_dir) == {"checkpoints": 0, "vae": 3}
