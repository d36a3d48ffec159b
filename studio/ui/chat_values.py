"""Values for the Chat tab: a conversation's turns (``studio.chat.history.Turn``) as
Chatbot messages, the per-page session dict, and the message and parameters read from the
controls. No components and no handlers here (``studio/ui/chat.py`` builds the tab).
"""

from __future__ import annotations

import re

from ..chat.conversations import stats_line, status_note
from ..chat.history import Turn
from ..events import ChatOptions


def new_session(incognito: bool = False) -> dict:
    """Per-page state: the open chat's id (None until its first message), whether it is
    incognito, for each chatbot row the turn seq it shows (for edits), and the seqs of the
    first and last turn shown (None: from the oldest / to the newest; ``chat/window.py``)."""
    return {"chat_id": None, "incognito": incognito, "index": [], "first": None, "last": None}


def chatbot_value(turns: list[Turn]) -> tuple[list[dict], list[int | None]]:
    """Chatbot messages for the turns, and for each chatbot row the turn seq it shows
    (None for a row of buttons, which can't be edited).

    A reply shows as: notices and thinking (collapsible), the answer, then a collapsed
    line of figures, then its buttons (``turn_tools``). Before its first words, a reply the
    router is retrying shows why. The answer's text is the last growing piece while it
    streams, so Gradio's diff sends only the new characters to the browser. Text that looks
    like HTML shows as typed (``shown_as_typed``).
    """
    rows: list[dict] = []
    index: list[int | None] = []

    def add(row: dict, seq: int | None) -> None:
        rows.append(row)
        index.append(seq)

    for t in turns:
        tools = turn_tools(t)
        if t.role == "user":
            add({"role": "user", "content": shown_as_typed(t.content)}, t.seq)
            for path in t.images:
                add({"role": "user", "content": {"path": path}}, t.seq)
            if tools:
                add(tools_row("user", tools), None)
            continue
        streaming = t.status == "streaming"
        for note in t.notices:
            add({"role": "assistant", "content": "",
                 "metadata": {"title": f"Note: {note}", "status": "done"}}, t.seq)
        if t.thinking:
            add({"role": "assistant", "content": shown_as_typed(t.thinking),
                 "metadata": {"title": "Thinking",
                              "status": "pending" if streaming and not t.content else "done"}},
                t.seq)
        text = shown_as_typed(t.content)
        note = status_note(t.status, t.error)
        if note:
            text = f"{text}\n\n{note}" if text else note
        elif streaming and not text and t.retrying:
            text = f"_{t.retrying}_"  # replaced by the answer's first words
        if text or streaming:
            add({"role": "assistant", "content": text}, t.seq)
        if not streaming:
            figures = stats_line(ttft_ms=t.ttft_ms, tokens_per_s=t.tokens_per_s,
                                 completion_tokens=t.completion_tokens,
                                 prompt_tokens=t.prompt_tokens, total_ms=t.total_ms,
                                 cost_usd=t.cost_usd, model=t.model, backend=t.backend)
            if figures and t.status != "error":
                add({"role": "assistant", "content": "",
                     "metadata": {"title": figures, "status": "done"}}, t.seq)
        if tools:
            add(tools_row("assistant", tools), None)
    return rows, index


def tools_row(role: str, tools: str) -> dict:
    """A row of a turn's buttons. Its metadata has no title, so the Chatbot shows it as a
    plain message, and readers of the chatbot value (``/send`` through gradio_client) that
    skip metadata rows (thinking, figures) skip it too: the answer is still the last row
    without metadata."""
    return {"role": role, "content": tools, "metadata": {"status": "done"}}


# A turn's buttons are HTML of our own in a row of their own (never inside what a person
# or a model wrote, which is escaped). assets/studio.js hands a press to the hidden
# #turn-action box as "<action> <seq>"; ChatPage.on_turn_action does the rest.
TURN_ACTIONS = ("retry", "prev", "next")


def turn_tools(turn: Turn) -> str:
    """The buttons under a turn: ↻ under every finished answer (the Chatbot's own buttons
    sit only under the last row, and this row hides them), and ‹ n/m › where the turn has
    other versions. '' for none (a user turn with one version, a reply still streaming).

    >>> turn_tools(Turn(seq=2, role="assistant", content="hi", version=2, versions=3)
    ...            ).count("turn-act act-")
    3
    >>> turn_tools(Turn(seq=1, role="user", content="hi"))
    ''
    """
    if turn.status == "streaming":
        return ""
    parts = []
    if turn.role == "assistant":
        parts.append(_button("retry", turn.seq, "Answer again", "↻"))
    if turn.versions > 1:
        parts += [_button("prev", turn.seq, "Earlier version", "‹"),
                  f'<span class="turn-version">{turn.version}/{turn.versions}</span>',
                  _button("next", turn.seq, "Later version", "›")]
    return f'<span class="turn-tools">{"".join(parts)}</span>' if parts else ""


def _button(action: str, seq: int, label: str, face: str) -> str:
    # Gradio's sanitizer keeps a button's class and title, not data-* or aria-* attributes,
    # so the action and the turn ride in the class.
    return f'<button class="turn-act act-{action} seq-{int(seq)}" title="{label}">{face}</button>'



def parse_turn_action(value: str) -> tuple[str, int] | None:
    """(action, seq) from the #turn-action box's "<action> <seq> <nonce>"; None otherwise.

    >>> parse_turn_action("prev 4 1712345")
    ('prev', 4)
    >>> parse_turn_action("drop 4") is None
    True
    """
    parts = (value or "").split()
    if len(parts) < 2 or parts[0] not in TURN_ACTIONS or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


