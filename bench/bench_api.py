"""Benchmark: what the studio's API adds on the way to a model, beside the model itself.

Run from the repository root:  ``.venv/bin/python bench/bench_api.py``  (about 2 minutes on
a 2-core box; ``--quick`` about 1). Prints a table; it never asserts timings.

The same fake Ollama (tests/fakes/ollama_server.py, in its own process so its CPU is not
counted, steered over stdin as in bench_chat.py) answers three ways, one run, alternating:

* direct: the official ``ollama`` client straight at the fake (the baseline: no proxy);
* ``/v1``: the official ``openai`` client at the studio's ``/v1/chat/completions``;
* ``/api/chat``: the official ``ollama`` client at the studio's Ollama-compatible route.

The studio is ``python app.py`` in its own process (sign-in on: a user and an API key in a
fresh data folder), so its CPU is measured alone (psutil, the process and its children).

Figures, each the median of several runs:

* time to first token (request sent -> first piece of text), for a reply of 100 tokens
  whose first token comes 20 ms late (a model reading its prompt), 5 ms apart after that;
  "added" = through the studio minus direct; target ≤ 3 ms (LiteLLM's published proxy
  overhead is about 3 ms);
* the studio's CPU seconds per 1,000 streamed tokens: at full speed (1,000 tokens as fast
  as the fake writes them) and at a model's pace (200 tokens at 20 ms: 50 tokens/s);
* 50 streams at once (100 tokens at 10 ms each, asyncio clients): p50 and p95 time to first
  token, direct and through each route, and that every stream got all its text.

Everything binds 127.0.0.1; children are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_chat import (MODEL, App, FakeProcess, free_port, log,  # noqa: E402
                        machine)

STUDIO_MODEL = f"ollama:{MODEL}"
TARGET_TTFT_ADDED_MS = 3.0
MESSAGES = [{"role": "user", "content": "hi"}]


class Studio(App):
    """``python app.py`` with sign-in on; ready when /api/version answers."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/version"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_studio(fake_url: str, data_dir: str) -> tuple[Studio, str]:
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.store.db import Store

    store = Store.open(os.path.join(data_dir, "studio.db"))
    Users(store).add("bench", "bench-password-1", admin=True)
    _, key = ApiKeys(store).create("bench", "bench")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "STUDIO_"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", OLLAMA_HOST=fake_url, STUDIO_DATA_DIR=data_dir,
               OPENROUTER_API_KEY="", STUDIO_LOG_LEVEL="WARNING",
               COMFYUI_URL=f"http://127.0.0.1:{free_port()}")  # a closed port
    return Studio("studio", [sys.executable, "app.py"], env), key


# -- one stream, three ways ------------------------------------------------------------------

def stream_direct(client) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, got = None, 0
    for part in client.chat(model=MODEL, messages=MESSAGES, stream=True):
        if part.message.content:
            got += 1
            first = first or time.perf_counter()
    return (first - t0) * 1000, got


def stream_v1(client) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, text = None, ""
    for chunk in client.chat.completions.create(model=STUDIO_MODEL, messages=MESSAGES,
                                                stream=True):
        piece = "".join(c.delta.content or "" for c in chunk.choices)
        if piece:
            text += piece
            first = first or time.perf_counter()
    return (first - t0) * 1000, len(text.split())


def stream_api_chat(client) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, text = None, ""
    for part in client.chat(model=STUDIO_MODEL, messages=MESSAGES, stream=True):
        if part.message.content:
            text += part.message.content
            first = first or time.perf_counter()
    return (first - t0) * 1000, len(text.split())


def bench_ttft(fake, paths, runs: int) -> dict[str, float]:
    ttft = {name: [] for name in paths}
    for _ in range(runs):
        for name, (fn, client) in paths.items():
            fake.queue(100, 0.005, 0.020)
            ms, got = fn(client)
            if got != 100:
                raise RuntimeError(f"{name}: got {got} of 100 tokens")
            ttft[name].append(ms)
    return {name: statistics.median(values) for name, values in ttft.items()}


def idle_rate(studio: Studio, seconds: float = 3.0) -> float:
    """The studio's CPU seconds per second with nothing to do (Gradio's own housekeeping)."""
    before, t0 = studio.cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (studio.cpu_s() - before) / (time.perf_counter() - t0)


def bench_cpu(fake, studio: Studio, paths, runs: int, n: int, delay: float, idle: float
              ) -> dict[str, tuple[float, float]]:
    """The studio's CPU seconds per 1,000 tokens through each of its routes: as measured,
    and above what it burns idle over the same time."""
    cpu = {name: [] for name in paths}
    for _ in range(runs):
        for name, (fn, client) in paths.items():
            fake.queue(n, delay, delay)
            before, t0 = studio.cpu_s(), time.perf_counter()
            _, got = fn(client)
            time.sleep(0.05)  # the reply's accounting and store write finish after the last byte
            if got != n:
                raise RuntimeError(f"{name}: got {got} of {n} tokens")
            used = studio.cpu_s() - before
            net = used - idle * (time.perf_counter() - t0)
            cpu[name].append((used / n * 1000, net / n * 1000))
    return {name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
            for name, values in cpu.items()}


# -- fifty at once -------------------------------------------------------------------------------

