"""The clients' one TLS context (studio/clients/tls.py): made once, shared by every pool of
ours. The openai SDK's own pool (a cloud key, an OpenAI-compatible server) keeps its own."""

from __future__ import annotations

import ssl

import pytest

from studio.clients import tls
from studio.clients.comfyui import ComfyUIClient
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.services import build_services


@pytest.fixture
def contexts_made(monkeypatch):
    """Counts the SSL contexts made from here on (each loads the CA bundle, ~20 ms)."""
    made = []
    real = ssl.create_default_context

    def counting(*args, **kwargs):
        made.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    tls.tls_context.cache_clear()
    yield made
    tls.tls_context.cache_clear()


def test_tls_context_one_for_every_client(contexts_made, fake_ollama):
    clients = [OllamaClient(fake_ollama.url, timeout=5),
               OpenRouterClient("", base_url="https://openrouter.example/api/v1"),
               ComfyUIClient("http://127.0.0.1:8188")]
    try:
        assert len(contexts_made) == 1
        assert clients[0].version()  # the pools still talk
    finally:
        for client in clients:
            client.close()


def test_tls_context_one_for_the_studio_start(contexts_made, tmp_path, fake_ollama):
    services = build_services(Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                                 "OLLAMA_HOST": fake_ollama.url},
                                                dotenv_path=None))
    try:
        assert len(contexts_made) == 1
    finally:
        services.store.close()


def test_tls_context_still_checks_certificates():
    context = tls.tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded
