"""Cloud chat through a real `python app.py`: the fake OpenRouter and fake Ollama behind it,
gradio_client in front, the SQLite file checked afterwards. Streaming, stop, history, cost,
every error, configured fallbacks both ways, and the key kept out of page, log and errors."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import gradio as gr
import httpx
import pytest
import sqlite_utils
from gradio_client import Client, handle_file

from studio.config import Settings
from studio.errors import ConfigError
from studio.model_id import ModelId
from tests.conftest import running_fake_ollama, start_studio, stop_studio
from tests.fakes.ollama_server import make_tokens
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter

GPT = "openrouter:openai/gpt-4o-mini"  # vision, no fallback: errors show as they are
CLAUDE = "openrouter:anthropic/claude-3.5-sonnet"  # falls back to the local model
FREE = "openrouter:meta-llama/llama-3.2-3b-instruct:free"  # text only
LOCAL = "ollama:llama3.2:latest"
MISSING = "ollama:gemma3:latest"  # not installed; falls back to GPT
FALLBACKS = f"{MISSING}={GPT};{CLAUDE}={LOCAL}"
TIMEOUT_S = 3


def slow_fake_openrouter() -> FakeOpenRouter:
    """The fake OpenRouter, plus ``token_delay``: seconds before each streamed chunk, so a
    reply takes a while (the fake itself only delays the start)."""
    fake = FakeOpenRouter().start()
    fake.token_delay = 0.0
    base = fake._server.RequestHandlerClass

    def _event(self, payload):
        if fake.token_delay and payload.get("choices"):
            fake._stopping.wait(fake.token_delay)
        base._event(self, payload)

    fake._server.RequestHandlerClass = type("SlowHandler", (base,), {"_event": _event})
    return fake


@pytest.fixture(scope="module")
def backends():
    ollama, openrouter = running_fake_ollama(), slow_fake_openrouter()
    yield ollama, openrouter
    openrouter.stop()
    ollama.stop()


@pytest.fixture(scope="module")
def studio(tmp_path_factory, backends):
    ollama, openrouter = backends
    running = start_studio(tmp_path_factory.mktemp("cloud"), ollama.url, {
        "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": openrouter.url,
        "STUDIO_FALLBACKS": FALLBACKS, "STUDIO_REQUEST_TIMEOUT": str(TIMEOUT_S)})
    running.ollama, running.openrouter = ollama, openrouter
    yield running
    stop_studio(running)


@pytest.fixture
def client(studio):
    studio.openrouter.token_delay = 0.0
    c = Client(studio.url, verbose=False, analytics_enabled=False)
    yield c
    c.close()


def send_args(text: str, model: str, files=()):
    return (text, list(files), model, "", False, 0.8, 0.9, 0, -1, 0, "auto")


def answer_of(chatbot) -> str:
    answers = [m for m in chatbot or [] if m["role"] == "assistant" and not m.get("metadata")]
    content = answers[-1]["content"] if answers else ""
    if isinstance(content, list):
        content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content


def boxes_of(chatbot) -> list[str]:
    """Titles of the collapsed boxes: notices and the figures line."""
    return [m["metadata"]["title"] for m in chatbot or []
            if m["role"] == "assistant" and m.get("metadata") and m["metadata"].get("title")]


def stored_reply(studio, marker: str) -> dict:
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    rows = list(db.query(
        "select a.* from messages u join messages a on a.conversation_id = u.conversation_id "
        "and a.seq = u.seq + 1 where u.role = 'user' and u.content like ?", [f"%{marker}%"]))
    assert rows, f"no stored reply for {marker}"
    row = dict(rows[-1])
    row["meta"] = json.loads(row["meta"])
    return row


def chat(client, text: str, model: str, files=()):
    return client.submit(*send_args(text, model, files), api_name="/send").result(timeout=60)


# -- settings ------------------------------------------------------------------------------


def test_cloud_chat_fallbacks_setting_is_parsed_into_chains():
    settings = Settings.from_env({"STUDIO_FALLBACKS": FALLBACKS + " ; "}, dotenv_path=None)
    assert settings.fallback_chains == {MISSING: (GPT,), CLAUDE: (LOCAL,)}
    assert Settings.from_env({}, dotenv_path=None).fallback_chains == {}


@pytest.mark.parametrize("value, message", [
    ("ollama:llama3.2", "entry 'ollama:llama3.2' must look like"),
    (f"{LOCAL}=", "must look like"),
    (f"{LOCAL}={GPT}={LOCAL}", "must look like"),
    (f"{LOCAL}=gpt-4o", "'gpt-4o' is not a model id"),
    (f"llama3.2={GPT}", "'llama3.2' is not a model id"),
    (f"{LOCAL}={GPT};{LOCAL}={FREE}", "names 'ollama:llama3.2:latest' twice"),
])
def test_cloud_chat_bad_fallbacks_setting_is_refused_with_a_sentence(value, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"STUDIO_FALLBACKS": value}, dotenv_path=None)


def test_cloud_chat_app_with_bad_fallbacks_does_not_start(tmp_path, backends):
    with pytest.raises(RuntimeError) as failure:
        start_studio(tmp_path, backends[0].url, {"STUDIO_FALLBACKS": "llama3.2"})
    assert "can't start: STUDIO_FALLBACKS entry 'llama3.2' must look like" in str(failure.value)


def test_cloud_chat_services_wire_fallbacks_and_catalog_prices(tmp_path, backends):
    from studio.services import build_services

    ollama, openrouter = backends
    services = build_services(Settings.from_env({
        "STUDIO_DATA_DIR": str(tmp_path), "OLLAMA_HOST": ollama.url,
        "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": openrouter.url,
        "STUDIO_FALLBACKS": FALLBACKS}, dotenv_path=None))
    assert services.router.fallbacks == {MISSING: [GPT], CLAUDE: [LOCAL]}
    assert services.router.prices(GPT).completion_per_million == Decimal("0.6")
    assert services.models.supports_images(ModelId.parse(GPT))
    assert not services.models.supports_images(ModelId.parse(FREE))


def test_cloud_chat_picker_lists_local_then_cloud_models_with_prices(tmp_path, backends):
    from studio.services import build_services
    from studio.ui import chat

    ollama, openrouter = backends
    services = build_services(Settings.from_env({
        "STUDIO_DATA_DIR": str(tmp_path), "OLLAMA_HOST": ollama.url,
        "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": openrouter.url},
        dotenv_path=None))
    with gr.Blocks():
        parts = chat.render(services, lambda block_fns: None)
    # A page load asks no backend: a fresh studio has no list yet. The check chained after
    # it (app.py's on_models) asks; later page loads show what it found.
    assert parts.load_fn("", chat.new_session())[6]["choices"] == []
    services.models.picker()
    models = parts.load_fn("", chat.new_session())[6]
    choices = dict((value, label) for label, value in models["choices"])
    values = list(choices)
    assert values[:2] == [LOCAL, "ollama:llava:latest"] and models["value"] == LOCAL
    assert choices[LOCAL].startswith("Local · llama3.2:latest")
    assert choices[GPT] == ("Cloud · OpenAI: GPT-4o-mini · $0.15/M in · $0.60/M out · "
                            "128K ctx · images")
    assert choices[FREE] == "Cloud · Meta: Llama 3.2 3B Instruct (free) · free · 131K ctx"
    assert all(choices[v].startswith("Cloud · ") for v in values[2:])


# -- chat through the running app ----------------------------------------------------------


def test_cloud_chat_streams_and_stores_reply_with_cost(studio, client):
    marker = uuid.uuid4().hex[:8]
    tokens = make_tokens(40)
    studio.openrouter.token_delay = 0.03
    studio.openrouter.queue_reply(tokens, cost=0.0123, prompt_tokens=12)
    job = client.submit(*send_args(f"stream {marker}", GPT), api_name="/send")
    seen = [answer_of(update[0]) for update in job if isinstance(update[0], list)]
    final = job.result(timeout=60)
    full = "".join(tokens)
    assert answer_of(final[0]) == full
    assert any(text and text != full and full.startswith(text) for text in seen), \
        "no update showed part of the reply while it streamed"
    assert "$0.0123" in " ".join(boxes_of(final[0]))
    row = stored_reply(studio, marker)
    assert (row["status"], row["backend"], row["model"], row["content"]) == (
        "complete", "openrouter", "openai/gpt-4o-mini", full)
    assert (row["cost_usd"], row["prompt_tokens"], row["completion_tokens"]) == (0.0123, 12, 40)
    assert row["ttft_ms"] is not None and row["tokens_per_s"] > 0
    request = studio.openrouter.last_chat
    assert request.json["model"] == "openai/gpt-4o-mini" and request.json["stream"] is True
    assert request.json["messages"][-1] == {"role": "user", "content": f"stream {marker}"}
    assert request.headers["x-title"] == "Hephaestus Studio"
    assert request.headers["http-referer"].startswith("https://")


def test_cloud_chat_stop_freezes_reply_as_partial(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.openrouter.token_delay = 0.03
    studio.openrouter.queue_reply(make_tokens(300))
    job = client.submit(*send_args(f"stop me {marker}", GPT), api_name="/send")
    for update in job:
        if answer_of(update[0] if isinstance(update[0], list) else []).count("tok") >= 3:
            break
    client.predict(api_name="/stop")
    final = job.result(timeout=60)
    assert "Stopped by you" in answer_of(final[0])
    row = stored_reply(studio, marker)
    assert row["status"] == "partial" and 3 <= row["content"].count("tok") < 300


def test_cloud_chat_history_reopens_with_the_cloud_model(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.openrouter.queue_reply(["Paris."], cost=0.0042)
    first = chat(client, f"capital of France {marker}", GPT)
    conv_id = next(value for label, value in first[2]["choices"] if marker in label)
    studio.openrouter.queue_reply(["Berlin."], cost=0.0042)
    second = chat(client, "and Germany?", GPT)
    assert answer_of(second[0]) == "Berlin."
    # The second request carried the history of the first exchange.
    assert [m["content"] for m in studio.openrouter.last_chat.json["messages"]] == [
        f"capital of France {marker}", "Paris.", "and Germany?"]
    fresh = Client(studio.url, verbose=False, analytics_enabled=False)
    try:
        opened = fresh.predict(conv_id, api_name="/open_conversation")
    finally:
        fresh.close()
    chatbot = opened[0]
    assert GPT in opened  # the model picker is set back to the cloud model
    assert [answer_of([m]) for m in chatbot if not m.get("metadata")][-1] == "Berlin."
    assert any("$0.0042" in title and "openai/gpt-4o-mini" in title for title in boxes_of(chatbot))


def test_cloud_chat_vision_model_gets_the_image_as_a_data_url(studio, client, tmp_path):
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    studio.openrouter.queue_reply(["A red square."])
    final = chat(client, "what is this?", GPT, [handle_file(str(path))])
    assert answer_of(final[0]) == "A red square."
    parts = studio.openrouter.last_chat.json["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_cloud_chat_text_only_model_refuses_an_image_before_sending(studio, client, tmp_path):
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    before = len(studio.openrouter.chat_requests)
    with pytest.raises(Exception, match="can't read images.*marked 'images'"):
        chat(client, "what is this?", FREE, [handle_file(str(path))])
    assert len(studio.openrouter.chat_requests) == before


@pytest.mark.parametrize("replies, status, phrases", [
    ([dict(status=401)], "error",
     ["OpenRouter rejected the API key (401: User not found.)", "Check OPENROUTER_API_KEY."]),
    ([dict(status=402)], "error",
     ["OpenRouter account is out of credit", "Add credits at https://openrouter.ai/settings/credits"]),
    ([dict(status=429, retry_after=0)] * 3, "error",
     ["OpenRouter is rate limiting requests for 'openai/gpt-4o-mini'", "Wait a moment"]),
    ([dict(status=503, retry_after=0)] * 3, "error",
     ["OpenRouter's provider failed for 'openai/gpt-4o-mini' (503", "Try again in a moment"]),
    ([dict(delay=TIMEOUT_S + 3)], "error",
     ["OpenRouter at http://127.0.0.1", f"did not answer within {TIMEOUT_S} s",
      "raise STUDIO_REQUEST_TIMEOUT"]),
    ([dict(tokens=["kept ", "text ", "lost"], cut_after=2)], "partial",
     ["Reply cut off", "What arrived is kept; press ↻ to try again."]),
    ([dict(tokens=["kept ", "text "], error_mid_stream="Provider disconnected")], "partial",
     ["stopped the reply from 'openai/gpt-4o-mini' part way: Provider disconnected"]),
], ids=["401", "402", "429", "5xx", "timeout", "cut", "error-chunk"])
def test_cloud_chat_errors_say_what_failed_and_what_to_do(studio, client, replies, status,
                                                          phrases):
    marker = uuid.uuid4().hex[:8]
    before = len(studio.openrouter.chat_requests)
    for reply in replies:
        studio.openrouter.queue_reply(**{"tokens": ["never shown"], **reply})
    shown = answer_of(chat(client, f"fail {marker}", GPT)[0])
    assert len(studio.openrouter.chat_requests) == before + len(replies)  # 429/5xx retried
    row = stored_reply(studio, marker)
    assert row["status"] == status and row["backend"] == "openrouter"
    for phrase in phrases:
        assert phrase in shown
    if status == "partial":
        assert row["content"] == "kept text " and shown.startswith("kept text")
    assert DEFAULT_KEY not in shown + row["error"]


def test_cloud_chat_without_key_says_how_to_set_it(tmp_path, backends):
    running = start_studio(tmp_path, backends[0].url)  # no OPENROUTER_API_KEY
    try:
        c = Client(running.url, verbose=False, analytics_enabled=False)
        try:
            shown = answer_of(c.submit(*send_args("hello cloud", GPT),
                                       api_name="/send").result(timeout=60)[0])
        finally:
            c.close()
        assert "No OpenRouter key. Set OPENROUTER_API_KEY" in shown
        assert stored_reply(running, "hello cloud")["status"] == "error"
    finally:
        stop_studio(running)


# -- configured fallbacks --------------------------------------------------------------------


def test_cloud_chat_missing_local_model_falls_back_to_the_cloud(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.openrouter.queue_reply(["From ", "the ", "cloud."], cost=0.002)
    final = chat(client, f"local please {marker}", MISSING)
    assert answer_of(final[0]) == "From the cloud."
    notice = next(t for t in boxes_of(final[0]) if t.startswith("Note: "))
    assert notice.startswith(f"Note: Switched to {GPT} because {MISSING} couldn't answer: "
                             "Model 'gemma3:latest' is not installed")
    row = stored_reply(studio, marker)
    assert (row["status"], row["backend"], row["model"]) == (
        "complete", "openrouter", "openai/gpt-4o-mini")
    assert row["meta"]["requested"] == MISSING
    assert "'gemma3:latest' is not installed" in row["meta"]["fallback_reason"]
    assert row["meta"]["notices"] == [notice.removeprefix("Note: ")]
    assert row["cost_usd"] == 0.002


@pytest.mark.parametrize("replies, reason", [
    ([dict(status=402)], "OpenRouter account is out of credit"),
    ([dict(status=502, retry_after=0)] * 3, "OpenRouter's provider failed"),
], ids=["out-of-credit", "provider-down"])
def test_cloud_chat_failing_cloud_model_falls_back_to_the_local_one(studio, client, replies,
                                                                    reason):
    marker = uuid.uuid4().hex[:8]
    for reply in replies:
        studio.openrouter.queue_reply(**reply)
    studio.ollama.queue_reply(["Local ", "answer."])
    final = chat(client, f"cloud please {marker}", CLAUDE)
    assert answer_of(final[0]) == "Local answer."
    assert any(t.startswith(f"Note: Switched to {LOCAL} because {CLAUDE} couldn't answer: "
                            + reason) for t in boxes_of(final[0]))
    row = stored_reply(studio, marker)
    assert (row["status"], row["backend"], row["model"]) == ("complete", "ollama",
                                                             "llama3.2:latest")
    assert row["meta"]["requested"] == CLAUDE
    assert row["meta"]["fallback_reason"].startswith(reason)


def test_cloud_chat_no_fallback_after_the_first_token(studio, client):
    marker = uuid.uuid4().hex[:8]
    studio.openrouter.queue_reply(["half ", "a ", "reply"], cut_after=2)
    before = len(studio.ollama.requests_to("/api/chat"))
    chat(client, f"cut then what {marker}", CLAUDE)
    row = stored_reply(studio, marker)
    assert row["status"] == "partial" and row["content"] == "half a "
    assert len(studio.ollama.requests_to("/api/chat")) == before  # no silent restart


# -- the key stays secret (runs last: every error above has been logged by then) ----------------


def test_cloud_chat_key_never_reaches_page_config_api_or_log(studio):
    for path in ("", "config", "gradio_api/info"):
        assert DEFAULT_KEY not in httpx.get(studio.url + path, timeout=10).text
    log = studio.log()  # logging flushes every record
    assert "cloud models from OpenRouter" in log  # the log did see the cloud traffic
    assert DEFAULT_KEY not in log
    db = sqlite_utils.Database(studio.data_dir / "studio.db")
    assert not [r for r in db.query("select error, meta from messages")
                if DEFAULT_KEY in (r["error"] or "") + (r["meta"] or "")]


def test_cloud_chat_shows_prompt_cost_estimate_before_sending(client):
    hint = client.predict("x" * 40_000, "openrouter:openai/gpt-4o-mini",
                          500, api_name="/cost_estimate")
    assert hint.startswith("≈ $") and "to send about 10,0" in hint and "500-token reply" in hint
    local = client.predict("hi", "ollama:llama3.2:latest", 0,
                           api_name="/cost_estimate")
    assert local == ""
