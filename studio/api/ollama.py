"""An Ollama-compatible surface for tools that only speak Ollama (editors, home automation,
phone apps): ``/api/version``, ``/api/tags``, ``/api/show``, ``/api/chat`` and
``/api/generate`` (NDJSON streaming or one answer), with the same per-user keys as ``/v1``
(``Authorization: Bearer``). Models are listed under the Chat picker's ids, cloud ones
included, and every answer goes through ``ChatService.complete`` like every other: tools,
``format`` (JSON mode or a schema) and ``options.stop`` are passed on to the backend.
Errors are Ollama's ``{"error": "..."}`` with the studio's sentence. No gradio imports here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..costs.catalog import picker_choices
from ..errors import StudioError
from ..events import ChatMessage, ChatOptions, ChatToolCall
from ..model_id import ModelId
from .common import (ApiError, answered_by, deltas, failure, from_studio, json_body,
                     refused, require_key, start_reply)

VERSION = "0.12.6"  # what /api/version answers: tools check for a recent Ollama


class OllamaApi:
    def __init__(self, chat, models, keys) -> None:
        self.chat = chat
        self.models = models
        self.keys = keys

    def routes(self) -> list[Route]:
        return [Route("/api/version", self.version, methods=["GET"]),
                Route("/api/tags", self.tags, methods=["GET"]),
                Route("/api/show", self.show, methods=["POST"]),
                Route("/api/chat", self.chat_route, methods=["POST"]),
                Route("/api/generate", self.generate, methods=["POST"])]

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        try:
            require_key(self.keys, request, ollama=True)
        except ApiError as err:
            return _error(err)
        local, cloud, _problems = await asyncio.to_thread(self.models.listing)
        facts = {str(ModelId("ollama", m.name)): m for m in local}
        choices = picker_choices(local, cloud)
        choices[len(local):len(local)] = self.models.server_choices()
        return JSONResponse({"models": [_tag(model_id, facts.get(model_id))
                                        for _label, model_id in choices]})

    async def show(self, request: Request) -> Response:
        try:
            require_key(self.keys, request, ollama=True)
            body = await json_body(request, ollama=True)
            name = body.get("model") or body.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "model is required", "invalid_request")
            model = ModelId.parse(name)
            info = await asyncio.to_thread(self.models.describe, model)
        except ApiError as err:
            return _error(err)
        except StudioError as exc:
            return _error(from_studio(exc))
        return JSONResponse({"modelfile": info.get("modelfile", ""),
                             "parameters": info.get("parameters", ""),
                             "template": info.get("template", ""),
                             "license": info.get("license", ""),
                             "details": info.get("details") or {},
                             "model_info": info.get("model_info") or {},
                             "capabilities": info.get("capabilities") or [],
                             "modified_at": _now()})

    async def chat_route(self, request: Request) -> Response:
        return await self._answer(request, generate=False)

    async def generate(self, request: Request) -> Response:
        return await self._answer(request, generate=True)

    async def _answer(self, request: Request, *, generate: bool) -> Response:
        try:
            user, key_name = require_key(self.keys, request, ollama=True)
            body = await json_body(request, ollama=True)
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise ApiError(400, "model is required", "invalid_request")
            messages = _prompt(body) if generate else _messages(body.get("messages"))
            if generate and not messages:  # Ollama loads the model and says so
                return JSONResponse({"model": model, "created_at": _now(), "response": "",
                                     "done": True, "done_reason": "load"})
            reply = await start_reply(self.chat, messages, model=model,
                                      options=_options(body), user=user,
                                      via=f"api: {key_name}")
        except ApiError as err:
            return _error(err)
        except StudioError as exc:
            return _error(from_studio(exc))
        failed = await refused(self.chat, reply)
        if failed is not None:
            return _error(failed)
        if body.get("stream", True) is not False:
            return StreamingResponse(self._stream(reply, generate),
                                     media_type="application/x-ndjson")
        try:
            await reply.wait_until_async(lambda: reply.finished is not None, 24 * 3600.0)
        except asyncio.CancelledError:
            self.chat.stop_reply(reply)
            raise
        snap = reply.snapshot()
        if snap.status == "error":
            return _error(failure(reply))
        return JSONResponse(_last(snap, snap.text, generate, with_calls=True))

    async def _stream(self, reply, generate: bool) -> AsyncIterator[bytes]:
        async for snap, piece in deltas(self.chat, reply):
            if piece:
                yield _line(_part(snap, piece, generate))
        if snap.tool_calls and not generate:
            yield _line({**_part(snap, "", generate), "message": {
                "role": "assistant", "content": "", "tool_calls": _calls(snap)}})
        if snap.status == "error" or (snap.status == "partial" and snap.error):
            yield _line({"error": snap.error})
        else:
            yield _line(_last(snap, "", generate))


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)


def _tag(model_id: str, info) -> dict:
    """One /api/tags entry; Ollama's own figures for a local model."""
    family = getattr(info, "family", "") or model_id.split(":", 1)[0]
    return {"name": model_id, "model": model_id,
            "modified_at": getattr(info, "modified_at", "") or _now(),
            "size": getattr(info, "size", 0) or 0, "digest": getattr(info, "digest", "") or "",
            "details": {"parent_model": "", "format": "gguf" if info is not None else "",
                        "family": family, "families": [family],
                        "parameter_size": getattr(info, "parameter_size", "") or "",
                        "quantization_level": getattr(info, "quantization", "") or ""}}


