"""The OpenRouter model catalogue: fetched, cached in SQLite, refreshed, served from the cache.

``Catalog`` answers "which cloud models are there, what do they cost, do they take images"
for the chat picker, the arena and the router's ``prices=`` hook. It keeps the last good
list in the ``cloud_models`` table (through ``CloudStore``), so after one successful fetch
the studio offers cloud models and prices even while OpenRouter is unreachable. A list
older than ``ttl_s`` is served at once and refreshed on a background thread; nothing is
fetched at import or construction time.

``CloudModel`` is a catalogue entry: what the OpenRouter client listed, with its price
strings read into ``ModelPrices``. Also the pure helpers that turn local and cloud models
into the picker's grouped labels. No gradio imports here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from ..clients.openrouter import OpenRouterModel
from .pricing import ModelPrices, format_price_per_million, format_usd, to_decimal
from ..errors import InvalidInput, StudioError
from ..model_id import OLLAMA, OPENROUTER, ModelId
from ..store.cloud import CloudModelRow, CloudStore

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 6 * 3600.0
# After a failed fetch, page loads don't try again (and wait on the network) for this long.
RETRY_AFTER_FAILURE_S = 60.0
LOCAL_PREFIX = "Local · "
CLOUD_PREFIX = "Cloud · "


@dataclass(frozen=True)
class CloudModel:
    """One cloud model of the catalogue; prices are USD per token (``ModelPrices``)."""

    id: str
    name: str
    context_length: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    prices: ModelPrices

    @classmethod
    def from_openrouter(cls, model: OpenRouterModel) -> "CloudModel":
        """What ``OpenRouterClient.list_models`` gave, with its price strings read."""
        return cls(id=model.id, name=model.name, context_length=model.context_length,
                   input_modalities=model.input_modalities,
                   output_modalities=model.output_modalities,
                   prices=ModelPrices.from_openrouter(model.pricing))

    @property
    def is_free(self) -> bool:
        return self.prices.is_free

    @property
    def supports_images(self) -> bool:
        return "image" in self.input_modalities

    @property
    def label(self) -> str:
        """Short label, e.g. ``OpenAI: GPT-4o-mini · $0.15/M in, $0.60/M out · 128K ctx``."""
        parts = [self.name or self.id, ", ".join(_price_parts(self))]
        if self.context_length:
            parts.append(f"{format_context(self.context_length)} ctx")
        return " · ".join(parts)


@dataclass(frozen=True)
class CatalogState:
    """Where the list shown comes from: ``source`` is "live" (fetched by this process),
    "cache" (from the database) or "none"; ``error`` is the last failed fetch's message."""

    count: int
    fetched_at: str | None
    source: str
    error: str = ""

    @property
    def summary(self) -> str:
        if self.source == "none":
            return f"No cloud model list yet. {self.error}".strip()
        when = (self.fetched_at or "")[:16].replace("T", " ")
        text = f"{self.count} cloud models, fetched {when} UTC"
        if self.error:
            text += f" (showing the saved list: {self.error})"
        return text


