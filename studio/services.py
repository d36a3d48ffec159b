"""The studio's long-lived objects, built once from Settings and passed to the UI.

``build_services`` is the one place that opens the store and constructs clients; the UI
receives the resulting ``Services`` and never builds its own. No gradio imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .costs.accounting import Accounting
from .costs.budget import Budget
from .chat.arena import Arena, exact_stream
from .costs.catalog import Catalog
from .clients.comfyui import ComfyUIClient
from .clients.ollama import OllamaClient
from .clients.openrouter import OpenRouterClient
from .config import Settings
from .models.downloads import DownloadManager
from .errors import StudioError
from .events import ChatMessage, ChatNotice, ChatOptions
from .models.gpu import GpuMonitor
from .models.gpu_coordinator import GpuCoordinator, active_chat_models, parse_vram_overrides
from .models.pulls import PullManager
from .store.models import ModelsStore
from .presets import ChatPreset, load_chat_presets
from .chat.replies import ReplyManager
from .chat.router import Router, parse_model_id
from .ops.status import StatusBoard
from .store.db import Store
from .store.cloud import CloudStore
from .store.usage import UsageStore

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

RESTART_REASON = "The studio stopped before this reply finished."


@dataclass
class Services:
    """Everything a tab needs, built once. Clients are never None except ``openrouter``
    (None when no key is set: cloud models are then simply not offered)."""

    settings: Settings
    store: Store
    ollama: OllamaClient
    openrouter: OpenRouterClient | None
    router: Router
    comfyui: ComfyUIClient
    gpu: GpuMonitor
    downloads: DownloadManager
    replies: ReplyManager
    status: StatusBoard
    presets: list[ChatPreset]
    root: Path = ROOT
    catalog: Catalog | None = None  # OpenRouter's models, cached; None without a key
    arena: Arena | None = None
    # The Models tab: Ollama pulls that outlive the page, its tables, and the GPU sharing
    # that other tabs call before their work (gpu_coordinator.before_image_job / before_chat).
    pulls: PullManager | None = None
    models_store: ModelsStore | None = None
    gpu_coordinator: GpuCoordinator | None = None
    images: ImageJobs | None = None  # the Images tab's job service (studio/images/jobs.py)
    accounting: Accounting | None = None  # usage rows for every reply and image (Costs tab)
    budget: Budget | None = None  # caps cloud spend; the router reserves before each request

    @property
    def data_dir(self) -> Path:
        return self.settings.data_path

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    def stream_chat(self, model_id: str, messages: Sequence[ChatMessage],
                    options: ChatOptions, *, user: str = "owner") -> Iterator[object]:
        """Send a chat through the router (backend by model id, fallbacks, retries).

        Runs on the reply's server thread. A local model may first need room on the GPU:
        what the GPU policy did (or asks for) becomes a notice at the top of the reply."""
        note = self.make_room_for_chat(model_id)
        stream = self.router.chat_stream(model_id, messages, options, user=user)
        return stream if note is None else _with_notice(note, stream)

    def make_room_for_chat(self, model_id: str) -> str | None:
        """Apply the one-GPU policy before a chat on an Ollama model (ComfyUI may be asked to
        free its models). Returns a line for the reply when something was done, failed or
        needs a yes; None otherwise. Skipped without NVML readings: nothing could be known
        then, and each message would pay for two Ollama calls and a ComfyUI probe."""
        coordinator = self.gpu_coordinator
        backend, name = parse_model_id(model_id)
        if backend != "ollama" or coordinator is None or coordinator.policy == "off":
            return None
        if not self.gpu.sample().available:
            return None
        try:
            result = coordinator.before_chat(name)
        except StudioError:  # the chat itself reports a backend that is down
            return None
        if result.outcome == "asked":
            return (f"{result.message} Press \"Ask ComfyUI to free memory\" in the Models tab "
                    "if the reply is slow or fails.")
        return result.message if result.outcome in ("done", "failed", "skipped") else None

    def account_reply(self, snap, user: str) -> None:
        """Record one finished chat reply's usage (tokens, cost, energy) for the Costs tab."""
        if self.accounting is None or (snap.status == "error" and not snap.text):
            return
        backend = snap.backend or parse_model_id(snap.model_id)[0]
        model = snap.answered_by.split(":", 1)[-1] if not snap.backend else snap.answered_by
        self.accounting.record_chat(user, backend, model, snap.usage,
                                    duration_s=snap.elapsed_ms / 1000,
                                    conversation_id=snap.conversation_id,
                                    message_id=snap.message_id)

    def supports_images(self, model_id: str) -> bool:
        backend, name = parse_model_id(model_id)
        if backend == "ollama":
            return self.ollama.supports_vision(name)
        if backend == "openrouter" and self.catalog is not None:
            return self.catalog.supports_images(name)
        return False

    def cloud_models(self) -> list:
        """OpenRouter's catalog (cached in the database), or [] when cloud is off.
        Raises StudioError only when no list was ever fetched and OpenRouter is unreachable."""
        if self.catalog is None:
            return []
        return self.catalog.models()


