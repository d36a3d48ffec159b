"""The fake ComfyUI against recordings of a real ComfyUI 0.8.0 (shared/docs/comfyui-transcripts).

Each websocket test replays a recorded request on the fake and compares the frame
sequence: message types and order, key sets, node ids, progress values (with their
int/float spelling), cached lists, binary frame types and preview metadata keys.
Timestamps, prompt ids and file counters are not compared. HTTP tests compare bodies.
"""

from __future__ import annotations

import io
import json
import re
import struct

import httpx
import pytest
import websocket
from PIL import Image

from studio.clients.comfyui import ComfyUIClient
from tests.fakes.comfyui_server import FakeComfyUI, cuda_device, recorded_catalog, transcripts_dir

WAIT = 10
TRANSCRIPTS = transcripts_dir()


def load(name: str) -> dict:
    return json.loads((TRANSCRIPTS / name).read_text())


@pytest.fixture
def fake():
    with FakeComfyUI() as server:
        yield server


# ------------------------------------------------------------------ frame shapes

def _filename(name: str) -> str:
    name = re.sub(r"ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_?????_", name)
    return re.sub(r"_\d{5}_", "_NNNNN_", name)


def shape_text(text: str) -> tuple:
    message = json.loads(text)
    kind, data = message["type"], message["data"]
    keys = tuple(data)
    if kind == "status":
        return kind, data["status"]["exec_info"]["queue_remaining"], keys
    if kind == "execution_cached":
        return kind, tuple(data["nodes"]), keys
    if kind == "executing":
        return kind, data["node"], keys
    if kind == "progress":
        return kind, data["value"], data["max"], data["node"], keys
    if kind == "progress_state":
        return kind, keys, tuple((nid, s["state"], repr(s["value"]), repr(s["max"]), tuple(s))
                                 for nid, s in data["nodes"].items())
    if kind == "executed":
        images = tuple((_filename(i["filename"]), i["subfolder"], i["type"])
                       for i in (data["output"] or {}).get("images", []))
        return kind, data["node"], images, keys
    if kind in ("execution_error", "execution_interrupted"):
        return (kind, data["node_id"], data["node_type"], tuple(data["executed"]),
                data.get("exception_type"), data.get("exception_message"), keys)
    if kind == "feature_flags":
        return kind, data
    return kind, keys


def shape_recorded(entry: dict) -> tuple | None:
    if entry["kind"] == "text":
        return shape_text(entry["text"])
    if entry["kind"] == "binary":
        if entry["event_type"] == 1:
            return "binary", 1, entry["image_type_code"], entry["image_magic_hex"][:4]
        meta = json.loads(entry["metadata_json"])
        return "binary", 4, tuple(meta), meta["image_type"], entry["image_magic_hex"][:4]
    return None  # opcode8: the server's reply to the recorder closing the socket


def shape_live(frame: str | bytes) -> tuple:
    if isinstance(frame, str):
        return shape_text(frame)
    event_type, second = struct.unpack(">II", frame[:8])
    if event_type == 1:
        return "binary", 1, second, frame[8:10].hex()
    meta = json.loads(frame[8:8 + second])
    return "binary", 4, tuple(meta), meta["image_type"], frame[8 + second:10 + second].hex()


def expected_shapes(received: list[dict]) -> list[tuple]:
    return [s for s in (shape_recorded(e) for e in received) if s is not None]


# ------------------------------------------------------------------ replay helpers

def connect(fake: FakeComfyUI, client_id: str, sent: list[dict] = ()) -> websocket.WebSocket:
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{fake.port}/ws?clientId={client_id}", timeout=WAIT)
    for frame in sent:
        ws.send(frame["text"])
    return ws


def read_until_done(ws: websocket.WebSocket, prompt_id: str | None = None, count: int = 1) -> list:
    """Frames up to the count-th ``executing {node: null}`` (for ``prompt_id`` if given)."""
    frames, seen = [], 0
    while seen < count:
        frame = ws.recv()
        frames.append(frame)
        if isinstance(frame, str):
            message = json.loads(frame)
            if message["type"] == "executing" and message["data"]["node"] is None and \
                    (prompt_id is None or message["data"].get("prompt_id") == prompt_id):
                seen += 1
    return frames


def read_n(ws: websocket.WebSocket, n: int) -> list:
    return [ws.recv() for _ in range(n)]


def cached_nodes(received: list[dict]) -> list[str]:
    for entry in received:
        if entry["kind"] == "text" and '"execution_cached"' in entry["text"]:
            return json.loads(entry["text"])["data"]["nodes"]
    return []


