"""Every backend host as the admin sees it (studio/backends/board.py, the Settings hosts
table, the Models tab per host): three fake Ollama servers and two fake ComfyUI servers on
loopback addresses, the studio built from OLLAMA_HOST and COMFYUI_URL listing them.

A host on 127.0.0.2 plays a host on another machine: the board counts only 127.0.0.1,
localhost and ::1 as this machine, whose GPUs are NVML's."""

from __future__ import annotations

import doctest
import html
import json
import threading
import uuid

import gradio as gr
import pytest

from studio.access.users import Users
from studio.backends.board import COMFYUI, HIDDEN_ADDRESS, OLLAMA, is_local
from studio.config import Settings
from studio.events import ChatMessage
from studio.services import build_services
from studio.store.db import Store
from studio.ui import models, models_values, settings
from studio.ui.app import build_app, launch_kwargs
from studio.ui.guard import origin_of
from tests.lazy_tabs import render_in_session
from studio.ui.settings import host_cells
from tests.conftest import free_port
from tests.fakes.comfyui_server import FakeComfyUI, cuda_device
from tests.fakes.ollama_server import FakeOllama
from tests.test_access_events import PASSWORDS, first_answer, inputs_of, sign_in
from tests.test_gpu import RTX_3090, FakeNvml

MODEL = "llama3.2:3b"
GiB = 2**30
WAIT = 10.0


@pytest.fixture
def ollamas():
    """a and b on this machine, c on "another machine" (127.0.0.2)."""
    fakes = {"a": FakeOllama().start(), "b": FakeOllama().start(),
             "c": FakeOllama(host="127.0.0.2").start()}
    fakes["a"].add_model(MODEL)
    fakes["b"].add_model(MODEL)
    fakes["c"].add_model("qwen2.5:7b")
    for fake in fakes.values():
        fake.add_remote_model("mistral", size=4_000_000)
    yield fakes
    for fake in fakes.values():
        fake.stop()
        assert not fake.server_errors, fake.server_errors


@pytest.fixture
def comfys():
    """"here" on this machine; "gpu2" on another, a box with two cards."""
    here = FakeComfyUI(models={"checkpoints": ["sd15.safetensors"]}).start()
    gpu2 = FakeComfyUI(listen="127.0.0.2", models={"checkpoints": ["sd15.safetensors",
                                                                   "sdxl.safetensors"]})
    gpu2.devices = [cuda_device(0, "NVIDIA H100", 80 * GiB, 60 * GiB,
                                torch_vram_total=12 * GiB, torch_vram_free=2 * GiB),
                    cuda_device(1, "NVIDIA L4", 24 * GiB, 24 * GiB)]
    gpu2.start()
    yield {"here": here, "gpu2": gpu2}
    here.stop()
    gpu2.stop()


def studio_over(ollamas, comfys, data, *, interval=3600.0, nvml=None):
    settings = Settings.from_env({
        "STUDIO_DATA_DIR": str(data),
        "OLLAMA_HOST": ", ".join(
            f"{name}={fake.url}" + (" key=sk-secret-b" if name == "b" else "")
            for name, fake in ollamas.items()),
        "COMFYUI_URL": ", ".join(f"{name}={fake.url}" for name, fake in comfys.items()),
        "STUDIO_HEALTH_INTERVAL": str(interval)}, dotenv_path=None)
    built = build_services(settings, nvml=nvml if nvml is not None else FakeNvml(init_error=9))
    built.ollama_health.check_now()
    return built


@pytest.fixture
def services(ollamas, comfys, tmp_path):
    built = studio_over(ollamas, comfys, tmp_path / "data")
    yield built
    built.ollama_health.close()
    built.images.close()


def checked_rows(services):
    """The rows once the ComfyUI hosts' on-demand check has run."""
    services.hosts.rows()  # asks for that check in the background
    assert services.hosts.engine(COMFYUI).checker.wait_rounds(1, WAIT)
    return {(r.kind, r.name): r for r in services.hosts.rows()}


