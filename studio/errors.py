"""Errors the studio raises, with messages written for the person at the screen.

Every message says what failed, where, and what to try next. Clients map transport
failures to these classes and keep the original exception as ``__cause__``.
No gradio imports here: the UI edge turns a StudioError into ``gr.Error``.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: ``str(err)`` is a complete sentence fit to show a user."""

    def __init__(self, message: str, *, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip())


class ConfigError(StudioError):
    """A setting is missing or malformed; the app cannot start with it."""


class BackendUnavailable(StudioError):
    """A backend (Ollama, ComfyUI, OpenRouter) could not be reached at all."""


class BackendRejected(StudioError):
    """A backend answered, but refused the request (4xx, bad key, no credit...)."""

    def __init__(self, message: str, *, hint: str = "", status: int | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class ModelNotFound(BackendRejected):
    """The named model is not installed / not known to the backend."""


class GenerationFailed(StudioError):
    """Generation started but failed part way (the partial result is kept by the caller)."""


class StreamInterrupted(GenerationFailed):
    """The connection dropped in the middle of a streamed reply."""


class StorageFailed(StudioError):
    """The studio's own data couldn't be saved or read: the disk is full, it reported an I/O
    error, or another program kept the database locked. What was being saved is not saved."""


class BudgetExceeded(StudioError):
    """A cloud request would go over a configured spending cap."""


class InvalidInput(StudioError):
    """Something the user typed or uploaded cannot be used; nothing was sent."""


class NotFound(StudioError):
    """What was asked for does not exist, or is not the caller's: both get this answer."""


class LimitReached(StudioError):
    """A per-user limit (requests, tokens, images, replies at once) says not now;
    ``retry_after`` is how many seconds until it would say yes, when that is known."""

    def __init__(self, message: str, *, hint: str = "", retry_after: float | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after
