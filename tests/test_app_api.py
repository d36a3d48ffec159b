"""Integration: a real `python app.py` process driven through gradio_client, with the fake
Ollama behind it and the real SQLite file checked afterwards."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlite_utils
from gradio_client import Client

from studio.ui.chat_handlers import EMPTY_MESSAGE
from tests.fakes.ollama_server import make_tokens

MODEL = "ollama:llama3.2:latest"


def send_args(text: str, model: str = MODEL, incognito: bool = False):
    return (text, [], model, "", incognito, 0.8, 0.9, 0, -1, 0, "auto")


@pytest.fixture
def client(studio):
    c = Client(studio.url, verbose=False, analytics_enabled=False)
    yield c
    c.close()


def answer_of(chatbot: list[dict]) -> str:
    """The assistant's answer text in the chatbot value (not the thinking or figures boxes)."""
    answers = [m for m in chatbot if m["role"] == "assistant" and not m.get("metadata")]
    content = answers[-1]["content"] if answers else ""
    if isinstance(content, list):
        content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content


def db(studio) -> sqlite_utils.Database:
    return sqlite_utils.Database(studio.data_dir / "studio.db")


def stored_reply(studio, marker: str) -> dict:
    rows = list(db(studio).query(
        "select a.* from messages u join messages a on a.conversation_id = u.conversation_id "
        "and a.seq = u.seq + 1 where u.role = 'user' and u.content like ?", [f"%{marker}%"]))
    assert rows, f"no stored reply for {marker}"
    return rows[-1]


def test_app_send_streams_and_stores_reply(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply(["The ", "answer ", "is ", "42."])
    job = client.submit(*send_args(f"question {marker}"), api_name="/send")
    final = job.result(timeout=30)
    assert answer_of(final[0]) == "The answer is 42."
    row = stored_reply(studio, marker)
    assert row["status"] == "complete" and row["content"] == "The answer is 42."
    assert row["completion_tokens"] == 4 and row["tokens_per_s"] > 0
    assert row["ttft_ms"] is not None and row["backend"] == "ollama"


def test_app_cut_stream_keeps_partial_marked_partial(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply(["kept ", "text ", "lost ", "text"], cut_after=2)
    final = client.submit(*send_args(f"cut {marker}"), api_name="/send").result(timeout=30)
    shown = answer_of(final[0])
    assert shown.startswith("kept text") and "Reply cut off" in shown
    row = stored_reply(studio, marker)
    assert row["status"] == "partial" and row["content"] == "kept text "
    assert "dropped" in row["error"]


def test_app_missing_model_says_how_to_pull(studio, client):
    final = client.submit(*send_args("hello ghost", model="ollama:ghost:latest"),
                          api_name="/send").result(timeout=30)
    shown = answer_of(final[0])
    assert "ollama pull ghost:latest" in shown and "No reply" in shown
    assert stored_reply(studio, "hello ghost")["status"] == "error"


@pytest.mark.parametrize("call", ["predict", "submit"])
def test_app_empty_message_answers_with_the_chat_unchanged_and_a_warning(studio, client, call):
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply("first answer")
    shown = client.submit(*send_args(f"first {marker}"), api_name="/send").result(timeout=30)[0]
    before = db(studio)["messages"].count
    if call == "predict":
        result = client.predict(*send_args("   "), api_name="/send")
    else:
        result = client.submit(*send_args(" \n\t "), api_name="/send").result(timeout=30)
    chatbot, stats, _conv, last_open = result[:4]  # then the page's queue
    assert chatbot == shown and answer_of(chatbot) == "first answer"
    assert stats == EMPTY_MESSAGE
    assert last_open == stored_reply(studio, marker)["conversation_id"]
    assert db(studio)["messages"].count == before


def test_app_large_message_is_accepted(studio, client):
    studio.ollama.queue_reply("got it")
    big = "x" * 1_000_000
    final = client.submit(*send_args(big), api_name="/send").result(timeout=60)
    assert answer_of(final[0]) == "got it"


def test_app_two_chats_at_once_both_complete_and_are_saved(studio):
    markers = [uuid.uuid4().hex[:8] for _ in range(2)]
    for _ in markers:
        studio.ollama.queue_reply(make_tokens(60), delay=0.05)
    seen_before = len(studio.ollama.requests_to("/api/chat"))
    results, errors = {}, []

    def chat(marker):
        c = Client(studio.url, verbose=False, analytics_enabled=False)
        try:
            results[marker] = c.submit(*send_args(f"parallel {marker}"),
                                       api_name="/send").result(timeout=60)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=chat, args=(m,)) for m in markers]
    for t in threads:
        t.start()
    # Both requests reach Ollama while the first is still streaming: nobody waits in line.
    studio.ollama.wait_for_request("/api/chat", timeout=20, count=seen_before + 2)
    assert not results
    for t in threads:
        t.join(60)
    assert not errors
    for m in markers:
        assert answer_of(results[m][0]) == "".join(make_tokens(60))
        assert stored_reply(studio, m)["status"] == "complete"