def tab(services):
    with gr.Blocks():
        with gr.Tab("Models") as models_tab:
            return models.render(services, tab=models_tab)


# -- the hosts table ------------------------------------------------------------------------


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:11434", True), ("http://localhost:8188", True), ("http://[::1]:1", True),
    ("http://127.0.0.2:11434", False), ("http://gpu2.lan:8188", False)])
def test_board_is_local_only_for_this_machines_names(url, local):
    assert is_local(url) is local


def test_board_rows_show_every_host_state_latency_models_loaded_and_queue(services, ollamas):
    list(services.router.chat_stream(f"ollama:{MODEL}", [ChatMessage("user", "hi")]))
    services.ollama_health.check_now()  # /api/ps: what the chat loaded

    rows = checked_rows(services)

    assert list(rows) == [(OLLAMA, "a"), (OLLAMA, "b"), (OLLAMA, "c"),
                          (COMFYUI, "here"), (COMFYUI, "gpu2")]
    assert {r.state for r in rows.values()} == {"up"}
    assert all(r.latency_ms is not None and r.problem == "" for r in rows.values())
    assert [rows[(OLLAMA, n)].models for n in "abc"] == [1, 1, 1]
    loaded = [n for n in "ab" if rows[(OLLAMA, n)].loaded == (f"{MODEL}",)]
    assert len(loaded) == 1 and rows[(OLLAMA, "c")].loaded == ()
    assert rows[(COMFYUI, "here")].models == 1 and rows[(COMFYUI, "gpu2")].models == 2
    assert rows[(COMFYUI, "gpu2")].queue == 0
    assert [rows[k].local for k in rows] == [True, True, False, True, False]


def test_board_rows_never_show_a_key_or_a_comfyui_address(services, ollamas, comfys):
    rows = checked_rows(services)
    cells = repr(host_cells(list(rows.values())))

    assert "sk-secret-b" not in cells
    assert rows[(OLLAMA, "b")].address == f"{ollamas['b'].url} key=…"
    assert rows[(OLLAMA, "a")].address == ollamas["a"].url
    assert all(rows[(COMFYUI, n)].address == HIDDEN_ADDRESS for n in comfys)
    assert not any(f":{fake.port}" in cells for fake in comfys.values())


def test_board_a_stopped_host_is_down_with_its_problem_then_up_again(services, ollamas):
    ollamas["b"].stop()
    services.ollama_health.check_now()
    row = checked_rows(services)[(OLLAMA, "b")]
    assert row.state == "down" and "Can't reach Ollama" in row.problem
    assert row.latency_ms is None
    [cells] = [c for c in host_cells([row])]
    assert cells[3].startswith("down: Can't reach Ollama")

    ollamas["b"].start()
    services.ollama_health.check_now()
    assert checked_rows(services)[(OLLAMA, "b")].state == "up"


def test_board_a_local_server_is_a_row_with_its_key_masked_checked_on_demand(fake_ollama,
                                                                           tmp_path):
    from tests.fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(["qwen-coder"], api_key="sk-local-secret").start()
    settings = Settings.from_env({
        "STUDIO_DATA_DIR": str(tmp_path / "data"), "OLLAMA_HOST": fake_ollama.url,
        "STUDIO_OPENAI_SERVERS": f"llama={server.url} key=sk-local-secret"}, dotenv_path=None)
    built = build_services(settings)
    try:
        built.hosts.rows()
        assert built.local_health.wait_rounds(1, WAIT)  # one server: checked on demand
        [row] = [r for r in built.hosts.rows() if r.kind == "Local server"]
    finally:
        built.images.close()
        server.stop()
    assert (row.name, row.state, row.models) == ("llama", "up", 1)
    assert row.address == f"{server.url} key=…" and "sk-local" not in repr(host_cells([row]))


