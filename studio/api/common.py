"""What the APIs share: the error they answer with and the status for each studio refusal
(``from_studio``), the key check, the JSON body, waiting for a reply's first sign of life,
the model that answered, and following a reply as text deltas (stopping it upstream when
the client goes away). No gradio imports here."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import (BackendRejected, BackendUnavailable, BudgetExceeded, InvalidInput,
                      LimitReached, ModelNotFound, NotFound, StorageFailed, StudioError)

FOLLOW_INTERVAL = 0.02  # seconds between streamed pieces at most (coalescing, like the page)


class ApiError(Exception):
    """A refusal in OpenAI's error shape (``response()``); the Ollama routes send just the
    message (``{"error": ...}``) with the same status."""

    def __init__(self, status: int, message: str, kind: str, *, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code, self.headers = param, code, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status, headers=self.headers)


def require_key(keys, request: Request, *, ollama: bool = False) -> tuple[str, str]:
    """(user, key name) for the request's live key; raises the 401 each API's clients
    expect (``ollama``: Ollama's wording) when there is none."""
    found = key_user(keys, request)
    if found is not None:
        return found
    if ollama:
        raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer "
                       "<key>' (make one in Settings).", "unauthorized")
    raise ApiError(401, "Incorrect or missing API key. Make one in Settings (or with "
                   "`studio keys add USER NAME`) and send it as "
                   "'Authorization: Bearer <key>'.", "invalid_request_error",
                   code="invalid_api_key")


async def json_body(request: Request, *, ollama: bool = False) -> dict:
    """The request's JSON object; raises a 400 in each API's words otherwise."""
    raw = await request.body()
    kind = "invalid_request" if ollama else "invalid_request_error"
    if ollama and not raw.strip():
        raise ApiError(400, "missing request body", kind)  # Ollama's own words
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body isn't JSON.", kind) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", kind)
    return body


def from_studio(exc: StudioError) -> ApiError:
    """The status and shape an OpenAI client handles for each studio refusal."""
    text = str(exc)
    if isinstance(exc, LimitReached):
        wait = exc.retry_after if exc.retry_after is not None else 60
        return ApiError(429, text, "rate_limit_exceeded",
                        headers={"Retry-After": str(max(1, math.ceil(wait)))})
    if isinstance(exc, BudgetExceeded):
        return ApiError(402, text, "insufficient_quota", code="budget_exceeded")
    if isinstance(exc, (ModelNotFound, NotFound)):
        return ApiError(404, text, "invalid_request_error", param="model",
                        code="model_not_found")
    if isinstance(exc, InvalidInput):
        unknown = "not a model from the list" in text or "doesn't name a backend" in text
        return ApiError(404 if unknown else 400, text, "invalid_request_error",
                        param="model" if unknown or "model" in text.lower() else None,
                        code="model_not_found" if unknown else None)
    if isinstance(exc, BackendUnavailable):
        return ApiError(503, text, "api_error", code="backend_unavailable")
    if isinstance(exc, StorageFailed):  # the disk is full or the database busy: try later
        return ApiError(503, text, "api_error", code="storage_unavailable")
    if isinstance(exc, BackendRejected) and exc.status == 400:  # e.g. "does not support tools"
        return ApiError(400, text, "invalid_request_error")
    if isinstance(exc, BackendRejected):
        return ApiError(502, text, "api_error", code="backend_error")
    return ApiError(502, text, "api_error")


def failure(reply) -> ApiError:
    """The error a reply that produced nothing ended with, as the API answers it."""
    exc = getattr(reply, "failure", None)
    snap = reply.snapshot()
    return from_studio(exc) if exc is not None else ApiError(502, snap.error, "api_error")


async def refused(chat, reply) -> ApiError | None:
    """Wait for the reply's first sign of life; the error when it failed before writing
    anything, so a stream's status line can still say so (429, 400, 503...). Waiting costs
    nothing: the first piece goes out the moment it arrives."""
    try:
        await reply.wait_until_async(lambda: reply.text_parts or reply.thinking_parts
                                     or reply.tool_calls or reply.finished is not None, 600.0)
    except asyncio.CancelledError:
        chat.stop_reply(reply)
        raise
    snap = reply.snapshot()
    if snap.status == "error" and not snap.text:
        return failure(reply)
    return None


def key_user(keys, request: Request) -> tuple[str, str] | None:
    """(user, key name) for the request's key, None without a live one. The key comes as
    ``Authorization: Bearer <key>``, or as the password of HTTP Basic auth, which is what
    clients send for a host written ``http://user:<key>@studio:8189`` (Ollama apps that
    can't set headers)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    scheme, secret = scheme.lower(), secret.strip()
    if scheme == "basic":
        try:
            secret = base64.b64decode(secret, validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    elif scheme != "bearer":
        return None
    return keys.user_for(secret)


async def start_reply(chat, messages, *, model: str, options, user: str, via: str):
    """``chat.complete`` from the event loop: in place when it needs no I/O (a local model,
    limits known), else on a worker thread. Raises like ``complete``."""
    if chat.admits_at_once(model, messages, user=user):
        return chat.complete(messages, model=model, options=options, user=user, via=via)
    return await asyncio.to_thread(chat.complete, messages, model=model, options=options,
                                   user=user, via=via)


def answered_by(snap) -> str:
    """The id of the model that answered (a fallback's, when one stood in)."""
    return f"{snap.backend}:{snap.answered_by}" if snap.backend else snap.answered_by


async def deltas(chat, reply) -> AsyncIterator[tuple[object, str]]:
    """(snapshot, new text) as the reply grows; the last snapshot is done. A client that
    goes away (the iterator closed early) stops the reply, like the Stop button."""
    sent, version = 0, -1
    try:
        while True:
            snap = await reply.wait_newer_async(version, 15.0)
            version = snap.version
            piece = snap.text[sent:]
            sent = len(snap.text)
            yield snap, piece
            if snap.done:
                return
            await asyncio.sleep(FOLLOW_INTERVAL)
    finally:
        if not reply.snapshot().done:
            chat.stop_reply(reply)
