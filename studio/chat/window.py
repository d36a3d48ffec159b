"""Which part of a long conversation a page shows: pure arithmetic over the chat's message
numbers (``seq``, ascending). No store, no gradio.

A window is ``(first, last)``: the seq of the first message shown, and of the last one, or
None for "up to the newest" (new messages then join the window as they are written). A page
opens a chat on its newest ``OPEN`` messages; "Load earlier" adds ``PAGE`` before them and
"Load newer" ``PAGE`` after them; past ``MOST`` messages the far end is let go, so the
browser never draws more than that many (a 5,000-message chat drawn whole took 7.4 s).

>>> seqs = list(range(1, 11))
>>> newest(seqs, 4)
(7, None)
>>> earlier(seqs, (7, None), page=4, most=6)
(3, 8)
>>> later(seqs, (3, 8), page=4, most=6)
(5, None)
>>> around(seqs, 2, 4)
(None, 3)
>>> from_start(seqs, 3, most=4)
(3, 6)
>>> counts(seqs, (3, 8))
(2, 2)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Optional, Sequence

Window = tuple[Optional[int], Optional[int]]

# Messages shown when a chat opens: the browser's drawing is most of a click's time (100
# messages took ~3× as long to show as 4 in bench/bench_load.py); "Load earlier" is one
# click away for the rest.
OPEN = 50
PAGE = 200  # messages each "Load earlier" / "Load newer" adds
MOST = 600  # messages shown at most; past it the far end is let go
WHOLE: Window = (None, None)


def newest(seqs: Sequence[int], n: int = OPEN) -> Window:
    """The newest ``n`` messages, open towards new ones."""
    return (seqs[-n], None) if len(seqs) > n else WHOLE


def _bounds(seqs: Sequence[int], window: Window) -> tuple[int, int]:
    """Positions [start, stop) of the window's messages in ``seqs``."""
    first, last = window
    start = 0 if first is None else bisect_left(seqs, first)
    stop = len(seqs) if last is None else bisect_right(seqs, last)
    return start, max(start, stop)


def _window(seqs: Sequence[int], start: int, stop: int) -> Window:
    start, stop = max(0, start), min(len(seqs), stop)
    if stop <= start:
        return newest(seqs)
    return (seqs[start] if start > 0 else None, seqs[stop - 1] if stop < len(seqs) else None)


def earlier(seqs: Sequence[int], window: Window, *, page: int = PAGE, most: int = MOST) -> Window:
    """``page`` more messages before the window; the newest ones go past ``most``."""
    start, stop = _bounds(seqs, window)
    start = max(0, start - page)
    return _window(seqs, start, min(stop, start + most))


def later(seqs: Sequence[int], window: Window, *, page: int = PAGE, most: int = MOST) -> Window:
    """``page`` more messages after the window; the oldest ones go past ``most``."""
    start, stop = _bounds(seqs, window)
    stop = min(len(seqs), stop + page)
    return _window(seqs, max(start, stop - most), stop)


def from_start(seqs: Sequence[int], first: int | None, most: int = MOST) -> Window:
    """The messages from ``first`` on (the oldest when None), at most ``most`` of them: what
    a page shows after ‹ › changed the later turns under its window's start."""
    start, stop = _bounds(seqs, (first, None))
    return _window(seqs, start, min(stop, start + most))


def around(seqs: Sequence[int], seq: int, n: int = OPEN) -> Window:
    """``n`` messages ending with the one after ``seq`` (a found question and its answer),
    so the page, scrolled to the bottom of what it shows, shows that message."""
    pos = bisect_left(seqs, seq)
    stop = min(len(seqs), pos + 2)
    return _window(seqs, stop - n, stop)


def counts(seqs: Sequence[int], window: Window) -> tuple[int, int]:
    """How many messages come before the window and after it."""
    start, stop = _bounds(seqs, window)
    return start, len(seqs) - stop
