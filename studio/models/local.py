"""The Ollama models the studio knows of, what each can do, and a version that changes
whenever that list does.

``LocalModels.listing()`` asks Ollama for its models (``/api/tags``) at most once per
``ttl_s`` for every page together, and ``/api/show`` once per model digest for its
capabilities (``/api/tags`` doesn't carry them): a model pulled again under the same name
has a new digest and is asked again. The list is saved in the store, so when Ollama can't
be reached (after a studio restart too) the last known models are still listed, marked
unreachable, and a configured fallback can answer for them.

``version`` goes up each time the list, a model's capabilities or Ollama's reachability
changes; pages compare it with the one they were shown to refresh their pickers only then.
``invalidate()`` makes the next listing ask Ollama at once (after a pull, delete or copy).

No gradio imports here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..clients.ollama import ModelInfo
from ..errors import StudioError
from ..store.models import LocalModelRow

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 10.0
# What each capability Ollama reports is for, in the Models tab's words
# (types/model/capability.go; "completion" is chat, said separately).
USES = {"vision": "reads images", "tools": "tools", "thinking": "thinks",
        "insert": "fills in code", "audio": "hears audio", "image": "makes images"}


@dataclass(frozen=True)
class LocalModel:
    """One installed Ollama model and its capabilities (None: the server didn't say)."""

    info: ModelInfo
    capabilities: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def can_chat(self) -> bool:
        """Whether it writes replies (Ollama's "completion"). A server too old to report
        capabilities is taken at its word that every model can; an embedding model can't
        (Ollama answers it with HTTP 400 "does not support chat")."""
        return self.capabilities is None or "completion" in self.capabilities

    @property
    def reads_images(self) -> bool:
        return "vision" in (self.capabilities or ())

    @property
    def uses(self) -> str:
        """What the model is for, in words.

        >>> info = ModelInfo("m", 1)
        >>> LocalModel(info, ("completion", "vision", "tools")).uses
        'chat · reads images · tools'
        >>> LocalModel(info, ("embedding",)).uses
        'embeddings only (the API), not chat'
        >>> LocalModel(info, None).uses
        'chat (Ollama does not say more)'
        """
        caps = self.capabilities
        if caps is None:
            return "chat (Ollama does not say more)"
        words = (["chat"] if "completion" in caps else []) + [USES[c] for c in caps if c in USES]
        if "embedding" in caps:
            return " · ".join(words + ["embeddings"]) if words else \
                "embeddings only (the API), not chat"
        return " · ".join(words) or "nothing Ollama can run here"

    @property
    def label(self) -> str:
        """The picker's label: ``ModelInfo.label``, plus "images" for a vision model."""
        return self.info.label + (" · images" if self.reads_images else "")


@dataclass(frozen=True)
class LocalListing:
    """Ollama's models as last known. ``reachable`` False: Ollama couldn't be asked now and
    ``models`` is the last list it gave (``problem`` says why)."""

    models: tuple[LocalModel, ...]
    reachable: bool
    problem: str = ""
    version: int = 0

    @property
    def chat_models(self) -> list[LocalModel]:
        """The models a chat or the arena can pick."""
        return [m for m in self.models if m.can_chat]


class LocalModels:
    """Ollama's models with their capabilities, cached and saved. Thread-safe.

    ``ollama`` needs ``list_models()`` and ``capabilities(name)`` (``OllamaClient``);
    ``saved`` is the store (``ModelsStore``), or None to remember in memory only.
    """

    def __init__(self, ollama, saved=None, *, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ollama = ollama
        self._saved = saved
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()  # the state below; never held over a request
        self._ask_lock = threading.Lock()  # one request to Ollama at a time
        self._listing: LocalListing | None = None
        self._asked_at: float | None = None
        # Starts from the clock, not 0: a page left open across a studio restart holds a
        # version of the old process, which must not look current.
        self._version = int(time.time())
        self._capabilities: dict[str, tuple[str, ...] | None] = {}  # by digest
        self._loaded = False

    @property
    def version(self) -> int:
        """Goes up whenever the listing changes (no network: pages compare it cheaply)."""
        with self._lock:
            return self._version

    def invalidate(self) -> None:
        """The next ``listing()`` asks Ollama at once (a pull, delete or copy happened)."""
        with self._lock:
            self._asked_at = None

    def listing(self, *, fresh: bool = False, cached: bool = False) -> LocalListing:
        """The models, asked of Ollama unless asked within ``ttl_s`` (or ``fresh``). Never
        raises for Ollama being down: the last known list comes back, ``reachable=False``.
        ``cached``: never ask, whatever its age: the last list (this process's, else the
        saved one), or an empty one when there is none yet (a page load waits on no backend).

        One caller asks Ollama at a time, and never while holding the lock that readers
        take: with Ollama hanging (up to the request timeout), a page load, the version
        check and a caller that has a list already get the last one at once instead of
        queueing behind the hung request; only a caller with no list at all, or ``fresh``,
        waits for the answer."""
        with self._lock:
            self._load_saved_locked()
            if cached:
                return self._listing or LocalListing((), True, "", self._version)
            if self._recent_locked() and not fresh:
                return self._listing
            known = self._listing
        if not self._ask_lock.acquire(blocking=fresh or known is None):
            return known  # another caller is asking Ollama now: the last list meanwhile
        try:
            with self._lock:
                if self._recent_locked() and not fresh:  # asked while this one waited
                    return self._listing
                self._asked_at = self._clock()
                previous = self._listing.models if self._listing is not None else ()
            try:
                infos = self._ollama.list_models()
            except StudioError as exc:
                with self._lock:
                    return self._settle_locked(previous, reachable=False, problem=str(exc))
            models = tuple(LocalModel(info, self._capabilities_of(info)) for info in infos)
            if models != previous and self._saved is not None:
                try:
                    self._saved.replace_local_models(_row(m) for m in models)
                except StudioError as exc:  # the list still serves this process
                    log.warning("Couldn't save the list of Ollama models: %s", exc)
            with self._lock:
                return self._settle_locked(models, reachable=True)
        finally:
            self._ask_lock.release()

    # -- internals (``_locked``: call with the lock held) ---------------------------------

    def _settle_locked(self, models: tuple[LocalModel, ...], *, reachable: bool,
                       problem: str = "") -> LocalListing:
        old = self._listing
        if old is None or old.models != models or old.reachable != reachable:
            self._version += 1
        self._listing = LocalListing(models, reachable, problem, self._version)
        return self._listing

    def _recent_locked(self) -> bool:
        return (self._listing is not None and self._asked_at is not None
                and self._clock() - self._asked_at < self._ttl_s)

    def _capabilities_of(self, info: ModelInfo) -> tuple[str, ...] | None:
        """What a model can do, asked of Ollama once per digest (not under the lock)."""
        with self._lock:
            if info.digest and info.digest in self._capabilities:
                return self._capabilities[info.digest]
        try:
            found = self._ollama.capabilities(info.name)
        except StudioError as exc:  # deleted meanwhile, or Ollama went: ask again next time
            log.info("Couldn't ask Ollama what %s can do: %s", info.name, exc)
            return None
        if info.digest:
            with self._lock:
                self._capabilities[info.digest] = found
        return found

    def _load_saved_locked(self) -> None:
        """Once: the saved list (what a page shows while Ollama is down after a restart)
        and the capabilities known by digest."""
        if self._loaded or self._saved is None:
            return
        self._loaded = True
        try:
            rows = self._saved.local_models()
        except StudioError as exc:
            log.warning("Couldn't read the saved list of Ollama models: %s", exc)
            return
        models = tuple(_model(row) for row in rows)
        for m in models:
            if m.info.digest and m.capabilities is not None:
                self._capabilities[m.info.digest] = m.capabilities
        if models:
            self._listing = LocalListing(models, False, "", self._version)


def _row(model: LocalModel) -> LocalModelRow:
    i = model.info
    return LocalModelRow(i.name, i.digest, i.size, i.family, i.parameter_size, i.quantization,
                         i.modified_at, model.capabilities)


def _model(row: LocalModelRow) -> LocalModel:
    return LocalModel(ModelInfo(name=row.name, size=row.size, family=row.family,
                                parameter_size=row.parameter_size, quantization=row.quantization,
                                modified_at=row.modified_at, digest=row.digest),
                      row.capabilities)

