"""Embeddings in the two clients (OllamaClient.embed, OpenRouterClient.embed) and the fakes'
routes behind them (/api/embed, /api/v1/embeddings), read raw where the wire shape matters.
Kept apart from test_clients_ollama.py / test_clients_openrouter.py, whose chat tests change
on their own."""

from __future__ import annotations

import base64
import math
import socket
import struct

import httpx
import openai
import pytest

from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import BadApiKey, OpenRouterClient, OutOfCredit, RateLimited
from studio.errors import BackendUnavailable, InvalidInput, ModelNotFound
from studio.events import EmbedResult
from tests.fakes.ollama_server import EMBED_DIMENSIONS, embedding_of
from tests.fakes.openrouter_server import DEFAULT_KEY

EMBEDDER = "nomic-embed-text:latest"
CLOUD_EMBEDDER = "openai/text-embedding-3-small"


@pytest.fixture
def ollama_embedder(fake_ollama):
    fake_ollama.add_model(EMBEDDER, family="nomic-bert", parameter_size="137M",
                          capabilities=("embedding",))
    return fake_ollama


@pytest.fixture
def ollama_client(ollama_embedder):
    client = OllamaClient(ollama_embedder.url, timeout=10)
    yield client
    client.close()


@pytest.fixture
def cloud_client(fake_openrouter):
    client = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5)
    yield client
    client.close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- the fake Ollama's /api/embed, raw --------------------------------------------------------


def test_fake_ollama_embed_answers_like_ollama(ollama_embedder):
    response = httpx.post(ollama_embedder.url + "/api/embed",
                          json={"model": EMBEDDER, "input": ["hello world", "bye"]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration",
                         "prompt_eval_count"}
    assert body["model"] == EMBEDDER and body["embeddings"] == [embedding_of("hello world"),
                                                                 embedding_of("bye")]
    assert all(isinstance(body[k], int) and body[k] > 0
               for k in ("total_duration", "load_duration", "prompt_eval_count"))
    for vector in body["embeddings"]:
        assert len(vector) == EMBED_DIMENSIONS
        assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)


def test_fake_ollama_embed_takes_one_string_and_shortens_on_request(ollama_embedder):
    one = httpx.post(ollama_embedder.url + "/api/embed",
                     json={"model": EMBEDDER, "input": "hello", "dimensions": 4}).json()
    assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 4
    assert math.isclose(sum(x * x for x in one["embeddings"][0]), 1.0, rel_tol=1e-5)
    empty = httpx.post(ollama_embedder.url + "/api/embed", json={"model": EMBEDDER}).json()
    assert empty == {"model": EMBEDDER, "embeddings": []}  # an empty input only loads it
    assert EMBEDDER in ollama_embedder.running_models()


@pytest.mark.parametrize("body, status, error", [
    ({"model": "nomic-embed-text:v9", "input": "x"}, 404, "model 'nomic-embed-text:v9' not found"),
    ({"input": "x"}, 400, "model is required"),
    ({"model": EMBEDDER, "input": [1, 2]}, 400, "invalid input type"),
    ({"model": "llama3.2", "input": "x"}, 501, "this model does not support embeddings"),
])
def test_fake_ollama_embed_errors(ollama_embedder, body, status, error):
    response = httpx.post(ollama_embedder.url + "/api/embed", json=body)
    assert (response.status_code, response.json()) == (status, {"error": error})


# -- OllamaClient.embed ----------------------------------------------------------------------


def test_ollama_embed_returns_vectors_in_order_with_figures(ollama_embedder, ollama_client):
    result = ollama_client.embed(EMBEDDER, ["one", "two words"])
    assert isinstance(result, EmbedResult)
    assert result.vectors == [embedding_of("one"), embedding_of("two words")]
    assert result.prompt_tokens == 3 + 4 and result.total_ms > 0 and result.cost_usd is None
    sent = ollama_embedder.requests_to("/api/embed")[-1].json
    assert sent["model"] == EMBEDDER and sent["input"] == ["one", "two words"]


def test_ollama_embed_passes_dimensions(ollama_embedder, ollama_client):
    result = ollama_client.embed(EMBEDDER, ["one"], dimensions=3)
    assert len(result.vectors[0]) == 3
    assert ollama_embedder.requests_to("/api/embed")[-1].json["dimensions"] == 3


