"""The cloud model catalogue: fetched from the fake OpenRouter, cached in SQLite, refreshed,
served from the cache when OpenRouter can't be reached; and the picker's labels."""

from __future__ import annotations

import doctest
import logging
import time
from decimal import Decimal

import pytest

from studio.costs import catalog as catalog_module
from studio.costs.catalog import Catalog, CloudModel, cloud_label, picker_choices
from studio.clients.ollama import ModelInfo
from studio.clients.openrouter import OpenRouterClient, OpenRouterModel
from studio.costs.pricing import ModelPrices
from studio.errors import BackendUnavailable, StudioError
from studio.store.cloud import CloudStore
from tests.conftest import free_port
from tests.fakes.openrouter_server import DEFAULT_KEY, DEFAULT_MODELS, FakeOpenRouter

IMAGE_MAKER = {
    "id": "acme/painter", "name": "Acme: Painter", "context_length": 4096,
    "architecture": {"input_modalities": ["text"], "output_modalities": ["image"]},
    "pricing": {"prompt": "0.000001", "completion": "0.000002"},
}


@pytest.fixture
def fake_openrouter():
    with FakeOpenRouter(models=[*DEFAULT_MODELS, IMAGE_MAKER]) as fake:
        yield fake


@pytest.fixture
def cloud(store):
    return CloudStore(store)


def lister(url: str):
    return OpenRouterClient(DEFAULT_KEY, url, timeout=5).list_models


def unreachable():
    return lister(f"http://127.0.0.1:{free_port()}/api/v1")


class Counting:
    """A list_models stand-in that counts calls and fails with ``error`` when set."""

    def __init__(self, models=(), error: StudioError | None = None):
        self.models = list(models)
        self.error = error
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return list(self.models)


def model(model_id="x/y", name="X: Y", prices=("0.000001", "0.000002"), inputs=("text",),
          outputs=("text",), context=8192):
    return OpenRouterModel(model_id, name, context, tuple(inputs), tuple(outputs),
                           {"prompt": prices[0], "completion": prices[1]})


def test_catalog_first_use_fetches_and_saves_the_list(fake_openrouter, cloud):
    catalog = Catalog(lister(fake_openrouter.url), cloud)
    ids = [m.id for m in catalog.models()]
    assert "openai/gpt-4o-mini" in ids and len(ids) == len(DEFAULT_MODELS) + 1
    assert sorted(r.id for r in cloud.cloud_models()) == sorted(ids)
    assert catalog.state().source == "live"
    assert len([r for r in fake_openrouter.requests if r.path.endswith("/models")]) == 1


def test_catalog_serves_the_saved_list_when_openrouter_is_unreachable(fake_openrouter, cloud):
    Catalog(lister(fake_openrouter.url), cloud).models()
    # A restart later, with OpenRouter out of reach: the list (and prices) still work.
    offline = Catalog(unreachable(), cloud)
    gpt = next(m for m in offline.models() if m.id == "openai/gpt-4o-mini")
    assert gpt.prices.prompt == Decimal("0.00000015") and gpt.context_length == 128000
    assert gpt.supports_images
    assert offline.prices("openrouter:openai/gpt-4o-mini") == gpt.prices
    assert offline.state().source == "cache"


def test_catalog_refresh_replaces_the_saved_list(fake_openrouter, cloud):
    catalog = Catalog(lister(fake_openrouter.url), cloud)
    catalog.models()
    fake_openrouter.models = [DEFAULT_MODELS[0]]
    assert [m.id for m in catalog.refresh()] == [DEFAULT_MODELS[0]["id"]]
    assert [r.id for r in cloud.cloud_models()] == [DEFAULT_MODELS[0]["id"]]


