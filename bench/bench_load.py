"""Benchmark: the studio under many people at once and as a page opens, beside a bare Gradio
chat app in the same run (issue 16, items 3, 4, 5's opening a chat, 6 and 7).

Run from the repository root:  ``.venv/bin/python bench/bench_load.py``  (about 4 minutes on
2 cores; ``--quick`` fewer runs). Prints a table; ``--write`` also puts it into
docs/benchmarks.md between the ``bench_load`` markers. It never asserts timings.

What runs (every figure is the median of several runs, the studio beside
``bench/baseline_app.py``, a bare ``gr.ChatInterface`` over the ollama client):

* Cold start and idle CPU with no page open: ``bench_chat.bench_start`` (spawn until
  ``GET /`` answers 200; the process's CPU from 1 to 5 s after that, no client).
* Page load until the message box is usable, in headless chromium (Playwright,
  /usr/bin/chromium): a fresh browser context per run (nothing cached), ``goto`` the app,
  and the page's own clock (``performance.now()``, from navigation start) when the message
  box's textarea is shown and enabled. Beside it, the queue events the page started in its
  first 3 s (``POST /gradio_api/queue/join``): what a page load costs the server.
* A tab's first opening on a fresh page (the studio builds it then), click to its first
  control shown, timed in the page.
* Opening a conversation of 100 messages in the same chromium: a click on the chat in the
  sidebar until the chatbot shows its last message, timed in the page, alternating between
  two such chats so each click opens the other.
* Twenty at once: 20 page sessions (each opened with one cheap event, as a page load does;
  the studio's with its chat load event) send a message at the same moment as the page
  does, each page on its own plain-socket client (``gradio_queue.LeanHttp``; httpx clients,
  as before, with ``--httpx-client``): the bare app through the browser's queue route; the
  studio through its quick send (``POST /studio/send``, its Gradio send event with the
  ticket meanwhile: ``ui/chat_quick.py``), and again through the queue route as API callers
  do. The fake Ollama answers each with 200 tokens at 10 ms; the studio also runs an image
  job on a fake ComfyUI meanwhile. Time to first token per chat, p50 and
  p95, beside one chat alone on the same app. The bare app runs it twice: as it comes
  (Gradio's default concurrency limit of 1: the twenty queue) and with no limit
  (``BASELINE_UNLIMITED=1``), which is what Gradio's own event path costs twenty at once.
  While the twenty stream, a probe opens a stored conversation, opens the gallery and runs the status strip's tick, one after the
  other, and the same probe runs on the idle studio for comparison.

Everything binds 127.0.0.1; children are stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from bench_chat import (RUN_TIMEOUT_S, STUDIO_ARGS, App, FakeProcess, answer_text,  # noqa: E402
                        bench_start, find_endpoint, find_page_event, free_port, log, machine,
                        make_apps, open_page)
from gradio_queue import LIVE_COOKIE, LeanHttp, LiveReader, page_config, queue_call  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONCURRENT = 20
PACE = (200, 0.010)  # tokens, seconds between them
OPEN_SIZE = 100
TARGET_LOAD_RATIO = 1.3
TARGET_START_RATIO = 1.2
TARGET_P95_ADDED_MS = 100.0
TARGET_OPEN_MS = 150.0
# The pages of "twenty at once" send over ``LeanHttp`` (plain sockets): with an httpx client
# each, this one process's GIL staggered their requests by 20-30 ms (``gradio_queue.py``).
# ``--httpx-client`` (or BENCH_HTTPX_CLIENT=1) measures as before, for comparing with older
# figures.
CLIENT = {"httpx": bool(os.environ.get("BENCH_HTTPX_CLIENT"))}


def pct(values, q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def med(values):
    return statistics.median(values) if values else None


def fmt(x, digits=0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


# --------------------------------------------------------------------------------------
# Data for the studio: two chats of OPEN_SIZE messages and one short one
# --------------------------------------------------------------------------------------

def fill(data_dir: Path) -> dict[str, str]:
    """Chats for the owner: "long A", "long B" (OPEN_SIZE messages each, the last one naming
    the chat) and "short"; their ids by title."""
    from studio.store.db import Store

    store = Store.open(data_dir / "studio.db")
    ids = {}
    for title, size in (("long A", OPEN_SIZE), ("long B", OPEN_SIZE), ("short A", 4),
                        ("short B", 4)):
        conv = store.create_conversation(title, user="owner", model="llama3.2:latest",
                                         backend="ollama")
        for n in range(size):
            last = n == size - 1
            text = (f"The end of {title}." if last else
                    "Some words of a reply, " * 12 + f"**{n}** and `code {n}`.")
            store.add_message(conv.id, "user" if n % 2 == 0 else "assistant", text,
                              model="llama3.2:latest" if n % 2 else "",
                              backend="ollama" if n % 2 else "")
        ids[title] = conv.id
    store.close()
    return ids


# --------------------------------------------------------------------------------------
# Chromium: page load, and opening a chat
# --------------------------------------------------------------------------------------

USABLE_JS = """(sel) => {
  const box = document.querySelector(sel);
  return box && !box.disabled && box.offsetParent !== null ? performance.now() : false;
}"""

OPEN_JS = """async ([title, marker]) => {
  const label = [...document.querySelectorAll('#conv-list label')]
    .find(l => l.innerText.trim().startsWith(title));
  if (!label) return -1;
  const t0 = performance.now();
  label.click();
  return await new Promise((resolve) => {
    const check = () => {
      const bot = document.querySelector('#chatbot');
      if (bot && bot.innerText.includes(marker)) resolve(performance.now() - t0);
      else if (performance.now() - t0 > 20000) resolve(-2);
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def page_loads(browser, url: str, selector: str, runs: int
               ) -> tuple[list[float], list[float], list[int], list[int]]:
    """Milliseconds from navigation start to a usable message box, for ``runs`` fresh
    contexts (one unmeasured first) and for the same page opened again in each (the
    browser's cache warm: a returning visitor); the queue events each first page started
    within 3 s; and the JavaScript files it fetched until its message box was usable."""
    cold, warm, joins, scripts = [], [], [], []
    for run in range(runs + 1):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url) if "queue/join" in r.url else None)
        js: list[str] = []
        page.on("request", lambda r: js.append(r.url) if r.url.split("?")[0].endswith(".js")
                else None)
        usable, count, files = [], 0, 0
        for visit in range(2):
            page.goto(url, wait_until="commit")
            usable.append(page.wait_for_function(USABLE_JS, arg=selector, timeout=30_000,
                                                 polling="raf").json_value())
            files = files if visit else len(js)
            page.wait_for_timeout(3000)
            count = count if visit else len(seen)
        if run:
            cold.append(float(usable[0]))
            warm.append(float(usable[1]))
            joins.append(count)
            scripts.append(files)
        ctx.close()
    return cold, warm, joins, scripts


TABS = [("Images", "#img-generate"), ("Models", "#models-download-btn"),
        ("Costs", "#costs-refresh"), ("Arena", "#arena-run"), ("Settings", "#settings-account")]

TAB_JS = """async ([name, sel]) => {
  const tab = [...document.querySelectorAll('button[role=tab]')]
    .find(b => b.innerText.trim() === name);
  const t0 = performance.now();
  tab.click();
  return await new Promise((resolve) => {
    const check = () => {
      const el = document.querySelector(sel);
      if (el && el.offsetParent !== null) resolve(performance.now() - t0);
      else if (performance.now() - t0 > 20000) resolve(-1);
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def tab_opens(browser, url: str, runs: int) -> dict[str, list[float]]:
    """Click to the tab's first control shown, for each tab's first opening on a fresh
    page (the tabs are built then: the studio's ui/lazy.py); one unmeasured page first."""
    times: dict[str, list[float]] = {name: [] for name, _ in TABS}
    for run in range(runs + 1):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_selector("#chat-input textarea")
        page.wait_for_timeout(1500)  # the page's load events done
        for name, selector in TABS:
            ms = page.evaluate(TAB_JS, [name, selector])
            if ms < 0:
                raise RuntimeError(f"the {name} tab did not show {selector}")
            if run:
                times[name].append(ms)
            page.wait_for_timeout(700)
        ctx.close()
    return times


def chat_opens(browser, url: str, runs: int, kind: str = "long") -> list[float]:
    """Click-to-shown for a chat of OPEN_SIZE messages (``kind`` "long") or of 4 ("short"),
    alternating between two such chats."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("() => [...document.querySelectorAll('#conv-list label')]"
                           ".some(l => l.innerText.includes('long B'))", timeout=30_000)
    times = []
    for run in range(runs + 2):  # the first two open each chat once, unmeasured
        title = f"{kind} A" if run % 2 == 0 else f"{kind} B"
        ms = page.evaluate(OPEN_JS, [title, f"The end of {title}."])
        if ms < 0:
            raise RuntimeError(f"opening {title!r} failed ({ms})")
        if run >= 2:
            times.append(ms)
        page.wait_for_timeout(300)
    ctx.close()
    return times


def bench_browser(studio, baseline, runs: int) -> dict:
    from playwright.sync_api import sync_playwright

    res = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for app, selector in ((studio, "#chat-input textarea"), (baseline, "textarea")):
                app.start()
                try:
                    (res[app.name, "load"], res[app.name, "warm"], res[app.name, "joins"],
                     res[app.name, "scripts"]) = page_loads(browser, app.url, selector, runs)
                    log(f"{app.name}: page usable {fmt(med(res[app.name, 'load']))} ms, "
                        f"{med(res[app.name, 'joins'])} events on load, "
                        f"{med(res[app.name, 'scripts'])} JS files")
                    if app is studio:
                        res["open"] = chat_opens(browser, app.url, runs * 2)
                        res["open short"] = chat_opens(browser, app.url, runs * 2, "short")
                        log(f"open a chat of {OPEN_SIZE}: {fmt(med(res['open']))} ms, of 4: "
                            f"{fmt(med(res['open short']))} ms")
                        res["tabs"] = tab_opens(browser, app.url, runs)
                        log("first opening of each tab: " + ", ".join(
                            f"{k} {fmt(med(v))} ms" for k, v in res["tabs"].items()))
                finally:
                    app.stop()
        finally:
            browser.close()
    return res


# --------------------------------------------------------------------------------------
# Twenty at once
# --------------------------------------------------------------------------------------

def first_token_ms(app, http, ep, session: str, want: str, t_start: float,
                   read_live: bool = True) -> float:
    """Milliseconds from ``t_start`` to the first non-empty answer; reads to the end.
    ``read_live``: read the text over /studio/live once an update says so, as the studio's
    page does (not when it reads it already: a quick send)."""
    first = None
    done = False
    live = LiveReader(app.url, lean=not CLIENT["httpx"])  # the page reads /studio/live
    for msg in queue_call(http, app.url, data=ep.data, fn_index=ep.fn_index,
                          trigger_id=ep.trigger_id, session=session,
                          deadline=time.perf_counter() + RUN_TIMEOUT_S,
                          clock=time.perf_counter, what=app.name):
        text = answer_text(msg.values[ep.text_pos])
        if text and first is None:
            first = msg.at
        done = done or text.rstrip().endswith(want)
        if read_live and http.cookies.get("studio_live"):
            live.look(msg.values)
    live.join()
    if first is None or not done:
        raise RuntimeError(f"{app.name}: a reply did not complete")
    return (first - t_start) * 1000


def quick_first_token_ms(app, http, ep, session: str, want: str, t_start: float) -> float:
    """What the studio's page does (``assets/studio.js``, ``ui/chat_quick.py``): post the
    message to /studio/send, whose answer streams the reply's text after a ``started``
    event with the ticket; the send event runs with that ticket from the stream's ``go``
    event on (the Stop button, the sidebar, the finished message), read to its end.
    Milliseconds from ``t_start`` to the first text read."""
    body = {"page": session, "text": ep.data[0], "model": STUDIO_ARGS[0], "system": "",
            "incognito": False, "params": STUDIO_ARGS[3:9]}
    ended: list = []
    thread = None
    first, event, ticket = None, "message", None

    def follow() -> None:
        sent = replace(ep, data=[*ep.data[:-1], ticket])
        try:
            ended.append(first_token_ms(app, http, sent, session, want, 0.0, read_live=False))
        except Exception as exc:  # noqa: BLE001 - reported after the run
            ended.append(exc)

    with http.stream("POST", app.url + "studio/send", json=body) as resp:
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            raise RuntimeError(f"studio: the quick send gave no ticket ({resp.read()[:200]})")
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if event == "started":
                ticket = data["ticket"]
            elif event == "go" and thread is None:  # the page's Gradio event follows now
                thread = threading.Thread(target=follow, daemon=True)
                thread.start()
            elif first is None and data.get("text"):
                first = time.perf_counter()
            event = "message"
    if thread is None and ticket:  # the stream ended before its "go": the page sends now
        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
    if thread is not None:
        thread.join(RUN_TIMEOUT_S)
    if first is None or not ended or not isinstance(ended[0], float):
        raise RuntimeError(f"studio: a quick-sent reply did not complete ({ended})")
    return (first - t_start) * 1000


def chats_at_once(fake, app, ep, page, n: int, quick: bool = False) -> list[float]:
    """``n`` chats sent at the same moment, each from its own page session; TTFT of each."""
    import httpx

    # The studio's cookie as its page script sets it (the bare app ignores it).
    clients = [httpx.Client(timeout=30, cookies=LIVE_COOKIE) if CLIENT["httpx"]
               else LeanHttp(cookies=LIVE_COOKIE, timeout=30) for _ in range(n)]
    sessions = [uuid.uuid4().hex[:11] for _ in range(n)]
    try:
        for http, session in zip(clients, sessions):
            open_page(app, http, page, session)
        for _ in range(n):
            fake.queue(PACE[0], PACE[1])
        barrier = threading.Barrier(n + 1)
        out: list = [None] * n

        def one(i: int) -> None:
            barrier.wait()
            try:
                measure = quick_first_token_ms if quick else first_token_ms
                out[i] = measure(app, clients[i], ep, sessions[i], f"tok{PACE[0] - 1}", t_start)
            except Exception as exc:  # noqa: BLE001 - reported after the run
                out[i] = exc

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        t_start = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join(RUN_TIMEOUT_S)
        failed = [o for o in out if not isinstance(o, float)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} chats failed: {failed[0]!r}")
        return out
    finally:
        for http in clients:
            http.close()


class Probe:
    """The rest of the page while chats stream: open a stored chat, open the gallery, the
    status strip's tick, in turn, each through the queue route; milliseconds by kind."""

    def __init__(self, app, http, chat_id: str) -> None:
        self.app, self.http = app, http
        # One page session that opened every tab: the gallery's event exists only in a
        # page that built the Images tab (the studio's ui/lazy.py).
        self.session = uuid.uuid4().hex[:11]
        cfg = page_config(http, app.url, self.session)
        self.calls = {
            "open a chat": find_endpoint(app, http, "open_conversation", [chat_id], cfg),
            "open the gallery": find_endpoint(app, http, "open_gallery", ["", "", "", 1], cfg),
            "status tick": self._tick(cfg),
        }
        self.times: dict[str, list[float]] = {k: [] for k in self.calls}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _tick(cfg):
        from bench_chat import Endpoint

        strip = next(c["id"] for c in cfg["components"]
                     if c.get("props", {}).get("elem_id") == "top-bar")
        for d in cfg["dependencies"]:
            if d["targets"] and d["targets"][0][1] == "tick" and strip in d["outputs"]:
                return Endpoint(d["id"], d["targets"][0][0], 0, 0, [None] * len(d["inputs"]))
        raise RuntimeError("no status tick event in /config")

    def once(self) -> None:
        for kind, ep in self.calls.items():
            t0 = time.perf_counter()
            for _msg in queue_call(self.http, self.app.url, data=ep.data, fn_index=ep.fn_index,
                                   trigger_id=ep.trigger_id, session=self.session,
                                   deadline=t0 + RUN_TIMEOUT_S, clock=time.perf_counter,
                                   what=kind):
                pass
            self.times[kind].append((time.perf_counter() - t0) * 1000)

    def start(self) -> None:
        def loop():
            while not self._stop.is_set():
                self.once()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RUN_TIMEOUT_S)


def image_job(app, http, comfy_url: str) -> threading.Thread:
    """An image job on the fake ComfyUI, followed through the queue route in a thread."""
    from bench_images import Event, form

    event = Event(http, app.url, "generate_images", form(20, 512))

    def run():
        for _ in event.stream():
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def bench_concurrent(fake, studio, baseline, comfy_url: str, chat_id: str, rounds: int) -> dict:
    import httpx

    res: dict = {}
    # The bare app once more with no concurrency limit on its chat (Gradio's default of 1
    # serves the twenty one after another): what Gradio's own path costs twenty at once.
    unlimited = App("unlimited", baseline.argv, {**baseline.env, "BASELINE_UNLIMITED": "1"},
                    cwd=baseline.cwd)
    # BENCH_STUDIO_ONLY=1: the studio alone (while working on it; the table then fails).
    apps = (studio,) if os.environ.get("BENCH_STUDIO_ONLY") else (studio, baseline, unlimited)
    for app in apps:
        # The studio's page sends through /studio/send (its quick send); API callers and a
        # page without the script go through Gradio's queue: both, in turn, each round.
        modes = [("studio", True), ("studio queue", False)] if app is studio else \
            [(app.name, False)]
        app.start()
        try:
            with httpx.Client(timeout=30) as http:
                if app is studio:
                    ep = find_endpoint(app, http, "send", ["hi", [], *STUDIO_ARGS])
                    page = find_load_event(app, http)  # the page that opens is known
                else:
                    ep = find_endpoint(app, http, "chat", ["hi"])
                    page = find_page_event(app, http)
                for _name, quick in modes:
                    chats_at_once(fake, app, ep, page, 1, quick)  # warm-up
                probe = Probe(app, http, chat_id) if app is studio else None
                if probe is not None:
                    for _ in range(3):
                        probe.once()
                    res["probe idle"] = {k: list(v) for k, v in probe.times.items()}
                    probe.times = {k: [] for k in probe.times}
                for _ in range(rounds):
                    for name, quick in modes:
                        res.setdefault((name, "single"), []).extend(
                            chats_at_once(fake, app, ep, page, 1, quick))
                        job = None
                        if probe is not None:
                            job = image_job(app, http, comfy_url)
                            probe.start()
                        cpu0 = app.cpu_s()
                        res.setdefault((name, "many"), []).extend(
                            chats_at_once(fake, app, ep, page, CONCURRENT, quick))
                        res.setdefault((name, "cpu"), []).append(app.cpu_s() - cpu0)
                        if probe is not None:
                            probe.stop()
                            probe._stop.clear()
                            job.join(RUN_TIMEOUT_S)
                if probe is not None:
                    res["probe busy"] = probe.times
                for name, _quick in modes:
                    single, many = res[name, "single"], res[name, "many"]
                    log(f"{name}: one chat {fmt(med(single))} ms; {CONCURRENT} at once p50 "
                        f"{fmt(pct(many, 50))} / p95 {fmt(pct(many, 95))} ms")
        finally:
            app.stop()
    return res


def find_load_event(app, http):
    """The studio's chat load event, as a page opens: it fills the page and notes who
    opened it (a quick send is taken only from a page its sender opened)."""
    from bench_chat import Endpoint

    cfg = http.get(app.url + "config").json()
    kinds = {c["id"]: c.get("type") for c in cfg["components"]}
    for d in cfg["dependencies"]:
        if (d["targets"] and d["targets"][0][1] == "load"
                and any(kinds.get(o) == "chatbot" for o in d["outputs"])):
            data = [None if kinds.get(i) == "state" else "" for i in d["inputs"]]
            return Endpoint(d["id"], d["targets"][0][0], 0, 0, data)
    raise RuntimeError("studio: no chat load event in /config")


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------

def build_table(start, browser, conc, runs: int) -> str:
    rows = [("Figure", "studio", "bare Gradio", "target", "met")]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    if start:
        s, b = med(start["studio"]["start"]), med(start["baseline"]["start"])
        rows.append(("Cold start to the first 200 (s)", fmt(s, 2), fmt(b, 2),
                     f"≤ {TARGET_START_RATIO} × bare", yes(s <= TARGET_START_RATIO * b)))
        s, b = med(start["studio"]["start_cpu"]), med(start["baseline"]["start_cpu"])
        rows.append(("  its CPU time (s; less hostage to other load than the wall time)",
                     fmt(s, 2), fmt(b, 2), f"≤ {TARGET_START_RATIO} × bare",
                     yes(s <= TARGET_START_RATIO * b)))
        s, b = med(start["studio"]["idle_cpu"]), med(start["baseline"]["idle_cpu"])
        rows.append(("Idle CPU, no page open (CPU-ms/s)", fmt(s, 1), fmt(b, 1), "≤ bare",
                     yes(s <= b * 1.05)))
    if browser:
        s, b = med(browser["studio", "load"]), med(browser["baseline", "load"])
        rows.append(("Page load until the message box is usable (ms, chromium)", fmt(s), fmt(b),
                     f"≤ {TARGET_LOAD_RATIO} × bare", yes(s <= TARGET_LOAD_RATIO * b)))
        s, b = med(browser["studio", "warm"]), med(browser["baseline", "warm"])
        rows.append(("  the same, opened again in that browser (its cache warm)", fmt(s),
                     fmt(b), f"≤ {TARGET_LOAD_RATIO} × bare", yes(s <= TARGET_LOAD_RATIO * b)))
        rows.append(("Queue events a page starts as it opens",
                     fmt(med(browser["studio", "joins"])), fmt(med(browser["baseline", "joins"])),
                     "", ""))
        rows.append(("JavaScript files fetched until the message box is usable",
                     fmt(med(browser["studio", "scripts"])),
                     fmt(med(browser["baseline", "scripts"])), "", ""))
        o = med(browser["open"])
        rows.append((f"Click a chat of {OPEN_SIZE} messages → shown (ms, chromium)", fmt(o), "",
                     f"≤ {TARGET_OPEN_MS:.0f}", yes(o <= TARGET_OPEN_MS)))
        rows.append(("  the same for a chat of 4 messages (Gradio's round trip and a redraw)",
                     fmt(med(browser["open short"])), "", "", ""))
        rows.append(("A tab's first opening on a page → its first control shown (ms): "
                     + ", ".join(name for name, _ in TABS),
                     " / ".join(fmt(med(v)) for v in browser["tabs"].values()), "", "", ""))
    if conc:
        for name in ("studio", "studio queue", "baseline", "unlimited"):
            one, many = conc[name, "single"], conc[name, "many"]
            cell = f"{fmt(med(one))} / {fmt(pct(many, 50))} / {fmt(pct(many, 95))}"
            conc[name, "cell"] = cell
        s1, sm = med(conc["studio", "single"]), pct(conc["studio", "many"], 95)
        rows.append((f"TTFT (ms): one chat / {CONCURRENT} at once p50 / p95 "
                     f"({PACE[0]} tokens at {PACE[1] * 1000:.0f} ms; studio + an image job)",
                     conc["studio", "cell"], conc["baseline", "cell"],
                     f"p95 ≤ one + {TARGET_P95_ADDED_MS:.0f}",
                     yes(sm <= s1 + TARGET_P95_ADDED_MS)))
        rows.append(("  the bare app with no concurrency limit (Gradio's default is 1)", "",
                     conc["unlimited", "cell"], "", ""))
        rows.append(("  the studio through Gradio's queue (API callers; a page without the "
                     "script)", conc["studio queue", "cell"], "", "", ""))
        rows.append((f"Server CPU-s for the {CONCURRENT} chats (4,000 tokens; studio: and the "
                     "image job and the probe)", fmt(med(conc["studio", "cpu"]), 2),
                     fmt(med(conc["baseline", "cpu"]), 2), "", ""))
        for kind in conc["probe idle"]:
            idle, busy = conc["probe idle"][kind], conc["probe busy"][kind]
            worst = fmt(max(busy) if busy else None)
            rows.append((f"  {kind} (ms): studio idle / while the {CONCURRENT} stream "
                         "(median, max)", f"{fmt(med(idle))} / {fmt(med(busy))}, max {worst}",
                         "", "keeps answering", yes(bool(busy))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("")
    lines.append(f"Medians of {runs} runs (chromium loads: {runs} fresh contexts after one "
                 f"unmeasured; chat opens: {runs * 2} clicks).")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    begin, end = "<!-- bench_load:begin -->", "<!-- bench_load:end -->"
    doc = DOC.read_text(encoding="utf-8")
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--runs", type=int, help="runs per figure (default 5; --quick 3)")
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-concurrent", action="store_true")
    ap.add_argument("--write", action="store_true", help="put the table into docs/benchmarks.md")
    ap.add_argument("--httpx-client", action="store_true",
                    help="the twenty pages send with httpx, as before 2026-12-05 (slower client)")
    args = ap.parse_args(argv)
    CLIENT["httpx"] = CLIENT["httpx"] or args.httpx_client
    runs = args.runs or (3 if args.quick else 5)
    from tests.fakes.comfyui_server import FakeComfyUI

    load0 = os.getloadavg()[0]
    t_begin = time.perf_counter()
    fake = FakeProcess()
    comfy = FakeComfyUI(step_delay=0.05).start()
    start = browser = conc = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as data_dir:
            ids = fill(Path(data_dir))
            studio, baseline = make_apps(fake.url, data_dir)
            studio.env["COMFYUI_URL"] = comfy.url
            try:
                if not args.skip_start:
                    start = bench_start(studio, baseline, runs)
                if not args.skip_browser:
                    browser = bench_browser(studio, baseline, runs)
                if not args.skip_concurrent:
                    conc = bench_concurrent(fake, studio, baseline, comfy.url, ids["short A"],
                                            max(2, runs // 2))
            finally:
                studio.stop()
                baseline.stop()
    finally:
        fake.close()
        comfy.stop()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/bench_load.py" + (" --quick" if args.quick else "")
    header = (f"Run {when} on {machine()}: `{cmd}` took {time.perf_counter() - t_begin:.0f} s. "
              f"1-min load average before / after: {load0:.2f} / {os.getloadavg()[0]:.2f}.")
    table = build_table(start, browser, conc, runs)
    print(header + "\n\n" + table)
    if args.write:
        write_doc(header + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
