"""LocalModels: Ollama's models and their capabilities, through the real client against the
fake Ollama, saved in a real store; the version pages compare; the last known list while
Ollama is down, after a restart too."""

from __future__ import annotations

import doctest
import threading

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


class Held:
    """The real client, with its /api/tags call held while ``hold`` is set: Ollama hanging
    in the middle of an answer (until ``release``)."""

    def __init__(self, client):
        self.client = client
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def list_models(self):
        if self.hold:
            self.entered.set()
            self.release.wait(30)
        return self.client.list_models()

    def capabilities(self, name):
        return self.client.capabilities(name)


def finishes(fn, timeout: float = 10.0):
    """Run ``fn`` in a thread; its result, or AssertionError if it is still waiting."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "still waiting on the request another caller holds"
    return out[0]


def test_local_models_readers_never_wait_on_a_hung_ollama(client):
    """A page load (cached), the version check and a caller that has a list already get
    the last list while another caller's request to Ollama hangs; that caller's answer
    then lands as usual."""
    held, clock = Held(client), Clock()
    models = LocalModels(held, clock=clock)
    first = models.listing()
    clock.now += 3600  # the list is old: the next caller asks Ollama
    held.hold = True
    asking = threading.Thread(target=models.listing, daemon=True)
    asking.start()
    assert held.entered.wait(10)

    assert finishes(lambda: models.listing(cached=True)).models == first.models
    assert finishes(lambda: models.version) == first.version
    assert finishes(models.listing).models == first.models

    held.release.set()
    asking.join(10)
    assert not asking.is_alive()
    assert models.listing().models == first.models
