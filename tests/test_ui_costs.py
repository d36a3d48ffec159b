import doctest
import csv
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import gradio as gr
import pytest

from studio.costs.accounting import Accounting, Spend
from studio.costs.budget import Budget, BudgetStatus
from studio.costs.catalog import CloudModel
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.errors import InvalidInput, StudioError
from studio.events import Usage
from studio.store.usage import UsageStore
from studio.ui import costs
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

TZ = timezone(timedelta(hours=1))
NO_FILTERS = ("all", "", "", "", "")


@pytest.fixture
def services(store, tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), budget_daily_usd=1.0,
                        energy_price_kwh=0.30)
    clock = lambda: datetime(2025, 3, 14, 12, 0, tzinfo=TZ)  # noqa: E731
    accounting = Accounting(UsageStore(store), settings, power_reader=lambda: 300.0,
                            clock=clock)
    accounting.record_chat("owner", "ollama", "llama3.2", Usage(prompt_tokens=1_000_000,
                                                                completion_tokens=500_000), 60.0)
    accounting.record_chat("owner", "openrouter", "openai/gpt-4o-mini",
                           Usage(prompt_tokens=10, completion_tokens=20, cost_usd=0.85), 2.0)
    return SimpleNamespace(store=store, settings=settings, accounting=accounting,
                           budget=Budget(UsageStore(store), settings, clock=clock), openrouter=None,
                           catalog=None, exports_dir=tmp_path / "data" / "exports",
                           access=SimpleNamespace(is_admin=lambda name: name == "owner"))


def client(fake):
    return OpenRouterClient(DEFAULT_KEY, fake.url, timeout=5)


class ListCatalog:
    """The two methods of studio.catalog.Catalog the tab uses, over a client, uncached."""

    def __init__(self, list_models):
        self.list_models = list_models

    def models(self):
        return [CloudModel.from_openrouter(m) for m in self.list_models()]

    def prices(self, model_id):
        try:
            found = [m for m in self.models() if m.id == model_id.removeprefix("openrouter:")]
        except StudioError:
            return None
        return found[0].prices if found else None


# -- building --------------------------------------------------------------------------------


def test_ui_costs_builds_inside_blocks(services):
    with gr.Blocks() as demo:
        with gr.Tab("Costs") as tab:
            parts = costs.render(services)

    assert len(parts.outputs) == 7 and len(parts.inputs) == 7
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"costs-summary", "costs-budget", "costs-per-day", "costs-per-model",
            "costs-recent", "costs-credit", "costs-comparison", "costs-per-source",
            "costs-source"} <= ids
    fns = [fn.name for fn in demo.fns.values()]
    assert fns.count("on_refresh") == 1 and "on_export" in fns
    on_select = {fn.name for fn in demo.fns.values()
                 if any(target[0] == tab._id and target[1] == "select" for target in fn.targets)}
    assert on_select == {"on_refresh", "on_credit", "on_catalog"}


def test_ui_costs_outside_a_tab_loads_on_refresh_only(services):
    with gr.Blocks() as demo:
        costs.render(services)

    assert not any(target[1] == "select" for fn in demo.fns.values() for target in fn.targets)


def test_ui_costs_refresh_handler_turns_bad_dates_into_a_gradio_error(services):
    with gr.Blocks():
        parts = costs.render(services)

    with pytest.raises(gr.Error, match="isn't a date"):
        parts.refresh("month", "all", "", "", "last week", "")


# -- handler bodies --------------------------------------------------------------------------


