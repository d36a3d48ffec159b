"""Real-browser tests of the Images tab: headless chromium through Playwright against a real
`python app.py`, with the fake ComfyUI (slow steps, previews) behind it."""

from __future__ import annotations

import io
import time
import uuid

import httpx
import pytest
from PIL import Image

from tests.conftest import ROOT, start_studio, stop_studio
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def comfyui():
    with FakeComfyUI(step_delay=0.08) as fake:
        yield fake


@pytest.fixture(scope="module")
def images_studio(tmp_path_factory, session_ollama, comfyui):
    running = start_studio(tmp_path_factory.mktemp("images-studio"), session_ollama.url,
                           {"COMFYUI_URL": comfyui.url})
    yield running
    stop_studio(running)


def open_images(page, studio) -> None:
    page.goto(studio.url)
    page.get_by_role("tab", name="Images").click()
    page.wait_for_selector("#img-prompt textarea")
    # The lists come from ComfyUI when the page loads; wait until a checkpoint is picked.
    page.wait_for_function(
        "() => { const i = document.querySelector('#img-checkpoint input');"
        " return i && i.value.endsWith('.safetensors'); }")


class HeldReplies:
    """Holds every event the page sends to the server (Gradio's ``queue/join``, and
    ``run/predict`` for unqueued ones) until ``release()``: replies that land late, made
    certain instead of left to a busy machine."""

    def __init__(self, page, let_through: frozenset = frozenset()):
        self.page = page
        self.let_through = let_through  # fn indexes never held (building a tab)
        self.held = []
        self.releasing = False
        self.sent = 0  # held events whose request went through after the release
        self.streams: dict = {}  # reply stream -> whether it ended after every event went
        page.route("**/gradio_api/queue/join*", self._hold)
        page.route("**/gradio_api/run/**", self._hold)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)  # Gradio aborts a stream it has done with

    def _hold(self, route) -> None:
        body = route.request.post_data_json if route.request.post_data else None
        if self.releasing or (body or {}).get("fn_index") in self.let_through:
            route.continue_()
        else:
            self.held.append(route)

    def _ended(self, request) -> None:
        if "/queue/data" in request.url:
            self.streams[request] = self.sent >= len(self.held)
        elif "/queue/join" in request.url or "/run/" in request.url:
            self.sent += 1

    def release(self, timeout_s: float = 30) -> None:
        """Let the held events go and wait until the page has their replies: Gradio ends
        a page's reply stream once none of its events is pending."""
        assert self.held, "no event was held"
        self.releasing = True
        for route in self.held:
            route.continue_()
        deadline = time.monotonic() + timeout_s
        while not any(self.streams.values()):
            assert time.monotonic() < deadline, "the held events got no reply"
            self.page.wait_for_timeout(50)


def tab_building_events(url: str) -> frozenset:
    """The events that build a tab when it is first opened (studio/ui/lazy.py): the tab's
    select, which flips its "opened" state, and the render on that state's change. Only the
    tab's own loading events, after it is built, are what a test holds back."""
    config = httpx.get(url.rstrip("/") + "/config").json()
    renders = [d for d in config["dependencies"] if d.get("render_id") is not None]
    opened = {target[0] for d in renders for target in d["targets"]}
    return frozenset([d["id"] for d in renders] + [
        d["id"] for d in config["dependencies"] if opened & set(d["outputs"])])


def choose_workflow(page, text: str) -> None:
    page.click("#img-workflow input")
    page.fill("#img-workflow input", text)
    page.click(f"#img-workflow li[data-testid=dropdown-option]:has-text('{text}')")


def progress_step(page) -> int:
    return int(page.eval_on_selector("#img-progress .img-progress", "e => e.dataset.step || 0"))


def generate(page, prompt: str, steps: int) -> None:
    page.fill("#img-prompt textarea", prompt)
    page.fill("#img-steps input", str(steps))
    page.fill("#img-width input", "64")
    page.fill("#img-height input", "64")
    page.click("#img-generate")


def test_browser_images_progress_moves_preview_changes_result_shows(images_studio, page):
    open_images(page, images_studio)
    generate(page, f"a copper fox {uuid.uuid4().hex[:6]}", 40)
    page.wait_for_function("() => +document.querySelector('#img-progress .img-progress')"
                           ".dataset.step >= 2")
    first_step = progress_step(page)
    page.wait_for_selector("#img-preview img")
    first_preview = page.get_attribute("#img-preview img", "src")
    assert "Step" in page.inner_text("#img-progress") and "KSampler" in page.inner_text("#img-progress")
    # The bar moves and the preview is replaced while the sampler runs.
    page.wait_for_function("(s) => +document.querySelector('#img-progress .img-progress')"
                           ".dataset.step > s + 3", arg=first_step)
    page.wait_for_function("(src) => { const i = document.querySelector('#img-preview img');"
                           " return i && i.src !== src; }", arg=first_preview)
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 1 image.')", timeout=30_000)
    page.wait_for_selector("#img-results img")
    assert images_studio.url.rstrip("/") in page.get_attribute("#img-results img", "src")


