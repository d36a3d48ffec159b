"""The server process's garbage collector, set for a long-running server (issue 16, items 3
and 6).

With CPython's defaults, a full collection walks every object the process holds: after
start that is Gradio, the app's ~100 blocks and its config, every page's copy of its
blocks, several hundred thousand objects. Measured on this box (``bench/bench_load.py``'s
twenty chats, with ``gc.callbacks`` timing each collection):

* during start, seven full collections took ~420 ms of the ~2.8 s;
* afterwards, full collections of 24-177 ms came every 10-15 s under load, growing with
  the pages opened; every stream, page and first word waited for each (one of 156 ms fell
  inside a burst of twenty chats and held all their first words back by as much).

So: no collections while the app is built (it makes nothing to collect; ``pause``), then
one full collection, everything alive frozen out of later collections (``gc.freeze``, as
the CPython docs suggest for long-lived servers), and full collections ten times rarer
than CPython's default (``settle``); the young generations keep CPython's thresholds.
Cyclic garbage made later is still collected.

The thresholds were chosen by measure (``bench/bench_memory.py --quick``: RSS growth over
200 chat turns; twenty at once, A/B, with each collection timed):

* CPython's defaults (700, 10, 10), frozen: +13 MB; full collections of 24-177 ms still
  came every 10-15 s under load, the pages' sessions growing what they walk;
* (20,000, 20, 20): +29 MB (garbage waits in the young generations), young collections of
  ~12 ms each;
* (700, 10, 100), this: +14 MB, no full collection in a whole bench run after start, the
  middle generation's collections ~4 ms each; twenty at once read as with (20,000, 20, 20).
"""

from __future__ import annotations

import gc

# Allocations (less frees) between collections of the youngest generation (CPython's
# default), and the ratios above it: the middle one every 10 of those (the default), the
# full one every 100 of the middle's (the default is 10).
YOUNG_THRESHOLD = 700
OLDER_RATIOS = (10, 100)


def pause() -> None:
    """Start of the process: no collections while the app is built."""
    gc.disable()


def settle() -> None:
    """The app is built and serving: collect once, freeze what is alive, and collect from
    now on with the server's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_RATIOS)
    gc.enable()
