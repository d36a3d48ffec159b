"""Shared fixtures: settings on a temp dir, a fresh store, the fake backends (Ollama,
OpenRouter, ComfyUI), the running app (a real `python app.py` process) and a headless
chromium driven by Playwright. A test file that needs a differently stocked fake overrides
the fixture by name (test_catalog's ``fake_openrouter``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from studio.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)


@pytest.fixture
def store():
    from studio.store.db import Store

    s = Store.memory()
    yield s
    s.close()


def running_fake_ollama():
    """A fake Ollama with a text model and a vision model installed."""
    from tests.fakes.ollama_server import FakeOllama

    fake = FakeOllama().start()
    fake.add_model("llama3.2:latest")
    fake.add_model("llava:latest", family="llama", parameter_size="7B",
                   capabilities=("completion", "vision"))
    return fake


@pytest.fixture
def fake_ollama():
    fake = running_fake_ollama()
    yield fake
    fake.stop()
    assert not fake.server_errors, fake.server_errors


@pytest.fixture
def services(tmp_path, fake_ollama):
    """The studio's services over a fresh data folder and the fake Ollama (no UI)."""
    from studio.services import build_services

    services = build_services(Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                                 "OLLAMA_HOST": fake_ollama.url},
                                                dotenv_path=None))
    yield services
    services.store.close()


@pytest.fixture
def fake_openrouter():
    from tests.fakes.openrouter_server import FakeOpenRouter

    with FakeOpenRouter() as fake:
        yield fake


@pytest.fixture
def fake_comfyui():
    from tests.fakes.comfyui_server import FakeComfyUI

    with FakeComfyUI() as fake:
        yield fake


@dataclass
class RunningStudio:
    url: str
    data_dir: Path
    ollama: object
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_studio(tmp: Path, ollama_url: str, extra_env: dict | None = None) -> RunningStudio:
    """Start `python app.py` as a real process on a free loopback port; wait for the page."""
    port = free_port()
    data_dir = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "COMFYUI", "OPENROUTER", "STUDIO_"))}
    env.update({"STUDIO_DATA_DIR": str(data_dir), "OLLAMA_HOST": ollama_url,
                "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
                "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "GRADIO_ANALYTICS_ENABLED": "False", "STUDIO_LOG_LEVEL": "INFO"})
    env.update(extra_env or {})
    log_path = tmp / "studio.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1, headers={"accept": "text/html"}).status_code in (200, 303):
                return RunningStudio(url, data_dir, None, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"app.py did not answer within 60 s:\n{log_path.read_text()}")


def stop_studio(studio: RunningStudio) -> None:
    studio.process.terminate()
    try:
        studio.process.wait(10)
    except subprocess.TimeoutExpired:
        studio.process.kill()


@dataclass
class InProcessStudio:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    services: object
    demo: object

    def close(self) -> None:
        self.demo.close()
        self.services.images.close()


def launch_in_process(env: dict, *, nvml: object | None = None) -> InProcessStudio:
    """The studio's services and UI in this process on a free loopback port (Gradio's
    server in a thread), built from ``env`` alone (no .env file)."""
    from studio.services import build_services
    from studio.ui.app import build_app, launch_kwargs

    services = build_services(Settings.from_env(env, dotenv_path=None), nvml=nvml)
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    return InProcessStudio(url.rstrip("/"), services, demo)


@pytest.fixture(scope="session")
def session_ollama():
    fake = running_fake_ollama()
    yield fake
    fake.stop()
    assert not fake.server_errors, fake.server_errors


@pytest.fixture(scope="session")
def studio(tmp_path_factory, session_ollama):
    """One running studio for the integration and browser tests (state shared, so tests
    create their own conversations and never assume an empty database)."""
    running = start_studio(tmp_path_factory.mktemp("studio"), session_ollama.url)
    running.ollama = session_ollama
    yield running
    stop_studio(running)


def require_tool(path: str, package: str) -> str:
    """The path of a tool the owner runs (caddy, promtool, docker-compose...). Missing: the
    test fails in CI (scripts/test.sh installs it) and is skipped elsewhere."""
    found = path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{path} is not installed: scripts/test.sh must install {package} in CI")
    pytest.skip(f"{path} is not installed (apt-get install {package})")


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/test.sh must install it in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    page.set_default_timeout(20_000)
    yield page
    page.close()
