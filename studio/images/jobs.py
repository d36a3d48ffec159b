"""Image jobs: the service that runs image plans on ComfyUI and stores what comes back.

``ImageJobs`` runs jobs on server threads, and they outlive the page (like ``replies.py``
for chat): pages only follow them. Several users' jobs interleave fairly (round-robin per
lane, a small window of prompts in flight per host), every ComfyUI prompt id is in SQLite
with its host before the prompt is sent, and ``start()`` picks up prompts a previous run of
the studio left in ComfyUI. Errors shown to people never carry ComfyUI's address (``scrub``).

With several ComfyUI hosts (``COMFYUI_URL`` a list) each prompt goes to a host that can run
its graph, the least busy one with room (``ComfyUIHosts.route``), so a batch runs on all of
them at once, each host taking its share in order. A host that fails a prompt, before or
while running it, is left out and the prompt goes to the next host that can run it, its
progress saying where and why; nothing stored is made again (a prompt moves only before
its images are stored).

Planning (form -> graphs) is ``plans.py``; files in and out are ``files.py``; the live job
and its snapshots are ``live_job.py``; making one image on ComfyUI is ``runner.py``.
No gradio imports here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import validation, workflows
from ..backends.comfyui_hosts import ComfyUIHosts
from ..clients.comfyui import ComfyUIClient
from ..errors import BackendRejected, BackendUnavailable, InvalidInput, StudioError
from ..live import Registry
from .files import check_input_image, keep_input, sweep_pending
from .live_job import FinishedJob, JobSnapshot, LiveJob, ShownImage, shown_image, snapshot_from_db
from .plans import (ImageRequest, WorkflowLibrary, check_request, effective_params, plan_items,
                    render_item)
from .runner import COMFYUI_PLACE, START_COMFYUI, ItemRunner, upload_input
from ..presets import StylePreset
from ..store.images import GalleryImage, GalleryPage, ImageJob, ImageStore, JobItem

log = logging.getLogger(__name__)

UNREACHABLE_GRACE = 60.0  # seconds ComfyUI may be gone before a resumed prompt is failed
KEEP_FINISHED = 600.0  # seconds a finished job stays in memory for its followers


# --------------------------------------------------------------------------- the service


def checked_graph(template: workflows.Template, item: dict) -> dict:
    """An item's graph as checked before anything is queued. LoadImage accepts any file
    name (its list is a snapshot of ComfyUI's input folder), so a stand-in name checks the
    graph before the real upload."""
    return render_item(template, {**item, "input_image": "studio_check.png"}
                       if "input_image" in item else item)


class ImageJobs:
    """Runs image jobs on server threads; any page can follow any job.

    ``inflight`` prompts at most are in each ComfyUI host at once (times its weight;
    counting prompts picked up after a restart); the next one goes to the lane (login name,
    else browser address) served longest ago, so one person's long batch doesn't hold
    another's single image back. ``on_job_finished(FinishedJob)`` runs after every job (the
    accounting hook). ``hosts``: the ComfyUI hosts (default: ``client`` alone).
    """

    def __init__(self, client: ComfyUIClient | None, store: ImageStore, outputs_dir: str | Path,
                 library: WorkflowLibrary, *, styles: Sequence[StylePreset] = (),
                 uploads_dir: str | Path | None = None, inflight: int = 1,
                 max_input_megapixels: float = 16.0, item_timeout: float | None = None,
                 on_job_finished: Callable[[FinishedJob], None] | None = None,
                 keep_finished: float = KEEP_FINISHED, unreachable_grace: float = UNREACHABLE_GRACE,
                 limits=None, hosts: ComfyUIHosts | None = None):
        if hosts is None:
            if client is None:
                raise ValueError("ImageJobs needs a ComfyUI client or hosts")
            hosts = ComfyUIHosts.single(client)
        self.hosts = hosts
        self.client = hosts.first  # the first host: lists, uploads with one host
        self.store = store
        self.outputs_dir = Path(outputs_dir)
        self.uploads_dir = Path(uploads_dir) if uploads_dir else self.outputs_dir.parent / "uploads"
        self.library = library
        self.styles = {s.key: s for s in styles}
        self.inflight = max(1, int(inflight))
        self.max_input_megapixels = max_input_megapixels
        self.on_job_finished = on_job_finished
        self.limits = limits  # studio.access.limits.Limits: images per hour per user
        self.runner = ItemRunner(hosts, store, self.outputs_dir,
                                 abandon_pending=self._abandon_pending,
                                 item_timeout=item_timeout, unreachable_grace=unreachable_grace)
        self._cond = threading.Condition()  # the scheduler's: pending items, slots, lanes
        self._jobs: Registry[LiveJob] = Registry(keep_s=keep_finished)
        self._running = 0
        self._host_busy: dict[str, int] = {}  # prompts of ours in flight on each host
        self._weights = sum(view.spec.weight for view in hosts.pool.views())
        self._served = 0
        self._order = 0
        self._last_served: dict[str, int] = {}
        self._closed = False
        self._dispatcher: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "ImageJobs":
        """Pick up what a previous run left (pending items, prompts sent to ComfyUI) and
        start dispatching. Touches ComfyUI only if there is something to pick up."""
        with self._cond:
            if self._dispatcher is not None:
                return self
            self._dispatcher = threading.Thread(target=self._dispatch, name="image-dispatch",
                                                daemon=True)
        named, deleted = sweep_pending(self.outputs_dir, self.store.names_file)
        if named or deleted:
            log.info("pictures a stopped studio was storing: %d named (their gallery rows "
                     "were stored), %d without a row deleted", named, deleted)
        for job in self.store.active_jobs():
            self._pick_up(job)
        for job in self._reopen_left_jobs():
            self._pick_up(job, booked_images=self.store.item_counts(job.id).get("images", 0))
        self._dispatcher.start()
        return self

    def close(self, *, cancel: bool = False) -> None:
        """Stop sending prompts. Those already in ComfyUI finish there and are stored if
        this process lives on (else the next ``start`` picks them up); ``cancel=True``
        also stops them (tests)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            jobs = self._jobs.items()
        if cancel:
            for live in jobs:
                with live.cond:
                    for event in live.inflight.values():
                        event.set()

    def queue_depth(self) -> int:
        """Images asked for and not finished yet: waiting for their turn or in ComfyUI."""
        with self._cond:
            return sum(len(live.pending) + len(live.inflight) for live in self._jobs.items())

    def path(self, relative: str) -> str:
        return str(self.outputs_dir / relative)

    def public(self, text: str) -> str:
        return self.hosts.public(text)

    # ------------------------------------------------------------------ ComfyUI facts

    def comfyui_lists(self, *, refresh: bool = False) -> dict[str, list[str]]:
        """Checkpoints, LoRAs, samplers and schedulers ComfyUI offers (``validation.offered``);
        with several hosts, what any host that answers offers (a prompt goes to one that has
        what it needs). Raises the first host's error when none answers."""
        if not self.hosts.several:
            return validation.offered(self.client, self.public, refresh=refresh)
        merged: dict[str, list[str]] = {}
        errors: list[StudioError] = []
        for _spec, client in self.hosts.clients():
            try:
                lists = validation.offered(client, self.public, refresh=refresh)
            except StudioError as exc:
                errors.append(exc)
                continue
            for key, values in lists.items():
                merged[key] = list(dict.fromkeys([*merged.get(key, []), *values]))
        if not merged:
            raise errors[0]
        return merged

    # ------------------------------------------------------------------ submitting

    def prepare(self, request: ImageRequest) -> tuple[workflows.Template, list[dict]]:
        """Check a request and plan its images; nothing is queued.

        Every image's graph is checked against ComfyUI's /object_info. Raises InvalidInput
        (form problems; unknown node type, missing checkpoint or LoRA, value out of range)
        or BackendUnavailable (ComfyUI down, with how to start it).
        """
        template = self.library.get(request.workflow)
        style = self.styles.get(request.style) if request.style else None
        if request.style and style is None:
            raise InvalidInput(f"There is no style {request.style!r}.", hint="Pick one from the list.")
        check_request(request, template)
        if request.input_image and "input_image" in template.params:
            check_input_image(request.input_image, self.max_input_megapixels)
        planned = plan_items(request, template, style)
        graphs = [checked_graph(template, p) for p in planned]
        if self.hosts.several:
            self._check_on_hosts(graphs)
            return template, planned
        try:
            problems = validation.server_problems(graphs[0], self.client.object_info)
            info = self.client.object_info()
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"ComfyUI isn't reachable at {COMFYUI_PLACE}, so nothing "
                                     "was queued.", hint=START_COMFYUI) from exc
        except BackendRejected as exc:
            raise BackendRejected(self.public(str(exc))) from exc
        seen = {json.dumps(graphs[0], sort_keys=True)}
        for graph in graphs[1:]:
            if problems:
                break
            key = json.dumps(graph, sort_keys=True)
            if key not in seen:
                seen.add(key)
                problems = validation.validate(graph, info)
        if problems:
            shown = " ".join(dict.fromkeys(problems))
            raise InvalidInput(self.public(f"This workflow can't run on ComfyUI: {shown}"),
                               hint="Nothing was queued.")
        return template, planned

    def likely_host(self, request: ImageRequest, prepared) -> str | None:
        """The ComfyUI host the request's first prompt would go to now (None with one host),
        so that the GPU policy makes room on that machine: a host that can run the graph
        (has its checkpoint and nodes), with room, shortest queue first."""
        if not self.hosts.several:
            return None
        template, planned = prepared
        graph = checked_graph(template, planned[0])
        with self._cond:
            busy = dict(self._host_busy)
        return self.hosts.route(self.hosts.capable(graph), busy, self.inflight).host

    def _check_on_hosts(self, graphs: list[dict]) -> None:
        """``prepare``'s check with several hosts: each distinct graph must run on at least
        one host that answers (the prompt will go to one of those). Raises InvalidInput with
        the first host's problems for a graph no host can run, BackendUnavailable when no
        host answers."""
        problems = self._problems_on_hosts(graphs)
        if problems:
            shown = " ".join(dict.fromkeys(problems))
            raise InvalidInput(self.public(f"This workflow can't run on any ComfyUI host in "
                                           f"COMFYUI_URL: {shown}"), hint="Nothing was queued.")

    def graph_problems(self, graph: dict) -> list[str]:
        """What keeps ``graph`` from running on ComfyUI (an uploaded workflow's check):
        with several hosts, nothing when any host that answers can run it. Sentences,
        addresses left out; raises BackendUnavailable / BackendRejected when ComfyUI can't
        be asked."""
        if self.hosts.several:
            return [self.public(p) for p in self._problems_on_hosts([graph])]
        return [self.public(p) for p in validation.server_problems(graph,
                                                                   self.client.object_info)]

    def _problems_on_hosts(self, graphs: list[dict]) -> list[str]:
        """The problems of the first graph that no host can run, on the first host that
        answered; [] when each graph runs somewhere. A host's catalogue is asked afresh at
        most once per check, when something is missing (a model added since it was cached).
        Raises BackendUnavailable when no host answers."""
        def key(graph: dict) -> str:
            return json.dumps(graph, sort_keys=True)

        left = list({key(g): g for g in graphs}.values())
        problems: dict[str, list[str]] = {}
        answered = 0
        for spec, client in self.hosts.clients():
            if self.hosts.pool.view(spec.name).up is False:
                continue  # known down: asking could wait out the timeout
            try:
                info, fresh = client.object_info(), False
                still = []
                for graph in left:
                    found = validation.validate(graph, info)
                    if found and not fresh:
                        info, fresh = client.object_info(refresh=True), True
                        found = validation.validate(graph, info)
                    if found:
                        problems.setdefault(key(graph), found)
                        still.append(graph)
            except StudioError:
                continue
            answered += 1
            left = still
            if not left:
                return []
        if not answered:
            raise BackendUnavailable("No ComfyUI host in COMFYUI_URL is reachable, so nothing "
                                     "was queued.", hint=START_COMFYUI)
        return problems[key(left[0])]

    def submit(self, request: ImageRequest, *, user: str = "owner", lane: str | None = None,
               prepared: tuple[workflows.Template, list[dict]] | None = None,
               via: str = "") -> LiveJob:
        """Check, store and schedule a job; returns at once (the work runs on threads).

        ``prepared`` is what ``prepare(request)`` returned, when the caller checked first.
        ``via`` says how it came in ("" from a page, "api: <key name>"), kept with its usage.
        """
        template, planned = prepared or self.prepare(request)
        if self.limits is not None:  # the last refusal: booked at once, before anything is stored
            self.limits.admit_images(user, len(planned))
        if request.input_image and "input_image" in template.params:
            if self.hosts.several:  # sent to each host before its first prompt (runner)
                value = f"studio_{uuid.uuid4().hex[:12]}{Path(request.input_image).suffix.lower()}"
            else:
                value = upload_input(self.client, request.input_image, self.public)
            kept = keep_input(request.input_image, self.uploads_dir)
            planned = [{**p, "input_image": value, "input_file": kept} for p in planned]
        items = []
        for params in planned:
            graph = render_item(template, params)
            items.append(({**params, **effective_params(template, graph),
                           "workflow": template.name,
                           "workflow_title": template.title or template.name}, graph))
        prompt = request.all_prompts[0] if "prompt" in template.params else ""
        title = (prompt or template.title or template.name)[:120]
        job = self.store.create_job(
            user=user, lane=lane or user, workflow=template.name, title=title,
            spec={"prompts": request.all_prompts, "seeds": request.seeds,
                  "sweep_param": request.sweep_param, "sweep_values": list(request.sweep_values),
                  "style": request.style, "seed": request.seed, "via": via},
            items=items)
        live = self._register(job)
        item_ids = [item.id for item in self.store.job_items(job.id)]
        with self._cond:
            live.pending.extend(item_ids)
            self._refresh_waiting_locked()
            self._cond.notify_all()
        return live

    # ------------------------------------------------------------------ following

    def get(self, job_id: str, *, user: str | None = None) -> LiveJob | None:
        """The running job; with ``user``, only if it is theirs (None like a missing one)."""
        live = self._jobs.get(job_id)
        return live if live is not None and (user is None or live.user == user) else None

    def snapshot(self, job_id: str, *, user: str | None = None) -> JobSnapshot | None:
        """The job as it is now, running (from memory) or finished (from the store); with
        ``user``, only if it is theirs."""
        live = self.get(job_id, user=user)
        if live is not None:
            return live.snapshot()
        job = self.store.get_job(job_id, user=user)
        if job is None:
            return None
        return snapshot_from_db(job, self.shown_images(job.id), self.store.item_counts(job.id))

    def shown_images(self, job_id: str) -> list[ShownImage]:
        return [shown_image(image, self.outputs_dir) for image in self.store.images_of_job(job_id)]

    def latest_active(self, user: str | None = None) -> LiveJob | None:
        with self._cond:
            jobs = [j for j in self._jobs.items()
                    if j.status in ("queued", "running") and (user is None or j.user == user)]
        return max(jobs, key=lambda j: j.order) if jobs else None

    def recent(self, user: str | None = None, limit: int = 12) -> list[JobSnapshot]:
        """The user's recent jobs, newest first (live ones as they are now)."""
        result = []
        for job in self.store.list_jobs(user=user, limit=limit):
            live = self.get(job.id)
            result.append(live.snapshot() if live is not None else
                          snapshot_from_db(job, (), self.store.item_counts(job.id)))
        return result

    def follow(self, live: LiveJob, *, interval: float = 0.1, settle: float = 0.015,
               timeout: float = 24 * 3600) -> Iterator[JobSnapshot]:
        """Yield snapshots as the job changes, at most one per ``interval``; the last is final.

        A change is held ``settle`` seconds so the messages of one step (ComfyUI sends the
        preview and the progress separately) reach the page together; a new image or the
        end of the job is shown at once.
        """
        deadline = time.monotonic() + timeout
        version = -1
        shown = -1  # images in the last snapshot yielded
        last_yield = float("-inf")
        while True:
            snap = live.wait_newer(version, timeout=max(0.0, min(30.0, deadline - time.monotonic())))
            if not snap.finished and snap.version != version and len(snap.images) == shown:
                hold = max(settle, last_yield + interval - time.monotonic())
                live.wait_until(lambda: live.finished is not None or len(live.images) != shown,
                                hold)
                snap = live.snapshot()
            if snap.version != version or snap.finished:
                version = snap.version
                shown = len(snap.images)
                last_yield = time.monotonic()
                yield snap
            if snap.finished or time.monotonic() > deadline:
                return

    # ------------------------------------------------------------------ cancelling

    def cancel(self, job_id: str, *, user: str | None = None) -> bool:
        """Stop a job: drop its images not sent yet, interrupt the running prompt, remove
        waiting ones from ComfyUI's queue. False if it isn't running (or isn't ``user``'s)."""
        live = self.get(job_id, user=user)
        if live is None:
            return False
        with self._cond:
            if live.status not in ("queued", "running") or live.cancel_requested:
                return False
            live.cancel_requested = True
            dropped = len(live.pending)
            live.pending.clear()
            self._refresh_waiting_locked()
        self.store.cancel_pending_items(job_id, "Cancelled before it started.")
        with live.cond:
            live.cancelled += dropped
            for event in live.inflight.values():
                event.set()
            live.notify()
        self._maybe_finish(live)
        return True

    # ------------------------------------------------------------------ gallery

    def delete_image(self, image_id: int, *, user: str | None = None) -> bool:
        """Delete an image's row, then its files. False if it was already gone (or, with
        ``user``, isn't theirs: nothing is deleted then)."""
        image = self.store.delete_image(image_id, user=user)
        if image is None:
            return False
        for rel in (image.path, image.thumb):
            try:
                (self.outputs_dir / rel).unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove %s", rel, exc_info=True)
        return True

    def gallery_page(self, **filters: Any) -> GalleryPage:
        """``ImageStore.gallery`` that forgets images whose file was deleted outside the
        studio (by hand, or a retention sweep), so the grid never shows a broken picture."""
        page = self.store.gallery(**filters)
        gone = [image for image in page.images if not (self.outputs_dir / image.path).exists()]
        if not gone:
            return page
        for image in gone:
            log.info("image %s left the gallery: %s is gone", image.id, image.path)
            self.delete_image(image.id)
        return self.store.gallery(**filters)

    def thumb_path(self, image: GalleryImage) -> str:
        """The thumbnail, or the image itself if the thumbnail file is gone."""
        thumb = self.outputs_dir / image.thumb
        return str(thumb if thumb.exists() else self.outputs_dir / image.path)

    # ------------------------------------------------------------------ scheduling

    def _register(self, job: ImageJob) -> LiveJob:
        with self._cond:
            self._order += 1
            live = LiveJob(job_id=job.id, user=job.user, lane=job.lane, title=job.title,
                           workflow=job.workflow, total=job.total, created_at=job.created_at,
                           order=self._order, via=str((job.spec or {}).get("via") or ""))
            return self._jobs.add(job.id, live)

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (
                    self._running < self._capacity() and self._has_pending_locked()))
                if self._closed:
                    return
                live, item_id = self._pick_locked()
                self._running += 1
                self._refresh_waiting_locked()
            threading.Thread(target=self._run_slot, args=(live, item_id),
                             name=f"image-{live.job_id[:8]}-{item_id}", daemon=True).start()

    def _capacity(self) -> int:
        """Prompts in flight at once over all hosts: ``inflight`` per host, times its weight."""
        return self.inflight * self._weights

    def _has_pending_locked(self) -> bool:
        return any(live.pending for live in self._jobs.items())

    def _pick_locked(self) -> tuple[LiveJob, int]:
        """Round-robin over lanes: the lane served longest ago (never = first) goes next;
        within a lane, its oldest job."""
        waiting = [live for live in self._jobs.items() if live.pending]
        lane = min({live.lane for live in waiting},
                   key=lambda ln: (self._last_served.get(ln, -1),
                                   min(j.order for j in waiting if j.lane == ln)))
        live = min((j for j in waiting if j.lane == lane), key=lambda j: j.order)
        self._served += 1
        self._last_served[lane] = self._served
        live.slots += 1
        return live, live.pending.popleft()

    def _refresh_waiting_locked(self) -> None:
        """For each job with nothing in flight: how many images go before its next one."""
        waiting = sorted((j for j in self._jobs.items() if j.pending and not j.inflight),
                         key=lambda j: (self._last_served.get(j.lane, -1), j.order))
        for index, live in enumerate(waiting):
            ahead = self._running + index
            if live.waiting_ahead != ahead:
                live.change(waiting_ahead=ahead)

    def _run_slot(self, live: LiveJob, item_id: int) -> None:
        try:
            item = self.store.get_item(item_id)
            if item is not None:
                self._run_on_hosts(live, item)
        except Exception:  # noqa: BLE001 - a slot must always be given back
            log.exception("image item %s failed unexpectedly", item_id)
        finally:
            with self._cond:
                self._running -= 1
                live.slots -= 1
                self._refresh_waiting_locked()
                self._cond.notify_all()
            self._maybe_finish(live)

    # ------------------------------------------------------------------ one image

    def _run_on_hosts(self, live: LiveJob, item: JobItem) -> None:
        """Make one image on the host ``ComfyUIHosts.route`` gives it; when that host fails
        it (``runner.host_failed``), on the next host that can run it, and so on. The last
        host that can run it keeps it whatever happens: its failure is the image's, with
        its sentence, as with one host."""
        tried: list[str] = []
        failures: list[str] = []
        while True:
            capable = self.hosts.capable(item.graph, exclude=tried)
            host = self._take_host(capable)
            if host is None:
                if not self._closed:
                    why = failures[0] if failures else (
                        "No ComfyUI host in COMFYUI_URL has everything this image needs now "
                        "(its nodes, checkpoint and LoRAs).")
                    self.runner.fail_unplaced(live, item, why)
                else:
                    with self._cond:  # closing: left pending in the store for the next start
                        live.pending.appendleft(item.id)
                return
            note = ""
            if failures:
                failed = ", ".join(self.hosts.label(name) for name in tried)
                note = (f"Sent to ComfyUI {self.hosts.label(host)} because {failed} couldn't "
                        f"make it: {failures[-1]}")
            try:
                problem = self.runner.run(live, item, host, may_move=len(capable) > 1,
                                          note=note)
            finally:
                with self._cond:
                    self._host_busy[host] -= 1
                    self._cond.notify_all()
            if problem is None:
                return
            tried.append(host)
            failures.append(problem)
            log.warning("image item %s moves on from ComfyUI host %s: %s", item.id,
                        self.hosts.label(host), problem)
            item = self.store.get_item(item.id) or item

    def _take_host(self, capable: list[str]) -> str | None:
        """A host of ``capable`` with room for one more prompt, counted as busy until the
        caller gives it back; waits while all of them are full. None when there is none,
        or the service is closing."""
        with self._cond:
            while not self._closed:
                route = self.hosts.route(capable, self._host_busy, self.inflight)
                if route.host is not None:
                    self._host_busy[route.host] = self._host_busy.get(route.host, 0) + 1
                    return route.host
                if not route.wait:
                    return None
                # A host gives back a slot (notify) or comes back up (seen on the next look).
                self._cond.wait(0.25)
        return None

    def _abandon_pending(self, live: LiveJob, message: str) -> None:
        with self._cond:
            dropped = len(live.pending)
            live.pending.clear()
        if dropped:
            self.store.fail_pending_items(live.job_id, message)
            with live.cond:
                live.failed += dropped
                live.notify()

    # ------------------------------------------------------------------ finishing

    def _maybe_finish(self, live: LiveJob) -> None:
        with self._cond:
            if live.pending or live.slots:
                return
            with live.cond:
                if live.inflight or live.finishing or live.status not in ("queued", "running"):
                    return
                live.finishing = True
        counts = self.store.item_counts(live.job_id)
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        cancelled = counts.get("cancelled", 0)
        # Nothing runs now, so an item still "queued"/"running" in the store was left for the
        # next start (``ItemRunner._leave_for_restart``): not made in this run.
        failed += counts.get("queued", 0) + counts.get("running", 0)
        if live.cancel_requested:
            status = "cancelled"
        elif failed == 0 and cancelled == 0:
            status = "done"
        elif done:
            status = "partial"
        else:
            status = "failed" if failed else "cancelled"
        error = live.error
        if status == "partial":
            why = live.error if failed else "they were cancelled in ComfyUI."
            error = f"{failed + cancelled} of {live.total} images weren't made: {why}"
        elif status == "cancelled":
            error = "Cancelled." + (f" {done} of {live.total} images were made." if done else "")
        self.store.update_job(live.job_id, status=status, error=error,
                              finished_at=self.store.now())
        # Accounted before followers hear the job ended: whoever sees it finished sees its cost.
        if self.on_job_finished is not None:
            try:
                self.on_job_finished(FinishedJob(live.job_id, live.user, live.workflow,
                                                 live.model, status,
                                                 counts.get("images", 0) - live.booked_images,
                                                 live.gpu_seconds, live.via))
            except Exception:  # noqa: BLE001 - accounting must never break image jobs
                log.exception("on_job_finished hook failed for job %s", live.job_id)
        with live.cond:
            live.status = status
            live.error = error
            live.done, live.failed, live.cancelled = done, failed, cancelled
            live.finished = time.monotonic()
            live.progress.clear()
            live.notify()

    # ------------------------------------------------------------------ restart pickup

    def _reopen_left_jobs(self) -> list[ImageJob]:
        """Finished jobs with an image left for this start (ComfyUI made it, but its
        /history failed: ``ItemRunner._leave_for_restart``), made running again."""
        job_ids = dict.fromkeys(item.job_id for item in self.store.sent_items())
        reopened = []
        for job_id in job_ids:
            job = self.store.get_job(job_id)
            if job is None or job.active:
                continue
            self.store.update_job(job_id, status="running", error="", finished_at=None)
            reopened.append(self.store.get_job(job_id))
        return reopened

    def _pick_up(self, job: ImageJob, *, booked_images: int = 0) -> None:
        """Rebuild a job a previous run left unfinished and carry on with it.
        ``booked_images``: images of it already accounted (a reopened job)."""
        live = self._register(job)
        live.booked_images = booked_images
        items = self.store.job_items(job.id)
        counts = self.store.item_counts(job.id)
        with live.cond:
            live.done, live.failed = counts.get("done", 0), counts.get("failed", 0)
            live.cancelled = counts.get("cancelled", 0)
            live.images = self.shown_images(job.id)
            live.error = next((i.error for i in items if i.status == "failed"), "")
        sent = [i for i in items if i.status in ("queued", "running") and i.prompt_id]
        unsent = [i for i in items if i.status in ("queued", "running") and not i.prompt_id]
        for item in unsent:  # can't happen (id stored first), but never leave one hanging
            self.store.update_item(item.id, status="pending")
        with self._cond:
            live.pending.extend(i.id for i in items if i.status == "pending" or i in unsent)
        log.info("picking up image job %s: %d sent to ComfyUI, %d not sent yet", job.id,
                 len(sent), len(live.pending))
        for item in sent:
            with self._cond:
                self._running += 1
                live.slots += 1
                host = self.hosts.stored_host(item.comfy_host)  # counts in its host's room
                self._host_busy[host] = self._host_busy.get(host, 0) + 1
            threading.Thread(target=self._resume_slot, args=(live, item),
                             name=f"image-resume-{item.id}", daemon=True).start()
        if not sent:
            self._maybe_finish(live)

    def _resume_slot(self, live: LiveJob, item: JobItem) -> None:
        try:
            self.runner.resume(live, item)
        except Exception:  # noqa: BLE001
            log.exception("resuming image item %s failed unexpectedly", item.id)
        finally:
            with self._cond:
                self._running -= 1
                live.slots -= 1
                self._host_busy[self.hosts.stored_host(item.comfy_host)] -= 1
                self._cond.notify_all()
            self._maybe_finish(live)

