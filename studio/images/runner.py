"""Making one image of a job on ComfyUI: send its prompt (its id and host stored first),
follow the events into the ``LiveJob``, copy the images into the data dir and record them,
or track a prompt a previous run of the studio sent (on the host it went to). Also the
words about ComfyUI people see, with its address scrubbed (``scrub``). Which image goes
next, and to which host, is ``jobs.py``'s business.

No gradio imports here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Callable, Sequence

from ..clients.comfyui import (Cached, Cancelled, ComfyUIClient, Done, Executing,
                               GenerationTimeout, ImageRef, NoAnswer, Preview, Progress, Queued,
                               ResultUnread, Started, Timings)
from ..backends.comfyui_hosts import ComfyUIHosts
from ..clients.comfyui_types import JobLost, PromptRejected
from ..errors import BackendRejected, BackendUnavailable, StudioError
from ..store.images import ImageStore, JobItem
from .files import commit_output, discard_output, save_output
from .live_job import ItemProgress, LiveJob, shown_image
from .plans import graph_model

log = logging.getLogger(__name__)

COMFYUI_PLACE = "the address in COMFYUI_URL"
START_COMFYUI = ("Start it in ComfyUI's folder with `python main.py --listen 127.0.0.1` "
                 "(add `--port N` if COMFYUI_URL names another port), then press ⟳.")
CANCELLED = "Cancelled."



def scrub(text: str, base_url: str) -> str:
    """``text`` with ComfyUI's address replaced: it must never reach the page (issue 3).

    >>> scrub("Can't reach ComfyUI at http://10.0.0.5:8188.", "http://10.0.0.5:8188")
    "Can't reach ComfyUI at the address in COMFYUI_URL."
    """
    if not base_url:
        return text
    bare = base_url.split("://", 1)[-1].rstrip("/")
    for needle in (base_url.rstrip("/"), bare):
        if needle:
            text = text.replace(needle, COMFYUI_PLACE)
    return text


def host_failed(exc: StudioError) -> bool:
    """Whether ``exc`` is the host's failure rather than the prompt's, so that another host
    may make the image: unreachable or gone mid-run (websocket and HTTP), not answering,
    failing on its side (5xx), or restarted and forgetting the prompt. A refused graph
    (400) or a node's execution error would fail anywhere."""
    if isinstance(exc, (BackendUnavailable, JobLost)):
        return True
    return (isinstance(exc, BackendRejected) and not isinstance(exc, PromptRejected)
            and (exc.status or 0) >= 500)


