"""Benchmark: the store with a million messages (issue 16, item 5; issue 14, item 8).

Run from the repository root:  ``python bench/bench_store.py``  (the first run builds the
history, about 15 minutes on a busy 2-core box, and keeps it in ``--cache``; later runs
copy it and upgrade the copy, about 5 minutes).
``--studio PATH`` imports the studio from another checkout, so the same script measures
the code before a change: ``python bench/bench_store.py --studio /path/to/main``.
It prints medians with the spread and never asserts timings.

The history is built through the migrations as they stood before the store's upgrade
(m001 to m011; the insert triggers fill the search index), then ``Store.open`` on a copy
applies whatever the code being measured adds, and that upgrade is timed. Then:

- searches as typed ("sourdough t" on the way to "sourdough toast", a common word, a
  one-letter word, symbols and emoji), owner-scoped as the sidebar runs them;
- the sidebar list and the saving of a message (insert + the streaming update) while
  another thread runs a slow read: back-to-back searches for "sourdough t", and a
  scan of every message (seconds) on its own;
- start-up's marking of cut-off replies (a fresh ``Store.open`` each run) and the Models
  tab's "when was each model last used" (``ModelsStore.last_used``);
- reading one conversation's messages (the database part of opening a chat).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHATS_PER_USER = {"owner": 0.8, "alice": 0.1, "bob": 0.1}
MESSAGES_PER_CHAT = 20
MODELS = ["llama3.2:3b", "qwen2.5:14b", "gemma3:12b", "mistral:7b", "phi4:14b"]
COMMON = ("the of and to a in is you that it for on with as are this be at or have from "
          "not but by what can all your will an which do if there so about how when up "
          "out them then one into some time like just more make than first also use way "
          "two new take well these want give day most us very need should try").split()
TOPICS = ("sourdough starter flour hydration crumb oven proof loaf crust yeast python "
          "function class async await thread lock query index database sqlite gradio "
          "docker compose volume network caddy proxy certificate model prompt token "
          "embedding vector garden tomato basil compost soil seed water sun pizza dough "
          "cheese tomato pepper onion garlic olive salt sugar butter toast bread").split()
RARE = ["C++ templates", "a -> b", "🍕 tonight", "x += 1", "#include", "😀"]
SEARCHES = ["sourdough t", "sourdough to", "sourdough toast", "sourdough", "the", "t",
            "python thread lock", "🍕", "C++", "->"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()),
                        help="folder that keeps the built history between runs")
    parser.add_argument("--studio", type=Path, default=ROOT,
                        help="the checkout whose studio package is measured")
    parser.add_argument("--database", type=Path,
                        help="measure this file as it is (no build, copy or upgrade figure): "
                             "quick reruns on a copy an earlier run upgraded")
    return parser.parse_args()


def long_tail(rng: random.Random, size: int = 60_000) -> list[str]:
    """Rare words with every initial letter, as a real history has (names, code, typos):
    a short prefix then matches thousands of different words."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10)))
            for _ in range(size)]


def words(rng: random.Random, count: int, tail: list[str]) -> str:
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:
            out.append(rng.choice(COMMON))
        elif roll < 0.85:
            out.append(rng.choice(TOPICS))
        else:
            out.append(rng.choice(tail))
    if rng.random() < 0.002:
        out.insert(rng.randrange(len(out) + 1), rng.choice(RARE))
    return " ".join(out)


