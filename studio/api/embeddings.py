"""Embeddings through the studio's API: OpenAI's ``POST /v1/embeddings`` and Ollama's
``POST /api/embed`` (plus its deprecated single-text ``POST /api/embeddings``), with the same
per-user keys as the chat routes (``Authorization: Bearer``).

Every request goes through ``Embeddings.embed`` as the key's user, marked "api: <key name>"
in Costs: the same model ids as ``GET /v1/models``, limits, cloud budget and accounting.
Errors come in each API's own shape (OpenAI's ``{"error": {...}}`` with ``param``, Ollama's
``{"error": "..."}``) with the studio's sentence; never a traceback or a secret.
No gradio imports here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidInput, StudioError
from ..model_id import ModelId
from .common import ApiError, from_studio, json_body, require_key
from .ollama import _error as ollama_error

log = logging.getLogger(__name__)

ENCODINGS = ("float", "base64")


class EmbeddingsApi:
    """Routes over ``services.embeddings`` and ``services.keys``."""

    def __init__(self, embeddings, keys) -> None:
        self.embeddings = embeddings
        self.keys = keys

    def routes(self) -> list[Route]:
        return [Route("/v1/embeddings", self.openai_embeddings, methods=["POST"]),
                Route("/api/embed", self.ollama_embed, methods=["POST"]),
                Route("/api/embeddings", self.ollama_embeddings, methods=["POST"])]

    # -- OpenAI ---------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        try:
            user, key_name = require_key(self.keys, request)
            body = await json_body(request)
            model = _model(body)
            texts = _openai_input(body.get("input"))
            encoding = body.get("encoding_format") or "float"
            if encoding not in ENCODINGS:
                raise ApiError(400, f"'encoding_format' must be float or base64 (got "
                               f"{encoding!r}).", "invalid_request_error",
                               param="encoding_format")
            dimensions = _dimensions(body.get("dimensions"))
            result = await self._embed(model, texts, user, key_name, dimensions)
        except ApiError as err:
            return err.response()
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64(vector) if encoding == "base64" else vector}
                for i, vector in enumerate(result.vectors)]
        tokens = result.prompt_tokens or 0
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # -- Ollama ---------------------------------------------------------------------------

    async def ollama_embed(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            user, key_name = require_key(self.keys, request, ollama=True)
            body = await json_body(request, ollama=True)
            model = _model(body)
            texts = _ollama_input(body.get("input"))
            if not texts:  # Ollama's way to load a model: nothing to embed, nothing sent
                ModelId.known(model)
                return JSONResponse({"model": model, "embeddings": []})
            result = await self._embed(model, texts, user, key_name,
                                       _dimensions(body.get("dimensions")))
        except ApiError as err:
            return ollama_error(err)
        except StudioError as exc:
            return ollama_error(from_studio(exc))
        answer: dict[str, Any] = {"model": model, "embeddings": result.vectors,
                                  "total_duration": int((time.perf_counter() - started) * 1e9)}
        if result.prompt_tokens:  # Go's omitempty
            answer["prompt_eval_count"] = result.prompt_tokens
        return JSONResponse(answer)

    async def ollama_embeddings(self, request: Request) -> Response:
        """The deprecated ``{"model", "prompt"}`` -> ``{"embedding": [...]}``."""
        try:
            user, key_name = require_key(self.keys, request, ollama=True)
            body = await json_body(request, ollama=True)
            model = _model(body)
            prompt = body.get("prompt")
            if prompt is not None and not isinstance(prompt, str):
                raise ApiError(400, "'prompt' must be a text.", "invalid_request_error",
                               param="prompt")
            if not prompt:  # as in Ollama: an empty prompt only loads the model
                ModelId.known(model)
                return JSONResponse({"embedding": []})
            result = await self._embed(model, [prompt], user, key_name, None)
        except ApiError as err:
            return ollama_error(err)
        except StudioError as exc:
            return ollama_error(from_studio(exc))
        return JSONResponse({"embedding": result.vectors[0]})

    # -- helpers ----------------------------------------------------------------------

    async def _embed(self, model: str, texts: list[str], user: str, key_name: str,
                     dimensions: int | None):
        """The service's answer; its refusals as ``ApiError``, input ones naming ``input``."""
        try:
            result = await asyncio.to_thread(self.embeddings.embed, model, texts, user=user,
                                             via=f"api: {key_name}", dimensions=dimensions)
        except StudioError as exc:
            err = from_studio(exc)
            if isinstance(exc, InvalidInput) and err.status == 400 and err.param is None:
                err.param = "input"
            raise err from exc
        except Exception as exc:  # noqa: BLE001 - a bug: logged, never shown as a traceback
            log.exception("embeddings failed for %s", model)
            raise ApiError(500, "The studio failed to make the embeddings; the details are in "
                           "its log.", "api_error") from exc
        if dimensions and any(len(vector) > dimensions for vector in result.vectors):
            raise ApiError(400, f"'{model}' can't shorten its vectors to {dimensions} "
                           f"dimensions (it answered {len(result.vectors[0])}).",
                           "invalid_request_error", param="dimensions")
        return result


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: an embedding model id from GET /v1/models, "
                       "e.g. ollama:nomic-embed-text:latest.", "invalid_request_error",
                       param="model")
    return model


def _openai_input(raw: Any) -> list[str]:
    """OpenAI's ``input``: a text or a list of texts (token-id arrays are refused)."""
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        texts = list(raw)
    elif isinstance(raw, list) and raw and all(
            isinstance(item, int) or (isinstance(item, list)
                                      and all(isinstance(i, int) for i in item))
            for item in raw):
        raise ApiError(400, "'input' as token ids isn't supported: the studio's models have "
                       "their own tokenizers. Send the text instead.", "invalid_request_error",
                       param="input")
    else:
        raise ApiError(400, "'input' must be a text or a list of texts.",
                       "invalid_request_error", param="input")
    if not texts or any(not text for text in texts):
        raise ApiError(400, "'input' is empty: send a non-empty text, or a list of them.",
                       "invalid_request_error", param="input")
    return texts


def _ollama_input(raw: Any) -> list[str]:
    """Ollama's ``input``: a text or a list of texts; an empty one means "just load"."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw] if raw else []
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise ApiError(400, "'input' must be a text or a list of texts.", "invalid_request_error",
                   param="input")


def _dimensions(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ApiError(400, "'dimensions' must be a whole number of 1 or more.",
                       "invalid_request_error", param="dimensions")
    return raw


def _base64(vector: list[float]) -> str:
    """Little-endian float32 bytes in base64, which the openai client decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
