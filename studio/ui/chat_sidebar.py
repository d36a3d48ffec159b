"""The Chat tab's conversation list: date groups with pinned chats on top, pages that reach
every chat ("More chats…"), and the time zone the groups are read in.

The list is one Radio. Group headings are choices too, whose values start with ``GROUP``
(assets/studio.css shows them as headings that can't be picked), and the last choice,
``MORE``, asks for the next page. Each page remembers how far its list was paged, so a
refresh after a reply or a rename keeps what was shown (a keyset page at a time, never an
OFFSET: ``ChatService.conversation_page``).

Dates are read in the browser's time zone, which ``assets/timezone.js`` puts in the
``studio_tz`` cookie; a page without it (or with a zone this server doesn't know) gets the
server's own zone. No store access here: the service does every read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..chat.conversations import PINNED, date_group
from ..chat.service import ChatListEntry

GROUP = "group:"  # a heading's value
MORE = "more:"  # the "More chats…" choice's value
MORE_LABEL = "More chats…"
ZONE_COOKIE = "studio_tz"
PAGE_SIZE = 200


def zone_of(request) -> tzinfo:
    """The browser's time zone from its cookie, else the server's."""
    cookies = getattr(request, "cookies", None) or {}
    name = unquote(cookies.get(ZONE_COOKIE, "") or "")
    if name and len(name) < 64:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return server_zone()


def server_zone() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


def is_heading(value) -> bool:
    """Whether a list value is a group heading or "More chats…", not a chat."""
    return isinstance(value, str) and value.startswith((GROUP, MORE))


def sidebar_choices(entries: list[ChatListEntry], *, more: bool, now: datetime,
                    zone: tzinfo) -> list[tuple[str, str]]:
    """(label, value) for the Radio: a heading before each group (Pinned, Today, Yesterday,
    Last 7 days, Older), the chats, and "More chats…" when there are more."""
    choices: list[tuple[str, str]] = []
    current = None
    for entry in entries:
        group = PINNED if entry.pinned else date_group(entry.updated_at, now, zone)
        if group != current:
            choices.append((group, GROUP + group))
            current = group
        choices.append((entry.title, entry.chat_id))
    if more:
        choices.append((MORE_LABEL, MORE))
    return choices


@dataclass
class _Shown:
    entries: list[ChatListEntry] = field(default_factory=list)
    more: str | None = None
    zone: tzinfo | None = None


class Sidebars:
    """What each open page's list shows, so "More chats…" continues where it stopped and a
    refresh keeps the depth. ``page`` None (a test, an API call) gets the first page."""

    def __init__(self, chat, *, page_size: int = PAGE_SIZE, limit: int = 10_000):
        self._chat = chat
        self._page_size = page_size
        self._pages: dict[str, _Shown] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def note_zone(self, page: str | None, request) -> None:
        """Remember the time zone a page's requests carry (read at page load)."""
        if page is not None:
            with self._lock:
                self._shown(page).zone = zone_of(request)

    def refresh(self, page: str | None, user: str) -> list[tuple[str, str]]:
        """The list from the top, as deep as the page had paged (a page at least)."""
        with self._lock:
            shown = self._shown(page) if page is not None else _Shown()
            depth = max(len(shown.entries), 1)
        entries: list[ChatListEntry] = []
        more = None
        while True:
            result = self._chat.conversation_page(user=user, more=more,
                                                  limit=self._page_size)
            entries += result.entries
            more = result.more
            if more is None or len(entries) >= depth:
                break
        return self._keep(page, entries, more)

    def more(self, page: str | None, user: str) -> list[tuple[str, str]]:
        """The list with the next page added."""
        with self._lock:
            shown = self._shown(page) if page is not None else _Shown()
            entries, cursor = list(shown.entries), shown.more
        if cursor is None:
            return self.refresh(page, user)
        result = self._chat.conversation_page(user=user, more=cursor, limit=self._page_size)
        return self._keep(page, entries + result.entries, result.more)

    def _keep(self, page: str | None, entries: list[ChatListEntry], more: str | None
              ) -> list[tuple[str, str]]:
        with self._lock:
            shown = self._shown(page) if page is not None else _Shown()
            shown.entries, shown.more = entries, more
            zone = shown.zone or server_zone()
        return sidebar_choices(entries, more=more is not None, now=datetime.now(timezone.utc),
                               zone=zone)

    def _shown(self, page: str) -> _Shown:
        """(with the lock held)"""
        if page not in self._pages and len(self._pages) >= self._limit:
            self._pages.clear()  # pages that closed long ago
        return self._pages.setdefault(page, _Shown())