def _images(raw: Any, where: str) -> tuple[bytes, ...]:
    try:
        return tuple(base64.b64decode(image, validate=True) for image in raw or ())
    except (ValueError, TypeError):
        raise ApiError(400, f"{where}: an image isn't base64.", "invalid_request") from None


def _messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list.", "invalid_request")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user, assistant or "
                           "tool.", "invalid_request")
        calls = tuple(
            ChatToolCall(id=str(call.get("id") or f"call_{uuid.uuid4().hex[:8]}"),
                         name=str((call.get("function") or {}).get("name") or ""),
                         arguments=json.dumps((call.get("function") or {}).get("arguments")
                                              or {}))
            for call in message.get("tool_calls") or () if isinstance(call, dict))
        out.append(ChatMessage(message["role"], str(message.get("content") or ""),
                               _images(message.get("images"), f"messages[{i}]"),
                               tool_calls=calls, name=message.get("tool_name"),
                               tool_call_id=message.get("tool_call_id")))
    return out


def _prompt(body: dict) -> list[ChatMessage]:
    """/api/generate's system and prompt as messages ([] for an empty prompt: a load)."""
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be text.", "invalid_request")
    if not prompt:
        return []
    system = body.get("system")
    out = [ChatMessage("system", system)] if isinstance(system, str) and system else []
    return out + [ChatMessage("user", prompt, _images(body.get("images"), "images"))]


def _options(body: dict) -> ChatOptions:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'options' must be an object.", "invalid_request")

    def number(name: str, kind):
        value = options.get(name)
        return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None

    stop = options.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    fmt = body.get("format")
    if fmt == "json":
        response_format = {"type": "json_object"}
    elif isinstance(fmt, dict):
        response_format = {"type": "json_schema",
                           "json_schema": {"name": "response", "schema": fmt}}
    elif fmt in (None, ""):
        response_format = None
    else:
        raise ApiError(400, "'format' must be \"json\" or a JSON schema.", "invalid_request")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "'tools' must be a list.", "invalid_request")
    think = body.get("think")
    return ChatOptions(temperature=number("temperature", float), top_p=number("top_p", float),
                       num_ctx=number("num_ctx", int), seed=number("seed", int),
                       max_tokens=number("num_predict", int),
                       think=think if isinstance(think, bool) else None,
                       stop=tuple(s for s in stop if isinstance(s, str) and s) or None
                       if isinstance(stop, list) else None,
                       response_format=response_format, tools=tuple(tools or ()) or None)


def _calls(snap) -> list[dict]:
    out = []
    for i, call in enumerate(snap.tool_calls):
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        out.append({"id": call.id, "function": {"index": i, "name": call.name,
                                                "arguments": arguments}})
    return out


def _part(snap, content: str, generate: bool) -> dict:
    head = {"model": answered_by(snap), "created_at": _now()}
    if generate:
        return {**head, "response": content, "done": False}
    return {**head, "message": {"role": "assistant", "content": content}, "done": False}


def _last(snap, content: str, generate: bool, *, with_calls: bool = False) -> dict:
    """The closing object; ``with_calls`` for a whole answer (a stream sent them before)."""
    u = snap.usage
    last = _part(snap, content, generate)
    if with_calls and snap.tool_calls and not generate:
        last["message"]["tool_calls"] = _calls(snap)
    return {**last, "done": True, "done_reason": u.done_reason or "stop",
            "total_duration": int(snap.elapsed_ms * 1e6),
            "prompt_eval_count": u.prompt_tokens or 0, "eval_count": u.completion_tokens or 0}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _line(payload: dict) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()
