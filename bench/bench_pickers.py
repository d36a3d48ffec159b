"""Benchmark: what filling the Chat and Arena model pickers costs per page load and per
check, against the fake Ollama (in this process, on 127.0.0.1) with N installed models.

Run from the repository root:  ``python bench/bench_pickers.py``  (a few seconds;
``--models N`` and ``--runs N`` to change the size and the number of timed runs). It prints
medians and spreads, never asserts timings.

Rows:
- baseline: what a page load did before issue 14 (``ollama.list_models()``, one /api/tags,
  no capabilities, so embedding models were offered);
- naive: the same plus one /api/show per model on every load (capabilities without a cache);
- picker, cold: ``ChatModels.picker()`` the first time ever (/api/tags + one /api/show per
  model; after a restart the saved capabilities spare the /api/show calls);
- picker, Ollama asked again (a pull, the TTL ran out): /api/tags, capabilities from the
  digest cache;
- picker, within the TTL (every other page load, and each check of the status tick):
  no request at all;
- version check (each page's status tick): ``ChatModels.version()`` within the TTL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.chat.models import ChatModels  # noqa: E402
from studio.clients.ollama import OllamaClient  # noqa: E402
from studio.models.local import LocalModels  # noqa: E402
from studio.store.db import Store  # noqa: E402
from studio.store.models import ModelsStore  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def row(name: str, times: list[float], requests: float) -> str:
    return (f"| {name} | {statistics.median(times):.2f} | {min(times):.2f}–{max(times):.2f} "
            f"| {requests:g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    fake = FakeOllama().start()
    for i in range(args.models):
        caps = ("embedding",) if i % 5 == 4 else ("completion",)
        fake.add_model(f"model{i:02d}", capabilities=caps)
    client = OllamaClient(fake.url, timeout=10)
    store = Store.memory()
    try:
        def count(fn) -> float:
            before = len(fake.requests)
            fn()
            return len(fake.requests) - before

        def naive():
            for m in client.list_models():
                client.capabilities(m.name)

        def cold():  # nothing known yet: not even the saved capabilities
            ChatModels(client, None, LocalModels(client)).picker()

        warm_local = LocalModels(client, ModelsStore(store))
        warm = ChatModels(client, None, warm_local)
        warm.picker()

        def asked_again():
            warm_local.invalidate()
            warm.picker()

        figures = [("baseline: list_models() per load", client.list_models),
                   ("naive: + /api/show per model per load", naive),
                   ("picker, first ever (nothing saved yet)", cold),
                   ("picker, Ollama asked again (pull / TTL out)", asked_again),
                   ("picker, within the 10 s TTL", warm.picker),
                   ("version check (status tick)", warm.version)]
        print(f"{args.models} models ({args.models // 5} embedding), {args.runs} runs each, "
              "fake Ollama on 127.0.0.1\n")
        print("| what | median ms | min–max ms | requests to Ollama |")
        print("|---|---|---|---|")
        for name, fn in figures:
            requests = count(fn)
            print(row(name, timed(fn, args.runs), requests))
    finally:
        client.close()
        store.close()
        fake.stop()


if __name__ == "__main__":
    main()
