"""OLLAMA_HOST listing three hosts: the studio built from that setting routes chats across
three fake Ollama servers on 127.0.0.1 (through the official ollama client), moves to the
next host when one fails before the first token, keeps a conversation on its host, and
follows hosts that stop and come back."""

from __future__ import annotations

import pytest

from studio.backends.ollama_hosts import OllamaHosts
from studio.config import Settings
from studio.errors import StreamInterrupted
from studio.events import ChatDelta, ChatDone, ChatMessage, ChatNotice
from studio.services import build_services
from tests.fakes.ollama_server import FakeOllama

MODEL = "llama3.2:3b"


@pytest.fixture
def hosts():
    fakes = {name: FakeOllama().start() for name in ("a", "b", "c")}
    fakes["a"].add_model(MODEL)
    fakes["b"].add_model(MODEL)
    fakes["c"].add_model("qwen2.5:7b")
    yield fakes
    for fake in fakes.values():
        fake.stop()


def studio_over(hosts, data, interval: float):
    setting = ", ".join(f"{name}={fake.url}" for name, fake in hosts.items())
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": setting,
                                  "STUDIO_HEALTH_INTERVAL": str(interval)}, dotenv_path=None)
    built = build_services(settings)
    built.ollama_health.check_now()
    return built


@pytest.fixture
def services(hosts, tmp_path):
    """Health checked at start only (an hour's interval): what routing learns, it learns from
    the requests themselves."""
    built = studio_over(hosts, tmp_path / "data", 3600)
    yield built
    built.ollama_health.close()
    built.images.close()


@pytest.fixture
def checked(hosts, tmp_path):
    """Health checked every 0.2 s."""
    built = studio_over(hosts, tmp_path / "data", 0.2)
    yield built
    built.ollama_health.close()
    built.images.close()


def chat(services, messages, model=MODEL):
    return list(services.router.chat_stream(f"ollama:{model}", messages))


def asked(fake) -> int:
    return len(fake.requests_to("/api/chat"))


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ChatDelta))


def test_the_studio_sees_every_host_and_all_their_models(services, hosts):
    assert isinstance(services.ollama, OllamaHosts)
    assert [m.name for m in services.ollama.list_models()] == [MODEL, "qwen2.5:7b"]
    statuses = [s for s in services.status.statuses(fresh=True) if s.name == "Ollama"]
    assert [(s.label, s.state) for s in statuses] == [
        ("Ollama a", "reachable"), ("Ollama b", "reachable"), ("Ollama c", "reachable")]


def test_chats_go_only_to_hosts_with_the_model_and_spread_when_busy(services, hosts):
    hosts["c"].queue_reply("from c")
    assert text_of(chat(services, [ChatMessage("user", "hi")], "qwen2.5:7b")) == "from c"
    assert (asked(hosts["a"]), asked(hosts["b"]), asked(hosts["c"])) == (0, 0, 1)

    # a's stream is held open (slow tokens) while a second chat starts: it goes to b.
    hosts["a"].queue_reply(["one ", "two"], delay=0.3)
    hosts["b"].queue_reply("from b")
    first = services.router.chat_stream(f"ollama:{MODEL}", [ChatMessage("user", "first")])
    assert isinstance(next(first), ChatDelta)  # a is answering now
    assert text_of(chat(services, [ChatMessage("user", "second")])) == "from b"
    assert text_of(list(first)) == "two"
    assert (asked(hosts["a"]), asked(hosts["b"])) == (1, 1)


def test_a_host_that_fails_before_the_first_token_hands_over_and_says_so(services, hosts):
    hosts["a"].stop()
    hosts["b"].queue_reply("answer from b")
    events = chat(services, [ChatMessage("user", "hello")])
    notices = [e.text for e in events if isinstance(e, ChatNotice)]
    assert len(notices) == 1 and notices[0].startswith("Answered by the Ollama host b: a: ")
    assert text_of(events) == "answer from b"
    assert isinstance(events[-1], ChatDone)
    # a is cooled down: the next chat goes straight to b, with no notice
    hosts["b"].queue_reply("again b")
    events = chat(services, [ChatMessage("user", "next")])
    assert not [e for e in events if isinstance(e, ChatNotice)]
    assert text_of(events) == "again b"


def test_a_host_that_breaks_mid_reply_keeps_the_partial_text_and_is_not_retried(services, hosts):
    hosts["a"].queue_reply("one two three four five", cut_after=2)
    seen = []
    with pytest.raises(StreamInterrupted):
        for event in services.router.chat_stream(f"ollama:{MODEL}", [ChatMessage("user", "x")]):
            seen.append(event)
    assert text_of(seen) == "one two "
    assert asked(hosts["b"]) == 0  # the reply was the host's own; nothing sent twice


