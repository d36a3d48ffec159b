"""The ComfyUI client against a real ComfyUI, opt-in: set COMFYUI_TEST_URL to run these.

Needs no model weights: everything runs ``workflows/test_invert.json`` (EmptyImage →
ImageInvert → SaveImage, plus PreviewImage), which works on a CPU-only server:

    python main.py --cpu --listen 127.0.0.1 --port 8188
    COMFYUI_TEST_URL=http://127.0.0.1:8188 pytest tests/test_comfyui_real.py -m comfyui_real
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest
from PIL import Image

from studio.images import validation, workflows
from studio.clients.comfyui import Cached, ComfyUIClient, Done, PromptRejected

URL = os.environ.get("COMFYUI_TEST_URL", "")

pytestmark = [pytest.mark.comfyui_real,
              pytest.mark.skipif(not URL, reason="set COMFYUI_TEST_URL to a running ComfyUI to run these")]

TEMPLATE = workflows.load_templates(Path(__file__).resolve().parents[1] / "workflows")["test_invert"]


@pytest.fixture
def client():
    with ComfyUIClient(URL, timeout=30, run_timeout=120, poll_interval=0.2) as c:
        yield c


def invert_graph(color: int, prefix: str) -> dict:
    return workflows.render(TEMPLATE, {"width": 48, "height": 32, "color": color, "filename_prefix": prefix})


def test_real_system_stats(client):
    stats = client.system_stats()
    assert stats.comfyui_version and stats.devices


def test_real_test_template_validates_against_object_info(client):
    assert validation.server_problems(invert_graph(0x112233, "studio_real"), client.object_info) == []


def test_real_run_returns_inverted_image(client):
    color = 0x10_80_F0 ^ (uuid.uuid4().int & 0x0F0F0F)  # fresh colour: not served from cache
    events = []
    result = client.run(invert_graph(color, "studio_real"), on_event=events.append)
    assert isinstance(events[-1], Done) and not result.cancelled
    assert [ref.type for ref in result.images] == ["output"]
    image = Image.open(io.BytesIO(client.view(result.images[0]))).convert("RGB")
    assert image.size == (48, 32)
    expected = tuple(255 - c for c in ((color >> 16) & 255, (color >> 8) & 255, color & 255))
    assert all(abs(a - b) <= 1 for a, b in zip(image.getpixel((0, 0)), expected))
    assert client.status(result.prompt_id).state == "done"


def test_real_cached_rerun_returns_same_images(client):
    graph = invert_graph(0x445566, "studio_real_cache")
    first = client.run(graph)
    events = []
    second = client.run(graph, on_event=events.append)
    assert second.images == first.images
    assert any(isinstance(e, Cached) for e in events)


def test_real_400_is_prompt_rejected(client):
    graph = invert_graph(0, "studio_real")
    graph["1"]["inputs"]["width"] = 0
    with pytest.raises(PromptRejected) as info:
        client.run(graph)
    assert "width" in str(info.value)


def test_real_upload_and_load_image(client):
    buf = io.BytesIO()
    Image.new("RGB", (24, 40), (200, 10, 10)).save(buf, format="PNG")
    uploaded = client.upload_image(buf.getvalue(), f"studio_real_{uuid.uuid4().hex[:8]}.png")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": uploaded.value}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "studio_real_up"}}}
    result = client.run(graph)
    assert Image.open(io.BytesIO(client.view(result.images[0]))).size == (24, 40)


def test_real_unknown_prompt_id(client):
    assert client.status(str(uuid.uuid4())).state == "unknown"


def test_real_image_job_is_copied_into_the_gallery(tmp_path, store):
    """The job service end to end: the Images tab's path, minus the page."""
    from studio.images.files import read_png_metadata
    from studio.images.plans import ImageRequest, WorkflowLibrary
    from studio.images.jobs import ImageJobs
    from studio.store.images import ImageStore

    root = Path(__file__).resolve().parents[1]
    client = ComfyUIClient(URL, timeout=30, run_timeout=120, poll_interval=0.2)
    jobs = ImageJobs(client, ImageStore(store), tmp_path / "outputs",
                     WorkflowLibrary(root / "workflows", tmp_path / "custom"),
                     uploads_dir=tmp_path / "uploads").start()
    try:
        live = jobs.submit(ImageRequest("test_invert", width=40, height=24), user="ann")
        final = list(jobs.follow(live, interval=0, timeout=120))[-1]
        assert final.status == "done" and len(final.images) == 1, final
        [image] = jobs.store.gallery().images
        assert (image.width, image.height) == (40, 24) and image.user == "ann"
        saved = tmp_path / "outputs" / image.path
        assert Image.open(saved).size == (40, 24)
        sent_graph = read_png_metadata(saved)["prompt"]  # ComfyUI's own chunk
        assert sent_graph == image.graph
    finally:
        jobs.close(cancel=True)
        client.close()


@pytest.mark.browser
def test_real_images_tab_generates_and_serves_the_picture(tmp_path, session_ollama, page):
    """The Images tab in chromium, with the real ComfyUI behind the studio."""
    from tests.conftest import start_studio, stop_studio

    studio = start_studio(tmp_path, session_ollama.url, {"COMFYUI_URL": URL})
    try:
        page.goto(studio.url)
        page.get_by_role("tab", name="Images").click()
        page.wait_for_selector("#img-prompt textarea")
        page.click("#img-workflow input")
        page.fill("#img-workflow input", "invert")
        page.click("#img-workflow li[data-testid=dropdown-option]:has-text('invert')")
        page.fill("#img-width input", "40")
        page.fill("#img-height input", "24")
        page.click("#img-generate")
        page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                               ".includes('Done: 1 image.')", timeout=60_000)
        page.wait_for_selector("#img-results img")
        src = page.get_attribute("#img-results img", "src")
        assert src.startswith(studio.url.rstrip("/")) and URL.split("://")[1] not in page.content()
        picture = page.request.get(src)
        assert picture.ok and Image.open(io.BytesIO(picture.body())).size == (40, 24)
    finally:
        stop_studio(studio)
