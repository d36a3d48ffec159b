"""Benchmark: the chat sidebar's pages with 20,000 conversations.

Run from the repository root:  ``python bench/bench_sidebar.py``  (about 20 s; ``--chats N``
and ``--runs N`` change the size and the number of timed runs). It prints the median and
the spread of each figure beside its baseline, and never asserts timings.

What is timed, on a real database file (WAL, as ``Store.open`` makes it) holding ``--chats``
conversations of one person (plus as many of another, which the queries must skip) and 20
pinned among them:

- ``ChatService.conversation_page``: the first page (200), and the page after the 19,800th
  chat (keyset: one range walk of the index (user, pinned, updated_at, id)).
- The baseline beside each: the same page with ``LIMIT 200 OFFSET n``, the way a sidebar
  pages without a keyset (the studio's ``list_conversations(offset=...)``).
- Walking every page from the first to the last: keyset against OFFSET.
- ``Sidebars.refresh`` + ``sidebar_choices`` as the Chat tab runs them (date groups in a time
  zone), for a page that was paged 1 and 5 times.
The first run is shown apart (cold caches); the median covers the rest.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.chat.replies import ReplyManager  # noqa: E402
from studio.chat.service import ChatService  # noqa: E402
from studio.store.db import Store  # noqa: E402
from studio.ui.chat_sidebar import Sidebars  # noqa: E402

PAGE = 200


def seed(store: Store, chats: int) -> None:
    for user in ("owner", "guest"):
        store.db["conversations"].insert_all(
            ({"id": f"{user[0]}{n:031x}", "title": f"chat {n}", "user": user,
              "pinned": int(n % (chats // 20) == 7),
              "created_at": "2024-01-01T00:00:00.000Z",
              "updated_at": f"20{20 + n * 6 // chats:02d}-{1 + n % 12:02d}-{1 + n % 28:02d}T"
                            f"{n % 24:02d}:00:00.{n % 1000:03d}Z"}
             for n in range(chats)), batch_size=2000)


def timed(fn, runs: int) -> tuple[float, list[float]]:
    """(first run in ms, the later runs in ms)."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], times[1:]


def row(name: str, first: float, rest: list[float], baseline: str = "") -> str:
    spread = f"{min(rest):.2f}–{max(rest):.2f}"
    return f"| {name} | {statistics.median(rest):.2f} | {spread} | {first:.2f} | {baseline} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "studio.db")
        seed(store, args.chats)
        chat = ChatService(store, ReplyManager(lambda *a, **k: iter(()), store), router=None,
                           uploads_dir=Path(tmp) / "u", exports_dir=Path(tmp) / "e",
                           max_message_chars=100, supports_images=lambda m: False)
        deep = args.chats - PAGE
        cursor = None
        for _ in range(deep // PAGE):  # the position a person reaches after many presses
            cursor = chat.conversation_page(user="owner", more=cursor, limit=PAGE).more

        def walk_keyset():
            more = None
            while True:
                more = chat.conversation_page(user="owner", more=more, limit=PAGE).more
                if more is None:
                    return

        def walk_offset():
            offset = 0
            while store.list_conversations(user="owner", limit=PAGE, offset=offset):
                offset += PAGE

        def paged(times: int):
            sidebars = Sidebars(chat, page_size=PAGE)
            for _ in range(times - 1):
                sidebars.more("page", "owner")
            return lambda: sidebars.refresh("page", "owner")

        rows = []
        offset_first = timed(lambda: store.list_conversations(user="owner", limit=PAGE), args.runs)
        offset_deep = timed(lambda: store.list_conversations(user="owner", limit=PAGE,
                                                             offset=deep), args.runs)
        walk_off = timed(walk_offset, max(1, args.runs // 3))
        for name, fn, runs, base in (
                ("first page, keyset", lambda: chat.conversation_page(user="owner", limit=PAGE),
                 args.runs, offset_first),
                (f"page after {deep:,}, keyset",
                 lambda: chat.conversation_page(user="owner", more=cursor, limit=PAGE),
                 args.runs, offset_deep),
                (f"all {args.chats // PAGE} pages, keyset", walk_keyset, max(1, args.runs // 3),
                 walk_off)):
            first, rest = timed(fn, runs)
            rows.append(row(name, first, rest, f"OFFSET: {statistics.median(base[1]):.2f} ms"))
        for times in (1, 5):
            first, rest = timed(paged(times), args.runs)
            rows.append(row(f"sidebar refresh, paged {times}× ({times * PAGE} chats, groups)",
                            first, rest))
        store.close()

    print(f"bench_sidebar: {args.chats:,} chats of one person (+{args.chats:,} of another), "
          f"{args.runs} runs; {platform.python_version()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    print("| What | median ms | spread ms | first run ms | baseline (median) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
