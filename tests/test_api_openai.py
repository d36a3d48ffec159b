"""The OpenAI-compatible /v1 of the running studio (in-process, 127.0.0.1), driven by the
official `openai` client, backed by the fake Ollama: keys, models, completions streamed or
not, and errors in the shapes the client handles."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from studio.config import Settings
from tests.conftest import free_port, running_fake_ollama
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("api")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    Users(store).add("bob", "bob-password-1")
    _, key = ApiKeys(store).create("bob", "laptop")
    _, revoked = ApiKeys(store).create("bob", "old")
    ApiKeys(store).revoke("bob", 2)
    store.close()
    ollama = running_fake_ollama()
    ollama.add_model("qwen3:8b", family="qwen3", parameter_size="8.2B",
                     capabilities=("completion", "tools", "thinking"))
    cloud = FakeOpenRouter().start()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url,
         "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": cloud.url}, dotenv_path=None))
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    base = url.rstrip("/") + "/v1"
    yield {"base": base, "key": key, "revoked": revoked, "ollama": ollama, "cloud": cloud,
           "services": services}
    demo.close()
    services.images.close()
    ollama.stop()
    cloud.stop()


def client(api, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=api["base"], api_key=key or api["key"], max_retries=0)


def test_api_models_are_the_picker_list(api):
    ids = [m.id for m in client(api).models.list()]
    assert ids[:3] == ["ollama:llama3.2:latest", "ollama:llava:latest", "ollama:qwen3:8b"]
    assert "openrouter:openai/gpt-4o-mini" in ids


@pytest.mark.parametrize("which", ["none", "wrong", "revoked"])
def test_api_refuses_without_a_live_key(api, which):
    key = {"none": "", "wrong": "hs-not-a-key", "revoked": api["revoked"]}[which]
    if which == "none":
        response = httpx.get(api["base"] + "/models")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        return
    with pytest.raises(openai.AuthenticationError):
        client(api, key).models.list()


def test_api_chat_completion(api):
    api["ollama"].queue_reply("Hello from the fake")
    answer = client(api).chat.completions.create(
        model="ollama:llama3.2:latest", temperature=0.2, max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello from the fake"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "ollama:llama3.2:latest" and answer.usage.completion_tokens > 0
    sent = api["ollama"].requests_to("/api/chat")[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["options"]["temperature"] == 0.2


def test_api_chat_completion_streams_with_usage(api):
    api["ollama"].queue_reply(api["ollama"].make_tokens(30), delay=0.005)
    stream = client(api).chat.completions.create(
        model="ollama:llama3.2:latest", messages=[{"role": "user", "content": "count"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(api["ollama"].make_tokens(30))
    assert chunks[-1].usage.completion_tokens == 30 and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_api_image_input_reaches_a_vision_model(api):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    client(api).chat.completions.create(model="ollama:llava:latest", messages=[
        {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                     {"type": "image_url", "image_url": {"url": data_url}}]}])
    sent = api["ollama"].requests_to("/api/chat")[-1].json["messages"][-1]
    assert base64.b64decode(sent["images"][0]) == buf.getvalue()


@pytest.mark.parametrize("model, error, status", [
    ("llama3.2", openai.NotFoundError, 404),
    ("ollama:", openai.NotFoundError, 404),
])
def test_api_unknown_models_are_404(api, model, error, status):
    with pytest.raises(error) as failure:
        client(api).chat.completions.create(model=model,
                                            messages=[{"role": "user", "content": "hi"}])
    assert failure.value.status_code == status


def test_api_bad_requests_name_the_field(api):
    with pytest.raises(openai.BadRequestError) as failure:
        client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=[])
    assert failure.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="can't read images"):
        client(api).chat.completions.create(model="ollama:llama3.2:latest", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64,iVBORw0KGgo="}}]}])


def test_api_a_model_ollama_lacks_is_404_with_the_studios_sentence(api):
    with pytest.raises(openai.NotFoundError) as failure:
        client(api).chat.completions.create(model="ollama:not-pulled:latest",
                                            messages=[{"role": "user", "content": "hi"}])
    assert "not-pulled" in failure.value.message and "ollama pull" in failure.value.message
    assert "Traceback" not in failure.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_api_a_failure_upstream_is_502_before_any_text_streamed_or_not(api, stream):
    for _ in range(3):  # the router tries a 500 three times
        api["ollama"].queue_reply("never", error_after=0, error="the runner crashed")
    with pytest.raises(openai.APIStatusError) as failure:
        client(api).chat.completions.create(model="ollama:llama3.2:latest", stream=stream,
                                            messages=[{"role": "user", "content": "hi"}])
    assert failure.value.status_code == 502  # the status line says it, even for a stream
    assert "the runner crashed" in failure.value.message
    assert "Traceback" not in failure.value.message


def test_api_usage_is_the_keys_user(api):
    api["ollama"].queue_reply("counted")
    client(api).chat.completions.create(model="ollama:llama3.2:latest",
                                        messages=[{"role": "user", "content": "hi"}])
    ledger = api["services"].accounting.ledger
    rows = ledger.usage_records(limit=50)
    assert {r.user for r in rows} == {"bob"} and {r.via for r in rows} == {"api: laptop"}
    assert {r.source for r in rows} == {"api"}  # Costs tells API use apart, and filters it


def test_api_a_requests_max_tokens_bounds_a_cloud_reply(api):
    api["cloud"].queue_reply(["word "] * 300)
    answer = client(api).chat.completions.create(
        model="openrouter:openai/gpt-4o-mini", max_tokens=12,
        messages=[{"role": "user", "content": "Write at length."}])
    assert api["cloud"].last_chat.json["max_tokens"] == 12
    assert answer.usage.completion_tokens == 12
    assert answer.choices[0].message.content == "word " * 12


# -- the Ollama-compatible surface, with the official ollama client -----------------------------


def ollama_client(api, key=None):
    import ollama

    return ollama.Client(host=api["base"].removesuffix("/v1"),
                         headers={"Authorization": f"Bearer {key or api['key']}"})


def test_api_ollama_lists_the_picker_models(api):
    names = [m.model for m in ollama_client(api).list().models]
    assert names[:3] == ["ollama:llama3.2:latest", "ollama:llava:latest", "ollama:qwen3:8b"]
    assert "openrouter:openai/gpt-4o-mini" in names


def test_api_ollama_chat_streams_and_answers_whole(api):
    api["ollama"].queue_reply(api["ollama"].make_tokens(20), delay=0.005)
    parts = list(ollama_client(api).chat(model="ollama:llama3.2:latest", stream=True,
                                         messages=[{"role": "user", "content": "count"}],
                                         options={"temperature": 0.3}))
    assert "".join(p.message.content for p in parts) == "".join(api["ollama"].make_tokens(20))
    assert parts[-1].done and parts[-1].eval_count == 20
    assert api["ollama"].requests_to("/api/chat")[-1].json["options"]["temperature"] == 0.3
    api["ollama"].queue_reply("whole answer")
    whole = ollama_client(api).chat(model="ollama:llama3.2:latest",
                                    messages=[{"role": "user", "content": "hi"}])
    assert whole.message.content == "whole answer" and whole.done


def test_api_ollama_errors_are_its_shape(api):
    import ollama

    with pytest.raises(ollama.ResponseError) as no_key:
        ollama_client(api, "hs-wrong").list()
    assert no_key.value.status_code == 401
    with pytest.raises(ollama.ResponseError) as unknown:
        ollama_client(api).chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.status_code == 404 and "not a model from the list" in unknown.value.error


def test_api_a_client_that_goes_away_stops_the_reply_upstream(api):
    fake = api["ollama"]
    fake.client_gone.clear()
    before = fake.disconnects
    fake.queue_reply(fake.make_tokens(400), delay=0.02)
    stream = client(api).chat.completions.create(
        model="ollama:llama3.2:latest", stream=True,
        messages=[{"role": "user", "content": "a long story"}])
    got = [next(stream) for _ in range(3)]
    assert got[0].choices[0].delta.role == "assistant"
    stream.close()
    assert fake.client_gone.wait(10) and fake.disconnects == before + 1


def test_api_ollama_apps_take_the_key_from_the_environment_or_the_url(api, monkeypatch):
    """Apps on the official client read OLLAMA_API_KEY; others may only take a URL, whose
    password (HTTP Basic, as httpx and browsers send it) is the key."""
    import ollama

    root = api["base"].removesuffix("/v1")
    monkeypatch.setenv("OLLAMA_API_KEY", api["key"])
    assert "ollama:llama3.2:latest" in [m.model for m in ollama.Client(host=root).list().models]
    address = root.replace("http://", "")
    assert httpx.get(f"http://phone:{api['key']}@{address}/api/tags").status_code == 200
    assert httpx.get(f"http://phone:hs-wrong@{address}/api/tags").status_code == 401
    assert httpx.get(f"{root}/api/tags", headers={"Authorization": "Basic !!"}).status_code == 401
