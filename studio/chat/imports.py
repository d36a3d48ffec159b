"""Reading other tools' chat exports: Open WebUI's chat export and ChatGPT's
``conversations.json`` (alone or in the zip ChatGPT mails), into plain chats to store.

Both tools keep a chat as a tree (an answer regenerated, a question edited); the branch the
tool last showed is the one read here: Open WebUI's ``history.currentId`` and ChatGPT's
``current_node``, walked up to the root. Only the person's and the assistant's text comes
along: system and tool messages, and parts that aren't text (pictures, code run, browsing),
are left out and counted, so the report can say what stayed behind. Each message keeps its
time and the model that wrote it.

Pure: bytes in, ``ParsedExport`` out; raises ``InvalidInput`` with a sentence for a file
that is neither export. No I/O, no store, no gradio (``ChatService.import_chats`` stores).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import InvalidInput
from ..store.db import ImportedMessage
from .conversations import title_from

OPEN_WEBUI, CHATGPT = "openwebui", "chatgpt"
SOURCE_NAMES = {OPEN_WEBUI: "Open WebUI", CHATGPT: "ChatGPT"}
_MAX_DEPTH = 100_000  # messages on one branch: a loop in a damaged tree ends here

WRONG_FILE = ("This file is not a chat export the studio can read: it takes Open WebUI's "
              "chat export (.json) or ChatGPT's conversations.json (or the .zip ChatGPT mails).")
WRONG_FILE_HINT = ("In Open WebUI: Settings → Chats → Export chats. In ChatGPT: Settings → "
                   "Data controls → Export data, then pick the zip or conversations.json in it.")


@dataclass(frozen=True)
class ForeignChat:
    """One chat of an export, as it will be stored."""

    source_id: str
    title: str
    created_at: str
    updated_at: str
    messages: tuple[ImportedMessage, ...]


@dataclass
class ParsedExport:
    """What an export holds: its chats, and what was left out of them (counts)."""

    source: str  # OPEN_WEBUI | CHATGPT
    chats: list[ForeignChat] = field(default_factory=list)
    system_or_tool: int = 0  # system and tool messages left out
    non_text: int = 0  # pictures, files, code runs and other parts that aren't text
    empty: int = 0  # chats with no text from the person or the assistant on their branch
    unreadable: int = 0  # chats whose shape was damaged or unknown


def read_export(data: bytes, *, max_bytes: int, now: datetime | None = None) -> ParsedExport:
    """The chats of an Open WebUI or ChatGPT export (``data``: the file's bytes).

    ``max_bytes`` bounds the JSON read (inside a zip too). ``now`` stands in for a chat
    without any time. Raises ``InvalidInput`` for anything else than those exports.
    """
    now = now or datetime.now(timezone.utc)
    if data[:4] == b"PK\x03\x04":
        data = _conversations_in_zip(data, max_bytes)
    try:
        export = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput(WRONG_FILE, hint=WRONG_FILE_HINT) from None
    if isinstance(export, dict) and isinstance(export.get("chats"), list):
        export = export["chats"]  # a wrapper some Open WebUI versions write
    if not isinstance(export, list) or not export:
        raise InvalidInput(WRONG_FILE if export != [] else "This export holds no chats.",
                           hint=WRONG_FILE_HINT)
    first = next((item for item in export if isinstance(item, dict)), {})
    if "mapping" in first:
        return _read_all(export, CHATGPT, _chatgpt_chat, now)
    if isinstance(first.get("chat"), dict) or "history" in first:
        return _read_all(export, OPEN_WEBUI, _open_webui_chat, now)
    raise InvalidInput(WRONG_FILE, hint=WRONG_FILE_HINT)


def _conversations_in_zip(data: bytes, max_bytes: int) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("This zip file is damaged and can't be opened.",
                           hint="Download the export again.") from None
    with archive:
        member = next((info for info in archive.infolist()
                       if info.filename.rsplit("/", 1)[-1] == "conversations.json"), None)
        if member is None:
            raise InvalidInput("This zip has no conversations.json in it.", hint=WRONG_FILE_HINT)
        if member.file_size > max_bytes:  # the size unpacked: a small zip can hold a lot
            raise InvalidInput(
                f"conversations.json in this zip is {member.file_size / 1e6:,.0f} MB unpacked; "
                f"the limit is {max_bytes / 1e6:,.0f} MB (STUDIO_MAX_UPLOAD_MB).",
                hint="Raise STUDIO_MAX_UPLOAD_MB, or split the export.")
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError):
            # A bad checksum, an unknown compression, a password.
            raise InvalidInput("conversations.json in this zip can't be unpacked.",
                               hint="Unzip it yourself and import conversations.json.") from None


def _read_all(export: list, source: str, read_one, now: datetime) -> ParsedExport:
    parsed = ParsedExport(source)
    for item in export:
        try:
            chat = read_one(item, parsed, now)
        except (KeyError, TypeError, AttributeError, ValueError):
            parsed.unreadable += 1
            continue
        if chat is None:
            parsed.empty += 1
        else:
            parsed.chats.append(chat)
    return parsed


# -- Open WebUI ---------------------------------------------------------------------------


def _open_webui_chat(item: dict, parsed: ParsedExport, now: datetime) -> ForeignChat | None:
    """One chat of Open WebUI's export: ``{"id", "title", "chat": {"history": {"messages":
    {id: message}, "currentId"}, "messages": [...]}, "created_at", "updated_at"}`` (times in
    seconds; each message has ``role``, ``content``, ``parentId``, ``timestamp``, and an
    answer its ``model``)."""
    chat = item["chat"] if isinstance(item.get("chat"), dict) else item
    history = chat.get("history") or {}
    nodes = history.get("messages") or {}
    branch = _branch(nodes, history.get("currentId"), parent_key="parentId")
    if not branch and isinstance(chat.get("messages"), list):
        branch = chat["messages"]  # an export without the tree: the list as shown
    messages = []
    for node in branch:
        role = node.get("role")
        if role not in ("user", "assistant"):
            parsed.system_or_tool += 1
            continue
        parsed.non_text += len(node.get("files") or [])
        content = node.get("content")
        if not isinstance(content, str):
            parsed.non_text += 1
            continue
        if content.strip():
            messages.append(ImportedMessage(role, content, _iso(node.get("timestamp"), now),
                                            str(node.get("model") or "") if role == "assistant"
                                            else ""))
    messages = _merged(messages)
    if not messages:
        return None
    created = _iso(item.get("created_at") or chat.get("timestamp"), now,
                   fallback=messages[0].created_at)
    updated = _iso(item.get("updated_at"), now, fallback=messages[-1].created_at)
    source_id = str(item.get("id") or chat.get("id") or _fingerprint(created, messages))
    return ForeignChat(source_id, _title(item.get("title") or chat.get("title"), messages),
                       created, max(created, updated), tuple(messages))


# -- ChatGPT ------------------------------------------------------------------------------


def _chatgpt_chat(item: dict, parsed: ParsedExport, now: datetime) -> ForeignChat | None:
    """One conversation of ChatGPT's ``conversations.json``: ``{"id", "title",
    "create_time", "update_time", "current_node", "mapping": {id: {"message", "parent",
    "children"}}}``; a message has ``author.role``, ``content.content_type`` and
    ``content.parts``, ``create_time``, ``recipient`` and ``metadata.model_slug``."""
    mapping = item["mapping"]
    default_model = str(item.get("default_model_slug") or "")
    messages = []
    for node in _branch(mapping, item.get("current_node"), parent_key="parent"):
        message = node.get("message")
        if not message:
            continue  # the tree's empty root
        role = (message.get("author") or {}).get("role")
        metadata = message.get("metadata") or {}
        hidden = metadata.get("is_visually_hidden_from_conversation")
        # An assistant message to a tool (recipient "python", "browser"...) is a tool call.
        if role not in ("user", "assistant") or hidden or message.get("recipient", "all") != "all":
            parsed.system_or_tool += 1
            continue
        content = message.get("content") or {}
        kind = content.get("content_type", "text")
        if kind not in ("text", "multimodal_text"):
            parsed.non_text += 1  # code, execution output, browsing, reasoning notes...
            continue
        texts = []
        for part in content.get("parts") or []:
            if isinstance(part, str):
                texts.append(part)
            else:
                parsed.non_text += 1  # an image or a file pointer
        text = "\n\n".join(t for t in texts if t.strip())
        if text.strip():
            model = str(metadata.get("model_slug") or default_model) if role == "assistant" else ""
            messages.append(ImportedMessage(role, text, _iso(message.get("create_time"), now),
                                            model))
    messages = _merged(messages)
    if not messages:
        return None
    created = _iso(item.get("create_time"), now, fallback=messages[0].created_at)
    updated = _iso(item.get("update_time"), now, fallback=messages[-1].created_at)
    source_id = str(item.get("id") or item.get("conversation_id")
                    or _fingerprint(created, messages))
    return ForeignChat(source_id, _title(item.get("title"), messages), created,
                       max(created, updated), tuple(messages))


# -- shared -------------------------------------------------------------------------------


def _branch(nodes: dict, current, *, parent_key: str) -> list[dict]:
    """The nodes from the root down to ``current`` (the branch the tool showed)."""
    if not isinstance(nodes, dict) or current not in nodes:
        return []
    path, seen = [], set()
    node_id = current
    while node_id is not None and node_id in nodes and node_id not in seen:
        if len(path) >= _MAX_DEPTH:
            raise ValueError("branch too deep")
        seen.add(node_id)
        node = nodes[node_id]
        path.append(node)
        node_id = node.get(parent_key)
    path.reverse()
    return path


def _merged(messages: list[ImportedMessage]) -> list[ImportedMessage]:
    """Consecutive messages of one role as one (what a left-out tool call split in two), so
    the chat alternates as the studio's own do."""
    out: list[ImportedMessage] = []
    for m in messages:
        if out and out[-1].role == m.role:
            last = out[-1]
            out[-1] = ImportedMessage(last.role, f"{last.content}\n\n{m.content}",
                                      last.created_at, last.model or m.model)
        else:
            out.append(m)
    return out


