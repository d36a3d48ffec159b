"""Where the server's CPU goes while a reply streams at a model's pace.

Run from the repository root:  ``.venv/bin/python bench/profile_stream.py``  (about 40 s).

The studio runs in this process (Gradio's server in a thread, as the tests launch it) on the
fake Ollama in its own process (bench_chat.py's ``FakeProcess``); this script drives
``/send`` through the browser's route (queue/join + SSE, ``gradio_queue.queue_call``) with
a reply of 200 tokens at 20 ms (50 tokens/s). Two passes:

* CPU: ``--runs`` replies unprofiled; the process's CPU across each reply, minus what the
  same process burns idle for as long (measured for 2 s before and after), per 1,000
  tokens, and per SSE update. This script's own client thread is measured apart
  (``thread_time``) and taken out, so the figure is the server's. Then the CPU by thread:
  Gradio's event loop ("Thread (run)", idle burn included), the reply's thread (its CPU
  kept as it ends), the AnyIO workers (handlers and output postprocessing).
* ``--profile``: one more reply under cProfile in every thread the server starts (a
  per-thread profiler installed by ``threading.setprofile`` before launch, read before and
  after the reply): the functions with the most own and cumulative time. cProfile slows
  Python code down roughly twice, so read these as shares, not as milliseconds.
* ``--env STUDIO_STREAM_INTERVAL=10``: settings for the studio (10 s leaves only the first
  and last updates: the reply's fixed cost).

Prints figures only; never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)
# --studio PATH: the studio package of another checkout (the code before a change), read
# before anything imports it; the fake Ollama and this harness stay this checkout's.
if "--studio" in sys.argv[1:-1]:
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--studio") + 1]))

from bench_chat import (STUDIO_ARGS, FakeProcess, answer_text, find_endpoint,  # noqa: E402
                        find_page_event, free_port, open_page)
from gradio_queue import LIVE_COOKIE, LiveReader, queue_call  # noqa: E402

N, DELAY = 200, 0.020


class Target:
    """What find_endpoint/open_page need of an app: its name and url."""

    def __init__(self, url: str) -> None:
        self.name, self.url = "studio", url


@contextlib.contextmanager
def studio_in_process(fake, prefix: str, *, env: dict | None = None, hook=None,
                      queue_limit: int | None = None):
    """The studio launched in this process on ``fake`` (a ``FakeProcess``), in a fresh data
    folder; yields a ``Target``. ``hook`` profiles every thread started from launch on
    (``threading.setprofile``); it is removed and the studio closed on exit."""
    from studio.config import Settings
    from studio.services import build_services
    from studio.ui.app import build_app, launch_kwargs

    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        settings = {"STUDIO_DATA_DIR": data_dir, "OLLAMA_HOST": fake.url,
                    "OPENROUTER_API_KEY": "", "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
                    **(env or {})}
        services = build_services(Settings.from_env(settings, dotenv_path=None))
        demo = build_app(services)
        if queue_limit is not None:
            demo.queue(default_concurrency_limit=queue_limit)
            from studio.ui import queue_wake
            queue_wake.install(demo._queue)  # queue() made a new, polling one: as app.py runs
        if hook is not None:
            threading.setprofile(hook)
        try:
            _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                                    **{**launch_kwargs(services), "server_port": free_port()})
            yield Target(url)
        finally:
            threading.setprofile(None)
            demo.close()
            services.images.close()


def thread_cpu() -> dict[str, float]:
    """CPU-s so far of each thread of this process, by kind (name without its number)."""
    import re

    import psutil

    names = {t.native_id: re.sub(r"[-_ ]?\d+", "", t.name) or t.name
             for t in threading.enumerate()}
    out: dict[str, float] = {}
    for t in psutil.Process().threads():
        kind = names.get(t.id, "other (not a Python thread)")
        out[kind] = out.get(kind, 0.0) + t.user_time + t.system_time
    return out


REPLY_CPU: list[float] = []  # each reply thread's own CPU-s, when it ends (it is gone after)


def count_reply_threads() -> None:
    """Wrap ReplyManager._run so each reply thread's CPU is kept before the thread ends."""
    from studio.chat.replies import ReplyManager

    run = ReplyManager._run

    def timed(self, *args, **kwargs):
        try:
            return run(self, *args, **kwargs)
        finally:
            REPLY_CPU.append(time.thread_time())

    ReplyManager._run = timed


def one_reply(fake, target, http, ep, page, by_thread: dict | None = None
              ) -> tuple[float, int, float]:
    """(process CPU-s, updates, client CPU-s) of one reply; ``by_thread`` gets the CPU-s
    of each kind of thread. With the page's cookie on ``http`` (``LIVE_COOKIE``) it reads
    the text over /studio/live as the page does; the updates count both channels'."""
    session = uuid.uuid4().hex[:11]
    open_page(target, http, page, session)
    fake.queue(N, DELAY)
    updates, want = 0, f"tok{N - 1}"
    live = LiveReader(target.url)
    threads0 = thread_cpu()
    cpu0, own0 = time.process_time(), time.thread_time()
    for msg in queue_call(http, target.url, data=ep.data, fn_index=ep.fn_index,
                          trigger_id=ep.trigger_id, session=session,
                          deadline=time.monotonic() + 60, what="studio"):
        updates += 1
        answer_text(msg.values[ep.text_pos])
        if http.cookies.get("studio_live"):
            live.look(msg.values)
    live.join()
    if live.events and not live.text.rstrip().endswith(want):
        raise RuntimeError("the live channel did not read the whole reply")
    updates += live.events
    time.sleep(0.05)  # the server's last bookkeeping for the request
    if by_thread is not None:
        by_thread["reply thread (ReplyManager._run)"] = (
            by_thread.get("reply thread (ReplyManager._run)", 0.0) + REPLY_CPU.pop())
        for kind, cpu in thread_cpu().items():
            by_thread[kind] = by_thread.get(kind, 0.0) + cpu - threads0.get(kind, 0.0)
    if not answer_text(msg.values[ep.text_pos]).rstrip().endswith(want):
        raise RuntimeError("the reply did not complete")
    return time.process_time() - cpu0, updates, time.thread_time() - own0 + live.cpu_s


