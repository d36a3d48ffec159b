"""The models a chat can pick: Ollama's local ones that can chat, then OpenRouter's cloud
ones, and what each can read. One list for the Chat tab, the arena and the API.

The pickers get ``picker()``: local models that can chat (an embedding model can't), the
last known ones marked unreachable while Ollama is down, and which one to preselect (never
a paid cloud model: the person picks that). No gradio imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from ..errors import NotFound, StudioError
from ..model_id import LOCAL, OLLAMA, OPENROUTER, ModelId
from ..models.local import LocalModels

if TYPE_CHECKING:
    from ..backends.local_servers import LocalServers
    from ..clients.ollama import OllamaClient
    from ..clients.openrouter import CloudModel
    from ..costs.catalog import Catalog


UNREACHABLE = " · unreachable"
LOCAL_SERVER_PREFIX = "Local server · "


@dataclass(frozen=True)
class Picker:
    """What a chat or arena picker offers: (label, model id) choices, local first; the model
    to preselect when the person has none (None: nothing free to offer); a sentence per
    backend that couldn't be asked; the local list's version (``LocalModels.version``)."""

    choices: list[tuple[str, str]]
    default: str | None = None
    problems: list[str] = field(default_factory=list)
    version: int = 0

    @property
    def values(self) -> list[str]:
        return [value for _label, value in self.choices]


def default_choice(local: Sequence[str], free_cloud: Sequence[str], preferred: str = ""
                   ) -> str | None:
    """The model a picker preselects: ``preferred`` when it is a local one, else the first
    local model (reachable or not: a fallback may answer for it), else the first free cloud
    model. Never a paid one: spending is for the person to choose.

    >>> default_choice(["ollama:a", "ollama:b"], [], "ollama:b")
    'ollama:b'
    >>> default_choice([], ["openrouter:x:free"], "ollama:gone")
    'openrouter:x:free'
    >>> default_choice([], []) is None
    True
    """
    if preferred and preferred in local:
        return preferred
    if local:
        return local[0]
    return free_cloud[0] if free_cloud else None


class ChatModels:
    """Local and cloud chat models. ``catalog`` is None when cloud is off (no key);
    ``local`` is the known Ollama models (by default kept in memory only)."""

    def __init__(self, ollama: "OllamaClient", catalog: "Catalog | None" = None,
                 local: LocalModels | None = None, servers: "LocalServers | None" = None) -> None:
        self._ollama = ollama
        self._catalog = catalog
        self._local = local if local is not None else LocalModels(ollama)
        self._servers = servers  # STUDIO_OPENAI_SERVERS, None when there are none

    def version(self) -> int:
        """The local lists' version (``LocalModels.version``, plus the servers' models
        version), asking Ollama first when its last answer is older than LocalModels' TTL
        (once per TTL for all pages together). The servers' models come from their health
        checks, so reading them costs no request."""
        return self._local.listing().version + self._servers_version()

    def _servers_version(self) -> int:
        return self._servers.pool.models_version if self._servers is not None else 0

    def server_models(self) -> list[str]:
        """The models the OpenAI-compatible local servers list (their last health check)."""
        return self._servers.pool.known_models() if self._servers is not None else []

    def server_choices(self) -> list[tuple[str, str]]:
        return [(f"{LOCAL_SERVER_PREFIX}{name}", str(ModelId(LOCAL, name)))
                for name in sorted(self.server_models(), key=str.lower)]

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

    def picker(self, preferred: str = "", *, cached: bool = False) -> Picker:
        """The choices of the Chat and Arena pickers: local models that can chat (marked
        unreachable while Ollama is down), then cloud ones; ``preferred`` (a model id) is
        preselected when it is one of the local ones (``default_choice``). ``cached``: from
        the lists already known, asking neither Ollama nor OpenRouter (a page load)."""
        from ..costs.catalog import LOCAL_PREFIX, picker_choices

        listing = self._local.listing(cached=cached)
        problems = []
        if not listing.reachable:
            problems.append(listing.problem + (
                " The local models it had are listed, marked unreachable: sending to one "
                "uses its fallback (STUDIO_FALLBACKS) if it has one." if listing.models else ""))
        try:
            cloud = (self._catalog.cached() if self._catalog is not None else []) if cached \
                else self.cloud()
        except StudioError as exc:
            cloud = []
            problems.append(f"Cloud models are not listed: {exc}")
        mark = "" if listing.reachable else UNREACHABLE
        local = [(LOCAL_PREFIX + m.label + mark, str(ModelId(OLLAMA, m.name)))
                 for m in sorted(listing.chat_models, key=lambda m: m.name.lower())]
        local += self.server_choices()
        remote = picker_choices([], cloud)
        free = {str(ModelId(OPENROUTER, m.id)) for m in cloud if m.is_free}
        default = default_choice([v for _l, v in local],
                                 [v for _l, v in remote if v in free], preferred)
        return Picker(local + remote, default, problems,
                      listing.version + self._servers_version())

    def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(label, model id) of every model the API offers (embedding models too, for
        /v1/embeddings), local first, and a sentence for each backend that couldn't be
        asked (it contributes nothing then)."""
        from ..costs.catalog import picker_choices

        local, cloud, problems = self.listing()
        choices = picker_choices(local, cloud)
        return choices[:len(local)] + self.server_choices() + choices[len(local):], problems

    def listing(self) -> tuple[list, list["CloudModel"], list[str]]:
        """Ollama's installed models (``ModelInfo``), the cloud catalog, and a sentence for
        each backend that couldn't be asked."""
        local, cloud, problems = [], [], []
        listing = self._local.listing()
        if listing.reachable:
            local = [m.info for m in listing.models]
        else:
            problems.append(listing.problem)
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
        if model.backend == LOCAL:
            if model.name not in self.server_models():
                raise NotFound(f"No local server lists {model.name}.",
                               hint="GET /api/tags lists the models you can use.")
            return _shown(model, ["completion"], None)
        found = self._catalog.get(model.name) if self._catalog is not None else None
        if found is None:
            raise NotFound(f"{model} is not in the cloud catalog.",
                           hint="GET /api/tags lists the models you can use.")
        capabilities = ["completion"] + (["vision"] if found.supports_images else [])
        return _shown(model, capabilities, found.context_length)


def _shown(model: ModelId, capabilities: list[str], context_length: int | None) -> dict:
    """A model that isn't Ollama's, in the shape of Ollama's ``/api/show``."""
    return {"capabilities": capabilities, "template": "", "parameters": "",
            "modelfile": "", "license": "",
            "details": {"parent_model": "", "format": "", "family": model.backend,
                        "families": [model.backend], "parameter_size": "",
                        "quantization_level": ""},
            "model_info": {"general.architecture": model.backend,
                           f"{model.backend}.context_length": context_length or 0}}
