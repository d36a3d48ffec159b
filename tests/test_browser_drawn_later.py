"""The Chat tab's parts drawn a frame after the message box (ui/common.drawn_later,
assets/studio.js): opened once the box is on screen, laid out without a heading, and one the
script can't open shown as an accordion the person can open."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

BLOCKS = "#conv-extras, #chat-attached-later, #chat-settings-later"
STATE_JS = """() => [...document.querySelectorAll('""" + BLOCKS + """')]
  .map(b => [b.id, b.classList.contains('studio-later'),
  getComputedStyle(b.querySelector(':scope > button.label-wrap')).display,
  b.querySelector(':scope > [data-testid="accordion-content"]').style.display])"""


def test_browser_later_parts_open_after_the_box_without_a_heading(studio, page):
    page.goto(studio.url)
    page.wait_for_selector("#chat-input textarea")
    for selector in ("#model-picker", "#system-prompt", "#incognito", "#conv-actions"):
        page.wait_for_selector(selector, state="visible")
    state = page.evaluate(STATE_JS)
    assert [row[0] for row in state] == ["conv-extras", "chat-attached-later",
                                         "chat-settings-later"]
    for block, marked, heading, contents in state:
        assert marked and heading == "none" and contents != "none", block
    # The accordions inside stay as Gradio draws them: closed, with their headings.
    assert page.is_visible("#params button.label-wrap")
    assert page.evaluate("() => document.querySelector("
                         "'#conv-actions > [data-testid=\"accordion-content\"]').style.display"
                         ) == "none"
    assert not page.query_selector("#rename-box")  # built when "This chat" is opened


def test_browser_a_later_part_the_script_cannot_open_is_left_to_open_by_hand(studio, page):
    page.goto(studio.url)
    page.wait_for_selector("#model-picker", state="visible")
    # Drawn another way (no accordion inside), or an accordion whose heading does not open
    # it: both lose the class, so the CSS that hides the heading no longer applies.
    page.evaluate("""() => {
      const odd = document.createElement('div');
      odd.className = 'studio-later'; odd.id = 'odd';
      const stuck = document.createElement('div');
      stuck.className = 'studio-later'; stuck.id = 'stuck';
      stuck.innerHTML = '<button class="label-wrap">More</button>' +
        '<div data-testid="accordion-content" style="display: none"></div>';
      document.body.append(odd, stuck);
      window.studioOpenLater(2);
    }""")
    page.wait_for_function("() => !document.querySelector('#stuck.studio-later')")
    assert not page.evaluate("() => document.querySelector('#odd').className")
    assert page.is_visible("#stuck button.label-wrap")
    # The page's own parts, open already, keep theirs.
    assert all(row[1] for row in page.evaluate(STATE_JS))
