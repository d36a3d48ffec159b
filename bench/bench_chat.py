"""Benchmark: studio start-up and the chat streaming path, beside a bare Gradio chat app.

Run from the repository root:  ``.venv/bin/python bench/bench_chat.py``  (about 3.5 minutes
on a 2-core box; ``--quick`` about 2.5). Prints a table; ``--write`` also puts it into
docs/benchmarks.md between the ``bench_chat`` markers. It never asserts timings. Run it on
an otherwise idle machine: it prints the load average before and after.

What runs, one thing at a time; every figure is the median of several runs:

* A fake Ollama (tests/fakes/ollama_server.py) in its own process, at full speed (no
  delay between tokens), so its CPU is neither counted nor competing with our GIL. This
  script steers it over its stdin ("q N": the next chat request gets exactly N tokens,
  ``make_tokens(N)``).
* Cold start: ``python app.py`` (the studio) and ``python bench/baseline_app.py`` (a bare
  30-line gr.ChatInterface over the ollama client), started the same way, alternating;
  time from spawn until ``GET /`` answers 200, idle CPU from 1 to 5 s after that, and the
  RSS of the process and its children at 5 s. One unmeasured start of each first (it also
  writes each app's bytecode cache, which the measured starts read).
* Streaming, for replies of 100, 1,000 and 5,000 tokens, on three paths:
  - direct: ``ollama.Client(host).chat(stream=True)`` on the same fake, no web app;
  - the browser's route, driven with raw httpx: POST /gradio_api/queue/join (fn_index and
    trigger_id from the app's own /config, state inputs as null) then the SSE stream
    GET /gradio_api/queue/data;
  - gradio_client (``submit``, polled every 1 ms like iterating the Job does).
  Each run first opens a fresh page session with one cheap event, as a browser's page
  load does (Gradio builds a session's state on its first event; that cost is shown apart,
  not in TTFT), so the studio starts a new conversation every time.
  TTFT = submit -> first update whose answer text is non-empty. Tokens/s = N / (update
  completing the answer - first-token update). Server CPU = psutil user+system seconds of
  the app process and its children across the reply, per 1,000 tokens (for direct: this
  process's own CPU, i.e. what the ollama client costs). Bytes = every SSE message of the
  reply; the final ``process_completed`` message repeats the full value once and is shown
  apart.
* Bytes per token as the reply grows: at full speed the studio sends only ~5 updates, so a
  5,000-token reply is also paced (0.5 ms per token, ~1,400 tokens/s) and the bytes per
  token of the first, middle and last third are reported, with the server CPU per update.
* Two probes of realistic pacing: the first token 20 ms late (a model's prompt
  processing), and 300 tokens at ~100 tokens/s (server CPU per update at a model's pace).
* 50 tokens/s (issue 16): 200 tokens, each 20 ms after the last (the first too), at least
  3 runs: server CPU per 1,000 tokens net of idle (the app's idle CPU rate measured for 1 s
  before and after the reply, times the reply's wall time, taken out), and the time to
  first token on the browser's route; then in headless chromium (Debian's, as the browser
  tests use; ``--skip-browser`` leaves it out), a fresh page per run sends "hi" with Enter
  and the page's own clock times Enter → the first token in its DOM (a MutationObserver).

Everything binds 127.0.0.1; every run has a deadline; children are stopped on exit.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from gradio_queue import LIVE_COOKIE, LiveReader, queue_call  # noqa: E402 - bench/, the script's own folder

MODEL = "llama3.2:latest"
STUDIO_MODEL_ID = f"ollama:{MODEL}"
# After the message: model, system prompt, incognito, the six parameters, and no quick-send
# ticket (the studio's page script has one: ui/chat_quick.py, bench_load.py).
STUDIO_ARGS = [STUDIO_MODEL_ID, "", False, 0.8, 0.9, 0, -1, 0, "auto", ""]
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
LATE_FIRST_TOKEN_S = 0.020
PACED_DELAY_S = 0.0005  # between tokens in the paced run: ~1,300-2,000 tokens/s
RUN_TIMEOUT_S = 60.0  # one reply; a run past this is abandoned (and redone once)
MODEL_SPEED = (300, 0.01)  # a reply at a real model's pace: 300 tokens at ~100 tokens/s
FIFTY = (200, 0.02)  # 50 tokens/s: 200 tokens, each (the first too) 20 ms after the last
IDLE_S = 1.0  # idle CPU is measured this long before and after each 50 tokens/s reply

# Targets from the issue (ratios against the bare Gradio app, ms against direct Ollama).
TARGET_START_RATIO = 1.2
TARGET_RSS_RATIO = 1.3
TARGET_TTFT_ADDED_MS = 10.0
TARGET_TPS = 2000.0
TARGET_CPU_PER_1K = 0.03
TARGET_PACED_CPU_PER_1K = 0.5  # at 50 tokens/s, net of idle (issue 16)
TARGET_PACED_TTFT_ADDED_MS = 10.0  # the paced first token, against the bare app


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# The fake Ollama, in its own process, steered over stdin
# --------------------------------------------------------------------------------------

def serve_fake() -> None:
    """Child mode: run FakeOllama; stdin "q N [delay [first]]" queues a reply of N tokens."""
    from tests.fakes.ollama_server import FakeOllama, make_tokens

    with FakeOllama("127.0.0.1", 0) as fake:
        fake.add_model("llama3.2")
        print(f"url {fake.url}", flush=True)
        for line in sys.stdin:  # ends when the parent closes our stdin or goes away
            parts = line.split()
            if parts and parts[0] == "q":
                n = int(parts[1])
                delay = float(parts[2]) if len(parts) > 2 else 0.0
                first = float(parts[3]) if len(parts) > 3 else delay
                fake.queue_reply(make_tokens(n), delay=[first] + [delay] * (n - 1))
                print("ok", flush=True)
            elif parts and parts[0] == "x":
                break


class FakeProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-fake"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self._readline(20)
        if not line.startswith("url "):
            stop_process(self.proc)
            raise RuntimeError(f"fake Ollama did not start: {line!r}")
        self.url = line.split()[1]

    def _readline(self, timeout: float) -> str:
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            raise RuntimeError("fake Ollama did not answer")
        return box[0].strip()

    def queue(self, n: int, delay: float = 0.0, first: float | None = None) -> None:
        self.proc.stdin.write(f"q {n} {delay} {delay if first is None else first}\n")
        self.proc.stdin.flush()
        if self._readline(10) != "ok":
            raise RuntimeError("fake Ollama did not queue the reply")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("x\n")
            self.proc.stdin.close()
        stop_process(self.proc)


# --------------------------------------------------------------------------------------
# Apps under test
# --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a child we started (it leads its own process group: start_new_session=True)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class App:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen | None = None
    log: object = None
    cwd: str = ROOT  # the checkout it runs from (bench_long_chat.py runs an older one too)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90.0) -> float:
        """Spawn, poll GET / until 200; returns seconds from spawn to the first 200."""
        import httpx

        self.port = free_port()
        env = {**self.env, "GRADIO_SERVER_PORT": str(self.port)}
        self.log = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        with httpx.Client(timeout=2.0) as http:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    if http.get(self.url).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        out = self.output()
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout} s:\n{out}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def processes(self):
        import psutil

        p = psutil.Process(self.proc.pid)
        return [p, *p.children(recursive=True)]

    def rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in self.processes()) / 2**20

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None


def make_apps(fake_url: str, data_dir: str, studio_root: str = ROOT) -> tuple[App, App]:
    # The apps write their bytecode as Python does by default (into the checkout's
    # __pycache__, which git ignores): the unmeasured first start compiles, the measured ones
    # read it, as any later start of an installed studio does (the Docker image compiles at
    # build). Left in, a PYTHONDONTWRITEBYTECODE here would have every start compile the
    # studio's ~150 modules from source (~0.4 s) while the bare app is one small file.
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GRADIO_", "STUDIO_")) and k != "PYTHONDONTWRITEBYTECODE"}
    base.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
                HF_HUB_OFFLINE="1", OLLAMA_HOST=fake_url)
    studio_env = {**base, "STUDIO_DATA_DIR": data_dir, "OPENROUTER_API_KEY": "",
                  "COMFYUI_URL": f"http://127.0.0.1:{free_port()}"}  # a closed port
    baseline_env = {**base, "BASELINE_MODEL": MODEL}
    studio = App("studio", [sys.executable, "app.py"], studio_env, cwd=studio_root)
    baseline = App("baseline", [sys.executable, os.path.join("bench", "baseline_app.py")], baseline_env)
    return studio, baseline


# --------------------------------------------------------------------------------------
# One streamed reply, three ways
# --------------------------------------------------------------------------------------

def answer_text(value) -> str:
    """The growing answer in an output value: a string, or a chatbot (list of messages)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("metadata"):  # notes, thinking, the collapsed figures line
            return ""
        content = value.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
        return ""
    if isinstance(value, list):
        for msg in reversed(value):
            if isinstance(msg, dict) and msg.get("role") == "assistant" and not msg.get("metadata"):
                return answer_text(msg)
    return ""


