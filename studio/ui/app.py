"""build_app(services) -> gr.Blocks: the header with the status strip, and one tab per area.

Cross-tab wiring, if any, lives here so it stays visible in one file. Theme, CSS and
the launch options are in ``launch_kwargs`` (Gradio 6 takes them in launch()).
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from html import escape
from pathlib import Path
from typing import Callable, Iterable

import gradio as gr
from gradio.block_function import BlockFunction

from starlette.middleware import Middleware

from ..access.web import AccessGate
from ..api.embeddings import EmbeddingsApi
from ..api.images import ImagesApi
from ..api.ollama import OllamaApi
from ..api.openai import OpenAIApi
from ..ops.health import HealthApi
from ..ops.metrics import MetricsApi
from ..ops.status import status_html
from .assets import AssetCache, PageCache
from .common import OWNER, model_picker, tab_opened, ui_errors
from .guard import origin_of, secure_functions
from .lazy import LazyTab, opening, place
from . import chat_quick
from .live import LiveText
from . import chat, costs, settings as settings_tab
from . import arena as arena_tab, gradio_skips, preload, queue_analytics, queue_wake
from . import images as images_tab
from . import models as models_tab


MAX_EVENTS = 400  # Gradio's events running at once, and its threads (``launch_kwargs``)
QUICK_LIMIT = 4  # each event wired without a concurrency limit of its own (``build_app``)


def _logo_html(services) -> str:
    path = Path(services.settings.brand_logo)
    if not path.is_absolute():
        path = services.root / path
    if not path.is_file():
        return ""
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else f"image/{path.suffix.lstrip('.').lower()}"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img src='data:{mime};base64,{data}' alt=''>"


def top_bar_html(services, status: str) -> str:
    """The brand, then the status strip (``status_html``; "" before the page's load)."""
    return (f"<div id='studio-header'>{_logo_html(services)}"
            f"<span class='brand'>{escape(services.settings.brand_name)}</span></div>"
            f"{status}")


def build_app(services) -> gr.Blocks:
    """The whole UI. Nothing here talks to a backend until a page is opened."""
    with gr.Blocks(title=services.settings.brand_name, analytics_enabled=False,
                   fill_width=True) as demo:
        # Markdown, not gr.HTML, for the page's first parts: Gradio's HTML module brings a
        # template engine (~110 KB of script) into every page; the Chat tab loads Markdown's
        # anyway. The HTML is the studio's own, its values escaped (sanitize_html=False keeps
        # the status pills' data attributes and titles).
        # The brand and the status strip are one block (each block costs the page's load,
        # issue 16 item 4): the status events send both.
        status_strip = gr.Markdown(top_bar_html(services, ""), elem_id="top-bar",
                                   sanitize_html=False)
        if services.exposure.warning:  # STUDIO_NO_AUTH on an address others can reach
            gr.Markdown(f"<div role='alert'>⚠️ {escape(services.exposure.warning)}</div>",
                        elem_id="open-banner", sanitize_html=False)
        # Timers of the Models and Settings tabs, out here so that the tab switches below
        # can reach them before those tabs are built; each starts off.
        models_timer = gr.Timer(models_tab.gpu_poll_seconds(services.settings), active=False)
        settings_timer = gr.Timer(settings_tab.hosts_tick_seconds(
            services.settings.health_interval), active=False)
        models_seen = gr.State(-1)  # the version of the model list the Chat picker shows
        policy = event_policy(services)
        # Only Chat is in the page as it opens; every other tab is built the first time a
        # page opens it (``LazyTab``), with ``policy`` applied to the events it makes there.
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Chat", id="chat") as chat_block:
                chat_parts = chat.render(services, policy)
                # The page's quick send (/studio/send, chat_quick.py) serves its chat pages.
                setattr(demo, chat_quick.ATTRIBUTE, chat_parts.page.quick)
            images_lazy = LazyTab("Images", "images", lambda: images_tab.render(services), policy)
            models_lazy = LazyTab("Models", "models", lambda: models_tab.render(
                services, timer=models_timer), policy)
            costs_lazy = LazyTab("Costs", "costs", lambda: costs.render(services), policy)

            def build_arena():
                arena_parts = arena_tab.render(services)
                arena_seen = gr.State(-1)

                # The Arena picker follows the model list as the Chat picker does: the
                # page's list version moving (the status tick, the Chat tab), or the picker
                # itself, checks; nothing is sent when the list has not changed.
                @ui_errors
                def on_arena_models(seen, arena_models):
                    if services.models.version() == seen:
                        return gr.skip(), gr.skip()
                    picker = model_picker(services.models, warn=False)
                    return picker.version, arena_parts.picker_update(picker, arena_models)

                gr.on([models_seen.change, arena_parts.models_dd.focus], on_arena_models,
                      [arena_seen, arena_parts.models_dd], [arena_seen, arena_parts.models_dd],
                      api_visibility="private", concurrency_limit=None,
                      concurrency_id="arena-models-follow", show_progress="hidden")

            arena_lazy = LazyTab("Arena", "arena", build_arena, policy)

            def build_settings():
                parts = settings_tab.render(services, timer=settings_timer)
                gr.on(tab_opened(), parts.open_fn, None, parts.open_outputs,
                      api_visibility="private", show_progress="hidden")

            settings_lazy = LazyTab("Settings", "settings", build_settings, policy)
        lazy_tabs = [images_lazy, models_lazy, costs_lazy, arena_lazy, settings_lazy]
        place(lazy_tabs)

        # One event for every switch of tab (each event and block in the page's config costs
        # its load a little, issue 16 item 4): it opens a lazy tab the first time
        # (``lazy.opening``, which is why it goes through the queue) and switches the timers.
        # The GPU panel's timer ticks only while its tab is shown: a phone left on the Chat
        # tab after a look at the GPU should not poll NVML and ComfyUI every few seconds.
        # The Settings hosts table's timer likewise (opening Settings switches it on, for
        # admins only: settings_tab's open_fn).
        def on_tab_switch(evt: gr.SelectData):
            shown = evt.value  # the tab's label
            return (gr.Timer(active=shown == models_lazy.tab.label),
                    gr.skip() if shown == settings_lazy.tab.label else gr.Timer(active=False),
                    *opening(lazy_tabs, shown))

        tabs.select(on_tab_switch, None, [models_timer, settings_timer,
                                          *(tab.opened for tab in lazy_tabs)],
                    api_visibility="private", show_progress="hidden", concurrency_limit=None,
                    concurrency_id="tab-open")

        def on_status():
            return top_bar_html(services, status_html(services.status.statuses()))

        # The Chat picker follows the model list (pulls, deletes, Ollama going down or up,
        # from any page or `ollama pull` on the server): each page keeps the version of the
        # list it shows and gets new choices only when the studio's differs; the Arena
        # picker follows the page's version (``build_arena``). LocalModels asks Ollama at
        # most once per 10 s for all pages together.
        picker_dd = chat_parts.model_dd

        @ui_errors
        def on_models(seen, chat_model):
            if services.models.version() == seen:
                return gr.skip(), gr.skip()
            # -1: the page was just filled (and warned): align its version quietly.
            warn = seen != -1
            picker = model_picker(services.models, chat_parts.page.preferred_model(),
                                  warn=warn)
            return picker.version, chat_parts.page.picker_update(picker, chat_model, warn=warn)

        def on_tick(seen, chat_model):
            return on_status(), *on_models(seen, chat_model)

        # Top level, not inside a tab: a Timer in an unopened tab never ticks (Gradio 6).
        # One event per tick and page refreshes the status strip and checks the picker.
        timer = gr.Timer(30.0)
        timer.tick(on_tick, [models_seen, picker_dd], [status_strip, models_seen, picker_dd],
                   api_visibility="private", concurrency_limit=None, concurrency_id="status",
                   show_progress="hidden")
        # Opening the tab, or the picker itself, checks at once.
        gr.on([chat_block.select, picker_dd.focus], on_models, [models_seen, picker_dd],
              [models_seen, picker_dd], api_visibility="private", concurrency_limit=None,
              concurrency_id="models-follow", show_progress="hidden")
        # A page's load: the status strip (backend probes, cached 10 s for all pages) and the
        # Chat tab, which reads only the store and the model lists already known, so the
        # page is complete without waiting on Ollama or OpenRouter. Then, after the page is
        # filled: a reply still streaming in the reopened chat is followed, and the picker
        # is checked against Ollama (nothing is sent when its list has not changed). Other
        # tabs are built and load when first opened (``LazyTab``, ``tab_opened``).
        demo.load(on_status, None, status_strip, api_visibility="private",
                  concurrency_limit=None, concurrency_id="status-load", show_progress="hidden")
        page_load = demo.load(chat_parts.load_fn, chat_parts.load_inputs, chat_parts.load_outputs,
                              api_visibility="private", concurrency_limit=None,
                              concurrency_id="chat-load", show_progress="hidden")
        page_load.then(**chat_parts.follow)
        # As for a page never filled (-1, a constant): the Chat tab's select, which Gradio
        # also fires as the page opens, may have checked and moved models_seen before the
        # load's picker (from the known lists) landed over its answer.
        def on_models_filled(chat_model):
            return on_models(-1, chat_model)

        page_load.then(on_models_filled, [picker_dd], [models_seen, picker_dd],
                       api_visibility="private", concurrency_limit=None,
                       concurrency_id="models-follow", show_progress="hidden")
    policy(demo.fns.values())
    queue_wake.install(demo._queue)  # no 1 ms polling with nobody there (issue 16, item 6)
    queue_analytics.install(demo._queue)  # no pandas summary per event (items 1, 3)
    gradio_skips.install(demo)  # a gr.skip() rebuilds nothing (issue 16, item 3)
    _no_matplotlib_lookups()
    preload.read_frontend()  # read once here, not in the event loop at the first page
    return demo


def _no_matplotlib_lookups() -> None:
    """Gradio tries ``import matplotlib`` twice around every event call (to switch its
    backend and back). Where it isn't installed, as here, each try searches the whole import
    path again: ~40 us, ~80 us per event and per streamed update. Marking it missing once
    makes each try fail at once (~2 us), as it would anyway; an installed one is left be."""
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def event_policy(services) -> Callable[[Iterable[BlockFunction]], None]:
    """What every event function of the app gets, at build time (``demo.fns``) and when a
    render runs in a page (``LazyTab``, the Chat tab's tools: ``lazy.finish_render``): a
    concurrency limit and the role check.

    Events without a limit of their own (quick actions: rename, pin, export, a preset...)
    run at most QUICK_LIMIT at once each, so a burst of one kind can't take every event
    slot. Everything that follows work the server does anyway (a reply, an image job, a
    pull, an arena run, the status tick) or that a person waits on while typing (open,
    search, send) says concurrency_limit=None where it is wired, with its own
    concurrency_id. Set on the events, not with demo.queue(): that rebuilds Gradio's whole
    app (~0.3 s of every start), and a later queue() call can't change it.

    Gradio names an event's concurrency group after its function object (``id(fn)``). A
    render's functions are made again for each page (and each run), so each page would
    get groups of its own (no limit across pages, and one more group in Gradio's queue per
    page, kept forever): they are named after the code instead, the same for every page.
    """
    def apply(block_fns: Iterable[BlockFunction]) -> None:
        block_fns = list(block_fns)
        for block_fn in block_fns:
            if block_fn.concurrency_limit == "default":
                block_fn.concurrency_limit = QUICK_LIMIT
            if (block_fn.rendered_in is not None and block_fn.fn is not None
                    and block_fn.concurrency_id == str(id(block_fn.fn))):
                code = getattr(block_fn.fn, "__code__", None)
                module, name = origin_of(block_fn.fn)
                line = code.co_firstlineno if code is not None else 0
                block_fn.concurrency_id = f"{module}.{name}:{line}"
        secure_functions(block_fns, services.access.role_of,
                         audit=services.access.audit.record)
    return apply


def launch_kwargs(services) -> dict:
    """Options for demo.launch(): bind address, theme, CSS, paths the UI may serve."""
    s = services.settings
    css = (services.root / "assets" / "studio.css").read_text(encoding="utf-8")
    css = css.replace("--studio-accent: #e8590c", f"--studio-accent: {s.accent_color}")
    theme = gr.themes.Soft(primary_hue=gr.themes.colors.orange, radius_size="sm",
                           spacing_size="sm", text_size="sm").set(
        button_primary_background_fill=s.accent_color,
        button_primary_background_fill_dark=s.accent_color,
        color_accent=s.accent_color)
    js = (services.root / "assets" / "studio.js").read_text(encoding="utf-8")
    # Gradio scopes `css` to the page's content; the frame around it is styled unscoped.
    frame = (services.root / "assets" / "frame.css").read_text(encoding="utf-8")
    # Before Gradio's own scripts, so the first request of the page already carries it.
    zone_js = (services.root / "assets" / "timezone.js").read_text(encoding="utf-8")
    data = services.data_dir
    live = LiveText(services.chat, interval=s.stream_interval)
    gate = Middleware(AccessGate, authority=services.access, data_dir=data, brand=s.brand_name,
                      accent=s.accent_color, owner=OWNER, cookie_domain=s.cookie_domain)
    return dict(server_name=s.host, server_port=s.port, share=s.share, theme=theme, css=css, js=js,
                head=f"<style>{frame}</style><script>{zone_js}</script>",
                # Gradio keeps every page's state (a copy of each component's config, ~0.6 MB
                # here) until 10,000 pages by default: gigabytes for a long-running studio.
                state_session_capacity=s.max_page_sessions,
                # Only these folders, and the front door serves a file of them to its owner
                # alone; the database beside them is never served.
                allowed_paths=[str(data / name) for name in ("outputs", "uploads", "exports")],
                blocked_paths=[str(s.db_path), f"{s.db_path}-wal", f"{s.db_path}-shm"],
                auth_dependency=lambda request: request.scope.get("state", {}).get("studio_user"),
                app_kwargs={"middleware": [gate, Middleware(AssetCache), Middleware(PageCache)],
                            "routes": [
                    *live.routes(), *chat_quick.routes(live),
                    *OpenAIApi(services.chat, services.models, services.keys).routes(),
                    *ImagesApi(services.images, services.keys, data,
                               services.gpu_coordinator).routes(),
                    *OllamaApi(services.chat, services.models, services.keys).routes(),
                    *EmbeddingsApi(services.embeddings, services.keys).routes(),
                    *HealthApi(services.operations, token=s.metrics_token,
                               sign_in_required=services.access.sign_in_required).routes(),
                    *MetricsApi(services.metrics, services.operations, token=s.metrics_token,
                                sign_in_required=services.access.sign_in_required).routes()]},
                run_history=False,
                # Gradio runs at most max_threads events at once (40 by default) and a sync
                # generator holds a thread while it waits for its next update: each reply
                # streaming into a page, each followed image job or pull holds one for its
                # whole life. At 40 a 41st chat's message would wait behind 40 replies at a
                # model's pace; waiting threads cost no CPU and little memory.
                max_threads=MAX_EVENTS,
                max_file_size=int(s.max_upload_mb * 1024 * 1024),
                enable_monitoring=False, footer_links=["api", "settings"], show_error=True,
                favicon_path=None)
