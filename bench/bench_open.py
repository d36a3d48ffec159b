"""Benchmark: opening a stored conversation, the server's side of the click (issue 16, item 5).

Run from the repository root:  ``python bench/bench_open.py``  (about a minute; ``--runs N``,
``--studio PATH`` to measure another checkout's ``app.py``, e.g. the code before a change).
It never asserts timings.

``python app.py`` runs on a data folder holding chats of 20 and 200 messages; each run opens
a fresh page session (the sidebar's search event, as a page load does), then calls the event
a sidebar click runs, ``open_conversation``, through Gradio's queue route as the browser
does (bench_chat.py's tooling), and times the join POST to the answer's last message. Beside
it: the cheapest event (the sidebar search of nothing) in the same session, which is
Gradio's round trip with next to no handler, and the handler called in this process without
Gradio. What is left of the ~0.4 s a person sees is the browser drawing the chat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from bench_chat import (RUN_TIMEOUT_S, FakeProcess, find_endpoint, find_page_event,  # noqa: E402
                        make_apps, open_page)
from gradio_queue import queue_call  # noqa: E402

SIZES = (20, 200)


def fill(data_dir: Path) -> dict[int, str]:
    """Chats of ``SIZES`` messages (markdown, a code span) for the owner; their ids by size."""
    from studio.store.db import Store

    store = Store.open(data_dir / "studio.db")
    ids = {}
    for size in SIZES:
        conv = store.create_conversation(f"{size} messages", user="owner",
                                         model="llama3.2:3b", backend="ollama")
        for n in range(size):
            store.add_message(conv.id, "user" if n % 2 == 0 else "assistant",
                              "Some words of a reply, " * 12 + f"**{n}** and `code {n}`.",
                              model="llama3.2:3b" if n % 2 else "",
                              backend="ollama" if n % 2 else "")
        ids[size] = conv.id
    store.close()
    return ids


def timed_call(app, http, ep, session: str, sizes: list | None = None) -> float:
    """Milliseconds from the join POST to the last message; each message's kind and
    bytes go into ``sizes``."""
    started = time.perf_counter()
    for message in queue_call(http, app.url, data=ep.data, fn_index=ep.fn_index,
                              trigger_id=ep.trigger_id, session=session,
                              deadline=started + RUN_TIMEOUT_S, clock=time.perf_counter,
                              what=app.name):
        if sizes is not None:
            sizes.append((message.kind, message.size))
    return (time.perf_counter() - started) * 1000


def show(label: str, figures: list[float]) -> None:
    print(f"  {label:<58} median {statistics.median(figures):7.1f} ms   "
          f"range {min(figures):.1f}–{max(figures):.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--studio", type=Path, default=BENCH.parent)
    args = parser.parse_args()
    print(f"app.py from {args.studio.resolve()}", flush=True)
    fake = FakeProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-open-") as data_dir:
            ids = fill(Path(data_dir))
            studio, _baseline = make_apps(fake.url, data_dir)
            studio.argv = [sys.executable, str(args.studio.resolve() / "app.py")]
            studio.start()
            try:
                with httpx.Client(timeout=30) as http:
                    page = find_page_event(studio, http)
                    for size, chat_id in ids.items():
                        ep = find_endpoint(studio, http, "open_conversation", [chat_id])
                        opened, cheapest, sizes = [], [], []
                        for _ in range(args.runs):
                            session = uuid.uuid4().hex[:11]
                            open_page(studio, http, page, session)
                            sizes.clear()
                            opened.append(timed_call(studio, http, ep, session, sizes))
                            cheapest.append(timed_call(studio, http, page, session))
                        show(f"open a chat of {size} messages (queue route)", opened)
                        print("    messages: " + ", ".join(f"{kind} {size:,} B"
                                                         for kind, size in sizes))
                        show("  the cheapest event, same session (Gradio's round trip)",
                             cheapest)
            finally:
                studio.stop()
    finally:
        fake.close()


if __name__ == "__main__":
    main()
