"""Pure conversation helpers: titles, backend messages, stats lines, exports."""

import json
from types import SimpleNamespace

import pytest

from studio.chat.conversations import backend_messages, export_json, export_markdown, stats_line, status_note, title_from


def msg(role, content, **kw):
    base = dict(role=role, content=content, images=[], thinking="", status="complete", error="",
                model="", backend="", ttft_ms=None, tokens_per_s=None, prompt_tokens=None,
                completion_tokens=None, total_ms=None, cost_usd=None)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("text, title", [
    ("hello", "hello"),
    ("   spaced    out  ", "spaced out"),
    ("first line\nsecond", "first line"),
    ("", "New chat"),
    ("word " * 30, ("word " * 12).strip() + "…"),
])
def test_conversations_title_from(text, title):
    assert title_from(text) == title


def test_conversations_backend_messages_order_system_and_images():
    history = [msg("user", "look", images=["a.png"]), msg("assistant", "a cat"),
               msg("assistant", "", status="error"), msg("user", "and now?")]
    out = backend_messages("Be brief.", history, read_image=lambda p: b"IMG:" + p.encode())
    assert [(m.role, m.content) for m in out] == [
        ("system", "Be brief."), ("user", "look"), ("assistant", "a cat"), ("user", "and now?")]
    assert out[1].images == (b"IMG:a.png",)


def test_conversations_stats_line_leaves_out_unknown_parts():
    assert stats_line(ttft_ms=None, tokens_per_s=None, completion_tokens=5) == "5 tokens"
    line = stats_line(ttft_ms=100, tokens_per_s=10, completion_tokens=5, model="m", backend="ollama",
                      cost_usd=0)
    assert line == "0.10 s to first token · 10.0 tok/s · 5 tokens · free · m (ollama)"


@pytest.mark.parametrize("status, expected", [
    ("complete", ""), ("partial", "Reply cut off"), ("error", "No reply")])
def test_conversations_status_note(status, expected):
    note = status_note(status, "Ollama went away.")
    assert (expected in note) if expected else note == ""
    assert note.count("↻") == (1 if expected else 0)  # one way to retry, no second one


def test_conversations_export_markdown_has_turns_and_partial_marker():
    conv = {"title": "Bread", "model": "llama3.2", "system_prompt": "Be kind."}
    text = export_markdown(conv, [msg("user", "How?"), msg("assistant", "Knead", status="partial",
                                                           error="Cut.", completion_tokens=3)])
    assert text.startswith("# Bread")
    assert "## You\n\nHow?" in text and "## Assistant\n\nKnead" in text
    assert "Reply cut off" in text and "3 tokens" in text


def test_conversations_export_json_round_trips():
    conv = {"title": "T", "model": "m"}
    data = json.loads(export_json(conv, [{"role": "user", "content": "ü"}]))
    assert data["conversation"]["title"] == "T" and data["messages"][0]["content"] == "ü"
