"""The Arena tab in headless chromium against `python app.py`, a local and a cloud fake model:
answers stream side by side with their figures, blind votes reveal names, results are kept.
Also the Chat tab's one picker with local and cloud models."""

from __future__ import annotations

import uuid

import pytest
import sqlite_utils

from tests.conftest import running_fake_ollama, start_studio, stop_studio
from tests.fakes.openrouter_server import DEFAULT_KEY
from tests.test_cloud_chat import slow_fake_openrouter

pytestmark = pytest.mark.browser

LOCAL_LABEL = "llama3.2:latest"
CLOUD_LABEL = "OpenAI: GPT-4o-mini"


@pytest.fixture(scope="module")
def arena_studio(tmp_path_factory):
    ollama, openrouter = running_fake_ollama(), slow_fake_openrouter()
    running = start_studio(tmp_path_factory.mktemp("arena"), ollama.url, {
        "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": openrouter.url})
    running.ollama, running.openrouter = ollama, openrouter
    yield running
    stop_studio(running)
    openrouter.stop()
    ollama.stop()


def text_of(page, selector: str) -> str:
    return page.inner_text(selector)


def wait_contains(page, selector: str, text: str, timeout: float = 20_000) -> None:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout)


def open_arena(page, studio) -> None:
    page.goto(studio.url)
    page.get_by_role("tab", name="Arena").click()
    page.wait_for_selector("#arena-models input")


def pick(page, dropdown: str, search: str, label_part: str) -> None:
    """Type into a searchable dropdown and click the option whose label has ``label_part``."""
    page.click(f"{dropdown} input")
    page.fill(f"{dropdown} input", search)
    page.click(f"{dropdown} li[data-testid=dropdown-option]:has-text('{label_part}')")


def compare(page, prompt: str, *, blind: bool = False) -> None:
    pick(page, "#arena-models", "llama3.2", "Local · llama3.2:latest")
    pick(page, "#arena-models", "gpt-4o", "Cloud · OpenAI: GPT-4o-mini")
    if blind:
        page.check("#arena-blind input")
    page.fill("#arena-prompt textarea", prompt)
    page.click("#arena-run")


def test_browser_arena_streams_two_models_side_by_side_with_figures(arena_studio, page):
    local_tokens = [f"loc{i} " for i in range(40)]
    cloud_tokens = [f"cld{i} " for i in range(40)]
    arena_studio.ollama.queue_reply(local_tokens, delay=0.05)
    arena_studio.openrouter.token_delay = 0.05
    arena_studio.openrouter.queue_reply(cloud_tokens, cost=0.0123)
    open_arena(page, arena_studio)
    compare(page, f"Tell me a story {uuid.uuid4().hex[:6]}")
    wait_contains(page, "#arena-answer-0", "loc2")
    wait_contains(page, "#arena-answer-1", "cld2")
    # Both answers are on screen while both are still being written.
    assert "loc39" not in text_of(page, "#arena-answer-0")
    assert "cld39" not in text_of(page, "#arena-answer-1")
    assert "still being written" in text_of(page, "#arena-status")
    wait_contains(page, "#arena-answer-0", "loc39")
    wait_contains(page, "#arena-answer-1", "cld39")
    wait_contains(page, "#arena-figures-1", "$0.0123")
    local_figures = text_of(page, "#arena-figures-0")
    cloud_figures = text_of(page, "#arena-figures-1")
    for figures in (local_figures, cloud_figures):
        assert "s to first token" in figures and "tok/s" in figures and "40 tokens" in figures
    assert "local (no cloud cost)" in local_figures
    assert LOCAL_LABEL in text_of(page, "#arena-title-0")
    assert CLOUD_LABEL in text_of(page, "#arena-title-1")
    arena_studio.openrouter.token_delay = 0.0


