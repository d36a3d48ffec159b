"""ComfyUI's models directory as files: where a model file may go (``plan_download``,
``model_path``: a known folder, a plain file name, never outside the directory), deleting
one, disk use per folder and the free space. Pure path checks and file-system reads; the
download job itself is ``downloads.py``. No gradio imports; nothing talks to ComfyUI.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple
from urllib.parse import unquote, urlsplit


from ..errors import (InvalidInput)
from .gpu import format_bytes


PART_SUFFIX = ".part"
# ComfyUI lists custom_nodes beside the model folders, but it holds code, not models.
REFUSED_FOLDERS = frozenset({"custom_nodes"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------- paths

def _check_component(value: str, what: str) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value:
        raise InvalidInput(f"The {what} is empty.", hint=f"Type a {what}.")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidInput(f"The {what} {value!r} must be a plain name, without '/', '\\' or '..'.",
                           hint="Files can only go straight into one of ComfyUI's model folders.")
    if value.startswith("."):
        raise InvalidInput(f"The {what} {value!r} starts with a dot, which would hide it.",
                           hint="Use a name that starts with a letter or digit.")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise InvalidInput(f"The {what} {value!r} contains control characters.",
                           hint="Use ordinary letters, digits, '-', '_' and '.'.")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, from a client that split an emoji
        raise InvalidInput(f"The {what} {value!r} holds characters no file name can have.",
                           hint="Use ordinary letters, digits, '-', '_' and '.'.") from None
    if size > 255:
        raise InvalidInput(f"The {what} is longer than the 255 bytes a file name may have.",
                           hint="Use a shorter name.")
    return value


def model_path(models_dir: str | os.PathLike, folder: str, filename: str,
               known_folders: Iterable[str] | None = None) -> Path:
    """The path of ``filename`` in ``folder`` under ``models_dir``, after checking both names.

    ``folder`` must be a plain name from ``known_folders`` (when given); ``filename`` a plain
    name without ``..``, ``/``, ``\\`` or a leading dot. Raises InvalidInput.
    """
    folder = _check_component(folder, "model folder")
    if folder in REFUSED_FOLDERS:
        raise InvalidInput(f"The folder {folder!r} holds ComfyUI extensions, not models.",
                           hint="Install custom nodes with ComfyUI-Manager instead.")
    if known_folders is not None:
        known = sorted(set(known_folders) - REFUSED_FOLDERS)
        if folder not in known:
            raise InvalidInput(f"ComfyUI has no model folder called {folder!r}.",
                               hint=f"Pick one of: {', '.join(known) or '(none reported)'}.")
    filename = _check_component(filename, "file name")
    root = os.path.abspath(os.fspath(models_dir))
    path = os.path.abspath(os.path.join(root, folder, filename))
    if os.path.dirname(os.path.dirname(path)) != root:  # belt and braces over the checks above
        raise InvalidInput(f"{filename!r} would land outside the models folder {root}.")
    check_inside(root, Path(path), Path(path + PART_SUFFIX))
    return Path(path)


def is_inside(models_dir: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path``, with every symlink on the way resolved, is in ``models_dir`` (itself
    resolved: a models folder that is a link as a whole, as in docker setups, is fine)."""
    root = os.path.realpath(models_dir)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def check_inside(models_dir: str | os.PathLike, *paths: Path) -> None:
    """Refuse (InvalidInput) when a link takes the folder of ``paths`` or one of them out of
    ``models_dir``: a symlinked folder or file there must not let a download or a delete
    reach another part of the disk. Called when a download is planned and again as it starts."""
    for path in (paths[0].parent, *paths):
        if not is_inside(models_dir, path):
            what = "folder" if path == paths[0].parent else "file"
            raise InvalidInput(
                f"The model {what} {path.name!r} is a link to {os.path.realpath(path)}, outside "
                f"the models folder {os.path.realpath(models_dir)}; the studio only writes and "
                "deletes inside it.",
                hint="Replace the link with a real folder, or manage that file on its own disk.")


@dataclass(frozen=True)
class DownloadPlan:
    """A checked request: where the file comes from and exactly where it will be written."""

    url: str
    folder: str
    filename: str
    target: Path
    sha256: str | None = None

    @property
    def part(self) -> Path:
        return self.target.with_name(self.target.name + PART_SUFFIX)

    def check_inside(self) -> None:
        """Refuse (InvalidInput) when a link made since planning takes the folder, the file
        or its ``.part`` out of the models folder (``model_path`` put the folder right under it)."""
        check_inside(self.target.parent.parent, self.target, self.part)


