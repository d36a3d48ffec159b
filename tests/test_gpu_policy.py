"""studio.gpu_policy: table-driven decisions for sharing one card between Ollama and ComfyUI."""

from __future__ import annotations

import pytest

from studio.errors import InvalidInput
from studio.models.gpu_policy import (
    CHAT_HEADROOM_BYTES,
    LoadedModel,
    decide_before_chat,
    decide_before_image_job,
    needed_vram_for_family,
)

GiB = 2**30
IDLE_BIG = ("llama3:70b", 20 * GiB, False)
IDLE_MID = ("qwen3:8b", 6 * GiB, False)
IDLE_SMALL = ("phi3:mini", 3 * GiB, False)
BUSY_HUGE = ("mixtral", 30 * GiB, True)
CPU_ONLY = ("tiny-on-cpu", 0, False)


@pytest.mark.parametrize("free, needed, policy, loaded, action, unload", [
    # fits already: nothing to do whatever the policy
    (10 * GiB, 8 * GiB, "automatic", [IDLE_BIG], "none", ()),
    (8 * GiB, 8 * GiB, "ask", [IDLE_BIG], "none", ()),
    # policy off: never unloads
    (2 * GiB, 8 * GiB, "off", [IDLE_BIG], "none", ()),
    # largest idle first, stop as soon as it fits
    (2 * GiB, 8 * GiB, "automatic", [IDLE_SMALL, IDLE_BIG, IDLE_MID], "unload", ("llama3:70b",)),
    (2 * GiB, 12 * GiB, "automatic", [IDLE_SMALL, IDLE_MID, IDLE_SMALL[:1] + (4 * GiB, False)],
     "unload", ("qwen3:8b", "phi3:mini")),
    (2 * GiB, 8 * GiB, "ask", [IDLE_MID], "ask", ("qwen3:8b",)),
    # never a busy one, however large
    (2 * GiB, 8 * GiB, "automatic", [BUSY_HUGE, IDLE_MID], "unload", ("qwen3:8b",)),
    (2 * GiB, 8 * GiB, "automatic", [BUSY_HUGE], "none", ()),
    # nothing loaded, or only CPU-resident models: nothing to free
    (2 * GiB, 8 * GiB, "automatic", [], "none", ()),
    (2 * GiB, 8 * GiB, "automatic", [CPU_ONLY], "none", ()),
    # not enough even with every idle model gone: unload them all anyway
    (1 * GiB, 20 * GiB, "automatic", [IDLE_SMALL, IDLE_MID, BUSY_HUGE], "unload",
     ("qwen3:8b", "phi3:mini")),
    # no GPU readings: nothing can be decided
    (None, 8 * GiB, "automatic", [IDLE_BIG], "none", ()),
])
def test_decide_before_image_job_table(free, needed, policy, loaded, action, unload):
    decision = decide_before_image_job(free, needed, policy, loaded)

    assert decision.action == action
    assert decision.models_to_unload == unload
    assert decision.reason


def test_decide_before_image_job_equal_sizes_pick_by_name():
    loaded = [("b-model", 5 * GiB, False), ("a-model", 5 * GiB, False)]

    decision = decide_before_image_job(0, 4 * GiB, "automatic", loaded)
    assert decision.models_to_unload == ("a-model",)


def test_decide_before_image_job_accepts_loaded_model_tuples():
    loaded = [LoadedModel("qwen3:8b", 6 * GiB, busy=False)]

    decision = decide_before_image_job(1 * GiB, 4 * GiB, "automatic", loaded)
    assert decision.models_to_unload == ("qwen3:8b",)
    assert decision.frees_bytes == 6 * GiB


@pytest.mark.parametrize("loaded, words", [
    ([BUSY_HUGE], "Ollama is busy with mixtral"),
    ([], "no models on the GPU"),
])
def test_decide_before_image_job_explains_why_nothing_is_freed(loaded, words):
    decision = decide_before_image_job(1 * GiB, 8 * GiB, "automatic", loaded)

    assert words in decision.reason
    assert "8.0 GiB" in decision.reason and "1.0 GiB" in decision.reason