def test_browser_images_gallery_shows_the_image_after_a_reload(images_studio, comfyui, page):
    marker = f"lighthouse{uuid.uuid4().hex[:6]}"
    open_images(page, images_studio)
    generate(page, f"a {marker} at dusk", 3)
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 1 image.')", timeout=30_000)
    page.reload()
    page.get_by_role("tab", name="Images").click()
    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_selector("#gal-grid img")
    page.fill("#gal-search input, #gal-search textarea", marker)
    page.wait_for_function("() => document.querySelector('#gal-page').innerText"
                           ".includes('1 image')")
    # The filter lists come through a hidden box's change event (they are updated only
    # when they change; test_resource_bounds.py says why): the image's workflow is listed.
    page.click("#gal-workflow input")
    page.wait_for_function("() => document.querySelectorAll('[role=option]').length >= 2")
    page.keyboard.press("Escape")
    page.click("#gal-grid img")
    page.wait_for_selector("#gal-full img")
    assert marker in page.inner_text("#gal-meta")
    # Every image and preview comes from the studio; the tab never names ComfyUI's address.
    # (The whole page's config is checked in test_ui_images.py.)
    html = page.eval_on_selector("#img-tabs", "e => e.outerHTML")
    assert comfyui.url not in html and f":{comfyui.port}" not in html
    srcs = page.eval_on_selector_all("#img-tabs img", "es => es.map(e => e.src)")
    assert srcs and all(src.startswith(images_studio.url.rstrip("/")) for src in srcs)


def test_browser_images_bad_size_gets_a_clear_message(images_studio, page):
    open_images(page, images_studio)
    before = len(images_studio_prompts(images_studio))
    page.fill("#img-prompt textarea", "a fox")
    page.fill("#img-width input", "500")
    page.click("#img-generate")
    page.locator("#img-progress").get_by_text("Width 500 isn't a multiple of 8").wait_for()
    page.locator(".toast-body").get_by_text("Width 500 isn't a multiple of 8").wait_for()
    assert len(images_studio_prompts(images_studio)) == before


def test_browser_images_cancel_stops_the_job(images_studio, comfyui, page):
    open_images(page, images_studio)
    comfyui.pause_after_step(2)
    generate(page, "a very slow fox", 50)
    assert comfyui.wait_paused(20)
    page.wait_for_selector("#img-cancel", state="visible")
    page.click("#img-cancel")
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Cancelled')", timeout=30_000)
    assert comfyui.requests_to("/interrupt", "POST")


def images_studio_prompts(studio) -> list:
    import sqlite_utils

    return list(sqlite_utils.Database(studio.data_dir / "studio.db").query(
        "select id from image_job_items"))


def test_browser_images_values_typed_right_after_choosing_a_workflow_win(images_studio, page):
    """Issue 14, item 18: every reply (the page's load, the workflow's) lands after the
    person picked "Test: invert" and typed 40 x 24; what they typed is what runs."""
    held = HeldReplies(page, let_through=tab_building_events(images_studio.url))
    page.goto(images_studio.url)
    page.get_by_role("tab", name="Images").click()
    page.wait_for_selector("#img-prompt textarea")
    choose_workflow(page, "invert")
    page.fill("#img-width input", "40")
    page.fill("#img-height input", "24")
    held.release()
    assert page.input_value("#img-workflow input").startswith("Test: invert")
    assert not page.is_visible("#img-prompt textarea")  # the invert workflow takes no prompt
    assert (page.input_value("#img-width input"), page.input_value("#img-height input")) == (
        "40", "24")
    page.click("#img-generate")
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 1 image.')", timeout=30_000)
    picture = page.request.get(page.get_attribute("#img-results img", "src"))
    assert Image.open(io.BytesIO(picture.body())).size == (40, 24)


