"""The chat service: one object owns a conversation turn, for every caller alike.

``send``, ``retry`` and ``edit`` each run the same refusals first (no model, a message
too long, a file that isn't an image, an image for a text-only model, a reply still being
written, a budget cap no fallback can take) and only then write: the user's turn, the
placeholder the reply streams into, and the reply itself (through ``ReplyManager``, which
also accounts its usage). ``retry`` and ``edit`` add a version of a turn and keep the
earlier ones; ``show_version`` pages between them. ``open``, ``turns`` and ``follow``
read; ``stop``, ``rename``, ``delete``, ``export``, ``end``, ``set_pinned``,
``conversation_page`` and ``import_chats`` finish the verbs a page needs. The Chat tab, the API,
benchmarks and tests are all callers; none of them writes history itself.

Every verb takes the calling ``user``; a conversation of another user is "not found",
exactly like a missing one. No gradio imports here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from ..errors import InvalidInput, NotFound, StudioError
from ..events import ChatMessage, ChatOptions
from ..images.files import check_input_image
from ..model_id import ModelId
from ..store.db import file_fault, storable_text
from .conversations import backend_messages, export_json, export_markdown, title_from
from .history import History, IncognitoHistory, StoredHistory, Turn, turn_with_snapshot
from .imports import ImportReport, read_export
from .replies import LiveReply, ReplyManager, ReplySnapshot
from .window import WHOLE, Window, around, counts, from_start, newest

if TYPE_CHECKING:
    from ..access.limits import Limits
    from ..costs.budget import Budget
    from ..costs.pricing import ModelPrices
    from ..store.db import Store
    from .router import Router
    from .titles import TitleWriter

log = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
INCOGNITO_PREFIX = "incognito-"
INCOGNITO_IDLE_S = 12 * 3600  # an incognito chat nobody touched this long is forgotten
GONE = "That conversation no longer exists."


@dataclass(frozen=True)
class Started:
    """A reply that began: in which chat (new chats get their id here), and the reply."""

    chat_id: str
    reply: LiveReply
    created: bool  # a stored conversation was created by this turn


@dataclass(frozen=True)
class ChatView:
    """Part of a conversation as a page shows it: the turns of ``window`` (a live reply
    overlaid), how many come before and after them, and the reply streaming in the chat."""

    turns: list[Turn]
    live: LiveReply | None
    window: Window = WHOLE
    earlier: int = 0
    later: int = 0


@dataclass(frozen=True)
class OpenChat:
    """A conversation as a page opens it: its title and model, and what the page shows."""

    chat_id: str
    title: str
    model_id: str | None
    view: ChatView

    @property
    def turns(self) -> list[Turn]:
        return self.view.turns

    @property
    def live(self) -> LiveReply | None:
        return self.view.live


@dataclass(frozen=True)
class ChatListEntry:
    chat_id: str
    title: str
    snippet: str = ""  # a matching message's words, for a search hit
    message_id: int | None = None  # that message, for a search hit
    pinned: bool = False
    updated_at: str = ""  # last activity, the store's ISO 8601 UTC text


@dataclass(frozen=True)
class ConversationPage:
    """One page of a user's chats for the sidebar; ``more`` goes to ``conversation_page``
    for the next one (None: this was the last)."""

    entries: list[ChatListEntry]
    more: str | None


def _counted(method):
    """Tell ``on_refused`` of a refusal (a StudioError raised before a reply started)."""

    @functools.wraps(method)
    def counted(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StudioError as exc:
            if self._on_refused is not None:
                kind = "api" if kwargs.get("via", "").startswith("api") else "chat_page"
                try:
                    self._on_refused(kind, exc)
                except Exception:  # noqa: BLE001 - counting must never change the answer
                    log.exception("on_refused hook failed")
            raise

    return counted


class ChatService:
    """Conversation turns over the store (or memory, incognito) and the reply manager.

    ``supports_images(model)`` says whether a model reads images; ``prices(model_id)`` gives a
    cloud model's prices (None when unknown); ``budget`` answers where a user stands.
    """

    def __init__(self, store: "Store", replies: ReplyManager, router: "Router", *,
                 uploads_dir: Path, exports_dir: Path, max_message_chars: int,
                 supports_images: Callable[[ModelId], bool],
                 prices: Callable[[str], "ModelPrices | None"] | None = None,
                 budget: "Budget | None" = None,
                 default_max_tokens: int = 1024, max_megapixels: float = 16.0,
                 limits: "Limits | None" = None,
                 on_refused: Callable[[str, StudioError], None] | None = None,
                 titles: "TitleWriter | None" = None,
                 max_import_bytes: int = 50 * 1024 * 1024) -> None:
        self._store = store
        self._replies = replies
        self._router = router
        self._uploads_dir = Path(uploads_dir)
        self._exports_dir = Path(exports_dir)
        self._max_chars = max_message_chars
        self._supports_images = supports_images
        self._prices = prices
        self._budget = budget
        self._default_max_tokens = default_max_tokens
        self._max_megapixels = max_megapixels
        self._limits = limits
        # Told of every request refused before a reply started (metrics): "chat_page" or
        # "api", and the refusal.
        self._on_refused = on_refused
        self._titles = titles
        self._max_import_bytes = max_import_bytes
        self._lock = threading.Lock()
        self._incognito: dict[str, tuple[IncognitoHistory, float]] = {}
        # Incognito attachments left by the last run belong to chats that are gone.
        for leftover in self._uploads_dir.glob(INCOGNITO_PREFIX.rstrip("-") + "*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # -- the turn verbs ---------------------------------------------------------------

    @_counted
    def send(self, chat_id: str | None, text: str, files: Sequence[str | Path] = (), *,
             model: str, system_prompt: str = "", options: ChatOptions | None = None,
             user: str, incognito: bool = False,
             on_started: Callable[[Started], None] | None = None) -> Started:
        """Send a message (with image files) in ``chat_id``, or in a new chat when None
        (incognito: kept in memory only), and start the reply.

        Raises ``InvalidInput`` (empty or too long a message, no or an unknown model, a file
        that isn't an image, an image for a text-only model, a reply still being written),
        ``BudgetExceeded`` and ``NotFound``, all before anything is written; and
        ``StorageFailed`` when the turn could not be written (the reply, already asked
        for, is then abandoned: ``_start``). ``on_started``: told the moment the reply is
        asked for, before the turn is written (the page's quick send streams from then).
        """
        # A lone surrogate (an emoji split by a client) reads the same stored or incognito.
        text = storable_text(text or "")
        files = tuple(str(f) for f in files)
        if not text.strip() and not files:
            raise InvalidInput("The message is empty.", hint="Type something or attach an image.")
        history = self._history(chat_id, user, new_incognito=incognito)
        self._refuse_while_streaming(history)
        model_id = self._check(text, model, files)
        past = history.turns()
        pending = Turn(seq=0, role="user", content=text, images=files)
        messages = backend_messages(system_prompt, [*past, pending], read_image=_read)
        self._router.admit(model_id, messages, options, user=user)
        created = history.stored and history.conversation_id is None

        def write() -> Turn:
            history.begin(title=title_from(text), model=model_id,
                          system_prompt=system_prompt or "")
            self._keep(history)
            asked = history.add_user(text, saved, after=past[-1] if past else None)
            return history.add_placeholder(model_id, after=asked)

        with self._admitted(user) as release:
            # Pictures first: one that can't be saved (a full disk) never reaches the model.
            saved = self._save_uploads(history.future_chat_id, files)
            try:
                return self._start(history, write, model_id, messages, options, user,
                                   created, release, question=text, on_started=on_started)
            except BaseException:
                self._drop_uploads(history.future_chat_id, saved)
                raise

    @_counted
    def check(self, text: str, files: Sequence[str | Path] = (), *, model: str) -> None:
        """The refusals a message meets whatever the chat's state (empty, too long, no or an
        unknown model, a file that isn't a fitting image); raises ``InvalidInput``. A page
        asks before queueing a message, so a message that could never go is refused while
        its text can still go back into the box."""
        if not (text or "").strip() and not files:
            raise InvalidInput("The message is empty.", hint="Type something or attach an image.")
        self._check(text or "", model, tuple(str(f) for f in files))

    @_counted
    def retry(self, chat_id: str | None, *, model: str, system_prompt: str = "",
              options: ChatOptions | None = None, user: str, seq: int | None = None
              ) -> Started | None:
        """Answer a user message again: the answer at ``seq`` (an assistant turn of the
        branch shown), or by default the last user message's. The new answer is a new
        version of that turn, shown from now on; the earlier one is kept with its later
        turns (``show_version`` pages back to it). The model is sent the branch shown up
        to the question. None when there is no such turn. Raises like ``send``, before
        anything is written."""
        if chat_id is None:
            return None
        history = self._history(chat_id, user)
        self._refuse_while_streaming(history)
        past = history.turns()
        if seq is None:
            question = next((t for t in reversed(past) if t.role == "user"), None)
        else:
            answer = next((t for t in past if t.seq == seq and t.role == "assistant"), None)
            question = next((t for t in past if answer is not None and t.seq == seq - 1
                             and t.role == "user"), None)
        if question is None:
            return None
        answer = next((t for t in past if t.seq == question.seq + 1), None)
        if answer is None and past[-1].seq != question.seq:
            return None  # nothing answers it and it isn't last: no place for an answer
        model_id = self._check(question.content, model, question.images)
        kept = [t for t in past if t.seq <= question.seq]
        messages = backend_messages(system_prompt, kept, read_image=_read)
        self._router.admit(model_id, messages, options, user=user)

        def write() -> Turn:
            history.begin(title="", model=model_id, system_prompt=system_prompt or "")
            return (history.add_placeholder(model_id, version_of=answer) if answer is not None
                    else history.add_placeholder(model_id, after=question))

        with self._admitted(user) as release:
            return self._start(history, write, model_id, messages, options, user, False,
                               release)

    @_counted
    def edit(self, chat_id: str | None, seq: int, text: str, *, model: str,
             system_prompt: str = "", options: ChatOptions | None = None,
             user: str) -> Started | None:
        """Change user message ``seq`` and answer it again. The changed message is a new
        version of that turn with the new reply after it; the earlier message keeps its
        branch (``show_version`` pages back to it). None when ``seq`` is not a user
        message of the branch shown. Raises like ``send``, before anything is written."""
        if chat_id is None:
            return None
        history = self._history(chat_id, user)
        self._refuse_while_streaming(history)
        past = history.turns()
        target = next((t for t in past if t.seq == seq and t.role == "user"), None)
        if target is None:
            return None
        text = storable_text(text or "")
        model_id = self._check(text, model, target.images)
        edited = replace(target, content=text)
        messages = backend_messages(system_prompt, [*(t for t in past if t.seq < seq), edited],
                                    read_image=_read)
        self._router.admit(model_id, messages, options, user=user)

        def write() -> Turn:
            history.begin(title="", model=model_id, system_prompt=system_prompt or "")
            asked = history.add_user(text, target.images, version_of=target)
            return history.add_placeholder(model_id, after=asked)

        with self._admitted(user) as release:
            return self._start(history, write, model_id, messages, options, user, False,
                               release)

    def show_version(self, chat_id: str | None, seq: int, step: int, *, user: str,
                     first: int | None = None, most: int | None = None) -> ChatView:
        """Show another version of turn ``seq`` (``step`` +1 the next, -1 the one before),
        with the later turns of its branch; the choice is stored, so a reload shows it.
        Returns the chat as now shown: all of it, or with ``most`` (a page's window) at most
        that many turns from ``first`` on (``window.from_start``). Raises ``NotFound`` for
        a chat (or turn) that isn't there and ``InvalidInput`` while a reply is being
        written in it."""
        if chat_id is None:
            raise NotFound("There is no earlier version to show in a new chat.")
        history = self._history(chat_id, user)
        self._refuse_while_streaming(history)
        turn = next((t for t in history.turns(seq, seq) if t.seq == seq), None)
        if turn is None:
            raise NotFound("That message is no longer shown in this chat.",
                           hint="Reopen the chat from the list.")
        history.show_version(turn, step)
        if most is None:
            return self._view(history, WHOLE)
        with self._store.snapshot():
            seqs = history.seqs()  # the new branch's
            return self._view(history, from_start(seqs, first, most), seqs)

    @_counted
    def complete(self, messages: Sequence[ChatMessage], *, model: str,
                 options: ChatOptions | None = None, user: str, via: str = "") -> LiveReply:
        """A reply with no history (the API): the same refusals and the same path to the
        model (GPU policy, router, fallbacks, budget, usage) as a chat turn; nothing is
        written but its usage. Raises like ``send``."""
        messages = list(messages)
        model_id = self._check("\n".join(m.content for m in messages), model, (),
                               attached=any(m.images for m in messages))
        self._router.admit(model_id, messages, options, user=user)
        with self._admitted(user) as release:
            return self._replies.start(str(model_id), messages, options or ChatOptions(),
                                       user=user, via=via, on_finish=lambda _snap: release())

    def admits_at_once(self, model: str, messages: Sequence[ChatMessage], *, user: str
                       ) -> bool:
        """Whether ``complete`` would do no I/O before starting: a local model, no images
        to inspect, no budget to read, limits known without the store. An event loop may
        then call it in place (a thread hop costs a millisecond or more on a busy box) and
        must otherwise call it on a worker thread."""
        try:
            local = ModelId.parse(model).is_local
        except InvalidInput:
            return True  # refused at once, without I/O
        return local and not any(m.images for m in messages) and (
            self._limits is None or not self._limits.needs_store(user))

    def stop_reply(self, reply: LiveReply) -> bool:
        """Stop one reply (the API's client went away); what it wrote is kept."""
        return self._replies.stop(reply.reply_id)

    def stop(self, chat_id: str | None, *, user: str) -> bool:
        """Stop the reply streaming in the chat; what it wrote is kept. False if none was."""
        if chat_id is None:
            return False
        live = self._live(self._history(chat_id, user))
        return live is not None and self._replies.stop(live.reply_id)

    # -- reading ----------------------------------------------------------------------

    def live_reply(self, chat_id: str, *, user: str) -> LiveReply | None:
        """The reply streaming into the chat now (or just ended, not yet forgotten), or None.
        Raises ``NotFound`` for a missing or foreign chat."""
        return self._live(self._history(chat_id, user))

    def open(self, chat_id: str, *, user: str, newest_n: int | None = None,
             at_message: int | None = None) -> OpenChat:
        """A conversation with its turns: all of them, or with ``newest_n`` only the newest
        that many, or with ``at_message`` (a search hit's message id) too ``newest_n`` that
        end with that message and its answer (the newest ones when it is among them).
        Raises ``NotFound`` for a missing or foreign chat."""
        history = self._history(chat_id, user)
        if isinstance(history, StoredHistory):
            conv = history.conversation
            title = conv.title
            model_id = str(ModelId(conv.backend or "ollama", conv.model)) if conv.model else None
        else:
            title, model_id = "Incognito chat", None
        window, seqs = WHOLE, None
        with self._store.snapshot():  # the seqs and the turns read agree (docs/architecture.md)
            if newest_n:
                seqs = history.seqs()
                window = newest(seqs, newest_n)
                hit = (self._store.get_message(at_message) if at_message and history.stored
                       else None)
                if (hit is not None and hit.conversation_id == history.conversation_id
                        and window[0] is not None and hit.seq < window[0]):
                    window = around(seqs, hit.seq, newest_n)
            view = self._view(history, window, seqs)
        return OpenChat(chat_id=chat_id, title=title, model_id=model_id, view=view)

    def view(self, chat_id: str, *, user: str, window: Window = WHOLE) -> ChatView:
        """The turns of ``window`` (see ``chat/window.py``) and the counts around them."""
        return self._view(self._history(chat_id, user), window)

    def seqs(self, chat_id: str | None, *, user: str) -> list[int]:
        """Every message number of the chat, ascending; [] for a new chat."""
        return self._history(chat_id, user).seqs() if chat_id else []

    def turns(self, chat_id: str | None, *, user: str) -> list[Turn]:
        """The chat's turns, a reply still streaming shown as it is now; [] for a new chat."""
        if chat_id is None:
            return []
        return self._overlaid(self._history(chat_id, user))

    def follow(self, reply: LiveReply, *, interval: float = 0.125, first_wait: float = 0.0,
               text_interval: float | None = None) -> Iterator[ReplySnapshot]:
        """Snapshots of ``reply`` as it grows, paced by the reply (``replies.update_gap``:
        the first words at once, then at most one per ``interval`` once it streams
        steadily, or per ``text_interval`` once its text flows); the last is done."""
        return self._replies.follow(reply, interval=interval, first_wait=first_wait,
                                    text_interval=text_interval)

    def conversations(self, *, user: str, query: str = "", limit: int = 200
                      ) -> list[ChatListEntry]:
        """The user's stored chats, newest first; with ``query``, the chats matching it
        (title or any message), once each, with the matching words."""
        if not (query and query.strip()):
            return [ChatListEntry(c.id, c.title or "Untitled")
                    for c in self._store.list_conversations(user=user, limit=limit)]
        seen: set[str] = set()
        entries = []
        for hit in self._store.search(query, user=user, limit=50):
            if hit.conversation_id in seen:
                continue
            seen.add(hit.conversation_id)
            snippet = hit.snippet if hit.snippet and hit.message_id is not None else ""
            entries.append(ChatListEntry(hit.conversation_id, hit.title or "Untitled", snippet,
                                         hit.message_id if snippet else None))
        return entries

    def conversation_page(self, *, user: str, more: str | None = None, limit: int = 200
                          ) -> ConversationPage:
        """A page of the user's stored chats, pinned first, then newest first; ``more`` (from
        the previous page) continues after it. Raises ``InvalidInput`` for a ``more`` that
        no page gave."""
        after = _cursor_values(more) if more else None
        rows = self._store.conversation_page(user=user, after=after, limit=limit + 1)
        entries = [ChatListEntry(c.id, c.title or "Untitled", pinned=c.pinned,
                                 updated_at=c.updated_at) for c in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return ConversationPage(entries, None if last is None else
                                f"{int(last.pinned)}|{last.updated_at}|{last.id}")

    def cost_hint(self, chat_id: str | None, text: str, model: str, max_tokens: int | None, *,
                  user: str) -> list[str]:
        """Lines to show before a cloud prompt is sent: what it may cost, and where the
        user's budget stands when it isn't "ok". [] for a local model."""
        from ..costs.pricing import describe_prompt_estimate, estimate_messages_tokens

        try:
            model_id = ModelId.parse(model)
        except InvalidInput:
            return []
        if not model_id.is_cloud or self._prices is None:
            return []
        try:
            past = self.turns(chat_id, user=user)
        except NotFound:
            past = []
        texts = [t.content for t in past] + [text or ""]
        lines = [describe_prompt_estimate(self._prices(str(model_id)),
                                          estimate_messages_tokens(texts),
                                          int(max_tokens or 0) or self._default_max_tokens)]
        if self._budget is not None:
            status = self._budget.budget_status(user)
            if status.level != "ok":
                lines.append(("⚠️ " if status.level == "warning" else "⛔ ") + status.message)
        return lines

    # -- the conversation as a whole ------------------------------------------------------

    def rename(self, chat_id: str | None, title: str, *, user: str) -> None:
        history = self._history(chat_id, user) if chat_id else None
        if history is None or not history.stored:
            raise InvalidInput("Only saved conversations can be renamed.")
        self._store.rename_conversation(chat_id, (title or "").strip() or "Untitled")

    def title(self, chat_id: str | None, *, user: str) -> str:
        """The title of ``user``'s saved chat as it is now; "" for no chat, one not saved
        (incognito) and another's."""
        if not chat_id or chat_id.startswith(INCOGNITO_PREFIX):
            return ""
        conv = self._store.get_conversation(chat_id, user=user)
        return conv.title if conv is not None else ""

    def set_pinned(self, chat_id: str | None, pinned: bool, *, user: str) -> None:
        """Pin a stored chat to the top of the user's sidebar, or unpin it. Raises
        ``InvalidInput`` for a chat not saved (yet), ``NotFound`` for another's."""
        if not chat_id or chat_id.startswith(INCOGNITO_PREFIX):
            raise InvalidInput("Only saved conversations can be pinned.",
                               hint="Send a first message, or leave incognito.")
        if not self._store.set_pinned(chat_id, pinned, user=user):
            raise NotFound(GONE)

    def toggle_pinned(self, chat_id: str | None, *, user: str) -> bool:
        """Pin the chat if it isn't, else unpin it; returns whether it is pinned now.
        Raises like ``set_pinned``."""
        conv = (self._store.get_conversation(chat_id, user=user)
                if chat_id and not chat_id.startswith(INCOGNITO_PREFIX) else None)
        pinned = not conv.pinned if conv is not None else True
        self.set_pinned(chat_id, pinned, user=user)
        return pinned

    def import_chats(self, path: str | Path, *, user: str) -> ImportReport:
        """Bring the chats of an Open WebUI export or ChatGPT's conversations.json (or its
        zip) at ``path`` into the user's history: each chat's shown branch, with its times and
        model names. A chat imported before (by this user) is skipped, so importing a file
        twice adds nothing. Raises ``InvalidInput`` for another file or one over the size
        limit, before anything is written."""
        path = Path(path)
        size = path.stat().st_size
        if size > self._max_import_bytes:
            raise InvalidInput(
                f"This file is {size / 1e6:,.0f} MB; the limit is "
                f"{self._max_import_bytes / 1e6:,.0f} MB (STUDIO_MAX_UPLOAD_MB).",
                hint="Raise STUDIO_MAX_UPLOAD_MB, or split the export.")
        parsed = read_export(path.read_bytes(), max_bytes=self._max_import_bytes)
        known = self._store.imported_ids(parsed.source, user=user)
        report = ImportReport.of(parsed)
        for chat in parsed.chats:
            if chat.source_id in known or self._store.import_conversation(
                    user=user, source=parsed.source, source_id=chat.source_id,
                    title=chat.title, created_at=chat.created_at,
                    updated_at=chat.updated_at, messages=chat.messages) is None:
                report.already += 1
                continue
            known.add(chat.source_id)
            report.imported += 1
            report.messages += len(chat.messages)
        log.info("import for %s from %s: %s", user, parsed.source, report.summary())
        return report

    def delete(self, chat_id: str, *, user: str) -> None:
        """Delete a stored conversation with its attachments (its reply is stopped first),
        or end an incognito one."""
        history = self._history(chat_id, user)
        live = self._live(history)
        if live is not None:
            self._replies.stop(live.reply_id)
        if history.stored:
            self._store.delete_conversation(chat_id)
            shutil.rmtree(self._uploads_dir / chat_id, ignore_errors=True)
        else:
            self.end(chat_id)

    def end(self, chat_id: str | None) -> None:
        """A page left an incognito chat: forget its turns and delete its attachments.
        Stored chats are left as they are."""
        if chat_id and chat_id.startswith(INCOGNITO_PREFIX):
            with self._lock:
                self._incognito.pop(chat_id, None)
            shutil.rmtree(self._uploads_dir / chat_id, ignore_errors=True)

    def export(self, chat_id: str | None, kind: str, *, user: str) -> Path:
        """Write the chat as Markdown (``kind`` "md") or JSON ("json") into the exports folder."""
        if chat_id is None:
            raise InvalidInput("There is nothing to export yet.", hint="Send a message first.")
        history = self._history(chat_id, user)
        if isinstance(history, StoredHistory):
            conv: object = history.conversation
            messages: Sequence = self._store.messages(chat_id)
            title = getattr(conv, "title", "") or "chat"
        else:
            conv, messages, title = {"title": "Incognito chat", "model": ""}, history.turns(), "chat"
        body = export_markdown(conv, messages) if kind == "md" else export_json(conv, messages)
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in title)[:40].strip("-")
        folder = self._exports_dir / user  # the file route serves exports/<user>/ to that user
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe or 'chat'}-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
        path.write_text(body, encoding="utf-8")
        return path

    def owner_of(self, chat_id: str) -> str | None:
        """The user a chat (stored or incognito) belongs to; None when there is no such chat."""
        if chat_id.startswith(INCOGNITO_PREFIX):
            with self._lock:
                found = self._incognito.get(chat_id)
            return found[0].user if found is not None else None
        conv = self._store.get_conversation(chat_id)
        return conv.user if conv is not None else None

    # -- internals --------------------------------------------------------------------

    def _history(self, chat_id: str | None, user: str, *, new_incognito: bool = False) -> History:
        if chat_id is None:
            if new_incognito:
                return IncognitoHistory(INCOGNITO_PREFIX + uuid.uuid4().hex, user=user)
            return StoredHistory(self._store, None, user=user)
        if chat_id.startswith(INCOGNITO_PREFIX):
            with self._lock:
                found = self._incognito.get(chat_id)
                if found is not None and found[0].user == user:
                    self._incognito[chat_id] = (found[0], time.monotonic())
                    return found[0]
            raise NotFound(GONE, hint="Incognito chats are forgotten when their page moves on.")
        conv = self._store.get_conversation(chat_id, user=user)
        if conv is None:
            raise NotFound(GONE)
        return StoredHistory(self._store, conv, user=user)

    def _keep(self, history: History) -> None:
        """Register an incognito chat (after its first turn passed every check)."""
        if history.stored:
            return
        now = time.monotonic()
        with self._lock:
            for key, (_, touched) in list(self._incognito.items()):
                if now - touched > INCOGNITO_IDLE_S:
                    del self._incognito[key]
                    shutil.rmtree(self._uploads_dir / key, ignore_errors=True)
            self._incognito[history.chat_id] = (history, now)

    def _check(self, text: str, model: str, images: Iterable[str], *,
               attached: bool = False) -> ModelId:
        """The refusals every turn shares; raises ``InvalidInput``. ``images`` are files to
        check; ``attached`` says images came another way (the API sends their bytes)."""
        if len(text) > self._max_chars:
            raise InvalidInput(f"This message is {len(text):,} characters; the limit is "
                               f"{self._max_chars:,} (STUDIO_MAX_MESSAGE_CHARS).",
                               hint="Shorten it or attach the text as a file.")
        if not model:
            raise InvalidInput("No model is selected.",
                               hint="Pick one in the Model list (⟳ reloads it).")
        model_id = ModelId.known(model)
        images = list(images)
        for path in images:
            if Path(path).suffix.lower() not in IMAGE_TYPES:
                raise InvalidInput(f"{Path(path).name} is not an image this chat can send.",
                                   hint="Attach a PNG, JPEG, WebP or GIF.")
            # Decodable and within the megapixel limit: no decompression bomb reaches a model.
            check_input_image(path, self._max_megapixels)
        if (images or attached) and not self._supports_images(model_id):
            hint = ("Pick a cloud model marked 'images' in the Model list (such as OpenAI: "
                    "GPT-4o-mini), or remove the attachment." if model_id.is_cloud else
                    "Pick a vision model such as llava or llama3.2-vision, "
                    "or remove the attachment.")
            raise InvalidInput(f"{model_id.name} can't read images.", hint=hint)
        return model_id

    def _refuse_while_streaming(self, history: History) -> None:
        if self._live(history) is not None:
            raise InvalidInput("A reply is still being written in this chat.",
                               hint="Press Stop first, or wait for it to finish.")

    def _live(self, history: History) -> LiveReply | None:
        """The reply streaming in this chat now, if any."""
        if history.stored:
            cid = history.conversation_id
            return self._replies.active_in(cid) if cid else None
        reply = self._replies.get(history.reply_id) if history.reply_id else None
        return reply if reply is not None and not reply.snapshot().done else None

    def _view(self, history: History, window: Window, seqs: list[int] | None = None
              ) -> ChatView:
        if window == WHOLE:
            turns = self._overlaid(history)
            return ChatView(turns, self._live(history))
        with self._store.snapshot():  # the counts agree with the turns read
            seqs = history.seqs() if seqs is None else seqs
            earlier, later = counts(seqs, window)
            turns = self._overlaid(history, window)
        return ChatView(turns, self._live(history), window, earlier, later)

    def _overlaid(self, history: History, window: Window = WHOLE) -> list[Turn]:
        turns = history.turns(*window)
        out = []
        for turn in turns:
            if turn.status == "streaming":
                live = (self._replies.for_message(turn.message_id) if history.stored
                        else self._replies.get(history.reply_id) if history.reply_id else None)
                if live is not None:
                    turn = turn_with_snapshot(turn, live.snapshot())
            out.append(turn)
        return out

    @contextmanager
    def _admitted(self, user: str) -> Iterator[Callable[[], None]]:
        """The last refusal (the user's limits), booked at once; the booking is given back
        if writing the turn fails. Yields what frees the reply slot when the reply ends."""
        release = self._limits.admit_chat(user) if self._limits is not None else _no_slot
        try:
            yield release
        except BaseException:
            release()
            raise

    def _start(self, history: History, write: Callable[[], Turn], model_id: ModelId,
               messages: list[ChatMessage], options: ChatOptions | None, user: str,
               created: bool, release: Callable[[], None], *, question: str = "",
               on_started: Callable[[Started], None] | None = None) -> Started:
        """Ask for the reply, then write the turn (``write``, in ``History.writing``: the
        placeholder the reply goes into). The model reads the prompt while the turn is
        stored: with twenty messages sent at once, each waited for the turns written before
        its own (~6 ms each) before its model was even asked (issue 16, item 3). The reply
        is stored, accounted and finished only once its place is known; when the write
        fails it is abandoned (stopped, stored nowhere) and the failure raised.
        A stored chat's first reply, once complete, has the chat titled (``TitleWriter``)."""
        placed: list[Turn] = []

        def finished(snap: ReplySnapshot) -> None:  # after ``place``, or ``abandon``
            release()
            if not placed:  # abandoned: its turn was never written
                return
            history.settle(placed[0].seq, snap)
            if created and self._titles is not None:
                self._titles.after_first_reply(history.conversation_id, question, snap,
                                               user=user)

        reply = self._replies.start(str(model_id), messages, options or ChatOptions(),
                                    conversation_id=history.conversation_id, user=user,
                                    on_finish=finished, unplaced=True)
        if not history.stored:
            history.reply_id = reply.reply_id
        try:
            if on_started is not None:
                on_started(Started(chat_id=history.future_chat_id, reply=reply,
                                   created=created))
            with history.writing():
                turn = write()
            placed.append(turn)  # committed: a COMMIT that fails leaves ``placed`` empty
        except BaseException as exc:
            self._replies.abandon(reply, str(exc) if isinstance(exc, StudioError) else
                                  f"The studio could not save this turn ({type(exc).__name__}).")
            raise
        self._replies.place(reply, conversation_id=history.conversation_id,
                            message_id=placed[0].message_id)
        return Started(chat_id=history.chat_id, reply=reply, created=created)

    def _drop_uploads(self, chat_id: str, saved: Sequence[str]) -> None:
        """A turn's pictures, saved before its write failed: gone again, with the chat's
        folder when nothing else is in it."""
        for copy in saved:
            Path(copy).unlink(missing_ok=True)
        if saved:
            with contextlib.suppress(OSError):
                (self._uploads_dir / chat_id).rmdir()

    def _save_uploads(self, chat_id: str, paths: Sequence[str]) -> tuple[str, ...]:
        """Copy a message's attachments into ``uploads/<chat id>/``; their new paths.

        All or none: when one copy fails, the copies made are removed. A full disk (or an
        I/O error) raises ``StorageFailed`` with the sentence the database's faults use,
        so the page keeps what was typed and attached."""
        if not paths:  # no folder for a message without attachments
            return ()
        dest_dir = self._uploads_dir / chat_id
        saved: list[Path] = []
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            for path in paths:
                src = Path(path)
                saved.append(dest_dir / f"{uuid.uuid4().hex[:12]}{src.suffix.lower()}")
                shutil.copyfile(src, saved[-1])
        except OSError as err:
            for copy in saved:
                copy.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                dest_dir.rmdir()  # only when empty: a new chat's folder, now never used
            fault = file_fault(err)
            if fault is None:
                raise
            raise fault from err
        return tuple(str(p) for p in saved)


def _cursor_values(more: str) -> tuple[int, str, str]:
    """(pinned, updated_at, id) of a ``ConversationPage.more``; ``InvalidInput`` otherwise."""
    pinned, _, rest = more.partition("|")
    updated_at, _, conv_id = rest.partition("|")
    if pinned not in ("0", "1") or not updated_at or not conv_id:
        raise InvalidInput("That list position is not one the studio gave.",
                           hint="Reload the page to list your chats again.")
    return int(pinned), updated_at, conv_id


def _no_slot() -> None:
    """Nothing to free: no limits apply."""


def _read(path: str) -> bytes:
    return Path(path).read_bytes()
