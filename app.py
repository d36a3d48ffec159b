"""Hephaestus Studio entry point: `python app.py` (or `gradio app.py` for reload mode).

Builds the app at module level as ``demo`` (Hugging Face Spaces style) and launches it
when run as a script. All wiring happens here, in one readable place.
"""

import logging
import os
import sys

from studio import heap

heap.pause()  # no garbage collections while the app is built (studio/heap.py)

# Gradio reads these at import: no telemetry or version checks from a homelab box.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Gradio records every queued event for its /monitoring page (off here: launch_kwargs) and
# keeps the last 10,000 (~320 bytes each, ~3 MB) before it forgets any: keep a few only.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")

from studio.config import Settings  # noqa: E402
from studio.errors import StudioError  # noqa: E402
from studio.services import build_services  # noqa: E402
from studio.ui.app import build_app, launch_kwargs  # noqa: E402

logging.basicConfig(level=os.environ.get("STUDIO_LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the log

try:
    settings = Settings.from_env()
    services = build_services(settings)
except StudioError as exc:
    print(f"Hephaestus Studio can't start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

demo = build_app(services)
heap.settle()  # built: the collector as a long-running server wants it (also under `gradio`)

if __name__ == "__main__":
    if services.exposure.warning:
        print(f"\n  WARNING: {services.exposure.warning}\n", file=sys.stderr)
    # The server believes X-Forwarded-For / -Proto only from these (Caddy on this box).
    os.environ["FORWARDED_ALLOW_IPS"] = settings.trusted_proxies
    _app, _local_url, share_url = demo.launch(prevent_thread_lock=True,
                                              **launch_kwargs(services))
    if share_url:
        services.access.allow_origin(share_url)  # pages opened through the share link
    demo.block_thread()
