"""Backend status: reachable / unreachable / not configured, with what to do."""

from studio.config import Settings
from studio.ops.status import BackendStatus, StatusBoard, check_comfyui, check_ollama, check_openrouter, status_html
from tests.conftest import free_port


def make_settings(**env) -> Settings:
    return Settings.from_env(env, dotenv_path=None)


def test_status_ollama_reachable_reports_version(fake_ollama):
    status = check_ollama(make_settings(OLLAMA_HOST=fake_ollama.url))
    assert status.state == "reachable" and status.detail.startswith("v")


def test_status_ollama_down_says_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"
    status = check_ollama(make_settings(OLLAMA_HOST=url))
    assert status.state == "unreachable" and status.url == url
    assert "ollama serve" in status.advice


def test_status_openrouter_without_key_is_not_configured():
    status = check_openrouter(make_settings())
    assert status.state == "not configured" and "OPENROUTER_API_KEY" in status.advice


def test_status_comfyui_address_never_reaches_the_page():
    url = f"http://127.0.0.1:{free_port()}"
    html = status_html([check_comfyui(make_settings(COMFYUI_URL=url))])
    assert url not in html and "COMFYUI_URL" in html and "unreachable" in html


def test_status_html_escapes_and_marks_state():
    html = status_html([BackendStatus("Ollama", "unreachable", "http://x", "<b>", "Start it.")])
    assert "&lt;b&gt;" in html and "data-state='unreachable'" in html


def test_status_board_caches_between_polls():
    calls = []

    def check(settings):
        calls.append(1)
        return BackendStatus("X", "reachable", "u", "", "")

    board = StatusBoard(make_settings(), ttl=60, checks=(check,))
    board.statuses()
    board.statuses()
    assert len(calls) == 1
    board.statuses(fresh=True)
    assert len(calls) == 2


def test_status_openrouter_with_a_rejected_key_says_key_rejected(fake_openrouter):
    settings = make_settings(OPENROUTER_API_KEY="sk-or-v1-wrong",
                             OPENROUTER_BASE_URL=fake_openrouter.url)
    status = check_openrouter(settings)
    assert status.state == "key rejected" and not status.up
    assert "OPENROUTER_API_KEY" in status.advice
    html = status_html([status])
    assert "key rejected" in html and "unreachable" not in html and "pill down" in html
