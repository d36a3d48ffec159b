"""GpuCoordinator: the one-GPU policy carried out against the fake Ollama and fake ComfyUI,
with a fake NVML giving known free memory; every action lands in the log table."""

from __future__ import annotations

import socket
import time

import pytest

from studio.clients.comfyui import ComfyUIClient
from studio.clients.ollama import OllamaClient
from studio.errors import ConfigError, InvalidInput
from studio.events import ChatMessage
from studio.models.gpu import GpuMonitor
from studio.chat.router import Router
from studio.chat.streams import ChatStreams
from studio.events import ChatDelta, ChatNotice, ChatOptions
from studio.models.gpu_coordinator import (GpuCoordinator, ModelsInUse, check_policy,
                                           parse_vram_overrides)
from studio.chat.replies import ReplyManager
from studio.store.models import ModelsStore
from tests.fakes.comfyui_server import FakeComfyUI
from tests.test_gpu import RTX_3090, FakeNvml

GiB = 2**30
HELLO = [ChatMessage("user", "hi")]


def card(free_gib: float) -> dict:
    return dict(RTX_3090, used=int((24 - free_gib) * GiB), total=24 * GiB, processes=[])


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def ollama(fake_ollama):
    client = OllamaClient(fake_ollama.url, timeout=10)
    yield client
    client.close()


@pytest.fixture
def comfy():
    with FakeComfyUI() as fake:
        yield fake


@pytest.fixture
def log(store):
    return ModelsStore(store)


def make(policy, free_gib, ollama, comfy_url, log, busy=()):
    gpu = GpuMonitor(FakeNvml([card(free_gib)]) if free_gib is not None else FakeNvml(
        init_error=9))  # 9 = NVML_ERROR_DRIVER_NOT_LOADED
    return GpuCoordinator(policy=policy, gpu=gpu, ollama=ollama,
                          comfyui=ComfyUIClient(comfy_url, timeout=2), log=log,
                          busy_models=lambda: busy)


def load(ollama, name="llama3.2"):
    list(ollama.chat_stream(name, HELLO))


# -- before an image job --------------------------------------------------------------------


def test_image_job_that_fits_does_nothing(fake_ollama, ollama, comfy, log):
    load(ollama)
    result = make("automatic", 20, ollama, comfy.url, log).before_image_job("sdxl")

    assert result.outcome == "fits" and not result.needs_confirmation
    assert fake_ollama.running_models() == ["llama3.2:latest"]
    assert log.gpu_actions() == []


def test_image_job_automatic_unloads_idle_ollama_models(fake_ollama, ollama, comfy, log):
    load(ollama)
    result = make("automatic", 2, ollama, comfy.url, log).before_image_job("sdxl")

    assert (result.action, result.outcome, result.models) == ("unload_ollama", "done",
                                                             ("llama3.2:latest",))
    assert result.freed_bytes > 1 * GiB
    assert fake_ollama.running_models() == []
    [row] = log.gpu_actions()
    assert (row.trigger, row.policy, row.action, row.outcome) == (
        "image_job", "automatic", "unload_ollama", "done")
    assert row.needed_bytes == 8 * GiB and row.free_bytes == 2 * GiB
    assert "unloading llama3.2:latest" in row.message


def test_image_job_never_unloads_a_model_a_chat_is_using(fake_ollama, ollama, comfy, log):
    load(ollama)
    coord = make("automatic", 2, ollama, comfy.url, log, busy=["llama3.2"])

    result = coord.before_image_job("sdxl")

    assert result.outcome == "skipped" and "busy" in result.message
    assert fake_ollama.running_models() == ["llama3.2:latest"]
    assert log.gpu_actions()[0].outcome == "skipped"


def test_image_job_ask_waits_for_yes(fake_ollama, ollama, comfy, log):
    load(ollama)
    coord = make("ask", 2, ollama, comfy.url, log)

    asked = coord.before_image_job("sdxl")
    assert asked.needs_confirmation and "Unload llama3.2:latest" in asked.message
    assert fake_ollama.running_models() == ["llama3.2:latest"]

    done = coord.before_image_job("sdxl", confirmed=True)
    assert done.outcome == "done" and fake_ollama.running_models() == []
    assert [a.outcome for a in log.gpu_actions()] == ["done", "asked"]


