"""Pure helpers over conversations: prompt assembly, titles, date groups, stats lines and
exports.

Works on plain data (the store's Message dataclass or anything with the same
attributes). No I/O except through the ``read_image`` callable passed in; no gradio.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Callable, Iterable, Sequence

from ..events import ChatMessage

PARTIAL_NOTE = "Reply cut off"


def title_from(text: str, limit: int = 60) -> str:
    """A conversation title from its first message: first line, trimmed at a word.

    >>> title_from("  How do I   bake bread?\\nmore")
    'How do I bake bread?'
    >>> title_from("")
    'New chat'
    """
    line = " ".join((text or "").strip().split("\n", 1)[0].split())
    if not line:
        return "New chat"
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut + "…"


TITLE_INSTRUCTIONS = (
    "You name conversations. Reply with a title of 3 to 6 words saying what the "
    "conversation below is about, in the language of the question. Reply with the title "
    "only: no quotes, no final full stop, no emoji, no explanation.")
_TITLE_EXCERPT_CHARS = 1500  # of the question and of the answer: enough to say the subject


def title_messages(question: str, answer: str) -> list[ChatMessage]:
    """What a small model is asked for a conversation's title: the instructions, then the
    first question and answer (cut to their first 1,500 characters each)."""
    excerpt = (f"Question:\n{(question or '')[:_TITLE_EXCERPT_CHARS]}\n\n"
               f"Answer:\n{(answer or '')[:_TITLE_EXCERPT_CHARS]}")
    return [ChatMessage("system", TITLE_INSTRUCTIONS), ChatMessage("user", excerpt)]


def clean_title(reply: str) -> str:
    """A model's reply as a title: its first non-empty line without a "Title:" label,
    quotes, Markdown emphasis or a final full stop; '' when nothing is left.

    >>> clean_title('Title: "Baking sourdough bread."\\nBecause the user asked...')
    'Baking sourdough bread'
    >>> clean_title("  **Rust lifetimes explained**  ")
    'Rust lifetimes explained'
    >>> clean_title("\\n \\n")
    ''
    """
    line = next((ln.strip() for ln in (reply or "").splitlines() if ln.strip()), "")
    if line.lower().startswith("title:"):
        line = line[len("title:"):].strip()
    line = line.strip("*_#`\"'“”‘’ ").rstrip(".").strip("*_`\"'“”‘’ ")
    return title_from(line) if line else ""


# The sidebar's date groups, in the order they show (pinned chats head the list).
PINNED, TODAY, YESTERDAY, LAST_7_DAYS, OLDER = (
    "Pinned", "Today", "Yesterday", "Last 7 days", "Older")


def date_group(updated_at: str, now: datetime, zone: tzinfo) -> str:
    """Which sidebar group a chat last active at ``updated_at`` (the store's ISO 8601 UTC
    text) falls in, seen in time zone ``zone`` at ``now`` (aware): calendar days there,
    so a chat from 23:30 is "Yesterday" just after midnight.

    >>> from datetime import timezone
    >>> now = datetime(2026, 3, 10, 0, 30, tzinfo=timezone.utc)
    >>> [date_group(t, now, timezone.utc) for t in ("2026-03-10T00:10:00.000Z",
    ...  "2026-03-09T23:30:00.000Z", "2026-03-03T08:00:00.000Z", "2026-03-02T23:59:00.000Z")]
    ['Today', 'Yesterday', 'Last 7 days', 'Older']
    """
    when = datetime.fromisoformat(updated_at.replace("Z", "+00:00")).astimezone(zone).date()
    today = now.astimezone(zone).date()
    if when >= today:
        return TODAY
    if when == today - timedelta(days=1):
        return YESTERDAY
    if when >= today - timedelta(days=7):
        return LAST_7_DAYS
    return OLDER


def backend_messages(system_prompt: str, history: Iterable, *,
                     read_image: Callable[[str], bytes] | None = None) -> list[ChatMessage]:
    """Messages for a backend: the system prompt, then each user/assistant turn.

    Assistant replies that ended in an error with no text are left out (they carry no
    content the model should see); partial replies are kept, as the user saw them.
    """
    out: list[ChatMessage] = []
    if system_prompt and system_prompt.strip():
        out.append(ChatMessage("system", system_prompt.strip()))
    for m in history:
        if m.role not in ("user", "assistant"):
            continue
        if m.role == "assistant" and not m.content:
            continue
        images: tuple[bytes, ...] = ()
        if m.role == "user" and m.images and read_image is not None:
            images = tuple(read_image(p) for p in m.images)
        out.append(ChatMessage(m.role, m.content, images))
    return out


def stats_line(*, ttft_ms: float | None, tokens_per_s: float | None,
               completion_tokens: int | None, prompt_tokens: int | None = None,
               total_ms: float | None = None, model: str = "", backend: str = "",
               cost_usd: float | None = None) -> str:
    """One compact line of per-reply figures; parts that are unknown are left out.

    >>> stats_line(ttft_ms=212.4, tokens_per_s=48.04, completion_tokens=310, total_ms=6630)
    '0.21 s to first token · 48.0 tok/s · 310 tokens · 6.6 s'
    """
    parts = []
    if ttft_ms is not None:
        parts.append(f"{ttft_ms / 1000:.2f} s to first token")
    if tokens_per_s:
        parts.append(f"{tokens_per_s:.1f} tok/s")
    if completion_tokens is not None:
        tokens = f"{completion_tokens} tokens"
        if prompt_tokens is not None:
            tokens += f" ({prompt_tokens} in)"
        parts.append(tokens)
    if total_ms is not None:
        parts.append(f"{total_ms / 1000:.1f} s")
    if cost_usd is not None:
        parts.append("free" if cost_usd == 0 else f"${cost_usd:.4f}")
    if model:
        parts.append(f"{model} ({backend})" if backend else model)
    return " · ".join(parts)


def status_note(status: str, error: str) -> str:
    """The line shown under a reply that did not complete, or '' for a complete one."""
    if status == "partial":  # one instruction: the error says what happened, not what to do
        return f"⚠️ **{PARTIAL_NOTE}.** {error} What arrived is kept; press ↻ to try again."
    if status == "error":
        return f"⚠️ **No reply.** {error} Press ↻ to retry."
    return ""


def _plain(obj) -> dict:
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, dict):
        return dict(obj)
    return dict(vars(obj))


def export_markdown(conversation, messages: Sequence) -> str:
    """A readable Markdown transcript: title, model, then each turn with its figures.

    ``messages`` is the branch the chat shows; a turn with other versions says which one
    this is ("version 2 of 3"). The other versions are not exported."""
    conv = _plain(conversation)
    lines = [f"# {conv.get('title') or 'Chat'}", ""]
    meta = [f"Model: {conv.get('model') or 'unknown'}"]
    if conv.get("created_at"):
        meta.append(f"Started: {conv['created_at']}")
    lines += ["_" + " · ".join(meta) + "_", ""]
    if conv.get("system_prompt"):
        lines += ["## System", "", conv["system_prompt"], ""]
    for m in messages:
        m = _plain(m)
        who = "You" if m["role"] == "user" else "Assistant"
        versions = m.get("versions") or 1
        if versions > 1:
            who += f" (version {m.get('version') or 1} of {versions})"
        lines += [f"## {who}", ""]
        if m.get("thinking"):
            lines += ["<details><summary>Thinking</summary>", "", m["thinking"], "", "</details>", ""]
        lines += [m.get("content") or "", ""]
        for path in m.get("images") or []:
            lines += [f"![image]({path})", ""]
        if m["role"] == "assistant":
            note = status_note(m.get("status", "complete"), m.get("error") or "")
            figures = stats_line(ttft_ms=m.get("ttft_ms"), tokens_per_s=m.get("tokens_per_s"),
                                 completion_tokens=m.get("completion_tokens"),
                                 prompt_tokens=m.get("prompt_tokens"), total_ms=m.get("total_ms"),
                                 model=m.get("model") or "", backend=m.get("backend") or "",
                                 cost_usd=m.get("cost_usd"))
            for extra in (note, f"_{figures}_" if figures else ""):
                if extra:
                    lines += [extra, ""]
    return "\n".join(lines).rstrip() + "\n"


def export_json(conversation, messages: Sequence) -> str:
    """The conversation as JSON: every stored field of each message of the branch shown
    (with ``version``/``versions``; other versions are not exported)."""
    return json.dumps({"conversation": _plain(conversation),
                       "messages": [_plain(m) for m in messages]},
                      indent=2, ensure_ascii=False, default=str)
