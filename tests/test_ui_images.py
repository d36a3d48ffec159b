"""The Images tab: display helpers as plain functions, and its handlers driven directly
(built in a Blocks, not launched) against the fake ComfyUI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from studio.config import Settings
from studio.images.live_job import ItemProgress, JobSnapshot, ShownImage
from studio.images.workflows import load_templates
from studio.store.images import GalleryImage, GalleryPage
from studio.ui import images as tab
from studio.ui import images_values as values

WAIT = 10


def snap(status="running", current=None, **kwargs) -> JobSnapshot:
    values = dict(job_id="j1", user="owner", title="a fox", workflow="sd15_txt2img", status=status,
                  total=1, done=0, failed=0, cancelled=0, images=(), current=current,
                  waiting_ahead=None, preview=None, preview_version=0, error="", version=1)
    values.update(kwargs)
    return JobSnapshot(**values)


def gallery_image(**kwargs) -> GalleryImage:
    values = dict(id=1, job_id="j", item_id=1, user="owner", created_at="2025-01-31T09:15:02.123Z",
                  path="2025/01/a.png", thumb="thumbs/2025/01/a.webp", width=512, height=512,
                  bytes=1000, prompt="a fox", negative="blurry", seed=42, workflow="sd15_txt2img",
                  model="v1-5.safetensors", params={"steps": 20, "cfg": 7.0}, graph={},
                  timings={"execution_s": 3.2, "total_s": 4.0}, comfy_prompt_id="p",
                  comfy_filename="x.png")
    values.update(kwargs)
    return GalleryImage(**values)


# ------------------------------------------------------------------ display helpers


@pytest.mark.parametrize("snapshot, text, state", [
    (None, "Ready.", "idle"),
    (snap("queued", waiting_ahead=3), "Waiting for the GPU: 3 images ahead.", "waiting"),
    (snap(current=ItemProgress(1, "queued", position=2)), "In ComfyUI's queue: 2 jobs ahead.",
     "queued"),
    (snap(current=ItemProgress(1, "queued", position=0)), "In ComfyUI's queue: next.", "queued"),
    (snap(current=ItemProgress(1, "running", node="3", node_class="KSampler", step=5, steps=20)),
     "Step 5 of 20 · KSampler (node 3)", "running"),
    (snap(current=ItemProgress(1, "running", node="8", node_class="VAEDecode")),
     "Running VAEDecode (node 8)…", "running"),
    (snap(current=ItemProgress(1, "storing")), "Saving the image…", "storing"),
    (snap(current=ItemProgress(1, "resumed")), "Picked up after a studio restart", "resumed"),
    (snap("done", done=1, images=(ShownImage(1, "/a.png", "/a.webp", "seed 1"),)),
     "Done: 1 image.", "done"),
    (snap("failed", error="ComfyUI failed at Node 3 <KSampler>"),
     "Failed: ComfyUI failed at Node 3 &lt;KSampler&gt;", "failed"),
    (snap("cancelled", error="Cancelled."), "Cancelled.", "cancelled"),
])
def test_ui_images_progress_html_says_where_the_job_stands(snapshot, text, state):
    html = values.progress_html(snapshot)
    assert text in html and f"data-state='{state}'" in html


def test_ui_images_progress_html_has_step_and_job_bars():
    html = values.progress_html(snap(total=4, done=1, current=ItemProgress(
        2, "running", node="3", node_class="KSampler", step=7, steps=20)))
    assert "Image 2 of 4 · Step 7 of 20" in html
    assert "<progress class='img-steps' value='7' max='20'" in html
    assert "<progress class='img-job' value='1' max='4'" in html
    assert "data-step='7' data-steps='20'" in html


def test_ui_images_details_show_every_parameter_and_escape_prompt_text():
    text = values.image_details(gallery_image(prompt="<script>alert(1)</script> *bold*"))
    assert "<script>" not in text and "&lt;script&gt;" in text and "\\*bold\\*" in text
    assert "seed 42" in text and "512×512" in text and "steps 20" in text and "cfg 7.0" in text
    assert "ran 3.2 s" in text


def test_ui_images_details_name_the_workflow_by_its_title():
    """Issue 14, item 21: not the internal name custom_empty_invert_api."""
    image = gallery_image(workflow="custom_empty_invert_api", seed=None, prompt="",
                          params={"workflow_title": "empty invert api (custom)"})
    assert "workflow empty invert api (custom)" in values.image_details(image)
    assert "workflow Renamed" in values.image_details(image, "Renamed")
    assert "custom\\_empty" not in values.image_details(image)
    assert values.gallery_value(GalleryPage([image], 1, 1, 48), lambda i: "t")[0][1] == (
        "empty invert api (custom)")
    assert values.gallery_filter_choices(["custom_x"], [], {"custom_x": "X (custom)"})[0] == [
        ("All workflows", ""), ("X (custom)", "custom_x")]


def test_ui_images_gallery_value_uses_thumbnails_and_page_label():
    page = GalleryPage([gallery_image(), gallery_image(id=2, params={"prompt_typed": "typed"})],
                       total=130, page=2, per_page=48)
    value = values.gallery_value(page, lambda image: f"/data/outputs/{image.thumb}")
    assert value == [("/data/outputs/thumbs/2025/01/a.webp", "a fox"),
                     ("/data/outputs/thumbs/2025/01/a.webp", "typed")]
    assert values.page_label(page) == "Page 2 of 3 · 130 images"


TEMPLATES = load_templates(Path(__file__).resolve().parent.parent / "workflows")
PARAMS = ("steps", "cfg", "checkpoint", "denoise", "lora_name")


def test_ui_images_default_workflow_is_sd15_else_the_first():
    assert values.default_workflow([("B", "b"), ("SD", "sd15_txt2img")]) == "sd15_txt2img"
    assert values.default_workflow([("B", "b"), ("C", "c")]) == "b"
    assert values.default_workflow([]) is None


def test_ui_images_comfyui_choices_fall_back_for_samplers_only():
    choices = values.comfyui_choices({"checkpoints": ("a.safetensors",)})
    assert choices["checkpoints"] == ["a.safetensors"] and choices["loras"] == []
    assert choices["samplers"] == values.FALLBACK_SAMPLERS
    assert choices["schedulers"] == values.FALLBACK_SCHEDULERS


def test_ui_images_workflow_fields_replace_a_checkpoint_comfyui_lacks():
    fields = values.workflow_fields(TEMPLATES["sd15_txt2img"], {"checkpoints": ["mine.ckpt"]},
                                    PARAMS)
    assert fields["checkpoint"] == (True, "mine.ckpt")
    assert fields["steps"][0] and not fields["denoise"][0] and not fields["lora_name"][0]


def test_ui_images_workflow_fields_show_denoise_only_with_an_input_image():
    fields = values.workflow_fields(TEMPLATES["img2img"], {}, PARAMS)
    assert fields["denoise"][0] is True


def test_ui_images_workflow_info_lists_what_it_fills():
    info = values.workflow_info(TEMPLATES["sd15_txt2img"])
    assert "<small>Fills: " in info and "prompt" in info and "filename_prefix" not in info


def test_ui_images_custom_workflow_note_says_what_was_found_and_refused():
    note = values.custom_workflow_note(TEMPLATES["sd15_txt2img"], "Node 4 <x>")
    assert note.startswith("Added **") and "prompt (" in note
    assert note.endswith("⚠ Node 4 &lt;x&gt;")
    assert "⚠" not in values.custom_workflow_note(TEMPLATES["sd15_txt2img"])


def test_ui_images_reuse_values_put_back_what_was_typed(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"png")
    image = gallery_image(seed=None, params={"prompt_typed": "a fox, typed", "steps": 9,
                                             "cfg": None, "input_file": str(source)})
    assert values.reuse_values(image, PARAMS) == {
        "prompt": "a fox, typed", "negative": "blurry", "style": "", "seed": -1, "steps": 9,
        "input_image": str(source)}
    source.unlink()
    assert "input_image" not in values.reuse_values(image, PARAMS)


def test_ui_images_gallery_filter_choices_start_with_all():
    assert values.gallery_filter_choices(["w"], []) == ([("All workflows", ""), ("w", "w")],
                                                        [("All models", "")])


@pytest.mark.parametrize("outcome, expected", [
    (SimpleNamespace(needs_confirmation=True, outcome="ask", message="Full at http://c:1."),
     values.Notice("Full at ComfyUI. To make room, press \"Unload idle Ollama models\" in the "
                   "Models tab; the job goes ahead meanwhile.", warning=True)),
    (SimpleNamespace(needs_confirmation=False, outcome="unloaded", message="Unloaded x."),
     values.Notice("Unloaded x.")),
    (SimpleNamespace(needs_confirmation=False, outcome="fits", message="Fits."), None),
])
def test_ui_images_gpu_room_notice_says_what_the_coordinator_did(outcome, expected):
    coordinator = SimpleNamespace(before_image_job=lambda family, host=None: outcome)
    library = SimpleNamespace(get=lambda name: TEMPLATES[name])
    public = lambda text: text.replace("http://c:1", "ComfyUI")  # noqa: E731
    assert values.gpu_room_notice(coordinator, library, "sd15_txt2img", public) == expected


def test_ui_images_gpu_room_notice_is_none_when_asking_fails(caplog):
    def broken(family, host=None):
        raise RuntimeError("no NVML")
    coordinator = SimpleNamespace(before_image_job=broken)
    library = SimpleNamespace(get=lambda name: TEMPLATES[name])
    assert values.gpu_room_notice(coordinator, library, "sd15_txt2img", str) is None
    assert "GPU coordination before an image job failed" in caplog.text


def form(**overrides) -> dict:
    values = dict(workflow="sd15_txt2img", prompt="a fox", negative="", style="", seed=-1,
                  steps=3, cfg=7, sampler="euler", scheduler="normal", width=64, height=64,
                  batch_size=1, checkpoint="v1-5-pruned-emaonly.safetensors", denoise=1.0,
                  lora_name=None, lora_strength=0.8, control_strength=1.0, input_image=None,
                  batch_prompts="", seeds=1, sweep_param="", sweep_values="")
    values.update(overrides)
    return values


def test_ui_images_request_from_form_reads_batch_and_sweep():
    request = values.request_from_form(**form(batch_prompts="a fox\n\n a cat \n", seeds=2,
                                           sweep_param="cfg", sweep_values="5, 9", seed=None))
    assert request.all_prompts == ["a fox", "a cat"] and request.seeds == 2
    assert request.sweep_values == (5.0, 9.0) and request.seed == -1
    assert request.image_count == 8


# ------------------------------------------------------------------ handlers


def build(tmp_path, comfyui_url: str):
    from studio.services import build_services

    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "COMFYUI_URL": comfyui_url}, dotenv_path=None)
    services = build_services(settings)
    services.comfyui.poll_interval = 0.02
    with gr.Blocks() as demo:
        parts = tab.render(services)
    return services, parts, demo


@pytest.fixture
def ui(tmp_path, fake_comfyui):
    services, parts, demo = build(tmp_path, fake_comfyui.url)
    yield services, parts
    services.images.close(cancel=True)


@pytest.fixture
def ui_down(tmp_path):
    services, parts, demo = build(tmp_path, "http://127.0.0.1:9")
    yield services, parts
    services.images.close(cancel=True)


def updates_by_elem(updates: dict) -> dict:
    return {getattr(k, "elem_id", None): v for k, v in updates.items()}


def run(gen) -> list[tuple]:
    return list(gen)


def test_ui_images_load_fills_lists_from_comfyui_and_leaves_values_alone(ui):
    services, parts = ui
    updates = parts.handlers.on_load()
    by_id = updates_by_elem(updates)
    assert "v1-5-pruned-emaonly.safetensors" in by_id["img-checkpoint"]["choices"]
    assert "value" not in by_id["img-workflow"] and by_id["img-banner"] == ""
    # The reply may land after the person typed: it carries no form value (issue 14, 18).
    assert not any("value" in u for u in updates.values() if isinstance(u, dict))
    assert "img-width" not in by_id
    assert by_id["img-workflow-forms"]["test_invert"]["values"]["width"] == 64
    assert ("Photo", "photo") in [tuple(c) for c in parts.components.style.choices]


def test_ui_images_page_starts_with_the_default_workflow_form(ui):
    services, parts = ui
    c = parts.components
    assert c.workflow.value == "sd15_txt2img" and c.width.value == 512 and c.steps.value == 20
    assert c.checkpoint.value == "v1-5-pruned-emaonly.safetensors"
    assert c.prompt.visible and not c.denoise.visible


def test_ui_images_workflow_forms_set_sizes_and_show_each_workflows_inputs():
    forms = values.workflow_forms(TEMPLATES, {"checkpoints": ["mine.ckpt"]}, PARAMS + (
        "width", "height"))
    assert forms["sdxl_txt2img"]["values"]["width"] == 1024
    assert forms["sdxl_txt2img"]["values"]["checkpoint"] == "mine.ckpt"
    assert forms["sdxl_txt2img"]["stock"]["checkpoint"] != "mine.ckpt"
    assert forms["txt2img_lora"]["shown"]["lora_row"] is True
    invert = forms["test_invert"]
    assert invert["values"]["width"] == 64 and not invert["shown"]["prompt"]
    assert not invert["shown"]["seed"] and not invert["shown"]["steps"]
    assert "Fills:" in invert["info"]
    json.dumps(forms)  # the page's table: plain JSON


def test_ui_images_workflow_form_js_fills_every_part_it_is_given():
    js = values.workflow_form_js(["info", "width"])
    assert js.startswith("(name, forms) =>") and '["info", "width"]' in js


def test_ui_images_comfyui_down_banner_says_how_to_start_it(ui_down):
    services, parts = ui_down
    banner = updates_by_elem(parts.handlers.on_load())["img-banner"]
    assert "ComfyUI isn't available" in banner and "python main.py" in banner
    assert "127.0.0.1:9" not in banner and "COMFYUI_URL" in banner


def test_ui_images_generate_with_comfyui_down_is_a_clear_error(ui_down):
    services, parts = ui_down
    with pytest.raises(gr.Error) as info:
        run(parts.handlers.on_generate(**form()))
    assert "python main.py" in info.value.message and "127.0.0.1:9" not in info.value.message


@pytest.mark.parametrize("overrides, message", [
    ({"width": 500}, "isn't a multiple of 8"),
    ({"steps": 0}, "Steps must be at least 1"),
    ({"prompt": ""}, "Type a prompt first"),
    ({"sweep_param": "cfg", "sweep_values": "5, lots"}, "cfg must be a number"),
    ({"checkpoint": "nope.safetensors"}, "checkpoint 'nope.safetensors' isn't available"),
])
def test_ui_images_bad_input_is_refused_before_queueing(ui, fake_comfyui, overrides, message):
    services, parts = ui
    before = len(fake_comfyui.requests_to("/prompt", "POST"))
    with pytest.raises(gr.Error) as info:
        run(parts.handlers.on_generate(**form(**overrides)))
    assert message in info.value.message
    assert len(fake_comfyui.requests_to("/prompt", "POST")) == before


def test_ui_images_generate_streams_progress_then_result_then_gallery(ui):
    services, parts = ui
    outputs = run(parts.handlers.on_generate(**form(prompt="a glass fox", seed=5)))
    progress, preview, results, cancel, job_picker, job_id = outputs[0]
    assert "data-job=" in progress and job_id
    assert "Done: 1 image." in outputs[-1][0]
    results = [o[2] for o in outputs if isinstance(o[2], list) and o[2]]
    assert [Path(path).parent.parent.parent.name for path, _ in results[-1]] == ["outputs"]
    gallery, label, page, ids = parts.handlers.gallery_outputs("glass", "", "", 1, "owner")
    assert len(ids) == 1 and label.startswith("Page 1 of 1")
    assert gallery[0][0].endswith(".webp")


def test_ui_images_select_reuse_and_delete_a_gallery_image(ui):
    services, parts = ui
    run(parts.handlers.on_generate(**form(prompt="reuse me", seed=77, steps=4, style="anime")))
    _, _, _, ids = parts.handlers.gallery_outputs("reuse", "", "", 1, "owner")

    class Select:
        index = 0

    detail, full, meta, download, selected, _, star = parts.handlers.on_select(ids, Select())
    assert Path(full).suffix == ".png" and "seed 77" in meta and selected == ids[0]
    assert star == "☆ Favourite"
    filled = updates_by_elem(parts.handlers.on_reuse(selected, {}))
    assert filled["img-prompt"] == "reuse me" and filled["img-seed"] == 77
    assert filled["img-style"] == "anime" and filled["img-steps"]["value"] == 4
    assert filled["img-workflow"] == "sd15_txt2img"
    parts.handlers.on_delete(selected, "reuse", "", "", 1)
    assert parts.handlers.gallery_outputs("reuse", "", "", 1, "owner")[3] == []
    assert not Path(full).exists()


def test_ui_images_input_upload_refuses_non_images_and_huge_ones(ui, tmp_path):
    from tests.test_images import png_header_only

    services, parts = ui
    text = tmp_path / "notes.png"
    text.write_text("hello")
    value, note = parts.handlers.on_input_upload(str(text))
    assert value is None and "isn't an image" in note
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(10_000, 5_000))
    value, note = parts.handlers.on_input_upload(str(huge))
    assert value is None and "50.0 megapixels" in note
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 24)).save(good)
    assert parts.handlers.on_input_upload(str(good))[1].startswith("40×24")


def test_ui_images_custom_workflow_upload(ui, tmp_path):
    services, parts = ui
    ui_format = tmp_path / "ui.json"
    ui_format.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.warns(UserWarning) as warned:
        refused = updates_by_elem(parts.handlers.on_workflow_upload(str(ui_format), {}))
    # The sentence, the box emptied, nothing else touched (issue 14, item 19).
    assert set(refused) == {"img-workflow-found", "img-workflow-upload"}
    assert refused["img-workflow-upload"] is None
    assert "UI workflow" in refused["img-workflow-found"]
    assert "Export (API)" in refused["img-workflow-found"]
    assert "UI workflow" in str(warned[0].message)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"1": ')
    with pytest.warns(UserWarning):
        refused = updates_by_elem(parts.handlers.on_workflow_upload(str(bad_json), {}))
    assert "isn't valid JSON" in refused["img-workflow-found"]
    api = tmp_path / "portrait.json"
    api.write_text(json.dumps(services.images.library.get("sdxl_txt2img").graph))
    by_id = updates_by_elem(parts.handlers.on_workflow_upload(str(api), {}))
    assert by_id["img-workflow"]["value"] == "custom_portrait"
    assert "prompt (6.text)" in by_id["img-workflow-found"]
    assert by_id["img-width"]["value"] == 1024


def test_ui_images_map_an_uploads_inputs_in_the_tab(ui, tmp_path):
    """Issue 14, item 20: map an imported workflow's inputs in the UI, not by hand."""
    services, parts = ui
    api = tmp_path / "empty_invert_api.json"
    api.write_text(json.dumps(services.images.library.get("test_invert").graph))
    uploaded = updates_by_elem(parts.handlers.on_workflow_upload(str(api), {}))
    assert uploaded["img-map"]["visible"] is True
    assert "no prompt or seed input yet" in uploaded["img-map-info"]
    assert ("1 Solid colour: color (16711680)", "1.color") in uploaded["img-map-seed"]["choices"]
    assert uploaded["img-map-seed"]["value"] == ""
    assert uploaded["img-seed"]["visible"] is False
    name = uploaded["img-workflow"]["value"]
    mapping = dict(map_prompt="", map_negative="", map_seed="1.color", map_width="1.width",
                   map_height="", map_steps="")
    with pytest.warns(UserWarning, match="has no node '9'"):
        refused = updates_by_elem(parts.handlers.on_map_inputs(name, {}, **{
            **mapping, "map_seed": "9.seed"}))
    assert set(refused) == {"img-map-info"} and "⚠" in refused["img-map-info"]
    saved = updates_by_elem(parts.handlers.on_map_inputs(name, {}, **mapping))
    assert saved["img-seed"]["visible"] is True and saved["img-width"]["value"] == 64
    again = updates_by_elem(parts.handlers.on_map_inputs(name, {}, **{
        **mapping, "map_height": "1.height"}))
    assert again["img-height"]["value"] == 64
    assert "value" not in again["img-width"]  # shown before: what was typed stays
    assert saved["img-map-seed"]["value"] == "1.color"
    assert "seed" in saved["img-workflow-forms"][name]["shown"] and (
        saved["img-workflow-forms"][name]["shown"]["seed"])
    assert updates_by_elem(parts.handlers.on_inputs_panel("sd15_txt2img")) == {
        "img-map": {"__type__": "update", "visible": False}}
    assert updates_by_elem(parts.handlers.on_inputs_panel(name))["img-map"]["visible"]