def test_image_job_ask_declined_is_logged(ollama, comfy, log):
    load(ollama)
    coord = make("ask", 2, ollama, comfy.url, log)
    coord.decline(coord.before_image_job("flux"))
    assert [a.outcome for a in log.gpu_actions()] == ["declined", "asked"]


def test_image_job_policy_off_only_logs(fake_ollama, ollama, comfy, log):
    load(ollama)
    result = make("off", 2, ollama, comfy.url, log).before_image_job("sdxl")
    assert result.outcome == "skipped" and "GPU sharing is off" in result.message
    assert fake_ollama.running_models() == ["llama3.2:latest"]


def test_image_job_uses_family_override(ollama, comfy, log):
    coord = make("automatic", 5, ollama, comfy.url, log)
    coord.vram_overrides = {"sdxl": "4"}
    assert coord.before_image_job("SDXL").outcome == "fits"


def test_image_job_without_nvml_or_comfyui_starts_as_is(ollama, log):
    result = make("automatic", None, ollama, dead_url(), log).before_image_job("sdxl")
    assert result.outcome == "fits" and "GPU readings are off" in result.message


def test_image_job_with_ollama_down_says_so(comfy, log):
    down = OllamaClient(dead_url(), timeout=2)
    result = make("automatic", 2, down, comfy.url, log).before_image_job("sdxl")
    assert result.outcome == "skipped" and "Can't reach Ollama" in result.message


# -- before a chat --------------------------------------------------------------------------


def test_chat_that_wont_fit_asks_comfyui_to_free(ollama, comfy, log):
    result = make("automatic", 1, ollama, comfy.url, log).before_chat("llama3.2")

    assert (result.action, result.outcome) == ("free_comfyui", "done")
    [free] = comfy.requests_to("/free")
    assert free.json == {"unload_models": True, "free_memory": True}
    assert log.gpu_actions()[0].trigger == "chat"


def test_chat_already_loaded_needs_nothing(ollama, comfy, log):
    load(ollama)
    result = make("automatic", 0.1, ollama, comfy.url, log).before_chat("llama3.2:latest")
    assert result.outcome == "fits" and comfy.requests_to("/free") == []


def test_chat_that_fits_needs_nothing(ollama, comfy, log):
    assert make("automatic", 20, ollama, comfy.url, log).before_chat("llama3.2").outcome == "fits"
    assert comfy.requests_to("/free") == []


def test_chat_ask_then_confirm(ollama, comfy, log):
    coord = make("ask", 1, ollama, comfy.url, log)
    assert coord.before_chat("llama3.2").needs_confirmation
    assert comfy.requests_to("/free") == []
    assert coord.before_chat("llama3.2", confirmed=True).outcome == "done"
    assert len(comfy.requests_to("/free")) == 1


def test_chat_with_comfyui_down_is_skipped_and_logged(ollama, log):
    result = make("automatic", 1, ollama, dead_url(), log).before_chat("llama3.2")
    assert result.outcome == "skipped" and "ComfyUI holds nothing" in result.message
    assert log.gpu_actions()[0].outcome == "skipped"


# -- manual actions -------------------------------------------------------------------------


def test_manual_unload_idle_and_free_are_logged(fake_ollama, ollama, comfy, log):
    load(ollama)
    coord = make("off", 20, ollama, comfy.url, log)

    assert coord.unload_idle().outcome == "done"
    assert coord.free_comfyui().outcome == "done"
    assert fake_ollama.running_models() == []
    assert [(a.trigger, a.action) for a in log.gpu_actions()] == [
        ("manual", "free_comfyui"), ("manual", "unload_ollama")]
    with pytest.raises(InvalidInput, match="nothing to unload"):
        coord.unload_idle()


def test_manual_free_with_comfyui_down_fails_clearly(ollama, log):
    result = make("off", 20, ollama, dead_url(), log).free_comfyui()
    assert result.outcome == "failed" and "Can't reach ComfyUI" in result.message


# -- settings and helpers -------------------------------------------------------------------


def test_parse_vram_overrides():
    assert parse_vram_overrides("sdxl=9, flux = 14 GiB; hunyuan=20") == {
        "sdxl": "9", "flux": "14 GiB", "hunyuan": "20"}
    assert parse_vram_overrides("") == {}