def test_ui_costs_overview_values(services):
    summary, budget, per_day, per_model, per_user, recent, per_source = costs.overview_values(
        services, "month", *NO_FILTERS)

    assert "| Cloud | $0.85 | $0.85 | $0.85 |" in summary
    assert "⚠️" in budget and "85% used" in budget and "<meter" in budget
    assert list(per_day.columns) == ["day", "kind", "usd"]
    assert len(per_day) == 2 * costs.CHART_DAYS
    assert per_day.iloc[-2:].values.tolist() == [["2025-03-14", "Cloud", 0.85],
                                                 ["2025-03-14", "Energy", 0.0015]]
    assert per_model.values.tolist() == [["openrouter:openai/gpt-4o-mini", "Cloud", 0.85],
                                         ["ollama:llama3.2", "Energy", 0.0015]]
    assert per_user.values.tolist() == [["owner", 2, "$0.85", "$0.0015"]]
    assert list(recent.columns) == costs.RECENT_HEADERS
    assert recent["Model"].tolist() == ["openai/gpt-4o-mini", "llama3.2"]
    assert recent["Time"].tolist()[0] == "2025-03-14 12:00:00"
    assert recent["Use"].tolist() == ["Chat", "Chat"]
    assert per_source.values.tolist() == [["Chat", 2, "$0.85", "$0.0015"]]


def test_ui_costs_tells_chat_arena_images_and_api_apart_and_filters_by_use(services):
    accounting = services.accounting
    accounting.record_chat("owner", "openrouter", "openai/gpt-4o-mini",
                           Usage(cost_usd=0.02), 1.0, source="arena")
    accounting.record_chat("owner", "openrouter", "openai/gpt-4o-mini",
                           Usage(cost_usd=0.01), 1.0, via="api: laptop")
    accounting.record_image("owner", "comfyui", "sdxl", 4.0)

    *_, recent, per_source = costs.overview_values(services, "month", *NO_FILTERS)
    assert recent["Use"].tolist()[:3] == ["Images", "API chat · laptop", "Arena"]
    assert per_source["Use"].tolist() == ["Chat", "Arena", "API", "Images"]
    arena = costs.recent_values(services, *NO_FILTERS, source="arena")
    assert arena["Use"].tolist() == ["Arena"] and arena["Cost"].tolist() == ["$0.02"]
    *_, only_api, _ = costs.overview_values(services, "month", *NO_FILTERS, source="api")
    assert only_api["Use"].tolist() == ["API chat · laptop"]
    path = costs.export_values(services, *NO_FILTERS, source="images")
    assert open(path).read().strip().endswith(",images")


def test_ui_costs_recent_values_filters(services):
    table = costs.recent_values(services, "ollama", "", "", "2025-03-01", "2025-03-31")

    assert table["Model"].tolist() == ["llama3.2"]
    assert table["Energy"].tolist() == ["$0.0015"]


def test_ui_costs_recent_marks_estimated_costs(services):
    services.accounting.record_chat("owner", "openrouter", "x/y",
                                    Usage(cost_usd=0.01, cost_is_estimate=True))

    assert costs.recent_values(services, *NO_FILTERS)["Cost"].tolist()[0] == "~$0.01"