def test_board_a_host_that_failed_a_request_is_cooling_down_with_the_reason(services):
    services.ollama.pool.failed("a", "Ollama at a broke off the reply.")
    row = checked_rows(services)[(OLLAMA, "a")]
    assert row.state == "cooling down" and row.problem == "Ollama at a broke off the reply."


def test_board_a_single_host_is_checked_in_the_background_on_demand(fake_ollama, fake_comfyui,
                                                                    tmp_path):
    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "OLLAMA_HOST": fake_ollama.url,
                                  "COMFYUI_URL": fake_comfyui.url}, dotenv_path=None)
    built = build_services(settings)
    gate = threading.Event()
    for engine in built.hosts.engines:  # each probe held until the first rows are read
        engine.checker._probe = (lambda spec, probe=engine.checker._probe:
                                 gate.wait(WAIT) and probe(spec))
    try:
        first = built.hosts.rows()  # returns while the checks it started are held
        assert [(r.kind, r.state) for r in first] == [(OLLAMA, "not checked yet"),
                                                       (COMFYUI, "not checked yet")]
        gate.set()
        for engine in built.hosts.engines:
            assert engine.checker.wait_rounds(1, WAIT)
        again = built.hosts.rows()
        # ComfyUI's models: its checkpoints and LoRAs (2 + 1 in the fake's default folders).
        assert [(r.kind, r.state, r.models) for r in again] == [(OLLAMA, "up", 2),
                                                                 (COMFYUI, "up", 3)]
        asked = len(fake_ollama.requests_to("/api/tags"))
        built.hosts.rows()  # within the health interval: no new check
        assert len(fake_ollama.requests_to("/api/tags")) == asked
    finally:
        built.images.close()


def test_hosts_examples_in_the_ui_values_pass():
    for module in (settings, models_values):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


# -- Models tab per host ----------------------------------------------------------------------


def test_hosts_pull_onto_one_host_lands_on_that_host_only(services, ollamas):
    snap = services.pulls.start("mistral", host="b")
    final = services.pulls.wait(snap.id, WAIT)

    assert final.state == "done" and final.message == "Pulled mistral onto b."
    assert ["mistral:latest" in ollamas[n].installed() for n in "abc"] == [False, True, False]
    assert len(ollamas["a"].requests_to("/api/pull")) == 0
    assert len(ollamas["c"].requests_to("/api/pull")) == 0


def test_hosts_pull_onto_all_hosts_by_default(services, ollamas):
    final = services.pulls.wait(services.pulls.start("mistral").id, WAIT)
    assert final.state == "done"
    assert all("mistral:latest" in fake.installed() for fake in ollamas.values())


def test_hosts_delete_and_unload_on_one_host_leave_the_others(services, ollamas):
    for name in "ab":
        ollamas[name].queue_reply("hi")
        list(services.ollama.client_for(name).chat_stream(
            MODEL, [ChatMessage("user", "hi")]))
    assert all(ollamas[n].running_models() == [MODEL] for n in "ab")

    services.ollama.unload(MODEL, host="a")
    assert ollamas["a"].running_models() == [] and ollamas["b"].running_models() == [MODEL]

    services.ollama.delete(MODEL, host="b")
    assert MODEL in ollamas["a"].installed() and MODEL not in ollamas["b"].installed()


def test_hosts_an_unknown_host_is_refused_with_the_names(services):
    with pytest.raises(Exception, match="no Ollama host named 'nope'.*a, b, c"):
        list(services.ollama.pull("mistral", host="nope"))


def test_models_tab_says_which_host_has_each_model_and_where_it_is_loaded(services, ollamas):
    ollamas["a"].queue_reply("hi")
    list(services.ollama.client_for("a").chat_stream(
        MODEL, [ChatMessage("user", "hi")]))
    parts = tab(services)

    first = next(parts.on_open(None))

    table = first[0]
    hosts = dict(zip(table["Name"], table["Hosts"]))
    assert hosts == {MODEL: "a (loaded), b", "qwen2.5:7b:latest": "c"} or \
        hosts == {MODEL: "a (loaded), b", "qwen2.5:7b": "c"}