def test_a_conversation_sticks_to_its_host(services, hosts):
    hosts["a"].queue_reply("turn one")
    turn_one = [ChatMessage("user", "tell me about bread")]
    assert text_of(chat(services, turn_one)) == "turn one"
    # b now has the model loaded too (it answered another conversation)...
    hosts["b"].queue_reply("other chat")
    with services.ollama.pool.use("a"):  # ...and a is busier while that one starts
        assert text_of(chat(services, [ChatMessage("user", "other")])) == "other chat"
    hosts["a"].queue_reply("turn two")
    turn_two = turn_one + [ChatMessage("assistant", "turn one"), ChatMessage("user", "more")]
    with services.ollama.pool.use("a"):  # a is busier, and the conversation still stays
        assert text_of(chat(services, turn_two)) == "turn two"
    assert (asked(hosts["a"]), asked(hosts["b"])) == (2, 1)


def test_health_checks_take_a_stopped_host_out_and_bring_it_back(checked, hosts):
    services = checked
    checker = services.ollama_health
    hosts["a"].stop()
    done = checker.rounds
    assert checker.wait_rounds(done + 2, timeout=10)
    assert services.ollama.pool.view("a").up is False
    statuses = {s.label: s.state for s in services.status.statuses(fresh=True)}
    assert statuses["Ollama a"] == "unreachable" and statuses["Ollama b"] == "reachable"
    hosts["b"].queue_reply("b while a is down")
    events = chat(services, [ChatMessage("user", "hi")])
    assert text_of(events) == "b while a is down"
    assert not [e for e in events if isinstance(e, ChatNotice)]  # known down: not tried

    hosts["a"].start()  # the same port
    done = checker.rounds
    assert checker.wait_rounds(done + 2, timeout=10)
    assert services.ollama.pool.view("a").up is True
    hosts["a"].queue_reply("a is back")
    with services.ollama.pool.use("b"):  # b (with the model loaded now) is busy
        assert text_of(chat(services, [ChatMessage("user", "hi again")])) == "a is back"


def test_a_hosts_key_goes_as_a_bearer_token_and_nowhere_else(hosts, tmp_path):
    setting = f"a={hosts['a'].url} key=sk-secret, b={hosts['b'].url}"
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "OLLAMA_HOST": setting, "STUDIO_HEALTH_INTERVAL": "3600"},
                                 dotenv_path=None)
    built = build_services(settings)
    try:
        built.ollama_health.check_now()
        hosts["a"].queue_reply("keyed")
        assert text_of(chat(built, [ChatMessage("user", "hi")])) == "keyed"
        (request,) = hosts["a"].requests_to("/api/chat")
        assert {k.lower(): v for k, v in request.headers.items()}["authorization"] == \
            "Bearer sk-secret"
        assert all("authorization" not in {k.lower() for k in r.headers}
                   for r in hosts["b"].requests_to("/api/tags"))
        assert "sk-secret" not in repr(settings) and "sk-secret" not in built.ollama.url
    finally:
        built.ollama_health.close()
        built.images.close()


def test_the_settings_tab_shows_host_lists_with_their_keys_masked(hosts, tmp_path):
    from studio.ui.settings import settings_rows

    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "OLLAMA_HOST": f"a={hosts['a'].url} key=sk-secret"},
                                 dotenv_path=None)
    shown = {row[0]: row[1] for row in settings_rows(settings)}
    assert shown["OLLAMA_HOST"] == f"a={hosts['a'].url} key=…"
    assert "sk-secret" not in repr(settings)


def test_embeddings_go_to_a_host_that_has_the_model(services, hosts):
    hosts["b"].add_model("nomic-embed-text:latest", family="nomic-bert",
                         capabilities=("embedding",))
    services.ollama_health.check_now()
    result = services.ollama.embed("nomic-embed-text", ["a loaf of bread"])
    assert len(result.vectors) == 1 and result.vectors[0]
    assert len(hosts["b"].requests_to("/api/embed")) == 1
    assert hosts["a"].requests_to("/api/embed") == []
    assert [v.active for v in services.ollama.pool.views()] == [0, 0, 0]


def test_the_models_listing_asks_a_host_that_has_each_model_what_it_can_do(services):
    listing = services.local_models.listing(fresh=True)
    assert listing.reachable
    assert {m.name: m.capabilities for m in listing.models} == {
        MODEL: ("completion",), "qwen2.5:7b": ("completion",)}
