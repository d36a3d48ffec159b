"""The base for work followed by pages (studio/live.py): versions, waits, the registry."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from studio.errors import InvalidInput
from studio.live import Live, Registry, wait_any

WAIT = 5.0


@dataclass(eq=False)
class Work(Live):
    state: str = "running"

    def _snapshot_locked(self) -> tuple[str, int]:
        return self.state, self.version


def later(fn, delay: float = 0.05) -> None:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()


def test_live_change_moves_the_version_and_wakes_a_follower():
    work = Work()
    later(lambda: work.change(state="half"))
    assert work.wait_newer(0, WAIT) == ("half", 1)


def test_live_wait_newer_returns_at_once_when_finished():
    work = Work()
    work.change(state="done", finished=time.monotonic())
    started = time.monotonic()
    assert work.wait_newer(work.version, WAIT) == ("done", 1)
    assert time.monotonic() - started < 1


def test_live_wait_any_wakes_on_the_item_that_changed():
    first, second = Work(), Work()
    later(lambda: second.change(state="half"))
    assert wait_any([(first, 0), (second, 0)], WAIT)
    assert (first.version, second.version) == (0, 1)


def test_live_wait_any_times_out_when_nothing_changes():
    assert not wait_any([(Work(), 0)], 0.05)


def test_registry_version_counts_adds_and_item_changes():
    jobs: Registry[Work] = Registry()
    seen = jobs.version
    work = jobs.add("a", Work())
    assert jobs.version > seen
    seen = jobs.version
    later(lambda: work.change(state="half"))
    assert jobs.wait_changed(seen, WAIT) > seen


def test_registry_wait_any_wakes_when_an_item_is_added():
    jobs: Registry[Work] = Registry()
    later(lambda: jobs.add("a", Work()))
    assert wait_any([(jobs, jobs.version)], WAIT)


def test_registry_forgets_finished_items_beyond_keep():
    jobs: Registry[Work] = Registry(keep=1)
    for key in "abc":
        jobs.add(key, Work(finished=time.monotonic()))
    running = jobs.add("d", Work())
    assert [jobs.get(k) is not None for k in "abcd"] == [False, False, True, True]
    assert jobs.items()[-1] is running


def test_registry_forgets_finished_items_after_keep_s():
    jobs: Registry[Work] = Registry(keep_s=60)
    jobs.add("old", Work(finished=time.monotonic() - 61))
    jobs.add("recent", Work(finished=time.monotonic()))
    before = jobs.version
    jobs.add("new", Work())
    assert [w is not None for w in map(jobs.get, ["old", "recent", "new"])] == [False, True, True]
    assert jobs.version > before  # never goes back when an item is forgotten


def test_registry_require_names_the_kind_when_unknown():
    with pytest.raises(InvalidInput, match="There is no pull with id 'x'"):
        Registry().require("x", "pull")