class TokenCounter:
    """Tokens in a prefix of ''.join(make_tokens(n)), from its length (no re-scan)."""

    def __init__(self, n: int) -> None:
        self.ends, total = [], 0
        for i in range(n):
            total += len(f"tok{i} ")
            self.ends.append(total)

    def __call__(self, text_len: int) -> int:
        # A stripped trailing space (Chatbot's cleandoc) still counts as the whole token.
        return bisect.bisect_right(self.ends, text_len + 1)


@dataclass
class Run:
    ttft_ms: float
    tps: float | None  # None: the whole answer arrived in the first non-empty update
    total_s: float  # submit -> answer complete
    updates: int
    cpu_per_1k: float | None = None
    thirds: list[float] | None = None  # SSE bytes per token in each third of the reply
    final_bytes: int = 0  # the process_completed message
    stream_bytes: int = 0  # all SSE messages but process_completed
    page_join_ms: float | None = None  # the new session's first queue/join POST (page open)
    net_cpu_per_1k: float | None = None  # cpu_per_1k less the app's idle burn meanwhile

    @property
    def tps_or_overall(self) -> float:
        return self.tps if self.tps is not None else self.n / self.total_s

    n: int = 0


def finish_run(n, t0, first, done, updates, cpu=None, **extra) -> Run:
    if first is None or done is None:
        raise RuntimeError(f"the answer never completed ({updates} updates)")
    span = done - first
    return Run((first - t0) * 1000, n / span if span > 0.0005 else None, done - t0, updates,
               None if cpu is None else cpu / n * 1000, n=n, **extra)