def test_ollama_embed_unknown_model(ollama_client):
    with pytest.raises(ModelNotFound, match="ollama pull nomic-embed-text:v9"):
        ollama_client.embed("nomic-embed-text:v9", ["x"])


def test_ollama_embed_chat_model_says_pick_an_embedding_model(ollama_client):
    with pytest.raises(InvalidInput) as failure:
        ollama_client.embed("llama3.2:latest", ["x"])
    assert "can't make embeddings" in str(failure.value)
    assert "nomic-embed-text" in str(failure.value)


def test_ollama_embed_unreachable(closed_port_url):
    client = OllamaClient(closed_port_url, timeout=2)
    with pytest.raises(BackendUnavailable, match="ollama serve"):
        client.embed(EMBEDDER, ["x"])


# -- the fake OpenRouter's /embeddings and OpenRouterClient.embed -----------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_fake_openrouter_embeddings_shape(fake_openrouter, encoding):
    response = httpx.post(fake_openrouter.url + "/embeddings",
                          headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
                          json={"model": CLOUD_EMBEDDER, "input": ["a b", "c"],
                                "encoding_format": encoding})
    body = response.json()
    assert response.status_code == 200 and body["object"] == "list"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    first = body["data"][0]["embedding"]
    if encoding == "base64":
        first = list(struct.unpack(f"<{EMBED_DIMENSIONS}f", base64.b64decode(first)))
    assert first == embedding_of("a b")
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 2
    assert body["usage"]["cost"] > 0


def test_fake_openrouter_embeddings_checks_the_key(fake_openrouter):
    response = httpx.post(fake_openrouter.url + "/embeddings",
                          json={"model": CLOUD_EMBEDDER, "input": "x"})
    assert response.status_code == 401


def test_openrouter_embed_through_the_openai_client(cloud_client, fake_openrouter):
    result = cloud_client.embed(CLOUD_EMBEDDER, ["hello", "world"])
    assert result.vectors == [embedding_of("hello"), embedding_of("world")]
    assert result.prompt_tokens == 4 and result.cost_usd == pytest.approx(4 * 2e-8)
    sent = fake_openrouter.requests[-1]
    assert sent.path == "/api/v1/embeddings"
    assert sent.json == {"model": CLOUD_EMBEDDER, "input": ["hello", "world"],
                         "encoding_format": "float"}


def test_openrouter_embed_passes_dimensions(cloud_client, fake_openrouter):
    result = cloud_client.embed(CLOUD_EMBEDDER, ["hello"], dimensions=4)
    assert len(result.vectors[0]) == 4 and fake_openrouter.requests[-1].json["dimensions"] == 4


def test_openrouter_embed_unknown_model(cloud_client):
    with pytest.raises(ModelNotFound, match="nope/embedder"):
        cloud_client.embed("nope/embedder", ["x"])


@pytest.mark.parametrize("status, error", [(401, BadApiKey), (402, OutOfCredit),
                                           (429, RateLimited)])
def test_openrouter_embed_errors(cloud_client, fake_openrouter, status, error):
    fake_openrouter.fail_next("/embeddings", status, retry_after=3 if status == 429 else None)
    with pytest.raises(error) as failure:
        cloud_client.embed(CLOUD_EMBEDDER, ["x"])
    assert failure.value.status == status
    assert DEFAULT_KEY not in str(failure.value)


def test_openrouter_embed_without_a_key_sends_nothing(fake_openrouter):
    from studio.clients.openrouter import NoApiKey

    with pytest.raises(NoApiKey):
        OpenRouterClient("", fake_openrouter.url).embed(CLOUD_EMBEDDER, ["x"])
    assert fake_openrouter.requests == []


def test_openrouter_embed_with_the_official_client_default_base64(fake_openrouter):
    """The fake's base64 answer decodes in openai's own parser (its default format)."""
    client = openai.OpenAI(base_url=fake_openrouter.url, api_key=DEFAULT_KEY, max_retries=0)
    answer = client.embeddings.create(model=CLOUD_EMBEDDER, input="hello")
    assert fake_openrouter.requests[-1].json["encoding_format"] == "base64"
    assert answer.data[0].embedding == pytest.approx(embedding_of("hello"))
