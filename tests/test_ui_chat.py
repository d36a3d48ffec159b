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
    assert [r["role"] for r in rows] == ["user", "user", "assistant", "assistant", "assistant",
                                         "assistant"]
    assert rows[1]["content"] == {"path": "/d/a.png"}
    assert rows[2]["metadata"]["title"] == "Thinking" and rows[2]["content"] == "hmm"
    assert rows[3] == {"role": "assistant", "content": "a cat"}
    assert "20.0 tok/s" in rows[4]["metadata"]["title"]
    assert "act-retry seq-2" in rows[5]["content"]  # the answer's buttons: no turn to edit
    assert "title" not in rows[5]["metadata"]  # shown as a row, skipped as a box by readers
    assert index == [1, 1, 2, 2, 2, None]


def test_ui_chat_versions_show_a_pager_under_their_turn():
    turns = [Turn(seq=1, role="user", content="q", version=2, versions=2),
             Turn(seq=2, role="assistant", content="a", version=1, versions=3)]
    rows, index = chatbot_value(turns)
    assert "1/3" not in rows[1]["content"] and "2/2" in rows[1]["content"]
    assert rows[1]["role"] == "user" and index[1] is None
    assert "1/3" in rows[-1]["content"] and "act-prev seq-2" in rows[-1]["content"]
    # A reply still streaming has no buttons yet.
    rows, _ = chatbot_value([Turn(seq=1, role="assistant", content="", status="streaming",
                                  versions=2)])
    assert not any("turn-tools" in str(r["content"]) for r in rows)


@pytest.mark.parametrize("typed, shown", [
    ("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>"),
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)>"),
    ("<!-- note --> <?php x ?>", "&lt;!-- note --> &lt;?php x ?>"),
    ("**bold** and 1 < 2 > 0", "**bold** and 1 < 2 > 0"),
    ("see <https://example.org/a?b=1> or <me@example.org>",
     "see <https://example.org/a?b=1> or <me@example.org>"),
    ("`<b>` and ``a `<i>` b``", "`<b>` and ``a `<i>` b``"),
    ("```html\n<div>\n```\n<div>", "```html\n<div>\n```\n&lt;div>"),
    ("~~~\n<p>\n~~~", "~~~\n<p>\n~~~"),
    ("text\n\n    <pre>indented code</pre>", "text\n\n    <pre>indented code</pre>"),
    ("```\n<open fence while streaming", "```\n<open fence while streaming"),
    ("List<T> and Map<K, V>", "List&lt;T> and Map&lt;K, V>"),
])
def test_ui_chat_text_that_looks_like_html_is_shown_as_typed(typed, shown):
    from studio.ui.chat_values import shown_as_typed, typed_from_shown

    assert shown_as_typed(typed) == shown
    assert typed_from_shown(shown) == typed  # an edit starts from the shown text


def test_ui_chat_user_and_model_text_are_both_escaped():
    rows, _ = chatbot_value([Turn(seq=1, role="user", content="<b>hi</b>"),
                             Turn(seq=2, role="assistant", content="<i>yo</i>",
                                  thinking="<script>")])
    assert rows[0]["content"] == "&lt;b>hi&lt;/b>"
    assert rows[1]["content"] == "&lt;script>" and rows[2]["content"] == "&lt;i>yo&lt;/i>"


@pytest.mark.parametrize("value, expected", [
    ("retry 4 123", ("retry", 4)), ("prev 2 9", ("prev", 2)), ("next 10 1", ("next", 10)),
    ("delete 4 1", None), ("prev x 1", None), ("", None), (None, None)])
def test_ui_chat_turn_action_is_parsed_strictly(value, expected):
    from studio.ui.chat_values import parse_turn_action

    assert parse_turn_action(value) == expected


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
                                    settings=SimpleNamespace(stream_interval=0.01,
                                                             max_page_sessions=500)))
    fake_ollama.queue_reply("first answer")
    first = chat.send(None, "first question", model=LOCAL, user="owner")
    done(first)
    before = store.messages(first.chat_id)
    fill_disk(store)
    typed = "my long question " * 2000
    sess = {**new_session(), "chat_id": first.chat_id}
    with pytest.raises(gr.Error) as shown:
        list(page.on_send(typed, [], sess, LOCAL, "", False, 0.8, 0.9, 0, -1,
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
    from studio.ui.chat_sidebar import GROUP, MORE
    from tests.test_chat_service import make_service

    chat = make_service(store, tmp_path, None)
    friday = store.create_conversation("Friday", user="owner")
    store.add_message(friday.id, "user", "pizza night 🍕")
    store.create_conversation("Guest food", user="owner")
    store.create_conversation("Not yours 🍕", user="guest")
    page = ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=0.01,
                                                             max_page_sessions=500)))

    listing, shown = page.on_search(typed, request=None)

    chats = [label for label, value in listing["choices"]  # no headings (chat_sidebar.py)
             if not value.startswith((GROUP, MORE))]
    assert [label.split(" — ")[0] for label in chats] == titles
    assert (shown["value"], shown["visible"]) == (note, bool(note))


