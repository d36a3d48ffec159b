"""Model ids: which backend serves a model, and its name there.

A model id is written ``backend:name`` (``ollama:llama3.2:3b``,
``openrouter:meta-llama/llama-3.2-3b-instruct:free``): the picker's values, the fallback
chains in STUDIO_FALLBACKS, the arena's slots and the API all use that text. It is split
in one place, ``ModelId.parse``, at the edge where the text comes in; everything past
that edge passes the value around. Pure data: no I/O, no gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInput

OLLAMA = "ollama"
OPENROUTER = "openrouter"
LOCAL = "local"  # OpenAI-compatible local servers (STUDIO_OPENAI_SERVERS)
BACKENDS = (OLLAMA, OPENROUTER, LOCAL)
CLOUD_BACKENDS = frozenset({OPENROUTER})

ID_HINT = "Model ids look like 'ollama:llama3.2:latest' or 'openrouter:openai/gpt-4o-mini'."


@dataclass(frozen=True, order=True)
class ModelId:
    """A backend and the model's name on it; ``str()`` gives ``backend:name`` back.

    >>> m = ModelId.parse("ollama:llama3.2:3b")
    >>> m.backend, m.name, str(m), m.is_cloud
    ('ollama', 'llama3.2:3b', 'ollama:llama3.2:3b', False)
    >>> ModelId.parse("openrouter:meta-llama/llama-3.2-3b-instruct:free").name
    'meta-llama/llama-3.2-3b-instruct:free'
    """

    backend: str
    name: str

    def __post_init__(self) -> None:
        if not self.backend or ":" in self.backend or not self.name:
            raise InvalidInput(f"Model id {self.backend!r}:{self.name!r} is incomplete.",
                               hint=ID_HINT)

    @classmethod
    def parse(cls, text: "str | ModelId") -> "ModelId":
        """Split ``backend:name`` at its first colon (the name may hold more colons).

        Raises ``InvalidInput`` for text without a backend part or a name.
        """
        if isinstance(text, ModelId):
            return text
        backend, sep, name = (text or "").strip().partition(":")
        if not sep or not backend or not name:
            raise InvalidInput(f"Model id {text!r} doesn't name a backend.", hint=ID_HINT)
        return cls(backend, name)

    @classmethod
    def known(cls, text: "str | ModelId") -> "ModelId":
        """``parse``, and the backend must be one the studio has.

        Raises ``InvalidInput`` ("not a model from the list") otherwise.
        """
        try:
            model = cls.parse(text)
        except InvalidInput:
            model = None
        if model is None or model.backend not in BACKENDS:
            raise InvalidInput(f"{text!r} is not a model from the list.", hint=ID_HINT)
        return model

    @property
    def is_cloud(self) -> bool:
        return self.backend in CLOUD_BACKENDS

    @property
    def is_local(self) -> bool:
        return self.backend in (OLLAMA, LOCAL)

    def __str__(self) -> str:
        return f"{self.backend}:{self.name}"