async def fifty(kind: str, fake_url: str, studio: Studio, key: str, n: int = 50
                ) -> tuple[list[float], int]:
    import ollama
    import openai

    async def one_openai(client) -> tuple[float, int]:
        t0 = time.perf_counter()
        first, text = None, ""
        stream = await client.chat.completions.create(model=STUDIO_MODEL, messages=MESSAGES,
                                                      stream=True)
        async for chunk in stream:
            piece = "".join(c.delta.content or "" for c in chunk.choices)
            if piece:
                text += piece
                first = first or time.perf_counter()
        return (first - t0) * 1000, len(text.split())

    async def one_ollama(client, model) -> tuple[float, int]:
        t0 = time.perf_counter()
        first, text = None, ""
        async for part in await client.chat(model=model, messages=MESSAGES, stream=True):
            if part.message.content:
                text += part.message.content
                first = first or time.perf_counter()
        return (first - t0) * 1000, len(text.split())

    if kind == "/v1":
        client = openai.AsyncOpenAI(base_url=studio.base + "/v1", api_key=key, timeout=120,
                                    max_retries=0)
        runs = [one_openai(client) for _ in range(n)]
    elif kind == "/api/chat":
        client = ollama.AsyncClient(host=studio.base, headers={"Authorization": f"Bearer {key}"},
                                    timeout=120)
        runs = [one_ollama(client, STUDIO_MODEL) for _ in range(n)]
    else:
        client = ollama.AsyncClient(host=fake_url, timeout=120)
        runs = [one_ollama(client, MODEL) for _ in range(n)]
    results = await asyncio.gather(*runs)
    return [ms for ms, _ in results], sum(got == 100 for _, got in results)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_fifty(fake, studio: Studio, key: str, rounds: int) -> dict[str, tuple[float, float, int]]:
    out: dict[str, list] = {k: [] for k in ("direct", "/v1", "/api/chat")}
    for _ in range(rounds):
        for kind in out:
            for _ in range(50):
                fake.queue(100, 0.010, 0.020)
            ttfts, complete = asyncio.run(fifty(kind, fake.url, studio, key))
            out[kind].append((percentile(ttfts, 50), percentile(ttfts, 95), complete))
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
                min(r[2] for r in v)) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (about 1 minute)")
    args = ap.parse_args(argv)
    import ollama
    import openai

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = 7 if args.quick else 15
    cpu_runs = 2 if args.quick else 3
    rounds = 1 if args.quick else 3
    load0 = os.getloadavg()[0]
    fake = FakeProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-api-") as data_dir:
            studio, key = make_studio(fake.url, data_dir)
            started = studio.start()
            log(f"studio up in {started:.1f} s")
            try:
                paths = {
                    "direct": (stream_direct, ollama.Client(host=fake.url)),
                    "/v1": (stream_v1, openai.OpenAI(base_url=studio.base + "/v1",
                                                     api_key=key, max_retries=0)),
                    "/api/chat": (stream_api_chat, ollama.Client(
                        host=studio.base, headers={"Authorization": f"Bearer {key}"})),
                }
                bench_ttft(fake, paths, 2)  # warm every path once, unmeasured
                ttft = bench_ttft(fake, paths, runs)
                log("ttft done")
                studio_paths = {k: v for k, v in paths.items() if k != "direct"}
                idle = idle_rate(studio)
                cpu_fast = bench_cpu(fake, studio, studio_paths, cpu_runs, 1000, 0.0, idle)
                cpu_paced = bench_cpu(fake, studio, studio_paths, cpu_runs, 200, 0.020, idle)
                log("cpu done")
                many = bench_fifty(fake, studio, key, rounds)
            finally:
                studio.stop()
    finally:
        fake.close()

    print(f"\nbench/bench_api.py — {machine()}; load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}; median of {runs} runs (TTFT), {cpu_runs} (CPU), "
          f"{rounds} rounds (50 at once)\n")
    print("| figure | direct (baseline) | /v1 | /api/chat | target |")
    print("|---|---|---|---|---|")
    print(f"| time to first token, ms | {ttft['direct']:.1f} | {ttft['/v1']:.1f} | "
          f"{ttft['/api/chat']:.1f} | |")
    print(f"| TTFT added by the studio, ms | — | {ttft['/v1'] - ttft['direct']:+.1f} | "
          f"{ttft['/api/chat'] - ttft['direct']:+.1f} | ≤ {TARGET_TTFT_ADDED_MS:g} |")
    for label, cpu in (("full speed", cpu_fast), ("50 tokens/s", cpu_paced)):
        print(f"| studio CPU-s per 1,000 tokens, {label} (above idle) | — | "
              f"{cpu['/v1'][0]:.3f} ({cpu['/v1'][1]:.3f}) | "
              f"{cpu['/api/chat'][0]:.3f} ({cpu['/api/chat'][1]:.3f}) | |")
    print(f"| studio idle CPU, ms/s | — | {idle * 1000:.0f} | {idle * 1000:.0f} | |")
    print(f"| 50 streams at once: TTFT p50, ms | {many['direct'][0]:.0f} | "
          f"{many['/v1'][0]:.0f} | {many['/api/chat'][0]:.0f} | |")
    print(f"| 50 streams at once: TTFT p95, ms | {many['direct'][1]:.0f} | "
          f"{many['/v1'][1]:.0f} | {many['/api/chat'][1]:.0f} | |")
    print(f"| 50 streams at once: streams complete | {many['direct'][2]}/50 | "
          f"{many['/v1'][2]}/50 | {many['/api/chat'][2]}/50 | 50/50 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
