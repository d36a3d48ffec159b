"""Benchmark: the Images tab's hot paths, through a real `python app.py`.

Run from the repository root:  ``python bench/bench_images.py``  (about 2 minutes on a 2-core
box; ``--quick`` fewer runs). Prints a table of medians with the targets beside them; it
never asserts timings. Don't run anything heavy beside it.

What runs (all on 127.0.0.1):

* The fake ComfyUI (tests/fakes/comfyui_server.py) in this process, subclassed to write a
  realistic 1024x1024 PNG (gradient + noise, ~1.5-2 MB, ComfyUI's compress level 4, with the
  ``prompt`` text chunk) and to note when it sends ``execution_success`` and each
  ``progress`` message (``time.monotonic``, one clock for every process on Linux).
* The studio as its own process (``python app.py``), its data dir seeded with 10,000 gallery
  images (rows through ``ImageStore.add_image``, thumbnails and files as hard links).
* The browser's route, driven with raw httpx: POST /gradio_api/queue/join with the inputs of
  the ``generate_images`` / ``open_gallery`` events (ids from the app's own /config), then the
  SSE stream GET /gradio_api/queue/data, timing each message as it arrives.

Figures (medians of several runs):

1. ``execution_success`` -> the page update that carries the stored image, and -> the PNG
   fetched from the studio like the page does. Beside it, a bare ComfyUIClient (no studio)
   from ``execution_success`` to the same PNG's bytes in hand (the part ComfyUI's protocol
   costs anyway: the end messages, /history, /view); "added" is the difference. The studio's
   own store time (copy, thumbnail, row) comes from the job item's ``timings.store_s``.
2. ``progress`` message sent by ComfyUI -> the page update showing that step, for sparse
   steps (4 per second) and dense ones (50 per second, where updates are coalesced to one
   per 100 ms: the figure is the age of the step shown).
3. The gallery with 10,000 images: the store's page query (newest first, a search, a
   filter, page 100), the ``open_gallery`` event through the app (query + 48 thumbnails),
   and in headless chromium (if installed) from clicking "Gallery" to 48 thumbnails loaded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gradio_queue import page_config, queue_call  # noqa: E402 - bench/, the script's own folder
from studio.images import workflows  # noqa: E402
from studio.clients.comfyui import ComfyUIClient, Done  # noqa: E402
from studio.store.db import Store  # noqa: E402
from studio.store.images import ImageStore  # noqa: E402
from tests.fakes.comfyui_server import FakeComfyUI  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GALLERY_SIZE = 10_000


def log(message: str) -> None:
    print(f"[bench_images] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def realistic_png(size: int = 1024) -> bytes:
    """A PNG that compresses like a generated picture: smooth shapes plus fine noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(x * 6 + y * 2) * 0.5 + 0.5, np.cos(y * 5) * 0.5 + 0.5,
                     (x * y) ** 0.5], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 9, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def with_text_chunk(png: bytes, key: str, text: str) -> bytes:
    """``png`` with a tEXt chunk added before IEND (what SaveImage writes)."""
    data = key.encode("latin-1") + b"\0" + text.encode("latin-1", "replace")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


class BenchComfyUI(FakeComfyUI):
    """The fake, writing realistic PNGs and noting when it sends the messages we time."""

    def __init__(self, png: bytes, **kwargs):
        super().__init__(**kwargs)
        self.png = png
        self.success_at: dict[str, float] = {}
        self.progress_at: dict[tuple[str, int], float] = {}

    async def _message(self, run, event, data, *, broadcast=False):
        if event == "execution_success":
            self.success_at[run.job.prompt_id] = time.monotonic()
        await super()._message(run, event, data, broadcast=broadcast)

    async def _progress(self, run, nid, value, total, jpeg, image_type="image/jpeg"):
        self.progress_at[(run.job.prompt_id, value)] = time.monotonic()
        await super()._progress(run, nid, value, total, jpeg, image_type)

    def _save(self, run, image, prefix, kind):
        refs = super()._save(run, (8, 8, image[2], image[3]), prefix, kind)
        if kind == "output":
            png = with_text_chunk(self.png, "prompt", json.dumps(run.job.graph))
            for ref in refs:
                self.files[(kind, ref["subfolder"], ref["filename"])] = png
        return refs


# --------------------------------------------------------------------------- the studio


