"""Opening a chat stream: the one path every reply takes to a model, chat and arena alike.

``ChatStreams.open`` holds the model as in use (so the one-GPU policy never unloads a model
that is answering), applies that policy before a local model starts (ComfyUI may be asked
to free its memory; what was done becomes a notice at the top of the reply), then streams
through the router: with fallbacks for a chat, exactly the model named for the arena.
``record_usage`` is the hook that accounts each settled reply. No gradio imports here.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..errors import StudioError
from ..events import ChatMessage, ChatNotice, ChatOptions
from ..model_id import OLLAMA, ModelId

if TYPE_CHECKING:
    from ..costs.accounting import Accounting
    from ..store.usage import UsageRecord
    from ..models.gpu import GpuMonitor
    from ..models.gpu_coordinator import GpuCoordinator, ModelsInUse
    from .replies import ReplySnapshot
    from .router import Router


class ChatStreams:
    """Streams chat events for a model id (``ReplyManager``'s ``stream_fn``)."""

    def __init__(self, router: "Router", *, in_use: "ModelsInUse",
                 coordinator: "GpuCoordinator | None" = None,
                 gpu: "GpuMonitor | None" = None) -> None:
        self._router = router
        self._in_use = in_use
        self._coordinator = coordinator
        self._gpu = gpu

    def open(self, model_id: str | ModelId, messages: Sequence[ChatMessage],
             options: ChatOptions | None = None, *, user: str = "owner",
             exact: bool = False) -> Iterator[object]:
        """The reply's events; closing the iterator closes the backend stream and frees the
        model. ``exact`` asks for that model only (no fallbacks), as the arena needs."""
        model = ModelId.parse(model_id)
        router = self._router
        if exact:
            router = copy.copy(router)
            router.fallbacks = {}
        return self._held(model, router, list(messages), options, user)

    def _held(self, model: ModelId, router: "Router", messages: list[ChatMessage],
              options: ChatOptions | None, user: str) -> Iterator[object]:
        with self._in_use.hold(model):
            note = self.make_room(model)
            if note is not None:
                yield ChatNotice(note)
            yield from router.chat_stream(model, messages, options, user=user)

    def make_room(self, model: ModelId) -> str | None:
        """Apply the one-GPU policy before a chat on an Ollama model. Returns a line for the
        reply when something was done, failed or needs a yes; None otherwise. Skipped
        without NVML readings: nothing could be known then, and each message would pay for
        two Ollama calls and a ComfyUI probe."""
        coordinator = self._coordinator
        if model.backend != OLLAMA or coordinator is None or coordinator.policy == "off":
            return None
        if self._gpu is None or not self._gpu.sample().available:
            return None
        try:
            result = coordinator.before_chat(model.name)
        except StudioError:  # the chat itself reports a backend that is down
            return None
        if result.outcome == "asked":
            return (f"{result.message} Press \"Ask ComfyUI to free memory\" in the Models tab "
                    "if the reply is slow or fails.")
        return result.message if result.outcome in ("done", "failed", "skipped") else None


def record_usage(accounting: "Accounting", *,
                 observe: "Callable[[ReplySnapshot, UsageRecord | None], None] | None" = None,
                 source: str = "chat") -> Callable[["ReplySnapshot", str], None]:
    """The ``on_settled`` hook of a ``ReplyManager``: one usage row per reply that produced
    anything (tokens, cost, energy) for the Costs tab, recorded as ``source`` ("chat", or
    "arena" for the arena's replies; the API's are "api" by their ``via``).
    ``observe(snapshot, row)`` then sees every settled reply, with its usage row or None
    (the metrics: O(1) per reply)."""

    def record(snap: "ReplySnapshot", user: str) -> None:
        row = None
        if not (snap.status == "error" and not snap.text):
            if snap.backend:
                backend, model = snap.backend, snap.answered_by
            else:  # the stream ended before saying who answered: the model asked for
                asked = ModelId.parse(snap.answered_by)
                backend, model = asked.backend, asked.name
            row = accounting.record_chat(user, backend, model, snap.usage,
                                         duration_s=snap.elapsed_ms / 1000,
                                         conversation_id=snap.conversation_id,
                                         message_id=snap.message_id, via=snap.via,
                                         source=source)
        if observe is not None:
            observe(snap, row)

    return record
