"""The store never makes one person wait for another (issue 16, item 5): each thread reads on
its own connection to the WAL file, so a read does not wait for a write transaction, and a
slow search does not hold up the saving of a streamed reply. Events, not sleeps, hold the
slow side open; every wait is bounded so a regression fails instead of hanging."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from studio.store.db import Store

WAIT_S = 10  # bound on every wait below; only a hang reaches it


@pytest.fixture
def file_store(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    yield store
    store.close()


def run_in_thread(work) -> tuple[threading.Thread, dict]:
    """Start ``work`` on a thread; the returned dict gets its ``result`` or ``error``."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_store_read_proceeds_while_a_write_transaction_is_open(file_store):
    conv = file_store.create_conversation("Bread", user="ann")
    file_store.add_message(conv.id, "user", "first")
    writing, release = threading.Event(), threading.Event()

    def long_write():
        with file_store.transaction():
            file_store.add_message(conv.id, "assistant", "not committed yet")
            writing.set()
            release.wait(WAIT_S)

    writer, _ = run_in_thread(long_write)
    try:
        assert writing.wait(WAIT_S)
        reader, read = run_in_thread(lambda: (
            [c.title for c in file_store.list_conversations(user="ann")],
            [m.content for m in file_store.messages(conv.id)],
            [h.snippet for h in file_store.search("first", user="ann")]))
        reader.join(WAIT_S)
        assert not release.is_set() and not reader.is_alive(), \
            "the read waited for the open write transaction"
        assert read["result"] == (["Bread"], ["first"], ["[first]"])  # the committed state
    finally:
        release.set()
        writer.join(WAIT_S)
    assert [m.content for m in file_store.messages(conv.id)] == ["first", "not committed yet"]


def test_store_slow_search_does_not_hold_up_saving_a_reply(file_store):
    conv = file_store.create_conversation("Sourdough", user="ann")
    for n in range(200):
        file_store.add_message(conv.id, "user", f"sourdough starter note {n}")
    reply = file_store.add_message(conv.id, "assistant", "", status="streaming")
    searching, release = threading.Event(), threading.Event()

    def slow_search():
        # A progress handler that stalls the search mid-query, holding its read open
        # as a search over a big history would.
        def stall():
            searching.set()
            release.wait(WAIT_S)
            return 0
        file_store.db.conn.set_progress_handler(stall, 100)
        try:
            return file_store.search("sourdough", user="ann")
        finally:
            file_store.db.conn.set_progress_handler(None, 0)

    searcher, found = run_in_thread(slow_search)
    try:
        assert searching.wait(WAIT_S)
        saver, saved = run_in_thread(lambda: (
            file_store.update_message(reply.id, content="Feed it daily."),
            file_store.add_message(conv.id, "user", "thanks"),
            file_store.update_message(reply.id, status="complete")))
        saver.join(WAIT_S)
        assert not release.is_set() and not saver.is_alive(), \
            "saving the reply waited for the search"
        assert "error" not in saved
    finally:
        release.set()
        searcher.join(WAIT_S)
    assert "error" not in found and len(found["result"]) == 50
    stored = file_store.get_message(reply.id)
    assert (stored.content, stored.status) == ("Feed it daily.", "complete")


def test_store_writes_from_many_threads_all_land_in_order(file_store):
    conv = file_store.create_conversation("Busy", user="ann")
    barrier = threading.Barrier(4)

    def writer(n):
        barrier.wait(WAIT_S)
        for i in range(25):
            file_store.add_message(conv.id, "user", f"{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    messages = file_store.messages(conv.id)
    assert [m.seq for m in messages] == list(range(1, 101))
    assert sorted(m.content for m in messages) == sorted(f"{n}-{i}" for n in range(4)
                                                         for i in range(25))


def test_store_each_thread_has_its_own_connection(file_store):
    thread, other = run_in_thread(lambda: file_store.db)
    thread.join(WAIT_S)
    assert other["result"] is not file_store.db


def test_store_close_closes_every_threads_connection(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    opened, closed = threading.Event(), threading.Event()
    worker, outcome = run_in_thread(lambda: (store.count_conversations(), opened.set(),
                                             closed.wait(WAIT_S),
                                             store.count_conversations()))
    assert opened.wait(WAIT_S)
    store.close()
    closed.set()
    worker.join(WAIT_S)
    assert isinstance(outcome.get("error"), sqlite3.ProgrammingError)
    newcomer, refused = run_in_thread(store.count_conversations)
    newcomer.join(WAIT_S)
    assert isinstance(refused.get("error"), sqlite3.ProgrammingError)
    assert store.ping() is False
