"""Image files: pictures coming in from people and going out of ComfyUI.

* ``check_input_image``: an uploaded picture is a real image within the size limit.
* ``save_output`` copies an image from ComfyUI into the data directory with a thumbnail,
  under hidden *pending* names; ``commit_output`` gives them their names once the gallery
  row is stored, and ``sweep_pending`` (at start-up) settles what a killed studio left
  between the two: a file with a row gets its name, one without is deleted. So a kill
  never leaves a picture without a row, nor a row without its picture.
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
from typing import Any, Callable

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


def pending_path(outputs_dir: Path, rel: str) -> Path:
    """Where ``save_output`` writes the file meant for ``rel`` until ``commit_output``: a
    hidden name beside it (backups and listings skip hidden names) holding this process's
    id, so a start-up sweep can tell a dead writer's file from a live studio's."""
    final = outputs_dir / rel
    return final.with_name(f".{final.name}.{os.getpid()}.pending")


def save_output(outputs_dir: Path, data: bytes, *, stem: str | None = None) -> SavedFile:
    """Store one image from ComfyUI byte for byte (its PNG chunks kept) plus a WebP thumbnail,
    both under pending names (``pending_path``): the caller stores the gallery row, then
    calls ``commit_output`` (or ``discard_output`` when the row failed).

    Raises GenerationFailed if the bytes aren't an image, StudioError if the disk refuses.
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
    saved = SavedFile(rel.as_posix(), rel_thumb.as_posix(), image.width, image.height,
                      len(data))
    try:
        for rel_path, content in ((saved.path, data), (saved.thumb, buf.getvalue())):
            pending = pending_path(outputs_dir, rel_path)
            pending.parent.mkdir(parents=True, exist_ok=True)
            _write(pending, content)  # a half-written one has no row: the sweep drops it
    except OSError as exc:
        discard_output(outputs_dir, saved)
        raise StudioError(f"Couldn't save the image into {outputs_dir} ({exc.strerror or exc}).",
                          hint="Check free disk space and the folder's permissions.") from exc
    return saved


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def commit_output(outputs_dir: Path, saved: SavedFile) -> None:
    """Give a saved image and its thumbnail their names, once their gallery row is stored."""
    for rel in (saved.path, saved.thumb):
        os.replace(pending_path(outputs_dir, rel), outputs_dir / rel)


def discard_output(outputs_dir: Path, saved: SavedFile) -> None:
    """Delete what ``save_output`` wrote (its gallery row could not be stored)."""
    for rel in (saved.path, saved.thumb):
        pending_path(outputs_dir, rel).unlink(missing_ok=True)
        (outputs_dir / rel).unlink(missing_ok=True)


def sweep_pending(outputs_dir: Path, recorded: Callable[[str], bool]) -> tuple[int, int]:
    """At start-up, settle the pending files a studio killed while storing left behind:
    one whose path ``recorded`` (a gallery row names it) gets its name, any other is
    deleted. Files of another studio still running on the folder are left alone.
    Returns (named, deleted)."""
    named = deleted = 0
    if not outputs_dir.is_dir():
        return named, deleted
    for pending in sorted(outputs_dir.rglob(".*.pending")):
        stem, _, pid = pending.name[1:].removesuffix(".pending").rpartition(".")
        if not stem or (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
            continue
        rel = (pending.parent / stem).relative_to(outputs_dir).as_posix()
        try:
            if recorded(rel):
                os.replace(pending, outputs_dir / rel)
                named += 1
            else:
                pending.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # settled meanwhile
    return named, deleted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def keep_input(path: str | Path, uploads_dir: Path) -> str:
    """A copy of an image job's input picture in the data dir, for "reuse these settings"."""
    source = Path(path)
    target_dir = Path(uploads_dir) / "images"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{uuid.uuid4().hex[:12]}{source.suffix.lower() or '.png'}"
    shutil.copyfile(source, target)
    return str(target)
