"""The sidebar's data at the service level: every chat reachable page by page (keyset, not
OFFSET), pinned chats first and pins scoped to their owner, and the date groups in a time
zone. The browser side is tests/test_browser_sidebar.py."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from studio.chat.conversations import LAST_7_DAYS, OLDER, TODAY, YESTERDAY, date_group
from studio.chat.replies import ReplyManager
from studio.chat.service import ChatService
from studio.errors import InvalidInput, NotFound


@pytest.fixture
def chat(store, tmp_path):
    def no_stream(*args, **kwargs):
        raise AssertionError("the sidebar never asks a model")

    return ChatService(store, ReplyManager(no_stream, store), router=None,
                       uploads_dir=tmp_path / "uploads", exports_dir=tmp_path / "exports",
                       max_message_chars=1000, supports_images=lambda m: False)


def make_chats(store, count: int, user: str = "owner") -> list[str]:
    """``count`` chats of ``user``, the last made the newest."""
    return [store.create_conversation(f"{user} chat {n}", user=user).id for n in range(count)]


def all_pages(chat, user: str, limit: int):
    pages, more = [], None
    while True:
        page = chat.conversation_page(user=user, more=more, limit=limit)
        pages.append(page.entries)
        more = page.more
        if more is None:
            return pages


def test_sidebar_pages_reach_the_oldest_chat(chat, store):
    ids = make_chats(store, 450)
    make_chats(store, 5, user="guest")

    pages = all_pages(chat, "owner", 200)

    assert [len(p) for p in pages] == [200, 200, 50]
    listed = [e.chat_id for p in pages for e in p]
    assert listed == ids[::-1]  # newest first, each once, the oldest last
    assert pages[-1][-1].title == "owner chat 0"


def test_sidebar_last_full_page_says_there_is_no_more(chat, store):
    make_chats(store, 4)

    page = chat.conversation_page(user="owner", limit=4)

    assert len(page.entries) == 4 and page.more is None


def test_sidebar_pinned_chats_head_the_first_page(chat, store):
    ids = make_chats(store, 6)
    chat.set_pinned(ids[1], True, user="owner")

    entries = chat.conversation_page(user="owner", limit=3).entries

    assert [(e.title, e.pinned) for e in entries] == [
        ("owner chat 1", True), ("owner chat 5", False), ("owner chat 4", False)]
    chat.set_pinned(ids[1], False, user="owner")
    assert chat.conversation_page(user="owner", limit=1).entries[0].title == "owner chat 5"


def test_sidebar_a_chat_that_moves_meanwhile_is_not_listed_twice(chat, store):
    ids = make_chats(store, 5)
    first = chat.conversation_page(user="owner", limit=2)
    store.touch_conversation(ids[0])  # the oldest gets a new message: it goes to the top

    rest = chat.conversation_page(user="owner", more=first.more, limit=10).entries

    assert [e.chat_id for e in rest] == [ids[2], ids[1]]


def test_sidebar_pins_are_the_owner_s(chat, store):
    [theirs] = make_chats(store, 1, user="alice")

    with pytest.raises(NotFound):
        chat.set_pinned(theirs, True, user="bob")
    with pytest.raises(NotFound):
        chat.set_pinned("0" * 32, True, user="bob")
    with pytest.raises(NotFound):
        chat.toggle_pinned(theirs, user="bob")
    assert store.get_conversation(theirs).pinned is False
    assert chat.conversation_page(user="bob").entries == []
    assert chat.toggle_pinned(theirs, user="alice") is True
    assert chat.toggle_pinned(theirs, user="alice") is False


@pytest.mark.parametrize("chat_id", [None, "incognito-abc"])
def test_sidebar_only_saved_chats_can_be_pinned(chat, chat_id):
    with pytest.raises(InvalidInput, match="Only saved conversations can be pinned"):
        chat.set_pinned(chat_id, True, user="owner")


@pytest.mark.parametrize("more", ["nonsense", "2|2024|x", "1||x", "0|2024-01-01T00:00:00Z|"])
def test_sidebar_refuses_a_position_it_never_gave(chat, more):
    with pytest.raises(InvalidInput, match="not one the studio gave"):
        chat.conversation_page(user="owner", more=more)


NOW = datetime(2026, 3, 10, 6, 30, tzinfo=timezone.utc)  # 07:30 in Paris, 22:30 (9th) in LA


@pytest.mark.parametrize("updated_at, zone, group", [
    ("2026-03-10T06:00:00.000Z", "UTC", TODAY),
    ("2026-03-09T23:30:00.000Z", "UTC", YESTERDAY),
    # 00:30 on the 10th in Paris: today there, though still the 9th in UTC.
    ("2026-03-09T23:30:00.000Z", "Europe/Paris", TODAY),
    # 22:30 on the 8th in Los Angeles, where it is now the 9th: yesterday.
    ("2026-03-09T06:30:00.000Z", "America/Los_Angeles", YESTERDAY),
    ("2026-03-03T12:00:00.000Z", "UTC", LAST_7_DAYS),
    ("2026-03-02T12:00:00.000Z", "UTC", OLDER),
    ("2019-01-01T00:00:00.000Z", "Asia/Tokyo", OLDER),
    ("2026-03-10T06:31:00.000Z", "UTC", TODAY),  # a clock a little ahead
])
def test_sidebar_date_groups_follow_the_time_zone(updated_at, zone, group):
    assert date_group(updated_at, NOW, ZoneInfo(zone)) == group
