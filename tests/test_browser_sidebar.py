"""The conversation sidebar in headless chromium against its own `python app.py` (issue 14
items 16 and 17, issue 16): date groups in the browser's time zone with pinned chats on top,
"More chats…" reaching the oldest of 450+ chats, pinning from the sidebar, and importing an
export with its report."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils

from studio.chat.conversations import LAST_7_DAYS, OLDER, TODAY, YESTERDAY, date_group
from tests.conftest import start_studio, stop_studio

pytestmark = pytest.mark.browser



def etc_zone(offset_hours: int) -> str:
    """The tz database's fixed zone ``offset_hours`` east of UTC (its names flip the sign).
    Offset 0 is "UTC": chromium reports "Etc/GMT" back as "UTC" (the hour from 13:30 UTC,
    when the browser's zone is the one at offset 0)."""
    return "UTC" if offset_hours == 0 else f"Etc/GMT{-offset_hours:+d}"


def zones_for(now: datetime) -> tuple[str, str]:
    """(server, browser): zones where it is now about 01:30 and about 13:30. The browser's
    day then began 12 hours before the server's, so a time between the two midnights is
    Today in the browser's zone and Yesterday in the server's, at any hour the tests run
    (fixed zones once failed for the hour after midnight UTC)."""
    utc = now.astimezone(timezone.utc)
    server = round(1.5 - (utc.hour + utc.minute / 60))
    server = (server + 12) % 24 - 12 if server < -12 or server > 14 else server
    browser = server + 12 if server + 12 <= 14 else server - 12
    return etc_zone(server), etc_zone(browser)


# Set far apart, so a group read in the wrong zone shows.
SERVER_ZONE, BROWSER_ZONE = zones_for(datetime.now(timezone.utc))
FIXTURES = Path(__file__).parent / "fixtures" / "imports"
OLD_CHATS = 450


def iso(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def moment_in(group: str, browser: ZoneInfo, server: ZoneInfo, now: datetime,
              *, differ: bool) -> str:
    """A time that falls in ``group`` in the browser's zone (and, with ``differ``, in
    another group in the server's), searched hour by hour back from now."""
    for hours in range(0, 24 * 10):
        stamp = iso(now - timedelta(hours=hours, minutes=1))
        if date_group(stamp, now, browser) == group and (
                not differ or date_group(stamp, now, server) != group):
            return stamp
    raise AssertionError(f"no time is {group} in {browser} only")


@pytest.fixture(scope="module")
def sidebar_studio(tmp_path_factory, session_ollama):
    running = start_studio(tmp_path_factory.mktemp("sidebar"), session_ollama.url,
                           {"TZ": SERVER_ZONE})
    yield running
    stop_studio(running)


def seed(studio, browser_zone: ZoneInfo) -> None:
    now = datetime.now(timezone.utc)
    server = ZoneInfo(SERVER_ZONE)
    rows = [{"id": f"old{n:029d}", "title": f"old chat {n:03d}", "user": "owner", "pinned": 0,
             "created_at": "2020-01-01T00:00:00.000Z",
             "updated_at": iso(datetime(2020, 1, 1, tzinfo=timezone.utc)
                               + timedelta(minutes=n))} for n in range(OLD_CHATS)]
    recent = [("today chat", TODAY, True), ("yesterday chat", YESTERDAY, False),
              ("week chat", LAST_7_DAYS, False)]
    for n, (title, group, differ) in enumerate(recent):
        rows.append({"id": f"new{n:029d}", "title": title, "user": "owner", "pinned": 0,
                     "created_at": "2020-01-01T00:00:00.000Z",
                     "updated_at": moment_in(group, browser_zone, server, now, differ=differ)})
    rows.append({"id": "pin" + "0" * 29, "title": "pinned chat", "user": "owner", "pinned": 1,
                 "created_at": "2019-01-01T00:00:00.000Z",
                 "updated_at": "2019-01-01T00:00:00.000Z"})
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    db["conversations"].insert_all(rows)
    db.close()


def sidebar(page) -> list[tuple[str, str]]:
    """(value, text) of each choice in the list, in order."""
    return page.eval_on_selector_all(
        "#conv-list label",
        "labels => labels.map(l => [l.querySelector('input').value, l.textContent.trim()])")


def chats_listed(page) -> list[str]:
    return [text for value, text in sidebar(page) if not value.startswith(("group:", "more:"))]


def wait_listed(page, count: int) -> None:
    page.wait_for_function(
        "(n) => [...document.querySelectorAll('#conv-list input')]"
        ".filter(i => !/^(group|more):/.test(i.value)).length === n", arg=count)


def test_browser_sidebar_groups_pins_and_pages_to_the_oldest(sidebar_studio, page):
    page.context.new_cdp_session(page).send("Emulation.setTimezoneOverride",
                                            {"timezoneId": BROWSER_ZONE})
    page.goto(sidebar_studio.url)
    page.wait_for_selector("#chat-input textarea")  # loaded, as a person sees it, then reloaded
    browser_zone = ZoneInfo(page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone"))
    assert str(browser_zone) == BROWSER_ZONE != SERVER_ZONE
    seed(sidebar_studio, browser_zone)
    page.reload()
    page.wait_for_selector("#conv-list label")
    wait_listed(page, 200)

    headings = [text for value, text in sidebar(page) if value.startswith("group:")]
    assert headings == ["Pinned", "Today", "Yesterday", "Last 7 days", "Older"]
    # "today chat" is today in the browser's zone but not in the server's: the browser's won.
    assert chats_listed(page)[:4] == ["pinned chat", "today chat", "yesterday chat",
                                      "week chat"]
    assert [v for v, _ in sidebar(page)][:3] == ["group:Pinned", "pin" + "0" * 29,
                                                "group:Today"]

    # "More chats…" twice reaches the oldest of 454, each chat listed once.
    page.click("#conv-list label:has-text('More chats…')")
    wait_listed(page, 400)
    page.click("#conv-list label:has-text('More chats…')")
    wait_listed(page, OLD_CHATS + 4)
    listed = chats_listed(page)
    assert listed[-1] == "old chat 000" and len(set(listed)) == OLD_CHATS + 4
    assert not page.query_selector("#conv-list input[value='more:']")

    # The oldest opens like any other, and pinning it from the sidebar puts it on top,
    # without losing how far the list was paged.
    page.click("#conv-actions button")  # open the "This chat" accordion
    page.click("#conv-list label:has-text('old chat 000')")
    page.wait_for_function(
        "() => (document.querySelector('#rename-box textarea, #rename-box input') || {}).value"
        " === 'old chat 000'")  # built as "This chat" opens
    page.click("#pin-btn")
    page.wait_for_function(
        "() => { const l = [...document.querySelectorAll('#conv-list label')];"
        " return l.length > 2 && l[1].textContent.trim() === 'old chat 000'; }")
    # Pinned chats too are newest first: 2020's before 2019's.
    assert chats_listed(page)[:3] == ["old chat 000", "pinned chat", "today chat"]
    wait_listed(page, OLD_CHATS + 4)


def test_browser_sidebar_import_reports_and_lists_the_chats(sidebar_studio, page, tmp_path):
    page.goto(sidebar_studio.url)
    # Not "#conv-list": an empty list is not shown, and this test must not need another's chats.
    page.wait_for_selector("#chat-input textarea")
    page.click("#import-chats button")  # open the "Import chats" accordion
    upload = "#import-file input[type=file]"

    page.set_input_files(upload, str(FIXTURES / "chatgpt-conversations.json"))
    page.wait_for_selector("#import-report :text('Imported 2 chats (6 messages) from ChatGPT.')")
    report = page.inner_text("#import-report")
    assert "Left out 3 system or tool messages." in report
    page.wait_for_selector("#conv-list label:has-text('Weekend in Lisbon')")

    # The same file again adds nothing, and says so.
    page.click("#import-file button[aria-label='Clear']")
    page.set_input_files(upload, str(FIXTURES / "chatgpt-conversations.json"))
    page.wait_for_selector("#import-report :text('Skipped 2 chats already imported')")
    assert chats_listed(page).count("Weekend in Lisbon") == 1

    # A wrong file gets a sentence, and nothing is imported.
    wrong = tmp_path / "notes.json"
    wrong.write_text('{"notes": ["not a chat export"]}')
    page.click("#import-file button[aria-label='Clear']")
    page.set_input_files(upload, str(wrong))
    page.wait_for_selector("text=not a chat export the studio can read")

    page.click("#conv-list label:has-text('Weekend in Lisbon')")
    page.wait_for_function(
        "() => document.querySelector('#chatbot').innerText.includes('Pasteis de Belem')")


def test_browser_sidebar_more_keeps_a_phone_s_sidebar_open(sidebar_studio, page):
    db = sqlite_utils.Database(sidebar_studio.data_dir / "studio.db")
    db["conversations"].insert_all(
        {"id": f"phone{n:027d}", "title": f"phone chat {n}", "user": "owner", "pinned": 0,
         "created_at": "2018-01-01T00:00:00.000Z", "updated_at": f"2018-01-01T00:{n // 60:02d}:"
                                                                f"{n % 60:02d}.000Z"}
        for n in range(201))  # more than a page, whatever else the studio holds
    db.close()
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(sidebar_studio.url)
    page.wait_for_selector("#conv-list label", state="attached")
    assert not page.is_visible("#conv-list")  # a phone starts with the list closed
    page.click("#conv-toggle")
    page.wait_for_selector("#conv-list", state="visible")
    before = len(chats_listed(page))

    page.click("#conv-list label:has-text('More chats…')")
    page.wait_for_function("(n) => [...document.querySelectorAll('#conv-list input')]"
                           ".filter(i => !/^(group|more):/.test(i.value)).length > n",
                           arg=before)
    page.wait_for_timeout(300)  # longer than the phone script's 150 ms before it closes
    assert "conv-open" in page.get_attribute("#conv-sidebar", "class")
    assert page.is_visible("#conv-list")
