"""The Settings tab's hosts table in a real browser: with three Ollama hosts health-checked
every half second, a host that stops shows as down within a few seconds, with the reason,
and as up again after it restarts, without reloading the page."""

from __future__ import annotations

import pytest

from tests.conftest import free_port, launch_in_process
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.browser

WITHIN_MS = 8_000  # a few health rounds (0.5 s) and table ticks (1 s), on a loaded machine


@pytest.fixture
def hosts_studio(tmp_path):
    fakes = {name: FakeOllama().start() for name in ("desk", "big", "spare")}
    for fake in fakes.values():
        fake.add_model("llama3.2:latest")
    running = launch_in_process({
        "STUDIO_DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_HOST": ", ".join(f"{name}={fake.url}" for name, fake in fakes.items()),
        "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "STUDIO_HEALTH_INTERVAL": "0.5"})
    yield running, fakes
    running.close()
    running.services.ollama_health.close()
    for fake in fakes.values():
        fake.stop()


# Gradio 6's Dataframe draws its body rows as [role=row] blocks of [role=gridcell] cells.
ROWS = "[...document.querySelectorAll('#settings-hosts [role=row]')].map(row =>" \
       " [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))"


def wait_row(page, name: str, state: str) -> None:
    """Wait until the hosts table's row of ``name`` says ``state``."""
    page.wait_for_function(
        f"([name, state]) => {ROWS}.some(cells => cells[1] === name"
        " && cells[3].startsWith(state))", arg=[name, state], timeout=WITHIN_MS)


def row_of(page, name: str) -> list[str]:
    return page.evaluate(f"(name) => {ROWS}.find(cells => cells[1] === name)", name)


def test_browser_hosts_table_shows_a_stopped_host_down_then_up(hosts_studio, page):
    running, fakes = hosts_studio
    page.goto(running.url)
    page.get_by_role("tab", name="Settings").click()
    for name in fakes:
        wait_row(page, name, "up")
    assert "ComfyUI" in page.inner_text("#settings-hosts")

    fakes["big"].stop()
    wait_row(page, "big", "down")
    kind, _name, address, state, latency, *_rest = row_of(page, "big")
    assert kind == "Ollama" and address.startswith(fakes["big"].url)
    assert state.startswith("down: Can't reach Ollama") and latency == ""
    wait_row(page, "desk", "up")

    fakes["big"].start()
    wait_row(page, "big", "up")
