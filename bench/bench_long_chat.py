"""Benchmark: opening a 5,000-message conversation in the browser, and "Load earlier".

Run from the repository root:  ``.venv/bin/python bench/bench_long_chat.py``; with
``--before /path/to/older/checkout`` the same runs go first against that checkout's
``app.py`` (the figure to compare with, in the same run). Prints a table; never asserts.
Run it on an idle machine: it prints the load average before and after.

What runs: the fake Ollama (tests/fakes/ollama_server.py) in its own process, and for each
checkout ``python app.py`` on a fresh data folder holding one conversation of 5,000
messages (tests/long_chat.py, one bulk insert). Headless chromium (Playwright, Debian's
``/usr/bin/chromium``) loads the page, finds the chat by its title in the sidebar and clicks
it; the figure is the time from the click until the chat's newest message is in the page,
median of ``--runs`` (a fresh page each run). Then, where the page has it, "Load earlier
messages" is clicked ``--clicks`` times; each click's time is until the button's label
changes (the new messages drawn), median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_chat import FakeProcess, make_apps, machine  # noqa: E402
from tests.long_chat import make_long_chat  # noqa: E402

MESSAGES = 5000
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def click_chat(page, url: str, marker: str) -> float:
    """Load the page and click the chat in the sidebar (found by its title); returns the
    moment of the click."""
    page.goto(url)
    page.wait_for_selector("#chat-input textarea", timeout=120_000)
    page.fill("#conv-search input, #conv-search textarea", f"long {marker}")
    page.wait_for_function(
        "(m) => { const l = document.querySelector('#conv-list');"
        " return l.innerText.includes(m) && l.querySelectorAll('label').length === 1; }",
        arg=marker, timeout=60_000)
    t0 = time.perf_counter()
    page.click(f"#conv-list label:has-text('{marker}')")
    return t0


def open_once(browser, url: str, marker: str) -> tuple[float, int]:
    """Open the chat on a fresh page: (seconds until its newest message shows, messages
    drawn)."""
    page = browser.new_page()
    try:
        t0 = click_chat(page, url, marker)
        page.wait_for_function("(t) => document.querySelector('#chatbot').innerText.includes(t)",
                               arg=f"{marker} message {MESSAGES}:", timeout=180_000)
        return time.perf_counter() - t0, page.locator("#chatbot .message").count()
    finally:
        page.close()


def earlier_clicks(browser, url: str, marker: str, clicks: int) -> list[float]:
    """Open the chat, then click "Load earlier" ``clicks`` times: the seconds of each."""
    page = browser.new_page()
    try:
        click_chat(page, url, marker)
        button = page.locator("#load-earlier")
        try:
            button.wait_for(state="visible", timeout=60_000)
        except Exception:  # noqa: BLE001 - a checkout without the button
            return []
        times = []
        for _ in range(clicks):
            label = button.inner_text()
            t0 = time.perf_counter()
            button.click()
            page.wait_for_function(
                "(l) => { const b = document.querySelector('#load-earlier');"
                " return !b || b.offsetParent === null || b.innerText !== l; }",
                arg=label, timeout=60_000)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        page.close()


def measure(fake_url: str, checkout: str, runs: int, clicks: int) -> dict:
    from playwright.sync_api import sync_playwright

    marker = f"long{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bench-long-chat-") as data:
        make_long_chat(data, MESSAGES, marker)
        studio, _baseline = make_apps(fake_url, data)
        studio.cwd = checkout
        studio.start(timeout=180)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                try:
                    opens = [open_once(browser, studio.url, marker) for _ in range(runs)]
                    steps = earlier_clicks(browser, studio.url, marker, clicks)
                finally:
                    browser.close()
        finally:
            studio.stop()
    return {"open_s": [o[0] for o in opens], "drawn": opens[-1][1], "earlier_s": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="CHECKOUT", help="an older checkout to measure first")
    ap.add_argument("--runs", type=int, default=3, help="opens per checkout (default 3)")
    ap.add_argument("--clicks", type=int, default=5, help='"Load earlier" clicks (default 5)')
    args = ap.parse_args(argv)
    checkouts = ([("before", os.path.abspath(args.before))] if args.before else []) + \
        [("this checkout", ROOT)]
    load_before = os.getloadavg()
    fake = FakeProcess()
    try:
        results = [(name, measure(fake.url, path, args.runs, args.clicks))
                   for name, path in checkouts]
    finally:
        fake.close()
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}; load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"A {MESSAGES:,}-message chat opened from the sidebar in headless chromium; "
          f"median of {args.runs} opens (each run's figure in brackets).")
    print('| checkout | click → newest message shown | `.message` elements in the page | '
          '"Load earlier" click |')
    print("|---|---|---|---|")
    for name, r in results:
        opens = " · ".join(f"{s:.1f}" for s in r["open_s"])
        steps = (f"{statistics.median(r['earlier_s']):.2f} s (median of {len(r['earlier_s'])})"
                 if r["earlier_s"] else "—")
        print(f"| {name} | {statistics.median(r['open_s']):.1f} s ({opens}) | {r['drawn']:,} | "
              f"{steps} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
