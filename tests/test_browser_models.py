"""The Models tab in a real browser: a pull from the fake Ollama shows live progress, goes on
across a page reload, and its model lands in the table."""

from __future__ import annotations

import re
import time
import uuid

import pytest

pytestmark = pytest.mark.browser

PERCENT = r"(\d+)% · "


def open_models(page, studio) -> None:
    page.goto(studio.url)
    page.get_by_role("tab", name="Models").click()
    page.wait_for_selector("#models-pull-name textarea, #models-pull-name input")


def jobs_text(page) -> str:
    return page.inner_text("#models-jobs")


def wait_jobs(page, js_condition: str, arg) -> None:
    page.wait_for_function(
        "([cond, arg]) => { const el = document.querySelector('#models-jobs');"
        " return el && new Function('t', 'arg', cond)(el.innerText, arg); }",
        arg=[js_condition, arg], timeout=30_000)


def percent_of(text: str, model: str) -> int:
    line = next(part for part in text.split("Pull ") if part.startswith(model))
    return int(re.search(PERCENT, line).group(1))


@pytest.fixture
def slow_pulls(studio):
    fake = studio.ollama
    before = (fake.pull_delay, fake.pull_steps)
    fake.pull_delay, fake.pull_steps = 0.15, 40  # ~25 s unless the test speeds it up
    yield fake
    fake.pull_delay, fake.pull_steps = before


def test_browser_models_pull_progress_survives_reload(studio, page, slow_pulls):
    model = f"tiny{uuid.uuid4().hex[:6]}"
    slow_pulls.add_remote_model(model, size=3_000_000_000)
    open_models(page, studio)

    page.fill("#models-pull-name textarea, #models-pull-name input", model)
    page.click("#models-pull-btn")
    # Live progress: the layer, bytes and a percentage while it runs.
    wait_jobs(page, "return t.includes('Pull ' + arg) && /running · layer [0-9a-f]{12} · .* of "
                    ".*· \\d+% · .*\\/s/.test(t);", model)
    before = percent_of(jobs_text(page), model)

    page.reload()
    page.get_by_role("tab", name="Models").click()
    # The reopened page follows the same pull, still running, further along.
    wait_jobs(page, "const m = t.split('Pull ').find(p => p.startsWith(arg[0]));"
                    " const p = m && /(\\d+)% · /.exec(m);"
                    " return m && m.includes('running') && p && +p[1] > arg[1];",
              [model, before])

    slow_pulls.pull_delay = 0  # let the rest arrive at once
    wait_jobs(page, "return t.includes('Pulled ' + arg + '.');", model)
    page.wait_for_function(
        "(m) => document.querySelector('#models-ollama-table').innerText.includes(m)",
        arg=f"{model}:latest", timeout=30_000)
    assert f"{model}:latest" in slow_pulls.installed()


def test_browser_models_pull_unknown_model_shows_ollamas_error(studio, page):
    open_models(page, studio)
    page.fill("#models-pull-name textarea, #models-pull-name input", "no-such-model-xyz")
    page.click("#models-pull-btn")
    page.get_by_text("pull model manifest: file does not exist").first.wait_for(timeout=30_000)
    assert "failed" in jobs_text(page)


def test_browser_gpu_timer_ticks_only_while_the_models_tab_is_shown(tmp_path, session_ollama,
                                                                     page):
    from tests.conftest import start_studio, stop_studio

    studio = start_studio(tmp_path, session_ollama.url, {"STUDIO_GPU_POLL_SECONDS": "1"})
    try:
        page.goto(studio.url)
        config = page.request.get(studio.url + "config").json()
        # The GPU panel's tick event is made when the tab is built (studio/ui/lazy.py);
        # its timer is the app's, the one of STUDIO_GPU_POLL_SECONDS.
        [timer] = [c["id"] for c in config["components"]
                   if c["type"] == "timer" and c["props"].get("value") == 1]
        ticks = []

        def count_ticks(request):
            if "/gradio_api/queue/join" in request.url \
                    and (request.post_data_json or {}).get("trigger_id") == timer:
                ticks.append(request)

        page.on("request", count_ticks)
        page.get_by_role("tab", name="Models").click()
        deadline = time.monotonic() + 15
        while len(ticks) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert len(ticks) >= 2, "the GPU panel did not poll while shown"
        page.get_by_role("tab", name="Chat").click()
        page.wait_for_timeout(500)  # a tick already on its way may still land
        paused_at = len(ticks)
        page.wait_for_timeout(3500)  # 3.5 poll intervals
        assert len(ticks) == paused_at, "the GPU panel kept polling behind another tab"
        page.get_by_role("tab", name="Models").click()
        deadline = time.monotonic() + 15
        while len(ticks) == paused_at and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert len(ticks) > paused_at, "the GPU panel did not resume"
    finally:
        stop_studio(studio)
