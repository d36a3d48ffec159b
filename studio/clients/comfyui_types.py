"""ComfyUI client types: errors, results and the events of a run, plus the sentences
made from ComfyUI's error bodies. Plain data; no I/O, no gradio imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from PIL import Image

from ..errors import BackendRejected, BackendUnavailable, GenerationFailed

START_HINT = "Is it running? Start it with `python main.py --listen 127.0.0.1`."


# --------------------------------------------------------------------------- errors


class PromptRejected(BackendRejected):
    """ComfyUI answered 400 to POST /prompt: nothing was queued.

    ``error_type`` is ComfyUI's ``error.type`` (``invalid_prompt``,
    ``prompt_outputs_failed_validation``...), ``node_errors`` its per-node dict and
    ``problems`` one readable sentence per node error.
    """

    def __init__(self, message: str, *, error_type: str, node_errors: dict, problems: list[str]):
        super().__init__(message, status=400)
        self.error_type = error_type
        self.node_errors = node_errors
        self.problems = problems


class ExecutionFailed(GenerationFailed):
    """A node raised while ComfyUI ran the job (``execution_error``)."""

    def __init__(self, message: str, *, prompt_id: str, node_id: str | None = None,
                 node_type: str | None = None, exception_type: str = "",
                 exception_message: str = "", traceback: tuple[str, ...] = ()):
        super().__init__(message)
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback


class NoAnswer(BackendUnavailable):
    """ComfyUI took the connection but didn't answer within the request timeout: it runs,
    but is busy or stuck, so "start it" would be the wrong advice."""


class GenerationTimeout(GenerationFailed):
    """The job did not finish within the run timeout; it may still be queued or running."""

    def __init__(self, message: str, *, prompt_id: str):
        super().__init__(message)
        self.prompt_id = prompt_id


class JobLost(GenerationFailed):
    """ComfyUI no longer knows the job (e.g. it was restarted while the job was queued)."""

    def __init__(self, message: str, *, prompt_id: str):
        super().__init__(message)
        self.prompt_id = prompt_id


class ResultUnread(GenerationFailed):
    """ComfyUI finished the job, but its ``/history`` kept failing (5xx, or no answer), so
    the images' names couldn't be read. The job is done in ComfyUI: reading it later works."""

    def __init__(self, message: str, *, prompt_id: str, status: int | None = None):
        super().__init__(message)
        self.prompt_id = prompt_id
        self.status = status


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ImageRef:
    """A file ComfyUI wrote: what ``/view`` needs to serve it."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], node: str = "") -> "ImageRef":
        return cls(str(data["filename"]), str(data.get("subfolder") or ""),
                   str(data.get("type") or "output"), node)


@dataclass(frozen=True)
class QueuedPrompt:
    prompt_id: str
    number: float
    node_errors: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueueItem:
    number: float
    prompt_id: str
    client_id: str | None = None


@dataclass(frozen=True)
class QueueState:
    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()

    def is_running(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.running)

    def is_pending(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.pending)

    def position(self, prompt_id: str) -> int | None:
        """Jobs ahead of ``prompt_id`` (0 = running or next); None if not in the queue."""
        if self.is_running(prompt_id):
            return 0
        ordered = sorted(self.pending, key=lambda item: item.number)
        for index, item in enumerate(ordered):
            if item.prompt_id == prompt_id:
                return index + len(self.running)
        return None


@dataclass(frozen=True)
class Timings:
    """Seconds: waiting in the queue, executing (ComfyUI's own clock), and in all."""

    queued_s: float | None = None
    execution_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One finished job from ``/history``."""

    prompt_id: str
    status: str  # "success" or "error"
    completed: bool
    outputs: dict
    messages: tuple = ()

    @property
    def images(self) -> list[ImageRef]:
        return images_from_outputs(self.outputs)

    @property
    def interrupted(self) -> bool:
        return any(name == "execution_interrupted" for name, _ in self.messages)

    @property
    def error(self) -> dict | None:
        return next((data for name, data in self.messages if name == "execution_error"), None)

    @property
    def execution_s(self) -> float | None:
        stamps = {name: data.get("timestamp") for name, data in self.messages if isinstance(data, dict)}
        start = stamps.get("execution_start")
        end = next((stamps.get(n) for n in ("execution_success", "execution_error",
                                             "execution_interrupted") if stamps.get(n)), None)
        return (end - start) / 1000 if start and end else None


@dataclass(frozen=True)
class Device:
    name: str
    type: str
    index: int | None
    vram_total: int
    vram_free: int
    torch_vram_total: int = 0  # what PyTorch holds (reserved) of it, and of that what is free
    torch_vram_free: int = 0


@dataclass(frozen=True)
class SystemStats:
    comfyui_version: str
    python_version: str
    pytorch_version: str
    os: str
    ram_total: int
    ram_free: int
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class UploadedImage:
    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def value(self) -> str:
        """What to put in ``LoadImage.inputs.image``."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


