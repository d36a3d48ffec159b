"""Values for the Chat tab: a conversation's turns (``studio.chat.history.Turn``) as
Chatbot messages, the per-page session dict, and the message and parameters read from the
controls. No components and no handlers here (``studio/ui/chat.py`` builds the tab).
"""

from __future__ import annotations

from ..chat.conversations import stats_line, status_note
from ..chat.history import Turn
from ..events import ChatOptions


def new_session(incognito: bool = False) -> dict:
    """Per-page state: the open chat's id (None until its first message), whether it is
    incognito, and for each chatbot row the turn seq it shows (for edits)."""
    return {"chat_id": None, "incognito": incognito, "index": []}


def chatbot_value(turns: list[Turn]) -> tuple[list[dict], list[int]]:
    """Chatbot messages for the turns, and for each chatbot row the turn seq it shows.

    A reply shows as: notices and thinking (collapsible), the answer, then a collapsed
    line of figures. The answer's text is the last growing piece while it streams, so
    Gradio's diff sends only the new characters to the browser.
    """
    rows: list[dict] = []
    index: list[int] = []

    def add(row: dict, seq: int) -> None:
        rows.append(row)
        index.append(seq)

    for t in turns:
        if t.role == "user":
            add({"role": "user", "content": t.content}, t.seq)
            for path in t.images:
                add({"role": "user", "content": {"path": path}}, t.seq)
            continue
        streaming = t.status == "streaming"
        for note in t.notices:
            add({"role": "assistant", "content": "",
                 "metadata": {"title": f"Note: {note}", "status": "done"}}, t.seq)
        if t.thinking:
            add({"role": "assistant", "content": t.thinking,
                 "metadata": {"title": "Thinking",
                              "status": "pending" if streaming and not t.content else "done"}},
                t.seq)
        text = t.content
        note = status_note(t.status, t.error)
        if note:
            text = f"{text}\n\n{note}" if text else note
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
    return rows, index


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
