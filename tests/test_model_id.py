"""studio.model_id: the one place a ``backend:name`` model id is split."""

import pytest

from studio.errors import InvalidInput
from studio.model_id import ModelId


@pytest.mark.parametrize("text, parts", [
    ("ollama:llama3.2", ("ollama", "llama3.2")),
    ("ollama:llama3.2:3b", ("ollama", "llama3.2:3b")),
    ("openrouter:openai/gpt-4o-mini", ("openrouter", "openai/gpt-4o-mini")),
    ("openrouter:meta-llama/llama-3.2-3b-instruct:free",
     ("openrouter", "meta-llama/llama-3.2-3b-instruct:free")),
])
def test_model_id_round_trips(text, parts):
    model = ModelId.parse(text)
    assert (model.backend, model.name) == parts
    assert str(ModelId(*parts)) == text
    assert ModelId.parse(model) is model


@pytest.mark.parametrize("text", ["llama3.2", "", ":llama3.2", "ollama:", None])
def test_model_id_parse_rejects_ids_without_backend(text):
    with pytest.raises(InvalidInput, match="doesn't name a backend"):
        ModelId.parse(text)


@pytest.mark.parametrize("backend, name", [("", "x"), ("a:b", "x"), ("ollama", "")])
def test_model_id_rejects_bad_parts(backend, name):
    with pytest.raises(InvalidInput):
        ModelId(backend, name)


@pytest.mark.parametrize("text, cloud, local", [
    ("ollama:llama3.2:3b", False, True), ("openrouter:openai/gpt-4o-mini", True, False)])
def test_model_id_knows_cloud_from_local(text, cloud, local):
    model = ModelId.parse(text)
    assert (model.is_cloud, model.is_local) == (cloud, local)


@pytest.mark.parametrize("text", ["llama3.2", "comfyui:sd15.safetensors", "ollama:"])
def test_model_id_known_refuses_what_the_picker_never_offers(text):
    with pytest.raises(InvalidInput, match="not a model from the list"):
        ModelId.known(text)


def test_model_id_known_accepts_both_backends():
    assert ModelId.known("openrouter:x/y") == ModelId("openrouter", "x/y")
