"""Where a ``/send`` spends its time before its first token, with 20 sent at once.

Run from the repository root:  ``.venv/bin/python bench/profile_send.py``  (about 30 s).

The studio runs in this process (Gradio's server in a thread, as the tests launch it) on the
fake Ollama in its own process (``bench_chat.FakeProcess``); 20 page sessions send a message
at the same moment through the browser's route (queue/join + SSE, ``bench_load.chats_at_once``),
each answered with 200 tokens at 10 ms. For each send it records, on the server:

* the wall time from the moment the 20 were let go to ``ChatPage.on_send``'s start (Gradio's
  own per-event work: the join, the queue, the session's state, preprocessing, and waiting for
  the GIL behind the others), to ``ChatService.send``'s return (checks, store writes, the
  reply thread started), and to the handler's first yield (the first token's update);
* the CPU of the handler's own thread over the same spans (``thread_time``);
* with ``--profile``, one more round under cProfile in every server thread (the client
  threads left out): the functions with the most own and cumulative time. cProfile slows
  Python code about 2x: read shares. The profilers count each thread's CPU
  (``thread_time``), so waiting for the GIL or a lock is not in them.

``--rounds`` rounds of 20 (medians over every send). Prints figures only; never asserts.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import threading
import time

# First: profile_stream puts the checkout (or --studio PATH's) on the path as it loads.
from profile_stream import entries, report, studio_in_process  # noqa: I001
import bench_load  # noqa: E402
from bench_chat import STUDIO_ARGS, FakeProcess, find_endpoint, find_page_event  # noqa: E402

SENDS: list[dict] = []  # per send: perf_counter and thread_time at each mark


def instrument() -> None:
    """Wrap ChatPage.on_send and ChatService.send to mark each send's steps."""
    from studio.chat.service import ChatService
    from studio.ui.chat_handlers import ChatPage

    local = threading.local()
    on_send, send = ChatPage.on_send, ChatService.send

    def marked_on_send(self, *args, **kwargs):
        marks = {"enter": (time.perf_counter(), time.thread_time())}
        local.marks = marks
        SENDS.append(marks)
        gen = on_send(self, *args, **kwargs)
        first = True
        for value in gen:
            if first:
                marks["first"] = (time.perf_counter(), time.thread_time())
                first = False
            yield value

    def marked_send(self, *args, **kwargs):
        marks = getattr(local, "marks", None)
        if marks is not None:
            marks["send"] = (time.perf_counter(), time.thread_time())
        try:
            return send(self, *args, **kwargs)
        finally:
            if marks is not None:
                marks["sent"] = (time.perf_counter(), time.thread_time())

    functools.update_wrapper(marked_on_send, on_send)  # Gradio reads the signature
    ChatPage.on_send = marked_on_send
    ChatService.send = marked_send


def rounds_of(fake, target, ep, page, rounds: int, t_starts: list, on_start=None
              ) -> list[float]:
    """``rounds`` rounds of 20 sends; each round's start and marks go to ``t_starts``.
    ``on_start()`` runs as each round's sends are let go (after the pages were opened)."""
    ttft = []
    orig = bench_load.first_token_ms
    starts: list[float] = []

    lock = threading.Lock()

    def timed(app, http, ep, session, want, t_start):
        with lock:
            if not starts and on_start is not None:
                on_start()
            starts.append(t_start)
        return orig(app, http, ep, session, want, t_start)

    bench_load.first_token_ms = timed

    for _ in range(rounds):
        SENDS.clear()
        starts.clear()
        ttft += bench_load.chats_at_once(fake, target, ep, page, bench_load.CONCURRENT)
        t_starts.append((starts[0], list(SENDS)))
    bench_load.first_token_ms = orig
    return ttft


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--studio", metavar="PATH", help="measure another checkout's studio")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dump", metavar="PATH",
                    help="with --profile: write every server thread's stats (pstats) here")
    args = ap.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import cProfile

    import httpx

    import studio
    print(f"studio from {os.path.dirname(os.path.dirname(studio.__file__))}")
    instrument()
    profiles: list = []
    profiling = threading.Event()

    def hook(frame, event, arg):
        if "(one)" in threading.current_thread().name:  # the bench's own client threads
            return
        # Each thread's own CPU (not wall time): a thread waiting for the GIL or a lock
        # costs nothing here, so the figures add up to the work itself.
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()

    fake = FakeProcess()
    try:
        with studio_in_process(fake, "profile-send-",
                               hook=hook if args.profile else None) as target:
            with httpx.Client(timeout=30) as http:
                ep = find_endpoint(target, http, "send", ["hi", [],
                                                          *STUDIO_ARGS])
                page = find_page_event(target, http)
                bench_load.chats_at_once(fake, target, ep, page, 1)  # warm-up
                bench_load.chats_at_once(fake, target, ep, page, 4)
                single = [bench_load.chats_at_once(fake, target, ep, page, 1)[0]
                          for _ in range(3)]
                rounds: list = []
                cpu0 = time.process_time()
                ttft = rounds_of(fake, target, ep, page, args.rounds, rounds)
                cpu = (time.process_time() - cpu0) / args.rounds
                pct = bench_load.pct
                print(f"one chat TTFT {statistics.median(single):.0f} ms; "
                      f"{bench_load.CONCURRENT} at once p50 {pct(ttft, 50):.0f} / "
                      f"p95 {pct(ttft, 95):.0f} ms; process CPU per round {cpu:.2f} s "
                      f"(client threads included)")
                spans = {"start → on_send": [], "on_send → ChatService.send": [],
                         "ChatService.send": [], "send → first yield": [],
                         "start → first yield": []}
                cpus = {"on_send → ChatService.send": [], "ChatService.send": [],
                        "send → first yield": []}
                for t0, sends in rounds:
                    for m in sends:
                        if "first" not in m:
                            continue
                        spans["start → on_send"].append(m["enter"][0] - t0)
                        spans["on_send → ChatService.send"].append(m["send"][0] - m["enter"][0])
                        spans["ChatService.send"].append(m["sent"][0] - m["send"][0])
                        spans["send → first yield"].append(m["first"][0] - m["sent"][0])
                        spans["start → first yield"].append(m["first"][0] - t0)
                        cpus["on_send → ChatService.send"].append(m["send"][1] - m["enter"][1])
                        cpus["ChatService.send"].append(m["sent"][1] - m["send"][1])
                        cpus["send → first yield"].append(m["first"][1] - m["sent"][1])
                print("per send, wall ms median / p95 (handler thread CPU ms median):")
                for k, v in spans.items():
                    c = cpus.get(k)
                    print(f"  {k:32s} {statistics.median(v) * 1000:7.1f} / "
                          f"{pct(v, 95) * 1000:7.1f}" +
                          (f"   (CPU {statistics.median(c) * 1000:.2f})" if c else ""))
                if args.profile:
                    # From the moment the sends are let go: the pages' opening (Gradio
                    # builds each session's state on its first event) is left out.
                    before: dict = {}
                    rounds_of(fake, target, ep, page, 1, [],
                              on_start=lambda: before.update(entries(profiles)))
                    report(entries(profiles), before, bench_load.CONCURRENT, args.top)
                    print("(per update above = per send: one round of 20)")
                    if args.dump:
                        import pstats
                        for prof in profiles:
                            prof.disable()
                        stats = None
                        for prof in profiles:
                            prof.create_stats()
                            if not prof.stats:
                                continue
                            stats = pstats.Stats(prof) if stats is None else stats.add(prof)
                        stats.dump_stats(args.dump)
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
