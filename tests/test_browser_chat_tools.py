"""The sidebar's "This chat" and "Import chats", built each time they are opened (a render
each, ui/chat.py; issue 16 item 4): not in the page's first config, and in the page they
rename, export and delete the chat that is open, and import, as before."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid

import pytest

from tests.test_browser_chat import open_studio, send, wait_chat_contains

pytestmark = pytest.mark.browser

TOOLS = ("rename-box", "rename-btn", "pin-btn", "delete-btn", "confirm-delete", "export-md",
         "export-json", "export-file", "import-file", "import-report")
BOX_JS = ("() => ((document.querySelector('#rename-box textarea, #rename-box input') || {})"
          ".value ?? null)")


def first_config(url: str) -> dict:
    with urllib.request.urlopen(url) as answer:
        html = answer.read().decode()
    found = re.search(r"window\.gradio_config\s*=\s*(\{.*?\});\s*</script>", html, re.S)
    assert found, html[:300]
    return json.loads(found.group(1))


def listed(page) -> list[str]:
    return [t.strip() for t in page.eval_on_selector_all(
        "#conv-list label", "ls => ls.map(l => l.innerText)")]


def test_browser_chat_tools_are_built_as_opened_and_act_on_the_open_chat(studio, page):
    names = {c.get("props", {}).get("elem_id") for c in first_config(studio.url)["components"]}
    assert not names & set(TOOLS), names & set(TOOLS)
    assert {"incognito", "conv-list", "chat-input"} <= names

    open_studio(page, studio)
    marker = f"otter{uuid.uuid4().hex[:6]}"
    studio.ollama.queue_reply(["Otters ", "hold ", "hands."])
    send(page, f"Tell me about the {marker}")
    wait_chat_contains(page, "Otters hold hands.")

    # "This chat" shows the open chat's title as it opens.
    page.click("#conv-actions button")
    page.wait_for_function(f"() => (({BOX_JS})() || '').includes('{marker}')")

    # Rename: the list says so, and closing and opening "This chat" keeps the new title.
    title = f"Renamed {marker}"
    page.fill("#rename-box textarea, #rename-box input", title)
    page.click("#rename-btn")
    page.wait_for_function("(t) => document.querySelector('#conv-list').innerText.includes(t)",
                           arg=title)
    page.click("#conv-actions button")
    page.wait_for_selector("#rename-box", state="hidden")
    page.click("#conv-actions button")
    page.wait_for_function(f"(t) => ({BOX_JS})() === t", arg=title)

    # Export: a file to download, of this chat.
    page.click("#export-md")
    link = page.wait_for_selector("#export-file a[href]")
    assert "Otters hold hands." in page.request.get(link.evaluate("a => a.href")).text()

    # A new chat empties the box; opening the renamed one from the list fills it again.
    page.click("#new-chat")
    page.wait_for_function(f"() => ({BOX_JS})() === ''")
    page.click(f"#conv-list label:has-text('{title}')")
    page.wait_for_function(f"(t) => ({BOX_JS})() === t", arg=title)
    wait_chat_contains(page, "Otters hold hands.")

    # Delete asks once more, then the chat is gone from the list and the box.
    page.click("#delete-btn")
    page.click("#confirm-delete")
    page.wait_for_function(
        "(t) => !document.querySelector('#conv-list').innerText.includes(t)", arg=title)
    page.wait_for_function(f"() => ({BOX_JS})() === ''")
    page.wait_for_selector("#confirm-delete", state="hidden")
    assert title not in listed(page)

    # A chat begun on this page: its title shows once it has one, and deleting it empties
    # the box too.
    studio.ollama.queue_reply(["Beavers ", "build."])
    send(page, f"And beavers {marker}?")
    wait_chat_contains(page, "Beavers build.")
    page.wait_for_function(f"() => (({BOX_JS})() || '').startsWith('And beavers')")
    page.click("#delete-btn")
    page.click("#confirm-delete")
    page.wait_for_function(f"() => ({BOX_JS})() === ''")
    assert not [t for t in listed(page) if t.startswith("And beavers")]
