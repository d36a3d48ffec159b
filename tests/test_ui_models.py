"""The Models tab's handlers as plain functions, against the fake Ollama, the fake ComfyUI,
a local file server and a fake NVML (and NVML absent)."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from studio.clients.comfyui import ComfyUIClient
from studio.clients.ollama import OllamaClient
from studio.config import Settings
from studio.models.downloads import DownloadManager
from studio.events import ChatMessage
from studio.models.gpu import GpuMonitor
from studio.chat.router import Router
from studio.chat.streams import ChatStreams
from studio.models.gpu_coordinator import GpuCoordinator, ModelsInUse
from studio.clients.ollama import PullProgress
from studio.models.local import LocalModels
from studio.models.pulls import PullManager
from studio.chat.replies import ReplyManager
from studio.store.models import ModelsStore
from studio.ui import models, models_values
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.file_server import PAYLOAD, running_file_server
from tests.test_downloads import CHUNK, FullDiskWriter, local_client
from tests.test_gpu import RTX_3090, FakeNvml

WAIT = 10.0
DAY = 86_400


@pytest.fixture
def comfy():
    with FakeComfyUI() as fake:
        yield fake


@pytest.fixture
def file_server():
    with running_file_server({"/model.safetensors": PAYLOAD}) as srv:
        yield srv


@pytest.fixture
def models_dir(tmp_path):
    root = tmp_path / "comfy-models"
    for folder in ("checkpoints", "loras", "vae"):
        (root / folder).mkdir(parents=True)
    (root / "checkpoints" / "sd_xl_base_1.0.safetensors").write_bytes(b"x" * 3000)
    return root


def build(tmp_path, store, fake_ollama, comfy, *, models_dir=None, nvml=None, opener=None):
    settings = Settings(data_dir=str(tmp_path / "data"),
                        comfyui_models_dir=str(models_dir or ""), gpu_poll_seconds=1.0,
                        output_retention_days=30)
    ollama = OllamaClient(fake_ollama.url, timeout=10)
    comfyui = ComfyUIClient(comfy.url, timeout=5)
    gpu = GpuMonitor(nvml if nvml is not None else FakeNvml(init_error=9))
    models_store = ModelsStore(store)
    job_options = {"client_factory": local_client, "chunk_size": CHUNK}
    if opener is not None:
        job_options["opener"] = opener

    in_use = ModelsInUse()
    services = SimpleNamespace(
        settings=settings, store=store, ollama=ollama, comfyui=comfyui, gpu=gpu,
        downloads=DownloadManager(**job_options), pulls=PullManager(ollama.pull),
        replies=ReplyManager(ChatStreams(Router({"ollama": ollama}), in_use=in_use).open),
        models_store=models_store, models_in_use=in_use,
        local_models=LocalModels(ollama, models_store),
        outputs_dir=tmp_path / "data" / "outputs",
        gpu_coordinator=GpuCoordinator(policy="automatic", gpu=gpu, ollama=ollama,
                                       comfyui=comfyui, log=models_store,
                                       busy_models=in_use.names))
    with gr.Blocks() as demo:
        with gr.Tab("Models") as tab:
            parts = models.render(services, tab=tab)
    return services, parts, demo


def rebuild(ui):
    with gr.Blocks():
        return models.render(ui.services)


@pytest.fixture
def ui(tmp_path, store, fake_ollama, comfy, models_dir):
    services, parts, _demo = build(tmp_path, store, fake_ollama, comfy, models_dir=models_dir)
    return SimpleNamespace(services=services, parts=parts, ollama=fake_ollama, comfy=comfy,
                           models_dir=models_dir)


def html_of(value) -> str:
    return value if isinstance(value, str) else ""


def frame_col(frame: pd.DataFrame, col: str = "Name") -> list:
    return list(frame[col])


def update_choices(update) -> list:
    return [c[0] if isinstance(c, tuple) else c for c in update["choices"]]


# -- building ---------------------------------------------------------------------------------


def test_ui_models_builds_with_private_listeners(tmp_path, store, fake_ollama, comfy):
    _services, parts, demo = build(tmp_path, store, fake_ollama, comfy)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"models-ollama-table", "models-pull-name", "models-pull-btn", "models-jobs",
            "models-running", "models-gpu", "models-gpu-chart", "models-comfy-stats",
            "models-log", "models-comfy-files", "models-disk"} <= ids
    assert parts.timer.value == 1.0
    names = {fn.name for fn in demo.fns.values()}
    assert {"on_open", "on_pull", "on_gpu_tick", "on_download"} <= names
    assert all(fn.api_visibility == "private" for fn in demo.fns.values())


# -- opening the tab ----------------------------------------------------------------------------


def test_ui_models_open_fills_tables_and_panels(ui):
    first = next(ui.parts.on_open(None))
    values = dict(zip(range(len(first)), first))

    assert frame_col(values[0]) == ["llama3.2:latest", "llava:latest"]
    assert list(values[0].columns) == models_values.OLLAMA_HEADERS
    assert values[0].iloc[0]["Size"] == "2.0 GB" and values[0].iloc[0]["Quantization"] == "Q4_K_M"
    assert "No pulls or downloads yet" in values[5]
    assert values[7]["value"] == "checkpoints" and "custom_nodes" not in values[7]["choices"]
    assert frame_col(values[9], "File") == ["v1-5-pruned-emaonly.safetensors",
                                            "sd_xl_base_1.0.safetensors"]
    assert list(values[9]["Size on disk"]) == ["not on this disk", "2.9 KiB"]
    assert "checkpoints 2.9 KiB" in values[11] and "Free:" in values[11]
    assert "GPU readings are off" in values[13]
    assert "ComfyUI 0.8.0" in values[15] and "no GPU" in values[15]


def test_ui_models_open_says_when_ollama_is_down(ui):
    ui.ollama.stop()
    first = next(ui.parts.on_open(None))
    assert first[0].empty and "Can't reach Ollama" in first[4]


# -- pulls ------------------------------------------------------------------------------------


def test_ui_models_pull_ends_with_the_model_in_the_table(ui):
    ui.ollama.add_remote_model("mistral", size=4_000_000)
    ui.ollama.pull_delay = 0.01

    updates = list(ui.parts.on_pull("mistral"))

    assert "done" in updates[-1][0] and "Pulled mistral." in updates[-1][0]
    tables = [u[2] for u in updates if isinstance(u[2], pd.DataFrame)]
    assert "mistral:latest" in frame_col(tables[-1])


def test_ui_models_pull_shows_bytes_percent_speed_and_layer(ui):
    gate = threading.Event()
    ticks = iter(range(1000))

    def pull_fn(model):
        yield PullProgress("pulling manifest")
        yield PullProgress("pulling 0123456789ab", "sha256:0123456789abcdef", 4_000_000, 1_000_000)
        yield PullProgress("pulling 0123456789ab", "sha256:0123456789abcdef", 4_000_000, 2_000_000)
        gate.wait(WAIT)
        yield PullProgress("success")

    ui.services.pulls = PullManager(pull_fn, clock=lambda: float(next(ticks)))
    parts = rebuild(ui)
    follower = parts.on_pull("mistral")
    html = ""
    while "50%" not in html:
        html = next(follower)[0]
    gate.set()
    rest = list(follower)

    assert "Pull <b>mistral</b>" in html and "running" in html
    assert "layer 0123456789ab" in html and "1.9 MiB of 3.8 MiB" in html
    assert "976.6 KiB/s" in html and "<progress max='100' value='50.0'>" in html
    assert "Pulled mistral." in rest[-1][0]


def test_ui_models_pull_unknown_model_shows_ollamas_error(ui):
    with pytest.raises(gr.Error, match="pull model manifest: file does not exist"):
        list(ui.parts.on_pull("no-such-model"))
    html = models_values.jobs_html(ui.services.pulls.snapshots(), [])
    assert "failed" in html and "file does not exist" in html


def test_ui_models_pull_empty_name_is_refused(ui):
    with pytest.raises(gr.Error, match="Type the name of a model"):
        list(ui.parts.on_pull("  "))


def test_ui_models_cancel_a_running_pull(ui):
    ui.ollama.add_remote_model("mistral")
    ui.ollama.pull_delay = 0.05
    snap = ui.services.pulls.start("mistral")
    html, choices = ui.parts.on_cancel(f"pull:{snap.id}")
    assert "cancelled" in html and "pull it again to resume" in html
    assert choices["choices"] == []
    assert ui.ollama.client_gone.wait(WAIT)


def test_ui_models_reopened_page_follows_a_running_pull(ui):
    """A page opened mid-pull (a reload) sees the progress continue and the outcome."""
    gate = threading.Event()

    def pull_fn(model):
        yield PullProgress("pulling 0123456789ab", "sha256:0123456789abcdef", 1000, 400)
        gate.wait(WAIT)
        yield PullProgress("pulling 0123456789ab", "sha256:0123456789abcdef", 1000, 1000)
        ui.ollama.add_model("mistral")
        yield PullProgress("success")

    ui.services.pulls = PullManager(pull_fn)
    parts = rebuild(ui)
    ui.services.pulls.start("mistral")
    version = 0
    while not ui.services.pulls.snapshots()[0].completed:
        version = ui.services.pulls.jobs.wait_changed(version, WAIT)

    opened = parts.on_open(None)
    first = next(opened)
    assert "running" in first[5] and "40%" in first[5]
    assert first[6]["choices"] == [("Pull mistral", f"pull:{ui.services.pulls.snapshots()[0].id}")]
    gate.set()
    rest = list(opened)

    assert "Pulled mistral." in [u[5] for u in rest if isinstance(u[5], str)][-1]
    assert "mistral:latest" in frame_col([u[0] for u in rest if isinstance(u[0], pd.DataFrame)][-1])


# -- details, delete, copy, unload -----------------------------------------------------------


def test_ui_models_details_show_template_parameters_modelfile_license(ui):
    text = ui.parts.on_details("llama3.2:latest")
    assert "**Template**" in text and "<|start_header_id|>" in text
    assert "PARAMETER stop" in text and "LLAMA 3.2 COMMUNITY LICENSE" in text


def test_ui_models_delete_question_names_a_running_chat(ui):
    ui.ollama.queue_reply(ui.ollama.make_tokens(100), delay=0.05)
    reply = ui.services.replies.start("ollama:llama3.2", [ChatMessage("user", "hi")], None)
    try:
        ui.ollama.wait_for_request("/api/chat")
        question, row = ui.parts.on_delete_ask("llama3.2:latest")
    finally:
        ui.services.replies.stop(reply.reply_id)
    assert question["visible"] and row["visible"]
    assert "A chat is answering with llama3.2:latest right now" in question["value"]
    assert "2.0 GB" in question["value"]


def test_ui_models_delete_question_without_conflict(ui):
    question, _row = ui.parts.on_delete_ask("llava:latest")
    assert "A chat is answering" not in question["value"] and "can't be undone" in question["value"]


def test_ui_models_delete_removes_the_model(ui):
    result = ui.parts.on_delete("llava:latest")
    assert frame_col(result[0]) == ["llama3.2:latest"]
    assert ui.ollama.installed() == ["llama3.2:latest"]
    assert result[-1]["visible"] is False


def test_ui_models_copy_adds_a_tag_and_refuses_bad_names(ui):
    table = ui.parts.on_copy("llama3.2:latest", "llama3.2:backup")[0]
    assert "llama3.2:backup" in frame_col(table)
    with pytest.raises(gr.Error, match="no spaces"):
        ui.parts.on_copy("llama3.2:latest", "my copy")


def test_ui_models_unload_frees_and_logs(ui):
    list(ui.services.ollama.chat_stream("llama3.2", [ChatMessage("user", "hi")]))
    running_before = ui.parts.on_gpu_tick()[3]
    assert frame_col(running_before) == ["llama3.2:latest"]
    assert "kept loaded" not in running_before.iloc[0]["Loaded until"]

    running, unload_choices, log = ui.parts.on_unload("llama3.2:latest")

    assert running.empty and ui.ollama.running_models() == []
    assert list(log["Action"]) == ["unload ollama"] and list(log["Why"]) == ["by hand"]


def test_ui_models_free_comfyui_is_logged(ui):
    log = ui.parts.on_free_comfyui()
    assert len(ui.comfy.requests_to("/free")) == 1
    assert list(log["Outcome"]) == ["done"]


# -- GPU panel -----------------------------------------------------------------------------------


def test_ui_models_gpu_panel_without_nvml_says_so_plainly(ui):
    summary, plot, comfy_md, _running, _log = ui.parts.on_gpu_tick()
    assert summary.startswith("**GPU readings are off.**")
    assert "No NVIDIA driver" in summary or "not loaded" in summary
    assert plot["visible"] is False


def test_ui_models_gpu_panel_with_fake_nvml_shows_known_readings(tmp_path, store, fake_ollama,
                                                                 comfy, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)
    card = dict(RTX_3090, processes=[(4242, 5 * 2**30)])
    _services, parts, _demo = build(tmp_path, store, fake_ollama, comfy, nvml=FakeNvml([card]))

    summary, plot, _comfy, _running, _log = parts.on_gpu_tick()

    assert "NVIDIA GeForce RTX 3090" in summary
    assert "VRAM 6.0 GiB / 24.0 GiB (25%)" in summary
    assert "load 37%" in summary and "61 °C" in summary and "216 W / 350 W" in summary
    assert "ollama (5.0 GiB)" in summary
    assert "policy: **automatic**" in summary
    frame = plot["value"]
    assert plot["visible"] is True
    assert set(frame["series"]) == {"GPU 0 VRAM", "GPU 0 load"}
    assert sorted(frame["percent"]) == [25.0, 37.0]


def test_ui_models_shared_poll_fetches_once_per_interval():
    now = [0.0]
    calls = []
    poll = models_values.SharedPoll(lambda: calls.append(1) or len(calls), 3.0, clock=lambda: now[0])
    assert [poll.get(), poll.get()] == [1, 1]
    now[0] = 3.5
    assert poll.get() == 2


# -- ComfyUI models and downloads --------------------------------------------------------------


def test_ui_models_folder_lists_files(ui):
    frame, files, disk, note = ui.parts.on_folder("loras")
    assert frame_col(frame, "File") == ["my_style.safetensors"]
    assert files["choices"] == [("my_style.safetensors", "my_style.safetensors")] or \
        update_choices(files) == ["my_style.safetensors"]
    assert note == ""


def test_ui_models_download_lands_in_the_folder(ui, file_server):
    updates = list(ui.parts.on_download(file_server.url("/model.safetensors"), "loras", "", ""))
    assert "Download <b>model.safetensors</b> → loras" in updates[-1][0]
    assert "done" in updates[-1][0]
    assert (ui.models_dir / "loras" / "model.safetensors").read_bytes() == PAYLOAD


def test_ui_models_download_cut_then_resumed_by_downloading_again(ui, file_server):
    file_server.cut_after["/model.safetensors"] = 3 * CHUNK
    url = file_server.url("/model.safetensors")
    with pytest.raises(gr.Error, match="Start it again to resume"):
        list(ui.parts.on_download(url, "loras", "", ""))
    assert not (ui.models_dir / "loras" / "model.safetensors").exists()

    updates = list(ui.parts.on_download(url, "loras", "", ""))

    assert "Saved model.safetensors to loras." in updates[-1][0]
    assert (ui.models_dir / "loras" / "model.safetensors").read_bytes() == PAYLOAD
    assert file_server.requests[-1] == ("/model.safetensors", f"bytes={3 * CHUNK}-")


@pytest.mark.parametrize("url, folder, name, words", [
    ("ftp://example.com/x.safetensors", "loras", "", "Only http:// and https://"),
    ("file:///etc/passwd", "loras", "", "Only http:// and https://"),
    ("http://127.0.0.1/x", "loras", "../escape.safetensors", "plain name"),
    ("http://127.0.0.1/x", "loras", "sub/x.safetensors", "plain name"),
    ("http://127.0.0.1/x", "not_a_folder", "x.safetensors", "no model folder called"),
    ("http://127.0.0.1/x", "custom_nodes", "x.py", "extensions, not models"),
])
def test_ui_models_download_bad_input_is_refused(ui, url, folder, name, words):
    with pytest.raises(gr.Error, match=words):
        list(ui.parts.on_download(url, folder, name, ""))
    assert ui.services.downloads.list() == []


def test_ui_models_download_without_models_dir_names_the_setting(tmp_path, store, fake_ollama,
                                                                 comfy):
    _services, parts, _demo = build(tmp_path, store, fake_ollama, comfy)
    with pytest.raises(gr.Error, match="COMFYUI_MODELS_DIR"):
        list(parts.on_download("http://127.0.0.1/x.safetensors", "loras", "", ""))


def test_ui_models_download_disk_full_says_needed_and_leaves_nothing(
        tmp_path, store, fake_ollama, comfy, models_dir, file_server):
    opener = lambda path, mode: FullDiskWriter(open(path, mode), 2 * CHUNK)  # noqa: E731
    _services, parts, _demo = build(tmp_path, store, fake_ollama, comfy, models_dir=models_dir,
                                    opener=opener)
    with pytest.raises(gr.Error, match="ran out of space.*The whole file needs 40.0 KiB"):
        list(parts.on_download(file_server.url("/model.safetensors"), "loras", "", ""))
    assert os.listdir(models_dir / "loras") == []


def test_ui_models_download_bad_checksum_is_reported(ui, file_server):
    with pytest.raises(gr.Error, match="does not match its SHA-256"):
        list(ui.parts.on_download(file_server.url("/model.safetensors"), "vae", "", "0" * 64))
    assert os.listdir(ui.models_dir / "vae") == []


def test_ui_models_delete_a_model_file(ui):
    question, row = ui.parts.on_file_delete_ask("checkpoints", "sd_xl_base_1.0.safetensors")
    assert "2.9 KiB" in question["value"] and row["visible"]
    result = ui.parts.on_file_delete("checkpoints", "sd_xl_base_1.0.safetensors")
    assert not (ui.models_dir / "checkpoints" / "sd_xl_base_1.0.safetensors").exists()
    assert result[-1]["visible"] is False
    with pytest.raises(gr.Error, match="plain name"):
        ui.parts.on_file_delete("checkpoints", "../../etc")


# -- storage hygiene ------------------------------------------------------------------------------


def test_ui_models_retention_lists_then_deletes_only_confirmed_files(ui):
    out = ui.services.outputs_dir
    out.mkdir(parents=True)
    old, new = out / "old.png", out / "new.png"
    for path, age in ((old, 40), (new, 1)):
        path.write_bytes(b"x" * 100)
        os.utime(path, (time.time() - age * DAY,) * 2)

    summary, frame, shown, button = ui.parts.on_retention_check(30, 0)
    assert frame_col(frame, "File") == ["old.png"] and button["visible"]
    assert "1 file(s), 100 B, are due for deletion" in summary

    ui.parts.on_retention_delete(shown, 30, 0)
    assert not old.exists() and new.exists()


def test_ui_models_retention_delete_needs_a_check_first(ui):
    with pytest.raises(gr.Error, match="Check the outputs first"):
        ui.parts.on_retention_delete([], 30, 0)


def test_ui_models_unused_report_offers_then_deletes_on_confirmation(ui):
    old = ui.models_dir / "checkpoints" / "sd_xl_base_1.0.safetensors"
    os.utime(old, (time.time() - 90 * DAY,) * 2)

    note, frame, pick = ui.parts.on_unused(30)

    assert list(frame["Model"]) == ["checkpoints/sd_xl_base_1.0.safetensors"]
    assert "nothing is deleted without your confirmation" in note
    assert old.exists()  # a report never deletes
    keys = [value for _label, value in pick["choices"]]
    question, row = ui.parts.on_unused_delete_ask(keys)
    assert "Delete these 1 model(s)?" in question["value"] and old.exists()

    ui.parts.on_unused_delete(keys, 30)
    assert not old.exists()


def test_ui_models_unused_report_lists_files_in_subfolders_without_offering_them(ui):
    nested = ui.models_dir / "checkpoints" / "sdxl" / "old.safetensors"
    nested.parent.mkdir()
    nested.write_bytes(b"x" * 2000)
    for path in (nested, ui.models_dir / "checkpoints" / "sd_xl_base_1.0.safetensors"):
        os.utime(path, (time.time() - 90 * DAY,) * 2)

    note, frame, pick = ui.parts.on_unused(30)

    assert "checkpoints/sdxl/old.safetensors" in list(frame["Model"])
    keys = [value for _label, value in pick["choices"]]
    assert len(keys) == 1 and keys[0].endswith("checkpoints/sd_xl_base_1.0.safetensors")
    assert "1 file(s) in subfolders are listed only" in note


def test_ui_models_disk_files_skip_a_folder_linked_outside(tmp_path):
    from studio.ui.models_data import comfy_disk_files

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "v.pt").write_bytes(b"x")
    (tmp_path / "models" / "loras").symlink_to(elsewhere, target_is_directory=True)
    assert list(comfy_disk_files(str(tmp_path / "models"))) == ["vae/v.pt"]
