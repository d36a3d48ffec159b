"""The studio's SQLite file: conversations and messages, with full-text search.

The only module (with ``migrations.py``) that writes SQL. Callers get plain dataclasses,
never rows. One ``Store`` is shared by Gradio handler threads and background generation
threads, and no caller waits for another's read: each thread has its own connection to the
WAL file (``Store.db``), so reads run side by side and beside a write. Writes go through
``Store.transaction()``: one short ``BEGIN IMMEDIATE`` transaction, queued behind the
process's other writers by one lock (they wake at once, rather than polling SQLite's busy
handler) and behind another process's by the busy timeout. No gradio imports here; nothing
runs at import time.

The other tables have their own modules over the same ``Store`` (``StoreTables``): the
usage ledger and budget charges in ``usage.py``, image jobs and the gallery in
``images.py``, the cloud catalogue and arena in ``cloud.py``, model notes in ``models.py``.

Timestamps are ISO 8601 UTC text with milliseconds (``2025-01-31T09:15:02.123Z``),
which sort correctly as strings. A store never hands out the same timestamp twice,
so "most recently updated" has no ties between writes made through it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sqlite3
import threading
import unicodedata
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlite_utils import Database

from ..errors import InvalidInput, StorageFailed, StudioError
from .migrations import migrations

MESSAGE_STATUSES = ("complete", "partial", "error", "streaming")
STAT_FIELDS = ("prompt_tokens", "completion_tokens", "ttft_ms", "tokens_per_s", "load_ms",
               "total_ms", "cost_usd")
_CONVERSATION_FIELDS = ("title", "model", "backend", "system_prompt", "params", "pinned",
                        "title_source")
_MESSAGE_FIELDS = ("content", "thinking", "images", "status", "error", "model", "backend",
                   "meta", *STAT_FIELDS)
# The branch a chat shows: from its first message, the shown (active) version of each turn.
_SHOWN_BRANCH = """
    WITH RECURSIVE shown(id, depth) AS (
        SELECT id, 0 FROM messages
        WHERE conversation_id = :conv AND parent_id IS NULL AND active = 1
        UNION ALL
        SELECT m.id, shown.depth + 1 FROM messages m JOIN shown ON m.parent_id = shown.id
        WHERE m.conversation_id = :conv AND m.active = 1
    )"""
_BUSY_TIMEOUT_MS = 5000  # long enough to outwait another writer's commit
_SNIPPET_WORDS = 12
# A search of symbols only ("🍕", "->") can't use the word index: it checks the titles of
# this many of the newest chats and this many of the newest messages (docs/benchmarks.md).
LITERAL_SCAN = 20_000
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 3, 8, 14, 26
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL = 5, 6, 10, 13
_STILL_THERE = "what you typed is still on the page."
# SQLite's faults of the disk or of another program, by primary result code, with the words
# SQLite uses for them (Python before 3.11 gives only the words).
_FAULTS = {
    _SQLITE_FULL: ("database or disk is full",
                   "The disk holding the studio's data (STUDIO_DATA_DIR) is full, so this "
                   "wasn't saved.", f"Free some space there and try again; {_STILL_THERE}"),
    _SQLITE_IOERR: ("disk I/O error",
                    "The disk holding the studio's data (STUDIO_DATA_DIR) reported an I/O "
                    "error, so this wasn't saved.",
                    f"Check that disk (dmesg, a loose cable or USB drive); {_STILL_THERE}"),
    _SQLITE_BUSY: ("database is locked",
                   f"Another program kept the studio's database locked for "
                   f"{_BUSY_TIMEOUT_MS // 1000} seconds, so this wasn't saved.",
                   "Close whatever else has studio.db open (a sqlite3 shell, a sync or backup "
                   f"tool) and try again; {_STILL_THERE}"),
    _SQLITE_LOCKED: ("database table is locked",
                     "The studio's database was busy with another change, so this wasn't saved.",
                     f"Try again; {_STILL_THERE}"),
}


class StoreFault(StorageFailed, sqlite3.OperationalError):
    """SQLite's OperationalError for a full or failing disk or a lock that outlasted the busy
    timeout, with a sentence. Still an ``sqlite3.Error``, so sqlite-utils' rollbacks and
    every ``except sqlite3.Error`` (``ping``, backups) treat it as before."""


def storage_fault(err: sqlite3.OperationalError) -> StoreFault | None:
    """The sentence for ``err`` when it is a fault of the disk or a lock; None otherwise."""
    code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
    text = str(err)
    for fault_code, (words, message, hint) in _FAULTS.items():
        if code == fault_code or (not code and words in text):
            return StoreFault(message, hint=hint)
    return None


def file_fault(err: OSError) -> StorageFailed | None:
    """The same sentences for a file the studio writes into its data folder (an attachment
    copied in): a full disk or over quota, or an I/O error. None for any other OSError."""
    code = {errno.ENOSPC: _SQLITE_FULL, errno.EDQUOT: _SQLITE_FULL,
            errno.EIO: _SQLITE_IOERR}.get(err.errno or 0)
    if code is None:
        return None
    _words, message, hint = _FAULTS[code]
    return StorageFailed(message, hint=hint)


def _faults_as_sentences(method):
    @functools.wraps(method)
    def run(self, *args):
        try:
            return method(self, *args)
        except sqlite3.OperationalError as err:
            fault = None if isinstance(err, StoreFault) else storage_fault(err)
            if fault is None:
                raise
            raise fault from err
    return run


class _Connection(sqlite3.Connection):
    """The studio's connection: SQLite's faults of the disk arrive as ``StoreFault``
    sentences, from every statement and commit of every store module (they all use it)."""

    execute = _faults_as_sentences(sqlite3.Connection.execute)
    executemany = _faults_as_sentences(sqlite3.Connection.executemany)
    executescript = _faults_as_sentences(sqlite3.Connection.executescript)
    commit = _faults_as_sentences(sqlite3.Connection.commit)


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    user: str
    model: str
    backend: str
    system_prompt: str
    params: dict
    created_at: str
    updated_at: str
    pinned: bool
    title_source: str = "words"  # who wrote the title: words | model | person | import
    source: str = ""  # where an imported chat came from ("openwebui", "chatgpt"), else ""


@dataclass(frozen=True)
class ImportedMessage:
    """One message of a chat brought in from another tool, with its own time."""

    role: str
    content: str
    created_at: str
    model: str = ""


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    seq: int
    role: str
    content: str
    thinking: str
    images: list[str]
    model: str
    backend: str
    status: str
    error: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    tokens_per_s: float | None
    load_ms: float | None
    total_ms: float | None
    cost_usd: float | None
    meta: dict
    created_at: str
    updated_at: str
    # The message before this one on its branch (None for a chat's first message). The
    # messages with the same parent are the versions of one turn (an answer again, an
    # edited message); ``version`` is this one's place among them (1-based, oldest first)
    # and ``versions`` how many there are, as read with the branch a chat shows.
    parent_id: int | None = None
    version: int = 1
    versions: int = 1


@dataclass(frozen=True)
class SearchHit:
    """One search result. A title match has ``message_id`` and ``role`` None and the
    highlighted title as ``snippet``; matched words are wrapped in ``[`` ``]``."""

    conversation_id: str
    title: str
    message_id: int | None
    role: str | None
    snippet: str
    updated_at: str


class StudioDatabase(Database):
    """sqlite-utils' Database whose ``atomic()`` begins IMMEDIATE, so a second process on
    the same file (a restart overlapping the old studio, a backup) is waited for.

    A deferred transaction that reads before it writes finds, at its first write, that
    another process wrote since its read; SQLite answers "database is locked" at once,
    without waiting out the busy timeout. Taking the write lock up front waits like any
    single write does. Nested blocks join the outer one. ``write_lock`` is
    shared by every connection of one ``Store``: this process's writers queue on it.
    """

    def __init__(self, conn: sqlite3.Connection, write_lock: threading.RLock | None = None):
        # execute_plugins=False: the studio's SQL needs no sqlite-utils plugin, and looking
        # for them scans every installed package's entry points (~30 ms of each start);
        # whatever plugins a machine happens to have never touch the studio's connections.
        super().__init__(conn, execute_plugins=False)
        self.write_lock = write_lock or threading.RLock()

    @contextlib.contextmanager
    def atomic(self):
        if self.conn.in_transaction:
            # A nested block joins the outer transaction without a savepoint: an error in
            # it ends the whole transaction anyway (no caller catches one inside), and a
            # savepoint cost two more statements per nested write, each of which waits for
            # the GIL again while the write lock is held (a new chat's turn had three).
            yield self
            return
        with self.write_lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.rollback()
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self.rollback()
                raise


class Store:
    """Conversations and messages in one SQLite file. Safe to share between threads,
    and between processes on one file (a restart overlapping the old studio, a backup).

    Each thread gets its own connection on first use (``db``); it closes when the thread
    ends, or at ``close()``. Reads take no lock; writes go through ``transaction()``.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], first: sqlite3.Connection):
        """Use ``open`` or ``memory``. ``connect`` opens one more configured connection;
        ``first`` is the one the migrations ran on, kept for the opening thread (and for
        an in-memory database, which lives as long as one connection to it does)."""
        self._connect = connect
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._open: weakref.WeakSet[StudioDatabase] = weakref.WeakSet()
        self._registry_lock = threading.Lock()
        self._closed = False
        self._first = self._adopt(first)
        self._local.db = self._first
        self._clock = threading.Lock()
        self._last_ms = 0

    @property
    def db(self) -> StudioDatabase:
        """The calling thread's connection (opened on its first use). After ``close()``
        a thread's connection that was left open closes at its next use, here."""
        db = getattr(self._local, "db", None)
        if db is not None and self._closed:
            self._local.db = None
            db.close()
            db = None
        if db is None:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            db = self._local.db = self._adopt(self._connect())
        return db

    def _adopt(self, conn: sqlite3.Connection) -> StudioDatabase:
        db = StudioDatabase(conn, self._write_lock)
        db.owner = threading.current_thread()
        with self._registry_lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._open.add(db)
        return db

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database file at ``path`` and migrate it.

        Creates the parent directory, turns on WAL, foreign keys and a busy timeout,
        then applies pending migrations. Raises ``StudioError`` with a sentence naming
        the path when the directory or file can't be written or isn't a database.
        """
        path = Path(path).expanduser()
        directory = path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _directory_not_writable(directory) from err
        if not os.access(directory, os.W_OK | os.X_OK):
            raise _directory_not_writable(directory)
        if path.is_dir():
            raise StudioError(f"The database path {path} is a folder, not a file.",
                              hint="Move that folder aside, or set STUDIO_DATA_DIR to another one.")
        if path.exists() and not os.access(path, os.W_OK):
            raise _file_not_writable(path)
        conn = None

        def connect() -> sqlite3.Connection:
            return _configured(sqlite3.connect(str(path), check_same_thread=False,
                                               factory=_Connection))

        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, factory=_Connection)
            db = StudioDatabase(conn)
            _configure(db, wal=True)
            # One write transaction around them all: a second studio starting at the same
            # moment waits here, then finds nothing pending, instead of applying them twice.
            with db.atomic():
                migrations.apply(db)
        except sqlite3.DatabaseError as err:
            if conn is not None:
                conn.close()
            # Primary result code (Python 3.11+ sets it; older ones just re-raise).
            code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
            if code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise _file_not_writable(path) from err
            if code == _SQLITE_NOTADB:
                raise StudioError(
                    f"The file {path} is not a SQLite database, or it is damaged.",
                    hint="Move it aside and start the studio again to create a fresh one, "
                         "or set STUDIO_DATA_DIR to another folder.",
                ) from err
            raise
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(connect, conn)

    @classmethod
    def memory(cls) -> Store:
        """A fresh, migrated in-memory store (for tests). SQLite's ``memdb`` file, shared by
        the store's per-thread connections; it lives until ``close()``."""
        uri = f"file:/studio-{uuid.uuid4().hex}?vfs=memdb"

        def connect() -> sqlite3.Connection:
            return _configured(sqlite3.connect(uri, uri=True, check_same_thread=False,
                                               factory=_Connection))

        conn = connect()
        db = StudioDatabase(conn)
        _configure(db, wal=False)
        migrations.apply(db)
        return cls(connect, conn)

    def close(self) -> None:
        """Close the store: this thread's connection and those of threads that ended now;
        a connection of another live thread at its next use of the store (or when that
        thread ends), because closing it from here while that thread is in the middle of a
        statement crashes SQLite (a segmentation fault, seen with an arena reply still
        saving). Using the store afterwards raises ``sqlite3.ProgrammingError``."""
        with self._registry_lock:
            self._closed = True
            opened = list(self._open)
        me = threading.current_thread()
        for db in opened:
            owner = getattr(db, "owner", None)
            if owner is None or owner is me or not owner.is_alive():
                db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes (of any store module) as one: all of them, or none when one fails.
        Every write goes through here: it waits for this process's other writers (a lock
        held only by writes, never by reads) and begins IMMEDIATE, so keep what runs
        inside short. Nested calls on one thread join the outer transaction."""
        with self.db.atomic():
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Several reads that see the database as of one moment (a WAL read transaction):
        no write lands between them, yet no writer waits for them. Inside a transaction
        it is that transaction."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")  # ends the read; there is nothing to write

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers a ``SELECT 1``; False when it is closed or broken.
        A read waits for no writer in WAL mode; ``timeout`` bounds the wait for SQLite's
        own locks where the file is not in WAL mode (an in-memory store)."""
        try:
            db = self.db
            db.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            try:
                return db.execute("SELECT 1").fetchone() == (1,)
            finally:
                db.conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            return False

    # Conversations

    def create_conversation(self, title: str = "New chat", *, model: str = "",
                            backend: str = "", system_prompt: str = "",
                            params: dict | None = None, user: str = "owner",
                            conv_id: str | None = None) -> Conversation:
        """Insert a conversation with a new uuid4-hex id (or ``conv_id``, one the caller
        drew the same way) and return it.

        Raises ``InvalidInput`` if ``title`` is blank.
        """
        row = {
            "id": conv_id or uuid.uuid4().hex,
            "title": _clean_title(title),
            "user": user,
            "model": model,
            "backend": backend,
            "system_prompt": system_prompt,
            "params": json.dumps(params or {}),
            "pinned": 0,
        }
        row = _storable(row)
        with self.transaction():
            row["created_at"] = row["updated_at"] = self._now()
            self.db.execute(
                f"INSERT INTO conversations ({', '.join(row)}) "
                f"VALUES ({', '.join(':' + name for name in row)})", row)
        return _to_conversation(row)

    def get_conversation(self, conv_id: str, *, user: str | None = None) -> Conversation | None:
        """The conversation; with ``user``, only if it is theirs (another's is None, the
        same as a missing one)."""
        mine, params = ("AND user = ?", [user]) if user is not None else ("", [])
        rows = self._select(f"SELECT * FROM conversations WHERE id = ? {mine}",
                            [conv_id, *params])
        return _to_conversation(rows[0]) if rows else None

    def list_conversations(self, *, user: str | None = None, limit: int = 100,
                           offset: int = 0) -> list[Conversation]:
        """Pinned conversations first, then the most recently updated.

        One query walking an index (pinned, updated_at), so it stays fast however
        many conversations there are.
        """
        where, params = ("WHERE user = ?", [user]) if user is not None else ("", [])
        rows = self._select(
            f"SELECT * FROM conversations {where} "
            # rowid breaks ties between rows written by other tools in the same ms.
            "ORDER BY pinned DESC, updated_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset])
        return [_to_conversation(row) for row in rows]

    def count_conversations(self, user: str | None = None) -> int:
        where, params = ("WHERE user = ?", [user]) if user is not None else ("", [])
        return self.db.execute(f"SELECT count(*) FROM conversations {where}",
                               params).fetchone()[0]

    def rename_conversation(self, conv_id: str, title: str) -> None:
        """Set the title a person chose (a generated title never replaces it). Does not
        move the chat in the list (``updated_at`` is kept).

        Raises ``InvalidInput`` for a blank title, ``StudioError`` if the chat is gone.
        """
        self.update_conversation(conv_id, title=title, title_source="person")

    def set_generated_title(self, conv_id: str, title: str, *, user: str) -> bool:
        """Replace the first-words title of the user's chat with ``title`` (written by a
        model). False, changing nothing, when the chat is gone, not theirs, or its title was
        already chosen by the person (or came with an import)."""
        values = _storable({"title": _clean_title(title), "conv_id": conv_id, "user": user})
        with self.transaction():
            return self.db.execute(
                "UPDATE conversations SET title = :title, title_source = 'model' "
                "WHERE id = :conv_id AND user = :user AND title_source = 'words'",
                values).rowcount == 1

    def set_pinned(self, conv_id: str, pinned: bool, *, user: str) -> bool:
        """Pin or unpin the user's chat (pinned chats head the sidebar); ``updated_at`` is
        kept. False when there is no such chat of theirs."""
        with self.transaction():
            return self.db.execute(
                "UPDATE conversations SET pinned = ? WHERE id = ? AND user = ?",
                [int(bool(pinned)), conv_id, user]).rowcount == 1

    def conversation_page(self, *, user: str, after: tuple[int, str, str] | None = None,
                          limit: int = 200) -> list[Conversation]:
        """One page of the user's sidebar: pinned chats first, then the most recently
        updated, ties broken by id; ``after`` is the (pinned, updated_at, id) of the last
        chat of the previous page.

        Keyset paging: each page is one range walk of the index (user, pinned, updated_at,
        id) that stops after ``limit`` rows, as fast for the 20,000th chat as for the first
        (OFFSET walked every row it skipped). A chat that moves meanwhile (a new message)
        shows on the first page, never twice on a later one.
        """
        bound, params = "", {"user": user, "limit": limit}
        if after is not None:
            bound = "AND (pinned, updated_at, id) < (:pinned, :updated_at, :id)"
            params.update(pinned=int(after[0]), updated_at=after[1], id=after[2])
        rows = self._select(
            f"SELECT * FROM conversations WHERE user = :user {bound} "
            "ORDER BY pinned DESC, updated_at DESC, id DESC LIMIT :limit", params)
        return [_to_conversation(row) for row in rows]

    def imported_ids(self, source: str, *, user: str) -> set[str]:
        """The ids (in ``source``) of the chats the user already imported from there."""
        rows = self.db.execute(
            "SELECT source_id FROM conversations WHERE user = ? AND source = ? "
            "AND source_id != ''", [user, source]).fetchall()
        return {row[0] for row in rows}

    def import_conversation(self, *, user: str, source: str, source_id: str, title: str,
                            created_at: str, updated_at: str,
                            messages: Iterable[ImportedMessage]) -> str | None:
        """Store a chat brought in from another tool, with its own times, in one transaction.
        Returns its new id, or None when the user already imported ``source_id`` from
        ``source`` (nothing is written then)."""
        conv_id = uuid.uuid4().hex
        row = _storable({"id": conv_id, "title": _clean_title(title or "Imported chat"),
                         "user": user, "title_source": "import", "source": source,
                         "source_id": source_id, "created_at": created_at,
                         "updated_at": updated_at})
        rows = [_storable({"conversation_id": conv_id, "seq": seq, "role": m.role,
                           "content": m.content, "model": m.model, "status": "complete",
                           "created_at": m.created_at, "updated_at": m.created_at})
                for seq, m in enumerate(messages, start=1)]
        with self.transaction():
            inserted = self.db.execute(
                f"INSERT OR IGNORE INTO conversations ({', '.join(row)}) "
                f"VALUES ({', '.join(':' + name for name in row)})", row).rowcount
            if not inserted:
                return None
            if rows:
                self.db.conn.executemany(
                    f"INSERT INTO messages ({', '.join(rows[0])}) "
                    f"VALUES ({', '.join(':' + name for name in rows[0])})", rows)
        return conv_id

    def update_conversation(self, conv_id: str, **fields: Any) -> None:
        """Change any of title, model, backend, system_prompt, params (dict), pinned (bool).

        ``updated_at`` is left alone: it means "last activity", and pinning or
        switching model should not reshuffle the list. Raises ``TypeError`` for an
        unknown field and ``StudioError`` if the conversation no longer exists.
        """
        _reject_unknown("update_conversation", fields, _CONVERSATION_FIELDS)
        if not fields:
            return
        values = dict(fields)
        if "title" in values:
            values["title"] = _clean_title(values["title"])
        if "params" in values:
            values["params"] = json.dumps(values["params"] or {})
        if "pinned" in values:
            values["pinned"] = int(bool(values["pinned"]))
        values = _storable(values)
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        with self.transaction():
            cursor = self.db.execute(
                f"UPDATE conversations SET {assignments} WHERE id = :conv_id",
                {**values, "conv_id": conv_id})
        if cursor.rowcount == 0:
            raise _conversation_gone(conv_id)

    def touch_conversation(self, conv_id: str) -> None:
        """Mark the conversation as just used, moving it to the top of the list."""
        with self.transaction():
            cursor = self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                                     [self._now(), conv_id])
        if cursor.rowcount == 0:
            raise _conversation_gone(conv_id)

    def delete_conversation(self, conv_id: str) -> None:
        """Delete the conversation and its messages. Deleting a missing one is a no-op."""
        with self.transaction():
            self.db.execute("DELETE FROM conversations WHERE id = ?", [conv_id])

    # Messages

    def add_message(self, conv_id: str, role: str, content: str = "", *, thinking: str = "",
                    images: Iterable[str | os.PathLike] = (), status: str = "complete",
                    model: str = "", backend: str = "", error: str = "",
                    meta: dict | None = None, version_of: int | None = None,
                    after: int | None = None, fresh: bool = False, **stats: Any) -> Message:
        """Append a message to the branch the chat shows and bump the chat's updated_at:
        after message ``after`` (of this chat) when given, which saves finding the end of
        the branch, else after the branch's last message. With ``version_of`` (a message
        id of this chat), add it as a new version of that turn instead: beside it, with no
        later turns yet. Either way the new message is the version shown from now on.

        ``fresh`` (inside a ``transaction()``): the conversation (``after`` None) or the
        message ``after`` was created by the same transaction, so there is nothing to look
        up or to step aside, and the chat's updated_at was just set. A new chat's first turn
        (the chat, the question, the placeholder) is then three INSERTs between BEGIN and
        COMMIT instead of eleven statements: each statement waits for the GIL again while
        the write lock is held, and twenty chats sent at once queue behind that lock
        (issue 16, item 3).

        ``stats`` takes any of ``STAT_FIELDS``. Raises ``TypeError`` for an unknown
        stat, ``ValueError`` for an unknown status, ``StudioError`` if the
        conversation (or the message ``version_of``) no longer exists.
        """
        _reject_unknown("add_message", stats, STAT_FIELDS)
        if fresh and (version_of is not None or not self.db.conn.in_transaction):
            raise ValueError("fresh is for a message after one its own transaction wrote")
        _check_status(status)
        row = {
            "conversation_id": conv_id, "role": role, "content": content,
            "thinking": thinking, "images": json.dumps([str(p) for p in images]),
            "model": model, "backend": backend, "status": status, "error": error,
            "meta": json.dumps(meta or {}), **stats,
        }
        row = _storable(row)
        with self.transaction():
            row["created_at"] = row["updated_at"] = now = self._now()
            if fresh:
                row["parent_id"] = after
                return self._insert_message(row)
            touched = self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                                      [now, conv_id])
            if touched.rowcount == 0:
                raise _conversation_gone(conv_id)
            if version_of is None and after is None:
                shown = self._shown_ids(conv_id)
                parent = shown[-1] if shown else None
            else:
                known = version_of if version_of is not None else after
                found = self.db.execute(
                    "SELECT parent_id, id FROM messages WHERE id = ? AND conversation_id = ?",
                    [known, conv_id]).fetchone()
                if found is None:
                    raise StudioError(f"Message {known} no longer exists.",
                                      hint="Reload the chat; nothing was saved.")
                parent = found[0] if version_of is not None else found[1]
            # The new message is the version shown: its siblings step aside.
            self.db.execute("UPDATE messages SET active = 0 "
                            "WHERE conversation_id = ? AND parent_id IS ?", [conv_id, parent])
            row["parent_id"] = parent
            return self._insert_message(row)

    def _insert_message(self, row: dict) -> Message:
        cursor = self.db.execute(
            f"INSERT INTO messages (seq, {', '.join(row)}) VALUES ("
            "coalesce((SELECT seq FROM messages WHERE id = :parent_id), 0) + 1, "
            f"{', '.join(':' + name for name in row)}) RETURNING *", row)
        # RETURNING hands back the stored row in the same statement: reading it again
        # cost a statement, and each one waits for the GIL again under load.
        names = [column[0] for column in cursor.description]
        return _to_message(dict(zip(names, cursor.fetchone())))

    def show_version(self, conv_id: str, message_id: int, step: int) -> int | None:
        """Show another version of the turn ``message_id`` (of chat ``conv_id``): ``step``
        versions later (+1) or earlier (-1), stopping at the first and last. Returns the id
        of the version now shown, or None when the message isn't in that chat."""
        with self.transaction():
            found = self.db.execute(
                "SELECT parent_id FROM messages WHERE id = ? AND conversation_id = ?",
                [message_id, conv_id]).fetchone()
            if found is None:
                return None
            siblings = [r[0] for r in self.db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS ? "
                "ORDER BY id", [conv_id, found[0]])]
            at = siblings.index(message_id)
            chosen = siblings[max(0, min(len(siblings) - 1, at + step))]
            self.db.execute("UPDATE messages SET active = (id = ?) "
                            "WHERE conversation_id = ? AND parent_id IS ?",
                            [chosen, conv_id, found[0]])
            return chosen

    def update_message(self, message_id: int, **fields: Any) -> None:
        """Change any of content, thinking, images, status, error, model, backend,
        meta (replaced, not merged) and the ``STAT_FIELDS``; sets updated_at.

        One UPDATE statement, cheap enough to call every second while a reply
        streams. Raises ``TypeError``/``ValueError`` for unknown fields or status and
        ``StudioError`` if the message is gone (e.g. its chat was deleted meanwhile).
        """
        _reject_unknown("update_message", fields, _MESSAGE_FIELDS)
        values = dict(fields)
        if "status" in values:
            _check_status(values["status"])
        if "meta" in values:
            values["meta"] = json.dumps(values["meta"] or {})
        if "images" in values:
            values["images"] = json.dumps([str(p) for p in values["images"]])
        values = _storable(values)
        with self.transaction():
            values["updated_at"] = self._now()
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            cursor = self.db.execute(f"UPDATE messages SET {assignments} WHERE id = :message_id",
                                     {**values, "message_id": message_id})
        if cursor.rowcount == 0:
            raise StudioError(f"Message {message_id} no longer exists.",
                              hint="Its conversation may have been deleted; nothing was saved.")

    def get_message(self, message_id: int) -> Message | None:
        return self._get_message(message_id)

    def messages(self, conv_id: str, *, first: int | None = None,
                 last: int | None = None) -> list[Message]:
        """The messages of the branch the chat shows, in order (by seq), each with its
        ``version``/``versions``; only those with ``first`` <= seq <= ``last`` when given
        (a long chat's window); [] for an unknown id. Other versions are left out."""
        rows = self._select(f"""
            {_SHOWN_BRANCH}
            SELECT m.*,
                   (SELECT count(*) FROM messages v WHERE v.conversation_id = m.conversation_id
                      AND v.parent_id IS m.parent_id) AS versions,
                   (SELECT count(*) FROM messages v WHERE v.conversation_id = m.conversation_id
                      AND v.parent_id IS m.parent_id AND v.id <= m.id) AS version
            FROM shown JOIN messages m ON m.id = shown.id
            WHERE m.seq >= :first AND m.seq <= :last ORDER BY m.seq""",
            {"conv": conv_id, "first": -1 if first is None else first,
             "last": 2**62 if last is None else last})
        return [_to_message(row) for row in rows]

    def message_seqs(self, conv_id: str) -> list[int]:
        """The seq of each message of the branch the chat shows, ascending (a long chat's
        page works out which part to show from these, then reads only that part)."""
        return [row[0] for row in self.db.execute(
            f"{_SHOWN_BRANCH} SELECT m.seq FROM shown JOIN messages m ON m.id = shown.id "
            "ORDER BY m.seq", {"conv": conv_id})]

    def _shown_ids(self, conv_id: str) -> list[int]:
        """The ids of the branch the chat shows, in order (call inside a transaction or
        a snapshot when they must agree with other reads)."""
        return [row[0] for row in self.db.execute(
            f"{_SHOWN_BRANCH} SELECT shown.id FROM shown", {"conv": conv_id})]

    def delete_messages_from(self, conv_id: str, seq: int) -> int:
        """Delete the messages with seq >= ``seq`` (regenerate, edit-and-resend).
        Returns how many went."""
        with self.transaction():
            return self.db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND seq >= ?",
                [conv_id, seq]).rowcount

    def mark_interrupted_streams(self, reason: str) -> int:
        """At start-up: replies still 'streaming' were cut off by a restart. Mark them
        'partial' with ``error=reason``; return how many."""
        with self.transaction():
            return self.db.execute(
                "UPDATE messages SET status = 'partial', error = ?, updated_at = ? "
                "WHERE status = 'streaming'", [reason, self._now()]).rowcount

    # Search

    def search(self, query: str, *, user: str | None = None, limit: int = 50) -> list[SearchHit]:
        """Full-text search over conversation titles and message contents.

        Every word must match; the last one also matches as a prefix ("pyth" finds
        "python"). Words of symbols that the index leaves out ("🍕", "C++", "->") must
        appear as typed (ASCII letters in any case); a search of only such words looks
        through the newest ``LITERAL_SCAN`` chats' titles and messages, so it stays fast.
        Any text is safe: FTS syntax in it is searched for literally, and blank text
        gives []. Order: title matches first, newest first (by when the chat was made or
        last renamed), then message matches newest first (by message id, i.e. creation
        order), at most ``limit`` hits in all. Both walk their index newest-first and
        stop at the limit, so a word in every chat costs no more than a rare one.
        """
        match, literals = search_words(query)
        if not (match or literals) or limit <= 0:
            return []
        user_clause = "AND c.user = :user" if user is not None else ""
        params = {"match": match, "user": user, "limit": limit, "scan": LITERAL_SCAN,
                  **{f"literal{n}": literal for n, literal in enumerate(literals)}}

        def contains(column: str) -> str:
            # instr() reads the whole text (LIKE stops at a NUL); lower() copies it, so
            # only for the words that have ASCII letters to fold ("C++", not "🍕").
            return "".join(
                f" AND instr({f'lower({column})' if _has_ascii_letter(literal) else column},"
                f" :literal{n}) > 0" for n, literal in enumerate(literals))

        with self.snapshot():
            if match:
                rows = self._select(f"""
                    SELECT c.id AS conversation_id, c.title, NULL AS message_id, NULL AS role,
                           highlight(conversations_fts, 1, '[', ']') AS snippet, c.updated_at
                    FROM conversations_fts
                    JOIN conversations c ON c.id = conversations_fts.conversation_id
                    WHERE conversations_fts MATCH :match {user_clause}{contains("c.title")}
                    ORDER BY conversations_fts.rowid DESC LIMIT :limit""", params)
            else:
                rows = self._select(f"""
                    SELECT c.id AS conversation_id, c.title, NULL AS message_id, NULL AS role,
                           c.title AS snippet, c.updated_at
                    FROM conversations c
                    -- "+c.user": walk the chats newest first and stop at the limit, rather
                    -- than read every one of the user's chats to sort them.
                    WHERE c.rowid > (SELECT coalesce(max(rowid), 0) FROM conversations) - :scan
                          {user_clause.replace("c.user", "+c.user")}{contains("c.title")}
                    ORDER BY c.rowid DESC LIMIT :limit""", params)
            params["limit"] = limit - len(rows)
            if params["limit"] > 0 and match:
                # ORDER BY the FTS rowid lets FTS5 walk its index newest-first and stop
                # at the limit, so snippets are only built for the rows returned. Symbols
                # to check as well bound the walk to the newest messages.
                newest = (" AND messages_fts.rowid > "
                          "(SELECT coalesce(max(id), 0) FROM messages) - :scan"
                          if literals else "")
                rows += self._select(f"""
                    SELECT m.conversation_id, c.title, m.id AS message_id, m.role,
                           snippet(messages_fts, 0, '[', ']', '…', {_SNIPPET_WORDS}) AS snippet,
                           m.updated_at
                    FROM messages_fts
                    JOIN messages m ON m.id = messages_fts.rowid
                    JOIN conversations c ON c.id = m.conversation_id
                    WHERE messages_fts MATCH :match {user_clause}{newest}{contains("m.content")}
                    ORDER BY messages_fts.rowid DESC LIMIT :limit""", params)
            elif params["limit"] > 0:
                rows += self._select(f"""
                    SELECT m.conversation_id, c.title, m.id AS message_id, m.role,
                           m.content AS snippet, m.updated_at
                    -- CROSS JOIN keeps messages outside: walk the newest by id and stop.
                    FROM messages m CROSS JOIN conversations c ON c.id = m.conversation_id
                    WHERE m.id > (SELECT coalesce(max(id), 0) FROM messages) - :scan
                          {user_clause}{contains("m.content")}
                    ORDER BY m.id DESC LIMIT :limit""", params)
        if not match:  # the index marked nothing: mark the symbols here
            rows = [{**row, "snippet": literal_snippet(row["snippet"], literals,
                                                       whole=row["message_id"] is None)}
                    for row in rows]
        return [SearchHit(**row) for row in rows]

    # Helpers

    def _select(self, sql: str, params: Any = ()) -> list[dict]:
        # db.execute rather than db.query: query() wraps each read in a savepoint.
        cursor = self.db.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _get_message(self, message_id: int) -> Message | None:
        rows = self._select("SELECT * FROM messages WHERE id = ?", [message_id])
        return _to_message(rows[0]) if rows else None

    def _now(self) -> str:
        # Strictly increasing, so two writes in the same millisecond still sort in order.
        now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        with self._clock:
            self._last_ms = last = max(now_ms, self._last_ms + 1)
        stamp = datetime.fromtimestamp(last / 1000, timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{last % 1000:03d}Z"


class StoreTables:
    """Base of the per-feature store modules (``usage.py``, ``images.py``, …): their
    ``store``, and ``db``, the calling thread's connection. Writes go through
    ``store.transaction()``, several reads that must agree through ``store.snapshot()``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def db(self) -> StudioDatabase:
        return self.store.db


def fts_match_query(text: str) -> str:
    """Turn what a person typed into a safe FTS5 MATCH expression ('' if nothing to find).

    Each whitespace-separated word becomes a quoted FTS5 string (inner quotes
    doubled), words are AND-ed and the last one matches as a prefix. Words with no
    letters or digits are dropped: the tokenizer would make them empty phrases,
    which match nothing and would empty the whole AND.

    >>> fts_match_query('pyth OR NEAR(')
    '"pyth" AND "OR" AND "NEAR("*'
    >>> fts_match_query(' ? ')
    ''
    """
    return _match_expression([word for word in _typed_words(text)
                              if any(_is_token_char(ch) for ch in word)])


def search_words(text: str) -> tuple[str, tuple[str, ...]]:
    """What a person typed, as an FTS5 MATCH expression for its words (see
    ``fts_match_query``) and the words of symbols FTS5's tokenizer drops, which must
    appear as typed: a word with no letters or digits ("🍕", "->") or with a symbol in it
    ("C++", "C#"). The latter are lowercased as SQLite's ``lower()`` does (ASCII only).

    >>> search_words('pizza 🍕')
    ('"pizza"*', ('🍕',))
    >>> search_words('C++ -> sourdough t')
    ('"sourdough" AND "t"*', ('c++', '->'))
    >>> search_words("e.g. foo-bar")
    ('"e.g." AND "foo-bar"*', ())
    """
    words = _typed_words(text)
    literals = tuple(dict.fromkeys(_ascii_lower(word) for word in words if _is_literal(word)))
    return _match_expression([word for word in words if not _is_literal(word)]), literals


def literal_snippet(text: str, literals: Iterable[str], *, whole: bool = False) -> str:
    """``text`` with each occurrence of ``literals`` (lowercase, as ``search_words`` gives
    them) wrapped in ``[`` ``]``; unless ``whole``, cut to about ``_SNIPPET_WORDS`` words
    around the first one, with "…" where text was left out.

    >>> literal_snippet("Friday night: 🍕 and a film", ["🍕"], whole=True)
    'Friday night: [🍕] and a film'
    >>> literal_snippet("x " * 20 + "use C++ here " + "y " * 20, ["c++"])
    '… x x x x x use [C++] here y y y y y …'
    """
    folded = _ascii_lower(text)
    spans = sorted((at, at + len(literal)) for literal in literals if literal
                   for at in _occurrences(folded, literal))
    if not spans:
        return text if whole else " ".join(text.split()[:_SNIPPET_WORDS])
    start, end = 0, len(text)
    if not whole:
        before, after = text[:spans[0][0]].split(), text[spans[0][1]:].split()
        keep = _SNIPPET_WORDS // 2
        start = spans[0][0] - len(" ".join(before[-keep:])) - (1 if before[-keep:] else 0)
        end = spans[0][1] + len(" ".join(after[:keep])) + (1 if after[:keep] else 0)
        start, end = max(0, start), min(len(text), end)
    out, at = [], start
    for first, last in spans:
        if first < at or last > end:
            continue
        out += [text[at:first], "[", text[first:last], "]"]
        at = last
    out.append(text[at:end])
    marked = "".join(out).strip()
    return ("… " if start > 0 else "") + marked + (" …" if end < len(text) else "")


def _occurrences(text: str, part: str) -> Iterator[int]:
    at = text.find(part)
    while at >= 0:
        yield at
        at = text.find(part, at + len(part))


def _typed_words(text: str) -> list[str]:
    # Control characters (a NUL ends the FTS5 string early) become spaces; lone
    # surrogates can't be encoded for SQLite at all, so they read as stored text does.
    text = storable_text(text)
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).split()


def _match_expression(words: list[str]) -> str:
    quoted = ['"' + word.replace('"', '""') + '"' for word in words
              if any(_is_token_char(ch) for ch in word)]
    if quoted:
        quoted[-1] += "*"
    return " AND ".join(quoted)


def _is_literal(word: str) -> bool:
    # Symbols (Unicode S*: + < > = ~ ^ $, emoji) and '#' ("C#") are separators to the
    # tokenizer, so "C++" would find every word starting with "c": match such words as
    # typed instead. Other punctuation ("don't", "e.g.", "foo-bar") tokenizes into words,
    # and so does a word that only starts with a symbol ("+python", "^python").
    start = next((n for n, ch in enumerate(word) if _is_token_char(ch)), None)
    return start is None or any(unicodedata.category(ch)[0] == "S" or ch == "#"
                                for ch in word[start:])


def _has_ascii_letter(text: str) -> bool:
    return any(ch.isascii() and ch.isalpha() for ch in text)


def _ascii_lower(text: str) -> str:
    return "".join(ch.lower() if ch.isascii() else ch for ch in text)


def storable_text(text: str) -> str:
    """``text`` with lone surrogates (which SQLite can't store as UTF-8) made U+FFFD.

    A page or an API client that splits an emoji in two sends one; the rest of the text
    is kept as it was.

    >>> storable_text("ok " + chr(0xD83D)) == "ok " + chr(0xFFFD)
    True
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # UTF-16 joins a valid pair into its character and replaces the lone halves.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: storable_text(value) if isinstance(value, str) else value
            for key, value in row.items()}


def _is_token_char(ch: str) -> bool:
    # FTS5's unicode61 tokenizer keeps categories L*, N* and Co; the rest separates.
    category = unicodedata.category(ch)
    return category[0] in "LN" or category == "Co"


def _configured(conn: sqlite3.Connection) -> sqlite3.Connection:
    """One more connection to a file already set up (WAL is a property of the file)."""
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _configure(db: Database, *, wal: bool) -> None:
    db.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE needs it, per connection
    db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    if wal:
        # WAL: readers don't block the writer. NORMAL is safe with WAL (a power cut can
        # lose the last commits but never corrupts) and skips an fsync per commit.
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")


def _to_conversation(row: dict) -> Conversation:
    return Conversation(
        id=row["id"], title=row["title"], user=row["user"], model=row["model"],
        backend=row["backend"], system_prompt=row["system_prompt"],
        params=json.loads(row["params"]), created_at=row["created_at"],
        updated_at=row["updated_at"], pinned=bool(row["pinned"]),
        title_source=row.get("title_source", "words"), source=row.get("source", ""),
    )


def _to_message(row: dict) -> Message:
    # Most messages have no images and no meta: skip parsing the defaults, half the cost
    # of turning a long chat's rows into messages when it is opened.
    return Message(
        id=row["id"], conversation_id=row["conversation_id"], seq=row["seq"],
        role=row["role"], content=row["content"], thinking=row["thinking"],
        images=[] if row["images"] == "[]" else json.loads(row["images"]),
        model=row["model"], backend=row["backend"], status=row["status"], error=row["error"],
        **{name: row[name] for name in STAT_FIELDS},
        meta={} if row["meta"] == "{}" else json.loads(row["meta"]),
        created_at=row["created_at"], updated_at=row["updated_at"],
        parent_id=row.get("parent_id"),
        version=row.get("version") or 1, versions=row.get("versions") or 1,
    )


def _clean_title(title: str) -> str:
    cleaned = " ".join(title.split())
    if not cleaned:
        raise InvalidInput("A conversation title can't be empty.",
                           hint="Type a few words to name the chat.")
    return cleaned


def _check_status(status: str) -> None:
    if status not in MESSAGE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(MESSAGE_STATUSES)} (got {status!r})")


def _reject_unknown(method: str, fields: dict, allowed: Iterable[str]) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise TypeError(f"{method}() got unknown field(s): {', '.join(unknown)}")


def _conversation_gone(conv_id: str) -> StudioError:
    return StudioError(f"Conversation {conv_id} no longer exists.",
                       hint="It may have been deleted in another tab; pick a chat from the list.")


def _directory_not_writable(directory: Path) -> StudioError:
    return StudioError(
        f"The data directory {directory} is not writable.",
        hint="Set STUDIO_DATA_DIR to a folder you can write to, or fix its permissions.")


def _file_not_writable(path: Path) -> StudioError:
    return StudioError(
        f"The database file {path} is not writable.",
        hint="Fix its permissions, or set STUDIO_DATA_DIR to a folder you can write to.")
