"""studio/ui/chat_sidebar.py without a browser: the list's choices (headings, "More
chats…"), the time zone read from the page's cookie, and each page's paging depth kept
across refreshes. The browser side is tests/test_browser_sidebar.py."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import gradio as gr
import pytest

from studio.chat.replies import ReplyManager
from studio.chat.service import ChatListEntry, ChatService
from studio.ui.chat_sidebar import (MORE, MORE_LABEL, Sidebars, is_heading, server_zone,
                                    sidebar_choices, zone_of)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def test_sidebar_choices_head_each_group_once_and_end_with_more():
    entries = [ChatListEntry("p", "Pinned one", pinned=True, updated_at="2020-01-01T00:00:00.000Z"),
               ChatListEntry("a", "Now", updated_at="2026-03-10T11:00:00.000Z"),
               ChatListEntry("b", "Earlier", updated_at="2026-03-10T01:00:00.000Z"),
               ChatListEntry("c", "Old", updated_at="2025-01-01T00:00:00.000Z")]

    choices = sidebar_choices(entries, more=True, now=NOW, zone=timezone.utc)

    assert choices == [("Pinned", "group:Pinned"), ("Pinned one", "p"), ("Today", "group:Today"),
                       ("Now", "a"), ("Earlier", "b"), ("Older", "group:Older"), ("Old", "c"),
                       (MORE_LABEL, MORE)]
    assert [is_heading(v) for _, v in choices] == [True, False, True, False, False, True,
                                                   False, True]
    assert sidebar_choices(entries[1:2], more=False, now=NOW, zone=timezone.utc)[-1] == (
        "Now", "a")


@pytest.mark.parametrize("cookies, zone", [
    ({"studio_tz": "Europe%2FParis"}, ZoneInfo("Europe/Paris")),
    ({"studio_tz": "America/Los_Angeles"}, ZoneInfo("America/Los_Angeles")),
    ({"studio_tz": "Not/AZone"}, None),
    ({"studio_tz": "../../etc/passwd"}, None),
    ({}, None),
])
def test_sidebar_zone_is_the_browser_s_else_the_server_s(cookies, zone):
    assert zone_of(SimpleNamespace(cookies=cookies)) == (zone or server_zone())
    assert zone_of(None) == server_zone()


@pytest.fixture
def chat(store, tmp_path):
    return ChatService(store, ReplyManager(lambda *a, **k: iter(()), store), router=None,
                       uploads_dir=tmp_path / "u", exports_dir=tmp_path / "e",
                       max_message_chars=100, supports_images=lambda m: False)


def chats_in(choices) -> list[str]:
    return [value for _, value in choices if not is_heading(value)]


def test_sidebar_more_adds_a_page_and_a_refresh_keeps_the_depth(chat, store):
    ids = [store.create_conversation(f"chat {n}").id for n in range(7)]
    sidebars = Sidebars(chat, page_size=3)

    assert chats_in(sidebars.refresh("page-1", "owner")) == ids[:-4:-1]
    assert chats_in(sidebars.more("page-1", "owner")) == ids[:-7:-1]
    store.touch_conversation(ids[0])  # activity: the oldest goes to the top
    refreshed = sidebars.refresh("page-1", "owner")
    assert chats_in(refreshed) == [ids[0], *ids[:1:-1]]  # as deep as before: six
    assert refreshed[-1][1] == MORE
    assert chats_in(sidebars.more("page-1", "owner"))[-1] == ids[1]
    # Another page starts at the first page.
    assert len(chats_in(sidebars.refresh("page-2", "owner"))) == 3


def test_sidebar_more_during_a_reply_leaves_the_reply_and_its_queue(tmp_path, fake_ollama):
    from studio.config import Settings
    from studio.services import build_services
    from studio.ui.chat_handlers import ChatPage
    from tests.fakes.ollama_server import make_tokens
    from tests.test_ui_chat_queue import mid_reply, request, send, stored_turns

    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path / "data"), "OLLAMA_HOST": fake_ollama.url},
        dotenv_path=None))
    page = ChatPage(services)
    try:
        first, sess = mid_reply(page, fake_ollama)
        fake_ollama.queue_reply("Second answer.")
        list(send(page, "second question", sess))  # waits for the first reply

        update = page.on_open(MORE, sess, request=request())

        assert update[:5] == (gr.skip(),) * 5 and update[6:] == (gr.skip(),) * 5
        assert sess["chat_id"] in [value for _, value in update[5]["choices"]]
        rest = list(first)  # the page's stream went on to the end, then sent the queued one
        assert "".join(make_tokens(6)) in str(rest[-1][1])
        assert stored_turns(page, sess)[-2:] == [("user", "second question"),
                                                 ("assistant", "Second answer.")]
    finally:
        services.store.close()