def test_ui_images_tab_config_never_holds_comfyui_address(ui, fake_comfyui):
    services, parts = ui
    run(parts.handlers.on_generate(**form()))
    with gr.Blocks() as demo:
        tab.render(services)
    config = json.dumps(demo.get_config_file(), default=str)
    assert fake_comfyui.url not in config and f"127.0.0.1:{fake_comfyui.port}" not in config


def test_ui_images_whole_app_config_never_holds_comfyui_address(tmp_path, fake_comfyui):
    from studio.services import build_services
    from studio.ui.app import build_app

    settings = Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                  "COMFYUI_URL": fake_comfyui.url}, dotenv_path=None)
    services = build_services(settings)
    try:
        config = json.dumps(build_app(services).get_config_file(), default=str)
    finally:
        services.images.close(cancel=True)
    assert f"127.0.0.1:{fake_comfyui.port}" not in config


@pytest.mark.parametrize("size, expected", [((64, 48), (256, 192)), ((512, 512), (512, 512)),
                                            ((100, 30), (300, 90))])
def test_ui_images_small_previews_are_scaled_up_to_be_seen(size, expected):
    assert values.preview_image(Image.new("RGB", size)).size == expected


def test_ui_images_reuse_keeps_the_workflow_controls_visible(ui, tmp_path):
    services, parts = ui
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (0, 0, 255)).save(source)
    run(parts.handlers.on_generate(**form(workflow="img2img", input_image=str(source),
                                          denoise=0.4)))
    [image] = services.images.store.gallery().images
    filled = updates_by_elem(parts.handlers.on_reuse(image.id, {}))
    assert filled["img-denoise"] == {"__type__": "update", "visible": True, "value": 0.4}
    assert Path(filled["img-input"]).read_bytes() == source.read_bytes()


