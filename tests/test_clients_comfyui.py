"""studio.clients.comfyui against the protocol-exact fake ComfyUI (no GPU, no weights)."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import uuid
from pathlib import Path

import pytest
from PIL import Image

from studio.images import workflows
from studio.clients import comfyui
from studio.clients.comfyui import (Cached, Cancelled, ComfyUIClient, Done, Executing, ImageRef, Preview,
                                    Progress, Queued)
from studio.errors import BackendRejected, BackendUnavailable, GenerationFailed
from tests.fakes.comfyui_server import FakeComfyUI

TEMPLATES = workflows.load_templates(Path(__file__).resolve().parents[1] / "workflows")
WAIT = 10  # seconds; generous upper bound for event waits, never a sleep


@pytest.fixture
def fake():
    with FakeComfyUI() as server:
        yield server


@pytest.fixture
def client(fake):
    with ComfyUIClient(fake.url, timeout=5, run_timeout=30, poll_interval=0.02) as c:
        yield c


def invert_graph(**params) -> dict:
    return workflows.render(TEMPLATES["test_invert"], {"width": 32, "height": 24, **params})


def sd15_graph(steps: int = 3, **params) -> dict:
    return workflows.render(TEMPLATES["sd15_txt2img"], {"prompt": "a fox", "steps": steps,
                                                         "width": 64, "height": 64, **params})


def run_in_thread(client, graph, **kwargs):
    """Start client.run in a thread; returns (thread, box) where box gets 'result' or 'error'."""
    box: dict = {"events": []}
    queued = threading.Event()

    def on_event(event):
        box["events"].append(event)
        if isinstance(event, Queued):
            queued.set()

    def target():
        try:
            box["result"] = client.run(graph, on_event=on_event, **kwargs)
        except Exception as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    box["queued"] = queued
    return thread, box


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ happy path

def test_run_returns_saved_image_with_prompt_chunk(client):
    result = client.run(invert_graph(color=0xFF0000))
    saved = [ref for ref in result.images]
    assert [ref.type for ref in saved] == ["output"]
    data = client.view(saved[0])
    image = Image.open(io.BytesIO(data))
    assert image.size == (32, 24)
    assert image.getpixel((0, 0)) == (0, 255, 255)  # red inverted
    assert json.loads(image.text["prompt"])["2"]["class_type"] == "ImageInvert"


def test_run_sends_client_id_prompt_id_and_feature_flags(fake, client):
    result = client.run(invert_graph())
    body = fake.requests_to("/prompt", "POST")[0].json
    assert str(uuid.UUID(body["prompt_id"])) == body["prompt_id"] == result.prompt_id
    client_id, first_frame = fake.ws_messages[0]
    assert body["client_id"] == client_id
    assert first_frame == {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


def test_run_uses_caller_prompt_id(client):
    wanted = str(uuid.uuid4())
    assert client.run(invert_graph(), prompt_id=wanted).prompt_id == wanted


def test_stream_yields_events_in_protocol_order(client):
    events = list(client.stream(sd15_graph(steps=3)))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["Queued", "Started"]
    assert kinds[-1] == "Done"
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert all(e.total == 3 and e.node == "3" for e in events if isinstance(e, Progress))
    executing = [(e.node, e.class_type) for e in events if isinstance(e, Executing)]
    assert ("3", "KSampler") in executing and executing[-1] == ("9", "SaveImage")
    assert kinds.index("Executing") < kinds.index("Progress") < kinds.index("Done")


def test_stream_queued_event_reports_position_behind_running_job(fake, client):
    fake.pause_after_step(1)
    first, _ = run_in_thread(client, sd15_graph())
    assert fake.wait_paused(WAIT)
    second, box = run_in_thread(client, invert_graph())
    assert box["queued"].wait(WAIT)
    fake.resume()
    first.join(WAIT)
    second.join(WAIT)
    assert box["events"][0].position == 1
    assert isinstance(box["events"][-1], Done)


@pytest.mark.parametrize("feature_flags, frame_type", [(True, 4), (False, 1)])
def test_run_decodes_previews_of_both_frame_types(fake, client, feature_flags, frame_type):
    fake.feature_flags = feature_flags
    previews = []
    client.run(sd15_graph(steps=2), on_event=lambda e: previews.append(e) if isinstance(e, Preview) else None)
    assert len(previews) == 2
    assert all(isinstance(p.image, Image.Image) and p.image.format == "JPEG" for p in previews)
    assert all(p.node == "3" for p in previews)
    assert previews[0].image.size == (8, 8)


def test_preview_frames_are_decoded_by_type():
    job = comfyui._Job.__new__(comfyui._Job)
    job.prompt_id, job.started, job.current_node = "p1", True, "3"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    meta = json.dumps({"node_id": "5", "prompt_id": "p1", "display_node_id": "5",
                       "image_type": "image/png"}).encode()
    other = json.dumps({"node_id": "5", "prompt_id": "someone-else"}).encode()
    assert job._preview(struct.pack(">II", 1, 2) + png).node == "3"
    assert job._preview(struct.pack(">II", 4, len(meta)) + meta + png).node == "5"
    assert job._preview(struct.pack(">II", 4, len(other)) + other + png) is None
    assert job._preview(struct.pack(">II", 3, 1) + b"3hello") is None


def test_run_cached_rerun_returns_the_same_images(client):
    graph = invert_graph()
    first = client.run(graph)
    events = []
    second = client.run(graph, on_event=events.append)
    assert second.images == first.images
    assert second.cached == ("1", "2", "3", "4")
    assert Cached(("1", "2", "3", "4")) in events
    assert not any(isinstance(e, Executing) for e in events)


def test_run_timings_are_filled(client):
    timings = client.run(invert_graph()).timings
    assert timings.total_s is not None and timings.total_s >= 0
    assert timings.execution_s is not None and timings.execution_s >= 0


def test_run_with_uploaded_image(fake, client):
    buf = io.BytesIO()
    Image.new("RGB", (40, 16), (10, 20, 30)).save(buf, format="PNG")
    uploaded = client.upload_image(buf.getvalue(), "cat.png")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": uploaded.value}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}}}
    result = client.run(graph)
    assert Image.open(io.BytesIO(client.view(result.images[0]))).size == (40, 16)


def test_upload_image_renames_different_bytes_with_same_name(client):
    first = client.upload_image(b"one", "same.png")
    again = client.upload_image(b"one", "same.png")
    other = client.upload_image(b"two", "same.png")
    forced = client.upload_image(b"three", "same.png", overwrite=True, subfolder="sub")
    assert (first.name, again.name, other.name) == ("same.png", "same.png", "same (1).png")
    assert forced.value == "sub/same.png"


# ------------------------------------------------------------------ refusals and failures

def test_object_info_is_cached(fake, client):
    client.object_info()
    client.object_info()
    assert len(fake.requests_to("/object_info")) == 1


@pytest.mark.parametrize("graph, error_type, phrase", [
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}},
     "prompt_outputs_failed_validation", "Node 1 (EmptyImage): width: Value 0 smaller than min of 1"),
    ({"1": {"class_type": "NoSuchNodeXYZ", "inputs": {}},
      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}},
     "invalid_prompt", "node NoSuchNodeXYZ does not exist"),
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}},
     "prompt_no_outputs", "Prompt has no outputs"),
    ({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "gone.ckpt"}},
      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
     "prompt_outputs_failed_validation", "ckpt_name 'gone.ckpt' isn't available"),
])
def test_run_maps_400_to_prompt_rejected(client, graph, error_type, phrase):
    with pytest.raises(comfyui.PromptRejected) as info:
        client.run(graph)
    assert info.value.error_type == error_type
    assert info.value.status == 400
    assert phrase in str(info.value)
    assert str(info.value).startswith(f"ComfyUI at {client.base_url} refused the workflow")


def test_prompt_rejected_carries_node_errors(client):
    graph = {"1": {"class_type": "ImageBlur", "inputs": {"image": ["9", 0], "sigma": 1.0}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(comfyui.PromptRejected) as info:
        client.run(graph)
    assert set(info.value.node_errors) == {"1"}
    assert info.value.problems[0].startswith("Node 1 (ImageBlur):")


def test_run_execution_error_raises_generation_failed(fake, client):
    fake.fail_next("3", "CUDA error: out of memory", exception_type="torch.OutOfMemoryError", at_step=2)
    with pytest.raises(GenerationFailed) as info:
        client.run(sd15_graph(steps=3))
    error = info.value
    assert isinstance(error, comfyui.ExecutionFailed)
    assert (error.node_id, error.node_type) == ("3", "KSampler")
    assert "Node 3 (KSampler)" in str(error) and "out of memory" in str(error)
    assert "smaller size" in str(error)


def test_run_interrupt_by_cancel_event_is_a_cancelled_outcome(fake, client):
    fake.pause_after_step(1)
    cancel = threading.Event()
    thread, box = run_in_thread(client, sd15_graph(steps=5), cancel=cancel)
    assert fake.wait_paused(WAIT)
    cancel.set()
    thread.join(WAIT)
    assert box["result"].cancelled and box["result"].images == ()
    interrupt = fake.requests_to("/interrupt", "POST")[0]
    assert interrupt.json == {"prompt_id": box["result"].prompt_id}
    assert isinstance(box["events"][-1], Cancelled)
    assert client.status(box["result"].prompt_id).state == "cancelled"


def test_run_cancel_deletes_a_pending_prompt(fake, client):
    fake.pause_after_step(1)
    first, first_box = run_in_thread(client, sd15_graph())
    assert fake.wait_paused(WAIT)
    cancel = threading.Event()
    second, box = run_in_thread(client, invert_graph(), cancel=cancel)
    assert box["queued"].wait(WAIT)
    cancel.set()
    second.join(WAIT)
    assert box["result"].cancelled
    assert fake.requests_to("/queue", "POST")[0].json == {"delete": [box["result"].prompt_id]}
    assert fake.requests_to("/interrupt") == []
    fake.resume()
    first.join(WAIT)
    assert first_box["result"].images
    assert client.status(box["result"].prompt_id).state == "unknown"


def test_run_interrupted_from_elsewhere_is_cancelled(fake, client):
    fake.pause_after_step(1)
    thread, box = run_in_thread(client, sd15_graph())
    assert fake.wait_paused(WAIT)
    client.interrupt()
    thread.join(WAIT)
    assert box["result"].cancelled


def test_run_reconnects_after_websocket_drop_and_keeps_streaming(fake, client):
    fake.drop_ws_after(1)
    fake.pause_after_step(1)
    thread, box = run_in_thread(client, sd15_graph(steps=4))
    assert fake.wait_paused(WAIT)
    assert fake.wait_until(lambda f: len(f.ws_connections) == 2, WAIT)
    assert len(set(fake.ws_connections)) == 1  # same clientId
    # After reconnecting the client asks /history then /queue whether the job still runs.
    assert fake.wait_until(lambda f: len(f.requests_to("/queue", "GET")) == 2, WAIT)
    fake.resume()
    thread.join(WAIT)
    assert len(box["result"].images) == 1
    assert [e.step for e in box["events"] if isinstance(e, Progress)] == [1, 2, 3, 4]


def test_run_falls_back_to_history_when_websocket_stays_down(fake, client):
    prompt_id = str(uuid.uuid4())
    fake.drop_ws_after(1, reconnect=False)
    fake.pause_after_step(1)
    thread, box = run_in_thread(client, sd15_graph(steps=4), prompt_id=prompt_id)
    assert fake.wait_paused(WAIT)
    assert fake.wait_until(lambda f: len(f.requests_to(f"/history/{prompt_id}")) >= 2, WAIT)
    fake.resume()
    thread.join(WAIT)
    result = box["result"]
    assert len(result.images) == 1
    assert client.view(result.images[0]).startswith(b"\x89PNG")
    assert [e.step for e in box["events"] if isinstance(e, Progress)] == [1]


def test_run_reports_job_lost_after_comfyui_restart(fake, client):
    prompt_id = str(uuid.uuid4())
    fake.drop_ws_after(1, reconnect=False)
    fake.pause_after_step(1)
    thread, box = run_in_thread(client, sd15_graph(), prompt_id=prompt_id)
    assert fake.wait_paused(WAIT)
    assert fake.wait_until(lambda f: len(f.requests_to(f"/history/{prompt_id}")) >= 1, WAIT)
    fake.restart()
    thread.join(WAIT)
    assert isinstance(box["error"], comfyui.JobLost)
    assert prompt_id in str(box["error"]) and "restarted" in str(box["error"])


def test_run_timeout_raises_with_prompt_id(fake, client):
    fake.pause_after_step(1)
    with pytest.raises(comfyui.GenerationTimeout) as info:
        client.run(sd15_graph(), timeout=0.3)
    assert info.value.prompt_id in str(info.value)
    assert client.status(info.value.prompt_id).state == "running"
    fake.resume()


# ------------------------------------------------------------------ one look at a job by prompt id

def test_status_returns_done_with_images(client):
    result = client.run(invert_graph())
    status = client.status(result.prompt_id)
    assert status.state == "done" and status.images == result.images


def test_status_unknown_prompt(client):
    status = client.status(str(uuid.uuid4()))
    assert status.state == "unknown" and "restarted" in status.message


def test_status_reports_queue_position(fake, client):
    running = str(uuid.uuid4())
    fake.pause_after_step(1)
    first, _ = run_in_thread(client, sd15_graph(), prompt_id=running)
    assert fake.wait_paused(WAIT)
    queued = client.queue_prompt(invert_graph())
    status = client.status(queued.prompt_id)
    assert (status.state, status.position) == ("queued", 1)
    assert client.status(running).state == "running"
    fake.resume()
    first.join(WAIT)


def test_status_failed_job_has_message(fake, client):
    fake.fail_next("2", "boom")
    wanted = str(uuid.uuid4())
    with pytest.raises(GenerationFailed):
        client.run(invert_graph(), prompt_id=wanted)
    status = client.status(wanted)
    assert status.state == "failed" and "Node 2 (ImageInvert): RuntimeError: boom" in status.message


# ------------------------------------------------------------------ plain endpoints

def test_queue_lists_running_and_pending(fake, client):
    fake.pause_after_step(1)
    first, _ = run_in_thread(client, sd15_graph())
    assert fake.wait_paused(WAIT)
    pending = client.queue_prompt(invert_graph())
    state = client.queue()
    assert len(state.running) == 1 and [i.prompt_id for i in state.pending] == [pending.prompt_id]
    client.delete_queued([pending.prompt_id])
    assert client.queue().pending == ()
    fake.resume()
    first.join(WAIT)


def test_cancel_reports_too_late_for_finished_job(client):
    result = client.run(invert_graph())
    assert client.cancel(result.prompt_id) == "finished"


def test_system_stats_is_typed(client):
    stats = client.system_stats()
    assert stats.comfyui_version == "0.8.0"
    assert stats.devices[0].type == "cpu" and stats.devices[0].vram_total > 0


def test_models_and_folders(client):
    assert "checkpoints" in client.model_folders()
    assert "v1-5-pruned-emaonly.safetensors" in client.models("checkpoints")
    with pytest.raises(BackendRejected, match="no model folder 'nope'"):
        client.models("nope")


def test_free_posts_both_flags(fake, client):
    client.free()
    assert fake.requests_to("/free")[0].json == {"unload_models": True, "free_memory": True}


def test_view_of_missing_file_says_so(client):
    with pytest.raises(BackendRejected, match="has no output image nope.png") as info:
        client.view(ImageRef("nope.png"))
    assert info.value.status == 404


def test_unreachable_server_message_says_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"
    with ComfyUIClient(url, timeout=2) as client:
        with pytest.raises(BackendUnavailable) as info:
            client.system_stats()
        assert str(info.value).startswith(f"Can't reach ComfyUI at {url}.")
        assert "python main.py --listen 127.0.0.1" in str(info.value)
        assert info.value.__cause__ is not None
        with pytest.raises(BackendUnavailable, match="websocket"):
            client.run(invert_graph())
