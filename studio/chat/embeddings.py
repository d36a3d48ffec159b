"""Embeddings: vectors for texts from an Ollama or OpenRouter embedding model.

``Embeddings.embed`` is the one verb, called by the API (and by anything else that wants
vectors): it reads the model id, refuses empty or oversized input before anything is sent,
books the request against the user's limits, reserves it in the cloud budget, asks the
backend, and
records one usage row so the request shows in Costs under the user, marked with how it came
(``via``, e.g. "api: laptop"). No gradio imports here; nothing runs at import time.
"""

from __future__ import annotations

from contextlib import nullcontext
from decimal import Decimal
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from ..costs.pricing import ModelPrices, reply_cost, to_decimal
from ..errors import InvalidInput
from ..events import EmbedResult, Usage
from ..model_id import ModelId

if TYPE_CHECKING:
    from ..access.limits import Limits
    from ..costs.accounting import Accounting
    from ..costs.budget import Budget
    from ..models.gpu_coordinator import ModelsInUse

# OpenAI's cap on the texts of one request; clients that batch stay under it.
MAX_INPUTS = 2048


class Embedder(Protocol):
    """What a backend client offers (``OllamaClient``, ``OpenRouterClient``)."""

    def embed(self, model: str, inputs: list[str], *, dimensions: int | None = None
              ) -> EmbedResult: ...


class Embeddings:
    """Vectors for texts, as a user, through one of ``backends`` (by backend name).

    ``limits`` books each request like a chat message (per minute, and one slot of the
    replies-at-once limit while it runs); ``budget`` and ``prices`` (a ``backend:model`` id
    to its ``ModelPrices``) guard cloud spending; ``in_use`` marks the Ollama model as busy
    so the one-GPU policy leaves it loaded meanwhile. ``max_chars`` caps the characters of
    one request (STUDIO_MAX_MESSAGE_CHARS).
    """

    def __init__(self, backends: Mapping[str, Embedder], *, accounting: "Accounting",
                 budget: "Budget | None" = None, limits: "Limits | None" = None,
                 prices: Callable[[str], ModelPrices | None] | None = None,
                 in_use: "ModelsInUse | None" = None, max_inputs: int = MAX_INPUTS,
                 max_chars: int = 2_000_000) -> None:
        self.backends = backends
        self.accounting = accounting
        self.budget = budget
        self.limits = limits
        self.prices = prices or (lambda model_id: None)
        self.in_use = in_use
        self.max_inputs = max_inputs
        self.max_chars = max_chars

    def embed(self, model_id: str | ModelId, inputs: list[str], *, user: str, via: str,
              dimensions: int | None = None) -> EmbedResult:
        """One vector per text of ``inputs``, in order, from ``model_id``
        (``ollama:nomic-embed-text:latest``, ``openrouter:openai/text-embedding-3-small``).

        Raises ``InvalidInput`` for an id that names no backend of the studio ("not a model
        from the list"), no texts, an empty text, too many texts or characters, or a model
        that makes no embeddings; ``LimitReached`` (a per-user limit), ``BudgetExceeded``
        (cloud caps), and the backend's ``ModelNotFound`` / ``BackendRejected`` /
        ``BackendUnavailable``. Nothing is recorded for a request that failed.
        """
        model = ModelId.known(model_id)
        texts = self._checked(inputs)
        backend = self.backends.get(model.backend)
        if backend is None:
            raise InvalidInput(f"{str(model)!r} is not a model from the list.",
                               hint="Embeddings come from Ollama or OpenRouter models.")
        release = self.limits.admit_chat(user) if self.limits is not None else _nothing
        reservation = None
        try:
            if model.is_cloud and self.budget is not None:
                # Reserved, not just checked: requests sent at once can't pass a cap together.
                reservation = self.budget.reserve(user, str(model), self._estimate(model, texts))
            with self.in_use.hold(model) if self.in_use is not None else nullcontext():
                result = backend.embed(model.name, texts, dimensions=dimensions)
        except BaseException:
            if reservation is not None:
                self.budget.release(reservation)
            raise
        finally:
            release()
        if reservation is not None:
            self.budget.settle(reservation, to_decimal(result.cost_usd))
        self.accounting.record_chat(
            user, model.backend, model.name,
            Usage(prompt_tokens=result.prompt_tokens, completion_tokens=0,
                  cost_usd=result.cost_usd, total_ms=result.total_ms), via=via)
        return result

    def _checked(self, inputs: list[str]) -> list[str]:
        texts = list(inputs)
        if not texts:
            raise InvalidInput("There is nothing to embed: the input is empty.",
                               hint="Send one text, or a list of texts.")
        if len(texts) > self.max_inputs:
            raise InvalidInput(f"{len(texts):,} texts are too many for one request; the "
                               f"most is {self.max_inputs:,}.",
                               hint="Send them in smaller batches.")
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise InvalidInput(f"Text number {index + 1} of the input is empty or not text.",
                                   hint="Every text to embed must be a non-empty string.")
        total = sum(len(text) for text in texts)
        if total > self.max_chars:
            raise InvalidInput(f"The input is {total:,} characters long; the most is "
                               f"{self.max_chars:,} per request (STUDIO_MAX_MESSAGE_CHARS).",
                               hint="Send the texts in smaller batches.")
        return texts

    def _estimate(self, model: ModelId, texts: list[str]) -> Decimal | None:
        """What the request may cost at most: a token per UTF-8 byte at the catalog's
        prompt price; None when the catalog doesn't know the model."""
        tokens = sum(len(text.encode("utf-8")) for text in texts)
        return reply_cost(self.prices(str(model)), tokens, 0)


def _nothing() -> None:
    pass
