"""Benchmark: a batch of image prompts over one ComfyUI host, then over two (issue 15).

Run from the repository root:  ``python bench/bench_comfyui_hosts.py``  (about 30 s;
``--prompts N``, ``--delay S``, ``--runs N`` to change it). Prints a table; it never
asserts timings. Don't run anything heavy beside it.

What runs (all on 127.0.0.1):

* Each fake ComfyUI (tests/fakes/comfyui_server.py) in its own process
  (``python -m tests.fakes.comfyui_server --step-delay S``), so its work doesn't share this
  process's GIL. Every prompt is a one-step txt2img of 64x64, and the fake sleeps S seconds
  in that step (default 50 ms): the GPU's time, the same on every host.
* The studio's own job service in this process (``ImageJobs`` over ``build_comfyui``: the
  real clients, the health checker, SQLite in a temporary folder, images stored as usual),
  STUDIO_IMAGE_INFLIGHT = 1 per host, as by default.

Figure: one job of N prompts (N seeds of one prompt, default 50), from ``submit`` to the
job's end with every image stored; the median of R runs (default 3) for one host
(``COMFYUI_URL=a``) and for two (``a, b``), and their ratio. Each run is a new job; a first
unmeasured job warms each host (object_info cached, first connections). The baseline is
the one-host figure: the same job service and fake, so the ratio is what the second host
buys. Target: about 0.5.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from studio.backends.comfyui_hosts import build_comfyui  # noqa: E402
from studio.backends.hosts import parse_hosts  # noqa: E402
from studio.images.jobs import ImageJobs  # noqa: E402
from studio.images.plans import ImageRequest, WorkflowLibrary  # noqa: E402
from studio.store.db import Store  # noqa: E402
from studio.store.images import ImageStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake(delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui_server", "--port",
                                str(port), "--step-delay", str(delay)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/queue", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the fake ComfyUI on port {port} didn't start")


def one_job(jobs: ImageJobs, prompts: int, seed: int) -> float:
    request = ImageRequest("sd15_txt2img", prompt="a red fox", width=64, height=64, steps=1,
                           seeds=prompts, seed=seed)
    started = time.perf_counter()
    live = jobs.submit(request)
    for snap in jobs.follow(live, interval=0.05, timeout=600):
        final = snap
    elapsed = time.perf_counter() - started
    if final.status != "done" or final.done != prompts:
        raise SystemExit(f"the job ended {final.status}: {final.error}")
    return elapsed


def measure(urls: list[str], prompts: int, runs: int, data: Path) -> tuple[list[float], dict]:
    setting = ", ".join(f"{name}={url}" for name, url in zip("abcdefgh", urls))
    hosts = build_comfyui(parse_hosts("COMFYUI_URL", setting), place="COMFYUI_URL",
                          health_interval=10.0)
    store = Store.open(data / f"studio-{len(urls)}.db")
    jobs = ImageJobs(None, ImageStore(store), data / f"outputs-{len(urls)}",
                     WorkflowLibrary(ROOT / "workflows"), uploads_dir=data / "uploads",
                     hosts=hosts, inflight=1).start()
    try:
        one_job(jobs, 2 * len(urls), seed=1)  # warm-up, not measured
        times = [one_job(jobs, prompts, seed=1000 * (run + 1)) for run in range(runs)]
        spread: dict[str, int] = {}
        for item in jobs.store.job_items(jobs.store.list_jobs(limit=1)[0].id):
            spread[item.comfy_host or "a"] = spread.get(item.comfy_host or "a", 0) + 1
        return times, spread
    finally:
        jobs.close()
        hosts.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.05,
                        help="seconds each prompt spends 'on the GPU' (default 0.05)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    fakes = [start_fake(args.delay) for _ in range(2)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            load_before = os.getloadavg()[0]
            one, _ = measure([fakes[0][1]], args.prompts, args.runs, data)
            two, spread = measure([url for _, url in fakes], args.prompts, args.runs, data)
            load_after = os.getloadavg()[0]
    finally:
        for process, _ in fakes:
            process.terminate()
            process.wait(10)
    floor = args.prompts * args.delay
    print(f"{args.prompts} prompts of {args.delay * 1000:g} ms each, median of {args.runs} runs; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load "
          f"{load_before:.2f} -> {load_after:.2f}")
    print("| hosts | median | runs | GPU time alone |")
    print("|---|---|---|---|")
    print(f"| one (baseline) | {statistics.median(one):.2f} s | "
          f"{', '.join(f'{t:.2f}' for t in one)} | {floor:.2f} s |")
    print(f"| two | {statistics.median(two):.2f} s | {', '.join(f'{t:.2f}' for t in two)} | "
          f"{floor / 2:.2f} s |")
    print(f"ratio two / one: {statistics.median(two) / statistics.median(one):.2f} "
          f"(target about 0.5); last job's prompts per host: {spread}")


if __name__ == "__main__":
    main()