def test_ui_costs_export_values_writes_a_csv_in_the_data_dir(services):
    path = costs.export_values(services, "openrouter", "", "", "", "")

    assert path.startswith(str(services.settings.data_path))
    with open(path, newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["openai/gpt-4o-mini"]


def test_ui_costs_export_rejects_bad_dates(services):
    with pytest.raises(InvalidInput):
        costs.export_values(services, "all", "", "", "2025-13-01", "")


def test_ui_costs_summary_notes_estimates_and_unknown_prices():
    month = Spend(requests=3, cloud_usd=Decimal("0.1"), estimated=1, unknown_cost=2)
    text = costs.summary_markdown({"today": Spend(), "week": Spend(), "month": month})

    assert "| Cloud | $0 | $0 | $0.10 |" in text
    assert "1 cloud cost(s) this month are estimates" in text
    assert "2 cloud request(s) this month have no known price" in text


def test_ui_costs_budget_html_without_caps():
    status = BudgetStatus(level="ok", message="No cloud budget caps are set.",
                          spent=Decimal(0), cap=None)

    assert costs.budget_html(status) == ("<div class='costs-budget costs-ok'><p><strong>No "
                                         "cloud budget caps are set.</strong></p></div>")


# -- OpenRouter credit -----------------------------------------------------------------------


def test_ui_costs_credit_without_a_key():
    assert "no key is set (OPENROUTER_API_KEY)" in costs.credit_markdown(None)
    assert "no key is set" in costs.credit_markdown(OpenRouterClient("", "http://127.0.0.1:9"))


def test_ui_costs_credit_shows_key_usage_and_limit(fake_openrouter):
    text = costs.credit_markdown(client(fake_openrouter))

    assert "used $2.50, limit $10.00, $7.50 remaining" in text
    assert "management keys" in text  # /credits answers 403 to ordinary keys


def test_ui_costs_credit_with_a_management_key():
    with FakeOpenRouter(management_key=True) as fake:
        text = costs.credit_markdown(client(fake))

    assert "$100.50 bought, $25.75 used, **$74.75 left**" in text


def test_ui_costs_credit_when_openrouter_is_unreachable(fake_openrouter):
    fake_openrouter.fail_next("/key", 503)

    text = costs.credit_markdown(client(fake_openrouter))

    assert text.startswith("**OpenRouter credit:** couldn't be read. OpenRouter's provider failed")


# -- local versus cloud ----------------------------------------------------------------------


def test_ui_costs_catalog_choices_lists_priced_models(fake_openrouter):
    catalog = ListCatalog(client(fake_openrouter).list_models)

    assert [value for _, value in costs.catalog_choices(catalog)] == [
        "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"]
    assert costs.catalog_choices(None) == []


def test_ui_costs_catalog_choices_when_unreachable(fake_openrouter):
    fake_openrouter.fail_next("/models", 502)

    assert costs.catalog_choices(ListCatalog(client(fake_openrouter).list_models)) == []


def test_ui_costs_comparison_prices_local_usage(services, fake_openrouter):
    catalog = ListCatalog(client(fake_openrouter).list_models)

    text = costs.comparison_values(services, catalog, "month", "openai/gpt-4o-mini")

    assert "1 local reply, 1,000,000 tokens in and 500,000 out" in text
    assert "would have cost **$0.45**" in text
    assert "5.0 Wh, about **$0.0015**" in text


@pytest.mark.parametrize("model_id, expected", [
    ("", "Pick a cloud model"),
    ("someone/unlisted", "No prices are known for `someone/unlisted`"),
])
def test_ui_costs_comparison_messages(services, fake_openrouter, model_id, expected):
    catalog = ListCatalog(client(fake_openrouter).list_models)

    assert expected in costs.comparison_values(services, catalog, "month", model_id)


def test_ui_costs_comparison_without_catalog(services):
    assert "model list, which isn't available" in costs.comparison_values(
        services, None, "month", "a/b")


def test_ui_costs_doctests_pass():
    assert doctest.testmod(costs).failed == 0


def test_ui_costs_a_plain_user_sees_only_their_own_usage(services):
    services.accounting.record_chat("bob", "openrouter", "openai/gpt-4o-mini",
                                    Usage(prompt_tokens=1, completion_tokens=2, cost_usd=0.05), 1.0)
    *_, per_user, recent, _ = costs.overview_values(services, "month", *NO_FILTERS,
                                                    viewer="bob")
    assert set(recent["User"]) == {"bob"} and per_user["User"].tolist() == ["bob"]
    # Asking for someone else's rows by name still gives only one's own.
    assert set(costs.recent_values(services, "", "", "owner", "", "", viewer="bob")["User"]) \
        == {"bob"}
    path = costs.export_values(services, "", "", "owner", "", "", viewer="bob")
    assert "/exports/bob/" in path and "owner" not in open(path).read()
    *_, admin_per_user, admin_recent, _ = costs.overview_values(services, "month", *NO_FILTERS,
                                                                viewer="owner")
    assert set(admin_recent["User"]) == {"owner", "bob"}
