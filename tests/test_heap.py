"""studio/heap.py: the collector paused while the app is built, then set for a server."""

import gc
import weakref

import pytest

from studio import heap


@pytest.fixture
def restored_collector():
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


class Node:
    def __init__(self) -> None:
        self.other = self


def test_pause_stops_collections_and_settle_freezes_what_is_alive(restored_collector):
    heap.pause()
    assert not gc.isenabled()
    kept = Node()
    heap.settle()
    assert gc.isenabled()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *heap.OLDER_RATIOS)
    # What was alive at settle is out of later collections (frozen), not garbage.
    assert gc.get_freeze_count() > 0
    assert kept.other is kept


def test_garbage_made_after_settle_is_still_collected_without_asking(restored_collector):
    heap.pause()
    heap.settle()
    cycle = Node()
    gone = weakref.ref(cycle)
    del cycle
    # Only a cycle: reference counting alone never frees it. Allocations past the young
    # thresholds make the collector run by itself.
    keep = [[] for _ in range(heap.YOUNG_THRESHOLD * heap.OLDER_RATIOS[0] * 3)]
    assert gone() is None
    del keep
