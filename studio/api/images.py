"""OpenAI's image generation under ``/v1``, over the studio's ComfyUI templates.

``POST /v1/images/generations`` turns OpenAI's request into the ``ImageRequest`` the Images
tab would build (same template defaults, the same checkpoint stand-in when the template's
own isn't in ComfyUI) and runs it through ``ImageJobs.submit`` as the key's user: their
image limit applies, the pictures land in their gallery, and the job is accounted in
Costs marked ``api: <key name>``. The request waits for the job (bounded); a client that
goes away cancels it, like the Cancel button.

``GET /v1/images/files/{id}`` serves a gallery image to its owner only: with the owner's
key, or with the signed link a ``url`` answer holds (HMAC-SHA256 over id, user and expiry,
an hour long, so it works in an ``<img>`` tag). Anyone else gets 404, the same as for an
image that doesn't exist. The signing secret is a random file in the data folder (0600),
made once. No gradio imports here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import mimetypes
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidInput, StudioError
from ..images.plans import DEFAULT_WORKFLOW, MAX_SEEDS, ImageRequest, form_defaults
from ..images.runner import START_COMFYUI
from ..images.workflows import MAX_SEED, Template
from .common import ApiError, from_studio, json_body, require_key

log = logging.getLogger(__name__)

URL_LIFETIME = 3600  # seconds a signed image link works, like OpenAI's image URLs
WAIT_LIMIT = 1800.0  # seconds a request waits for its job before cancelling it
DISCONNECT_POLL = 0.25  # seconds between checks that the client is still there
MIN_SIDE, MAX_SIDE = 64, 4096  # pixels; each side also a multiple of 8
MAX_STEPS = 10000  # ComfyUI's own KSampler maximum
MAX_N = MAX_SEEDS  # images per request: the Images tab's "seeds per prompt" limit
FORMATS = ("url", "b64_json")
SIGNING_KEY_FILE = "api-url-signing.key"
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")


def _bad(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param=param)


# --------------------------------------------------------------------------- signed links


class UrlSigner:
    """Signs and checks image links. The secret is read from ``path`` or, the first time,
    made there (random, owner-only permissions); nothing is written before it is needed."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._secret: bytes | None = None

    def query(self, image_id: int, user: str, lifetime: int = URL_LIFETIME) -> str:
        """``expires=<unix>&sig=<hex>`` for a link to ``image_id`` that ``user`` owns."""
        expires = int(self.clock()) + lifetime
        return f"expires={expires}&sig={self._sign(image_id, user, expires)}"

    def valid(self, image_id: int, user: str, expires: str | None, sig: str | None) -> bool:
        """Whether ``sig`` signs (image, user, expires) and ``expires`` hasn't passed."""
        if not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < self.clock():
            return False
        return hmac.compare_digest(self._sign(image_id, user, int(expires)), sig)

    def _sign(self, image_id: int, user: str, expires: int) -> str:
        message = f"{int(image_id)}\n{user}\n{int(expires)}".encode()
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def _key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = _read_or_make_secret(self.path)
            return self._secret