def seed_gallery(data_dir: Path, n: int, png: bytes) -> None:
    """``n`` gallery rows with real files (hard links of one PNG and one thumbnail)."""
    outputs = data_dir / "outputs"
    (outputs / "seed").mkdir(parents=True, exist_ok=True)
    (outputs / "thumbs" / "seed").mkdir(parents=True, exist_ok=True)
    full = outputs / "seed" / "_source.png"
    full.write_bytes(png)
    thumb = outputs / "thumbs" / "seed" / "_source.webp"
    with Image.open(io.BytesIO(png)) as image:
        image.thumbnail((320, 320))
        image.save(thumb, format="WEBP", quality=78)
    store = Store.open(data_dir / "studio.db")
    images = ImageStore(store)
    words = ["fox", "lighthouse", "castle", "forest", "robot", "portrait", "city", "ocean",
             "mountain", "cat", "dragon", "garden"]
    styles = ["photograph", "oil painting", "anime", "line art", "cinematic"]
    graph = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "studio"}}}
    for i in range(n):
        os.link(full, outputs / "seed" / f"{i}.png")
        os.link(thumb, outputs / "thumbs" / "seed" / f"{i}.webp")
        prompt = f"a {words[i % 12]} near a {words[(i * 7) % 12]}, {styles[i % 5]}, #{i}"
        images.add_image(path=f"seed/{i}.png", thumb=f"thumbs/seed/{i}.webp", width=1024,
                         height=1024, bytes=len(png), prompt=prompt, negative="blurry", seed=i,
                         workflow=("sd15_txt2img", "sdxl_txt2img")[i % 2],
                         model=("v1-5-pruned-emaonly.safetensors",
                                "sd_xl_base_1.0.safetensors")[i % 2],
                         params={"prompt": prompt, "seed": i, "steps": 20}, graph=graph,
                         timings={"total_s": 3.0})
    store.close()


