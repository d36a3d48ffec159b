"""The Costs tab: spend per period with budget bars, charts, recent requests, CSV export,
OpenRouter credit, and local versus cloud.

Numbers come from ``services.accounting`` / ``services.budget`` (``studio.accounting``); the
functions here only turn them into component values. Tabs are lazy in Gradio 6, so the data
loads when the tab is selected (``render`` wires the enclosing tab's select event) or on
Refresh.
The module-level ``*_values`` functions are the handlers' bodies, testable without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr
import pandas as pd

from ..costs.accounting import (OWNER, PERIODS, SOURCES, CostsOverview, DaySpend, LocalVsCloud,
                                ModelSpend, SourceSpend, Spend, UsageFilter, UserSpend,
                                local_time)
from ..costs.budget import BudgetStatus
from ..costs.pricing import format_usd
from ..errors import StudioError
from .common import page_user, tab_opened, ui_errors

BACKEND_CHOICES = ["all", "ollama", "openrouter", "comfyui"]
SOURCE_CHOICES = [("All", "all"), *((label, key) for key, label in SOURCES.items())]
RECENT_HEADERS = ["Time", "User", "Use", "Backend", "Model", "Tokens in", "Tokens out",
                  "Seconds", "Cost", "Energy"]
RECENT_LIMIT = 100
CHART_DAYS = 30


@dataclass
class CostsTab:
    """What ``render`` returns: the refresh handler and its wiring, for ``ui/app.py``."""

    refresh: Any
    inputs: list
    outputs: list


# -- shaping values (no components) ----------------------------------------------------------


def format_energy(kwh) -> str:
    """Energy for people: kWh from 1 kWh up, Wh below.

    >>> format_energy(0), format_energy(0.0042), format_energy(0.147), format_energy(12.345)
    ('0 Wh', '4.2 Wh', '147 Wh', '12.35 kWh')
    """
    kwh = float(kwh)
    if kwh >= 1:
        return f"{kwh:.2f} kWh"
    wh = kwh * 1000
    return "0 Wh" if wh == 0 else f"{wh:.1f} Wh" if wh < 10 else f"{wh:.0f} Wh"


def summary_markdown(totals: dict[str, Spend]) -> str:
    """A small table: cloud bill, energy and replies for today / this week / this month."""
    periods = list(PERIODS)
    lines = ["| | " + " | ".join(PERIODS[p] for p in periods) + " |",
             "|---|" + "---:|" * len(periods)]

    def row(name: str, value) -> None:
        lines.append(f"| {name} | " + " | ".join(value(totals[p]) for p in periods) + " |")

    row("Cloud", lambda s: format_usd(s.cloud_usd, zero="$0"))
    row("Energy (local)", lambda s: f"{format_usd(s.energy_usd, zero='$0')} · "
                                    f"{format_energy(s.energy_kwh)}")
    row("Total", lambda s: f"**{format_usd(s.total_usd, zero='$0')}**")
    row("Requests", lambda s: str(s.requests))
    notes = []
    month = totals["month"]
    if month.estimated:
        notes.append(f"{month.estimated} cloud cost(s) this month are estimates from catalogue "
                     "prices.")
    if month.unknown_cost:
        notes.append(f"{month.unknown_cost} cloud request(s) this month have no known price and "
                     "are left out.")
    return "\n".join(lines) + ("\n\n" + " ".join(f"_{n}_" for n in notes) if notes else "")


def budget_html(status: BudgetStatus) -> str:
    """One bar per configured cap, marked at 80 % and 100 %, with the status sentence."""
    icon = {"ok": "", "warning": "⚠️ ", "exceeded": "⛔ "}[status.level]
    parts = [f"<div class='costs-budget costs-{status.level}'>"
             f"<p><strong>{icon}{escape(status.message)}</strong></p>"]
    for cap in status.caps:
        shown = min(cap.fraction, 1.0)
        reserved = (f", {escape(format_usd(cap.reserved))} reserved" if cap.reserved else "")
        parts.append(
            f"<div class='costs-cap costs-{cap.level}'>"
            f"<label>{escape(cap.label)}: {escape(format_usd(cap.spent, zero='$0'))} of "
            f"{escape(format_usd(cap.cap))}{reserved} ({cap.fraction:.0%})</label><br>"
            f"<meter min='0' max='1' low='0.8' high='0.99' optimum='0' value='{shown:.4f}' "
            f"style='width:100%'></meter></div>")
    parts.append("</div>")
    return "".join(parts)


def per_day_frame(per_day: list[DaySpend]) -> pd.DataFrame:
    """Long format for a stacked bar chart: day, kind (Cloud / Energy), usd."""
    rows = [(d.day, kind, float(value)) for d in per_day
            for kind, value in (("Cloud", d.spend.cloud_usd), ("Energy", d.spend.energy_usd))]
    return pd.DataFrame(rows, columns=["day", "kind", "usd"])


def per_model_frame(per_model: list[ModelSpend]) -> pd.DataFrame:
    """Long format: model (backend:model), kind (Cloud / Energy), usd; free rows left out."""
    rows = [(m.label, kind, float(value)) for m in per_model
            for kind, value in (("Cloud", m.spend.cloud_usd), ("Energy", m.spend.energy_usd))
            if value]
    return pd.DataFrame(rows, columns=["model", "kind", "usd"])


def per_user_frame(per_user: list[UserSpend]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u.user, u.spend.requests, format_usd(u.spend.cloud_usd, zero="$0"),
          format_usd(u.spend.energy_usd, zero="$0")) for u in per_user],
        columns=["User", "Requests", "Cloud", "Energy"])


def per_source_frame(per_source: list[SourceSpend]) -> pd.DataFrame:
    """Spend per use (Chat, Arena, Images, API) in the period."""
    return pd.DataFrame(
        [(s.label, s.spend.requests, format_usd(s.spend.cloud_usd, zero="$0"),
          format_usd(s.spend.energy_usd, zero="$0")) for s in per_source],
        columns=["Use", "Requests", "Cloud", "Energy"])


def use_text(record) -> str:
    """What a row was for: "Chat", "Arena", "Images", or "API chat · <key name>".

    >>> from types import SimpleNamespace as R
    >>> use_text(R(source="api", kind="image", via="api: laptop")), use_text(R(source="arena"))
    ('API image · laptop', 'Arena')
    """
    label = SOURCES.get(record.source, record.source)
    if record.source != "api":
        return label
    key = record.via.removeprefix("api:").strip()
    return f"{label} {record.kind}" + (f" · {key}" if key else "")


def recent_frame(records, tz) -> pd.DataFrame:
    """The recent-requests table; an estimated cost is marked with a leading ~ (a cut-off
    reply's, before the provider has said what it billed: "~asked of the provider")."""
    rows = []
    for r in records:
        cost = format_usd(r.cost_usd, zero="$0",
                          unknown="asked of the provider" if r.cost_is_estimate else "unknown")
        rows.append([local_time(r, tz), r.user, use_text(r), r.backend, r.model,
                     r.prompt_tokens, r.completion_tokens,
                     None if r.duration_s is None else round(r.duration_s, 1),
                     f"~{cost}" if r.cost_is_estimate else cost,
                     "" if r.energy_cost is None else format_usd(r.energy_cost, zero="$0")])
    return pd.DataFrame(rows, columns=RECENT_HEADERS)


def comparison_markdown(result: LocalVsCloud) -> str:
    """Local usage of the period priced on a cloud model, beside its energy cost."""
    period = PERIODS[result.period].lower()
    if not result.requests:
        return f"No local chat replies {period}, so there is nothing to compare."
    replies = "reply" if result.requests == 1 else "replies"
    head = (f"{period.capitalize()}: {result.requests} local {replies}, "
            f"{result.prompt_tokens:,} tokens in and {result.completion_tokens:,} out.")
    if result.cloud_usd is None:
        return (f"{head} No prices are known for `{result.model_id}`; pick a model from the "
                "list.")
    lines = [head, "",
             f"- On `{result.model_id}` they would have cost **{format_usd(result.cloud_usd)}**.",
             f"- Running them here used {format_energy(result.energy_kwh)}, about "
             f"**{format_usd(result.energy_usd, zero='$0')}** of electricity."]
    if result.without_tokens:
        lines.append(f"- {result.without_tokens} replies reported no token counts and are "
                     "left out of the cloud figure.")
    return "\n".join(lines)


def credit_markdown(openrouter) -> str:
    """OpenRouter key usage, limit and credit, or a sentence saying why there is none."""
    if openrouter is None or not getattr(openrouter, "has_key", True):
        return "**OpenRouter credit:** no key is set (OPENROUTER_API_KEY), so cloud models are off."
    try:
        key = openrouter.key_info()
    except StudioError as err:
        return f"**OpenRouter credit:** couldn't be read. {err}"
    limit = "no limit" if key.limit is None else format_usd(key.limit, zero="$0")
    lines = [f"**OpenRouter key** {escape(key.label) if key.label else ''}: "
             f"used {format_usd(key.usage, zero='$0')}, limit {limit}"
             + ("" if key.limit_remaining is None
                else f", {format_usd(key.limit_remaining, zero='$0')} remaining") + "."]
    try:
        credits = openrouter.credits()
    except StudioError as err:
        lines.append(f"Account credit couldn't be read. {err}")
    else:
        if credits.available:
            lines.append(f"Account credit: {format_usd(credits.total_credits, zero='$0')} bought, "
                         f"{format_usd(credits.total_usage, zero='$0')} used, "
                         f"**{format_usd(credits.remaining, zero='$0')} left**.")
        else:
            lines.append(credits.reason)
    return "  \n".join(lines)


# -- handler bodies --------------------------------------------------------------------------


def only_for(services, viewer: str) -> str | None:
    """Whose usage ``viewer`` sees: everyone's for an admin (None), else their own."""
    return None if services.access.is_admin(viewer) else viewer


def usage_filter(services, viewer: str, backend, model, user, start, end,
                 source="all") -> UsageFilter:
    """The filters as typed; a plain user's "user" is always themselves."""
    only = only_for(services, viewer)
    return UsageFilter.from_inputs(backend, model, only or user, start, end, source)


def overview_values(services, period: str, backend: str, model: str, user: str, start: str,
                    end: str, viewer: str = OWNER, source: str = "all") -> tuple:
    """(summary, budget, per-day plot, per-model plot, per-user table, recent table,
    per-use table). Raises ``InvalidInput`` for malformed filter dates."""
    filters = usage_filter(services, viewer, backend, model, user, start, end, source)
    data: CostsOverview = services.accounting.overview(period, filters, days=CHART_DAYS,
                                                       recent_limit=RECENT_LIMIT,
                                                       only=only_for(services, viewer))
    tz = services.accounting.local_tz()
    return (summary_markdown(data.totals), budget_html(services.budget.budget_status(viewer)),
            per_day_frame(data.per_day), per_model_frame(data.per_model),
            per_user_frame(data.per_user), recent_frame(data.recent, tz),
            per_source_frame(data.per_source))


def recent_values(services, backend: str, model: str, user: str, start: str,
                  end: str, viewer: str = OWNER, source: str = "all") -> pd.DataFrame:
    filters = usage_filter(services, viewer, backend, model, user, start, end, source)
    return recent_frame(services.accounting.recent(filters, limit=RECENT_LIMIT),
                        services.accounting.local_tz())


def export_values(services, backend: str, model: str, user: str, start: str, end: str,
                  viewer: str = OWNER, source: str = "all") -> str:
    """Write the filtered rows to a CSV in the viewer's exports folder (the file route gives
    it to them alone); return its path."""
    filters = usage_filter(services, viewer, backend, model, user, start, end, source)
    return str(services.accounting.export_csv(
        filters, directory=services.exports_dir / viewer))


def catalog_choices(catalog) -> list[tuple[str, str]]:
    """(label, id) of the priced cloud models in ``catalog`` (``studio.catalog.Catalog``:
    ``models()`` and ``prices(id)``); [] when there is none or it can't be had."""
    if catalog is None:
        return []
    try:
        models = catalog.models()
    except StudioError:
        return []
    return [(m.label, m.id) for m in models if m.prices.is_known and not m.is_free]


def comparison_values(services, catalog, period: str, model_id: str | None,
                      viewer: str = OWNER) -> str:
    model_id = (model_id or "").strip()
    if not model_id:
        return "Pick a cloud model (or type its id) to compare local usage with."
    if catalog is None:
        return ("Cloud prices come from OpenRouter's model list, which isn't available "
                "(no OpenRouter key set in OPENROUTER_API_KEY?).")
    result = services.accounting.local_vs_cloud(period, model_id, catalog.prices(model_id),
                                                user=only_for(services, viewer))
    return comparison_markdown(result)


# -- the tab ---------------------------------------------------------------------------------


def render(services, tab: gr.Tab | None = None) -> CostsTab:
    """Build the tab's components. Its data loads when ``tab`` is selected (by default the
    ``gr.Tab`` this is called inside, if any) and on Refresh."""
    opened = tab_opened(tab) or []
    catalog = services.catalog  # studio.costs.catalog.Catalog, or None without a key
    with gr.Row():
        period = gr.Radio([(label, key) for key, label in PERIODS.items()], value="month",
                          label="Period (per model, per user, local vs cloud)", scale=4)
        refresh_button = gr.Button("Refresh", scale=1, elem_id="costs-refresh")
    with gr.Row():
        summary = gr.Markdown(elem_id="costs-summary")
        budget = gr.HTML(elem_id="costs-budget")
    with gr.Row():
        per_day_plot = gr.BarPlot(x="day", y="usd", color="kind", x_label_angle=-45,
                                  title=f"Spend per day (last {CHART_DAYS} days)",
                                  y_title="USD", elem_id="costs-per-day")
        per_model_plot = gr.BarPlot(x="model", y="usd", color="kind", title="Spend per model",
                                    y_title="USD", sort="-y", x_label_angle=-30,
                                    elem_id="costs-per-model")
    with gr.Row():
        per_source_table = gr.Dataframe(label="Per use (chat, arena, images, API)",
                                        interactive=False, elem_id="costs-per-source")
        per_user_table = gr.Dataframe(label="Per user", interactive=False,
                                      elem_id="costs-per-user")
    with gr.Accordion("Recent requests", open=True):
        with gr.Row():
            source = gr.Dropdown(SOURCE_CHOICES, value="all", label="Use",
                                 elem_id="costs-source")
            backend = gr.Dropdown(BACKEND_CHOICES, value="all", label="Backend")
            model = gr.Textbox(label="Model contains", placeholder="gpt-4o")
            user = gr.Textbox(label="User", placeholder="owner")
            start = gr.Textbox(label="From", placeholder="YYYY-MM-DD")
            end = gr.Textbox(label="To", placeholder="YYYY-MM-DD")
        with gr.Row():
            filter_button = gr.Button("Apply filters")
            export_button = gr.Button("Export CSV")
        recent_table = gr.Dataframe(headers=RECENT_HEADERS, interactive=False, wrap=True,
                                    elem_id="costs-recent")
        csv_file = gr.File(label="CSV export", interactive=False, visible=False,
                           elem_id="costs-csv")
    credit = gr.Markdown(elem_id="costs-credit")
    with gr.Accordion("Local versus cloud", open=True):
        with gr.Row():
            cloud_model = gr.Dropdown([], label="Cloud model", allow_custom_value=True,
                                      filterable=True, scale=4)
            compare_button = gr.Button("Compare", scale=1)
        comparison = gr.Markdown(elem_id="costs-comparison")

    filter_inputs = [backend, model, user, start, end, source]

    @ui_errors
    def on_refresh(period_value, backend_value, model_value, user_value, start_value,
                   end_value, source_value="all", request: gr.Request = None):
        return overview_values(services, period_value, backend_value, model_value,
                               user_value, start_value, end_value, page_user(request),
                               source=source_value)

    @ui_errors
    def on_filter(backend_value, model_value, user_value, start_value, end_value,
                  source_value="all", request: gr.Request = None):
        return recent_values(services, backend_value, model_value, user_value, start_value,
                             end_value, page_user(request), source=source_value)

    @ui_errors
    def on_export(backend_value, model_value, user_value, start_value, end_value,
                  source_value="all", request: gr.Request = None):
        path = export_values(services, backend_value, model_value, user_value, start_value,
                             end_value, page_user(request), source=source_value)
        return gr.update(value=path, visible=True)

    def on_credit(request: gr.Request = None):
        """OpenRouter's credit is the owner's account: admins only see it."""
        if not services.access.is_admin(page_user(request)):
            return ""
        return credit_markdown(services.openrouter)

    def on_catalog(current):
        choices = catalog_choices(catalog)
        return gr.update(choices=choices, value=current)

    @ui_errors
    def on_compare(period_value, model_id, request: gr.Request = None):
        return comparison_values(services, catalog, period_value, model_id, page_user(request))

    outputs = [summary, budget, per_day_plot, per_model_plot, per_user_table, recent_table,
               per_source_table]
    inputs = [period, *filter_inputs]
    private = dict(api_visibility="private")
    opened = [refresh_button.click, *opened]
    gr.on([*opened, period.change], on_refresh, inputs, outputs, concurrency_limit=None,
          concurrency_id="costs-refresh", **private)
    # Apart from the database figures: the network may be slow or away.
    gr.on(opened, on_credit, None, credit, concurrency_limit=None,
          concurrency_id="costs-credit", **private)
    gr.on(opened, on_catalog, cloud_model, cloud_model, concurrency_limit=None,
          concurrency_id="costs-catalog", **private)
    gr.on([compare_button.click, cloud_model.change, period.change], on_compare,
          [period, cloud_model], comparison, concurrency_id="costs-compare", **private)
    filter_button.click(on_filter, filter_inputs, recent_table, concurrency_id="costs-filter",
                        **private)
    export_button.click(on_export, filter_inputs, csv_file, concurrency_id="costs-export",
                        **private)
    return CostsTab(refresh=on_refresh, inputs=inputs, outputs=outputs)
