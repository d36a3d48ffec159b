"""The studio's long-lived objects, built once from Settings and passed to the UI.

``build_services`` is the one place that opens the store and constructs clients; the UI
receives the resulting ``Services`` and never builds its own. No gradio imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .clients.comfyui import ComfyUIClient
from .clients.ollama import OllamaClient
from .clients.openrouter import OpenRouterClient
from .config import Settings
from .downloads import DownloadManager
from .events import ChatMessage, ChatOptions
from .gpu import GpuMonitor
from .presets import ChatPreset, load_chat_presets
from .replies import ReplyManager
from .router import Router, parse_model_id
from .status import StatusBoard
from .store import Store

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
        """Send a chat through the router (backend by model id, fallbacks, retries)."""
        return self.router.chat_stream(model_id, messages, options, user=user)

    def supports_images(self, model_id: str) -> bool:
        backend, name = parse_model_id(model_id)
        if backend == "ollama":
            return self.ollama.supports_vision(name)
        if backend == "openrouter" and self.openrouter is not None:
            return any(m.id == name and m.supports_images for m in self.cloud_models())
        return False

    def cloud_models(self) -> list:
        """OpenRouter's catalog (cached by the client), or [] when cloud is off."""
        if self.openrouter is None:
            return []
        return self.openrouter.list_models()


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
    backends = {"ollama": ollama}
    if openrouter is not None:
        backends["openrouter"] = openrouter
    router = Router(backends)
    services = Services(
        settings=settings, store=store, ollama=ollama, openrouter=openrouter, router=router,
        comfyui=ComfyUIClient(settings.comfyui_url), gpu=GpuMonitor(),
        downloads=DownloadManager(),
        replies=None,  # type: ignore[arg-type] - needs services.stream_chat, set just below
        status=StatusBoard(settings),
        presets=load_chat_presets(root / "presets" / "chat"), root=root)
    services.replies = ReplyManager(services.stream_chat, store)
    for path in (services.uploads_dir, services.exports_dir, services.outputs_dir):
        path.mkdir(parents=True, exist_ok=True)
    return services