def test_decide_before_image_job_ask_reason_names_models_and_sizes():
    decision = decide_before_image_job(2 * GiB, 8 * GiB, "ask", [IDLE_MID])

    assert decision.reason.startswith("The image job needs about 8.0 GiB")
    assert "Unload qwen3:8b (6.0 GiB) from Ollama" in decision.reason


def test_decide_before_image_job_says_when_still_short():
    decision = decide_before_image_job(1 * GiB, 20 * GiB, "automatic", [IDLE_SMALL])

    assert "16.0 GiB short" in decision.reason


@pytest.mark.parametrize("model_size, free, policy, comfy_loaded, action", [
    (4 * GiB, 10 * GiB, "automatic", True, "none"),                 # fits
    (4 * GiB, 4 * GiB + CHAT_HEADROOM_BYTES, "ask", True, "none"),  # fits exactly with headroom
    (4 * GiB, 4 * GiB, "automatic", True, "free_comfyui"),          # headroom missing
    (8 * GiB, 2 * GiB, "ask", True, "ask"),
    (8 * GiB, 2 * GiB, "off", True, "none"),
    (8 * GiB, 2 * GiB, "automatic", False, "none"),                 # ComfyUI holds nothing
    (8 * GiB, None, "automatic", True, "none"),                     # no GPU readings
])
def test_decide_before_chat_table(model_size, free, policy, comfy_loaded, action):
    decision = decide_before_chat(model_size, free, policy, comfy_loaded)

    assert decision.action == action
    assert decision.models_to_unload == ()
    assert decision.reason


def test_decide_before_chat_loaded_model_needs_nothing():
    decision = decide_before_chat(40 * GiB, 1 * GiB, "automatic", True, model_loaded=True)

    assert decision.action == "none"


def test_decide_before_chat_reason_says_cpu_fallback():
    decision = decide_before_chat(8 * GiB, 2 * GiB, "automatic", False)

    assert "9.0 GiB" in decision.reason and "2.0 GiB" in decision.reason
    assert "CPU" in decision.reason


@pytest.mark.parametrize("decide", [
    lambda policy: decide_before_image_job(0, 1, policy, []),
    lambda policy: decide_before_chat(1, 0, policy, True),
])
def test_decide_unknown_policy_raises_invalid_input(decide):
    with pytest.raises(InvalidInput, match="off, ask, automatic"):
        decide("sometimes")


@pytest.mark.parametrize("family, expected", [
    ("sd15", 4 * GiB), ("SD 1.5", 4 * GiB), ("sd1.5", 4 * GiB),
    ("sdxl", 8 * GiB), ("SDXL-Turbo", 8 * GiB), ("pony", 8 * GiB),
    ("flux", 12 * GiB), ("Flux.1 dev", 12 * GiB), ("flux1-schnell", 12 * GiB),
    ("sd3.5", 10 * GiB), ("sd2.1", 5 * GiB),
    ("something-new", 8 * GiB), ("", 8 * GiB),
])
def test_needed_vram_for_family_defaults(family, expected):
    assert needed_vram_for_family(family, {}) == expected


@pytest.mark.parametrize("family, overrides, expected", [
    ("sdxl", {"sdxl": 10}, 10 * GiB),
    ("SDXL", {"sdxl": "9.5"}, int(9.5 * GiB)),
    ("sdxl", {"SD-XL": "6000 MiB"}, 6000 * 2**20),
    ("flux", {"flux": "16GB"}, 16 * GiB),
    ("flux", {"sdxl": 10}, 12 * GiB),                # other families don't leak
    ("hunyuan", {"hunyuan": 20}, 20 * GiB),          # a family we don't know, by exact name
    ("hunyuan", {"default": 14}, 14 * GiB),
    ("sd15", {"default": 14}, 4 * GiB),              # "default" only for unknown families
    ("wan", {"hunyuan": 20}, 8 * GiB),
    ("sdxl", {"sdxl": 1_000_000_000.0 / GiB}, 1_000_000_000),
])
def test_needed_vram_for_family_overrides(family, overrides, expected):
    assert needed_vram_for_family(family, overrides) == expected


@pytest.mark.parametrize("bad", ["lots", "-3", 0, -1, "", True, "10 parsecs"])
def test_needed_vram_for_family_rejects_bad_override(bad):
    with pytest.raises(InvalidInput, match="'sdxl'"):
        needed_vram_for_family("sdxl", {"sdxl": bad})