def build_history(path: Path, messages: int, seed: int = 16) -> None:
    """A fresh file at ``path``: migrations m001-m011, then ``messages`` messages."""
    from sqlite_utils import Database

    from studio.store.migrations import migrations

    rng = random.Random(seed)
    tail = long_tail(rng)
    db = Database(sqlite3.connect(str(path)))
    db.enable_wal()
    later = [m.name for m in migrations.pending(db) if m.name > "m011"]
    migrations.apply(db, stop_before=later or None)
    chats = max(1, messages // MESSAGES_PER_CHAT)
    users = list(CHATS_PER_USER)
    weights = list(CHATS_PER_USER.values())
    stamp = 1_700_000_000_000  # ms
    started = time.perf_counter()
    conn = db.conn
    for first in range(0, chats, 1000):
        conv_rows, message_rows = [], []
        for n in range(first, min(chats, first + 1000)):
            conv_id = f"{n:032x}"
            stamp += 1000
            at = iso(stamp)
            conv_rows.append((conv_id, words(rng, 4, tail).capitalize(), rng.choices(users, weights)[0],
                              rng.choice(MODELS), "ollama", at, at))
            for seq in range(1, MESSAGES_PER_CHAT + 1):
                if len(message_rows) + first * MESSAGES_PER_CHAT >= messages:
                    break
                role = "user" if seq % 2 else "assistant"
                backend, model = ("", "") if role == "user" else ("ollama", conv_rows[-1][3])
                message_rows.append((conv_id, seq, role,
                                     words(rng, rng.randint(8, 20) if role == "user"
                                           else rng.randint(30, 90), tail),
                                     model, backend, "complete", at, at))
        with conn:
            conn.executemany("INSERT INTO conversations (id, title, user, model, backend, "
                             "created_at, updated_at) VALUES (?,?,?,?,?,?,?)", conv_rows)
            conn.executemany("INSERT INTO messages (conversation_id, seq, role, content, model, "
                             "backend, status, created_at, updated_at) "
                             "VALUES (?,?,?,?,?,?,?,?,?)", message_rows)
        if first % 10_000 == 0:
            print(f"  built {first * MESSAGES_PER_CHAT:,} messages "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    with conn:  # a few replies cut off by a restart, for start-up to find
        conn.execute("UPDATE messages SET status = 'streaming' WHERE id % 250000 = 7")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def iso(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"


def timed(work, runs: int, clock=time.perf_counter) -> list[float]:
    """Milliseconds of ``runs`` calls of ``work`` on ``clock``. With ``time.process_time``,
    this process's CPU time: on a busy machine the wall time waits for a core, and the
    CPU time is what an idle one would show."""
    out = []
    for _ in range(runs):
        started = clock()
        work()
        out.append((clock() - started) * 1000)
    return out


def show(label: str, figures: list[float], extra: str = "") -> None:
    print(f"  {label:<52} median {statistics.median(figures):8.1f} ms   "
          f"range {min(figures):.1f}–{max(figures):.1f}{extra}", flush=True)


def while_busy(store, busy_work, measured, runs: int) -> list[float]:
    """Time ``measured`` while another thread runs ``busy_work`` again and again."""
    stop, started = threading.Event(), threading.Event()

    def hog():
        while not stop.is_set():
            started.set()
            busy_work()

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    started.wait()
    time.sleep(0.05)  # let the slow read get going
    try:
        figures = []
        for _ in range(runs):
            started_at = time.perf_counter()
            measured()
            figures.append((time.perf_counter() - started_at) * 1000)
            time.sleep(0.1)
        return figures
    finally:
        stop.set()
        thread.join()


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(args.studio.resolve()))
    from studio.store.db import Store
    from studio.store.models import ModelsStore

    print(f"studio from {args.studio.resolve()}; sqlite {sqlite3.sqlite_version}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    if args.database:
        store = Store.open(args.database)
        run(store, args.database, args.runs, Store, ModelsStore)
        store.close()
        print(f"load {os.getloadavg()[0]:.2f}")
        return
    base = args.cache / f"studio-bench-store-v2-{args.messages}.db"
    if not base.exists():
        print(f"Building {args.messages:,} messages into {base} (kept for later runs) …")
        partial = base.with_suffix(".building")
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
        build_history(partial, args.messages)
        partial.rename(base)
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        path = work / "studio.db"
        shutil.copyfile(base, path)
        started = time.perf_counter()
        store = Store.open(path)
        print(f"  upgrade (Store.open applying the new migrations once): "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        run(store, path, args.runs, Store, ModelsStore)
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load {os.getloadavg()[0]:.2f}")


def run(store, path: Path, runs: int, Store, ModelsStore) -> None:
    conv = store.list_conversations(user="owner", limit=1)[0]
    print("Searches (owner, as the sidebar runs them; 50 hits at most):")
    for query in SEARCHES:
        store.search(query, user="owner")  # warm
        hits = len(store.search(query, user="owner"))
        cpu = statistics.median(timed(lambda: store.search(query, user="owner"), runs,
                                     time.process_time))
        show(f"search {query!r}", timed(lambda: store.search(query, user="owner"), runs),
             f"   ({hits} hits; CPU {cpu:.1f} ms)")

    print("While another thread runs searches for 'sourdough t' back to back:")
    busy = lambda: store.search("sourdough t", user="owner")  # noqa: E731
    show("sidebar list (50 chats)",
         while_busy(store, busy, lambda: store.list_conversations(user="owner", limit=50), runs))
    show("save a message (insert + update)",
         while_busy(store, busy, lambda: save_message(store, conv.id), runs))

    print("While another thread reads every message (a slow report):")
    scan = lambda: store.db.execute(  # noqa: E731
        "SELECT count(*) FROM messages WHERE instr(content, 'zzzz') > 0").fetchone()
    show("the scan itself", timed(scan, 2))
    show("sidebar list (50 chats)",
         while_busy(store, scan, lambda: store.list_conversations(user="owner", limit=50), runs))
    show("save a message (insert + update)",
         while_busy(store, scan, lambda: save_message(store, conv.id), runs))

    print("Start-up and reports:")
    reopen = []
    for _ in range(runs):
        fresh = Store.open(path)
        started = time.perf_counter()
        fresh.mark_interrupted_streams("cut off by a restart")
        reopen.append((time.perf_counter() - started) * 1000)
        fresh.close()
    show("mark cut-off replies (fresh connection)", reopen)
    models = ModelsStore(store)
    show("models' last use (unused-models report)", timed(models.last_used, runs))
    show("one conversation's messages", timed(lambda: store.messages(conv.id), runs))


def save_message(store, conv_id: str) -> None:
    message = store.add_message(conv_id, "assistant", "", status="streaming")
    store.update_message(message.id, content="saved while busy", status="complete")


if __name__ == "__main__":
    main()