class Catalog:
    """OpenRouter's models, cached in the database. Thread-safe.

    ``list_models`` is ``OpenRouterClient.list_models`` (or any callable returning
    ``OpenRouterModel``s and raising ``StudioError``). ``clock`` gives epoch seconds.
    ``background=False`` refreshes stale lists in the calling thread (tests).
    """

    def __init__(self, list_models: Callable[[], Sequence[OpenRouterModel]], cache: CloudStore, *,
                 ttl_s: float = DEFAULT_TTL_S, retry_after_failure_s: float = RETRY_AFTER_FAILURE_S,
                 clock: Callable[[], float] = time.time, background: bool = True) -> None:
        self._list_models = list_models
        self._cache = cache
        self._ttl_s = ttl_s
        self._retry_s = retry_after_failure_s
        self._clock = clock
        self._background = background
        self._lock = threading.Lock()
        self._models: dict[str, CloudModel] | None = None
        self._fetched_at: str | None = None
        self._source = "none"
        self._error = ""
        self._failed_at: float | None = None
        self._refreshing: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------

    def models(self) -> list[CloudModel]:
        """The catalogue, sorted by name. Fetched now when nothing is cached; served from the
        cache (and refreshed in the background) when it is older than the TTL.

        Raises ``StudioError`` only when nothing is cached and OpenRouter can't be reached.
        """
        with self._lock:
            self._load_cache_locked()
            if not self._models:
                if self._failed_recently_locked():
                    raise StudioError(f"No cloud model list yet: {self._error}",
                                      hint="Cloud models appear once OpenRouter answers.")
                return self._fetch_locked()
            stale = self._age_locked() > self._ttl_s
            start = stale and not self._failed_recently_locked() and self._refreshing is None
            if start and not self._background:
                self._try_fetch_locked()
            elif start:
                self._refreshing = threading.Thread(target=self._refresh_in_background,
                                                    name="catalog-refresh", daemon=True)
                self._refreshing.start()
            return _sorted(self._models.values())

    def cached(self) -> list[CloudModel]:
        """The catalogue as last fetched (this process or the database), sorted by name,
        without asking OpenRouter, whatever its age; [] when none was ever fetched."""
        with self._lock:
            self._load_cache_locked()
            return _sorted((self._models or {}).values())

    def refresh(self) -> list[CloudModel]:
        """Fetch the list now. Raises the ``StudioError`` when that fails (the cached list
        is kept and still served)."""
        with self._lock:
            self._load_cache_locked()
            return self._fetch_locked()

    def get(self, model: str) -> CloudModel | None:
        """A model by OpenRouter id or ``openrouter:<id>``; None when unknown or when no list
        can be had."""
        name = _cloud_name(model)
        if name is None:
            return None
        try:
            self.models()
        except StudioError:
            return None
        with self._lock:
            return (self._models or {}).get(name)

    def prices(self, model_id: str) -> ModelPrices | None:
        """Prices for the router's and the accounts' ``prices=`` hook; never raises."""
        found = self.get(model_id)
        return None if found is None else found.prices

    def supports_images(self, model: str) -> bool:
        found = self.get(model)
        return found is not None and found.supports_images

    def display_name(self, model_id: str) -> str:
        """What people call a model: the catalogue's name for cloud models ("OpenAI:
        GPT-4o-mini"), the Ollama name for local ones."""
        model = ModelId.parse(model_id)
        found = self.get(model_id) if model.backend == OPENROUTER else None
        return found.name if found is not None else model.name

    def state(self) -> CatalogState:
        with self._lock:
            self._load_cache_locked()
            return CatalogState(count=len(self._models or {}), fetched_at=self._fetched_at,
                                source=self._source, error=self._error)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait for a background refresh to end; False if it is still running (tests)."""
        thread = self._refreshing
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- internals (``_locked``: call with the lock held) -----------------------------------

    def _load_cache_locked(self) -> None:
        if self._models is not None:
            return
        rows = self._cache.cloud_models()
        self._models = {row.id: model_from_row(row) for row in rows}
        if rows:
            self._fetched_at = rows[0].fetched_at
            self._source = "cache"

    def _fetch(self) -> list[CloudModel]:
        return [CloudModel.from_openrouter(m) for m in self._list_models()]

    def _fetch_locked(self) -> list[CloudModel]:
        try:
            fetched = self._fetch()
        except StudioError as err:
            self._failed_locked(err)
            raise
        self._store_locked(fetched)
        return _sorted(fetched)

    def _store_locked(self, fetched: list[CloudModel]) -> None:
        self._fetched_at = self._cache.replace_cloud_models(row_from_model(m) for m in fetched)
        self._models = {m.id: m for m in fetched}
        self._source = "live"
        self._error = ""
        self._failed_at = None
        log.info("Fetched %d cloud models from OpenRouter", len(fetched))

    def _failed_locked(self, err: StudioError) -> None:
        self._failed_at = self._clock()
        self._error = str(err)

    def _try_fetch_locked(self) -> None:
        try:
            self._fetch_locked()
        except StudioError as err:
            log.warning("Refreshing the cloud model list failed; using the saved one: %s", err)

    def _refresh_in_background(self) -> None:
        # The network call runs without the lock: readers keep getting the saved list.
        try:
            fetched = self._fetch()
        except StudioError as err:
            log.warning("Refreshing the cloud model list failed; using the saved one: %s", err)
            with self._lock:
                self._failed_locked(err)
                self._refreshing = None
            return
        except Exception:  # noqa: BLE001 - a background thread must always finish cleanly
            log.exception("Refreshing the cloud model list failed")
            with self._lock:
                self._refreshing = None
            return
        with self._lock:
            try:
                self._store_locked(fetched)
            except Exception:  # noqa: BLE001 - e.g. the studio closed its store meanwhile
                log.warning("The refreshed cloud model list couldn't be saved; the saved one "
                            "stays in use.", exc_info=True)
            finally:
                self._refreshing = None

    def _failed_recently_locked(self) -> bool:
        return self._failed_at is not None and self._clock() - self._failed_at < self._retry_s

    def _age_locked(self) -> float:
        if not self._fetched_at:
            return float("inf")
        try:
            fetched = datetime.fromisoformat(self._fetched_at.replace("Z", "+00:00"))
        except ValueError:
            return float("inf")
        return self._clock() - fetched.timestamp()


# -- conversions and labels (pure) -----------------------------------------------------------


def row_from_model(model: CloudModel) -> dict[str, Any]:
    """A ``CloudModel`` as the mapping ``CloudStore.replace_cloud_models`` takes."""
    p = model.prices
    return {"id": model.id, "name": model.name, "context_length": model.context_length,
            "input_modalities": list(model.input_modalities),
            "output_modalities": list(model.output_modalities),
            "price_prompt": _text(p.prompt), "price_completion": _text(p.completion),
            "price_image": _text(p.image), "price_request": _text(p.request)}


def model_from_row(row: CloudModelRow) -> CloudModel:
    return CloudModel(
        id=row.id, name=row.name, context_length=row.context_length,
        input_modalities=row.input_modalities, output_modalities=row.output_modalities,
        prices=ModelPrices(prompt=to_decimal(row.price_prompt),
                           completion=to_decimal(row.price_completion),
                           image=to_decimal(row.price_image),
                           request=to_decimal(row.price_request)))


def cloud_label(model: CloudModel) -> str:
    """The picker's label for a cloud model.

    >>> from decimal import Decimal
    >>> m = CloudModel("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", 128000, ("text", "image"),
    ...                ("text",), ModelPrices(Decimal("0.00000015"), Decimal("0.0000006")))
    >>> cloud_label(m)
    'Cloud · OpenAI: GPT-4o-mini · $0.15/M in · $0.60/M out · 128K ctx · images'
    >>> cloud_label(CloudModel("perplexity/sonar", "Perplexity: Sonar", 127000, ("text",),
    ...     ("text",), ModelPrices.per_million(1, 1, request="0.005")))
    'Cloud · Perplexity: Sonar · $1.00/M in · $1.00/M out · $0.005/request · 127K ctx'
    """
    parts = [model.name or model.id, *_price_parts(model)]
    if model.context_length:
        parts.append(f"{format_context(model.context_length)} ctx")
    if model.supports_images:
        parts.append("images")
    return CLOUD_PREFIX + " · ".join(parts)


def picker_choices(local_models: Iterable[Any], cloud_models: Iterable[CloudModel]
                   ) -> list[tuple[str, str]]:
    """(label, model id) for one picker: local (Ollama) models first, then cloud ones, each
    group by name. Local models are anything with ``name`` and ``label`` (Ollama's
    ``ModelInfo``); cloud models that can't write text are left out."""
    local = sorted(local_models, key=lambda m: m.name.lower())
    cloud = _sorted(m for m in cloud_models if "text" in m.output_modalities)
    return ([(LOCAL_PREFIX + m.label, str(ModelId(OLLAMA, m.name))) for m in local]
            + [(cloud_label(m), str(ModelId(OPENROUTER, m.id))) for m in cloud])


