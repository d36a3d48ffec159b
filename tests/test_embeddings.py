"""The Embeddings service (studio/chat/embeddings.py) against the fake Ollama and OpenRouter:
input checks before anything is sent, limits booked and released, cloud budget checked, and
one usage row per request under the user with its ``via``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from studio.access.limits import Limits
from studio.chat.embeddings import Embeddings
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.costs.accounting import Accounting
from studio.costs.budget import Budget
from studio.costs.pricing import ModelPrices
from studio.errors import BudgetExceeded, InvalidInput, LimitReached, ModelNotFound, StudioError
from studio.events import Usage
from studio.models.gpu_coordinator import ModelsInUse
from studio.store.usage import UsageStore
from tests.fakes.ollama_server import embedding_of
from tests.fakes.openrouter_server import DEFAULT_KEY

LOCAL = "ollama:nomic-embed-text:latest"
CLOUD = "openrouter:openai/text-embedding-3-small"


@pytest.fixture
def parts(store, fake_ollama, fake_openrouter):
    fake_ollama.add_model("nomic-embed-text:latest", capabilities=("embedding",))
    settings = Settings(budget_daily_usd=1.0)
    ledger = UsageStore(store)
    accounting = Accounting(ledger, settings, power_reader=lambda: 100.0)
    budget = Budget(ledger, settings)
    backends = {"ollama": OllamaClient(fake_ollama.url, timeout=5),
                "openrouter": OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=5)}
    limits = Limits(chat_per_minute=3, concurrent_replies=1)
    in_use = ModelsInUse()

    def make(**kwargs):
        options = dict(accounting=accounting, budget=budget, limits=limits, in_use=in_use,
                       prices=lambda model_id: None)
        return Embeddings(backends, **{**options, **kwargs})

    yield {"make": make, "accounting": accounting, "ledger": ledger, "ollama": fake_ollama,
           "openrouter": fake_openrouter, "limits": limits, "in_use": in_use}
    for client in backends.values():
        client.close()


def test_embeddings_local_vectors_and_a_usage_row(parts):
    result = parts["make"]().embed(LOCAL, ["hello", "world"], user="bob", via="api: laptop")
    assert result.vectors == [embedding_of("hello"), embedding_of("world")]
    [row] = parts["ledger"].usage_records()
    assert (row.user, row.backend, row.model, row.via) == ("bob", "ollama",
                                                           "nomic-embed-text:latest",
                                                           "api: laptop")
    assert (row.prompt_tokens, row.completion_tokens) == (result.prompt_tokens, 0)
    assert row.cost_usd == 0 and row.energy_kwh is not None  # local: energy, no bill


def test_embeddings_cloud_cost_is_recorded_as_reported(parts):
    result = parts["make"]().embed(CLOUD, ["hello"], user="bob", via="api: laptop")
    [row] = parts["ledger"].usage_records()
    assert (row.backend, row.model) == ("openrouter", "openai/text-embedding-3-small")
    assert row.cost_usd == pytest.approx(result.cost_usd) and result.cost_usd > 0
    assert not row.cost_is_estimate


@pytest.mark.parametrize("inputs, words", [
    ([], "nothing to embed"),
    (["fine", ""], "Text number 2"),
    (["x"] * 5, "5 texts are too many"),
    (["x" * 11], "11 characters long"),
])
def test_embeddings_refuses_bad_input_before_sending(parts, inputs, words):
    service = parts["make"](max_inputs=4, max_chars=10)
    with pytest.raises(InvalidInput, match=words):
        service.embed(LOCAL, inputs, user="bob", via="api: laptop")
    assert parts["ollama"].requests_to("/api/embed") == []


@pytest.mark.parametrize("model_id", ["nomic-embed-text", "ollama:", "comfyui:sdxl"])
def test_embeddings_unknown_ids_are_not_from_the_list(parts, model_id):
    with pytest.raises(InvalidInput, match="not a model from the list"):
        parts["make"]().embed(model_id, ["x"], user="bob", via="")


def test_embeddings_backend_refusals_pass_through_and_record_nothing(parts):
    service = parts["make"]()
    with pytest.raises(ModelNotFound):
        service.embed("ollama:missing:latest", ["x"], user="bob", via="")
    with pytest.raises(InvalidInput, match="can't make embeddings"):
        service.embed("ollama:llama3.2:latest", ["x"], user="bob", via="")
    assert parts["ledger"].usage_records() == []


def test_embeddings_count_against_the_chat_limits_and_release_the_slot(parts):
    service = parts["make"]()
    for _ in range(3):  # concurrent_replies=1: each request gave its slot back
        service.embed(LOCAL, ["x"], user="bob", via="")
    with pytest.raises(LimitReached, match="STUDIO_LIMIT_CHAT_PER_MINUTE"):
        service.embed(LOCAL, ["x"], user="bob", via="")
    service.embed(LOCAL, ["x"], user="ann", via="")


def test_embeddings_release_the_slot_when_the_backend_fails(parts):
    service = parts["make"](limits=Limits(concurrent_replies=1))
    with pytest.raises(ModelNotFound):
        service.embed("ollama:missing:latest", ["x"], user="bob", via="")
    service.embed(LOCAL, ["x"], user="bob", via="")


def test_embeddings_hold_the_local_model_while_it_works(parts):
    seen = []

    class Watching:
        def embed(self, model, inputs, *, dimensions=None):
            seen.append(parts["in_use"].names())
            return OllamaClient(parts["ollama"].url).embed(model, inputs)

    service = parts["make"]()
    service.backends = {"ollama": Watching()}
    service.embed(LOCAL, ["x"], user="bob", via="")
    assert seen == [{"nomic-embed-text:latest"}] and parts["in_use"].names() == set()


def test_embeddings_cloud_budget_is_checked_first(parts):
    parts["accounting"].record_chat("ann", "openrouter", "openai/gpt-4o-mini",
                                    Usage(cost_usd=0.999), 1.0)
    prices = {CLOUD: ModelPrices(prompt=Decimal("0.001"), completion=Decimal(0))}
    service = parts["make"](prices=prices.get)
    before = len(parts["openrouter"].requests)
    with pytest.raises(BudgetExceeded, match="daily cloud budget"):
        service.embed(CLOUD, ["x" * 40], user="bob", via="")  # ~10 tokens = $0.01 > $0.001 left
    assert len(parts["openrouter"].requests) == before
    service.embed(LOCAL, ["x" * 40], user="bob", via="")  # local work is not capped


def test_embeddings_cloud_request_is_reserved_then_settled_or_released(parts, store):
    prices = {CLOUD: ModelPrices(prompt=Decimal("0.00000002"), completion=Decimal(0))}
    service = parts["make"](prices=prices.get)
    result = service.embed(CLOUD, ["hello there"], user="bob", via="api: laptop")
    # The row carries the cost and has taken over its request's charge.
    assert store.db["budget_charges"].count == 0
    assert parts["accounting"].spend("today").cloud_usd == Decimal(str(result.cost_usd))
    parts["openrouter"].fail_next("/embeddings", 500)
    with pytest.raises(StudioError):
        service.embed(CLOUD, ["hello again"], user="bob", via="api: laptop")
    assert store.db["budget_charges"].count == 0  # released: it cost nothing


def test_embeddings_pass_dimensions(parts):
    result = parts["make"]().embed(LOCAL, ["x"], user="bob", via="", dimensions=3)
    assert len(result.vectors[0]) == 3
