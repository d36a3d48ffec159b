"""Benchmark: chat time to first token over several Ollama hosts, with one of them down.

Run from the repository root:  ``.venv/bin/python bench/bench_hosts.py``  (about 40 s).
Prints a table; it never asserts timings.

Three fake Ollama servers (tests/fakes/ollama_server.py) run in a child process, so their
threads don't compete with the measured one for the GIL; each has the model, and answers
at full speed (no delay before the first token: what is measured is the studio's routing).
The studio's services are built from ``OLLAMA_HOST`` the way ``python app.py`` builds
them, and each figure is the time from ``router.chat_stream(...)`` to its first text, the
median (and 90th percentile) of many requests, all in the same run:

* one host: ``OLLAMA_HOST`` naming one server (a plain ``OllamaClient``), the baseline;
* three hosts, all up;
* one host down, after the health check has seen it (the host the pool ranked first is
  stopped, and requests start once the pool says it is down);
* one host down, not yet seen: the first request after each stop, which tries the stopped
  host (connection refused), then goes on to the next one: the failover's own cost.

Everything binds 127.0.0.1; the child is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "llama3.2:3b"
NAMES = ("a", "b", "c")


def serve_fakes() -> None:
    """Child: three fake Ollamas; stdin commands ``stop NAME`` / ``start NAME``."""
    from tests.fakes.ollama_server import FakeOllama

    fakes = {}
    for name in NAMES:
        fakes[name] = FakeOllama().start()
        fakes[name].add_model(MODEL)
    print(" ".join(f"{n}={f.url}" for n, f in fakes.items()), flush=True)
    for line in sys.stdin:
        verb, name = line.split()
        fake = fakes[name]
        if verb == "stop":
            fake.stop()
        else:  # start again on the same port, its model still installed
            fake.start()
        print("ok", flush=True)


class Fakes:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-fakes"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.urls = dict(part.split("=", 1) for part in self.proc.stdout.readline().split())

    def tell(self, verb: str, name: str) -> None:
        self.proc.stdin.write(f"{verb} {name}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)


def services_for(setting: str, data: str, interval: float):
    from studio.config import Settings
    from studio.services import build_services

    settings = Settings.from_env({"STUDIO_DATA_DIR": data, "OLLAMA_HOST": setting,
                                  "STUDIO_HEALTH_INTERVAL": str(interval)}, dotenv_path=None)
    services = build_services(settings)
    if services.ollama_health is not None:
        services.ollama_health.check_now()
    return services


def ttft(services) -> float:
    """Seconds from asking to the first text of a reply (the reply is read to its end)."""
    from studio.events import ChatDelta, ChatMessage

    t0 = time.perf_counter()
    first = None
    for event in services.router.chat_stream(f"ollama:{MODEL}", [ChatMessage("user", "hi")]):
        if first is None and isinstance(event, ChatDelta) and event.text:
            first = time.perf_counter() - t0
    assert first is not None, "the reply had no text"
    return first


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not follow the host in time")
        time.sleep(0.01)


def figures(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{statistics.median(ms):7.2f} ms  {p90:7.2f} ms  {len(ms):4d}"


def close(services) -> None:
    if services.ollama_health is not None:
        services.ollama_health.close()
    services.images.close()
    services.store.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60, help="requests per steady figure")
    ap.add_argument("--cycles", type=int, default=12, help="stop/start cycles for failover")
    ap.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_fakes:
        serve_fakes()
        return 0
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    fakes = Fakes()
    rows: list[tuple[str, list[float]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = services_for(fakes.urls["a"], f"{tmp}/one", 0.2)
            for _ in range(5):
                ttft(one)  # warm the connection and the code paths
            rows.append(("one host (plain client), the baseline", [ttft(one) for _ in range(args.runs)]))
            close(one)

            setting = ", ".join(f"{n}={u}" for n, u in fakes.urls.items())
            many = services_for(setting, f"{tmp}/many", 0.2)
            pool = many.ollama.pool
            for _ in range(5):
                ttft(many)
            rows.append(("three hosts, all up", [ttft(many) for _ in range(args.runs)]))

            def state(name: str) -> str:
                return pool.view(name).state(time.monotonic())

            first = pool.choose(MODEL).name
            fakes.tell("stop", first)
            wait_for(lambda: state(first) == "down")
            rows.append((f"one host down ({first}), seen by the health check",
                         [ttft(many) for _ in range(args.runs)]))
            fakes.tell("start", first)
            wait_for(lambda: state(first) == "up")

            unseen = []
            for _ in range(args.cycles):
                wait_for(lambda: all(state(n) == "up" for n in NAMES))
                ranked = pool.choose(MODEL).name
                fakes.tell("stop", ranked)
                unseen.append(ttft(many))  # tries the stopped host first, then moves on
                fakes.tell("start", ranked)
            rows.append(("one host down, not yet seen (failover)", unseen))
            close(many)
    finally:
        fakes.close()
    print(f"Chat time to first token over Ollama hosts (fake, full speed), {os.cpu_count()} CPUs")
    print(f"{'case':52s} {'median':>10s} {'p90':>10s} {'runs':>5s}")
    for label, samples in rows:
        print(f"{label:52s} {figures(samples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