def test_ui_images_finished_job_is_accounted(ui):
    services, parts = ui
    run(parts.handlers.on_generate(**form(prompt="count me")))
    job_id = services.images.store.list_jobs(limit=1)[0].id
    rows = [r for r in services.accounting.ledger.usage_records(backend="comfyui") if r.job_id == job_id]
    [row] = rows
    assert row.kind == "image" and row.images == 1 and row.model == "v1-5-pruned-emaonly.safetensors"


def test_ui_images_favourite_is_kept_by_output_retention(ui):
    from studio.models.hygiene import retention_plan, scan_outputs
    from studio.store.models import ModelsStore

    services, parts = ui
    run(parts.handlers.on_generate(**form(prompt="keep this one", seed=5, steps=2)))
    run(parts.handlers.on_generate(**form(prompt="let this one go", seed=6, steps=2)))
    _, _, _, keep_ids = parts.handlers.gallery_outputs("keep", "", "", 1, "owner")
    assert parts.handlers.on_favourite(keep_ids[0]) == "★ Favourite"
    favourites = ModelsStore(services.store).favourite_output_paths()
    kept = services.images.store.get_image(keep_ids[0])
    assert kept.favourite and kept.path in favourites and kept.thumb in favourites
    # Keep at most 1 byte: every output goes, except the favourite's files.
    files = scan_outputs(services.outputs_dir, favourites)
    plan = retention_plan(files, keep_bytes=1, now=time.time())
    doomed = [f.path for f in plan.delete]
    assert doomed and not any(p.endswith(kept.path) or p.endswith(kept.thumb) for p in doomed)
    assert parts.handlers.on_favourite(keep_ids[0]) == "☆ Favourite"