def test_models_tab_pull_delete_unload_take_the_chosen_host(services, ollamas):
    parts = tab(services)
    updates = list(parts.on_pull("mistral", "c"))
    assert updates and ["mistral:latest" in ollamas[n].installed() for n in "abc"] == \
        [False, False, True]

    question, _row = parts.on_delete_ask(MODEL, "a")
    assert "Only from the host **a**" in question["value"]
    parts.on_delete(MODEL, "a")
    assert MODEL not in ollamas["a"].installed() and MODEL in ollamas["b"].installed()

    ollamas["b"].queue_reply("hi")
    list(services.ollama.client_for("b").chat_stream(
        MODEL, [ChatMessage("user", "hi")]))
    _running, _choices, log = parts.on_unload(MODEL, "b")
    assert ollamas["b"].running_models() == []
    assert "from Ollama on b" in log.iloc[0]["What happened"]


def test_models_tab_lists_each_comfyui_hosts_files(services, comfys):
    parts = tab(services)
    frame, note = parts.on_comfy_hosts("checkpoints")
    assert list(frame.columns) == ["File", "here", "gpu2"]
    assert frame.values.tolist() == [["sd15.safetensors", "✓", "✓"],
                                     ["sdxl.safetensors", "", "✓"]]
    assert note == ""

    comfys["gpu2"].stop()
    frame, note = parts.on_comfy_hosts("checkpoints")
    assert frame.values.tolist() == [["sd15.safetensors", "✓", "?"]]
    assert note.startswith("⚠️ gpu2: Can't reach ComfyUI at host gpu2 in COMFYUI_URL")


# -- the GPU panel ----------------------------------------------------------------------------


def test_gpu_panel_shows_every_local_gpu_and_each_remote_hosts_devices_and_loaded_models(
        ollamas, comfys, tmp_path):
    second = dict(RTX_3090, name="NVIDIA RTX A4000", used=2 * GiB, total=16 * GiB)
    built = studio_over(ollamas, comfys, tmp_path / "data", nvml=FakeNvml([RTX_3090, second]))
    try:
        ollamas["c"].queue_reply("hi")
        list(built.router.chat_stream("ollama:qwen2.5:7b", [ChatMessage("user", "hi")]))
        summary, _plot, hosts_md, _running, _log = tab(built).on_gpu_tick()
    finally:
        built.ollama_health.close()
        built.images.close()

    # This machine: every card NVML sees.
    assert "GPU 0: NVIDIA GeForce RTX 3090" in summary and "GPU 1: NVIDIA RTX A4000" in summary
    # The ComfyUI on this machine: its GPUs are the panel's, not listed again.
    here = hosts_md.split("**ComfyUI gpu2")[0]
    assert "**ComfyUI here 0.8.0**" in here and "this machine's" in here
    assert "cpu" not in here.split("this machine's")[0]
    # The other machine: both cards, with PyTorch's share; its Ollama's loaded model.
    assert "cuda:0 NVIDIA H100 : cudaMallocAsync: 20.0 GiB used of 80.0 GiB, 60.0 GiB free; " \
           "PyTorch holds 12.0 GiB, 2.0 GiB of it free" in hosts_md
    assert "cuda:1 NVIDIA L4 : cudaMallocAsync: 0 B used of 24.0 GiB" in hosts_md
    assert "**Ollama c** (another machine, /api/ps)\n- qwen2.5:7b" in hosts_md
    assert "GiB in GPU memory" in hosts_md.split("**Ollama c**")[1]
    # Ollama hosts on this machine are in the loaded-models table, not here.
    assert "**Ollama a" not in hosts_md and "**Ollama b" not in hosts_md