@pytest.mark.parametrize("text", ["sdxl", "sdxl=", "flux=lots"])
def test_parse_vram_overrides_refuses_bad_entries(text):
    with pytest.raises(ConfigError, match="STUDIO_VRAM_PER_FAMILY"):
        parse_vram_overrides(text)


def test_check_policy():
    assert check_policy(" Automatic ") == "automatic"
    with pytest.raises(ConfigError, match="STUDIO_GPU_POLICY must be off, ask or automatic"):
        check_policy("sometimes")


def test_models_in_use_counts_each_stream_until_it_closes(fake_ollama, ollama):
    fake_ollama.queue_reply(fake_ollama.make_tokens(50), delay=0.05)
    fake_ollama.queue_reply(fake_ollama.make_tokens(50), delay=0.05)
    in_use = ModelsInUse()
    streams = ChatStreams(Router({"ollama": ollama}), in_use=in_use)
    replies = ReplyManager(streams.open)
    first = replies.start("ollama:llama3.2", HELLO, None)
    second = replies.start("ollama:llama3.2:latest", HELLO, None)
    fake_ollama.wait_for_request("/api/chat", count=2)
    assert in_use.names() == {"llama3.2:latest"}
    replies.stop(first.reply_id)
    wait_until(lambda: first.snapshot().done)
    assert in_use.names() == {"llama3.2:latest"}  # the second still streams
    replies.stop(second.reply_id)
    wait_until(lambda: not in_use.names())
    assert in_use.names() == set()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- wired into chat and the arena ------------------------------------------------------------


def chat_streams(coordinator, ollama) -> ChatStreams:
    return ChatStreams(Router({"ollama": ollama}), in_use=ModelsInUse(),
                       coordinator=coordinator, gpu=coordinator._gpu)


def test_chat_on_a_full_gpu_frees_comfyui_and_the_reply_says_so(ollama, comfy, log):
    coord = make("automatic", 1, ollama, comfy.url, log)
    events = list(chat_streams(coord, ollama).open("ollama:llama3.2", HELLO, ChatOptions()))
    assert isinstance(events[0], ChatNotice) and "ComfyUI" in events[0].text
    assert any(isinstance(e, ChatDelta) for e in events)
    assert len(comfy.requests_to("/free")) == 1


def test_chat_without_nvml_skips_the_gpu_policy(ollama, comfy, log):
    coord = make("automatic", None, ollama, comfy.url, log)
    events = list(chat_streams(coord, ollama).open("ollama:llama3.2", HELLO, ChatOptions()))
    assert not any(isinstance(e, ChatNotice) for e in events)
    assert comfy.requests_to("/free") == [] and comfy.requests_to("/system_stats") == []


def test_arena_answers_are_seen_by_the_gpu_policy(tmp_path, fake_ollama, comfy):
    """An arena answer gets the pre-chat GPU check, and while it streams the policy counts
    its model as busy: an image job on a full GPU must not unload it. (Before, arena answers
    skipped both: ComfyUI was never asked to make room, and the model was unloaded.)"""
    from studio.config import Settings
    from studio.services import build_services

    fake_ollama.add_model("llava")
    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path / "data"), "OLLAMA_HOST": fake_ollama.url,
         "COMFYUI_URL": comfy.url, "STUDIO_GPU_POLICY": "automatic"}, dotenv_path=None),
        nvml=FakeNvml([card(0.5)]))
    try:
        for _ in range(2):
            fake_ollama.queue_reply(fake_ollama.make_tokens(100), delay=0.05)
        run_id = services.arena.start("hi", ["ollama:llama3.2:latest", "ollama:llava:latest"])
        fake_ollama.wait_for_request("/api/chat", count=2)
        assert len(comfy.requests_to("/free")) >= 1  # the pre-chat check asked for room
        job = services.gpu_coordinator.before_image_job("sdxl")
        assert "llama3.2:latest" in fake_ollama.running_models(), job.message
        assert "llava:latest" in fake_ollama.running_models(), job.message
        assert not [r for r in fake_ollama.requests_to("/api/chat")
                    if (r.json or {}).get("keep_alive") == 0]
    finally:
        services.arena.stop(run_id)
        services.images.close()
