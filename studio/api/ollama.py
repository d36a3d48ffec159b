"""An Ollama-compatible surface for tools that only speak Ollama (editors, home automation,
phone apps): ``/api/version``, ``/api/tags`` and ``/api/chat`` (NDJSON streaming or one
answer), with the same per-user keys as ``/v1`` (``Authorization: Bearer``). Models are
listed under the Chat picker's ids, cloud ones included, and a chat goes through
``ChatService.complete`` like every other. Errors are Ollama's ``{"error": "..."}`` with the
studio's sentence. No gradio imports here.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import StudioError
from ..events import ChatMessage, ChatOptions
from .common import answered_by, deltas, key_user
from .openai import ApiError, from_studio

VERSION = "0.12.6"  # what /api/version answers: tools check for a recent Ollama


class OllamaApi:
    def __init__(self, chat, models, keys) -> None:
        self.chat = chat
        self.models = models
        self.keys = keys

    def routes(self) -> list[Route]:
        return [Route("/api/version", self.version, methods=["GET"]),
                Route("/api/tags", self.tags, methods=["GET"]),
                Route("/api/chat", self.chat_route, methods=["POST"])]

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        try:
            self._user(request)
        except ApiError as err:
            return _error(err)
        choices, _problems = await asyncio.to_thread(self.models.choices)
        return JSONResponse({"models": [
            {"name": model_id, "model": model_id, "modified_at": _now(), "size": 0,
             "digest": "", "details": {"format": "", "family": model_id.split(":", 1)[0],
                                       "families": None, "parameter_size": "",
                                       "quantization_level": ""}}
            for _label, model_id in choices]})

    async def chat_route(self, request: Request) -> Response:
        try:
            user, key_name = self._user(request)
            try:
                body = json.loads(await request.body())
            except ValueError:
                raise ApiError(400, "The request body isn't JSON.", "invalid_request") from None
            messages = _messages(body.get("messages"))
            reply = await asyncio.to_thread(
                self.chat.complete, messages, model=str(body.get("model") or ""),
                options=_options(body.get("options") or {}), user=user,
                via=f"api: {key_name}")
        except ApiError as err:
            return _error(err)
        except StudioError as exc:
            return _error(from_studio(exc))
        if body.get("stream", True):
            return StreamingResponse(self._stream(reply), media_type="application/x-ndjson")
        await asyncio.to_thread(reply.wait_finished, None)
        snap = reply.snapshot()
        if snap.status == "error":
            return JSONResponse({"error": snap.error}, status_code=502)
        return JSONResponse(_last(snap, snap.text))

    async def _stream(self, reply) -> AsyncIterator[bytes]:
        async for snap, piece in deltas(self.chat, reply):
            if piece:
                yield _line({"model": answered_by(snap), "created_at": _now(),
                             "message": {"role": "assistant", "content": piece},
                             "done": False})
        if snap.status == "error" or (snap.status == "partial" and snap.error):
            yield _line({"error": snap.error})
        else:
            yield _line(_last(snap, ""))

    def _user(self, request: Request) -> tuple[str, str]:
        found = key_user(self.keys, request)
        if found is None:
            raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer "
                           "<key>' (make one in Settings).", "unauthorized")
        return found


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)


def _messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list.", "invalid_request")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant.",
                           "invalid_request")
        try:
            images = tuple(base64.b64decode(image, validate=True)
                           for image in message.get("images") or ())
        except (ValueError, TypeError):
            raise ApiError(400, f"messages[{i}]: an image isn't base64.",
                           "invalid_request") from None
        out.append(ChatMessage(message["role"], str(message.get("content") or ""), images))
    return out


def _options(options: dict) -> ChatOptions:
    def number(name: str, kind):
        value = options.get(name)
        return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None

    return ChatOptions(temperature=number("temperature", float), top_p=number("top_p", float),
                       num_ctx=number("num_ctx", int), seed=number("seed", int),
                       max_tokens=number("num_predict", int))


def _last(snap, content: str) -> dict:
    u = snap.usage
    return {"model": answered_by(snap), "created_at": _now(),
            "message": {"role": "assistant", "content": content}, "done": True,
            "done_reason": u.done_reason or "stop",
            "total_duration": int(snap.elapsed_ms * 1e6),
            "prompt_eval_count": u.prompt_tokens or 0, "eval_count": u.completion_tokens or 0}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _line(payload: dict) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()