def test_gpu_panel_a_down_remote_host_gets_a_sentence(ollamas, comfys, tmp_path):
    built = studio_over(ollamas, comfys, tmp_path / "data")
    try:
        comfys["gpu2"].stop()
        ollamas["c"].stop()
        built.ollama_health.check_now()
        _summary, _plot, hosts_md, _running, _log = tab(built).on_gpu_tick()
    finally:
        built.ollama_health.close()
        built.images.close()
    shown = html.unescape(hosts_md)
    assert "**ComfyUI gpu2:** Can't reach ComfyUI at host gpu2 in COMFYUI_URL." in shown
    assert "**Ollama c:** Can't reach Ollama" in shown


# -- who may see and act on the hosts ---------------------------------------------------------


@pytest.fixture
def signed(ollamas, comfys, tmp_path):
    """The app with sign-in (ann an admin, bob not) over the hosts, served on loopback."""

    data = tmp_path / "signed"
    store = Store.open(data / "studio.db")
    Users(store).add("ann", PASSWORDS["ann"], admin=True)
    Users(store).add("bob", PASSWORDS["bob"])
    store.close()
    built = studio_over(ollamas, comfys, data)
    demo = build_app(built)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **{
        **launch_kwargs(built), "server_port": free_port(), "share": False})
    yield url.rstrip("/"), demo
    demo.close()
    built.ollama_health.close()
    built.images.close()


def rendered_events(client, demo) -> tuple[str, dict, dict]:
    """Every lazy tab built in a new page session of ``client`` (as opening them does):
    (session, the rendered configs, dependency id by the function's origin)."""
    session = uuid.uuid4().hex
    rendered = render_in_session(client, client.get("/config").json(), session)
    fns = demo.state_holder[session].blocks_config.fns
    found = {}
    for index, block_fn in fns.items():
        if block_fn.fn is not None and block_fn.rendered_in is not None:
            found.setdefault(origin_of(block_fn.fn), index)
    return session, rendered, found


def test_hosts_events_refuse_a_non_admin_and_change_nothing(signed, ollamas):
    url, demo = signed
    hosts = ("studio.ui.settings", "render.<locals>.on_hosts")
    wanted = {hosts} | {("studio.ui.models", f"render.<locals>.{name}")
                        for name in ("on_pull", "on_comfy_hosts", "on_delete", "on_unload")}
    for who, expected in (("bob", "refused"), ("ann", "ran")):
        client = sign_in(url, who)
        session, rendered, found = rendered_events(client, demo)
        assert wanted <= set(found)
        dependencies = {d["id"]: d for d in rendered["dependencies"]}
        answer = first_answer(client, rendered, dependencies[found[hosts]], session=session)
        assert answer[0] == expected, (who, answer)
        if who == "bob":
            for name in wanted - {hosts}:
                assert first_answer(client, rendered, dependencies[found[name]],
                                    session=session)[0] == "refused"
    assert not any(fake.requests_to("/api/pull") or fake.requests_to("/api/delete")
                   for fake in ollamas.values())


def completed_output(client, config: dict, dependency: dict, session: str | None = None
                     ) -> list:
    """Call one event through the queue (in a new page session, or ``session``); the
    outputs of its completed message."""
    session = session or uuid.uuid4().hex
    client.post("/gradio_api/queue/join", json={
        "data": inputs_of(config, dependency), "event_data": None,
        "fn_index": dependency["id"], "trigger_id": None, "session_hash": session})
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                       timeout=10) as stream:
        for line in stream.iter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            if msg.get("msg") == "process_completed":
                return msg["output"]["data"]
    raise AssertionError("no answer")


def test_hosts_a_plain_users_settings_page_never_receives_the_hosts(signed, ollamas):
    url, demo = signed
    shown = {}
    for who in ("bob", "ann"):
        client = sign_in(url, who)
        session, rendered, found = rendered_events(client, demo)
        index = found["studio.ui.settings", "render.<locals>.on_users"]
        dependency = next(d for d in rendered["dependencies"] if d["id"] == index)
        shown[who] = json.dumps(completed_output(client, rendered, dependency, session))
    assert ollamas["a"].url in shown["ann"] and "Ollama" in shown["ann"]
    assert not any(fake.url in shown["bob"] for fake in ollamas.values())