def prime(fake: FakeComfyUI, graph: dict, nodes: list[str]) -> None:
    """Run just ``nodes`` once (no client), so the next job finds them in the cache."""
    if not nodes:
        return
    partial = {n: graph[n] for n in nodes}
    catalog = recorded_catalog()
    if not any(catalog[node["class_type"]]["output_node"] for node in partial.values()):
        partial["prime_out"] = {"class_type": "PreviewImage", "inputs": {"images": [nodes[-1], 0]}}
    response = httpx.post(f"{fake.url}/prompt", json={"prompt": partial})
    assert response.status_code == 200, response.text
    assert fake.wait_idle(WAIT)


def post(fake: FakeComfyUI, body: dict) -> str:
    response = httpx.post(f"{fake.url}/prompt", json=body)
    assert response.status_code == 200, response.text
    return response.json()["prompt_id"]


def history_shape(entry: dict) -> tuple:
    prompt = entry["prompt"]
    return (tuple(entry), len(prompt), tuple(prompt[3]), tuple(prompt[4]), tuple(entry["status"]),
            entry["status"]["status_str"], entry["status"]["completed"],
            tuple((name, tuple(data)) for name, data in entry["status"]["messages"]),
            {node: {k: [(_filename(i["filename"]), i["subfolder"], i["type"]) for i in v]
                    for k, v in out.items()} for node, out in entry["outputs"].items()},
            entry["meta"])


def upload_peer_image(fake: FakeComfyUI) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 128, 255)).save(buf, format="PNG")
    httpx.post(f"{fake.url}/upload/image", data={"overwrite": "true", "type": "input", "subfolder": ""},
               files={"image": ("peer_upload.png", buf.getvalue(), "image/png")}).raise_for_status()


# ------------------------------------------------------------------ websocket transcripts

SIMPLE_RUNS = ["ws_a_fresh_run_blur_save", "ws_a2_fresh_run_invert_preview", "ws_b_cached_rerun_blur_save",
               "ws_b2_partial_cache_rerun", "ws_b3_partial_cache_setup", "ws_b3_partial_cache_rerun",
               "ws_d_progress_node_legacy_client", "ws_d2_progress_node_preview_metadata_client",
               "ws_d3_progress_node_no_preview", "ws_e_save_image_websocket_legacy_client",
               "ws_e2_save_image_websocket_metadata_client", "ws_f_execution_error",
               "ws_g_client_supplied_prompt_id", "ws_upload_then_loadimage_save"]


@pytest.mark.parametrize("name", SIMPLE_RUNS)
def test_fake_frames_match_transcript(fake, name):
    recording = load(f"{name}.json")
    body = recording["post_prompt"]["request"]["json"]
    received = recording["ws"]["received"]
    prime(fake, body["prompt"], cached_nodes(received))
    if "upload" in name:
        upload_peer_image(fake)
    ws = connect(fake, recording["ws"]["client_id"], recording["ws"]["sent"])
    prompt_id = post(fake, body)
    frames = read_until_done(ws, prompt_id)
    ws.close()
    assert [shape_live(f) for f in frames] == expected_shapes(received)
    history = httpx.get(f"{fake.url}/history/{prompt_id}").json()
    recorded_history = recording["history"]["response"]["body"]
    assert history_shape(history[prompt_id]) == history_shape(next(iter(recorded_history.values())))


@pytest.mark.parametrize("name", ["ws_c_interrupted_run_global", "ws_c2_interrupted_run_targeted"])
def test_fake_interrupt_matches_transcript(fake, name):
    recording = load(f"{name}.json")
    body = recording["post_prompt"]["request"]["json"]
    received = recording["ws"]["received"]
    prime(fake, body["prompt"], cached_nodes(received))
    ws = connect(fake, recording["ws"]["client_id"])
    fake.pause_after_step(1)
    prompt_id = post(fake, body)
    assert fake.wait_paused(WAIT)
    queue = httpx.get(f"{fake.url}/queue").json()
    recorded_queue = recording["during"]["queue_while_running"]["response"]["body"]
    assert [len(item) for item in queue["queue_running"]] == [len(i) for i in recorded_queue["queue_running"]]
    assert tuple(queue["queue_running"][0][3]) == tuple(recorded_queue["queue_running"][0][3])
    interrupt_body = {} if "global" in name else {"prompt_id": prompt_id}
    assert httpx.post(f"{fake.url}/interrupt", json=interrupt_body).content == b""
    frames = read_until_done(ws, prompt_id)
    ws.close()
    assert [shape_live(f) for f in frames] == expected_shapes(received)
    history = httpx.get(f"{fake.url}/history/{prompt_id}").json()[prompt_id]
    assert history_shape(history) == history_shape(next(iter(recording["history"]["response"]["body"].values())))


