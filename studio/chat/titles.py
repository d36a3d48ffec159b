"""Conversation titles written by a small local model (STUDIO_TITLE_MODEL).

A new chat is titled with the first words of its question at once. When its first reply
completes, ``TitleWriter`` asks the configured Ollama model for a few words, on its own
reply thread through the same path as every reply (``ReplyManager``: the one-GPU policy,
the router with no fallback, so it stays local; usage accounting with ``via`` "title"), so the chat's reply never waits for it.
The title replaces the first-words one only if nobody renamed the chat meanwhile (the
store checks, in the same statement). A failure (the model missing, Ollama down, an empty
answer) leaves the first-words title and logs one line. No gradio imports here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import StudioError
from ..events import ChatOptions
from ..model_id import OLLAMA, ModelId
from .conversations import clean_title, title_messages

if TYPE_CHECKING:
    from ..store.db import Store
    from .replies import LiveReply, ReplyManager, ReplySnapshot

log = logging.getLogger(__name__)

VIA = "title"  # how its usage shows in Costs, beside "" (a page) and "api: <key>"
# A title is a few words; thinking is off so a reasoning model answers at once.
OPTIONS = ChatOptions(temperature=0.2, max_tokens=32, think=False)


class TitleWriter:
    """Titles new chats with ``model`` (an Ollama model name; '' = off)."""

    def __init__(self, replies: "ReplyManager", store: "Store", model: str = "") -> None:
        self._replies = replies
        self._store = store
        # "llama3.2:1b" or the picker's "ollama:llama3.2:1b" alike.
        self.model = (model or "").strip().removeprefix(f"{OLLAMA}:")

    def after_first_reply(self, conversation_id: str, question: str, answer: "ReplySnapshot",
                          *, user: str) -> "LiveReply | None":
        """Start titling the chat whose first reply ``answer`` just ended; returns the title's
        reply (None when titles are off or the answer didn't complete)."""
        if not self.model or answer.status != "complete" or not answer.text.strip():
            return None

        def finished(snap: "ReplySnapshot") -> None:
            title = clean_title(snap.text) if snap.status == "complete" else ""
            if not title:
                log.info("No title from %s for chat %s (%s); the first words stay.",
                         self.model, conversation_id, snap.error or "an empty answer")
                return
            try:
                self._store.set_generated_title(conversation_id, title, user=user)
            except StudioError as exc:  # the chat went meanwhile, the disk is full
                log.info("The title for chat %s was not saved: %s", conversation_id, exc)

        try:
            model_id = str(ModelId(OLLAMA, self.model))
        except StudioError as exc:
            log.info("No title for chat %s: %s", conversation_id, exc)
            return None
        return self._replies.start(model_id, title_messages(question, answer.text), OPTIONS,
                                   user=user, via=VIA, exact=True, on_finish=finished)
