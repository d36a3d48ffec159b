"""Benchmark: the chat history at size: the sidebar's pages with 20,000 conversations, and
importing a ChatGPT export of 2,000 conversations.

Run from the repository root:  ``python bench/bench_history.py``  (about a minute;
``--chats N``, ``--runs N``, ``--import-chats N`` change the sizes and the number of timed
runs). It prints the median and the spread of each figure beside its baseline, and never
asserts timings.

What is timed, on a real database file (WAL, as ``Store.open`` makes it) holding ``--chats``
conversations of one person (plus as many of another, which the queries must skip) and 20
pinned among them:

- ``ChatService.conversation_page``: the first page (200), and the page after the 19,800th
  chat (keyset: one range walk of the index (user, pinned, updated_at, id)).
- The baseline beside each: the same page with ``LIMIT 200 OFFSET n``, the way a sidebar
  pages without a keyset (the studio's ``list_conversations(offset=...)``), timed in turn
  with it so that load on a shared box weighs on both alike.
- Walking every page from the first to the last: keyset against OFFSET.
- ``Sidebars.refresh`` + ``sidebar_choices`` as the Chat tab runs them (date groups in a time
  zone), for a page that was paged 1 and 5 times.
The first run is shown apart (cold caches); the median covers the rest.

The import: ``ChatService.import_chats`` on a ``conversations.json`` of ``--import-chats``
conversations of 20 messages (one branch, 40 words each), into a fresh database file, then
the same file again (everything already there). Baseline: the same conversations and
messages written the way chat turns are (``create_conversation`` then ``add_message`` each).
"""

from __future__ import annotations

import argparse
import json
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


def chatgpt_export(chats: int) -> list[dict]:
    export = []
    for c in range(chats):
        mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
        for m in range(20):
            mapping[f"m{m}"] = {
                "id": f"m{m}", "parent": f"m{m - 1}" if m else "root",
                "children": [f"m{m + 1}"] if m < 19 else [],
                "message": {"id": f"m{m}", "author": {"role": "assistant" if m % 2 else "user"},
                            "create_time": 1.7e9 + c * 100 + m, "recipient": "all",
                            "content": {"content_type": "text", "parts": ["word " * 40]},
                            "metadata": {"model_slug": "gpt-4o"}}}
        export.append({"id": f"c{c}", "title": f"chat {c}", "create_time": 1.7e9 + c * 100,
                       "update_time": 1.7e9 + c * 100 + 20, "mapping": mapping,
                       "current_node": "m19"})
    return export


def import_figures(tmp: Path, chats: int, runs: int) -> list[str]:
    path = tmp / "conversations.json"
    path.write_text(json.dumps(chatgpt_export(chats)))
    first_runs, again_runs, base_runs = [], [], []
    for run in range(runs):
        store = Store.open(tmp / f"import-{run}.db")
        chat = ChatService(store, ReplyManager(lambda *a, **k: iter(()), store), router=None,
                           uploads_dir=tmp / "u", exports_dir=tmp / "e", max_message_chars=100,
                           supports_images=lambda m: False, max_import_bytes=1 << 30)
        for into in (first_runs, again_runs):
            start = time.perf_counter()
            chat.import_chats(path, user="owner")
            into.append(time.perf_counter() - start)
        store.close()
        store = Store.open(tmp / f"turns-{run}.db")
        start = time.perf_counter()
        for c in range(chats):
            conv = store.create_conversation(f"chat {c}")
            for m in range(20):
                store.add_message(conv.id, "assistant" if m % 2 else "user", "word " * 40)
        base_runs.append(time.perf_counter() - start)
        store.close()
    size = path.stat().st_size / 1e6
    med = statistics.median
    return [f"| import {chats:,} chats × 20 messages ({size:.0f} MB) | {med(first_runs):.2f} s | "
            f"{min(first_runs):.2f}–{max(first_runs):.2f} s | | turns written one by one: "
            f"{med(base_runs):.2f} s |",
            f"| the same file again (all already there) | {med(again_runs):.2f} s | "
            f"{min(again_runs):.2f}–{max(again_runs):.2f} s | | |"]


def timed(fn, runs: int) -> tuple[float, list[float]]:
    """(first run in ms, the later runs in ms)."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], times[1:]


def paired(fn, base, runs: int) -> tuple[float, list[float], list[float]]:
    """Runs of ``fn`` and of its baseline taken in turn, so load on a shared box weighs on
    both alike: (first run of fn in ms, fn's later runs, the baseline's later runs)."""
    mine, theirs = [], []
    for _ in range(runs + 1):
        mine.append(timed(fn, 0)[0])
        theirs.append(timed(base, 0)[0])
    return mine[0], mine[1:], theirs[1:]


def row(name: str, first: float, rest: list[float], baseline: str = "") -> str:
    spread = f"{min(rest):.2f}–{max(rest):.2f}"
    return f"| {name} | {statistics.median(rest):.2f} | {spread} | {first:.2f} | {baseline} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--import-chats", type=int, default=2_000)
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
        for name, fn, base, runs in (
                ("first page, keyset", lambda: chat.conversation_page(user="owner", limit=PAGE),
                 lambda: store.list_conversations(user="owner", limit=PAGE), args.runs),
                (f"page after {deep:,}, keyset",
                 lambda: chat.conversation_page(user="owner", more=cursor, limit=PAGE),
                 lambda: store.list_conversations(user="owner", limit=PAGE, offset=deep),
                 args.runs),
                (f"all {args.chats // PAGE} pages, keyset", walk_keyset, walk_offset,
                 max(2, args.runs // 3))):
            first, rest, base_rest = paired(fn, base, runs)
            rows.append(row(name, first, rest, f"OFFSET: {statistics.median(base_rest):.2f} ms"))
        for times in (1, 5):
            first, rest = timed(paged(times), args.runs)
            rows.append(row(f"sidebar refresh, paged {times}× ({times * PAGE} chats, groups)",
                            first, rest))
        store.close()
        rows += import_figures(Path(tmp), args.import_chats, 3)

    print(f"bench_history: {args.chats:,} chats of one person (+{args.chats:,} of another), "
          f"{args.runs} runs; {platform.python_version()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    print("| What | median ms | spread ms | first run ms | baseline (median) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
