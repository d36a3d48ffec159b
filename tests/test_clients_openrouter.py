import base64
import email.utils
import logging
import socket
import time

import openai
import pytest

from studio.clients import openrouter
from studio.clients.openrouter import (BadApiKey, NoApiKey, OpenRouterClient, OutOfCredit,
                                       ProviderError, RateLimited, build_chat_request,
                                       parse_retry_after)
from studio.errors import (BackendRejected, BackendUnavailable, ModelNotFound, StreamInterrupted,
                           StudioError)
from studio.events import (ChatDelta, ChatDone, ChatGeneration, ChatMessage, ChatOptions,
                           ChatThinking)
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter
from tests.streams import collect, text_of

MODEL = "openai/gpt-4o-mini"
HELLO = [ChatMessage("user", "Say hello")]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 8


@pytest.fixture
def client(fake_openrouter):
    return OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, referer="https://studio.test",
                            title="Hephaestus Studio", timeout=5)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- streaming -------------------------------------------------------------------------------


def test_chat_stream_yields_deltas_then_done(client, fake_openrouter):
    fake_openrouter.queue_reply(["Hel", "lo", "!"], cost=0.0000042, prompt_tokens=12)
    events = list(client.chat_stream(MODEL, HELLO))
    assert text_of(events) == "Hello!"
    done = events[-1]
    assert isinstance(done, ChatDone)
    assert (done.backend, done.model) == ("openrouter", MODEL)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (12, 3)
    assert done.usage.cost_usd == pytest.approx(0.0000042)
    assert done.usage.cost_is_estimate is False
    assert done.usage.done_reason == "stop"
    # OpenRouter's id for the reply comes first (and again with the usage), so what a
    # cut-off reply cost can be asked for by it.
    assert events[0] == ChatGeneration(done.usage.generation_id)
    assert done.usage.generation_id in fake_openrouter.generations


def test_generation_cost_is_what_openrouter_billed_or_none_while_unknown(client,
                                                                         fake_openrouter):
    fake_openrouter.queue_reply(["a", "b", "c"], cost=0.0031)
    fake_openrouter.generation_misses = 1
    done = list(client.chat_stream(MODEL, HELLO))[-1]

    assert client.generation_cost(done.usage.generation_id) is None  # not stored yet: 404
    assert client.generation_cost(done.usage.generation_id) == 0.0031
    assert client.generation_cost("gen-nobody") is None
    lookup = fake_openrouter.requests[-1]
    assert (lookup.method, lookup.path, lookup.query) == (
        "GET", "/api/v1/generation", {"id": ["gen-nobody"]})
    assert lookup.headers["authorization"] == f"Bearer {DEFAULT_KEY}"


def test_generation_cost_of_a_cut_stream_counts_what_was_sent(client, fake_openrouter):
    fake_openrouter.queue_reply(["w"] * 10, cut_after=4)
    events = []
    with pytest.raises(StreamInterrupted):
        for event in client.chat_stream(MODEL, HELLO):
            events.append(event)

    generation = events[0]
    assert isinstance(generation, ChatGeneration)
    # 10 prompt tokens x $0.15/M + 4 sent tokens x $0.60/M
    assert client.generation_cost(generation.id) == pytest.approx(0.0000039)


@pytest.mark.parametrize("usage_shape", ["empty_choices", "one_choice"])
def test_chat_stream_reads_usage_from_either_final_chunk_shape(client, fake_openrouter, usage_shape):
    fake_openrouter.queue_reply(["a", "b"], usage_shape=usage_shape, cost=0.25, prompt_tokens=7)
    events = list(client.chat_stream(MODEL, HELLO))
    assert text_of(events) == "ab"
    assert events[-1].usage.cost_usd == 0.25
    assert events[-1].usage.prompt_tokens == 7
    assert events[-1].usage.completion_tokens == 2


@pytest.mark.parametrize("comments", [0, 3])
def test_chat_stream_skips_processing_comments(client, fake_openrouter, comments):
    fake_openrouter.queue_reply(["ok"], comments=comments)
    assert text_of(client.chat_stream(MODEL, HELLO)) == "ok"


def test_chat_stream_reports_the_model_that_actually_answered(client, fake_openrouter):
    fake_openrouter.queue_reply(["hi"], model="anthropic/claude-3.5-sonnet")
    done = list(client.chat_stream(MODEL, HELLO))[-1]
    assert done.model == "anthropic/claude-3.5-sonnet"


