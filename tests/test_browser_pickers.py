"""The model pickers and the Chat tab's phone layout in a real browser (issue 14): a model
pulled in the Models tab reaches the Chat and Arena pickers without a reload, an embedding
model never does; after a restart with Ollama down the last known local models are still
offered, marked unreachable; and at 390 x 844 the box spans the screen, the picker is in
view and nothing runs off the edge."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
# Where things sit on the page: each element's box, the viewport, the page's scroll width.
LAYOUT_JS = """() => {
  const box = (s) => { const r = document.querySelector(s).getBoundingClientRect();
                       return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                               width: r.width}; };
  return {width: innerWidth, height: innerHeight,
          scrollWidth: document.scrollingElement.scrollWidth,
          box: box('#chat-input'), composer: box('#composer'),
          attach: box('#chat-attach'), picker: box('#model-picker input'),
          pills: [...document.querySelectorAll('#top-bar .status-strip .pill')].map(
                   p => p.getBoundingClientRect().right)};
}"""


def option_texts(page, picker: str) -> list[str]:
    """The options a dropdown shows once opened."""
    page.click(f"{picker} input")
    options = page.get_by_role("option")
    options.first.wait_for()
    texts = options.all_inner_texts()
    page.keyboard.press("Escape")
    page.locator("#tabs").click(position={"x": 5, "y": 5})  # close it for good
    return texts


@pytest.fixture
def phone_page(browser_context):
    page = browser_context.new_page()
    page.set_viewport_size(PHONE)
    page.set_default_timeout(20_000)
    yield page
    page.close()


def test_browser_pickers_follow_a_pull_and_leave_out_embedding_models(studio, page):
    fake = studio.ollama
    model = f"picked{uuid.uuid4().hex[:6]}"
    embedder = f"embed{uuid.uuid4().hex[:6]}"
    fake.add_model(embedder, family="nomic-bert", capabilities=("embedding",))
    fake.add_remote_model(model)
    try:
        page.goto(studio.url)
        page.wait_for_function(
            "() => (document.querySelector('#model-picker input') || {}).value")
        assert not any(embedder in t for t in option_texts(page, "#model-picker"))

        page.get_by_role("tab", name="Models").click()
        page.fill("#models-pull-name textarea, #models-pull-name input", model)
        page.click("#models-pull-btn")
        page.wait_for_function("(m) => document.querySelector('#models-jobs').innerText"
                               ".includes('Pulled ' + m)", arg=model, timeout=30_000)
        # Straight back to Chat, no reload: the picker offers it.
        page.get_by_role("tab", name="Chat").click()
        page.wait_for_timeout(300)
        chat_options = option_texts(page, "#model-picker")
        assert any(f"{model}:latest" in t for t in chat_options)
        assert not any(embedder in t for t in chat_options)
        page.get_by_role("tab", name="Arena").click()
        page.wait_for_timeout(300)
        assert any(f"{model}:latest" in t for t in option_texts(page, "#arena-models"))
    finally:
        fake.remove_model(embedder)
        if f"{model}:latest" in fake.installed():
            fake.remove_model(model)


def test_browser_chat_fits_a_phone(studio, phone_page):
    page = phone_page
    page.goto(studio.url)
    page.wait_for_function("() => (document.querySelector('#model-picker input') || {}).value")
    page.wait_for_timeout(500)  # the sidebar closes itself on a narrow screen
    layout = page.evaluate(LAYOUT_JS)

    width, height = layout["width"], layout["height"]
    # The message box and its "+ Image" button take the width (the box alone was 204 px of
    # 390 once), side by side on one line.
    assert layout["composer"]["width"] >= 0.9 * width
    assert layout["box"]["width"] >= 0.7 * width
    assert layout["attach"]["top"] < layout["box"]["bottom"] and (
        layout["box"]["top"] < layout["attach"]["bottom"])
    assert 0 <= layout["picker"]["top"] and layout["picker"]["bottom"] <= height  # in view
    assert layout["box"]["bottom"] <= height  # and so is the box
    assert layout["scrollWidth"] <= width
    assert layout["pills"] and max(layout["pills"]) <= width  # the status strip fits
    page.screenshot(path=str(studio.data_dir / "phone.png"))


def test_browser_fresh_page_after_a_restart_with_ollama_down(tmp_path, browser_context):
    """Ollama down and the studio restarted: the page still offers the local models Ollama
    last listed, marked unreachable, and picks the local one, not the first (paid) cloud
    model of the list."""
    from tests.conftest import running_fake_ollama, start_studio, stop_studio
    from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

    fake = running_fake_ollama()
    page = browser_context.new_page()
    page.set_default_timeout(30_000)
    picked = "() => (document.querySelector('#model-picker input') || {}).value"
    try:
        with FakeOpenRouter() as cloud:
            env = {"OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": cloud.url}
            studio = start_studio(tmp_path, fake.url, env)
            try:
                page.goto(studio.url)
                page.wait_for_function(picked)
            finally:
                stop_studio(studio)
            fake.stop()
            studio = start_studio(tmp_path, fake.url, env)  # same data folder
            try:
                page.goto(studio.url)
                page.wait_for_function(picked)
                label = page.evaluate(picked)
                options = option_texts(page, "#model-picker")
            finally:
                stop_studio(studio)
    finally:
        page.close()
        fake.stop()

    assert "llama3.2:latest" in label and "unreachable" in label
    assert any("llava:latest" in t and "unreachable" in t for t in options)
    assert any("Claude" in t for t in options)  # the cloud models are there, not picked
