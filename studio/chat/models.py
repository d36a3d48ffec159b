"""The models a chat can pick: Ollama's local ones, then OpenRouter's cloud ones, and what
each can read. One list for the Chat tab, the arena and the API. No gradio imports here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NotFound, StudioError
from ..model_id import ModelId

if TYPE_CHECKING:
    from ..clients.ollama import OllamaClient
    from ..clients.openrouter import CloudModel
    from ..costs.catalog import Catalog


class ChatModels:
    """Local and cloud chat models. ``catalog`` is None when cloud is off (no key)."""

    def __init__(self, ollama: "OllamaClient", catalog: "Catalog | None" = None) -> None:
        self._ollama = ollama
        self._catalog = catalog

    def supports_images(self, model: ModelId) -> bool:
        """Whether ``model`` reads images (Ollama's vision models, cloud models marked so)."""
        if model.backend == "ollama":
            return self._ollama.supports_vision(model.name)
        if model.is_cloud and self._catalog is not None:
            return self._catalog.supports_images(model.name)
        return False

    def cloud(self) -> list["CloudModel"]:
        """OpenRouter's catalog (cached in the database), or [] when cloud is off.
        Raises StudioError only when no list was ever fetched and OpenRouter is unreachable."""
        return [] if self._catalog is None else self._catalog.models()

    def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(label, model id) for a picker, local models first, and a sentence for each
        backend that couldn't be asked (it contributes nothing then)."""
        from ..costs.catalog import picker_choices

        local, cloud, problems = self.listing()
        return picker_choices(local, cloud), problems

    def listing(self) -> tuple[list, list["CloudModel"], list[str]]:
        """Ollama's installed models (``ModelInfo``), the cloud catalog, and a sentence for
        each backend that couldn't be asked."""
        local, cloud, problems = [], [], []
        try:
            local = self._ollama.list_models()
        except StudioError as exc:
            problems.append(str(exc))
        try:
            cloud = self.cloud()
        except StudioError as exc:
            problems.append(f"Cloud models are not listed: {exc}")
        return local, cloud, problems

    def describe(self, model: ModelId) -> dict:
        """What a model is and can do, in the shape of Ollama's ``/api/show``: Ollama's own
        answer for a local model, what the catalog knows for a cloud one. Raises
        ``ModelNotFound``/``NotFound`` for a model that isn't there."""
        if model.backend == "ollama":
            return self._ollama.show(model.name)
        found = self._catalog.get(model.name) if self._catalog is not None else None
        if found is None:
            raise NotFound(f"{model} is not in the cloud catalog.",
                           hint="GET /api/tags lists the models you can use.")
        capabilities = ["completion"] + (["vision"] if found.supports_images else [])
        return {"capabilities": capabilities, "template": "", "parameters": "",
                "modelfile": "", "license": "",
                "details": {"parent_model": "", "format": "", "family": model.backend,
                            "families": [model.backend], "parameter_size": "",
                            "quantization_level": ""},
                "model_info": {"general.architecture": model.backend,
                               f"{model.backend}.context_length": found.context_length or 0}}