def _with_notice(note: str, stream: Iterator[object]) -> Iterator[object]:
    """``stream`` with a ChatNotice in front; closing this closes ``stream`` too."""
    yield ChatNotice(note)
    yield from stream


def build_services(settings: Settings, *, root: Path = ROOT) -> Services:
    """Open the store (creating the data directory) and construct every client.

    Nothing here touches the network: clients connect on first use, so the studio starts
    and history stays browsable with every backend down. Raises StudioError when the data
    directory can't be written.
    """
    store = Store.open(settings.db_path)
    stale = store.mark_interrupted_streams(RESTART_REASON)
    if stale:
        log.warning("%d replies were cut off by the last shutdown; kept as partial", stale)
    ollama = OllamaClient(settings.ollama_url, timeout=settings.request_timeout)
    openrouter = None
    if settings.openrouter_api_key:
        openrouter = OpenRouterClient(settings.openrouter_api_key, settings.openrouter_base_url,
                                      referer=settings.openrouter_referer,
                                      title=settings.openrouter_title,
                                      timeout=settings.request_timeout)
    cloud_store = CloudStore(store)
    catalog = None
    if openrouter is not None:
        # Its own client with a short timeout: page loads may wait on the first fetch.
        lister = OpenRouterClient(settings.openrouter_api_key, settings.openrouter_base_url,
                                  referer=settings.openrouter_referer,
                                  title=settings.openrouter_title,
                                  timeout=min(settings.request_timeout, 20.0))
        catalog = Catalog(lister.list_models, cloud_store)
    if cloud_store.mark_interrupted_arena(RESTART_REASON):
        log.warning("Arena answers cut off by the last shutdown were kept as partial")
    # Without a key the cloud backend is still there, so a cloud model says "set
    # OPENROUTER_API_KEY" (NoApiKey, before any request) and can fall back like any failure.
    backends = {"ollama": ollama,
                "openrouter": openrouter or OpenRouterClient("", settings.openrouter_base_url)}
    budget = Budget(UsageStore(store), settings)
    router = Router(backends, fallbacks=settings.fallback_chains, budget=budget,
                    prices=catalog.prices if catalog is not None else None)
    services = Services(
        settings=settings, store=store, ollama=ollama, openrouter=openrouter, router=router,
        comfyui=ComfyUIClient(settings.comfyui_url), gpu=GpuMonitor(),
        downloads=DownloadManager(),
        replies=None,  # type: ignore[arg-type] - needs services.stream_chat, set just below
        status=StatusBoard(settings),
        presets=load_chat_presets(root / "presets" / "chat"), root=root)
    services.budget = budget
    services.accounting = Accounting(UsageStore(store), settings,
                                     prices=catalog.prices if catalog is not None else None)
    services.replies = ReplyManager(services.stream_chat, store,
                                    on_settled=services.account_reply)
    services.catalog = catalog
    # Arena answers cost like chat replies: same budget (through the router) and accounts.
    services.arena = Arena(ReplyManager(exact_stream(router), on_settled=services.account_reply),
                           cloud_store,
                           names=catalog.display_name if catalog is not None else None)
    services.pulls = PullManager(ollama.pull)
    services.models_store = ModelsStore(store)
    services.gpu_coordinator = GpuCoordinator(
        policy=settings.gpu_policy, vram_overrides=parse_vram_overrides(settings.vram_per_family),
        gpu=services.gpu, ollama=ollama, comfyui=services.comfyui, log=services.models_store,
        busy_models=lambda: active_chat_models(services.replies))
    for path in (services.uploads_dir, services.exports_dir, services.outputs_dir):
        path.mkdir(parents=True, exist_ok=True)
    # Image jobs: picks up prompts a previous run left in ComfyUI (network only if any).
    from .images.jobs import ImageJobs, build_image_jobs  # noqa: F401 - ImageJobs names the field type
    services.images = build_image_jobs(services)
    return services
