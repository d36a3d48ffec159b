"""The Chat tab's display logic as plain functions, and the app built without launching."""


import pytest

from studio.events import Usage
from studio.chat.replies import ReplySnapshot
from studio.chat.history import Turn, turn_with_snapshot
from studio.ui.chat_values import chatbot_value, collect_options


def test_ui_chat_rows_map_back_to_turns():
    turns = [Turn(seq=1, role="user", content="look", images=("/d/a.png",)),
             Turn(seq=2, role="assistant", content="a cat", thinking="hmm", ttft_ms=100,
                  tokens_per_s=20.0, completion_tokens=3, model="llava", backend="ollama")]
    rows, index = chatbot_value(turns)
    assert [r["role"] for r in rows] == ["user", "user", "assistant", "assistant", "assistant"]
    assert rows[1]["content"] == {"path": "/d/a.png"}
    assert rows[2]["metadata"]["title"] == "Thinking" and rows[2]["content"] == "hmm"
    assert rows[3] == {"role": "assistant", "content": "a cat"}
    assert "20.0 tok/s" in rows[4]["metadata"]["title"]
    assert index == [1, 1, 2, 2, 2]


def test_ui_chat_streaming_reply_has_no_figures_and_pending_thinking():
    rows, _ = chatbot_value([Turn(seq=1, role="assistant", content="", thinking="so",
                                  status="streaming")])
    assert rows[0]["metadata"]["status"] == "pending"
    assert rows[-1] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("status, marker", [("partial", "Reply cut off"), ("error", "No reply")])
def test_ui_chat_unfinished_reply_is_marked_with_retry_hint(status, marker):
    rows, _ = chatbot_value([Turn(seq=1, role="assistant", content="half" if status == "partial"
                                  else "", status=status, error="Ollama went away.")])
    answer = [r for r in rows if not r.get("metadata")][0]["content"]
    assert marker in answer and "Ollama went away." in answer and "↻" in answer
    if status == "partial":
        assert answer.startswith("half")


def test_ui_chat_notice_is_shown_before_the_answer():
    rows, _ = chatbot_value([Turn(seq=1, role="assistant", content="hi",
                                  notices=("Switched to x because y",))])
    assert rows[0]["metadata"]["title"] == "Note: Switched to x because y"


def test_ui_chat_snapshot_overlays_stored_turn():
    snap = ReplySnapshot(reply_id="r", conversation_id="c", message_id=1, model_id="ollama:m",
                         text="partial text", thinking="", notices=(), status="streaming",
                         error="", ttft_ms=12.0, elapsed_ms=50.0, usage=Usage(), backend="",
                         answered_by="m", version=3)
    turn = turn_with_snapshot(Turn(seq=2, role="assistant", content=""), snap)
    assert turn.content == "partial text" and turn.status == "streaming"
    assert turn.total_ms is None  # not known until the reply ends


@pytest.mark.parametrize("args, expected", [
    ((0.7, 0.9, 0, -1, 0, "auto"), dict(temperature=0.7, top_p=0.9, num_ctx=None, seed=None,
                                       max_tokens=None, think=None)),
    ((0.2, 0.5, 8192, 42, 256, "on"), dict(temperature=0.2, top_p=0.5, num_ctx=8192, seed=42,
                                          max_tokens=256, think=True)),
    ((1.0, 1.0, None, None, None, "off"), dict(temperature=1.0, top_p=1.0, num_ctx=None,
                                              seed=None, max_tokens=None, think=False)),
])
def test_ui_chat_collect_options(args, expected):
    assert vars(collect_options(*args)) == {**expected, "stop": None, "response_format": None,
                                            "tools": None, "tool_choice": None}


def test_ui_app_builds_without_launching(settings, tmp_path):
    from studio.services import build_services
    from studio.ui.app import build_app, launch_kwargs

    services = build_services(settings)
    demo = build_app(services)
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"send", "stop", "search", "open_conversation"} <= names
    kwargs = launch_kwargs(services)
    assert kwargs["run_history"] is False and kwargs["server_port"] == 8189
    # Gradio keeps each page's state until this many pages (10,000 by default: gigabytes).
    assert kwargs["state_session_capacity"] == settings.max_page_sessions == 500
    # Never the data folder wholesale (it holds the database): only the file folders, which
    # the front door serves to their owners, and the database is blocked outright.
    assert str(settings.data_path) not in kwargs["allowed_paths"]
    assert str(settings.data_path / "outputs") in kwargs["allowed_paths"]
    assert str(settings.db_path) in kwargs["blocked_paths"]


def test_ui_chat_send_on_a_full_disk_says_so_and_keeps_the_chat(store, tmp_path, fake_ollama):
    from types import SimpleNamespace

    import gradio as gr

    from studio.clients.ollama import OllamaClient
    from studio.ui.chat_handlers import ChatPage
    from studio.ui.chat_values import new_session
    from tests.test_chat_service import LOCAL, done, make_service
    from tests.test_store import fill_disk

    chat = make_service(store, tmp_path, OllamaClient(fake_ollama.url, timeout=10),
                        max_chars=100_000)
    page = ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=0.01)))
    fake_ollama.queue_reply("first answer")
    first = chat.send(None, "first question", model=LOCAL, user="owner")
    done(first)
    before = store.messages(first.chat_id)
    fill_disk(store)
    typed = "my long question " * 2000
    sess = {**new_session(), "chat_id": first.chat_id}
    with pytest.raises(gr.Error) as shown:
        list(page.on_send({"text": typed, "files": []}, sess, LOCAL, "", False, 0.8, 0.9, 0, -1,
                          0, "auto"))
    assert shown.value.message.startswith("The disk holding the studio's data")
    assert "still on the page" in shown.value.message
    assert store.messages(first.chat_id) == before


@pytest.mark.parametrize("typed, titles, note", [
    ("🍕", ["Friday"], ""),
    ("🦄", [], "No chats match “🦄”. Try fewer words, or the start of a word."),
    ("", ["Guest food", "Friday"], ""),
])
def test_ui_chat_search_finds_emoji_and_says_when_nothing_matches(store, tmp_path, typed,
                                                                   titles, note):
    from types import SimpleNamespace

    from studio.ui.chat_handlers import ChatPage
    from tests.test_chat_service import make_service

    chat = make_service(store, tmp_path, None)
    friday = store.create_conversation("Friday", user="owner")
    store.add_message(friday.id, "user", "pizza night 🍕")
    store.create_conversation("Guest food", user="owner")
    store.create_conversation("Not yours 🍕", user="guest")
    page = ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=0.01)))

    listing, shown = page.on_search(typed, request=None)

    assert [label.split(" — ")[0] for label, _ in listing["choices"]] == titles
    assert (shown["value"], shown["visible"]) == (note, bool(note))
