"""studio.images.workflows and .validation: templates, rendering, checks against /object_info,
format detection (pure; one test asks the fake ComfyUI through the real client)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from studio.clients.comfyui import ComfyUIClient
from studio.images import validation, workflows
from studio.errors import InvalidInput
from studio.images.workflows import Target, TemplateError
from tests.fakes.comfyui_server import FakeComfyUI

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
TEMPLATE_FILES = sorted(p.stem for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".params.json"))

SAMPLE_PARAMS = {
    "prompt": "a lighthouse at dusk", "negative": "blurry", "seed": 1234, "steps": 12, "cfg": 6.5,
    "sampler": "euler_ancestral", "scheduler": "karras", "width": 768, "height": 512,
    "batch_size": 2, "checkpoint": "v1-5-pruned-emaonly.safetensors", "denoise": 0.7,
    "lora_name": "my_style.safetensors", "lora_strength": 0.5, "input_image": "cat.png",
    "control_strength": 0.9, "color": 0x00FF00, "filename_prefix": "pytest",
}


@pytest.fixture(scope="module")
def templates():
    return workflows.load_templates(WORKFLOWS)


@pytest.fixture(scope="module")
def object_info():
    """The recorded /object_info with model lists as the fake serves them (cat.png uploaded)."""
    fake = FakeComfyUI()
    fake.add_input_image("cat.png", b"")
    return fake.object_info()


def write_template(directory: Path, name: str, graph: dict, sidecar: dict | None) -> None:
    (directory / f"{name}.json").write_text(json.dumps(graph))
    if sidecar is not None:
        (directory / f"{name}.params.json").write_text(json.dumps(sidecar))


TINY_GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                            "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


def test_load_templates_finds_the_required_set(templates):
    assert {"sd15_txt2img", "sdxl_txt2img", "img2img", "txt2img_lora", "controlnet_canny",
            "inpaint", "test_invert"} <= set(templates)


@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_template_renders_with_its_params_and_validates(templates, object_info, name):
    template = templates[name]
    params = {k: v for k, v in SAMPLE_PARAMS.items() if k in template.params}
    graph = workflows.render(template, params)
    assert validation.validate(graph, object_info) == []
    for param, value in params.items():
        for target in template.mapping[param]:
            assert graph[target.node]["inputs"][target.input] == value


@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_template_defaults_alone_validate(templates, object_info, name):
    template = templates[name]
    required = {p: SAMPLE_PARAMS[p] for p in template.required}
    assert validation.validate(workflows.render(template, required), object_info) == []


@pytest.mark.parametrize("name, size", [("sd15_txt2img", 512), ("sdxl_txt2img", 1024),
                                        ("txt2img_lora", 512), ("controlnet_canny", 512)])
def test_render_uses_family_default_size(templates, name, size):
    template = templates[name]
    graph = workflows.render(template, {p: SAMPLE_PARAMS[p] for p in template.required})
    target = templates[name].mapping["width"][0]
    assert graph[target.node]["inputs"]["width"] == size


def test_render_returns_new_dict_and_leaves_template_alone(templates):
    template = templates["sd15_txt2img"]
    before = copy.deepcopy(template.graph)
    graph = workflows.render(template, {"prompt": "new text", "seed": 7})
    graph["3"]["inputs"]["steps"] = 999
    assert template.graph == before
    assert graph is not template.graph


def test_render_writes_lora_strength_to_model_and_clip(templates):
    graph = workflows.render(templates["txt2img_lora"], {"prompt": "x", "lora_name": "my_style.safetensors",
                                                         "lora_strength": 0.25})
    assert graph["10"]["inputs"]["strength_model"] == 0.25
    assert graph["10"]["inputs"]["strength_clip"] == 0.25


def test_render_skips_none_values(templates):
    graph = workflows.render(templates["sd15_txt2img"], {"prompt": "x", "seed": None})
    assert graph["3"]["inputs"]["seed"] == templates["sd15_txt2img"].graph["3"]["inputs"]["seed"]


@pytest.mark.parametrize("param, given, stored", [("steps", 20.0, 20), ("cfg", "7", 7.0), ("seed", "42", 42),
                                                  ("width", 640, 640), ("prompt", 5, "5")])
def test_render_coerces_parameter_types(templates, param, given, stored):
    template = templates["sd15_txt2img"]
    graph = workflows.render(template, {"prompt": "x", param: given})
    target = template.mapping[param][0]
    assert graph[target.node]["inputs"][target.input] == stored


@pytest.mark.parametrize("param, value", [("steps", 2.5), ("cfg", "lots"), ("seed", True), ("width", "wide")])
def test_render_refuses_badly_typed_values(templates, param, value):
    with pytest.raises(InvalidInput, match=param):
        workflows.render(templates["sd15_txt2img"], {"prompt": "x", param: value})


def test_render_refuses_a_parameter_the_template_lacks(templates):
    with pytest.raises(InvalidInput, match="lora_name") as info:
        workflows.render(templates["sd15_txt2img"], {"prompt": "x", "lora_name": "a.safetensors"})
    assert "accepts" in str(info.value)


def test_render_refuses_missing_required_parameter(templates):
    with pytest.raises(InvalidInput, match="input_image"):
        workflows.render(templates["img2img"], {"prompt": "x"})


def test_load_templates_names_file_and_node_for_unknown_node(tmp_path):
    write_template(tmp_path, "broken", TINY_GRAPH, {"params": {"width": "99.width"}})
    with pytest.raises(TemplateError) as info:
        workflows.load_templates(tmp_path)
    assert "broken.json" in str(info.value) and "node 99" in str(info.value)


def test_load_templates_names_file_and_node_for_missing_input(tmp_path):
    write_template(tmp_path, "broken", TINY_GRAPH, {"params": {"width": "1.wdth"}})
    with pytest.raises(TemplateError) as info:
        workflows.load_templates(tmp_path)
    assert "broken.json" in str(info.value) and "node 1" in str(info.value) and "wdth" in str(info.value)


def test_load_templates_refuses_a_graph_without_sidecar(tmp_path):
    write_template(tmp_path, "lonely", TINY_GRAPH, None)
    with pytest.raises(TemplateError, match="lonely.params.json"):
        workflows.load_templates(tmp_path)


def test_load_templates_refuses_ui_format(tmp_path):
    write_template(tmp_path, "ui", {"nodes": [], "links": [], "version": 0.4}, {"params": {}})
    with pytest.raises(TemplateError, match="Save \\(API\\)"):
        workflows.load_templates(tmp_path)


def test_render_catches_a_mapping_broken_after_loading(tmp_path):
    template = workflows.Template(name="t", graph=TINY_GRAPH, mapping={"width": (Target("7", "width"),)},
                                  source="workflows/t.json")
    with pytest.raises(TemplateError, match="workflows/t.json.*7.width"):
        workflows.render(template, {"width": 64})


# ------------------------------------------------------------------ validate

def sd15(templates) -> dict:
    return workflows.render(templates["sd15_txt2img"], {"prompt": "x"})


@pytest.mark.parametrize("change, expected", [
    (lambda g: g["4"]["inputs"].update(ckpt_name="missing.safetensors"), "checkpoint 'missing.safetensors'"),
    (lambda g: g["3"]["inputs"].update(sampler_name="warp_drive"), "sampler 'warp_drive'"),
    (lambda g: g["3"]["inputs"].update(steps=0), "steps must be at least 1"),
    (lambda g: g["3"]["inputs"].update(cfg=250.0), "above the maximum of 100.0"),
    (lambda g: g["3"]["inputs"].update(denoise=-0.5), "below the minimum of 0.0"),
    (lambda g: g["5"]["inputs"].update(width=500), "width 500 isn't a multiple of 8"),
    (lambda g: g["5"]["inputs"].update(height=300), "height 300 isn't a multiple of 8"),
    (lambda g: g["3"].update(class_type="KSamplerTurbo9000"), "node type this ComfyUI doesn't have"),
    (lambda g: g["8"]["inputs"].pop("vae"), "missing its required input 'vae'"),
    (lambda g: g["8"]["inputs"].update(samples=["77", 0]), "linked to node 77"),
    (lambda g: g.pop("9"), "no output node"),
])
def test_validate_reports_problem(templates, object_info, change, expected):
    graph = sd15(templates)
    change(graph)
    problems = validation.validate(graph, object_info)
    assert any(expected in p for p in problems), problems


def test_validate_names_the_node_in_each_problem(templates, object_info):
    graph = sd15(templates)
    graph["4"]["inputs"]["ckpt_name"] = "nope.ckpt"
    assert validation.validate(graph, object_info)[0].startswith('Node 4 (CheckpointLoaderSimple "Load Checkpoint")')


def test_validate_says_where_models_go_when_none_are_installed(templates):
    empty = FakeComfyUI(models={}).object_info()
    problems = validation.validate(sd15(templates), empty)
    assert any("models/checkpoints" in p for p in problems)


def test_validate_checks_lora_against_the_list(templates, object_info):
    graph = workflows.render(templates["txt2img_lora"], {"prompt": "x", "lora_name": "unknown.safetensors"})
    assert any("LoRA 'unknown.safetensors'" in p for p in validation.validate(graph, object_info))


def test_validate_accepts_new_uploads_for_load_image(templates, object_info):
    graph = workflows.render(templates["img2img"], {"prompt": "x", "input_image": "just_uploaded.png"})
    assert validation.validate(graph, object_info) == []


@pytest.mark.parametrize("spec", [[["a", "b"], {}], ["COMBO", {"options": ["a", "b"]}]])
def test_validate_handles_both_combo_spellings(spec):
    info = {"Pick": {"input": {"required": {"choice": spec}}, "output": [], "output_node": True}}
    assert validation.validate({"1": {"class_type": "Pick", "inputs": {"choice": "a"}}}, info) == []
    assert validation.validate({"1": {"class_type": "Pick", "inputs": {"choice": "z"}}}, info) != []


def test_validate_width_not_multiple_of_8_is_fine_for_pixel_nodes(templates, object_info):
    graph = workflows.render(templates["test_invert"], {"width": 50, "height": 30})
    assert validation.validate(graph, object_info) == []



def test_server_problems_refreshes_object_info_when_a_model_appears(templates):
    graph = workflows.render(templates["sd15_txt2img"], {"prompt": "x", "checkpoint": "new.safetensors"})
    with FakeComfyUI() as fake, ComfyUIClient(fake.url, timeout=5) as client:
        assert validation.server_problems(graph, client.object_info) != []
        fake.models["checkpoints"].append("new.safetensors")
        assert validation.server_problems(graph, client.object_info) == []
        assert len(fake.requests_to("/object_info")) == 3  # cached, refreshed, refreshed


# ------------------------------------------------------------------ formats

UI_WORKFLOW = {"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler"}],
               "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4}


@pytest.mark.parametrize("obj, expected", [(UI_WORKFLOW, True), ({"version": 1, "nodes": [], "links": []}, True),
                                           (TINY_GRAPH, False), ([], False), ("x", False)])
def test_is_ui_format(obj, expected):
    assert workflows.is_ui_format(obj) is expected


def test_parse_workflow_json_accepts_api_format():
    assert workflows.parse_workflow_json(json.dumps(TINY_GRAPH)) == TINY_GRAPH


def test_parse_workflow_json_unwraps_a_prompt_body():
    assert workflows.parse_workflow_json(json.dumps({"prompt": TINY_GRAPH, "client_id": "x"})) == TINY_GRAPH


def test_parse_workflow_json_refuses_ui_format_with_export_instructions():
    with pytest.raises(InvalidInput) as info:
        workflows.parse_workflow_json(json.dumps(UI_WORKFLOW))
    assert "Export (API)" in str(info.value) and "Dev mode" in str(info.value)


@pytest.mark.parametrize("text", ["{not json", b"\xff\xfe", ""])
def test_parse_workflow_json_refuses_invalid_json(text):
    with pytest.raises(InvalidInput, match="isn't valid JSON"):
        workflows.parse_workflow_json(text)


@pytest.mark.parametrize("obj", [{}, {"a": 1}, [1, 2], {"1": {"inputs": {}}}])
def test_parse_workflow_json_refuses_non_graphs(obj):
    with pytest.raises(InvalidInput, match="isn't a ComfyUI workflow"):
        workflows.parse_workflow_json(json.dumps(obj))


# ------------------------------------------------------------------ detect_inputs

def targets(mapping, param):
    return [str(t) for t in mapping.get(param, ())]


def test_detect_inputs_finds_the_default_graph(templates):
    found = workflows.detect_inputs(templates["sd15_txt2img"].graph)
    assert {p: targets(found, p) for p in found} == {
        "prompt": ["6.text"], "negative": ["7.text"], "seed": ["3.seed"], "steps": ["3.steps"],
        "cfg": ["3.cfg"], "sampler": ["3.sampler_name"], "scheduler": ["3.scheduler"],
        "denoise": ["3.denoise"], "width": ["5.width"], "height": ["5.height"],
        "batch_size": ["5.batch_size"], "checkpoint": ["4.ckpt_name"]}


def test_detect_inputs_follows_conditioning_through_controlnet(templates):
    found = workflows.detect_inputs(templates["controlnet_canny"].graph)
    assert targets(found, "prompt") == ["6.text"] and targets(found, "negative") == ["7.text"]


def test_detect_inputs_handles_sdxl_encoders_and_advanced_sampler():
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "xl.safetensors"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a", "text_l": "a", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad", "clip": ["1", 1]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "5": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["1", 0], "positive": ["2", 0],
              "negative": ["3", 0], "latent_image": ["4", 0], "noise_seed": 3, "steps": 30, "cfg": 5.0}},
    }
    found = workflows.detect_inputs(graph)
    assert targets(found, "prompt") == ["2.text_g", "2.text_l"]
    assert targets(found, "seed") == ["5.noise_seed"]
    assert targets(found, "width") == ["4.width"]


def test_detect_inputs_skips_linked_values():
    graph = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
             "2": {"class_type": "KSampler", "inputs": {"positive": ["3", 0], "negative": ["3", 0],
                                                         "seed": ["1", 0], "steps": 4}},
             "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}}}
    found = workflows.detect_inputs(graph)
    assert "seed" not in found and targets(found, "steps") == ["2.steps"]


def test_detect_inputs_returns_empty_for_graphs_without_sampler():
    assert workflows.detect_inputs(TINY_GRAPH) == {}


def test_template_from_graph_renders_detected_params(templates):
    custom = workflows.template_from_graph("upload", templates["sd15_txt2img"].graph)
    graph = workflows.render(custom, {"prompt": "from upload", "seed": 5})
    assert graph["6"]["inputs"]["text"] == "from upload" and graph["3"]["inputs"]["seed"] == 5


def test_random_seed_is_in_range():
    seeds = {workflows.random_seed() for _ in range(50)}
    assert all(0 <= s <= workflows.MAX_SEED for s in seeds) and len(seeds) > 1
