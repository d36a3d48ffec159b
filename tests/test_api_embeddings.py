"""Embeddings through the running studio (in-process, 127.0.0.1): OpenAI's /v1/embeddings with
the official `openai` client (sync and async, float and base64), Ollama's /api/embed and
/api/embeddings with the official `ollama` client, a cloud model through the fake OpenRouter,
the errors in each API's shape, and the usage row under the key's user."""

from __future__ import annotations

import asyncio

import httpx
import ollama
import openai
import pytest

from studio.access.limits import Limits
from studio.config import Settings
from tests.conftest import free_port, running_fake_ollama
from tests.fakes.ollama_server import embedding_of
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

LOCAL = "ollama:nomic-embed-text:latest"
CLOUD = "openrouter:openai/text-embedding-3-small"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.services import build_services
    from studio.store.db import Store
    from studio.ui.app import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("embed-api")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    Users(store).add("bob", "bob-password-1")
    _, key = ApiKeys(store).create("bob", "notebook")
    store.close()
    fake = running_fake_ollama()
    fake.add_model("nomic-embed-text:latest", family="nomic-bert", parameter_size="137M",
                   capabilities=("embedding",))
    cloud = FakeOpenRouter().start()
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": fake.url,
         "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": cloud.url},
        dotenv_path=None))
    demo = build_app(services)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **{**launch_kwargs(services), "server_port": free_port()})
    root = url.rstrip("/")
    yield {"root": root, "base": root + "/v1", "key": key, "ollama": fake, "cloud": cloud,
           "services": services}
    demo.close()
    services.images.close()
    fake.stop()
    cloud.stop()
    assert not fake.server_errors, fake.server_errors


def client(api, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=api["base"], api_key=key or api["key"], max_retries=0)


def ollama_client(api, key=None) -> ollama.Client:
    return ollama.Client(host=api["root"], headers={"Authorization": f"Bearer {key or api['key']}"})


# -- /v1/embeddings with the openai client ---------------------------------------------------


def test_api_embeddings_float_list_input(api):
    answer = client(api).embeddings.create(model=LOCAL, input=["hello", "world"],
                                           encoding_format="float")
    assert [d.embedding for d in answer.data] == [embedding_of("hello"), embedding_of("world")]
    assert [d.index for d in answer.data] == [0, 1] and answer.model == LOCAL
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0
    sent = api["ollama"].requests_to("/api/embed")[-1].json
    assert sent["model"] == "nomic-embed-text:latest" and sent["input"] == ["hello", "world"]


