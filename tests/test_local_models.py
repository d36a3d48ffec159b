"""LocalModels: Ollama's models and their capabilities, through the real client against the
fake Ollama, saved in a real store; the version pages compare; the last known list while
Ollama is down, after a restart too."""

from __future__ import annotations

import doctest

import pytest

from studio.clients.ollama import OllamaClient
from studio.models import local as local_module
from studio.models.local import LocalModels
from studio.store.db import Store
from studio.store.models import ModelsStore
from tests.conftest import free_port


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(fake_ollama):
    fake_ollama.add_model("nomic-embed-text", family="nomic-bert", parameter_size="137M",
                          capabilities=("embedding",))
    c = OllamaClient(fake_ollama.url, timeout=5)
    yield c
    c.close()


def asked(fake, path: str) -> int:
    return sum(1 for r in fake.requests if r.path == path)


def test_local_models_doctests():
    assert doctest.testmod(local_module).failed == 0


def test_local_models_capabilities_say_what_each_is_for(client, store):
    listing = LocalModels(client, ModelsStore(store)).listing()

    by_name = {m.name: m for m in listing.models}
    assert listing.reachable and listing.problem == ""
    assert by_name["nomic-embed-text:latest"].can_chat is False
    assert by_name["nomic-embed-text:latest"].uses == "embeddings only (the API), not chat"
    assert by_name["llava:latest"].uses == "chat · reads images"
    assert [m.name for m in listing.chat_models] == ["llama3.2:latest", "llava:latest"]


def test_local_models_ask_show_once_per_digest(fake_ollama, client, store):
    models = LocalModels(client, ModelsStore(store))
    for _ in range(3):
        models.listing(fresh=True)
    assert asked(fake_ollama, "/api/tags") == 3
    assert asked(fake_ollama, "/api/show") == 3  # one per model, not per listing

    # Pulled again under the same name, with new weights: asked again, that model only.
    fake_ollama._find("llama3.2").digest = "f" * 64
    models.listing(fresh=True)
    assert asked(fake_ollama, "/api/show") == 4


def test_local_models_ask_ollama_once_per_ttl(fake_ollama, client):
    clock = Clock()
    models = LocalModels(client, ttl_s=10.0, clock=clock)
    models.listing()
    models.listing()
    assert asked(fake_ollama, "/api/tags") == 1
    clock.now += 10.5
    models.listing()
    assert asked(fake_ollama, "/api/tags") == 2
    models.invalidate()  # a pull or delete through the studio: ask at once
    models.listing()
    assert asked(fake_ollama, "/api/tags") == 3


def test_local_models_version_moves_only_when_the_list_does(fake_ollama, client):
    models = LocalModels(client)
    first = models.listing(fresh=True).version
    assert models.listing(fresh=True).version == first == models.version

    fake_ollama.add_model("qwen3:8b", capabilities=("completion", "thinking"))
    pulled = models.listing(fresh=True).version
    assert pulled > first

    fake_ollama.remove_model("qwen3:8b")
    assert models.listing(fresh=True).version > pulled


def test_local_models_ollama_down_keeps_the_last_list_marked_unreachable(fake_ollama, client):
    models = LocalModels(client)
    known = models.listing(fresh=True)
    fake_ollama.stop()

    down = models.listing(fresh=True)
    assert not down.reachable
    assert "Can't reach Ollama" in down.problem
    assert down.models == known.models
    assert down.version > known.version  # pages mark their pickers unreachable


def test_local_models_survive_a_restart_with_ollama_down(tmp_path, fake_ollama, client):
    path = tmp_path / "studio.db"
    store = Store.open(path)
    LocalModels(client, ModelsStore(store)).listing()
    store.close()

    dead = OllamaClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    store = Store.open(path)  # the studio restarted; Ollama is down
    try:
        listing = LocalModels(dead, ModelsStore(store)).listing()
        assert not listing.reachable
        assert [m.name for m in listing.chat_models] == ["llama3.2:latest", "llava:latest"]

        # Ollama is back: what each model can do is known by digest, not asked again.
        shows = asked(fake_ollama, "/api/show")
        back = LocalModels(client, ModelsStore(store)).listing()
        assert back.reachable and asked(fake_ollama, "/api/show") == shows
        assert not {m.name: m for m in back.models}["nomic-embed-text:latest"].can_chat
    finally:
        store.close()
        dead.close()


def test_local_models_server_without_capabilities_offers_every_model(fake_ollama):
    fake_ollama.add_model("old-model", capabilities=None)  # Ollama before v0.6.4
    c = OllamaClient(fake_ollama.url, timeout=5)
    try:
        listing = LocalModels(c).listing()
    finally:
        c.close()
    old = {m.name: m for m in listing.models}["old-model:latest"]
    assert old.capabilities is None and old.can_chat
