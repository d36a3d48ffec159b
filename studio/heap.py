"""The server process's garbage collector, set for a long-running server (issue 16, items 3
and 6).

With CPython's defaults, a full collection walks every object the process holds: after
start that is Gradio, the app's ~100 blocks and its config, every page's copy of its
blocks, several hundred thousand objects. Measured on this box (``bench/bench_load.py``'s
twenty chats, with ``gc.callbacks`` timing each collection):

* during start, seven full collections took ~420 ms of the ~2.8 s;
* afterwards, full collections of 24-177 ms came every 10-15 s under load, growing with
  the pages opened; every stream, page and first word waited for each (one of 156 ms fell
  inside a burst of twenty chats and held all their first words back by as much);
* at the default threshold of 700 allocations, a streamed token's work triggers a
  young-generation collection every few tokens.

So: no collections while the app is built (it makes nothing to collect; ``pause``), then
one full collection, everything alive frozen out of later collections (``gc.freeze``, as
the CPython docs suggest for long-lived servers), and young collections every
``YOUNG_THRESHOLD`` allocations (``settle``). Cyclic garbage made later is still collected.
"""

from __future__ import annotations

import gc

# Allocations (less frees) between collections of the young generation; each such
# collection walks at most this many objects (~5 ms at 20,000 here). Then CPython's own
# ratios: every 20 young collections the middle one, every 20 of those the old one.
YOUNG_THRESHOLD = 20_000
OLDER_RATIOS = (20, 20)


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
