"""No monitoring summary after every event while monitoring is off (issue 16, items 1 and 3).

Gradio 6's queue, after each event it ran, builds a pandas ``DataFrame`` of the last 10,000
events it queued (``Queue.event_analytics``), groups it by function and takes percentiles
of each, for its ``/monitoring`` dashboard (``Queue.compute_analytics_summary``, on a worker
thread holding the GIL). It does so whether or not the dashboard is on. Measured here: 1.6
ms of CPU per event with 100 events on record, 2.9 ms with 3,000, 6.4 ms once the record is
full, which a studio reaches after a few hours of use (a page's load is six events, a tick
of its status strip one). With twenty messages sent at once it was a quarter of the
interpreter's time before their first words (``py-spy --gil``).

The studio launches with ``enable_monitoring=False`` (``ui/app.py``): the dashboard and
``/monitoring/summary`` refuse with 403, so nothing reads the summary. ``install`` makes the
computation return the summary it already has while ``blocks.enable_monitoring`` is False;
with monitoring on (or before ``launch`` decided it) Gradio's own runs, unchanged.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


def install(queue: Any) -> bool:
    """Skip ``queue``'s analytics summary while its app's monitoring is off. Returns False,
    leaving it as it was, when the queue isn't the shape this was written for."""
    if getattr(queue, "_studio_quiet_analytics", False):
        return True
    if not all(hasattr(queue, name) for name in ("compute_analytics_summary",
                                                 "cached_event_analytics_summary", "blocks")):
        log.warning("Gradio's queue has changed shape; keeping its monitoring summary.")
        return False
    compute = queue.compute_analytics_summary

    @functools.wraps(compute)
    def compute_analytics_summary(records):
        if getattr(queue.blocks, "enable_monitoring", None) is False:
            return queue.cached_event_analytics_summary
        return compute(records)

    queue.compute_analytics_summary = compute_analytics_summary
    queue._studio_quiet_analytics = True
    return True