def test_chat_stream_turns_reasoning_into_thinking(client, fake_openrouter):
    fake_openrouter.queue_reply(["42"], reasoning=["Let me ", "think."])
    events = list(client.chat_stream(MODEL, HELLO, ChatOptions(think=True)))
    assert events[1:4] == [ChatThinking("Let me "), ChatThinking("think."), ChatDelta("42")]
    assert fake_openrouter.last_chat.json["reasoning"] == {"enabled": True}


def test_chat_stream_sends_streaming_request_with_usage(client, fake_openrouter):
    list(client.chat_stream(MODEL, [ChatMessage("system", "Be brief."), *HELLO]))
    body = fake_openrouter.last_chat.json
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["usage"] == {"include": True}
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello"}]


def test_chat_stream_sends_attribution_and_bearer_headers(client, fake_openrouter):
    list(client.chat_stream(MODEL, HELLO))
    headers = fake_openrouter.last_chat.headers
    assert headers["authorization"] == f"Bearer {DEFAULT_KEY}"
    assert headers["http-referer"] == "https://studio.test"
    assert headers["x-title"] == "Hephaestus Studio"


def test_chat_stream_maps_options_to_openai_fields(client, fake_openrouter):
    options = ChatOptions(temperature=0.2, top_p=0.9, seed=7, max_tokens=64, num_ctx=8192)
    list(client.chat_stream(MODEL, HELLO, options))
    body = fake_openrouter.last_chat.json
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.2, 0.9, 7, 64)
    assert "num_ctx" not in body
    assert "reasoning" not in body