def test_fake_reconnect_matches_transcript(fake):
    recording = load("ws_reconnect_same_client_id.json")
    body = recording["post_prompt"]["request"]["json"]
    client_id = recording["first_connection"]["client_id"]
    first_expected = expected_shapes(recording["first_connection"]["received"])
    first = connect(fake, client_id)
    fake.pause_after_step(1)
    prompt_id = post(fake, body)
    assert fake.wait_paused(WAIT)
    frames = read_n(first, len(first_expected))
    first.close()
    assert [shape_live(f) for f in frames] == first_expected
    second = connect(fake, client_id)
    assert fake.wait_until(lambda f: len(f.ws_connections) == 2, WAIT)
    fake.resume()
    frames = read_until_done(second, prompt_id)
    second.close()
    assert [shape_live(f) for f in frames] == expected_shapes(recording["second_connection"]["received"])


def test_fake_queue_of_three_with_delete_matches_transcript(fake):
    recording = load("ws_queue_three_prompts_delete_one.json")
    bodies = [p["request"]["json"] for p in recording["post_prompts"]]
    received = recording["ws"]["received"]
    prime(fake, bodies[0]["prompt"], cached_nodes(received))
    ws = connect(fake, recording["ws"]["client_id"])
    fake.pause_after_step(0)
    first = post(fake, bodies[0])
    assert fake.wait_paused(WAIT)
    second, third = post(fake, bodies[1]), post(fake, bodies[2])
    queue = httpx.get(f"{fake.url}/queue").json()
    assert [item[1] for item in queue["queue_pending"]] == [second, third]
    fake.pause_after_step(1)
    fake.resume()
    assert fake.wait_paused(WAIT)
    assert httpx.post(f"{fake.url}/queue", json={"delete": [third]}).content == b""
    assert [item[1] for item in httpx.get(f"{fake.url}/queue").json()["queue_pending"]] == [second]
    fake.resume()
    frames = read_until_done(ws, second)
    ws.close()
    assert first != second
    assert [shape_live(f) for f in frames] == expected_shapes(received)


def test_fake_previews_are_decodable_images(fake):
    recording = load("ws_d2_progress_node_preview_metadata_client.json")
    body = recording["post_prompt"]["request"]["json"]
    ws = connect(fake, body["client_id"], recording["ws"]["sent"])
    post(fake, body)
    frames = [f for f in read_until_done(ws) if isinstance(f, bytes)]
    ws.close()
    length = struct.unpack(">I", frames[0][4:8])[0]
    assert Image.open(io.BytesIO(frames[0][8 + length:])).format == "JPEG"


# ------------------------------------------------------------------ HTTP transcripts

def recorded_response(name: str) -> dict:
    data = load(name)
    return (data.get("post_prompt") or data)["response"]


@pytest.mark.parametrize("name", ["post_prompt_400_unknown_class.json", "post_prompt_400_missing_required_input.json",
                                  "post_prompt_400_value_below_min.json", "post_prompt_400_no_output_node.json",
                                  "post_prompt_400_link_to_missing_node.json",
                                  "post_prompt_400_loadimage_missing_file.json", "post_prompt_400_no_prompt_key.json"])
def test_fake_prompt_400_bodies_match_transcript(fake, name):
    data = load(name)
    request = (data.get("post_prompt") or data)["request"]
    expected = recorded_response(name)
    response = httpx.post(f"{fake.url}{request['path']}", json=request["json"])
    assert response.status_code == expected["status"] == 400
    assert response.headers["content-type"] == expected["headers"]["Content-Type"]

    def without_tracebacks(body):
        for entry in body["node_errors"].values():
            for error in entry["errors"]:
                error.get("extra_info", {}).pop("traceback", None)
        return body

    assert without_tracebacks(response.json()) == without_tracebacks(expected["body"])


def test_fake_upload_naming_matches_transcript(fake):
    url = f"{fake.url}/upload/image"
    steps = ["post_upload_image.json", "post_upload_image_same_name_no_overwrite.json",
             "post_upload_image_same_name_different_content.json", "post_upload_image_subfolder.json"]
    contents = [b"first", b"first", b"second", b"first"]
    for name, content in zip(steps, contents):
        recording = load(name)
        response = httpx.post(url, data=recording["request"]["form"],
                              files={"image": ("peer_upload.png", content, "image/png")})
        assert response.json() == recording["response"]["body"], name


