"""The refusals an API client meets, each in the status and shape the official clients
handle: 429 with a Retry-After that says when, 402 naming the budget cap, 503 when the
backend is down; against a running studio with tight limits (127.0.0.1, fakes)."""

from __future__ import annotations

import httpx
import openai
import pytest

from studio.config import Settings
from tests.conftest import free_port, running_fake_ollama
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("strict")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    keys = {}
    for name in ("bob", "carol", "dan"):
        Users(store).add(name, f"{name}-password-1")
        keys[name] = ApiKeys(store).create(name, "script")[1]
    store.close()
    ollama = running_fake_ollama()
    cloud = FakeOpenRouter().start()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url,
         "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": cloud.url,
         "STUDIO_LIMIT_CHAT_PER_MINUTE": "2", "STUDIO_BUDGET_USER_DAILY_USD": "0.0000001"},
        dotenv_path=None))
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    yield {"base": url.rstrip("/") + "/v1", "keys": keys, "ollama": ollama}
    demo.close()
    services.images.close()
    ollama.stop()
    cloud.stop()


def client(strict, user):
    return openai.OpenAI(base_url=strict["base"], api_key=strict["keys"][user], max_retries=0)


def test_a_per_user_limit_is_429_with_when_to_come_back(strict):
    for _ in range(2):
        client(strict, "bob").chat.completions.create(model="ollama:llama3.2:latest",
                                                      messages=HI)
    with pytest.raises(openai.RateLimitError) as refused:
        client(strict, "bob").chat.completions.create(model="ollama:llama3.2:latest",
                                                      messages=HI, stream=True)
    wait = int(refused.value.response.headers["retry-after"])
    assert 1 <= wait <= 60
    assert "STUDIO_LIMIT_CHAT_PER_MINUTE" in refused.value.message
    # Someone else's allowance is their own.
    client(strict, "dan").chat.completions.create(model="ollama:llama3.2:latest", messages=HI)


def test_a_spent_budget_is_402_naming_the_cap(strict):
    with pytest.raises(openai.APIStatusError) as refused:
        client(strict, "carol").chat.completions.create(
            model="openrouter:openai/gpt-4o-mini", messages=HI)
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "budget_exceeded"
    assert "daily" in refused.value.message.lower()


def test_a_backend_that_is_down_is_503_with_the_studios_sentence(strict):
    strict["ollama"].stop()
    response = httpx.post(strict["base"] + "/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {strict['keys']['dan']}"},
                          json={"model": "ollama:llama3.2:latest", "messages": HI})
    assert response.status_code == 503
    error = response.json()["error"]
    assert "Ollama" in error["message"] and error["type"] == "api_error"
    assert "Traceback" not in response.text and DEFAULT_KEY not in response.text