def run_direct(fake: FakeProcess, client, n: int, first_delay: float | None = None) -> Run:
    fake.queue(n, 0.0, first_delay)
    cpu0 = time.process_time()  # this process: the ollama client's own cost, the floor
    t0 = time.perf_counter()
    first = None
    got = updates = 0
    for part in client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
        updates += 1
        if part.message.content:
            got += 1
            if first is None:
                first = time.perf_counter()
    done = time.perf_counter()
    cpu = time.process_time() - cpu0
    if got != n:
        raise RuntimeError(f"direct: got {got} tokens, expected {n}")
    return finish_run(n, t0, first, done, updates, cpu)


def run_client(fake: FakeProcess, app: App, client, http, ep: Endpoint, page: Endpoint, n: int,
               studio: bool) -> Run:
    """One reply through gradio_client; complete when the answer ends with tok{n-1}."""
    client.reset_session()  # a fresh page: new gr.State, so a new conversation each run
    open_page(app, http, page, client.session_hash)
    fake.queue(n)
    want = f"tok{n - 1}"
    cpu0 = app.cpu_s()
    t0 = time.perf_counter()
    if studio:
        job = client.submit("hi", [], *STUDIO_ARGS, api_name="/send")
    else:
        job = client.submit("hi", api_name="/chat")
    first = done = None
    updates = 0
    deadline = t0 + RUN_TIMEOUT_S
    while True:  # what iterating the Job does (1 ms polls), with a deadline
        finished = job.done()
        outs = job.outputs()
        now = time.perf_counter()
        for out in outs[updates:]:
            text = answer_text(out[ep.client_pos] if studio else out)
            if text and first is None:
                first = now
            if done is None and text.rstrip().endswith(want):
                done = now
        updates = len(outs)
        if finished:
            break
        if now > deadline:
            job.cancel()
            raise TimeoutError(f"{app.name}: no complete answer within {RUN_TIMEOUT_S:.0f} s "
                               f"({updates} updates)")
        time.sleep(0.001)
    job.result(timeout=5)
    time.sleep(0.05)  # the server's last bookkeeping for the request, then read its CPU
    return finish_run(n, t0, first, done, updates, app.cpu_s() - cpu0)


@dataclass
class Endpoint:
    fn_index: int
    trigger_id: int | None
    text_pos: int  # which output carries the answer
    client_pos: int  # the same among gradio_client's outputs, which leave out state
    data: list  # the inputs, state inputs as None


def find_endpoint(app: App, http, api_name: str, values: list, cfg: dict | None = None
                  ) -> Endpoint:
    """The dependency's id, trigger and inputs from the app's own /config (or ``cfg``: a
    page's, with the tabs it built, ``gradio_queue.page_config``)."""
    cfg = cfg if cfg is not None else http.get(app.url + "config").json()
    comps = {c["id"]: c for c in cfg["components"]}
    for i, d in enumerate(cfg["dependencies"]):
        if d.get("api_name") == api_name:
            break
    else:
        raise RuntimeError(f"{app.name}: no dependency with api_name {api_name!r}")
    pending = list(values)
    data = [None if comps[c].get("type") == "state" else pending.pop(0) for c in d["inputs"]]
    kinds = [comps[c].get("type") for c in d["outputs"]]
    text_pos = kinds.index("chatbot") if "chatbot" in kinds else \
        next(i for i, k in enumerate(kinds) if k != "state")
    client_pos = sum(1 for k in kinds[:text_pos] if k != "state")
    return Endpoint(d.get("id", i), d["targets"][0][0] if d.get("targets") else None, text_pos,
                    client_pos, data)


def find_page_event(app: App, http) -> Endpoint:
    """A cheap event to open a page's session with: the studio's conversation search, else
    the first event without inputs (the bare ChatInterface has a few)."""
    cfg = http.get(app.url + "config").json()
    deps = cfg["dependencies"]
    d = next((d for d in deps if d.get("api_name") == "search"), None) or \
        next(d for d in deps if not d["inputs"] and d["outputs"] and d.get("queue") is not False)
    data = [""] * len(d["inputs"])
    return Endpoint(d["id"], d["targets"][0][0] if d.get("targets") else None, 0, 0, data)


