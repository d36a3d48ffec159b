"""The OpenAI-compatible API under ``/v1``, served by the studio itself: models and chat
completions (streamed or not; tools, stop sequences and JSON mode passed through to the
backend), authenticated with per-user keys (``Authorization: Bearer``).

A completion goes through ``ChatService.complete``, the very path of the Chat tab: the same
refusals, GPU policy, router (fallbacks, retries, budgets) and usage accounting, as the key's
user. Errors come in OpenAI's shape with the studio's sentence as the message; never a
traceback or a secret. No gradio imports here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import StudioError
from ..events import ChatMessage, ChatOptions, ChatToolCall
from .common import (ApiError, answered_by, deltas, failure, from_studio, json_body,
                     refused, require_key, start_reply)


class OpenAIApi:
    """Routes over ``services`` (chat, models, keys)."""

    def __init__(self, chat, models, keys) -> None:
        self.chat = chat
        self.models = models
        self.keys = keys

    def routes(self) -> list[Route]:
        return [Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"])]

    # -- routes -----------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        try:
            require_key(self.keys, request)
            choices, _problems = await asyncio.to_thread(self.models.choices)
        except ApiError as err:
            return err.response()
        return JSONResponse({"object": "list", "data": [
            {"id": model_id, "object": "model", "created": 0,
             "owned_by": model_id.split(":", 1)[0], "name": label}
            for label, model_id in choices]})

    async def chat_completions(self, request: Request) -> Response:
        try:
            user, key_name = require_key(self.keys, request)
            body = await json_body(request)
            messages = _messages(body.get("messages"))
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise ApiError(400, "'model' is required: a model id from GET /v1/models.",
                               "invalid_request_error", param="model")
            options = _options(body)
            reply = await start_reply(self.chat, messages, model=model, options=options,
                                      user=user, via=f"api: {key_name}")
        except ApiError as err:
            return err.response()
        except StudioError as exc:
            return from_studio(exc).response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        failed = await refused(self.chat, reply)
        if failed is not None:  # nothing was written: answer with the error's own status
            return failed.response()
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._stream(reply, completion_id, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await self._whole(reply, completion_id)

    # -- answers ----------------------------------------------------------------------

    async def _whole(self, reply, completion_id: str) -> Response:
        try:
            await reply.wait_until_async(lambda: reply.finished is not None, 24 * 3600.0)
        except asyncio.CancelledError:
            self.chat.stop_reply(reply)
            raise
        snap = reply.snapshot()
        if snap.status == "error":
            return failure(reply).response()
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": int(time.time()),
            "model": answered_by(snap),
            "choices": [{"index": 0, "finish_reason": _finish_reason(snap),
                         "message": _message(snap)}],
            "usage": _usage(snap)})

    async def _stream(self, reply, completion_id: str, include_usage: bool
                      ) -> AsyncIterator[bytes]:
        created = int(time.time())
        first = True
        async for snap, piece in deltas(self.chat, reply):
            if piece or first:
                delta: dict[str, Any] = {"content": piece}
                if first:
                    delta["role"] = "assistant"
                first = False
                yield _chunk(completion_id, created, snap, delta, None)
        if snap.tool_calls:
            yield _chunk(completion_id, created, snap, {"tool_calls": [
                {"index": i, **call} for i, call in enumerate(_calls(snap))]}, None)
        if snap.status == "error" or (snap.status == "partial" and snap.error):
            yield _sse({"error": {"message": snap.error, "type": "api_error"}})
        else:
            yield _chunk(completion_id, created, snap, {}, _finish_reason(snap))
        if include_usage:
            yield _sse({"id": completion_id, "object": "chat.completion.chunk",
                        "created": created, "model": answered_by(snap), "choices": [],
                        "usage": _usage(snap)})
        yield b"data: [DONE]\n\n"

def _messages(raw: Any) -> list[ChatMessage]:
    """OpenAI messages to the studio's: text parts joined, data-URL images decoded."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list.", "invalid_request_error",
                       param="messages")
    out: list[ChatMessage] = []
    names: dict[str, str] = {}  # tool call id -> tool name (Ollama wants the name back)
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user, assistant "
                           "or tool.", "invalid_request_error", param=f"messages[{i}].role")
        role = "system" if message["role"] == "developer" else message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ApiError(400, f"messages[{i}] is a tool result without 'tool_call_id'.",
                               "invalid_request_error", param=f"messages[{i}].tool_call_id")
            out.append(ChatMessage("tool", _text(message.get("content"), i),
                                   tool_call_id=call_id, name=names.get(call_id)))
            continue
        calls = _tool_calls(message.get("tool_calls"), i) if role == "assistant" else ()
        names.update((call.id, call.name) for call in calls)
        content = message.get("content") or ""
        texts, images = [], []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text") or ""))
                elif kind == "image_url":
                    images.append(_image(part.get("image_url"), i))
                else:
                    raise ApiError(400, f"messages[{i}] has a content part of type {kind!r}; "
                                   "text and image_url are understood.",
                                   "invalid_request_error", param=f"messages[{i}].content")
        else:
            raise ApiError(400, f"messages[{i}].content must be text or a list of parts.",
                           "invalid_request_error", param=f"messages[{i}].content")
        out.append(ChatMessage(role, "\n".join(texts), tuple(images), tool_calls=calls))
    return out


