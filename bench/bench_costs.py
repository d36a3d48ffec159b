"""Benchmark: loading the Costs tab's data from a database with 100,000 usage rows.

Run from the repository root:  ``python bench/bench_costs.py``  (about 10 s; ``--rows N``
and ``--runs N`` to change the size and the number of timed runs). It prints a table with
the median and the spread, and the target. It never asserts timings.

What is timed is what the tab runs when it is opened (``studio.ui.costs``): the refresh
handler's body (spend today / week / month, budget status against daily and monthly caps,
spend per day for 30 days, per model and per user for the month, the newest 100 rows,
all turned into the DataFrames and Markdown the components get) plus local versus cloud
for one model (prices from an in-memory catalogue). OpenRouter's key/credit lookup is a
network call, made by a separate listener, and is not part of the figure. The figures of
single queries, of one ``Budget.reserve`` / ``reserve_reply`` (run before every cloud
request; the latter also works out the reply's ``max_tokens`` under the caps) and of a CSV
export of the month are printed beside it.

The database is a real file (WAL, as ``Store.open`` makes it) in a temporary folder:
``--rows`` rows spread over the last 365 days, about half local (Ollama, ComfyUI) and half
cloud, four users. The first run is shown apart (cold caches); the median covers the rest.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.costs.accounting import Accounting, UsageFilter  # noqa: E402
from studio.costs.budget import Budget  # noqa: E402
from studio.costs.pricing import ReplyCost  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.costs.pricing import ModelPrices  # noqa: E402
from studio.store.db import Store  # noqa: E402
from studio.store.usage import UsageStore  # noqa: E402
from studio.ui import costs as costs_tab  # noqa: E402

TARGET_MS = 300
CLOUD_MODELS = [("openai/gpt-4o-mini", 0.15, 0.60), ("anthropic/claude-3.5-sonnet", 3.0, 15.0),
                ("meta-llama/llama-3.3-70b-instruct", 0.12, 0.30)]
LOCAL_MODELS = ["llama3.2:3b", "qwen2.5:14b", "gemma3:12b"]
USERS = ["owner", "owner", "owner", "alice", "bob", "carol"]


def build_rows(count: int, now: datetime, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        moment = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
        utc = moment.astimezone(timezone.utc)
        row = {"created_at": utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z",
               "day": moment.date().isoformat(), "user": rng.choice(USERS), "kind": "chat",
               "cost_is_estimate": 0, "conversation_id": f"{rng.getrandbits(128):032x}",
               "message_id": rng.randint(1, 10**6)}
        roll = rng.random()
        if roll < 0.05:
            seconds = rng.uniform(3, 40)
            row.update(backend="comfyui", model="sdxl_base", kind="image", images=4,
                       duration_s=seconds, cost_usd=0.0, energy_kwh=300 * seconds / 3.6e6,
                       energy_cost=0.3 * 300 * seconds / 3.6e6, gpu_watts=300.0,
                       conversation_id=None, message_id=None, job_id=f"job-{rng.getrandbits(32)}")
        elif roll < 0.5:
            seconds = rng.uniform(0.5, 60)
            row.update(backend="ollama", model=rng.choice(LOCAL_MODELS),
                       prompt_tokens=rng.randint(20, 8000), completion_tokens=rng.randint(5, 2000),
                       duration_s=seconds, cost_usd=0.0, energy_kwh=250 * seconds / 3.6e6,
                       energy_cost=0.3 * 250 * seconds / 3.6e6, gpu_watts=250.0)
        else:
            model, prompt_price, completion_price = rng.choice(CLOUD_MODELS)
            prompt, completion = rng.randint(20, 8000), rng.randint(5, 2000)
            row.update(backend="openrouter", model=model, prompt_tokens=prompt,
                       completion_tokens=completion, duration_s=rng.uniform(0.5, 30),
                       cost_usd=(prompt * prompt_price + completion * completion_price) / 1e6,
                       cost_is_estimate=int(rng.random() < 0.1))
        rows.append(row)
    rows.sort(key=lambda r: r["created_at"])  # ids follow time, as when recorded live
    return rows


def timed(fn, runs: int) -> tuple[float, list[float]]:
    """(first run in ms, the other runs in ms)."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp:
        settings = Settings(data_dir=tmp, budget_daily_usd=5.0, budget_monthly_usd=100.0,
                            budget_user_daily_usd=2.0, budget_user_monthly_usd=50.0)
        store = Store.open(settings.db_path)
        now = datetime.now().astimezone()
        started = time.perf_counter()
        store.db["usage"].insert_all(build_rows(args.rows, now), batch_size=5000)
        built_s = time.perf_counter() - started
        size_mb = settings.db_path.stat().st_size / 2**20

        ledger = UsageStore(store)
        accounting = Accounting(ledger, settings, power_reader=lambda: None)
        budget = Budget(ledger, settings)
        prices = {m: ModelPrices.per_million(p, c) for m, p, c in CLOUD_MODELS}
        # Stands in for studio.catalog.Catalog with its list already cached.
        models = [SimpleNamespace(id=m, prices=p, is_free=False, label=m)
                  for m, p in prices.items()]
        catalog = SimpleNamespace(models=lambda: models,
                                  prices=lambda model_id: prices.get(model_id))
        # The owner's view (an admin sees everyone's usage), as the tab opens for them.
        services = SimpleNamespace(store=store, settings=settings, accounting=accounting,
                                   budget=budget, openrouter=None, catalog=catalog,
                                   access=SimpleNamespace(is_admin=lambda name: True))
        no_filters = ("all", "", "", "", "")

        def open_tab():
            costs_tab.overview_values(services, "month", *no_filters)
            costs_tab.comparison_values(services, catalog, "month", "openai/gpt-4o-mini")
            costs_tab.catalog_choices(catalog)

        def reserve_and_release():
            budget.release(budget.reserve("owner", "openrouter:openai/gpt-4o-mini", None))

        reply = ReplyCost.of(prices["openai/gpt-4o-mini"], 500, 1024)

        def reserve_reply_and_release():
            budget.release(budget.reserve_reply("owner", "openrouter:openai/gpt-4o-mini", reply))

        month_start = now.date().replace(day=1).isoformat()
        cases = [
            ("Costs tab open (all queries + shaping)", open_tab),
            ("  spend today/week/month (1 query)", accounting.spend_summary),
            ("  budget status, 4 caps", lambda: budget.budget_status("owner")),
            ("  spend per day, 30 days", lambda: accounting.spend_per_day(30)),
            ("  spend per model, month", lambda: accounting.spend_per_model("month")),
            ("  spend per user, month", lambda: accounting.spend_per_user("month")),
            ("  newest 100 rows", lambda: accounting.recent(limit=100)),
            ("  local vs cloud, month", lambda: accounting.local_vs_cloud(
                "month", "openai/gpt-4o-mini", prices["openai/gpt-4o-mini"])),
            ("  spend per use, month", lambda: accounting.spend_per_source("month")),
            ("Budget.reserve + release (per cloud request)", reserve_and_release),
            ("Budget.reserve_reply + release (per cloud chat)", reserve_reply_and_release),
            ("Recent rows filtered (openrouter, 'gpt', owner)", lambda: accounting.recent(
                UsageFilter(backend="openrouter", model="gpt", user="owner"))),
            ("CSV export of this month", lambda: accounting.export_csv(
                UsageFilter(start_day=month_start), directory=Path(tmp) / "exports")),
        ]
        print(f"bench_costs: {args.rows:,} usage rows over 365 days "
              f"({size_mb:.1f} MB file, built in {built_s:.1f} s); "
              f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
        print(f"median of {args.runs} runs after one first run; target for opening the tab: "
              f"under {TARGET_MS} ms\n")
        print(f"{'what':<50} {'first ms':>9} {'median ms':>10} {'min':>7} {'max':>7}")
        for name, fn in cases:
            first, rest = timed(fn, args.runs)
            print(f"{name:<50} {first:9.1f} {statistics.median(rest):10.1f} "
                  f"{min(rest):7.1f} {max(rest):7.1f}")
        _, rest = timed(open_tab, args.runs)
        verdict = "within" if statistics.median(rest) < TARGET_MS else "OVER"
        print(f"\nCosts tab open: median {statistics.median(rest):.1f} ms, {verdict} the "
              f"{TARGET_MS} ms target.")
        store.close()


if __name__ == "__main__":
    main()