def open_page(app: App, http, page: Endpoint, session: str) -> float:
    """Run one cheap event in a new session, as a browser's page load does before the user
    can type: Gradio builds the session's state (a config per component) on its first event.
    Returns the milliseconds that first queue/join POST took."""
    t0 = time.perf_counter()
    http.post(app.url + "gradio_api/queue/join",
              json={"data": page.data, "event_data": None, "fn_index": page.fn_index,
                    "trigger_id": page.trigger_id, "session_hash": session}).raise_for_status()
    join_ms = (time.perf_counter() - t0) * 1000
    with http.stream("GET", app.url + "gradio_api/queue/data", params={"session_hash": session},
                     timeout=30) as resp:
        for line in resp.iter_lines():
            if time.perf_counter() - t0 > RUN_TIMEOUT_S:
                raise TimeoutError(f"{app.name}: the page event did not finish")
            if line.startswith("data:") and json.loads(line[5:]).get("msg") in (
                    "process_completed", "close_stream"):
                break
    return join_ms


def run_sse(fake: FakeProcess, app: App, http, ep: Endpoint, page: Endpoint, n: int,
            first_delay: float | None = None, delay: float = 0.0) -> Run:
    """One reply through the browser's queue route; times and bytes of every SSE message.
    With the studio page's cookie on ``http`` (``LIVE_COOKIE``), the text is also read
    over /studio/live as that page reads it, and counted in the updates."""
    session = uuid.uuid4().hex[:11]
    page_ms = open_page(app, http, page, session)
    fake.queue(n, delay, first_delay)
    tokens_in = TokenCounter(n)
    want = f"tok{n - 1}"
    gen: list[tuple[int, int]] = []  # (bytes, tokens so far) of each process_generating
    final_bytes = 0
    first = done = None
    live = LiveReader(app.url)
    cpu0 = app.cpu_s()
    t0 = time.perf_counter()
    for msg in queue_call(http, app.url, data=ep.data, fn_index=ep.fn_index,
                          trigger_id=ep.trigger_id, session=session,
                          deadline=t0 + RUN_TIMEOUT_S, clock=time.perf_counter, what=app.name):
        if http.cookies.get("studio_live"):
            live.look(msg.values)
        text = answer_text(msg.values[ep.text_pos])
        if text and first is None:
            first = msg.at
        if done is None and text.rstrip().endswith(want):
            done = msg.at
        if msg.kind == "process_completed":
            final_bytes = msg.size
        else:
            gen.append((msg.size, tokens_in(len(text))))
    live.join()
    cpu = app.cpu_s() - cpu0
    # Bytes per token in each third: each message counts in the third its tokens end in.
    b3, t3, prev = [0, 0, 0], [0, 0, 0], 0
    for size, tokens in gen:
        third = min(2, (max(tokens, 1) - 1) * 3 // n)
        b3[third] += size
        t3[third] += tokens - prev
        prev = tokens
    thirds = [b / t if t else float("nan") for b, t in zip(b3, t3)]
    return finish_run(n, t0, first, done, len(gen) + 1 + live.events, cpu, thirds=thirds,
                      page_join_ms=page_ms,
                      final_bytes=final_bytes, stream_bytes=sum(b for b, _ in gen))


def idle_rate(app: App, seconds: float = IDLE_S) -> float:
    """The app's CPU-s per second with nothing asked of it (Gradio's queue polls every
    1 ms, ~40-60 ms/s here, whatever the app)."""
    cpu0, t0 = app.cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (app.cpu_s() - cpu0) / (time.perf_counter() - t0)


def run_fifty(fake: FakeProcess, app: App, http, ep: Endpoint, page: Endpoint) -> Run:
    """A reply at 50 tokens/s through the browser's route; its server CPU also net of the
    idle burn, measured just before and after for as long as the reply took."""
    n, delay = FIFTY
    before = idle_rate(app)
    t0 = time.perf_counter()
    if app.name == "studio":  # as the studio's page streams: the text over /studio/live
        import httpx

        with httpx.Client(timeout=30, cookies=LIVE_COOKIE) as lean:
            run = run_sse(fake, app, lean, ep, page, n, delay=delay)
    else:
        run = run_sse(fake, app, http, ep, page, n, delay=delay)
    wall = time.perf_counter() - t0  # page open + reply + the 50 ms after it (run_sse)
    idle = (before + idle_rate(app)) / 2
    run.net_cpu_per_1k = run.cpu_per_1k - idle * wall / n * 1000
    return run


def browser_ttft(fake: FakeProcess, app: App, runs: int, studio: bool) -> list[float]:
    """Headless chromium (Debian's, as the browser tests use): a fresh page per run sends
    "hi" with Enter for a reply at 50 tokens/s; the page's own clock from the Enter key
    to the first token in its DOM (a MutationObserver on textContent), in ms. [] without
    chromium."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        log("chromium is not installed: no page figures")
        return []
    box = "#chat-input textarea" if studio else "textarea"
    n, delay = FIFTY
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for i in range(runs + 1):  # the first warms the browser's cache, not counted
                ctx = browser.new_context()  # no stored state: the studio opens a new chat
                try:
                    pg = ctx.new_page()
                    pg.goto(app.url)
                    pg.wait_for_selector(box, timeout=30_000)
                    if studio:  # the model list is filled on load
                        pg.wait_for_function("() => { const i = document.querySelector("
                                             "'#model-picker input'); return i && i.value; }",
                                             timeout=30_000)
                    pg.evaluate("""() => {
                      window.__t0 = null; window.__t1 = null;
                      document.addEventListener('keydown', (e) => {
                        if (e.key === 'Enter' && window.__t0 === null) window.__t0 = performance.now();
                      }, true);
                      new MutationObserver(() => {
                        if (window.__t0 !== null && window.__t1 === null
                            && document.body.textContent.includes('tok0')) window.__t1 = performance.now();
                      }).observe(document.body, {subtree: true, childList: true, characterData: true});
                    }""")
                    fake.queue(n, delay)
                    pg.fill(box, "hi")
                    pg.press(box, "Enter")
                    pg.wait_for_function("() => window.__t1 !== null", timeout=RUN_TIMEOUT_S * 1000)
                    ms = pg.evaluate("() => window.__t1 - window.__t0")
                    pg.wait_for_function(f"() => document.body.textContent.includes('tok{n - 1}')",
                                         timeout=RUN_TIMEOUT_S * 1000)
                    if i:
                        times.append(ms)
                finally:
                    ctx.close()
        finally:
            browser.close()
    return times


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------

FAILURES: list[str] = []


def retried(what: str, fn, *args, **kwargs) -> Run:
    """Run one measurement; a run that fails (connection dropped...) is logged and redone once."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the output, then one more try
        FAILURES.append(f"{what}: {type(exc).__name__}: {exc}")
        log(f"run failed, retrying once: {FAILURES[-1]}")
        return fn(*args, **kwargs)


def bench_start(studio: App, baseline: App, runs: int) -> dict:
    res = {a: {"start": [], "start_cpu": [], "rss": [], "idle_cpu": []}
           for a in ("studio", "baseline")}
    for i in range(runs + 1):  # run 0 warms the page cache and creates the data dir
        for app in (studio, baseline) if i % 2 == 0 else (baseline, studio):
            try:
                s = app.start()
                start_cpu = app.cpu_s()  # CPU-s to the first 200: less hostage to the load
                time.sleep(1.0)
                cpu0 = app.cpu_s()
                time.sleep(4.0)
                idle = (app.cpu_s() - cpu0) / 4.0 * 1000  # ms of CPU per second, no client
                rss = app.rss_mb()
            finally:
                app.stop()
            if i:
                res[app.name]["start"].append(s)
                res[app.name]["start_cpu"].append(start_cpu)
                res[app.name]["rss"].append(rss)
                res[app.name]["idle_cpu"].append(idle)
            log(f"start {app.name} #{i}{' (warm-up, not counted)' if not i else ''}: "
                f"{s:.2f} s, {rss:.0f} MiB, idle {idle:.1f} CPU-ms/s")
    return res


def bench_stream(fake: FakeProcess, studio: App, baseline: App, sizes: list[int], runs: int,
                 paced_runs: int, browser: bool = True) -> dict:
    import httpx
    import ollama
    from gradio_client import Client

    res: dict = {}
    direct = ollama.Client(host=fake.url)
    run_direct(fake, direct, 10)  # warm-up
    for n in sizes:
        res["direct", n] = [run_direct(fake, direct, n) for _ in range(runs)]
    res["direct", "late"] = [run_direct(fake, direct, 100, LATE_FIRST_TOKEN_S) for _ in range(runs)]
    log("direct: done")

    for app, is_studio in ((studio, True), (baseline, False)):
        app.start()
        client = None
        try:
            client = Client(app.url, verbose=False, analytics_enabled=False)
            with httpx.Client(timeout=30) as http:
                if is_studio:
                    ep = find_endpoint(app, http, "send", ["hi", [], *STUDIO_ARGS])
                else:
                    ep = find_endpoint(app, http, "chat", ["hi"])
                page = find_page_event(app, http)
                run_sse(fake, app, http, ep, page, 10)  # warm-ups
                run_client(fake, app, client, http, ep, page, 10, is_studio)
                for n in sizes:
                    for _ in range(runs):  # interleaved, so drift hits both paths alike
                        res.setdefault((app.name, "sse", n), []).append(
                            retried(f"{app.name} sse {n}", run_sse, fake, app, http, ep, page, n))
                        res.setdefault((app.name, "client", n), []).append(
                            retried(f"{app.name} client {n}", run_client, fake, app, client, http, ep, page, n,
                                    is_studio))
                    s, c = res[app.name, "sse", n], res[app.name, "client", n]
                    log(f"{app.name} {n}: ttft sse {med(s, 'ttft_ms'):.1f} / client "
                        f"{med(c, 'ttft_ms'):.1f} ms; cpu/1k sse {med(s, 'cpu_per_1k'):.3f} / "
                        f"client {med(c, 'cpu_per_1k'):.3f}")
                res[app.name, "sse", "late"] = [
                    retried(f"{app.name} late", run_sse, fake, app, http, ep, page, 100, LATE_FIRST_TOKEN_S)
                    for _ in range(runs)]
                n = max(sizes)
                res[app.name, "sse", "paced"] = [
                    retried(f"{app.name} paced", run_sse, fake, app, http, ep, page, n, delay=PACED_DELAY_S)
                    for _ in range(paced_runs)]
                res[app.name, "sse", "model"] = [
                    retried(f"{app.name} model pace", run_sse, fake, app, http, ep, page, MODEL_SPEED[0],
                            delay=MODEL_SPEED[1]) for _ in range(paced_runs)]
                fifty_runs = max(3, paced_runs)
                res[app.name, "sse", "fifty"] = [
                    retried(f"{app.name} 50 tok/s", run_fifty, fake, app, http, ep, page)
                    for _ in range(fifty_runs)]
                r = res[app.name, "sse", "fifty"]
                log(f"{app.name} 50 tok/s: {med(r, 'updates')} updates, CPU-s per 1k net of idle "
                    f"{med(r, 'net_cpu_per_1k'):.3f} (gross {med(r, 'cpu_per_1k'):.3f}), "
                    f"TTFT {med(r, 'ttft_ms'):.1f} ms")
                if browser:
                    res[app.name, "page", "fifty"] = browser_ttft(fake, app, max(runs, fifty_runs),
                                                                  is_studio)
                    log(f"{app.name} 50 tok/s in chromium: TTFT {res[app.name, 'page', 'fifty']}")
                r = res[app.name, "sse", "paced"]
                log(f"{app.name} paced {n}: {med(r, 'updates')} updates, bytes/token by third "
                    + " / ".join(f"{statistics.median(x.thirds[k] for x in r):.1f}" for k in range(3)))
        finally:
            if client is not None:
                client.close()
            app.stop()
    return res


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def med(runs, attr=None):
    xs = [getattr(r, attr) if attr else r for r in runs]
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def machine() -> str:
    import gradio
    import psutil

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"gradio {gradio.__version__}")


