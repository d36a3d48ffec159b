"""Several hosts of one engine: the host-list syntax, routing choices, cooldown, and the
health checker against three fake Ollama servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from studio.backends.health import Health, HealthChecker
from studio.backends.hosts import HostSpec, parse_hosts
from studio.backends.pool import HostPool
from studio.backends.probes import ollama_clients, ollama_probe
from studio.config import normalize_ollama_host
from studio.errors import ConfigError
from studio.models.pulls import full_model_name
from tests.fakes.ollama_server import FakeOllama

# -- the syntax -------------------------------------------------------------------------------


def test_one_address_is_one_host_named_by_its_address():
    (host,) = parse_hosts("OLLAMA_HOST", "127.0.0.1", normalise=normalize_ollama_host)
    assert host == HostSpec("127.0.0.1:11434", "http://127.0.0.1:11434", 1, "")


def test_names_weights_and_keys():
    hosts = parse_hosts("STUDIO_OPENAI_SERVERS",
                        " llama=http://box:8080/v1/ , vllm=https://gpu:8000/v1 weight=3 key=sk-x,"
                        "http://10.0.0.7:1234/v1")
    assert [(h.name, h.url, h.weight, h.key) for h in hosts] == [
        ("llama", "http://box:8080/v1", 1, ""),
        ("vllm", "https://gpu:8000/v1", 3, "sk-x"),
        ("10.0.0.7:1234", "http://10.0.0.7:1234/v1", 1, ""),
    ]
    assert "sk-x" not in repr(hosts)


def test_empty_entries_are_ignored():
    assert parse_hosts("COMFYUI_URL", "") == ()
    assert len(parse_hosts("COMFYUI_URL", "http://a:8188,, ,http://b:8188")) == 2


@pytest.mark.parametrize("raw, words", [
    ("a=ftp://x:1", ["COMFYUI_URL", "'a=ftp://x:1'", "http://"]),
    ("http://a:8188 weight=0", ["weight", "1 to 1000"]),
    ("http://a:8188 weight=two", ["weight", "'two'"]),
    ("http://a:8188 colour=red", ["'colour=red'", "weight=N"]),
    ("http://a:8188 keyy=sekrit", ["keyy=…", "not understood"]),
    ("bad name=http://a:8188", ["'bad'", "http://"]),
    ("b@d=http://a:8188", ["name 'b@d'"]),
    ("x=", ["no address"]),
    ("http://a:99999", ["can't be read"]),
    ("http://:8188", ["no host name"]),
    ("a=http://x:1, a=http://y:1", ["name 'a' appears twice"]),
    ("http://x:1, http://x:1/", ["address 'http://x:1' appears twice"]),
])
def test_a_bad_entry_is_a_sentence_naming_the_setting_and_the_entry(raw, words):
    with pytest.raises(ConfigError) as caught:
        parse_hosts("COMFYUI_URL", raw)
    message = str(caught.value)
    assert message.startswith("COMFYUI_URL:")
    for word in words:
        assert word in message
    assert "sekrit" not in message


# -- routing ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool_of(*names: str, weights: dict[str, int] | None = None, clock=None) -> HostPool:
    specs = [HostSpec(n, f"http://{n}:11434", (weights or {}).get(n, 1)) for n in names]
    return HostPool(specs, clock=clock or Clock(), canonical=full_model_name)


def names(specs) -> list[str]:
    return [s.name for s in specs]


def test_a_host_with_the_model_loaded_comes_first():
    pool = pool_of("a", "b", "c")
    for n in "abc":
        pool.report_health(n, up=True, latency_ms=1.0, models=["llama3"], loaded=[])
    pool.report_health("c", up=True, latency_ms=9.0, models=["llama3"], loaded=["llama3"])
    assert names(pool.order("llama3:latest"))[0] == "c"


def test_hosts_without_the_model_are_never_chosen():
    pool = pool_of("a", "b")
    pool.report_health("a", up=True, models=["qwen2.5:7b"])
    pool.report_health("b", up=True, models=["llama3:latest"])
    assert names(pool.order("llama3")) == ["b"]
    assert pool.choose("mistral") is None


def test_the_least_busy_host_per_unit_of_weight():
    pool = pool_of("a", "b", "c", weights={"c": 3})
    for n in "abc":
        pool.report_health(n, up=True, latency_ms=1.0, models=["m"])
    chosen = []
    held = []
    for _ in range(5):
        spec = pool.choose("m")
        chosen.append(spec.name)
        cm = pool.use(spec.name)
        cm.__enter__()
        held.append(cm)
    # a, b, c each take one; c (weight 3) takes the next two before a or b take a second.
    assert chosen == ["a", "b", "c", "c", "c"]
    for cm in held:
        cm.__exit__(None, None, None)
    assert [v.active for v in pool.views()] == [0, 0, 0]


def test_a_comfyui_queue_counts_as_work():
    pool = pool_of("a", "b")
    pool.report_health("a", up=True, latency_ms=1.0, queue=4)
    pool.report_health("b", up=True, latency_ms=5.0, queue=1)
    assert names(pool.order()) == ["b", "a"]


def test_a_conversation_sticks_to_its_host_while_that_helps():
    pool = pool_of("a", "b")
    pool.report_health("a", up=True, latency_ms=1.0, models=["m"])
    pool.report_health("b", up=True, latency_ms=1.0, models=["m"])
    pool.remember("chat-1", "b")
    with pool.use("b"):  # b is busier, and still wins for its conversation
        assert pool.choose("m", sticky="chat-1").name == "b"
        assert pool.choose("m", sticky="chat-2").name == "a"
    # once another host has the model loaded and b does not, the conversation moves
    pool.report_health("a", up=True, models=["m"], loaded=["m"])
    assert pool.choose("m", sticky="chat-1").name == "a"
    # b loading it too brings the conversation back
    pool.succeeded("b", "m")
    assert pool.choose("m", sticky="chat-1").name == "b"


def test_a_failed_host_cools_down_then_returns():
    clock = Clock()
    pool = pool_of("a", "b", clock=clock)
    for n in "ab":
        pool.report_health(n, up=True, latency_ms=1.0, models=["m"])
    pool.failed("a", "connection refused")
    assert names(pool.order("m")) == ["b", "a"]  # a only as a last resort
    assert pool.view("a").state(clock.now) == "cooling down"
    clock.now += 6
    assert names(pool.order("m")) == ["a", "b"]


def test_a_down_host_is_tried_only_when_no_other_can_take_it():
    pool = pool_of("a", "b")
    pool.report_health("a", up=False, problem="refused")
    pool.report_health("b", up=True, models=["m"])
    assert names(pool.order("m")) == ["b", "a"]
    assert names(pool.order("m", exclude=["b"])) == ["a"]
    (only,) = pool_of("solo").order("m")  # one host: always tried, never refused here
    assert only.name == "solo"


# -- health checks against real (fake) Ollama servers -----------------------------------------


@pytest.fixture
def three_ollamas():
    fakes = [FakeOllama().start() for _ in range(3)]
    fakes[0].add_model("llama3.2:3b")
    fakes[1].add_model("llama3.2:3b")
    fakes[2].add_model("qwen2.5:7b")
    yield fakes
    for f in fakes:
        f.stop()


def test_health_checks_follow_hosts_that_stop_and_return(three_ollamas):
    specs = parse_hosts("OLLAMA_HOST", ", ".join(f"o{i}={f.url}" for i, f in
                                                  enumerate(three_ollamas)))
    pool = HostPool(specs, canonical=full_model_name)
    checker = HealthChecker(pool, ollama_probe(ollama_clients(timeout=2.0)), interval_s=0.1)
    checker.check_now()
    assert [v.up for v in pool.views()] == [True, True, True]
    assert pool.view("o2").models == frozenset({"qwen2.5:7b"})
    assert names(pool.order("llama3.2:3b")) == ["o0", "o1"] or \
        names(pool.order("llama3.2:3b")) == ["o1", "o0"]

    checker.start()
    try:
        three_ollamas[0].stop()
        rounds = checker.rounds
        assert checker.wait_rounds(rounds + 2, timeout=10)
        assert pool.view("o0").up is False and pool.view("o0").problem
        assert names(pool.order("llama3.2:3b")) == ["o1", "o0"]

        three_ollamas[0].start()  # same port
        rounds = checker.rounds
        assert checker.wait_rounds(rounds + 2, timeout=10)
        assert pool.view("o0").up is True
        assert set(names(pool.order("llama3.2:3b"))[:2]) == {"o0", "o1"}
    finally:
        checker.close()


def test_a_probe_that_raises_counts_as_down():
    pool = pool_of("a", "b")

    def probe(spec):
        if spec.name == "a":
            raise RuntimeError("boom")
        return Health(True, models=("m",))

    HealthChecker(pool, probe).check_now()
    assert pool.view("a").up is False and pool.view("a").problem == "boom"
    assert pool.view("b").up is True


def test_backends_health_checks_sleep_while_nobody_asks_and_wake_on_a_request(monkeypatch):
    """No page, no API caller: the hosts are not probed every interval; the first request
    that asks the pool for a host wakes the checks."""
    from studio.backends import health as health_module

    monkeypatch.setattr(health_module, "IDLE_ROUNDS", 1)
    now = [0.0]
    pool = HostPool(parse_hosts("OLLAMA_HOST", "a=http://127.0.0.1:9, b=http://127.0.0.1:10"),
                    clock=lambda: now[0])
    checker = HealthChecker(pool, lambda spec: Health(True, models=("m",)), interval_s=0.05)
    checker.start()
    try:
        assert checker.wait_rounds(1, timeout=10)
        now[0] = 10.0  # no request for far more than IDLE_ROUNDS intervals
        checker.wait_rounds(10**9, timeout=0.3)  # the round under way (if any) ends
        asleep = checker.rounds
        # Twenty intervals' worth of time: a polling checker would run ~20 rounds.
        assert not checker.wait_rounds(asleep + 1, timeout=1.0)
        pool.order("m")
        assert checker.wait_rounds(asleep + 1, timeout=10)
    finally:
        checker.close()
