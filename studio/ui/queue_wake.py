"""Gradio's queue, woken by work instead of polling (issue 16, item 6: no polling with no
page open).

Gradio 6's ``Queue.start_processing`` looks for a queued event every 1 ms whether or not
there is one (``sleep_when_free``), and ``start_progress_updates`` every 10 ms: ~1,100
wake-ups a second, 40-55 CPU-ms/s on this box with nobody there, and the same while replies
stream (the queue is empty then too), each wake-up taking the GIL from the threads doing
the work. Here both loops wait on an ``asyncio.Event`` that is set when an event is pushed
and when a job ends (the only two things that can let the dispatcher start something),
with a 1 s timeout as a backstop. The dispatch itself is Gradio's, line for line.

``install`` replaces the two loops on one ``Queue`` instance, and only when it has the
attributes this code relies on; otherwise Gradio's own loops run, unchanged. Every
queued event of the app passes through here, so the whole UI test suite exercises it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

# The longest a loop sleeps without being woken: a backstop against a wake-up this module
# doesn't know of (a future Gradio that frees a slot some other way), never the normal path.
BACKSTOP_S = 1.0
# While jobs run, how often their progress is sent (Gradio's own figure).
PROGRESS_EVERY_S = 0.01

_NEEDS = ("start_processing", "start_progress_updates", "push", "process_events", "get_events",
          "set_progress",
          "active_jobs", "event_queue_per_concurrency_id", "delete_lock", "event_analytics",
          "live_updates", "broadcast_estimations", "send_message", "stopped",
          "_asyncio_tasks", "_cancel_asyncio_tasks")


def install(queue: Any) -> bool:
    """Make ``queue`` (a ``gradio.queueing.Queue``) wait for work instead of polling.
    Returns False, leaving it as it was, when it isn't the shape this was written for."""
    if getattr(queue, "_studio_woken", False):
        return True
    if not all(hasattr(queue, name) for name in _NEEDS):
        log.warning("Gradio's queue has changed shape; keeping its own polling loop.")
        return False
    wake = _Wake()
    push, process_events = queue.push, queue.process_events

    @functools.wraps(push)
    async def woken_push(*args, **kwargs):
        try:
            return await push(*args, **kwargs)
        finally:
            wake.set()

    @functools.wraps(process_events)
    async def woken_process_events(*args, **kwargs):
        wake.set()  # a job started: the progress loop has something to look at
        try:
            return await process_events(*args, **kwargs)
        finally:
            wake.set()  # its slot and its concurrency are free again

    set_progress = queue.set_progress

    @functools.wraps(set_progress)
    def woken_set_progress(*args, **kwargs):
        # Called from the handler's worker thread: the event is the loop's to set.
        try:
            return set_progress(*args, **kwargs)
        finally:
            wake.progress_from_thread()

    queue.push = woken_push
    queue.process_events = woken_process_events
    queue.set_progress = woken_set_progress
    queue.start_processing = functools.partial(_start_processing, queue, wake)
    queue.start_progress_updates = functools.partial(_start_progress_updates, queue, wake)
    queue._studio_woken = True
    return True


class _Wake:
    """Two waiters (the dispatcher and the progress loop), one signal: each has its own
    event, and ``set`` sets both, so neither can clear the other's wake-up."""

    def __init__(self) -> None:
        self.dispatch = asyncio.Event()
        self.progress = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        self.dispatch.set()
        self.progress.set()

    def progress_from_thread(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.progress.set)
            except RuntimeError:  # the loop closed in between: nobody left to tell
                pass


async def _sleep_until(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass


async def _start_processing(self: Any, wake: _Wake) -> None:
    """Gradio 6.31's ``Queue.start_processing``, with each ``sleep(sleep_when_free)``
    replaced by a wait for the next push or job end."""
    from gradio.utils import run_coro_in_background, set_task_name  # noqa: PLC0415

    try:
        while not self.stopped:
            # Cleared before looking, so a push between the look and the wait is not missed.
            wake.dispatch.clear()
            if len(self) == 0 or None not in self.active_jobs:
                await _sleep_until(wake.dispatch, BACKSTOP_S)
                continue

            # Using mutex to avoid editing a list in use
            async with self.delete_lock:
                event_batch = self.get_events()

            if event_batch:
                events, batch, concurrency_id = event_batch
                self.active_jobs[self.active_jobs.index(None)] = events
                event_queue = self.event_queue_per_concurrency_id[concurrency_id]
                event_queue.current_concurrency += 1
                start_time = time.time()
                fn = events[0].fn
                event_queue.start_times_per_fn[fn].add(start_time)
                for event in events:
                    if (a := self.event_analytics.get(event._id)) is not None:
                        a["status"] = "processing"
                process_event_task = run_coro_in_background(
                    self.process_events, events, batch, start_time, fn)
                set_task_name(process_event_task, events[0].session_hash, fn._id,
                              events[0]._id, batch)
                self._asyncio_tasks.add(process_event_task)
                process_event_task.add_done_callback(self._asyncio_tasks.discard)
                if self.live_updates:
                    self.broadcast_estimations(concurrency_id)
            else:
                # Queued events, but each one's concurrency limit is reached: a job's end
                # is what can change that.
                await _sleep_until(wake.dispatch, BACKSTOP_S)
    finally:
        self.stopped = True
        self._cancel_asyncio_tasks()


async def _start_progress_updates(self: Any, wake: _Wake) -> None:
    """Gradio 6.31's ``Queue.start_progress_updates``: a job's pending progress still goes
    out at most every 10 ms, but the loop sleeps until some progress is set (``set_progress``,
    from the handler's thread) instead of looking every 10 ms while any job runs."""
    wake.loop = asyncio.get_running_loop()
    while not self.stopped:
        wake.progress.clear()
        sent = False
        for event in [evt for job in self.active_jobs if job is not None for evt in job]:
            if event.progress_pending and event.progress:
                event.progress_pending = False
                self.send_message(event, event.progress)
                sent = True
        if sent:
            await asyncio.sleep(PROGRESS_EVERY_S)  # Gradio's pace: coalesce what comes next
        else:
            await _sleep_until(wake.progress, BACKSTOP_S)
