"""Take the docs' screenshots: the studio against the fake Ollama and the fake ComfyUI,
driven by headless chromium.

Run from the repo root after scripts/test.sh has set up .venv:
    .venv/bin/python scripts/screenshot.py
Writes docs/screenshot-<tab>.png for each tab (chat, images, models, arena, costs,
settings; desktop size) and docs/screenshot-phone.png (the chat on a phone).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, running_fake_ollama, start_studio, stop_studio  # noqa: E402
from tests.fakes.comfyui_server import FakeComfyUI  # noqa: E402

DOCS = ROOT / "docs"

ANSWER = """Here is a small, dependency-free way to check free VRAM from Python:

```python
import pynvml

pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
print(f"{mem.free / 2**30:.1f} GiB free of {mem.total / 2**30:.1f} GiB")
```

It reads the same numbers as `nvidia-smi`, so **Ollama and ComfyUI** can be scheduled around it."""


def shoot(page, tab: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")  # the tabs and the status strip in view
    page.wait_for_timeout(600)  # let charts and fonts settle: a picture, not a test
    page.screenshot(path=str(DOCS / f"screenshot-{tab}.png"))


def open_tab(page, name: str, ready: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_selector(ready)


def images_tab(page) -> None:
    """An image made and shown, with the form beside it."""
    open_tab(page, "Images", "#img-prompt textarea")
    page.wait_for_function(
        "() => document.querySelector('#img-checkpoint input').value.endsWith('.safetensors')")
    page.fill("#img-prompt textarea", "a copper fox in a snowy birch forest, golden hour")
    page.fill("#img-steps input", "12")
    page.click("#img-generate")
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 1 image.')", timeout=60_000)
    page.wait_for_selector("#img-results img")


def arena_tab(page, fake) -> None:
    """Two local models side by side, answered."""
    open_tab(page, "Arena", "#arena-models input")
    for search, label in (("llama3.2", "llama3.2:latest"), ("qwen3", "qwen3:8b")):
        page.click("#arena-models input")
        page.fill("#arena-models input", search)
        page.click(f"#arena-models li[data-testid=dropdown-option]:has-text('{label}')")
    for answer in (ARENA_LLAMA, ARENA_QWEN):
        fake.queue_reply(answer.replace(" ", " \u200b").split("\u200b"), delay=0.002)
    page.fill("#arena-prompt textarea", "In two sentences: why keep a homelab's AI local?")
    page.click("#arena-run")
    page.wait_for_function("() => ['#arena-figures-0', '#arena-figures-1'].every("
                           "s => (document.querySelector(s) || {}).innerText?.includes('tok/s'))",
                           timeout=30_000)


def settings_tab(page) -> None:
    """The admin's part, with every host checked (the hosts table fills in the background)."""
    open_tab(page, "Settings", "#password-box")
    page.wait_for_function(
        "() => { const rows = [...document.querySelectorAll('#settings-hosts [role=row]')];"
        " return rows.length >= 2 && rows.every(r => !r.innerText.includes('not checked')); }",
        timeout=30_000)


ARENA_LLAMA = ("Your prompts and files never leave the house, and nothing is metered: the GPU "
               "you already own answers as often as you like. It keeps working when the "
               "internet doesn't.")
ARENA_QWEN = ("Privacy first: conversations stay on your own disk. Second, cost and "
              "control: no per-token bill, and you choose which models run and when.")


def main() -> None:
    fake = running_fake_ollama()
    fake.add_model("qwen3:8b", family="qwen3", parameter_size="8.2B",
                   capabilities=("completion", "thinking"))
    comfyui = FakeComfyUI(step_delay=0.02).start()
    with tempfile.TemporaryDirectory() as tmp:
        studio = start_studio(Path(tmp), fake.url, {"COMFYUI_URL": comfyui.url})
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1360, "height": 820})
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.goto(studio.url)
                page.wait_for_selector("#chat-input textarea")
                page.wait_for_function(
                    "() => document.querySelector('#model-picker input').value.length > 0")
                for question in ("What's a quick way to see free VRAM from Python?",):
                    fake.queue_reply(ANSWER.replace(" ", " \u200b").split("\u200b"), delay=0.002)
                    page.fill("#chat-input textarea", question)
                    page.press("#chat-input textarea", "Enter")
                    page.wait_for_function(
                        "() => document.querySelector('#chatbot').innerText.includes('tok/s')")
                page.wait_for_timeout(500)
                page.screenshot(path=str(DOCS / "screenshot-chat.png"))
                images_tab(page)
                shoot(page, "images")
                open_tab(page, "Models", "#models-pull-name textarea, #models-pull-name input")
                shoot(page, "models")
                arena_tab(page, fake)
                shoot(page, "arena")
                open_tab(page, "Costs", "#costs-summary")
                page.click("#costs-refresh")
                shoot(page, "costs")
                settings_tab(page)
                shoot(page, "settings")
                # Same context: the phone page reopens the chat from this browser's storage.
                phone = context.new_page()
                phone.set_viewport_size({"width": 390, "height": 844})
                phone.goto(studio.url)
                phone.wait_for_selector("#chat-input textarea")
                phone.wait_for_function(
                    "() => document.querySelector('#chatbot').innerText.includes('tok/s')")
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(DOCS / "screenshot-phone.png"))
                browser.close()
        finally:
            stop_studio(studio)
            fake.stop()
            comfyui.stop()
    print("wrote docs/screenshot-{chat,images,models,arena,costs,settings,phone}.png")


if __name__ == "__main__":
    main()