@pytest.mark.parametrize("name", ["get_view_missing_file.json", "get_view_path_traversal.json",
                                  "get_history_unknown_id.json", "get_object_info_unknown_node.json",
                                  "get_queue_idle.json", "get_prompt.json", "get_features.json",
                                  "get_system_stats.json", "get_api_prefixed_system_stats.json",
                                  "get_models.json", "post_free.json", "post_interrupt_not_running.json",
                                  "get_history_initial.json"])
def test_fake_http_answers_match_transcript(name):
    with FakeComfyUI(models={}) as server:
        recording = load(name)
        request, expected = recording["request"], recording["response"]
        response = httpx.request(request["method"], f"{server.url}{request['path']}", json=request.get("json"))
        assert response.status_code == expected["status"]
        if expected["headers"].get("Content-Type", "").startswith("application/json"):
            assert response.json() == expected["body"]
        else:
            assert response.content == b""


def test_fake_system_stats_of_a_gpu_box_keeps_the_recorded_shape():
    """``devices`` replaces only the device list, each device with the recorded keys."""
    recorded = load("get_system_stats.json")["response"]["body"]
    cards = [cuda_device(0, "NVIDIA H100", 80 * 2**30, 60 * 2**30, torch_vram_total=2**30),
             cuda_device(1, "NVIDIA L4", 24 * 2**30, 24 * 2**30)]
    server = FakeComfyUI()
    server.devices = cards
    with server:
        body = httpx.get(f"{server.url}/system_stats").json()
        stats = ComfyUIClient(server.url).system_stats()
    assert body["system"] == recorded["system"]
    assert [set(d) for d in body["devices"]] == [set(recorded["devices"][0])] * 2
    assert [(d.name, d.type, d.index) for d in stats.devices] == [
        ("cuda:0 NVIDIA H100 : cudaMallocAsync", "cuda", 0),
        ("cuda:1 NVIDIA L4 : cudaMallocAsync", "cuda", 1)]
    assert stats.devices[0].torch_vram_total == 2**30 and stats.devices[1].vram_free == 24 * 2**30


def test_fake_object_info_matches_recorded_classes(fake):
    info = httpx.get(f"{fake.url}/object_info").json()
    recorded = recorded_catalog()
    assert set(info) == set(recorded)
    assert info["EmptyImage"] == load("get_object_info_EmptyImage.json")["response"]["body"]["EmptyImage"]
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == fake.models["checkpoints"]


def test_fake_view_serves_png_with_prompt_chunk(fake):
    recording = load("ws_a_fresh_run_blur_save.json")
    body = recording["post_prompt"]["request"]["json"]
    prompt_id = post(fake, body)
    assert fake.wait_idle(WAIT)
    image_ref = httpx.get(f"{fake.url}/history/{prompt_id}").json()[prompt_id]["outputs"]["3"]["images"][0]
    response = httpx.get(f"{fake.url}/view", params=image_ref)
    meta = load("get_view_fresh_run.meta.json")
    assert response.headers["content-type"] == meta["headers"]["Content-Type"]
    assert response.headers["content-disposition"] == meta["headers"]["Content-Disposition"]
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (64, 48)
    assert json.loads(image.text["prompt"]) == body["prompt"]


def test_fake_history_delete_and_max_items(fake):
    ids = [post(fake, load("ws_a_fresh_run_blur_save.json")["post_prompt"]["request"]["json"]) for _ in range(3)]
    assert fake.wait_idle(WAIT)
    assert list(httpx.get(f"{fake.url}/history", params={"max_items": 2}).json()) == ids[1:]
    assert httpx.post(f"{fake.url}/history", json={"delete": [ids[0]]}).content == b""
    assert httpx.get(f"{fake.url}/history/{ids[0]}").json() == {}


def test_fake_routes_also_answer_under_api_prefix(fake):
    assert httpx.get(f"{fake.url}/api/queue").json() == {"queue_running": [], "queue_pending": []}
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{fake.port}/api/ws?clientId=abc", timeout=WAIT)
    assert json.loads(ws.recv())["data"]["sid"] == "abc"
    ws.close()


def test_fake_records_requests(fake):
    httpx.post(f"{fake.url}/free", json={"unload_models": True})
    assert fake.requests_to("/free")[0].json == {"unload_models": True}
