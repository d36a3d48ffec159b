"""A conversation's turns, stored in SQLite or kept only in memory (incognito).

``History`` is what the chat service writes a turn through: the user's message, the
placeholder a reply streams into, and a new version of a turn (an answer again, an edited
message). A stored chat keeps every version and shows one branch (``Store.messages``);
an incognito chat keeps only the branch it shows: a new version replaces the turn and
what followed it. ``StoredHistory`` writes the
store; ``IncognitoHistory`` keeps its turns in memory and is forgotten when the chat ends,
so the service never asks "is this incognito?" at each step. ``Turn`` is the one view of a
message either way. No gradio imports here.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..model_id import ModelId

if TYPE_CHECKING:
    from ..store.db import Conversation, Message, Store
    from .replies import ReplySnapshot


@dataclass(frozen=True)
class Turn:
    """One message as a page shows it, whether stored or incognito."""

    seq: int
    role: str
    content: str
    thinking: str = ""
    images: tuple[str, ...] = ()
    status: str = "complete"
    error: str = ""
    model: str = ""
    backend: str = ""
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_ms: float | None = None
    cost_usd: float | None = None
    notices: tuple[str, ...] = ()
    message_id: int | None = None
    retrying: str = ""  # a live reply's "trying again" line (never stored)
    version: int = 1  # which version of this turn is shown (1-based)
    versions: int = 1  # how many versions the turn has (a stored chat keeps them all)


def turn_from_message(m: "Message") -> Turn:
    """The turn of a stored message."""
    return Turn(seq=m.seq, role=m.role, content=m.content or "", thinking=m.thinking or "",
                images=tuple(m.images or ()), status=m.status, error=m.error or "",
                model=m.model or "", backend=m.backend or "", ttft_ms=m.ttft_ms,
                tokens_per_s=m.tokens_per_s, prompt_tokens=m.prompt_tokens,
                completion_tokens=m.completion_tokens, total_ms=m.total_ms, cost_usd=m.cost_usd,
                notices=tuple((m.meta or {}).get("notices") or ()), message_id=m.id,
                version=m.version, versions=m.versions)


def turn_with_snapshot(turn: Turn, snap: "ReplySnapshot") -> Turn:
    """An assistant turn overlaid with what its live reply has now."""
    u = snap.usage
    return replace(turn, content=snap.text, thinking=snap.thinking, status=snap.status,
                   error=snap.error, model=snap.answered_by, backend=snap.backend,
                   ttft_ms=snap.ttft_ms, tokens_per_s=u.tokens_per_s,
                   prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                   total_ms=snap.elapsed_ms if snap.done else None, cost_usd=u.cost_usd,
                   notices=snap.notices, retrying=snap.retrying)


class History(ABC):
    """The turns of one conversation and the writes a chat turn makes to them.

    ``chat_id`` names it for pages (a conversation id, or an incognito chat's key);
    ``conversation_id`` is the stored conversation's id, None while it isn't stored.
    """

    chat_id: str | None
    conversation_id: str | None = None
    reply_id: str | None = None  # incognito: the reply streaming into the last turn
    stored: bool

    @abstractmethod
    def turns(self, first: int | None = None, last: int | None = None) -> list[Turn]:
        """The turns in order, as last written (a streaming reply shows what was flushed);
        only those with ``first`` <= seq <= ``last`` when given."""

    @abstractmethod
    def seqs(self) -> list[int]:
        """Every turn's seq, ascending (cheap: no text is read)."""

    @abstractmethod
    def begin(self, *, title: str, model: ModelId, system_prompt: str) -> None:
        """Before a turn is written: create the conversation if it is new, else note the
        model and system prompt it now uses."""

    @abstractmethod
    def add_user(self, text: str, images: tuple[str, ...], *, after: Turn | None = None,
                 version_of: Turn | None = None) -> Turn:
        """Append the user's message after ``after`` (the branch's last turn, as the caller
        read it; None for a chat's first), or with ``version_of`` (a user turn of the
        branch shown) add it as that turn's new version (an edit), shown from now on."""

    @abstractmethod
    def add_placeholder(self, model: ModelId, *, after: Turn | None = None,
                        version_of: Turn | None = None) -> Turn:
        """Append an empty assistant turn (status "streaming") for a reply to fill after
        ``after``, or with ``version_of`` (an assistant turn of the branch shown) add it as
        that turn's new version (an answer again)."""

    def show_version(self, turn: Turn, step: int) -> bool:
        """Show the version ``step`` away (+1 later, -1 earlier) of ``turn``, with its later
        turns; False when there is no other version to show."""
        return False

    @property
    def future_chat_id(self) -> str:
        """``chat_id`` as it is once the next turn is written (a new chat's id, chosen
        before it is stored)."""
        return self.chat_id or ""

    def settle(self, seq: int, snap: "ReplySnapshot") -> None:
        """A reply into turn ``seq`` ended. Stored replies are written by the reply itself
        (``ReplyManager``), so only a history of its own needs to keep ``snap``."""

    def writing(self):
        """A context in which a turn's writes land together or not at all."""
        return nullcontext()


class StoredHistory(History):
    """A conversation in the store; ``conversation_id`` None until its first message."""

    stored = True

    def __init__(self, store: "Store", conversation: "Conversation | None", *, user: str):
        self._store = store
        self.conversation = conversation  # as read when the history was opened
        self.conversation_id = conversation.id if conversation is not None else None
        self.user = user
        self._fresh: set | None = None  # inside writing(): what it created (chat, message ids)
        self._new_id = uuid.uuid4().hex  # the conversation's id if ``begin`` creates it

    @property
    def chat_id(self) -> str | None:  # type: ignore[override]
        return self.conversation_id

    @property
    def future_chat_id(self) -> str:
        return self.conversation_id or self._new_id

    def turns(self, first: int | None = None, last: int | None = None) -> list[Turn]:
        if self.conversation_id is None:
            return []
        return [turn_from_message(m) for m in self._store.messages(self.conversation_id,
                                                                   first=first, last=last)]

    def seqs(self) -> list[int]:
        return self._store.message_seqs(self.conversation_id) if self.conversation_id else []

    @contextmanager
    def writing(self):
        """One transaction: when a write fails (a full disk), none of the turn's writes stay,
        not even the new conversation."""
        before = self.conversation_id
        self._fresh = set()
        try:
            with self._store.transaction():
                yield
        except BaseException:
            self.conversation_id = before
            raise
        finally:
            self._fresh = None

    def _place(self, after: Turn | None, version_of: Turn | None) -> dict:
        """Where a stored message goes, as ``Store.add_message`` takes it: ``fresh`` when
        ``after`` (None: the chat itself) was written by this ``writing()``, so the store
        needn't look anything up."""
        fresh = version_of is None and self._fresh is not None and (
            after.message_id if after is not None else self.conversation_id) in self._fresh
        return {"after": after.message_id if after is not None else None,
                "version_of": version_of.message_id if version_of is not None else None,
                "fresh": fresh}

    def _note_fresh(self, turn: Turn) -> Turn:
        if self._fresh is not None:
            self._fresh.add(turn.message_id)
        return turn

    def begin(self, *, title: str, model: ModelId, system_prompt: str) -> None:
        if self.conversation_id is None:
            conv = self._store.create_conversation(title, model=model.name, backend=model.backend,
                                                   system_prompt=system_prompt, user=self.user,
                                                   conv_id=self._new_id)
            self.conversation_id = conv.id
            if self._fresh is not None:
                self._fresh.add(conv.id)
        else:
            self._store.update_conversation(self.conversation_id, model=model.name,
                                            backend=model.backend, system_prompt=system_prompt)

    def add_user(self, text: str, images: tuple[str, ...], *, after: Turn | None = None,
                 version_of: Turn | None = None) -> Turn:
        return self._note_fresh(turn_from_message(self._store.add_message(
            self.conversation_id, "user", text, images=images,
            **self._place(after, version_of))))

    def add_placeholder(self, model: ModelId, *, after: Turn | None = None,
                        version_of: Turn | None = None) -> Turn:
        return self._note_fresh(turn_from_message(self._store.add_message(
            self.conversation_id, "assistant", "", status="streaming", model=model.name,
            backend=model.backend, **self._place(after, version_of))))

    def show_version(self, turn: Turn, step: int) -> bool:
        if turn.versions < 2 or turn.message_id is None:
            return False
        shown = self._store.show_version(self.conversation_id, turn.message_id, step)
        return shown is not None and shown != turn.message_id


class IncognitoHistory(History):
    """Turns kept in memory only; nothing reaches the database. Thread-safe: a reply's
    worker thread settles its turn while pages read."""

    stored = False

    def __init__(self, chat_id: str, *, user: str):
        self.chat_id = chat_id
        self.user = user
        self._turns: list[Turn] = []
        self._lock = threading.Lock()

    def turns(self, first: int | None = None, last: int | None = None) -> list[Turn]:
        with self._lock:
            return [t for t in self._turns if (first is None or t.seq >= first)
                    and (last is None or t.seq <= last)]

    def seqs(self) -> list[int]:
        with self._lock:
            return [t.seq for t in self._turns]

    def begin(self, *, title: str, model: ModelId, system_prompt: str) -> None:
        pass

    def _append(self, **fields) -> Turn:
        with self._lock:
            seq = self._turns[-1].seq + 1 if self._turns else 1
            turn = Turn(seq=seq, **fields)
            self._turns.append(turn)
            return turn

    def add_user(self, text: str, images: tuple[str, ...], *, after: Turn | None = None,
                 version_of: Turn | None = None) -> Turn:
        self._drop_from(version_of)
        return self._append(role="user", content=text, images=images)

    def add_placeholder(self, model: ModelId, *, after: Turn | None = None,
                        version_of: Turn | None = None) -> Turn:
        self._drop_from(version_of)
        return self._append(role="assistant", content="", status="streaming", model=model.name,
                            backend=model.backend)

    def _drop_from(self, turn: Turn | None) -> None:
        """Incognito keeps no versions: a new one replaces ``turn`` and what followed it."""
        if turn is not None:
            with self._lock:
                self._turns = [t for t in self._turns if t.seq < turn.seq]

    def settle(self, seq: int, snap: "ReplySnapshot") -> None:
        with self._lock:
            self._turns = [turn_with_snapshot(t, snap) if t.seq == seq else t
                           for t in self._turns]