def _filename_from_url(url: str) -> str:
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def plan_download(url: str, folder: str, filename: str | None,
                  models_dir: str | os.PathLike, known_folders: Iterable[str], *,
                  sha256: str | None = None, overwrite: bool = False) -> DownloadPlan:
    """Check a download request and say where the file will go.

    ``url`` must be http(s); ``folder`` one of ``known_folders`` (ComfyUI's ``GET /models``);
    ``filename`` a plain file name, or empty to take the last part of the URL's path.
    ``sha256`` (optional) is 64 hex digits. ``models_dir`` must exist. A file already under
    the final name is refused unless ``overwrite``. Raises InvalidInput with a sentence.
    """
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # "http://[::1", or a host that NFKC turns into '/' or '#'
        hostname = None
    if not hostname or parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput(f"Only http:// and https:// links can be downloaded (got {url!r}).",
                           hint="Copy the file's direct download link, e.g. Hugging Face's "
                                "'resolve/main/...' link.")
    if not (filename or "").strip():
        filename = _filename_from_url(url)
        if not filename:
            raise InvalidInput(f"The link {url!r} does not end in a file name.",
                               hint="Type the file name to save it as.")
    if filename.strip().lower().endswith(PART_SUFFIX):
        raise InvalidInput(f"Names ending in {PART_SUFFIX} are kept for unfinished downloads "
                           f"(got {filename!r}).", hint="Choose another file name.")
    root = Path(models_dir)
    if not root.is_dir():
        raise InvalidInput(f"The ComfyUI models folder {str(root)!r} does not exist.",
                           hint="Check the models folder setting points at ComfyUI's 'models'.")
    target = model_path(root, folder, filename, known_folders)
    checksum = None
    if sha256 and sha256.strip():
        checksum = sha256.strip().lower()
        if not _SHA256.match(checksum):
            raise InvalidInput(f"The SHA-256 {sha256.strip()!r} is not 64 hexadecimal digits.",
                               hint="Copy it from the model page, or leave it empty.")
    if target.exists() and not overwrite:
        raise InvalidInput(f"{target.name} is already in {target.parent.name} "
                           f"({format_bytes(target.stat().st_size)}).",
                           hint="Delete it first, or choose another file name.")
    return DownloadPlan(url=url, folder=target.parent.name, filename=target.name,
                        target=target, sha256=checksum)


def delete_model_file(models_dir: str | os.PathLike, folder: str, filename: str,
                      known_folders: Iterable[str] | None = None) -> int:
    """Delete one model file (same name checks as ``plan_download``); returns bytes freed.

    Raises InvalidInput when the names are not allowed or there is no such file.
    """
    path = model_path(models_dir, folder, filename, known_folders)
    if not path.is_file():
        raise InvalidInput(f"There is no file {path.name!r} in {folder!r}.",
                           hint="Refresh the list; it may be gone already.")
    size = path.stat().st_size
    try:
        path.unlink()
    except OSError as err:
        raise InvalidInput(f"Could not delete {path}: {err.strerror}.",
                           hint="Check that the studio's user may write to that folder.") from err
    return size


def folder_usage(models_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes used by each folder directly under ``models_dir`` (files counted recursively,
    unfinished ``.part`` files included), sorted by folder name. Raises InvalidInput
    when ``models_dir`` is not a folder."""
    root = Path(models_dir)
    if not root.is_dir():
        raise InvalidInput(f"The ComfyUI models folder {str(root)!r} does not exist.",
                           hint="Check the models folder setting points at ComfyUI's 'models'.")
    usage: dict[str, int] = {}
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not is_inside(root, entry):  # a link out counts elsewhere
            continue
        total = 0
        for dirpath, _dirs, files in os.walk(entry):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass  # a dangling link or a file removed meanwhile counts as nothing
        usage[entry.name] = total
    return usage


class DiskSpace(NamedTuple):
    total: int
    used: int
    free: int


def disk_space(models_dir: str | os.PathLike) -> DiskSpace:
    """Total, used and free bytes of the disk holding ``models_dir`` (OSError if it is missing)."""
    usage = shutil.disk_usage(models_dir)
    return DiskSpace(usage.total, usage.used, usage.free)