def test_browser_images_rejected_workflow_upload_leaves_the_form_alone(images_studio, page,
                                                                       tmp_path):
    """Issue 14, item 19: the sentence, nothing else: no red badges, the box emptied."""
    ui_format = tmp_path / "saved-from-comfyui.json"
    ui_format.write_text('{"nodes": [], "links": [], "version": 0.4}')
    open_images(page, images_studio)
    page.fill("#img-prompt textarea", "a fox I typed")
    page.fill("#img-steps input", "9")
    page.click("#img-custom button:has-text('Custom workflow')")
    page.set_input_files("#img-workflow-upload input[type=file]", str(ui_format))
    page.wait_for_function("() => document.querySelector('#img-workflow-found').innerText"
                           ".includes('UI workflow')")
    assert "Export (API)" in page.inner_text("#img-workflow-found")
    assert page.locator("#img-tabs .error").count() == 0
    assert "saved-from-comfyui" not in page.inner_text("#img-workflow-upload")
    assert page.input_value("#img-prompt textarea") == "a fox I typed"
    assert page.input_value("#img-steps input") == "9"


def pick(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.click(f"#{elem_id} li[data-testid=dropdown-option]:has-text('{option}')")


def test_browser_images_map_an_uploads_seed_then_its_batch_differs(images_studio, page,
                                                                   tmp_path):
    """Issue 14, items 20-21: a seedless upload's batch is refused, naming the missing
    input; its seed is mapped in the tab; the batch then makes different images, and the
    gallery names the workflow by its title."""
    graph = tmp_path / f"empty_invert_{uuid.uuid4().hex[:6]}.json"
    graph.write_text((ROOT / "workflows" / "test_invert.json").read_text())
    open_images(page, images_studio)
    page.click("#img-custom button:has-text('Custom workflow')")
    page.set_input_files("#img-workflow-upload input[type=file]", str(graph))
    page.wait_for_selector("#img-map", state="visible")
    title = graph.stem.replace("_", " ")
    page.wait_for_function("t => document.querySelector('#img-workflow input').value"
                           ".toLowerCase().includes(t)", arg=title)
    assert "no prompt or seed input yet" in page.inner_text("#img-map-info")
    page.click("#img-batch button:has-text('Batch')")
    page.fill("#img-seeds input", "3")
    assert page.input_value("#img-seeds input") == "3"
    page.click("#img-generate")
    # The refusal is a toast and stays in the progress box after the toast has gone.
    refusal = "has no seed input, so the 3 images of this batch would all be the same"
    page.wait_for_function("t => document.querySelector('#img-progress').innerText"
                           ".includes(t)", arg=refusal, timeout=30_000)
    assert "Not started:" in page.inner_text("#img-progress")
    assert page.locator("#img-results img").count() == 0
    pick(page, "img-map-seed", "color (")
    page.click("#img-map-save")
    page.wait_for_selector("#img-seed", state="visible")
    page.fill("#img-seed input", "100")  # a colour, here: random ones pass its maximum
    page.click("#img-generate")
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 3 images.')", timeout=30_000)
    srcs = page.eval_on_selector_all("#img-results img", "es => es.map(e => e.src)")
    colours = {Image.open(io.BytesIO(page.request.get(src).body())).getpixel((0, 0))
               for src in srcs}
    assert len(colours) == 3
    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_selector("#gal-grid img")
    page.click("#gal-grid img")
    page.wait_for_selector("#gal-full img")
    assert f"workflow {title} (custom)" in page.inner_text("#gal-meta")


def test_browser_images_tab_is_built_once_and_keeps_what_was_typed(images_studio, page):
    """Issue 16, item 4: the Images tab is not in the page until it is opened; opening it
    builds it once, and coming back to it later neither rebuilds it nor loses what was
    typed, while its lists are read again (its loading event runs on every opening)."""
    config = httpx.get(images_studio.url.rstrip("/") + "/config").json()
    assert not any(c["props"].get("elem_id") == "img-prompt" for c in config["components"])
    renders = {d["id"] for d in config["dependencies"] if d.get("render_id") is not None}
    joins = []
    page.on("request", lambda r: joins.append((r.post_data_json or {}).get("fn_index"))
            if "/gradio_api/queue/join" in r.url else None)
    open_images(page, images_studio)
    built = [i for i in joins if i in renders]
    assert len(built) == 1
    page.fill("#img-prompt textarea", "a lighthouse I typed")
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_selector("#chat-input textarea")
    before = len(joins)
    page.get_by_role("tab", name="Images").click()
    page.wait_for_selector("#img-prompt textarea")
    deadline = time.monotonic() + 10  # the tab's loading event, sent on this opening too
    while len(joins) < before + 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(joins) >= before + 2  # the select, then the tab's own loading events
    page.wait_for_timeout(500)
    assert [i for i in joins if i in renders] == built  # not built again
    assert page.input_value("#img-prompt textarea") == "a lighthouse I typed"