def test_api_embeddings_base64_is_the_clients_default(api):
    answer = client(api).embeddings.create(model=LOCAL, input="hello")
    raw = httpx.post(api["base"] + "/embeddings", headers={"Authorization": f"Bearer {api['key']}"},
                     json={"model": LOCAL, "input": "hello", "encoding_format": "base64"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    assert answer.data[0].embedding == pytest.approx(embedding_of("hello"), abs=0)


def test_api_embeddings_async_client(api):
    async def embed():
        async with openai.AsyncOpenAI(base_url=api["base"], api_key=api["key"],
                                      max_retries=0) as aclient:
            return await aclient.embeddings.create(model=LOCAL, input=["a", "b", "c"])

    answer = asyncio.run(embed())
    assert [d.embedding for d in answer.data] == [embedding_of(t) for t in "abc"]


def test_api_embeddings_dimensions_reach_ollama(api):
    answer = client(api).embeddings.create(model=LOCAL, input="hello", dimensions=4,
                                           encoding_format="float")
    assert len(answer.data[0].embedding) == 4
    assert api["ollama"].requests_to("/api/embed")[-1].json["dimensions"] == 4


def test_api_embeddings_cloud_model_through_openrouter(api):
    answer = client(api).embeddings.create(model=CLOUD, input=["hello", "world"],
                                           encoding_format="float")
    assert [d.embedding for d in answer.data] == [embedding_of("hello"), embedding_of("world")]
    sent = api["cloud"].requests[-1]
    assert sent.path == "/api/v1/embeddings" and sent.json["model"] == "openai/text-embedding-3-small"


# -- /api/embed and /api/embeddings with the ollama client -----------------------------------


def test_api_ollama_embed(api):
    answer = ollama_client(api).embed(model=LOCAL, input=["hello", "world"])
    assert answer.embeddings == [embedding_of("hello"), embedding_of("world")]
    assert answer.model == LOCAL and answer.prompt_eval_count > 0 and answer.total_duration > 0


def test_api_ollama_embed_empty_input_only_checks_the_model(api):
    before = len(api["ollama"].requests_to("/api/embed"))
    answer = ollama_client(api).embed(model=LOCAL, input=[])
    assert answer.embeddings == [] and len(api["ollama"].requests_to("/api/embed")) == before


def test_api_ollama_deprecated_embeddings(api):
    answer = ollama_client(api).embeddings(model=LOCAL, prompt="hello")
    assert list(answer.embedding) == embedding_of("hello")


# -- errors ----------------------------------------------------------------------------------


def test_api_embeddings_need_a_key(api):
    response = httpx.post(api["base"] + "/embeddings", json={"model": LOCAL, "input": "x"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(api, "hs-not-a-key").embeddings.create(model=LOCAL, input="x")
    for path in ("/api/embed", "/api/embeddings"):
        response = httpx.post(api["root"] + path, json={"model": LOCAL, "input": "x"})
        assert response.status_code == 401 and "Bearer" in response.json()["error"]


@pytest.mark.parametrize("model", ["nomic-embed-text", "ollama:not-pulled:latest",
                                   "openrouter:nope/embedder"])
def test_api_embeddings_unknown_models_are_404(api, model):
    with pytest.raises(openai.NotFoundError) as failure:
        client(api).embeddings.create(model=model, input="x", encoding_format="float")
    assert failure.value.body["param"] == "model"
    with pytest.raises(ollama.ResponseError) as ollama_failure:
        ollama_client(api).embed(model=model, input="x")
    assert ollama_failure.value.status_code == 404


def test_api_embeddings_chat_model_is_400_naming_the_model(api):
    with pytest.raises(openai.BadRequestError) as failure:
        client(api).embeddings.create(model="ollama:llama3.2:latest", input="x",
                                      encoding_format="float")
    assert failure.value.body["param"] == "model"
    assert "can't make embeddings" in failure.value.message
    assert "nomic-embed-text" in failure.value.message
    with pytest.raises(ollama.ResponseError) as ollama_failure:
        ollama_client(api).embed(model="ollama:llama3.2:latest", input="x")
    assert ollama_failure.value.status_code == 400


@pytest.mark.parametrize("body, param", [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["fine", ""]}, "input"),
    ({"input": [1, 2, 3]}, "input"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": {"text": "x"}}, "input"),
    ({"input": ["x"] * 2049}, "input"),  # the service's own check (MAX_INPUTS)
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "model": ""}, "model"),
])
def test_api_embeddings_bad_requests_name_the_field(api, body, param):
    before = len(api["ollama"].requests_to("/api/embed"))
    response = httpx.post(api["base"] + "/embeddings",
                          headers={"Authorization": f"Bearer {api['key']}"},
                          json={"model": LOCAL, **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].endswith(".")
    assert len(api["ollama"].requests_to("/api/embed")) == before


def test_api_embeddings_token_ids_say_send_text(api):
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client(api).embeddings.create(model=LOCAL, input=[[1, 2, 3]])


def test_api_embeddings_limit_is_429_with_retry_after(api):
    embeddings = api["services"].embeddings
    saved = embeddings.limits
    embeddings.limits = Limits(chat_per_minute=1)
    try:
        client(api).embeddings.create(model=LOCAL, input="x", encoding_format="float")
        with pytest.raises(openai.RateLimitError) as failure:
            client(api).embeddings.create(model=LOCAL, input="x", encoding_format="float")
        assert failure.value.response.headers["retry-after"]
        assert "STUDIO_LIMIT_CHAT_PER_MINUTE" in failure.value.message
    finally:
        embeddings.limits = saved


def test_api_embeddings_usage_is_the_keys_user(api):
    client(api).embeddings.create(model=LOCAL, input=["counted once"], encoding_format="float")
    client(api).embeddings.create(model=CLOUD, input=["counted twice"], encoding_format="float")
    rows = api["services"].accounting.ledger.usage_records(limit=2)
    assert [(r.backend, r.model) for r in rows] == [
        ("openrouter", "openai/text-embedding-3-small"), ("ollama", "nomic-embed-text:latest")]
    assert {r.user for r in rows} == {"bob"} and {r.via for r in rows} == {"api: notebook"}
    assert rows[0].cost_usd > 0 and rows[1].prompt_tokens > 0