class Studio:
    def __init__(self, data_dir: Path, comfyui_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OLLAMA", "COMFYUI", "OPENROUTER", "STUDIO_"))}
        env.update({"STUDIO_DATA_DIR": str(data_dir), "COMFYUI_URL": comfyui_url,
                    "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
                    "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "STUDIO_LOG_LEVEL": "WARNING"})
        self.log_path = data_dir.parent / "studio.log"
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("app.py did not start within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Event:
    """One event of the app, called like the browser does (queue join + SSE)."""

    def __init__(self, http: httpx.Client, url: str, api_name: str, values_by_elem: dict):
        # One page session, with the Images tab built in it (as opening the tab does): its
        # events exist only there.
        self.session = uuid.uuid4().hex[:11]
        config = page_config(http, url, self.session)
        comps = {c["id"]: c for c in config["components"]}
        dep = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
        self.fn_index = dep.get("id")
        self.trigger_id = dep["targets"][0][0] if dep.get("targets") else None
        self.data = [values_by_elem.get(comps[c]["props"].get("elem_id")) for c in dep["inputs"]]
        self.http, self.url = http, url

    def stream(self, timeout: float = 120.0):
        """Yield (arrival time, what the page shows of each output) for each SSE message."""
        shown: dict[int, object] = {}
        for msg in queue_call(self.http, self.url, data=self.data, fn_index=self.fn_index,
                              trigger_id=self.trigger_id, session=self.session,
                              deadline=time.monotonic() + timeout):
            for index, value in enumerate(msg.values):
                # gr.skip() / gr.update(...) arrive as update dicts: the page keeps what it
                # shows unless the update carries a value.
                if isinstance(value, dict) and value.get("__type__") == "update":
                    if "value" in value:
                        shown[index] = value["value"]
                else:
                    shown[index] = value
            yield msg.at, [shown.get(i) for i in range(len(msg.values))]


def form(steps: int, size: int = 1024, prompt: str = "bench") -> dict:
    return {"img-workflow": "sd15_txt2img", "img-prompt": f"{prompt} {uuid.uuid4().hex[:6]}",
            "img-negative": "", "img-style": "", "img-seed": -1, "img-steps": steps, "img-cfg": 7,
            "img-sampler": "euler", "img-scheduler": "normal", "img-width": size,
            "img-height": size, "img-batch-size": 1,
            "img-checkpoint": "v1-5-pruned-emaonly.safetensors", "img-denoise": 1.0,
            "img-lora": None, "img-lora-strength": 0.8, "img-control-strength": 1.0,
            "img-input": None, "img-prompts": "", "img-seeds": 1, "img-sweep-param": "",
            "img-sweep-values": ""}


def prompt_id_of(data_dir: Path, job_id: str) -> str:
    import sqlite3

    with sqlite3.connect(data_dir / "studio.db") as db:
        return db.execute("SELECT prompt_id FROM image_job_items WHERE job_id = ? ORDER BY seq",
                          [job_id]).fetchone()[0]


def store_s_of(data_dir: Path, job_id: str) -> float:
    import sqlite3

    with sqlite3.connect(data_dir / "studio.db") as db:
        return json.loads(db.execute("SELECT timings FROM image_job_items WHERE job_id = ?",
                                     [job_id]).fetchone()[0]).get("store_s", float("nan"))


JOB_RE = re.compile(r"data-job='([0-9a-f]+)'")
STEP_RE = re.compile(r"data-step='(\d+)'")


# --------------------------------------------------------------------------- measurements


def bench_stored_and_shown(fake: BenchComfyUI, studio: Studio, http, data_dir: Path, runs: int):
    fake.step_delay = 0.0
    shown, fetched, stored = [], [], []
    for run in range(runs + 1):
        event = Event(http, studio.url, "generate_images", form(steps=2))
        t_msg = job_id = image_url = None
        for now, values in event.stream():
            match = JOB_RE.search(values[0] or "")
            job_id = job_id or (match.group(1) if match else None)
            results = values[2]
            if t_msg is None and results:
                t_msg = now
                item = results[0]
                image = item.get("image", item) if isinstance(item, dict) else item[0]
                image_url = image.get("url") or (studio.url + "gradio_api/file=" + image["path"])
        response = http.get(image_url)
        t_fetch = time.monotonic()
        assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
        success = fake.success_at[prompt_id_of(data_dir, job_id)]
        if run == 0:
            continue  # the first run warms caches (imports, object_info, thumbnails)
        shown.append((t_msg - success) * 1000)
        fetched.append((t_fetch - success) * 1000)
        stored.append(store_s_of(data_dir, job_id) * 1000)
    return shown, fetched, stored, len(response.content)


def bench_bare_client(fake: BenchComfyUI, runs: int) -> list[float]:
    """execution_success -> the PNG's bytes, with the ComfyUI client alone (no studio)."""
    template = workflows.load_templates(ROOT / "workflows")["sd15_txt2img"]
    client = ComfyUIClient(fake.url, timeout=10, run_timeout=60, poll_interval=0.05)
    figures = []
    for run in range(runs + 1):
        graph = workflows.render(template, {"prompt": f"bare {uuid.uuid4().hex}", "steps": 2,
                                            "width": 1024, "height": 1024})
        for event in client.stream(graph):
            if isinstance(event, Done):
                client.view(event.images[0])
                t_bytes = time.monotonic()
                if run:
                    figures.append((t_bytes - fake.success_at[event.prompt_id]) * 1000)
    client.close()
    return figures


def bench_progress(fake: BenchComfyUI, studio: Studio, http, data_dir: Path, step_delay: float,
                   steps: int, jobs: int) -> list[float]:
    """Age (ms) of the step shown in each page update: arrival - ComfyUI's progress message."""
    fake.step_delay = step_delay
    ages = []
    for _ in range(jobs):
        event = Event(http, studio.url, "generate_images", form(steps=steps, size=512))
        seen: dict[int, float] = {}
        job_id = None
        for now, values in event.stream():
            html = values[0] or ""
            match = JOB_RE.search(html)
            job_id = job_id or (match.group(1) if match else None)
            step = STEP_RE.search(html)
            if step and int(step.group(1)) > 0 and int(step.group(1)) not in seen:
                seen[int(step.group(1))] = now
        prompt_id = prompt_id_of(data_dir, job_id)
        ages += [(t - fake.progress_at[(prompt_id, k)]) * 1000 for k, t in seen.items()
                 if (prompt_id, k) in fake.progress_at]
    fake.step_delay = 0.0
    return ages


def bench_gallery_store(data_dir: Path, runs: int) -> dict[str, list[float]]:
    store = Store.open(data_dir / "studio.db")
    images = ImageStore(store)
    cases = {"page 1 (newest)": dict(),
             "page 100": dict(page=100),
             "search 'lighthouse oce'": dict(query="lighthouse oce"),
             "filter workflow + model": dict(workflow="sdxl_txt2img",
                                             model="sd_xl_base_1.0.safetensors")}
    result = {}
    for name, kwargs in cases.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            page = images.gallery(per_page=48, **kwargs)
            times.append((time.perf_counter() - t0) * 1000)
            assert page.images
        result[name] = times
    store.close()
    return result


def bench_gallery_app(studio: Studio, http, runs: int) -> list[float]:
    times = []
    for run in range(runs + 1):
        event = Event(http, studio.url, "open_gallery",
                      {"gal-search": "", "gal-workflow": "", "gal-model": ""})
        t0 = time.monotonic()
        last = None
        for now, values in event.stream():
            last = now, values
        assert len(last[1][0]) == 48, "expected a full page of thumbnails"
        if run:
            times.append((last[0] - t0) * 1000)
    return times


def bench_gallery_browser(studio: Studio, runs: int) -> list[float] | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(CHROMIUM):
        return None
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for run in range(runs + 1):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(studio.url)
            page.get_by_role("tab", name="Images").click()
            page.wait_for_selector("#img-prompt textarea")
            t0 = time.monotonic()
            page.get_by_role("tab", name="Gallery").click()
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('#gal-grid img')];"
                " return imgs.length >= 48 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=60_000)
            if run:
                times.append((time.monotonic() - t0) * 1000)
            context.close()
        browser.close()
    return times


# --------------------------------------------------------------------------- report


def med(values) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))] if values else float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7
    tmp = Path(tempfile.mkdtemp(prefix="bench-images-"))
    data_dir = tmp / "data"
    log("making a realistic 1024x1024 PNG")
    png = realistic_png()
    log(f"seeding {GALLERY_SIZE:,} gallery images")
    t0 = time.monotonic()
    seed_gallery(data_dir, GALLERY_SIZE, png)
    log(f"seeded in {time.monotonic() - t0:.1f} s")
    fake = BenchComfyUI(png).start()
    studio = None
    try:
        log("starting python app.py")
        studio = Studio(data_dir, fake.url)
        with httpx.Client(timeout=60) as http:
            log("execution_success -> stored and shown")
            shown, fetched, stored, size = bench_stored_and_shown(fake, studio, http, data_dir, runs)
            bare = bench_bare_client(fake, runs)
            log("progress -> page update")
            sparse = bench_progress(fake, studio, http, data_dir, 0.25, 12, 2 if args.quick else 3)
            dense = bench_progress(fake, studio, http, data_dir, 0.02, 60, 2 if args.quick else 3)
            log("gallery with 10,000 images")
            store_times = bench_gallery_store(data_dir, 20)
            app_times = bench_gallery_app(studio, http, runs)
        browser_times = bench_gallery_browser(studio, 3 if args.quick else 5)
    finally:
        if studio is not None:
            studio.stop()
        fake.stop()
    added = med(fetched) - med(bare)
    rows = [
        ("**execution_success → image stored and shown** (1024×1024 PNG, "
         f"{size / 1e6:.1f} MB)", "", "", ""),
        ("… page update carrying the stored image", f"{med(shown):.0f} ms", f"{p90(shown):.0f} ms", ""),
        ("… PNG fetched from the studio by the page", f"{med(fetched):.0f} ms",
         f"{p90(fetched):.0f} ms", ""),
        ("… of which the studio's store step (copy, thumbnail, row)", f"{med(stored):.0f} ms",
         f"{p90(stored):.0f} ms", ""),
        ("… baseline: bare ComfyUI client, same PNG's bytes in hand", f"{med(bare):.0f} ms",
         f"{p90(bare):.0f} ms", ""),
        ("… **added by the studio** (fetched − baseline)", f"{added:.0f} ms", "",
         f"< 150 ms {'✓' if added < 150 else '✗'}"),
        ("**progress message → page update** (age of the step shown)", "", "", ""),
        ("… sparse steps (4/s)", f"{med(sparse):.0f} ms", f"{p90(sparse):.0f} ms",
         f"< 150 ms {'✓' if med(sparse) < 150 else '✗'}"),
        ("… dense steps (50/s, coalesced to ≤ 10 updates/s)", f"{med(dense):.0f} ms",
         f"{p90(dense):.0f} ms", f"< 200 ms {'✓' if med(dense) < 200 else '✗'}"),
        (f"**gallery with {GALLERY_SIZE:,} images**, 48 per page", "", "", ""),
    ]
    for name, times in store_times.items():
        rows.append((f"… store query: {name}", f"{med(times):.2f} ms", f"{p90(times):.2f} ms",
                     f"< 20 ms {'✓' if med(times) < 20 else '✗'}"))
    rows.append(("… open_gallery event through the app (query + 48 thumbnails)",
                 f"{med(app_times):.0f} ms", f"{p90(app_times):.0f} ms",
                 f"< 300 ms {'✓' if med(app_times) < 300 else '✗'}"))
    if browser_times:
        rows.append(("… chromium: click Gallery → 48 thumbnails loaded",
                     f"{med(browser_times):.0f} ms", f"{p90(browser_times):.0f} ms",
                     f"< 1000 ms {'✓' if med(browser_times) < 1000 else '✗'}"))
    else:
        rows.append(("… chromium: click Gallery → 48 thumbnails loaded", "(no chromium)", "", ""))
    print(f"\nbench_images on {machine()}; {runs} runs per figure (after one warm-up), "
          f"medians\n")
    print("| What | Median | p90 | Target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