def test_catalog_failed_refresh_keeps_the_saved_list_and_says_why(fake_openrouter, cloud, caplog):
    catalog = Catalog(lister(fake_openrouter.url), cloud)
    before = catalog.models()
    fake_openrouter.fail_next("/models", 503)
    with caplog.at_level(logging.DEBUG), pytest.raises(StudioError) as failure:
        catalog.refresh()
    assert "OpenRouter" in str(failure.value) and "503" in str(failure.value)
    assert catalog.models() == before
    assert "showing the saved list" in catalog.state().summary
    assert DEFAULT_KEY not in str(failure.value) + caplog.text + catalog.state().summary


def test_catalog_without_any_list_and_no_openrouter_raises_a_clear_error(cloud):
    with pytest.raises(BackendUnavailable, match="Can't reach OpenRouter at http://127.0.0.1"):
        Catalog(unreachable(), cloud).models()


def test_catalog_does_not_retry_a_failed_fetch_on_every_page_load(cloud):
    fetch = Counting(error=BackendUnavailable("Can't reach OpenRouter at http://x."))
    now = [1_000.0]
    catalog = Catalog(fetch, cloud, retry_after_failure_s=60, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(StudioError, match="Can't reach OpenRouter"):
            catalog.models()
    assert fetch.calls == 1
    now[0] += 61
    fetch.error, fetch.models = None, [model()]
    assert [m.id for m in catalog.models()] == ["x/y"]
    assert fetch.calls == 2


def test_catalog_fresh_list_is_not_fetched_again(cloud):
    fetch = Counting([model()])
    catalog = Catalog(fetch, cloud, ttl_s=3600)
    catalog.models()
    catalog.models()
    assert fetch.calls == 1


def test_catalog_stale_list_is_served_at_once_and_refreshed_in_the_background(cloud):
    fetch = Counting([model("old/one")])
    Catalog(fetch, cloud).models()
    fetch.models = [model("new/one")]
    later = time.time() + 7200
    catalog = Catalog(fetch, cloud, ttl_s=3600, clock=lambda: later)
    assert [m.id for m in catalog.models()] == ["old/one"]  # no wait for the network
    assert catalog.wait_idle(10)
    assert [m.id for m in catalog.models()] == ["new/one"]
    assert [r.id for r in cloud.cloud_models()] == ["new/one"]


def test_catalog_stale_list_refresh_failure_keeps_serving_it(cloud):
    fetch = Counting([model("old/one")])
    Catalog(fetch, cloud).models()
    fetch.error = BackendUnavailable("Can't reach OpenRouter at http://x.")
    later = time.time() + 7200
    catalog = Catalog(fetch, cloud, ttl_s=3600, clock=lambda: later, background=False)
    assert [m.id for m in catalog.models()] == ["old/one"]
    assert "Can't reach OpenRouter" in catalog.state().error


@pytest.mark.parametrize("model_id, expected", [
    ("openrouter:openai/gpt-4o-mini", True),
    ("openai/gpt-4o-mini", True),
    ("openrouter:meta-llama/llama-3.2-3b-instruct:free", False),
    ("openrouter:nobody/unknown", False),
    ("ollama:llava:latest", False),
])
def test_catalog_knows_which_cloud_models_take_images(fake_openrouter, cloud, model_id, expected):
    assert Catalog(lister(fake_openrouter.url), cloud).supports_images(model_id) is expected


def test_catalog_prices_for_the_router_hook(fake_openrouter, cloud):
    catalog = Catalog(lister(fake_openrouter.url), cloud)
    prices = catalog.prices("openrouter:anthropic/claude-3.5-sonnet")
    assert (prices.prompt, prices.completion, prices.image) == (
        Decimal("0.000003"), Decimal("0.000015"), Decimal("0.0048"))
    assert catalog.prices("openrouter:nobody/unknown") is None
    assert catalog.prices("ollama:llama3.2:latest") is None


def test_catalog_prices_never_raise_when_nothing_can_be_had(cloud):
    assert Catalog(unreachable(), cloud).prices("openrouter:openai/gpt-4o-mini") is None


def test_catalog_display_names(fake_openrouter, cloud):
    catalog = Catalog(lister(fake_openrouter.url), cloud)
    assert catalog.display_name("openrouter:openai/gpt-4o-mini") == "OpenAI: GPT-4o-mini"
    assert catalog.display_name("openrouter:nobody/unknown") == "nobody/unknown"
    assert catalog.display_name("ollama:llama3.2:latest") == "llama3.2:latest"


def test_picker_choices_group_local_then_cloud_with_prices_and_context(fake_openrouter, cloud):
    local = [ModelInfo("llava:latest", 4_000_000_000, "llama", "7B", "Q4_0"),
             ModelInfo("Gemma3:latest", 3_000_000_000)]
    choices = picker_choices(local, Catalog(lister(fake_openrouter.url), cloud).models())
    labels = [label for label, _ in choices]
    values = [value for _, value in choices]
    assert values[:2] == ["ollama:Gemma3:latest", "ollama:llava:latest"]
    assert all(label.startswith("Local · ") for label in labels[:2])
    assert all(label.startswith("Cloud · ") for label in labels[2:])
    assert "openrouter:acme/painter" not in values  # makes images, not text
    gpt = labels[values.index("openrouter:openai/gpt-4o-mini")]
    assert gpt == "Cloud · OpenAI: GPT-4o-mini · $0.15/M in · $0.60/M out · 128K ctx · images"
    free = labels[values.index("openrouter:meta-llama/llama-3.2-3b-instruct:free")]
    assert free == "Cloud · Meta: Llama 3.2 3B Instruct (free) · free · 131K ctx"


@pytest.mark.parametrize("pricing, label", [
    ({"prompt": "0.000001", "completion": "0.000001", "request": "0.005"},
     "Cloud · Perplexity: Sonar · $1.00/M in · $1.00/M out · $0.005/request"),
    ({"prompt": "0", "completion": "0", "request": "0.0000625"},
     "Cloud · Perplexity: Sonar · free in · free out · $0.000063/request"),
    ({"prompt": "0.000001", "completion": "0.000001", "request": "0"},
     "Cloud · Perplexity: Sonar · $1.00/M in · $1.00/M out"),
])
def test_cloud_label_shows_a_per_request_price_where_the_catalog_has_one(pricing, label):
    sonar = CloudModel.from_openrouter(OpenRouterModel(
        "perplexity/sonar", "Perplexity: Sonar", None, ("text",), ("text",), pricing))
    assert cloud_label(sonar) == label


def test_cloud_label_says_when_the_price_is_unknown():
    unknown = CloudModel("a/b", "A: B", None, ("text",), ("text",), ModelPrices.unknown())
    assert cloud_label(unknown) == "Cloud · A: B · price unknown"


def test_cloud_model_reads_openrouter_prices_for_its_label(fake_openrouter, cloud):
    models = {m.id: m for m in Catalog(lister(fake_openrouter.url), cloud).models()}
    mini = models["openai/gpt-4o-mini"]
    assert mini.prices.image == Decimal("0.000217")
    assert mini.supports_images and not mini.is_free
    assert mini.label == "OpenAI: GPT-4o-mini · $0.15/M in, $0.60/M out · 128K ctx"
    free = models["meta-llama/llama-3.2-3b-instruct:free"]
    assert free.is_free and not free.supports_images
    assert "free" in free.label


def test_cloud_model_with_variable_prices_is_price_unknown():
    auto = CloudModel.from_openrouter(OpenRouterModel(
        "openrouter/auto", "Auto Router", None, ("text",), ("text",),
        {"prompt": "-1", "completion": "-1"}))
    assert auto.prices.prompt is None and not auto.is_free
    assert auto.label == "Auto Router · price unknown"


def test_catalog_doctests_pass():
    assert doctest.testmod(catalog_module).failed == 0