def _read_or_make_secret(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes().strip()
        if len(secret) < 32:
            raise StudioError(f"The link-signing key {path} is too short to be safe.",
                              hint="Delete it; the studio makes a new one (old links stop "
                                   "working).") from None
        return secret
    secret = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    return secret


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Generation:
    """What one ``/v1/images/generations`` body asks for, checked."""

    request: ImageRequest
    template: Template
    n: int
    response_format: str
    size: str


def template_names(library) -> list[str]:
    return [name for _, name in library.choices()]


def pick_template(library, model: Any) -> Template:
    """The template a ``model`` value names (``sd15_txt2img`` or ``comfyui:sd15_txt2img``);
    absent: the Images tab's default. Raises ApiError 404 (param model) when unknown."""
    if model in (None, ""):
        names = template_names(library)
        name = DEFAULT_WORKFLOW if DEFAULT_WORKFLOW in names else (names or [""])[0]
    elif isinstance(model, str):
        name = model.strip().removeprefix("comfyui:")
    else:
        raise _bad("'model' must be a template name such as 'sd15_txt2img'.", "model")
    template = library.templates().get(name)
    if template is None:
        raise ApiError(404, f"There is no image template {model!r}. Use one of: "
                       f"{', '.join(template_names(library)) or '(none are installed)'} "
                       "(the Images tab's Workflow list; files in workflows/).",
                       "invalid_request_error", param="model", code="model_not_found")
    if "input_image" in template.params:
        raise _bad(f"The template {name!r} starts from a picture, which "
                   "/v1/images/generations can't send. Use a text-to-image template such as "
                   f"{DEFAULT_WORKFLOW!r}.", "model")
    return template


def parse_size(value: Any, template: Template) -> tuple[int | None, int | None]:
    """(width, height) for ``size``; (None, None) = the template's own (``auto`` or absent).
    Raises ApiError 400 (param size) naming what is wrong.

    >>> from studio.images.workflows import Template
    >>> parse_size("512x768", Template("t", {}, {"width": (), "height": ()}))
    (512, 768)
    """
    if value in (None, "", "auto"):
        return None, None
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _bad(f"'size' must be WIDTHxHEIGHT, such as '512x512', or 'auto' (got {value!r}).",
                   "size")
    if not {"width", "height"} <= template.params:
        raise _bad(f"The template {template.name!r} makes images of a fixed size; send "
                   "size 'auto' or leave it out.", "size")
    width, height = int(match[1]), int(match[2])
    for name, side in (("Width", width), ("Height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise _bad(f"{name} {side} is outside {MIN_SIDE}..{MAX_SIDE} pixels.", "size")
        if side % 8:
            low = side // 8 * 8
            raise _bad(f"{name} {side} isn't a multiple of 8, which the models need. "
                       f"Try {low} or {low + 8}.", "size")
    return width, height


def _whole(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise _bad(f"'{name}' must be a whole number (got {value!r}).", name)
    if not low <= int(value) <= high:
        raise _bad(f"'{name}' must be between {low} and {high} (got {int(value)}).", name)
    return int(value)


def _needs(template: Template, param: str, field: str) -> None:
    if param not in template.params:
        raise _bad(f"The template {template.name!r} has no {param.replace('_', ' ')}; leave "
                   f"'{field}' out.", field)


def parse_generation(body: dict, library) -> Generation:
    """Check an OpenAI images body and build the ImageRequest the Images tab would (no
    server needed). Raises ApiError 400 naming the field, or 404 for an unknown ``model``.
    """
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("'prompt' is required: what should the image show?", "prompt")
    template = pick_template(library, body.get("model"))
    n = _whole(body, "n", 1, MAX_N) or 1
    response_format = body.get("response_format") or "url"
    if response_format not in FORMATS:
        raise _bad(f"'response_format' must be 'url' or 'b64_json' (got {response_format!r}).",
                   "response_format")
    width, height = parse_size(body.get("size"), template)
    negative = body.get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str):
            raise _bad("'negative_prompt' must be text.", "negative_prompt")
        _needs(template, "negative", "negative_prompt")
    seed = _whole(body, "seed", 0, MAX_SEED)
    if seed is not None:
        _needs(template, "seed", "seed")
    steps = _whole(body, "steps", 1, MAX_STEPS)
    if steps is not None:
        _needs(template, "steps", "steps")
    defaults = form_defaults(template)
    request = ImageRequest(workflow=template.name, prompt=prompt.strip(),
                           negative=negative or "", seed=-1 if seed is None else seed,
                           steps=steps, width=width, height=height, seeds=n)
    size = (f"{width or defaults.get('width')}x{height or defaults.get('height')}"
            if {"width", "height"} <= template.params else "auto")
    return Generation(request, template, n, response_format, size)


def with_stand_ins(ask: Generation, offered: dict[str, list[str]]) -> Generation:
    """``ask`` with ComfyUI's first checkpoint (LoRA) when the template's own isn't among
    ``offered`` (``ImageJobs.comfyui_lists``), as the Images tab's form does."""
    defaults = form_defaults(ask.template)
    stand_ins = {}
    for param, folder in (("checkpoint", "checkpoints"), ("lora_name", "loras")):
        known = offered.get(folder) or []
        if param in ask.template.params and known and defaults.get(param) not in known:
            stand_ins[param] = known[0]
    return replace(ask, request=replace(ask.request, **stand_ins)) if stand_ins else ask


# --------------------------------------------------------------------------- the routes


class ImagesApi:
    """Routes over ``ImageJobs`` (``images``) and the API keys (``keys``). ``coordinator``:
    the one-GPU policy, asked to make room before a job like the Images tab does."""

    def __init__(self, images, keys, data_dir: str | Path, coordinator=None, *,
                 wait_s: float = WAIT_LIMIT, clock: Callable[[], float] = time.time):
        self.images = images
        self.keys = keys
        self.coordinator = coordinator
        self.wait_s = wait_s
        self.clock = clock
        self.signer = UrlSigner(Path(data_dir) / SIGNING_KEY_FILE, clock=clock)

    def routes(self) -> list[Route]:
        return [Route("/v1/images/generations", self.generations, methods=["POST"]),
                Route("/v1/images/files/{image_id:int}", self.image_file, methods=["GET"])]

    async def generations(self, request: Request) -> Response:
        try:
            user, key_name = require_key(self.keys, request)
            body = await json_body(request)
            ask = parse_generation(body, self.images.library)
            # Also the check that ComfyUI is there: the node catalogue is cached, this isn't.
            ask = with_stand_ins(ask, await asyncio.to_thread(self.images.comfyui_lists))
            prepared = await asyncio.to_thread(self.images.prepare, ask.request)
            await asyncio.to_thread(self._make_room, ask.template,
                                    self.images.likely_host(ask.request, prepared))
            live = await asyncio.to_thread(self.images.submit, ask.request, user=user,
                                           prepared=prepared, via=f"api: {key_name}")
        except ApiError as err:
            return err.response()
        except InvalidInput as exc:
            return _bad(str(exc), None).response()
        except StudioError as exc:
            return from_studio(exc).response()
        try:
            finished = await self._wait(request, live)
        except ApiError as err:
            return err.response()
        if not finished:  # the client went away; nobody reads this answer
            return Response(status_code=499)
        snap = await asyncio.to_thread(self.images.snapshot, live.job_id, user=user)
        snap = snap or live.snapshot()
        if not snap.images:
            error = snap.error or "The job ended without making an image."
            status, code = ((503, "backend_unavailable") if START_COMFYUI in error
                            else (502, "backend_error"))
            return ApiError(status, error, "api_error", code=code).response()
        data = [await self._item(request, image, user, ask.response_format)
                for image in snap.images]
        return JSONResponse({"created": int(self.clock()), "data": data, "size": ask.size,
                             "output_format": "png"})

    async def image_file(self, request: Request) -> Response:
        image_id = request.path_params["image_id"]
        query = request.query_params
        store = self.images.store
        if "sig" in query or "expires" in query:
            image = await asyncio.to_thread(store.get_image, image_id)
            if image is not None and not self.signer.valid(image_id, image.user,
                                                           query.get("expires"), query.get("sig")):
                image = None
        else:
            image = None
            if request.headers.get("authorization"):  # a wrong key is a 401, as elsewhere
                try:
                    user, _key_name = require_key(self.keys, request)
                except ApiError as err:
                    return err.response()
                image = await asyncio.to_thread(store.get_image, image_id, user=user)
        path = self._file(image) if image is not None else None
        if path is None:
            return ApiError(404, f"There is no image {image_id} you may see. Links last "
                            f"{URL_LIFETIME // 60} minutes: ask for the image again, or send "
                            "the owner's key as 'Authorization: Bearer <key>'.",
                            "invalid_request_error", code="not_found").response()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type,
                            headers={"Cache-Control": "private, max-age=3600"})

    # -- helpers ----------------------------------------------------------------------

    def _make_room(self, template: Template, host: str | None) -> None:
        """Ask the GPU policy for room on ComfyUI ``host``'s machine, as the Images tab does;
        advice only, never a refusal."""
        if self.coordinator is None:
            return
        try:
            outcome = self.coordinator.before_image_job(template.family or "default",
                                                        host=host)
            if outcome.outcome not in ("fits",) and outcome.message:
                log.info("before an API image job: %s", self.images.public(outcome.message))
        except Exception:  # noqa: BLE001 - GPU sharing is advice; the job goes on without it
            log.warning("GPU coordination before an API image job failed", exc_info=True)

    async def _wait(self, request: Request, live) -> bool:
        """Wait for the job; False when the client went away (the job is cancelled then).
        Raises ApiError 504 (the job cancelled) after ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        try:
            # On the event loop: a thread each would let a few waiting requests fill the
            # loop's small thread pool, which every other API request needs.
            while not await live.wait_until_async(lambda: live.finished is not None,
                                                  DISCONNECT_POLL):
                if await request.is_disconnected():
                    log.info("API image job %s cancelled: the client went away", live.job_id)
                    self.images.cancel(live.job_id, user=live.user)
                    return False
                if time.monotonic() > deadline:
                    self.images.cancel(live.job_id, user=live.user)
                    raise ApiError(504, f"The images weren't ready within {self.wait_s:.0f} "
                                   "seconds, so the job was cancelled. Ask for fewer images or "
                                   "fewer steps, or check ComfyUI's queue.", "api_error",
                                   code="timeout")
        except asyncio.CancelledError:
            self.images.cancel(live.job_id, user=live.user)
            raise
        return True

    def _file(self, image) -> Path | None:
        outputs = self.images.outputs_dir.resolve()
        path = (outputs / image.path).resolve()
        if not path.is_relative_to(outputs) or not path.is_file():
            return None
        return path

    async def _item(self, request: Request, shown, user: str, response_format: str) -> dict:
        if response_format == "b64_json":
            data = await asyncio.to_thread(Path(shown.path).read_bytes)
            return {"b64_json": base64.b64encode(data).decode()}
        base = str(request.base_url).rstrip("/")
        return {"url": f"{base}/v1/images/files/{shown.id}?{self.signer.query(shown.id, user)}"}
