"""Take the README screenshots: the studio against the fake Ollama, driven by headless chromium.

Run from the repo root after scripts/test.sh has set up .venv:
    .venv/bin/python scripts/screenshot.py
Writes docs/screenshot-chat.png (desktop) and docs/screenshot-phone.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, running_fake_ollama, start_studio, stop_studio  # noqa: E402

ANSWER = """Here is a small, dependency-free way to check free VRAM from Python:

```python
import pynvml

pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
print(f"{mem.free / 2**30:.1f} GiB free of {mem.total / 2**30:.1f} GiB")
```

It reads the same numbers as `nvidia-smi`, so **Ollama and ComfyUI** can be scheduled around it."""


def main() -> None:
    fake = running_fake_ollama()
    fake.add_model("qwen3:8b", family="qwen3", parameter_size="8.2B",
                   capabilities=("completion", "thinking"))
    with tempfile.TemporaryDirectory() as tmp:
        studio = start_studio(Path(tmp), fake.url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1360, "height": 820})
                page = context.new_page()
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
                page.screenshot(path=str(ROOT / "docs" / "screenshot-chat.png"))
                # Same context: the phone page reopens the chat from this browser's storage.
                phone = context.new_page()
                phone.set_viewport_size({"width": 390, "height": 844})
                phone.goto(studio.url)
                phone.wait_for_selector("#chat-input textarea")
                phone.wait_for_function(
                    "() => document.querySelector('#chatbot').innerText.includes('tok/s')")
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(ROOT / "docs" / "screenshot-phone.png"))
                browser.close()
        finally:
            stop_studio(studio)
            fake.stop()
    print("wrote docs/screenshot-chat.png and docs/screenshot-phone.png")


if __name__ == "__main__":
    main()