def test_ui_chat_paced_reply_updates_lead_with_the_first_token_and_repeat_little(
        store, tmp_path, fake_ollama):
    """/send at a model's pace: the first update carries the first token and shows Stop,
    and nothing that costs Gradio a rebuilt component (the window's buttons, the queue's
    chips, the sidebar); those come once, with the next update. In between, the session
    goes only when its rows changed, and there are far fewer updates than tokens. The
    rows are as Gradio sends them (the event skips postprocessing: chat_wire.py)."""
    from types import SimpleNamespace

    import gradio as gr

    from studio.clients.ollama import OllamaClient
    from studio.ui.chat_handlers import STOP_LABEL, ChatPage
    from studio.ui.chat_values import new_session
    from tests.fakes.ollama_server import make_tokens
    from tests.test_chat_service import LOCAL, make_service

    client = OllamaClient(fake_ollama.url, timeout=10)
    chat = make_service(store, tmp_path, client)
    page = ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=0.125,
                                                             max_page_sessions=500)))
    tokens = make_tokens(60)
    fake_ollama.queue_reply(tokens, delay=[0.0, 0.3] + [0.02] * 58)
    try:
        updates = list(page.on_send("hi", [], new_session(), LOCAL, "",
                                    False, 0.8, 0.9, 0, -1, 0, "auto"))
    finally:
        client.close()
    skip = gr.skip()
    first, last = updates[0], updates[-1]
    sess, _rows, _stats, stop, _conv, _last_open, queue, earlier, newer = first
    assert stop == gr.update(visible=True) and queue is None
    assert isinstance(earlier, str) and isinstance(newer, str)  # plain: nothing rebuilt
    assert sess["chat_id"]
    # The first update with words (the first one, unless the first token took longer than
    # the page's first wait: then the first says "waiting") holds the first token alone.
    def said(update) -> str:
        return "".join(block["text"] for block in update[1][-1]["content"])

    worded = next(i for i, u in enumerate(updates) if said(u))
    assert updates[worded][1][-1]["content"] == [{"type": "text", "text": "tok0 "}]
    extras = updates[worded + 1]
    assert all(isinstance(v, dict) for v in (extras[4], extras[6], extras[7], extras[8]))
    for update in updates[1:worded] + updates[worded + 2:-1]:
        assert update[0] == skip  # the same rows: the session is not sent again
        assert update[3] == STOP_LABEL and update[6] is None
        assert not any(isinstance(v, dict) for v in update[4:])
    assert last[0]["chat_id"] == sess["chat_id"] and last[3] == gr.update(visible=False)
    answer = [r for r in last[1] if r["role"] == "assistant" and not r.get("metadata")][-1]
    assert answer["content"] == [{"type": "text", "text": "".join(tokens)}]
    assert len(updates) <= len(tokens) // 4


def test_ui_chat_wire_rows_are_what_gradio_postprocessing_makes_of_them(tmp_path):
    """The events that stream replies skip Gradio's postprocessing (chat_wire.py): what they
    yield must be what postprocessing would have sent, text, figures, buttons and images."""
    import gradio as gr
    from PIL import Image

    from studio.ui.chat_wire import ChatWire

    picture = tmp_path / "cat.png"
    Image.new("RGB", (4, 4)).save(picture)
    turns = [Turn(seq=1, role="user", content="  look\n\tat <b>this</b>", images=(str(picture),)),
             Turn(seq=2, role="assistant", content="a cat", thinking="hmm", ttft_ms=100,
                  tokens_per_s=20.0, completion_tokens=3, model="llava", backend="ollama",
                  notices=("switched",))]
    rows, _ = chatbot_value(turns)
    assert ChatWire().rows(rows) == gr.Chatbot(render=False).postprocess(rows).model_dump()
    assert ChatWire().rows(rows)[0]["content"][0]["text"].startswith("look")
    assert ChatWire.text("  Generating with x…\n") == gr.Markdown(render=False).postprocess(
        "  Generating with x…\n")
