"""ChatModels.picker: what the Chat and Arena pickers offer and preselect, through the real
clients against the fake Ollama and the fake OpenRouter."""

from __future__ import annotations

import doctest

import pytest

from studio.chat import models as models_module
from studio.chat.models import UNREACHABLE, ChatModels
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.costs.catalog import Catalog
from studio.models.local import LocalModels
from studio.store.cloud import CloudStore
from studio.store.models import ModelsStore
from tests.fakes.openrouter_server import DEFAULT_KEY, DEFAULT_MODELS, FakeOpenRouter

PAID = ("openrouter:anthropic/claude-3.5-sonnet", "openrouter:openai/gpt-4o-mini")
FREE = "openrouter:meta-llama/llama-3.2-3b-instruct:free"


@pytest.fixture
def client(fake_ollama):
    fake_ollama.add_model("nomic-embed-text", family="nomic-bert", capabilities=("embedding",))
    c = OllamaClient(fake_ollama.url, timeout=5)
    yield c
    c.close()


def chat_models(client, store, fake_openrouter=None) -> ChatModels:
    catalog = None
    if fake_openrouter is not None:
        lister = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5).list_models
        catalog = Catalog(lister, CloudStore(store), background=False)
    return ChatModels(client, catalog, LocalModels(client, ModelsStore(store)))


def test_chat_models_doctests():
    assert doctest.testmod(models_module).failed == 0


def test_chat_models_picker_leaves_out_models_that_cant_chat(client, store):
    models = chat_models(client, store)
    picker = models.picker()

    assert picker.values == ["ollama:llama3.2:latest", "ollama:llava:latest"]
    assert picker.default == "ollama:llama3.2:latest" and picker.problems == []
    # The API still lists it: /v1/embeddings and /api/embed use it.
    api_choices, _problems = models.choices()
    assert "ollama:nomic-embed-text:latest" in [v for _l, v in api_choices]


def test_chat_models_picker_preselects_the_default_model(client, store):
    picker = chat_models(client, store).picker("ollama:llava:latest")
    assert picker.default == "ollama:llava:latest"


def test_chat_models_ollama_down_lists_last_known_marked_unreachable(fake_ollama, client, store):
    with FakeOpenRouter() as cloud:
        models = chat_models(client, store, fake_openrouter=cloud)
        models.picker()
        fake_ollama.stop()
        models._local.invalidate()  # noqa: SLF001 - skip the 10 s until it asks again
        picker = models.picker()

    labels = dict((v, label) for label, v in picker.choices)
    assert labels["ollama:llama3.2:latest"].endswith(UNREACHABLE)
    assert picker.default == "ollama:llama3.2:latest"  # a fallback can answer for it
    assert any("Can't reach Ollama" in p and "unreachable" in p for p in picker.problems)


@pytest.mark.parametrize("cloud_models, expected", [
    (DEFAULT_MODELS, FREE),  # the free one, not the first (paid) one in the list
    ([m for m in DEFAULT_MODELS if ":free" not in m["id"]], None),
])
def test_chat_models_never_preselect_a_paid_model(client, store, cloud_models, expected):
    dead = OllamaClient("http://127.0.0.1:9", timeout=2)  # never known a local model
    try:
        with FakeOpenRouter(models=cloud_models) as cloud:
            picker = chat_models(dead, store, fake_openrouter=cloud).picker()
    finally:
        dead.close()

    assert set(PAID) <= set(picker.values)
    assert picker.default == expected


def test_chat_models_page_keeps_a_picked_model_and_says_when_it_went(client, store):
    from types import SimpleNamespace

    from studio.ui.chat_handlers import ChatPage

    models = chat_models(client, store)
    page = ChatPage(SimpleNamespace(chat=None, models=models, presets=[],
                                    settings=SimpleNamespace(default_model="llava",
                                                            max_page_sessions=10)))
    picker = models.picker(page.preferred_model())

    kept = page.picker_update(picker, "ollama:llama3.2:latest")
    assert kept["value"] == "ollama:llama3.2:latest" and kept["choices"] == picker.choices
    with pytest.warns(UserWarning, match="ollama:gone:latest is no longer offered.*llava"):
        gone = page.picker_update(picker, "ollama:gone:latest")
    assert gone["value"] == "ollama:llava:latest"  # STUDIO_DEFAULT_MODEL