def _title(title, messages: list[ImportedMessage]) -> str:
    title = " ".join(str(title or "").split())
    if title:
        return title
    first = next((m.content for m in messages if m.role == "user"), "")
    return title_from(first) if first else "Imported chat"


def _iso(value, now: datetime, *, fallback: str | None = None) -> str:
    """Epoch seconds (or milliseconds, as some exports write) as the store's ISO text."""
    try:
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        stamp = datetime.fromtimestamp(seconds, timezone.utc) if seconds > 0 else None
    except (TypeError, ValueError, OverflowError, OSError):  # not a time, or out of range
        stamp = None
    if stamp is None:
        if fallback is not None:
            return fallback
        stamp = now
    stamp = stamp.astimezone(timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _fingerprint(created: str, messages: list[ImportedMessage]) -> str:
    """An id for a chat its export gave none: the same chat gives the same one."""
    first = messages[0]
    text = json.dumps([created, first.role, first.content[:2000]], ensure_ascii=False)
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class ImportReport:
    """What an import did: chats brought in, chats already there, and what was left out."""

    source: str
    imported: int = 0
    messages: int = 0
    already: int = 0  # imported before by the same person: skipped, nothing duplicated
    empty: int = 0
    unreadable: int = 0
    system_or_tool: int = 0
    non_text: int = 0

    @classmethod
    def of(cls, parsed: ParsedExport) -> "ImportReport":
        return cls(parsed.source, empty=parsed.empty, unreadable=parsed.unreadable,
                   system_or_tool=parsed.system_or_tool, non_text=parsed.non_text)

    def summary(self) -> str:
        """One line for the log."""
        return (f"{self.imported} imported ({self.messages} messages), {self.already} already "
                f"there, {self.empty} empty, {self.unreadable} unreadable, "
                f"{self.system_or_tool} system/tool messages and {self.non_text} non-text "
                "parts left out")

    def lines(self) -> list[str]:
        """The report a person reads: what came in, what was skipped and why.

        >>> ImportReport("chatgpt", imported=2, messages=9, already=1, non_text=3).lines()
        ['Imported 2 chats (9 messages) from ChatGPT.', 'Skipped 1 chat already imported \
(importing the same file again adds nothing).', 'Left out 3 parts that are not text \
(pictures, files, code runs, browsing).']
        """
        name = SOURCE_NAMES.get(self.source, self.source)
        out = [f"Imported {_count(self.imported, 'chat')} ({_count(self.messages, 'message')}) "
               f"from {name}."]
        if self.already:
            out.append(f"Skipped {_count(self.already, 'chat')} already imported (importing "
                       "the same file again adds nothing).")
        if self.empty:
            out.append(f"Skipped {_count(self.empty, 'chat')} with no text from you or the "
                       "assistant.")
        if self.unreadable:
            out.append(f"Skipped {_count(self.unreadable, 'chat')} the studio could not read "
                       "(damaged or of an unknown shape).")
        if self.system_or_tool:
            out.append(f"Left out {_count(self.system_or_tool, 'system or tool message')}.")
        if self.non_text:
            out.append(f"Left out {_count(self.non_text, 'part')} that "
                       f"{'is' if self.non_text == 1 else 'are'} not text (pictures, files, "
                       "code runs, browsing).")
        return out


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