def build_table(start: dict | None, res: dict | None, sizes: list[int], runs: int,
                start_runs: int, paced_runs: int) -> str:
    rows = [("Figure", "Studio", "Bare Gradio app", "Ollama client direct", "Target", "Met?")]

    def yes(ok) -> str:
        return "—" if ok is None else ("yes" if ok else "**no**")

    if start:
        s, b = start["studio"], start["baseline"]
        ss, bs, sr, br = med(s["start"]), med(b["start"]), med(s["rss"]), med(b["rss"])
        rows.append((f"Cold start: spawn → `GET /` 200, s ({start_runs} runs)", fmt(ss, 2), fmt(bs, 2), "",
                     f"≤ {TARGET_START_RATIO}× bare = {fmt(bs * TARGET_START_RATIO, 2)}",
                     yes(ss <= bs * TARGET_START_RATIO)))
        rows.append((f"Idle RSS 5 s after ready, MiB ({start_runs} runs)", fmt(sr, 0), fmt(br, 0), "",
                     f"≤ {TARGET_RSS_RATIO}× bare = {fmt(br * TARGET_RSS_RATIO, 0)}",
                     yes(sr <= br * TARGET_RSS_RATIO)))
        rows.append((f"Idle CPU, 1-5 s after ready, no page open, CPU-ms per s ({start_runs} runs)",
                     fmt(med(s["idle_cpu"]), 1), fmt(med(b["idle_cpu"]), 1), "", "", ""))
    if res:
        paths = (("sse", "browser route"), ("client", "gradio_client"))
        pj = lambda a: med([r.page_join_ms for n in sizes for r in res[a, "sse", n]])  # noqa: E731
        rows.append(("New page session: its first queue/join POST (Gradio builds the session state), ms",
                     fmt(pj("studio")), fmt(pj("baseline")), "", "(paid at page load, not in TTFT)", ""))

        def ttft_target(d) -> str:
            return f"≤ direct + {TARGET_TTFT_ADDED_MS:.0f} = {fmt(d + TARGET_TTFT_ADDED_MS)}"

        for n in sizes:
            d = med(res["direct", n], "ttft_ms")
            for p, label in paths:
                t = med(res["studio", p, n], "ttft_ms")
                rows.append((f"TTFT, {n:,}-token reply, {label}, ms", fmt(t),
                             fmt(med(res["baseline", p, n], "ttft_ms")), fmt(d), ttft_target(d),
                             yes(t <= d + TARGET_TTFT_ADDED_MS)))
        d = med(res["direct", "late"], "ttft_ms")
        t = med(res["studio", "sse", "late"], "ttft_ms")
        rows.append((f"TTFT, 100 tokens, first one {LATE_FIRST_TOKEN_S * 1000:.0f} ms late, browser route, ms",
                     fmt(t), fmt(med(res["baseline", "sse", "late"], "ttft_ms")), fmt(d), ttft_target(d),
                     yes(t <= d + TARGET_TTFT_ADDED_MS)))

        def tps_cell(rs) -> str:
            if sum(r.tps is None for r in rs) * 2 > len(rs):
                return "1 update¹"
            return fmt(med(rs, "tps"), 0)

        def tps_ok(rs):
            if sum(r.tps is None for r in rs) * 2 > len(rs):
                return True
            return med(rs, "tps") > TARGET_TPS

        for n in sizes:
            for p, label in paths:
                st = res["studio", p, n]
                rows.append((f"Tokens/s, {n:,}-token reply, {label}", tps_cell(st),
                             tps_cell(res["baseline", p, n]), tps_cell(res["direct", n]),
                             f"> {TARGET_TPS:,.0f}", yes(tps_ok(st))))
        for n in sizes:
            rows.append((f"Whole reply, submit → last token, {n:,} tokens, browser route, ms",
                         fmt(med(res["studio", "sse", n], "total_s") * 1000, 0),
                         fmt(med(res["baseline", "sse", n], "total_s") * 1000, 0),
                         fmt(med(res["direct", n], "total_s") * 1000, 0), "", ""))
        for n in sizes:
            for p, label in paths:
                c = med(res["studio", p, n], "cpu_per_1k")
                last = n == max(sizes)
                rows.append((f"Server CPU-s per 1,000 tokens, {n:,}-token reply, {label}", fmt(c, 3),
                             fmt(med(res["baseline", p, n], "cpu_per_1k"), 3),
                             f"{fmt(med(res['direct', n], 'cpu_per_1k'), 3)} (client side)" if p == "sse" else "",
                             f"< {TARGET_CPU_PER_1K}" if last else "(mostly per-request cost)",
                             yes(c < TARGET_CPU_PER_1K) if last else ""))
        n = max(sizes)
        st, ba = res["studio", "sse", n], res["baseline", "sse", n]

        def sizes_cell(rs) -> str:
            return " / ".join(fmt(med(rs, a), 0) for a in ("updates", "stream_bytes", "final_bytes"))

        rows.append((f"SSE updates / bytes streamed / final message bytes, {n:,} tokens, full speed",
                     sizes_cell(st), sizes_cell(ba), "", "", ""))
        rows.append((f"Bytes to the browser per token, {n:,} tokens, full speed (streamed + final) / N",
                     fmt(med([(r.stream_bytes + r.final_bytes) / n for r in st]), 1),
                     fmt(med([(r.stream_bytes + r.final_bytes) / n for r in ba]), 1), "", "", ""))
        sp, bp = res["studio", "sse", "paced"], res["baseline", "sse", "paced"]

        def thirds(rs) -> str:
            return " / ".join(fmt(statistics.median(r.thirds[k] for r in rs), 1) for k in range(3))

        first, last = (statistics.median(r.thirds[k] for r in sp) for k in (0, 2))
        rate = f"{fmt(med([r.n / r.total_s for r in sp]), 0)} tok/s"
        rows.append((f"Bytes per token, 1st / 2nd / 3rd third, {n:,} tokens paced (~{rate}, {paced_runs} runs)",
                     thirds(sp), thirds(bp), "", "about flat", yes(last <= 1.5 * first + 5)))
        rows.append(("SSE updates / server CPU-s per 1,000 tokens / CPU ms per update, same paced reply",
                     f"{fmt(med(sp, 'updates'), 0)} / {fmt(med(sp, 'cpu_per_1k'), 3)} / "
                     f"{fmt(med([r.cpu_per_1k * r.n / 1000 / r.updates * 1000 for r in sp]), 2)}",
                     f"{fmt(med(bp, 'updates'), 0)} / {fmt(med(bp, 'cpu_per_1k'), 3)} / "
                     f"{fmt(med([r.cpu_per_1k * r.n / 1000 / r.updates * 1000 for r in bp]), 2)}",
                     "", f"< {TARGET_CPU_PER_1K} CPU-s", yes(med(sp, "cpu_per_1k") < TARGET_CPU_PER_1K)))
        sm, bm = res["studio", "sse", "model"], res["baseline", "sse", "model"]
        per_update = lambda rs: med([r.cpu_per_1k * r.n / 1000 / r.updates * 1000 for r in rs])  # noqa: E731
        rows.append((f"Same at a model's pace: {MODEL_SPEED[0]} tokens at "
                     f"~{fmt(med([r.n / r.total_s for r in sm]), 0)} tok/s ({paced_runs} runs)",
                     f"{fmt(med(sm, 'updates'), 0)} / {fmt(med(sm, 'cpu_per_1k'), 3)} / {fmt(per_update(sm), 2)}",
                     f"{fmt(med(bm, 'updates'), 0)} / {fmt(med(bm, 'cpu_per_1k'), 3)} / {fmt(per_update(bm), 2)}",
                     "", "", ""))
        sf, bf = res["studio", "sse", "fifty"], res["baseline", "sse", "fifty"]
        c = med(sf, "net_cpu_per_1k")
        rows.append((f"Server CPU-s per 1,000 tokens at 50 tokens/s ({FIFTY[0]} tokens at "
                     f"{FIFTY[1] * 1000:.0f} ms), browser route, net of idle ({len(sf)} runs)",
                     fmt(c, 3), fmt(med(bf, "net_cpu_per_1k"), 3), "",
                     f"≤ {TARGET_PACED_CPU_PER_1K}", yes(c <= TARGET_PACED_CPU_PER_1K)))
        rows.append(("Same reply: gross CPU-s per 1,000 tokens (idle included) / SSE updates",
                     f"{fmt(med(sf, 'cpu_per_1k'), 3)} / {fmt(med(sf, 'updates'), 0)}",
                     f"{fmt(med(bf, 'cpu_per_1k'), 3)} / {fmt(med(bf, 'updates'), 0)}", "", "", ""))
        t, b = med(sf, "ttft_ms"), med(bf, "ttft_ms")
        rows.append(("TTFT, same reply (first token 20 ms late), browser route, ms", fmt(t),
                     fmt(b), fmt(med(res["direct", "late"], "ttft_ms")),
                     f"≤ bare + {TARGET_PACED_TTFT_ADDED_MS:.0f} = {fmt(b + TARGET_PACED_TTFT_ADDED_MS)}",
                     yes(t <= b + TARGET_PACED_TTFT_ADDED_MS)))
        sp_, bp_ = res.get(("studio", "page", "fifty")), res.get(("baseline", "page", "fifty"))
        if sp_ and bp_:
            t, b = med(sp_), med(bp_)
            rows.append((f"TTFT in the page, same reply: headless chromium, Enter → first token "
                         f"in the DOM, ms ({len(sp_)} runs)", fmt(t), fmt(b), "",
                         f"≤ bare + {TARGET_PACED_TTFT_ADDED_MS:.0f} = {fmt(b + TARGET_PACED_TTFT_ADDED_MS)}",
                         yes(t <= b + TARGET_PACED_TTFT_ADDED_MS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if res:
        lines.append("")
        lines.append(f"Streaming figures: median of {runs} runs each (paced: {paced_runs}). "
                     "¹ The whole answer arrived in one update in most runs, so tokens/s between the "
                     "first and the last update is undefined (the row below gives the whole time).")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    """Replace the generated block of docs/benchmarks.md, keeping the hand-written rest."""
    begin, end = "<!-- bench_chat:begin -->", "<!-- bench_chat:end -->"
    block = f"{begin}\n{text}\n{end}"
    if os.path.exists(DOC):
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        if begin in doc and end in doc:
            doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
        else:
            doc = doc.rstrip() + "\n\n" + block + "\n"
    else:
        doc = "# Benchmarks\n\n" + block + "\n"
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (about 2.5 minutes)")
    ap.add_argument("--runs", type=int, help="runs per streaming figure (default 5; --quick 3)")
    ap.add_argument("--start-runs", type=int, help="measured starts per app (default 3; --quick 2)")
    ap.add_argument("--sizes", default="100,1000,5000", help="reply sizes in tokens (default %(default)s)")
    ap.add_argument("--skip-start", action="store_true", help="skip the cold-start figures")
    ap.add_argument("--skip-stream", action="store_true", help="skip the streaming figures")
    ap.add_argument("--studio", metavar="PATH", default=ROOT,
                    help="the checkout whose app.py is measured (default: this one), e.g. a "
                         "worktree of the code before a change")
    ap.add_argument("--skip-browser", action="store_true",
                    help="skip the headless chromium time to first token")
    ap.add_argument("--write", action="store_true", help="put the table into docs/benchmarks.md")
    ap.add_argument("--json", metavar="PATH", help="also write every run's raw figures there")
    ap.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_fake:
        serve_fake()
        return 0
    runs = args.runs or (3 if args.quick else 5)
    start_runs = args.start_runs or (2 if args.quick else 3)
    paced_runs = 1 if args.quick else 3
    sizes = sorted(int(s) for s in args.sizes.split(","))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop the children
    load0 = os.getloadavg()[0]
    if load0 > 0.7:
        log(f"warning: the machine is busy (1-min load average {load0:.1f}); figures will be noisy")
    t_begin = time.perf_counter()
    start = res = None
    fake = FakeProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-studio-") as data_dir:
            studio, baseline = make_apps(fake.url, data_dir, os.path.abspath(args.studio))
            try:
                if not args.skip_start:
                    start = bench_start(studio, baseline, start_runs)
                if not args.skip_stream:
                    res = bench_stream(fake, studio, baseline, sizes, runs, paced_runs,
                                       browser=not args.skip_browser)
            finally:
                studio.stop()
                baseline.stop()
    finally:
        fake.close()
    elapsed = time.perf_counter() - t_begin

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/bench_chat.py" + (" --quick" if args.quick else "") + (
        f" --studio {args.studio}" if os.path.abspath(args.studio) != ROOT else "")
    header = (f"Run {when} on {machine()}: `{cmd}` took {elapsed:.0f} s; fake Ollama at full "
              f"speed in its own process. 1-min load average before / after: {load0:.2f} / "
              f"{os.getloadavg()[0]:.2f} (the run itself adds about 1).")
    table = build_table(start, res, sizes, runs, start_runs, paced_runs)
    if FAILURES:
        table += "\n\nRuns that failed and were redone once: " + "; ".join(FAILURES)
    print(header + "\n\n" + table)
    if args.json:
        raw = {"when": when, "machine": machine(), "start": start,
               "stream": {" ".join(map(str, k)): [r if isinstance(r, float) else {**vars(r)} for r in v]
                          for k, v in (res or {}).items()}}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
    if args.write:
        write_doc(header + "\n\n" + table)
        print(f"\nwrote {os.path.relpath(DOC, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