# --------------------------------------------------------------------------- wiring


def build_image_jobs(*, settings, root: Path, store, outputs_dir: Path,
                     comfyui: ComfyUIClient | None = None, hosts: ComfyUIHosts | None = None,
                     uploads_dir: Path, accounting=None, limits=None,
                     observe: Callable[[FinishedJob], None] | None = None) -> ImageJobs:
    """The image service, started (called by build_services). Each finished job with
    images is accounted through ``accounting.record_image`` (user, model, GPU seconds,
    image count) when ``accounting`` is given; ``observe`` then sees every finished job
    (the metrics). ``hosts``: the ComfyUI hosts, or ``comfyui`` alone."""
    from ..presets import load_style_presets

    library = WorkflowLibrary(root / "workflows", settings.data_path / "workflows")
    try:
        styles = load_style_presets(root / "presets" / "styles")
    except StudioError as exc:
        log.warning("style presets left out: %s", exc)
        styles = []

    def record_image_job(finished: FinishedJob) -> None:
        if accounting is not None and finished.images:
            accounting.record_image(finished.user, "comfyui",
                                    finished.model or finished.workflow, finished.gpu_seconds,
                                    images=finished.images, job_id=finished.job_id,
                                    via=finished.via)
        if observe is not None:
            observe(finished)

    jobs = ImageJobs(comfyui, ImageStore(store), outputs_dir, library, styles=styles, hosts=hosts,
                     uploads_dir=uploads_dir, inflight=settings.image_inflight,
                     max_input_megapixels=settings.max_input_megapixels,
                     on_job_finished=record_image_job, limits=limits)
    return jobs.start()
