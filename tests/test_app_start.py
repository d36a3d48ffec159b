"""Start-up of the real `python app.py`: clear errors, and a usable studio with every backend down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlite_utils
from gradio_client import Client

from studio.store.db import Store
from tests.conftest import ROOT, free_port, start_studio, stop_studio


def run_app_expecting_exit(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "OLLAMA"))}
    env.update({"GRADIO_SERVER_PORT": str(free_port()), "GRADIO_ANALYTICS_ENABLED": "False"})
    env.update(env_extra)
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_app_start_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "data"
    result = run_app_expecting_exit({"STUDIO_DATA_DIR": str(target)})
    assert result.returncode == 2
    assert "can't start" in result.stderr and str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_app_start_bad_setting_names_the_variable(tmp_path):
    result = run_app_expecting_exit({"STUDIO_DATA_DIR": str(tmp_path), "COMFYUI_URL": "localhost:8188"})
    assert result.returncode == 2 and "COMFYUI_URL: the address in entry" in result.stderr \
        and "must start with http://" in result.stderr


@pytest.fixture(scope="module")
def studio_all_down(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("down")
    # History from an earlier run, to browse while every backend is down.
    store = Store.open(tmp / "data" / "studio.db")
    conv = store.create_conversation("Old sourdough notes", model="llama3.2:latest", backend="ollama")
    store.add_message(conv.id, "user", "How long to proof?")
    store.add_message(conv.id, "assistant", "About 4 hours at 24 °C.")
    store.close()
    running = start_studio(tmp, f"http://127.0.0.1:{free_port()}")
    yield running, conv.id
    stop_studio(running)


def test_app_start_history_browsable_with_every_backend_down(studio_all_down):
    running, conv_id = studio_all_down
    client = Client(running.url, verbose=False, analytics_enabled=False)
    opened = client.predict(conv_id, api_name="/open_conversation")
    assert "About 4 hours at 24 °C." in str(opened)
    found, _note = client.predict("sourdough", api_name="/search")
    assert [label for label, _ in found["choices"]] == ["Old sourdough notes"]
    client.close()


def test_app_start_chat_with_ollama_down_says_how_to_start_it(studio_all_down):
    running, _ = studio_all_down
    client = Client(running.url, verbose=False, analytics_enabled=False)
    final = client.submit("anyone there?", [], "ollama:llama3.2:latest", "",
                          False, 0.8, 0.9, 0, -1, 0, "auto", api_name="/send").result(timeout=30)
    answer = [m for m in final[0] if m["role"] == "assistant" and not m.get("metadata")][-1]
    text = answer["content"] if isinstance(answer["content"], str) else str(answer["content"])
    assert "Can't reach Ollama" in text and "ollama serve" in text
    db = sqlite_utils.Database(running.data_dir / "studio.db")
    row = list(db.query("select status, error from messages order by id desc limit 1"))[0]
    assert row["status"] == "error" and "ollama serve" in row["error"]
    client.close()


# Libraries the first page never needs: the openai SDK (a cloud model's first request),
# NVML (the GPU panel's first reading), and the test suite's own.
NOT_AT_START = ("openai", "pynvml", "hypothesis", "pytest")


def test_app_start_builds_without_what_the_first_page_never_needs(tmp_path):
    """Building the whole studio (``import app``: settings, services, the Blocks) imports
    none of NOT_AT_START, loads no sqlite-utils plugin, and loads the CA bundle once."""
    probe = (
        "import ssl, sys\n"
        "made = []\n"
        "real = ssl.create_default_context\n"
        "ssl.create_default_context = lambda *a, **k: made.append(1) or real(*a, **k)\n"
        "import gradio, ollama\n"  # what the bare app loads too
        "before = len(made)\n"
        "import app\n"
        "from sqlite_utils import plugins\n"
        f"print(sorted(m for m in {NOT_AT_START!r} if m in sys.modules), "
        "plugins._plugins_loaded, len(made) - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "OLLAMA", "GRADIO_"))}
    env.update({"STUDIO_DATA_DIR": str(tmp_path / "data"), "OPENROUTER_API_KEY": "",
                "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "[] False 1"