def test_chat_stream_sends_images_as_data_url_parts(client, fake_openrouter):
    list(client.chat_stream(MODEL, [ChatMessage("user", "What is this?", images=(PNG, JPEG))]))
    content = fake_openrouter.last_chat.json["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert content[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert [part["type"] for part in content] == ["text", "image_url", "image_url"]


def test_build_chat_request_leaves_unset_options_out():
    request = build_chat_request(MODEL, HELLO, ChatOptions())
    assert set(request) == {"model", "messages", "stream", "stream_options", "extra_body"}
    assert request["extra_body"] == {"usage": {"include": True}}


def test_chat_stream_does_not_retry_by_itself(client, fake_openrouter):
    fake_openrouter.queue_reply(status=500)
    with pytest.raises(ProviderError):
        list(client.chat_stream(MODEL, HELLO))
    assert len(fake_openrouter.chat_requests) == 1


# -- failures --------------------------------------------------------------------------------


def test_chat_stream_without_key_fails_before_any_request(fake_openrouter):
    client = OpenRouterClient("", fake_openrouter.url)
    with pytest.raises(NoApiKey) as caught:
        list(client.chat_stream(MODEL, HELLO))
    assert str(caught.value).startswith("No OpenRouter key. Set OPENROUTER_API_KEY")
    assert isinstance(caught.value, BackendUnavailable)
    assert fake_openrouter.requests == []


@pytest.mark.parametrize("call", ["key_info", "credits"])
def test_account_calls_without_key_fail_before_any_request(fake_openrouter, call):
    client = OpenRouterClient("", fake_openrouter.url)
    with pytest.raises(NoApiKey):
        getattr(client, call)()
    assert fake_openrouter.requests == []


@pytest.mark.parametrize("status, error_class, phrase", [
    (401, BadApiKey, "rejected the API key"),
    (402, OutOfCredit, "out of credit"),
    (403, BackendRejected, "refused the request"),
    (404, ModelNotFound, "can't serve the model"),
    (408, ProviderError, "provider failed"),
    (429, RateLimited, "rate limiting"),
    (500, ProviderError, "provider failed"),
    (502, ProviderError, "provider failed"),
    (503, ProviderError, "provider failed"),
])
def test_chat_stream_maps_http_errors(client, fake_openrouter, status, error_class, phrase):
    fake_openrouter.queue_reply(status=status)
    with pytest.raises(error_class) as caught:
        list(client.chat_stream(MODEL, HELLO))
    assert type(caught.value) is error_class
    assert phrase in str(caught.value)
    assert caught.value.status == status
    assert f"({status}: " in str(caught.value)


def test_chat_stream_out_of_credit_points_at_the_credits_page(client, fake_openrouter):
    fake_openrouter.queue_reply(status=402)
    with pytest.raises(OutOfCredit) as caught:
        list(client.chat_stream(MODEL, HELLO))
    # One address to add credit: the provider's own link is left out of the message.
    assert str(caught.value).count("https://") == 1
    assert "https://openrouter.ai/settings/credits" in caught.value.hint
    assert "Insufficient credits." in str(caught.value)


@pytest.mark.parametrize("status, retry_after", [(429, 7), (429, None), (503, 2.5)])
def test_chat_stream_carries_retry_after(client, fake_openrouter, status, retry_after):
    fake_openrouter.queue_reply(status=status, retry_after=retry_after)
    with pytest.raises(BackendRejected) as caught:
        list(client.chat_stream(MODEL, HELLO))
    assert caught.value.retry_after == retry_after


def test_chat_stream_with_wrong_key_is_rejected(fake_openrouter):
    client = OpenRouterClient("sk-or-v1-wrong", fake_openrouter.url)
    with pytest.raises(BadApiKey, match="Check OPENROUTER_API_KEY"):
        list(client.chat_stream(MODEL, HELLO))


def test_chat_stream_unknown_model_is_model_not_found(client):
    with pytest.raises(ModelNotFound, match="no-such/model"):
        list(client.chat_stream("no-such/model", HELLO))


def test_chat_stream_other_bad_request_is_rejected_not_missing_model(client, fake_openrouter):
    fake_openrouter.queue_reply(status=400, message="temperature must be at most 2")
    with pytest.raises(BackendRejected) as caught:
        list(client.chat_stream(MODEL, HELLO))
    assert not isinstance(caught.value, ModelNotFound)
    assert "temperature must be at most 2" in str(caught.value)


def test_chat_stream_error_chunk_mid_stream_is_interrupted_after_partial_text(client, fake_openrouter):
    fake_openrouter.queue_reply(["Once", " upon"], error_mid_stream="Provider disconnected")
    events, error = collect(client.chat_stream(MODEL, HELLO))
    assert text_of(events) == "Once upon"
    assert isinstance(error, StreamInterrupted)
    assert "Provider disconnected" in str(error)
    assert "text so far is kept" in str(error)


def test_chat_stream_error_chunk_accepts_string_code(client, fake_openrouter):
    fake_openrouter.queue_reply([], error_mid_stream={"code": "server_error", "message": "Boom"})
    events, error = collect(client.chat_stream(MODEL, HELLO))
    assert events == []
    assert isinstance(error, StreamInterrupted)
    assert "Boom (code server_error)" in str(error)


@pytest.mark.parametrize("cut_mode", ["abort", "eof"])
def test_chat_stream_cut_connection_is_interrupted_after_partial_text(client, fake_openrouter, cut_mode):
    fake_openrouter.queue_reply(["one", " two", " three"], cut_after=2, cut_mode=cut_mode)
    events, error = collect(client.chat_stream(MODEL, HELLO))
    assert text_of(events) == "one two"
    assert isinstance(error, StreamInterrupted)
    assert not any(isinstance(e, ChatDone) for e in events)


def test_chat_stream_refused_connection_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/api/v1"
    client = OpenRouterClient(DEFAULT_KEY, url, timeout=5)
    with pytest.raises(BackendUnavailable) as caught:
        list(client.chat_stream(MODEL, HELLO))
    assert f"Can't reach OpenRouter at {url}" in str(caught.value)
    assert caught.value.__cause__ is not None


def test_chat_stream_timeout_is_unavailable(fake_openrouter):
    client = OpenRouterClient(DEFAULT_KEY, fake_openrouter.url, timeout=0.2)
    fake_openrouter.queue_reply(["late"], delay=2)
    with pytest.raises(BackendUnavailable, match="did not answer within 0.2 s"):
        list(client.chat_stream(MODEL, HELLO))


# -- OpenRouter-only endpoints ---------------------------------------------------------------


def test_list_models_parses_prices_modalities_and_context(client, fake_openrouter):
    models = {m.id: m for m in client.list_models()}
    mini = models["openai/gpt-4o-mini"]
    assert mini.pricing["prompt"] == "0.00000015"
    assert mini.pricing["completion"] == "0.0000006"
    assert mini.pricing["image"] == "0.000217"
    assert mini.context_length == 128000
    assert mini.name == "OpenAI: GPT-4o-mini" and "image" in mini.input_modalities
    free = models["meta-llama/llama-3.2-3b-instruct:free"]
    assert (free.pricing["prompt"], free.pricing["completion"]) == ("0", "0")
    assert free.input_modalities == ("text",)
    assert models["anthropic/claude-3.5-sonnet"].input_modalities == ("text", "image", "file")
    assert fake_openrouter.requests[-1].headers["authorization"] == f"Bearer {DEFAULT_KEY}"


def test_list_models_keeps_prices_as_sent_and_fills_defaults(fake_openrouter, client):
    fake_openrouter.models = [{"id": "openrouter/auto",
                               "pricing": {"prompt": "-1", "completion": "-1"}}]
    (auto,) = client.list_models()
    assert auto.pricing == {"prompt": "-1", "completion": "-1"}
    assert (auto.name, auto.context_length, auto.input_modalities) == ("openrouter/auto", None, ("text",))


def test_list_models_works_without_key(fake_openrouter):
    models = OpenRouterClient("", fake_openrouter.url).list_models()
    assert len(models) == 3
    assert "authorization" not in fake_openrouter.requests[-1].headers


def test_list_models_server_error_is_provider_error(client, fake_openrouter):
    fake_openrouter.fail_next("/models", 502)
    with pytest.raises(ProviderError, match="/models"):
        client.list_models()


def test_list_models_refused_connection_is_unavailable():
    url = f"http://127.0.0.1:{free_port()}/api/v1"
    with pytest.raises(BackendUnavailable, match="Can't reach OpenRouter"):
        OpenRouterClient(DEFAULT_KEY, url).list_models()


def test_key_info_reports_usage_and_limit(client):
    info = client.key_info()
    assert (info.usage, info.limit, info.limit_remaining) == (2.5, 10.0, 7.5)
    assert info.is_free_tier is False


def test_credits_for_ordinary_key_is_unavailable_with_reason(client):
    credits = client.credits()
    assert not credits.available
    assert credits.remaining is None
    assert "management keys" in credits.reason


def test_credits_for_management_key_has_figures():
    with FakeOpenRouter(management_key=True) as fake:
        credits = OpenRouterClient(DEFAULT_KEY, fake.url).credits()
    assert (credits.total_credits, credits.total_usage) == (100.5, 25.75)
    assert credits.remaining == pytest.approx(74.75)


def test_credits_other_errors_are_raised(client, fake_openrouter):
    fake_openrouter.fail_next("/credits", 500)
    with pytest.raises(ProviderError):
        client.credits()


# -- the key stays secret --------------------------------------------------------------------

SECRET = "sk-or-v1-SECRET-do-not-show-4242"


@pytest.mark.parametrize("scenario", [
    "ok", "401", "402", "429", "500", "400-echo", "mid-stream", "cut", "refused", "models-500",
])
def test_api_key_never_appears_in_errors_repr_or_logs(scenario, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenRouter(api_key=SECRET) as fake:
        url = fake.url if scenario != "refused" else f"http://127.0.0.1:{free_port()}/api/v1"
        client = OpenRouterClient(SECRET, url, timeout=5)
        if scenario[:3].isdigit() and scenario != "400-echo":
            fake.queue_reply(status=int(scenario[:3]))
        elif scenario == "400-echo":
            fake.queue_reply(status=400, message=f"bad request from key {SECRET}")
        elif scenario == "mid-stream":
            fake.queue_reply(["a"], error_mid_stream=f"oops {SECRET}")
        elif scenario == "cut":
            fake.queue_reply(["a", "b"], cut_after=1)
        texts = [repr(client), str(client)]
        try:
            if scenario == "models-500":
                fake.fail_next("/models", 500, f"echo {SECRET}")
                client.list_models()
            else:
                texts += [repr(e) for e in client.chat_stream(MODEL, HELLO)]
        except StudioError as err:
            texts += [str(err), repr(err), err.message, err.hint]
    texts.append(caplog.text)
    assert not [t for t in texts if SECRET in t]


def test_parse_retry_after_reads_seconds_ms_and_dates():
    assert parse_retry_after({"Retry-After": "12"}) == 12
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"Retry-After": future}) <= 31
def test_fake_openrouter_answers_non_streaming_requests_like_openrouter(fake_openrouter):
    sdk = openai.OpenAI(api_key=DEFAULT_KEY, base_url=fake_openrouter.url, max_retries=0)
    fake_openrouter.queue_reply(["Hel", "lo"], cost=0.5, reasoning=["hm"])
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=[
        {"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].message.reasoning == "hm"
    assert completion.usage.cost == 0.5
    assert completion.provider == "FakeProvider"
    assert raw.headers["X-Generation-Id"] == completion.id
    assert fake_openrouter.last_chat.json.get("stream") in (None, False)