def _text(content: Any, index: int) -> str:
    """A tool result's content: text, or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         for p in content):
        return "\n".join(str(p.get("text") or "") for p in content)
    raise ApiError(400, f"messages[{index}].content must be text.", "invalid_request_error",
                   param=f"messages[{index}].content")


def _tool_calls(raw: Any, index: int) -> tuple[ChatToolCall, ...]:
    """An assistant message's earlier tool calls, as the client sends them back."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ApiError(400, f"messages[{index}].tool_calls must be a list.",
                       "invalid_request_error", param=f"messages[{index}].tool_calls")
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError(400, f"messages[{index}].tool_calls needs each call's "
                           "function name.", "invalid_request_error",
                           param=f"messages[{index}].tool_calls")
        arguments = function.get("arguments")
        calls.append(ChatToolCall(id=str(call.get("id") or ""), name=function["name"],
                                  arguments=arguments if isinstance(arguments, str)
                                  else json.dumps(arguments or {})))
    return tuple(calls)


def _image(value: Any, index: int) -> bytes:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise ApiError(400, f"messages[{index}]: images must be data URLs "
                       "(data:image/png;base64,...); the studio fetches no links.",
                       "invalid_request_error", param=f"messages[{index}].content")
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError:
        raise ApiError(400, f"messages[{index}]: the image's base64 doesn't decode.",
                       "invalid_request_error", param=f"messages[{index}].content") from None


def _options(body: dict) -> ChatOptions:
    def number(name: str, kind):
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, f"'{name}' must be a number.", "invalid_request_error",
                           param=name)
        return kind(value)

    max_tokens = number("max_completion_tokens", int) or number("max_tokens", int)
    n = body.get("n")
    if n not in (None, 1):
        raise ApiError(400, "'n' must be 1: the studio writes one answer per request "
                       "(send several requests for more).", "invalid_request_error", param="n")
    return ChatOptions(temperature=number("temperature", float), top_p=number("top_p", float),
                       seed=number("seed", int), max_tokens=max_tokens, stop=_stop(body),
                       response_format=_response_format(body.get("response_format")),
                       tools=_tools(body.get("tools")), tool_choice=_tool_choice(body))


def _stop(body: dict) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > 4:
        raise ApiError(400, "'stop' must be a string or a list of up to 4 strings.",
                       "invalid_request_error", param="stop")
    return tuple(stops) or None


def _response_format(value: Any) -> dict | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict) \
            and isinstance(value["json_schema"].get("schema"), dict):
        return {"type": "json_schema", "json_schema": value["json_schema"]}
    raise ApiError(400, "'response_format' must be {\"type\": \"text\"}, {\"type\": "
                   "\"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": "
                   "{\"name\": ..., \"schema\": {...}}}.", "invalid_request_error",
                   param="response_format")


def _tools(value: Any) -> tuple[dict, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and t.get("type") == "function"
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in value):
        raise ApiError(400, "'tools' must be a list of {\"type\": \"function\", \"function\": "
                       "{\"name\", \"description\", \"parameters\"}}.",
                       "invalid_request_error", param="tools")
    return tuple(value) or None


def _tool_choice(body: dict) -> str | dict | None:
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return choice
    raise ApiError(400, "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}.",
                   "invalid_request_error", param="tool_choice")


def _usage(snap) -> dict:
    prompt = snap.usage.prompt_tokens or 0
    completion = snap.usage.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _finish_reason(snap) -> str:
    if snap.tool_calls:
        return "tool_calls"
    return "length" if snap.usage.done_reason == "length" else "stop"


def _message(snap) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": snap.text or (
        None if snap.tool_calls else "")}
    if snap.tool_calls:
        message["tool_calls"] = _calls(snap)
    return message


def _calls(snap) -> list[dict]:
    return [{"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in snap.tool_calls]


def _chunk(completion_id: str, created: int, snap, delta: dict, finish: str | None) -> bytes:
    return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                 "model": answered_by(snap),
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
