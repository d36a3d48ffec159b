"""The studio's long-lived objects, built once from Settings and passed to the UI.

``build_services`` is the one place that opens the store and constructs clients; the UI
receives the resulting ``Services`` and never builds its own. No gradio imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .clients.ollama import OllamaClient
from .config import Settings
from .errors import InvalidInput
from .events import ChatMessage, ChatOptions
from .presets import ChatPreset, load_chat_presets
from .replies import ReplyManager
from .status import StatusBoard
from .store import Store

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

RESTART_REASON = "The studio stopped before this reply finished."


def split_model_id(model_id: str) -> tuple[str, str]:
    """'ollama:llama3.2:latest' -> ('ollama', 'llama3.2:latest'); a bare name means Ollama.

    >>> split_model_id("openrouter:openai/gpt-4o-mini")
    ('openrouter', 'openai/gpt-4o-mini')
    >>> split_model_id("llava")
    ('ollama', 'llava')
    """
    backend, sep, name = model_id.partition(":")
    if sep and backend in ("ollama", "openrouter"):
        return backend, name
    return "ollama", model_id


@dataclass
class Services:
    settings: Settings
    store: Store
    ollama: OllamaClient
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

    def stream_chat(self, model_id: str, messages: Sequence[ChatMessage],
                    options: ChatOptions) -> Iterator[object]:
        """Send a chat to whichever backend serves ``model_id``."""
        backend, name = split_model_id(model_id)
        if backend == "ollama":
            return self.ollama.chat_stream(name, messages, options)
        raise InvalidInput(f"Cloud model {name!r} can't be used yet: no OpenRouter backend is set up.",
                           hint="Pick a local model.")

    def supports_images(self, model_id: str) -> bool:
        backend, name = split_model_id(model_id)
        if backend == "ollama":
            return self.ollama.supports_vision(name)
        return False


def build_services(settings: Settings, *, root: Path = ROOT) -> Services:
    """Open the store (creating the data directory) and construct every client.

    Raises StudioError when the data directory can't be written.
    """
    store = Store.open(settings.db_path)
    stale = store.mark_interrupted_streams(RESTART_REASON)
    if stale:
        log.warning("%d replies were cut off by the last shutdown; kept as partial", stale)
    ollama = OllamaClient(settings.ollama_url, timeout=settings.request_timeout)
    services = Services(settings=settings, store=store, ollama=ollama,
                        replies=None,  # type: ignore[arg-type] - set just below
                        status=StatusBoard(settings),
                        presets=load_chat_presets(root / "presets" / "chat"), root=root)
    services.replies = ReplyManager(services.stream_chat, store)
    for path in (services.uploads_dir, services.exports_dir):
        path.mkdir(parents=True, exist_ok=True)
    return services