def format_context(tokens: int) -> str:
    """``128000`` -> ``128K``, ``1048576`` -> ``1M``.

    >>> format_context(128000), format_context(131072), format_context(1048576), format_context(512)
    ('128K', '131K', '1M', '512')
    """
    if tokens >= 1_000_000:
        return f"{round(tokens / 1_000_000, 1):g}M"
    if tokens >= 1000:
        return f"{round(tokens / 1000):d}K"
    return str(tokens)


def _price_parts(model: CloudModel) -> list[str]:
    if model.is_free:
        return ["free"]
    if not model.prices.is_known:
        return ["price unknown"]
    parts = [f"{format_price_per_million(model.prices.prompt)} in",
             f"{format_price_per_million(model.prices.completion)} out"]
    if model.prices.request:
        # Some models (search, routers) charge per request on top of the tokens.
        parts.append(f"{format_usd(model.prices.request)}/request")
    return parts


def _sorted(models: Iterable[CloudModel]) -> list[CloudModel]:
    return sorted(models, key=lambda m: ((m.name or m.id).lower(), m.id))


def _cloud_name(model: str) -> str | None:
    try:
        parsed = ModelId.parse(model)
    except InvalidInput:  # a bare OpenRouter name ("openai/gpt-4o-mini")
        return model or None
    if parsed.backend == OPENROUTER:
        return parsed.name
    return None if parsed.backend == OLLAMA else model


def _text(value: Any) -> str | None:
    return None if value is None else format(value, "f")