def idle_cpu(seconds: float) -> float:
    """Process CPU-s per second with nothing asked of it."""
    c0, t0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - c0) / (time.monotonic() - t0)


def entries(profiles) -> dict:
    """(own s, cumulative s, calls) per function over every thread's profiler so far.
    ``getstats`` reads a running profiler without stopping it (one C call, under the GIL)."""
    out: dict = {}
    for prof in list(profiles):
        for e in prof.getstats():
            code = e.code
            key = (code if isinstance(code, str) else
                   f"{os.path.relpath(code.co_filename, ROOT) if code.co_filename.startswith(ROOT) else code.co_filename.split('site-packages/')[-1]}"
                   f":{code.co_firstlineno}({code.co_name})")
            own, cum, calls = out.get(key, (0.0, 0.0, 0))
            out[key] = (own + e.inlinetime, cum + e.totaltime, calls + e.callcount)
    return out


# Calls that wait rather than work: their own time is time blocked, not CPU.
BLOCKING = ("acquire' of '_thread.lock", "'recv' of '_socket", "'poll' of 'select",
            "time.sleep", "'select' of", "'read' of '_io")


def report(after: dict, before: dict, updates: int, top: int) -> None:
    diff = {}
    for key, (own, cum, calls) in after.items():
        o0, c0, n0 = before.get(key, (0.0, 0.0, 0))
        if (calls - n0 or own - o0 > 0) and not any(b in key for b in BLOCKING):
            diff[key] = (own - o0, cum - c0, calls - n0)
    total = sum(own for own, _, _ in diff.values())  # blocking calls left out
    print(f"\nprofile of one reply: {updates} updates, {total * 1000:.0f} ms of profiled own "
          f"time in all ({total / updates * 1000:.2f} ms per update; cProfile slows Python "
          "code about 2x: read shares)")
    for title, index in (("own", 0), ("cumulative (blocked time included)", 1)):
        print(f"\n  by {title} time, ms per update / calls per update / function")
        for key, row in sorted(diff.items(), key=lambda kv: -kv[1][index])[:top]:
            print(f"  {row[index] / updates * 1000:8.3f}  {row[2] / updates:7.1f}  {key}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for the studio, e.g. STUDIO_STREAM_INTERVAL=0.1")
    ap.add_argument("--studio", metavar="PATH", help="measure another checkout's studio")
    ap.add_argument("--top", type=int, default=35, help="rows of the profile to print")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one reply (cProfile in every server thread)")
    ap.add_argument("--classic", action="store_true",
                    help="as a page without the studio's script: every update through "
                         "Gradio (default: the text over /studio/live, as the page reads it)")
    args = ap.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import httpx

    import studio
    print(f"studio from {os.path.dirname(os.path.dirname(studio.__file__))}")

    profiles: list[cProfile.Profile] = []

    def hook(frame, event, arg):  # the first call in each new thread: profile it from now on
        prof = cProfile.Profile()
        profiles.append(prof)
        prof.enable()

    count_reply_threads()
    fake = FakeProcess()
    try:
        with studio_in_process(fake, "profile-stream-", queue_limit=4,
                               env=dict(item.split("=", 1) for item in args.env),
                               hook=hook if args.profile else None) as target:
            with httpx.Client(timeout=30, cookies=None if args.classic else LIVE_COOKIE) as http:
                ep = find_endpoint(target, http, "send", ["hi", [],
                                                          *STUDIO_ARGS])
                page = find_page_event(target, http)
                one_reply(fake, target, http, ep, page)  # warm-up
                rows, by_thread = [], {}
                for _ in range(args.runs):
                    idle_before = idle_cpu(2.0)
                    t0 = time.monotonic()
                    cpu, updates, own = one_reply(fake, target, http, ep, page, by_thread)
                    wall = time.monotonic() - t0
                    # Gradio's queue polls every 1 ms with nothing to do; that burn is
                    # measured around each reply (it drifts with the machine's load).
                    idle = (idle_before + idle_cpu(2.0)) / 2
                    net = cpu - own - idle * wall
                    rows.append((net / N * 1000, net / updates * 1000, updates, idle * 1000, wall))
                print(f"{N} tokens at {DELAY * 1000:.0f} ms, {args.runs} runs (medians):")
                for i, label in enumerate(("server CPU-s per 1,000 tokens, net of idle",
                                           "server CPU-ms per update, net of idle",
                                           "updates per reply (Gradio's and /studio/live's)",
                                           "idle CPU-ms per s",
                                           "reply wall s")):
                    print(f"  {label}: {statistics.median(r[i] for r in rows):.3f}"
                          f"  (runs: {', '.join(f'{r[i]:.3f}' for r in rows)})")
                print("  CPU-ms per update by thread (gross, mean of the runs; MainThread is "
                      "this script's client):")
                total_updates = sum(r[2] for r in rows)
                for kind, cpu in sorted(by_thread.items(), key=lambda kv: -kv[1]):
                    if cpu > 0.0005:
                        print(f"    {cpu / total_updates * 1000:7.3f}  {kind}")
                if args.profile:
                    before = entries(profiles)
                    _, updates, _ = one_reply(fake, target, http, ep, page)
                    report(entries(profiles), before, updates, args.top)
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