@dataclass(frozen=True)
class PromptStatus:
    """Where a job stands, from /history and /queue (see ``ComfyUIClient.wait_for``).

    ``state``: ``done``, ``failed``, ``cancelled``, ``running``, ``queued`` or ``unknown``
    (ComfyUI has never heard of it, e.g. it was restarted).
    """

    prompt_id: str
    state: str
    images: tuple[ImageRef, ...] = ()
    position: int | None = None
    message: str = ""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Queued:
    prompt_id: str
    position: int | None  # jobs ahead of ours; None if unknown


@dataclass(frozen=True)
class Started:
    prompt_id: str


@dataclass(frozen=True)
class Cached:
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Executing:
    node: str
    class_type: str


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    node: str | None = None


@dataclass(frozen=True)
class Preview:
    image: Image.Image
    node: str | None = None


@dataclass(frozen=True)
class Done:
    images: tuple[ImageRef, ...]
    prompt_id: str
    timings: Timings = Timings()
    cached: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cancelled:
    """The job was interrupted or removed from the queue; no images."""

    prompt_id: str
    node: str | None = None


Event = Union[Queued, Started, Cached, Executing, Progress, Preview, Done, Cancelled]


@dataclass(frozen=True)
class RunResult:
    prompt_id: str
    images: tuple[ImageRef, ...]
    cancelled: bool = False
    timings: Timings = Timings()
    cached: tuple[str, ...] = ()


def images_from_outputs(outputs: Mapping[str, Any]) -> list[ImageRef]:
    """Saved images (type ``output``) of every node; temp previews only if nothing was saved."""
    refs = []
    for node in sorted(outputs, key=lambda n: (0, int(n), "") if str(n).isdigit() else (1, 0, str(n))):
        for image in (outputs[node] or {}).get("images", []) or []:
            if isinstance(image, dict) and "filename" in image:
                refs.append(ImageRef.from_dict(image, str(node)))
    saved = [ref for ref in refs if ref.type == "output"]
    return saved or refs


# --------------------------------------------------------------------------- messages


def node_label(node_id: str, class_type: str | None) -> str:
    return f"Node {node_id} ({class_type})" if class_type else f"Node {node_id}"


def error_sentence(data: Mapping[str, Any]) -> str:
    label = node_label(str(data.get("node_id", "?")), data.get("node_type"))
    exc_type = data.get("exception_type") or "Error"
    exc_message = str(data.get("exception_message") or "").strip() or "no message"
    return f"ComfyUI failed at {label}: {exc_type}: {exc_message}"


def execution_failed(prompt_id: str, data: Mapping[str, Any]) -> ExecutionFailed:
    hint = ""
    text = str(data.get("exception_message", ""))
    if "out of memory" in text.lower() or "OutOfMemory" in str(data.get("exception_type", "")):
        hint = " Try a smaller size or batch, or free VRAM (unload other models)."
    return ExecutionFailed(error_sentence(data) + hint, prompt_id=prompt_id,
                           node_id=data.get("node_id"), node_type=data.get("node_type"),
                           exception_type=str(data.get("exception_type", "")),
                           exception_message=text.strip(),
                           traceback=tuple(data.get("traceback") or ()))


def describe_node_error(node_id: str, class_type: str | None, error: Mapping[str, Any]) -> str:
    """One readable sentence for one entry of a /prompt 400 ``node_errors[...]["errors"]``."""
    label = node_label(node_id, class_type)
    kind = error.get("type", "")
    extra = error.get("extra_info") or {}
    name = extra.get("input_name") or error.get("details", "")
    if kind == "required_input_missing":
        return f"{label}: required input {name!r} is missing."
    if kind in ("value_smaller_than_min", "value_bigger_than_max"):
        return f"{label}: {name}: {error.get('message', kind)}."
    if kind == "value_not_in_list":
        return (f"{label}: {name} {extra.get('received_value')!r} isn't available on this ComfyUI "
                "(pick one it lists, or add the file to its models folder).")
    if kind == "exception_during_inner_validation":
        return f"{label}: input {name!r} links to a node that isn't in the workflow " \
               f"({error.get('details', '')})."
    details = error.get("details") or ""
    message = error.get("message") or kind
    return f"{label}: {message}{': ' + details if details else ''}."


def prompt_rejected(base_url: str, data: Any, graph: Mapping[str, Any]) -> PromptRejected:
    data = data if isinstance(data, dict) else {}
    error = data.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    node_errors = data.get("node_errors") or {}
    problems = []
    for node_id, entry in sorted(node_errors.items()):
        class_type = entry.get("class_type") or (graph.get(node_id) or {}).get("class_type")
        for item in entry.get("errors", []):
            problems.append(describe_node_error(str(node_id), class_type, item))
    if problems:
        summary = " ".join(problems)
    else:
        message = str(error.get("message") or "the workflow is invalid").rstrip(".")
        details = error.get("details") or ""
        summary = f"{message}{' (' + details + ')' if details and details != message else ''}."
    return PromptRejected(f"ComfyUI at {base_url} refused the workflow: {summary}",
                          error_type=str(error.get("type", "")), node_errors=node_errors,
                          problems=problems)
