"""Image files: pictures coming in from people and going out of ComfyUI.

* ``check_input_image``: an uploaded picture is a real image within the size limit.
* ``save_output`` copies an image from ComfyUI into the data directory with a thumbnail,
  writing temp names and renaming, so nothing half-written is ever listed.
* ``read_png_metadata`` reads PNG text chunks as JSON data, never as code.

No gradio imports; no network.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import GenerationFailed, InvalidInput, StudioError

THUMB_SIZE = 320
IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- files


def check_input_image(path: str | Path, max_megapixels: float) -> tuple[int, int]:
    """(width, height) of an uploaded input image; raises InvalidInput if it isn't one a
    workflow can use. Reads only the header, so a huge image costs nothing to refuse."""
    path = Path(path)
    name = path.name
    try:
        with Image.open(path) as image:
            width, height = image.size
            kind = image.format
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        if isinstance(exc, Image.DecompressionBombError):
            raise InvalidInput(f"{name} is far too large to use as an input image.",
                               hint=f"Scale it below {max_megapixels:g} megapixels first.") from exc
        raise InvalidInput(f"{name} isn't an image the studio can read.",
                           hint="Upload a PNG, JPEG or WebP picture.") from exc
    if kind not in IMAGE_SUFFIXES:
        raise InvalidInput(f"{name} is a {kind} image; upload a PNG, JPEG or WebP.")
    megapixels = width * height / 1_000_000
    if megapixels > max_megapixels:
        raise InvalidInput(f"{name} is {megapixels:.1f} megapixels ({width}×{height}); the limit "
                           f"is {max_megapixels:g} (STUDIO_MAX_INPUT_MEGAPIXELS).",
                           hint="Scale it down first; the models work at about 1 megapixel.")
    return width, height


def read_png_metadata(source: str | Path | bytes) -> dict[str, Any]:
    """The text chunks of a PNG, each parsed as JSON when it is JSON, else kept as text.

    Data only: nothing is evaluated, whatever the chunk holds. Not a PNG -> {}.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    try:
        with Image.open(stream) as image:
            if image.format != "PNG":
                return {}
            chunks = dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError, ValueError):
        return {}
    finally:
        stream.close()
    result: dict[str, Any] = {}
    for key, value in chunks.items():
        try:
            result[key] = json.loads(value)
        except (TypeError, ValueError):
            result[key] = value
    return result


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temp name beside ``path`` and rename: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SavedFile:
    path: str  # relative to the outputs folder
    thumb: str
    width: int
    height: int
    bytes: int


def save_output(outputs_dir: Path, data: bytes, *, stem: str | None = None) -> SavedFile:
    """Store one image from ComfyUI byte for byte (its PNG chunks kept) plus a WebP thumbnail.

    Raises GenerationFailed if the bytes aren't an image, StudioError if the disk refuses.
    Both files appear under their final names only once complete.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise GenerationFailed("ComfyUI sent something that isn't an image; nothing was "
                               "stored.") from exc
    now = datetime.now()
    stem = stem or f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    folder = Path(f"{now:%Y}") / f"{now:%m}"
    rel = folder / f"{stem}{IMAGE_SUFFIXES.get(image.format or '', '.png')}"
    rel_thumb = Path("thumbs") / folder / f"{stem}.webp"
    thumb = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    thumb.save(buf, format="WEBP", quality=78, method=0)
    target, target_thumb = outputs_dir / rel, outputs_dir / rel_thumb
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target_thumb.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
        write_atomic(target_thumb, buf.getvalue())
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise StudioError(f"Couldn't save the image into {outputs_dir} ({exc.strerror or exc}).",
                          hint="Check free disk space and the folder's permissions.") from exc
    return SavedFile(rel.as_posix(), rel_thumb.as_posix(), image.width, image.height, len(data))


def keep_input(path: str | Path, uploads_dir: Path) -> str:
    """A copy of an image job's input picture in the data dir, for "reuse these settings"."""
    source = Path(path)
    target_dir = Path(uploads_dir) / "images"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{uuid.uuid4().hex[:12]}{source.suffix.lower() or '.png'}"
    shutil.copyfile(source, target)
    return str(target)