# Text that looks like HTML shows as typed: "<" that could open a tag, a comment or a
# declaration becomes "&lt;" outside code (Markdown shows code as typed already), so the
# Chatbot's sanitizer has nothing to take away. Autolinks (<https://…>) stay links.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_TAG_OPEN = re.compile(r"<(?:[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*|[^\s<>@]+@[^\s<>@]+)>"
                       r"|<(?=[A-Za-z/!?])")
_TAG_OPEN_SHOWN = re.compile(r"&lt;(?=[A-Za-z/!?])")


def shown_as_typed(text: str) -> str:
    r"""``text`` for the Chatbot: Markdown and code render, HTML-looking text shows as typed.

    >>> shown_as_typed("**hi** <script>alert(1)</script> `<b>` <https://x.org>")
    '**hi** &lt;script>alert(1)&lt;/script> `<b>` <https://x.org>'
    >>> shown_as_typed("```html\n<img src=x>\n```\n<img src=x onerror=y>")
    '```html\n<img src=x>\n```\n&lt;img src=x onerror=y>'
    """
    if "<" not in (text or ""):
        return text or ""
    return _outside_code(text, lambda part: _TAG_OPEN.sub(
        lambda m: m.group(0) if len(m.group(0)) > 1 else "&lt;", part))


def typed_from_shown(text: str) -> str:
    """The inverse of ``shown_as_typed``, for a message edited in the Chatbot (its box
    starts from the text as shown).

    >>> typed_from_shown("&lt;b>bold&lt;/b> `&lt;b>`")
    '<b>bold</b> `&lt;b>`'
    """
    if "&lt;" not in (text or ""):
        return text or ""
    return _outside_code(text, lambda part: _TAG_OPEN_SHOWN.sub("<", part))


def _outside_code(text: str, change) -> str:
    """``change`` applied to the parts of ``text`` that Markdown doesn't show as code:
    fenced blocks, indented blocks after a blank line, and `code spans` are left alone."""
    out: list[str] = []
    prose: list[str] = []
    fence = ""
    blank_before, indented = True, False

    def flush() -> None:
        if prose:
            part, at = "".join(prose), 0
            for span in _CODE_SPAN.finditer(part):
                out.extend((change(part[at:span.start()]), span.group(0)))
                at = span.end()
            out.append(change(part[at:]))
            prose.clear()

    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        opened = _FENCE.match(line)
        if fence:
            out.append(line)
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                    and not stripped.strip(fence[0]):
                fence = ""
        elif opened:
            flush()
            fence = opened.group(1)
            out.append(line)
        elif stripped and line.startswith(("    ", "\t")) and (blank_before or indented):
            flush()
            indented = True
            out.append(line)
        else:
            indented = indented and not stripped
            prose.append(line)
        blank_before = not stripped
    flush()
    return "".join(out)


def split_message(message) -> tuple[str, list]:
    """(text, files) of a MultimodalTextbox value (or a plain string from an API caller)."""
    if isinstance(message, dict):
        return message.get("text") or "", list(message.get("files") or [])
    return str(message or ""), []


def collect_options(temperature, top_p, num_ctx, seed, max_tokens, think_mode) -> ChatOptions:
    """The generation parameters from the controls; 0 / -1 mean "backend default"."""
    return ChatOptions(
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        num_ctx=int(num_ctx) if num_ctx else None,
        seed=int(seed) if seed is not None and int(seed) >= 0 else None,
        max_tokens=int(max_tokens) if max_tokens else None,
        think={"on": True, "off": False}.get(think_mode))


def queued_label(message: dict, held: str = "") -> str:
    """The chip of a message waiting to be sent (``held``: why it is not going by itself).

    >>> queued_label({"text": "and  in French?", "files": []})
    'Queued: and in French? ✕'
    >>> queued_label({"text": "", "files": ["/t/a.png"]}, held="you stopped the reply")
    'Not sent (you stopped the reply): (1 image) ✕'
    """
    text, files = split_message(message)
    words = " ".join(text.split())
    short = words if len(words) <= 80 else words[:79] + "…"
    if files:
        pictures = f"({len(files)} image{'s' if len(files) > 1 else ''})"
        short = f"{short} {pictures}" if short else pictures
    return f"Not sent ({held}): {short} ✕" if held else f"Queued: {short} ✕"


def merge_into_box(box, message: dict) -> dict:
    """The box's value with a taken-back ``message`` in it: the message alone when the box
    is empty, else after what is there (a blank line between), so nothing typed is lost.

    >>> merge_into_box({"text": "", "files": []}, {"text": "later", "files": []})
    {'text': 'later', 'files': []}
    >>> merge_into_box({"text": "now", "files": ["a"]}, {"text": "later", "files": ["b"]})
    {'text': 'now\\n\\nlater', 'files': ['a', 'b']}
    """
    text, files = split_message(box)
    more_text, more_files = split_message(message)
    joined = f"{text}\n\n{more_text}" if text.strip() and more_text else (text + more_text)
    return {"text": joined, "files": [*files, *more_files]}


def no_match_note(query: str, found: bool) -> str:
    """The line under the search box when a search finds no chat ('' otherwise).

    >>> no_match_note("🦄 pizza", False)
    'No chats match “🦄 pizza”. Try fewer words, or the start of a word.'
    >>> no_match_note("pizza", True), no_match_note("  ", False)
    ('', '')
    """
    typed = " ".join(query.split())
    if found or not typed:
        return ""
    return f"No chats match “{typed}”. Try fewer words, or the start of a word."