def test_app_stop_freezes_reply_as_partial(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply(make_tokens(400), delay=0.02)
    job = client.submit(*send_args(f"stop me {marker}"), api_name="/send")
    for update in job:
        if answer_of(update[0] if isinstance(update[0], list) else []).count("tok") >= 3:
            break
    client.predict(api_name="/stop")
    final = job.result(timeout=30)
    shown = answer_of(final[0])
    assert "Stopped by you" in shown
    row = stored_reply(studio, marker)
    assert row["status"] == "partial" and 3 <= row["content"].count("tok") < 400


def test_app_search_finds_conversation_with_fts_syntax_in_query(studio, client):
    marker = uuid.uuid4().hex[:10]
    client.submit(*send_args(f"find {marker} later"), api_name="/send").result(timeout=30)
    found, note = client.predict(f'"{marker}*', api_name="/search")  # the list, the note
    labels = [label for label, _conv_id in found["choices"]]
    assert len(labels) == 1 and marker in labels[0]
    assert note["visible"] is False
    assert client.predict('"', api_name="/search")[0]["__type__"] == "update"  # no error


def png_file(tmp_path, name="cat.png"):
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def test_app_image_goes_to_vision_model_as_base64(studio, client, tmp_path):
    from gradio_client import handle_file

    studio.ollama.queue_reply("A red square.")
    path = png_file(tmp_path)
    final = client.submit("what is this?", [handle_file(str(path))],
                          "ollama:llava:latest", "", False, 0.8, 0.9, 0, -1, 0, "auto",
                          api_name="/send").result(timeout=30)
    assert answer_of(final[0]) == "A red square."
    sent = studio.ollama.requests_to("/api/chat")[-1].json["messages"][-1]
    import base64
    assert base64.b64decode(sent["images"][0]) == path.read_bytes()
    # The picture stays with the conversation in the studio's data dir.
    user_rows = [m for m in final[0] if m["role"] == "user" and not isinstance(m["content"], str)]
    assert user_rows, "the attached image is shown in the chat"


def test_app_image_to_text_only_model_is_refused_before_sending(studio, client, tmp_path):
    from gradio_client import handle_file

    before = len(studio.ollama.requests_to("/api/chat"))
    with pytest.raises(Exception, match="can't read images"):
        client.predict("see?", [handle_file(str(png_file(tmp_path)))],
                       MODEL, "", False, 0.8, 0.9, 0, -1, 0, "auto", api_name="/send")
    assert len(studio.ollama.requests_to("/api/chat")) == before


def test_app_refusal_is_one_log_line_without_traceback(studio, client, tmp_path):
    from gradio_client import handle_file

    start = len(studio.log())
    with pytest.raises(Exception, match="can't read images"):
        client.predict("log?", [handle_file(str(png_file(tmp_path)))],
                       MODEL, "", False, 0.8, 0.9, 0, -1, 0, "auto", api_name="/send")
    written = studio.log()[start:]
    assert [line for line in written.splitlines() if "can't read images" in line] == [
        line for line in written.splitlines() if "refused in on_send" in line]
    assert "refused in on_send" in written and "Traceback" not in written


def test_app_incognito_chat_is_never_stored(studio, client):
    marker = uuid.uuid4().hex
    studio.ollama.queue_reply("secret reply")
    final = client.submit(*send_args(f"incognito {marker}", incognito=True),
                          api_name="/send").result(timeout=30)
    assert answer_of(final[0]) == "secret reply"
    rows = list(db(studio).query("select id from messages where content like ?", [f"%{marker}%"]))
    assert rows == []


def exported(update) -> str:
    """The downloaded file of an export: a path, or the value of a visible-file update."""
    value = update.get("value", update) if isinstance(update, dict) else update
    return value if isinstance(value, str) else value["path"]


def test_app_export_markdown_and_json_of_open_chat(studio, client):
    import json
    marker = uuid.uuid4().hex[:8]
    studio.ollama.queue_reply(["Exported ", "answer."])
    client.submit(*send_args(f"export {marker}"), api_name="/send").result(timeout=30)
    text = open(exported(client.predict(api_name="/export_markdown")), encoding="utf-8").read()
    assert text.startswith(f"# export {marker}") and "## Assistant\n\nExported answer." in text
    data = json.load(open(exported(client.predict(api_name="/export_json")), encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["completion_tokens"] == 2
