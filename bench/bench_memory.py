"""Benchmark: a studio process's memory (RSS) over many chat turns and gallery page loads.

Run from the repository root:  ``.venv/bin/python bench/bench_memory.py``  (``--quick`` cuts
the counts to a fifth). Prints figures; it never asserts them. Run it on an idle machine.

What runs:

* The fake Ollama (tests/fakes/ollama_server.py) in its own process, as bench_chat.py runs it;
  each chat reply is 50 tokens at full speed.
* ``python app.py`` (the studio, no users, on 127.0.0.1) on a fresh data folder holding a few
  hundred gallery rows with small PNG files, written through the store API before it starts.
* Chat: N turns through the page's Gradio API with gradio_client (``/send``, the same event the
  Send button runs). Every 10 turns the client starts a fresh page session (a new
  conversation), as a person opening the page again would; so the figure includes Gradio's
  per-session state as well as the chat service's. RSS (the studio process and its children,
  psutil) is read at the start and after every 100 turns.
* Gallery: N page loads of the Images tab's gallery (``/open_gallery``, what selecting the
  Gallery tab runs), cycling through the pages of 48, RSS read every 100.

Growth per 100 after warm-up = the median of the per-sample steps after the first two (the
first steps include lazy imports, caches filling and the allocator's arenas growing). A
bounded process shows that median near zero; a leak shows a steady positive step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_chat import (STUDIO_ARGS, FakeProcess, find_page_event, log, machine,  # noqa: E402
                        make_apps, open_page)

REPLY_TOKENS = 50
TURNS_PER_PAGE = 10
WARM_UP = 2  # samples: the first two steps are warm-up
IMAGES = 300


def tiny_png(seed: int) -> bytes:
    """A valid 8x8 PNG of one colour (no Pillow needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rgb = bytes([seed % 256, (seed * 7) % 256, (seed * 13) % 256])
    raw = b"".join(b"\x00" + rgb * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def seed_gallery(data_dir: str, n: int) -> None:
    """n gallery rows and their files, through the store API (as the job service stores them)."""
    from studio.costs.accounting import OWNER
    from studio.store.db import Store
    from studio.store.images import ImageStore

    outputs = os.path.join(data_dir, "outputs")
    store = Store.open(os.path.join(data_dir, "studio.db"))
    images = ImageStore(store)
    for i in range(n):
        path, thumb = f"2025/01/bench-{i}.png", f"thumbs/2025/01/bench-{i}.png"
        for rel in (path, thumb):
            full = os.path.join(outputs, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(tiny_png(i))
        images.add_image(path=path, thumb=thumb, prompt=f"a fox number {i}", workflow="sd15_txt2img",
                         model="v1-5.safetensors", user=OWNER, seed=i, params={"prompt": "a fox"},
                         graph={"1": {"class_type": "SaveImage", "inputs": {}}})
    store.close()


def seed_chats(data_dir: str, n: int) -> None:
    """n finished conversations of the owner (a question and an answer each), so the
    sidebar's list is at its size from the first turn on and does not grow with the run."""
    from studio.costs.accounting import OWNER
    from studio.store.db import Store

    store = Store.open(os.path.join(data_dir, "studio.db"))
    for i in range(n):
        chat = store.create_conversation(title=f"earlier chat {i}", model="ollama:bench",
                                         user=OWNER)
        store.add_message(chat.id, "user", f"question {i}")
        store.add_message(chat.id, "assistant", f"answer {i}")
    store.close()


def growth(samples: list[float], every: int) -> float | None:
    """Median MB per 100 of the steps after warm-up (None when too few samples)."""
    skip = WARM_UP
    steps = [b - a for a, b in zip(samples[skip:], samples[skip + 1:])]
    return statistics.median(steps) * 100 / every if steps else None


def chat_turns(fake, studio, http, n: int, every: int, one_page: bool) -> list[float]:
    from gradio_client import Client

    client = Client(studio.url, verbose=False, download_files=False)
    page = find_page_event(studio, http)
    samples = [studio.rss_mb()]
    for i in range(n):
        if i % TURNS_PER_PAGE == 0 and one_page:
            client.predict("", api_name="/open_conversation")  # "+ New chat" on the same page
        elif i % TURNS_PER_PAGE == 0:
            client.reset_session()  # a new page: new gr.State, a new conversation
            open_page(studio, http, page, client.session_hash)
        fake.queue(REPLY_TOKENS)
        client.submit(f"turn {i}", [], *STUDIO_ARGS,
                      api_name="/send").result(timeout=60)
        if (i + 1) % every == 0:
            samples.append(studio.rss_mb())
            log(f"chat {i + 1}: {samples[-1]:.1f} MB")
    client.close()
    return samples


def gallery_loads(studio, n: int, every: int, pages: int) -> list[float]:
    import uuid

    import httpx

    from bench_chat import find_endpoint
    from gradio_queue import page_config, queue_call

    # One page, as a browser's: the gallery's event exists only in a page that built the
    # Images tab (the studio's ui/lazy.py), so not through gradio_client.
    http = httpx.Client(timeout=60)
    session = uuid.uuid4().hex[:11]
    ep = find_endpoint(studio, http, "open_gallery", ["", None, None, 1],
                       page_config(http, studio.url, session))
    samples = [studio.rss_mb()]
    for i in range(n):
        data = [*ep.data[:-1], i % pages + 1]
        *_, last = queue_call(http, studio.url, data=data, fn_index=ep.fn_index,
                              trigger_id=ep.trigger_id, session=session,
                              deadline=time.monotonic() + 60, what="the gallery")
        out = last.values
        if i == 0 and not out[0]:
            raise RuntimeError(f"the gallery came back empty: {str(out)[:300]}")
        if (i + 1) % every == 0:
            samples.append(studio.rss_mb())
            log(f"gallery {i + 1}: {samples[-1]:.1f} MB")
    http.close()
    return samples


def report(title: str, samples: list[float], every: int, baseline: float) -> str:
    g = growth(samples, every)
    cells = " · ".join(f"{s:.0f}" for s in samples)
    return (f"| {title} | {samples[0]:.0f} | {cells} | {samples[-1] - samples[0]:+.0f} | "
            f"{'—' if g is None else f'{g:+.2f}'} | {baseline:.0f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the counts")
    ap.add_argument("--one-page", action="store_true",
                    help="chat on one page session (a new chat every 10 turns, not a new page)")
    ap.add_argument("--max-pages", type=int,
                    help="STUDIO_MAX_PAGE_SESSIONS for the studio (default: its own default)")
    ap.add_argument("--seed-chats", type=int, default=0,
                    help="conversations stored before the start (250: the sidebar's list is "
                         "at its 200 from the first turn)")
    args = ap.parse_args(argv)
    import httpx

    turns = loads = 200 if args.quick else 1000
    every = 20 if args.quick else 100
    pages = -(-IMAGES // 48)
    fake = FakeProcess()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as data:
        seed_gallery(data, IMAGES)
        if args.seed_chats:
            seed_chats(data, args.seed_chats)
        studio, baseline = make_apps(fake.url, data)
        if args.max_pages:
            studio.env["STUDIO_MAX_PAGE_SESSIONS"] = str(args.max_pages)
        try:
            # The bare Gradio chat app's RSS after start: the floor any Gradio app pays.
            baseline.start()
            time.sleep(3)
            base_rss = baseline.rss_mb()
            baseline.stop()
            studio.start()
            time.sleep(3)
            t0 = time.perf_counter()
            with httpx.Client(timeout=30) as http:
                chat = chat_turns(fake, studio, http, turns, every, args.one_page)
            chat_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            gallery = gallery_loads(studio, loads, every, pages)
            gallery_s = time.perf_counter() - t0
        finally:
            studio.stop()
            baseline.stop()
            fake.close()
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    print(f"RSS in MB (the studio process and its children); sampled every {every}; "
          f"growth per 100 = median step after the first {WARM_UP} samples.")
    print("| run | start | every sample | total growth | growth per 100 after warm-up | "
          "bare Gradio app at start |")
    print("|---|---|---|---|---|---|")
    pages_note = "one page" if args.one_page else f"a new page every {TURNS_PER_PAGE}"
    print(report(f"{turns} chat turns via gradio_client `/send`, {pages_note} ({chat_s:.0f} s)",
                 chat, every, base_rss))
    print(report(f"{loads} gallery loads via `/open_gallery`, {IMAGES} images ({gallery_s:.0f} s)",
                 gallery, every, base_rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