class ItemRunner:
    """Runs the images of live jobs, one call per image, on the caller's thread.

    ``hosts`` are the ComfyUI hosts (one or several). ``abandon_pending(live, message)``
    fails the images of a job not sent yet (when ComfyUI went away). ``item_timeout``:
    seconds an image may take (None: the client's default); ``unreachable_grace``: how long
    ComfyUI may be gone before a resumed prompt is failed.
    """

    def __init__(self, hosts: ComfyUIHosts, store: ImageStore, outputs_dir: Path, *,
                 abandon_pending: Callable[[LiveJob, str], None],
                 item_timeout: float | None, unreachable_grace: float):
        self.hosts = hosts
        self.store = store
        self.outputs_dir = outputs_dir
        self.abandon_pending = abandon_pending
        self.item_timeout = item_timeout
        self.unreachable_grace = unreachable_grace
        self._inputs_sent: set[tuple[str, str]] = set()  # (host, name) of input pictures
        self._inputs_lock = threading.Lock()

    @property
    def client(self) -> ComfyUIClient:
        """The first host's client."""
        return self.hosts.first

    def public(self, text: str) -> str:
        return self.hosts.public(text)

    def _begin(self, live: LiveJob, item: JobItem, state: str, *, host: str = "",
               note: str = "") -> threading.Event | None:
        cancel = threading.Event()
        with live.cond:
            if live.cancel_requested:
                return None
            live.inflight[item.id] = cancel
            live.progress[item.id] = ItemProgress(item.seq, state, host=host, note=note)
            if live.preview is not None:  # the last image's last frame isn't this one's
                live.preview = None
                live.preview_version += 1
            if live.status == "queued":
                live.status = "running"
            live.waiting_ahead = None
            live.model = live.model or graph_model(item.graph)
            live.notify()
        self.store.update_job(live.job_id, status="running")
        return cancel

    def _end(self, live: LiveJob, item: JobItem, outcome: str, error: str = "",
             gpu_seconds: float = 0.0) -> None:
        with live.cond:
            live.inflight.pop(item.id, None)
            live.progress.pop(item.id, None)
            if outcome == "done":
                live.done += 1
            elif outcome == "moved":  # back to the studio's queue, for another host
                pass
            elif outcome == "cancelled":
                live.cancelled += 1
            else:
                live.failed += 1
                live.error = live.error or error
            live.gpu_seconds += gpu_seconds
            live.notify()

    def run(self, live: LiveJob, item: JobItem, host: str | None = None, *,
            may_move: bool = False, note: str = "") -> str | None:
        """Send one image's prompt to ComfyUI ``host`` (None: the first), follow it and store
        what comes back. With ``may_move`` (another host could make it), a failure of the
        host itself (``host_failed``), before or during the run, puts the image back to
        "pending" and returns the sentence saying what happened, for the caller to send it
        elsewhere; otherwise returns None once the image is settled. ``note`` is shown
        with the progress (where the image went, and why)."""
        host = host or self.hosts.pool.names[0]
        client = self.hosts.client_for(host)
        label = self.hosts.label(host) if self.hosts.several else ""
        cancel = self._begin(live, item, "queued", host=label, note=note)
        if cancel is None:
            self.store.update_item(item.id, status="cancelled", error=CANCELLED)
            with live.cond:
                live.cancelled += 1
                live.notify()
            return None
        prompt_id = str(uuid.uuid4())
        # The prompt id and its host are stored before ComfyUI hears of it: a studio that
        # dies right after queueing still finds the prompt on its next start.
        self.store.update_item(item.id, status="queued", prompt_id=prompt_id,
                               comfy_host=host if self.hosts.several else None)
        meta = {k: v for k, v in item.params.items() if k != "input_file"}
        extra = {"extra_pnginfo": {"studio": {"job": live.job_id, "params": meta}}}
        try:
            self._send_input(host, client, item)
            with self.hosts.pool.use(host):
                for event in client.stream(item.graph, cancel=cancel, prompt_id=prompt_id,
                                           extra_data=extra, timeout=self.item_timeout):
                    if isinstance(event, Queued):
                        live.update_progress(item.id, position=event.position)
                    elif isinstance(event, Started):
                        self.store.update_item(item.id, status="running")
                        live.update_progress(item.id, state="running", position=0)
                    elif isinstance(event, Executing):
                        live.update_progress(item.id, state="running", node=event.node,
                                             node_class=event.class_type, step=0, steps=0)
                    elif isinstance(event, Progress):
                        live.update_progress(item.id, state="running", step=event.step,
                                             steps=event.total)
                    elif isinstance(event, Preview):
                        live.change(preview=event.image,
                                    preview_version=live.preview_version + 1)
                    elif isinstance(event, Done):
                        self.hosts.pool.succeeded(host)
                        self._store_results(live, item, prompt_id, event.images, event.timings,
                                            client=client, host=host)
                        return None
                    elif isinstance(event, Cancelled):
                        self.store.update_item(item.id, status="cancelled", error=CANCELLED)
                        self._end(live, item, "cancelled")
                        return None
                    elif isinstance(event, Cached):
                        continue
            self._fail(live, item, "ComfyUI's event stream ended without a result.")
        except ResultUnread as exc:
            self._leave_for_restart(live, item, exc)
        except GenerationTimeout:
            # Stopped, so the sentence can say so: ComfyUI doesn't spend the GPU on an image
            # nobody will store.
            self._cancel_quietly(client, prompt_id)
            timeout = self.item_timeout or client.run_timeout
            self._fail(live, item, f"ComfyUI didn't finish this image within {timeout:g} s, "
                                   "so the studio cancelled it.")
        except StudioError as exc:
            if host_failed(exc):
                self._host_down(host, exc)
                if may_move and not cancel.is_set():
                    # Nothing of it was stored: it goes back to the studio's queue as it was.
                    self.store.update_item(item.id, status="pending", prompt_id=None,
                                           comfy_host=None)
                    self._end(live, item, "moved")
                    return self.public(exc.message)
            if isinstance(exc, BackendUnavailable):
                # Down: say how to start it. Running but not answering: say so (its own hint).
                message = self.public(str(exc) if isinstance(exc, NoAnswer)
                                      else f"{exc.message} {START_COMFYUI}")
                self._fail(live, item, message)
                self.abandon_pending(live, "Not made: " + message)
            else:
                self._fail(live, item, self.public(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the job must settle whatever happens
            log.exception("image item %s of job %s failed", item.id, live.job_id)
            self._fail(live, item, f"Unexpected error while making this image "
                                   f"({type(exc).__name__}). The studio log has the details.")
        return None

    def _host_down(self, host: str, exc: StudioError) -> None:
        """Tell the pool: a host that can't be reached leaves the rotation until a health
        check sees it again; one that answered badly cools down for a few seconds."""
        if not self.hosts.several:
            return
        if isinstance(exc, BackendUnavailable) and not isinstance(exc, NoAnswer):
            self.hosts.pool.report_health(host, up=False, problem=exc.message)
        else:
            self.hosts.pool.failed(host, exc.message)
        log.warning("ComfyUI host %s failed a prompt: %s", self.hosts.label(host), exc.message)

    def _send_input(self, host: str, client: ComfyUIClient, item: JobItem) -> None:
        """With several hosts, the job's input picture goes to each host before its first
        prompt there, under the name the graph uses (one host: sent when the job came in)."""
        name, path = item.params.get("input_image"), item.params.get("input_file")
        if not (self.hosts.several and name and path):
            return
        with self._inputs_lock:
            if (host, name) in self._inputs_sent:
                return
        client.upload_image(Path(path).read_bytes(), str(name), overwrite=True)
        with self._inputs_lock:
            self._inputs_sent.add((host, name))

    def _cancel_quietly(self, client: ComfyUIClient, prompt_id: str) -> None:
        try:
            client.cancel(prompt_id)
        except StudioError:
            log.debug("could not cancel %s", prompt_id, exc_info=True)

    def _leave_for_restart(self, live: LiveJob, item: JobItem, exc: ResultUnread) -> None:
        """ComfyUI made the image but its /history kept failing: the item keeps its prompt id
        and stays "running" in the store, so the next start picks it up (``ImageJobs.start``)
        and stores the image then; this run counts it as not made, with a sentence."""
        answer = f"answered {exc.status}" if exc.status else "didn't answer"
        message = (f"ComfyUI made this image but {answer} each time the studio asked for it "
                   "(GET /history), so it isn't in the gallery yet. It isn't lost: the studio "
                   "fetches it from ComfyUI when it next starts. Restart the studio once "
                   "ComfyUI answers again (its console window shows what failed).")
        log.warning("image item %s of job %s left for the next start: %s", item.id,
                    live.job_id, exc)
        self.store.update_item(item.id, error=message)
        self._end(live, item, "failed", message)

    def fail_unplaced(self, live: LiveJob, item: JobItem, message: str) -> None:
        """No host can take the image (any more): it fails with ``message``."""
        self._fail(live, item, self.public(message))

    def _fail(self, live: LiveJob, item: JobItem, message: str) -> None:
        self.store.update_item(item.id, status="failed", error=message)
        self._end(live, item, "failed", message)

    def _store_results(self, live: LiveJob, item: JobItem, prompt_id: str,
                       refs: Sequence[ImageRef], timings: Timings, *, client: ComfyUIClient,
                       host: str) -> None:
        """Copy each image into the data dir and record it; followers see each at once.

        An image already in the gallery for this prompt (a studio killed half way through a
        batch stored it, then restarted) is counted, not fetched and stored again."""
        started = time.monotonic()
        live.update_progress(item.id, state="storing")
        params = item.params
        model = params.get("checkpoint") or graph_model(item.graph)
        kept = {image.comfy_filename for image in self.store.images_of_job(live.job_id)
                if image.item_id == item.id and image.comfy_prompt_id == prompt_id}
        stored = 0
        try:
            for ref in refs:
                if ref.filename in kept:
                    stored += 1
                    continue
                data = client.view(ref)
                saved = save_output(self.outputs_dir, data)
                try:
                    image = self.store.add_image(
                        job_id=live.job_id, item_id=item.id, user=live.user, path=saved.path,
                        thumb=saved.thumb, width=saved.width, height=saved.height,
                        bytes=saved.bytes, prompt=str(params.get("prompt") or ""),
                        negative=str(params.get("negative") or ""),
                        seed=params.get("seed"),
                        workflow=live.workflow, model=str(model or ""), params=params,
                        graph=item.graph, timings=_timings_dict(timings),
                        comfy_prompt_id=prompt_id, comfy_filename=ref.filename,
                        comfy_host=host if self.hosts.several else None)
                except BaseException:
                    discard_output(self.outputs_dir, saved)
                    raise
                self._commit(saved)
                stored += 1
                with live.cond:
                    live.images.append(shown_image(image, self.outputs_dir))
                    live.notify()
        except StudioError as exc:
            message = self.public(str(exc))
            self.store.update_item(item.id, status="failed", error=message, images=stored)
            self._end(live, item, "failed", message)
            return
        if not refs:
            message = "ComfyUI finished but saved no image (does the workflow end in SaveImage?)."
            self.store.update_item(item.id, status="failed", error=message)
            self._end(live, item, "failed", message)
            return
        all_timings = {**_timings_dict(timings), "store_s": time.monotonic() - started}
        self.store.update_item(item.id, status="done", images=stored, timings=all_timings,
                               error="")  # a sentence from an earlier run no longer holds
        gpu = timings.execution_s if timings.execution_s is not None else (timings.total_s or 0.0)
        self._end(live, item, "done", gpu_seconds=gpu or 0.0)

    def _commit(self, saved) -> None:
        """The row is stored: give the files their names. Should the rename fail, the next
        start's sweep (``files.sweep_pending``) gives them, since the row names them."""
        try:
            commit_output(self.outputs_dir, saved)
        except OSError:
            log.warning("could not name the stored image %s; the next start will",
                        saved.path, exc_info=True)

    def resume(self, live: LiveJob, item: JobItem) -> None:
        """Track a prompt sent by a previous run through /history and /queue, on the host it
        went to (the first when none is stored, or when COMFYUI_URL no longer names it)."""
        host = self.hosts.stored_host(item.comfy_host)
        client = self.hosts.client_for(host)
        cancel = self._begin(live, item, "resumed",
                             host=self.hosts.label(host) if self.hosts.several else "")
        prompt_id = item.prompt_id or ""
        if cancel is None:
            self._cancel_quietly(client, prompt_id)
            self.store.update_item(item.id, status="cancelled", error=CANCELLED)
            return
        timeout = self.item_timeout or client.run_timeout
        deadline = time.monotonic() + timeout
        unreachable_since: float | None = None
        while True:
            if cancel.is_set():
                self._cancel_quietly(client, prompt_id)
                self.store.update_item(item.id, status="cancelled", error=CANCELLED)
                self._end(live, item, "cancelled")
                return
            try:
                status = client.status(prompt_id)
                unreachable_since = None
            except (BackendUnavailable, BackendRejected) as exc:
                answering = isinstance(exc, BackendRejected)
                if answering and (exc.status or 0) < 500:
                    self._fail(live, item, self.public(str(exc)))
                    return
                # Down (restarting), or answering 5xx (its /history failing): wait a while.
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self.unreachable_grace:
                    if answering:  # it runs: the image can still be fetched on a later start
                        self._leave_for_restart(live, item, ResultUnread(
                            str(exc), prompt_id=prompt_id, status=exc.status))
                    else:
                        self._fail(live, item, f"ComfyUI was unreachable at {COMFYUI_PLACE} "
                                               "when the studio restarted, so this image is "
                                               f"lost. {START_COMFYUI}")
                    return
                cancel.wait(client.poll_interval)
                continue
            except StudioError as exc:
                self._fail(live, item, self.public(str(exc)))
                return
            if status.state == "done":
                self._store_results(live, item, prompt_id, status.images, Timings(),
                                    client=client, host=host)
                return
            if status.state == "cancelled":
                self.store.update_item(item.id, status="cancelled", error=CANCELLED)
                self._end(live, item, "cancelled")
                return
            if status.state in ("failed", "unknown"):
                self._fail(live, item, self.public(status.message or "ComfyUI lost this image."))
                return
            live.update_progress(item.id, position=status.position,
                                 state="running" if status.state == "running" else "resumed")
            if time.monotonic() > deadline:
                self._cancel_quietly(client, prompt_id)
                self._fail(live, item, f"ComfyUI didn't finish this image within {timeout:g} s "
                                       "after the studio restarted; it was cancelled.")
                return
            cancel.wait(client.poll_interval)


def _timings_dict(timings: Timings) -> dict:
    return {f.name: getattr(timings, f.name) for f in fields(timings)}


def upload_input(client: ComfyUIClient, path: str, public: Callable[[str], str]) -> str:
    """Send an image job's input picture to ComfyUI; returns the name its graph uses.
    Raises BackendUnavailable / BackendRejected with ComfyUI's address left out."""
    source = Path(path)
    try:
        uploaded = client.upload_image(source.read_bytes(),
                                       f"studio_{uuid.uuid4().hex[:12]}{source.suffix.lower()}")
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"ComfyUI isn't reachable at {COMFYUI_PLACE}, so the input "
                                 "image couldn't be sent.", hint=START_COMFYUI) from exc
    except BackendRejected as exc:
        raise BackendRejected(public(str(exc))) from exc
    return uploaded.value
