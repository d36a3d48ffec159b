"""Building the app's lazy tabs (``studio/ui/lazy.py``) in tests, as a page does.

In-process: ``page_config(demo)`` is one page's copy of the app's config with every lazy tab
built, the way Gradio builds them when the page opens each tab (its render run under the
page's ``LocalContext``). Through the queue route: ``render_in_session`` calls a tab's
render in a page session, and returns what the page would get back.
"""

from __future__ import annotations

import json
from copy import copy

import httpx
from gradio.context import LocalContext


def page_config(demo):
    """A page's ``BlocksConfig`` (``.fns``, ``.blocks``) after it opened every tab."""
    config = copy(demo.default_config)
    token = LocalContext.blocks_config.set(config)
    try:
        for renderable in config.renderables:
            renderable.apply()
    finally:
        LocalContext.blocks_config.reset(token)
    return config


def render_dependencies(config: dict) -> list[dict]:
    """The app config's render events: one per lazy tab, and the Chat tab's two."""
    return [d for d in config["dependencies"] if d.get("render_id") is not None]


def queue_call(client: httpx.Client, fn_index: int, data: list, session: str,
               timeout: float = 10) -> dict | None:
    """One event through Gradio's queue in ``session``; its ``process_completed`` message
    (None when the stream ended without one)."""
    client.post("/gradio_api/queue/join", json={
        "data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None,
        "session_hash": session}).raise_for_status()
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                       timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    return None


def render_in_session(client: httpx.Client, config: dict, session: str) -> dict:
    """Build every lazy tab in ``session`` through the queue route; the rendered
    components' and dependencies' configs (``{"components": [...], "dependencies": [...]}``,
    shaped as the app's /config)."""
    components, dependencies = {}, {}
    for dep in render_dependencies(config):
        msg = queue_call(client, dep["id"], [], session)
        assert msg is not None and msg.get("success"), msg
        rendered = msg["output"]["render_config"]
        components.update({c["id"]: c for c in rendered["components"]})
        dependencies.update({d["id"]: d for d in rendered["dependencies"]})
    return {"components": list(components.values()),
            "dependencies": list(dependencies.values())}