def test_browser_arena_blind_vote_reveals_names_and_counts_in_the_win_table(arena_studio, page):
    marker = uuid.uuid4().hex[:6]
    arena_studio.ollama.queue_reply(["Local ", "answer."])
    arena_studio.openrouter.queue_reply(["Cloud ", "answer."], cost=0.002)
    open_arena(page, arena_studio)
    compare(page, f"Blind test {marker}", blind=True)
    page.wait_for_selector("#arena-vote-0", state="visible")
    wait_contains(page, "#arena-status", "Vote to reveal")
    titles = text_of(page, "#arena-title-0") + text_of(page, "#arena-title-1")
    assert "Model A" in titles and "Model B" in titles
    assert LOCAL_LABEL not in titles and CLOUD_LABEL not in titles
    # Nothing that differs by backend before the vote: no cost line, speed or tokens.
    figures = text_of(page, "#arena-figures-0") + text_of(page, "#arena-figures-1")
    assert "shown after the vote" in figures
    assert "$" not in figures and "local" not in figures and "tok/s" not in figures
    # Vote for whichever column shows the cloud answer (the slots were shuffled).
    cloud_slot = 0 if "Cloud answer." in text_of(page, "#arena-answer-0") else 1
    page.click(f"#arena-vote-{cloud_slot}")
    wait_contains(page, f"#arena-title-{cloud_slot}", CLOUD_LABEL)
    assert "🏆" in text_of(page, f"#arena-title-{cloud_slot}")
    wait_contains(page, f"#arena-figures-{cloud_slot}", "$0.002")
    assert LOCAL_LABEL in text_of(page, f"#arena-title-{1 - cloud_slot}")
    wait_contains(page, "#arena-status", "won")
    assert not page.is_visible("#arena-vote-0")
    wait_contains(page, "#arena-scores", CLOUD_LABEL)
    scores = text_of(page, "#arena-scores")
    assert LOCAL_LABEL in scores and "100%" in scores
    db = sqlite_utils.Database(arena_studio.data_dir / "studio.db")
    [run] = list(db.query("select * from arena_runs where prompt like ?", [f"%{marker}%"]))
    assert run["blind"] == 1 and run["winner_slot"] == cloud_slot
    answers = list(db.query("select * from arena_answers where run_id = ? order by slot",
                            [run["id"]]))
    assert answers[cloud_slot]["model_id"] == "openrouter:openai/gpt-4o-mini"
    assert answers[cloud_slot]["cost_usd"] == 0.002
    # What the comparison cost is in the accounts (Costs tab, budgets), as arena use.
    assert list(db.query("select * from usage where backend = 'openrouter' and "
                         "model = 'openai/gpt-4o-mini' and cost_usd = 0.002 and "
                         "source = 'arena'"))


def test_browser_arena_past_comparisons_can_be_reopened(arena_studio, page):
    marker = uuid.uuid4().hex[:6]
    arena_studio.ollama.queue_reply([f"Kept {marker}."])
    arena_studio.openrouter.queue_reply(["Also kept."])
    open_arena(page, arena_studio)
    compare(page, f"Remember me {marker}")
    wait_contains(page, "#arena-answer-0", f"Kept {marker}.")
    page.reload()
    page.get_by_role("tab", name="Arena").click()
    page.get_by_text("Past comparisons").click()
    pick(page, "#arena-history", marker, marker)
    wait_contains(page, "#arena-answer-0", f"Kept {marker}.")
    wait_contains(page, "#arena-answer-1", "Also kept.")
    assert LOCAL_LABEL in text_of(page, "#arena-title-0")


def test_browser_arena_needs_two_models(arena_studio, page):
    open_arena(page, arena_studio)
    pick(page, "#arena-models", "llama3.2", "Local · llama3.2:latest")
    page.fill("#arena-prompt textarea", "alone")
    page.click("#arena-run")
    page.get_by_text("Pick at least 2 models to compare.").wait_for()


def test_browser_chat_picker_searches_local_and_cloud_models(arena_studio, page):
    page.goto(arena_studio.url)
    page.wait_for_function(
        "() => { const i = document.querySelector('#model-picker input');"
        " return i && i.value && i.value.length > 0; }")
    page.click("#model-picker input")
    page.fill("#model-picker input", "")
    page.locator("#model-picker input").press_sequentially("gpt-4o")  # typed, as a person would
    option = page.locator("#model-picker li[data-testid=dropdown-option]")
    # The list narrows as the search is typed: wait for only matches to be left.
    page.wait_for_function(
        "() => { const o = [...document.querySelectorAll("
        "'#model-picker li[data-testid=dropdown-option]')];"
        " return o.length > 0 && o.every(li => li.innerText.toLowerCase().includes('gpt-4o')); }")
    labels = option.all_inner_texts()
    assert any("Cloud · OpenAI: GPT-4o-mini · $0.15/M in · $0.60/M out · 128K ctx" in label
               for label in labels)
    assert not any(label.strip().startswith("Local") for label in labels)
    option.first.click()
    arena_studio.openrouter.queue_reply(["Cloud ", "hello."], cost=0.0031)
    page.fill("#chat-input textarea", f"hi cloud {uuid.uuid4().hex[:6]}")
    page.press("#chat-input textarea", "Enter")
    wait_contains(page, "#chatbot", "Cloud hello.")
    wait_contains(page, "#chatbot", "$0.0031")


def test_browser_arena_page_never_contains_the_key(arena_studio, page):
    open_arena(page, arena_studio)
    assert DEFAULT_KEY not in page.content()
    assert DEFAULT_KEY not in arena_studio.log()
