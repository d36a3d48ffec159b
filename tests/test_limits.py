"""Per-user limits: each names itself and when it resets, admins are not limited, and a burst
of simultaneous requests lets exactly the allowed number through (the chat service against
the fake Ollama, image jobs against the fake ComfyUI)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from studio.access.limits import Limits
from studio.errors import LimitReached
from tests.test_chat_service import LOCAL, database, done, make_service, ollama  # noqa: F401
from tests.test_images import fake, finish, make_jobs, small  # noqa: F401


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_limits_chat_per_minute_names_the_limit_and_the_wait():
    clock = Clock()
    limits = Limits(chat_per_minute=2, clock=clock)
    limits.admit_chat("bob")()
    clock.now += 20
    limits.admit_chat("bob")()
    with pytest.raises(LimitReached, match=r"2 chat messages in the last minute.*"
                                           r"STUDIO_LIMIT_CHAT_PER_MINUTE.*try again in 40 s"):
        limits.admit_chat("bob")
    limits.admit_chat("ann")()  # each user has their own
    clock.now += 41
    limits.admit_chat("bob")()


def test_limits_tokens_per_day_reset_at_midnight():
    tz = timezone(timedelta(hours=1))
    midnight = datetime(2026, 12, 5, tzinfo=tz)
    limits = Limits(tokens_per_day=1000, tokens_today=lambda user: (1200, midnight),
                    now=lambda tz_: datetime(2026, 12, 4, 20, 48, tzinfo=tz))
    with pytest.raises(LimitReached, match=r"1,200 tokens today.*1,000 a day.*"
                                           r"resets at midnight \(in 3 h 12 min\)"):
        limits.admit_chat("bob")


def test_limits_concurrent_replies_free_their_slot():
    limits = Limits(concurrent_replies=1)
    release = limits.admit_chat("bob")
    with pytest.raises(LimitReached, match="1 of your replies are still being written") as no:
        limits.admit_chat("bob")
    assert "Stop" in str(no.value)
    release()
    release()  # freeing twice frees once
    limits.admit_chat("bob")


def test_limits_images_per_hour_count_a_batch():
    clock = Clock()
    limits = Limits(images_per_hour=5, clock=clock)
    limits.admit_images("bob", 4)
    with pytest.raises(LimitReached, match=r"would make 2 images; you have 1 of 5 left.*"
                                           r"More are allowed in 1 h 0 min"):
        limits.admit_images("bob", 2)
    limits.admit_images("bob", 1)
    clock.now += 3600
    limits.admit_images("bob", 5)


def test_limits_admins_are_not_limited():
    limits = Limits(chat_per_minute=1, images_per_hour=1, exempt=lambda user: user == "ann")
    for _ in range(5):
        limits.admit_chat("ann")
        limits.admit_images("ann", 3)


def test_limits_remember_roles_briefly_and_say_when_the_store_is_needed():
    asked, now = [], [0.0]
    limits = Limits(chat_per_minute=5, clock=lambda: now[0],
                    exempt=lambda user: asked.append(user) or user == "ann")
    assert limits.needs_store("bob")  # never seen: the role must be read
    limits.admit_chat("bob")()
    limits.admit_chat("bob")()
    assert asked == ["bob"] and not limits.needs_store("bob")
    now[0] += 11  # roles are remembered for ten seconds, then read again
    assert limits.needs_store("bob")
    limits.admit_chat("bob")
    assert asked == ["bob", "bob"]
    daily = Limits(tokens_per_day=100, tokens_today=lambda user: (0, datetime.now()),
                   exempt=lambda user: user == "ann", clock=lambda: now[0])
    daily.admit_chat("bob")()
    daily.admit_chat("ann")()
    assert daily.needs_store("bob") and not daily.needs_store("ann")  # bob's tokens are counted


def burst(n: int, call) -> tuple[int, int]:
    """Run ``call`` from ``n`` threads released at once; (passed, refused)."""
    start = threading.Barrier(n)
    results = []

    def one():
        start.wait()
        try:
            call()
            results.append("ok")
        except LimitReached:
            results.append("refused")

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results.count("ok"), results.count("refused")


def test_limits_hold_under_a_burst_of_chat_sends(store, tmp_path, ollama, fake_ollama):  # noqa: F811
    chat = make_service(store, tmp_path, ollama)
    chat._limits = Limits(chat_per_minute=5)
    started = []
    passed, refused = burst(20, lambda: started.append(
        chat.send(None, "hello", model=LOCAL, user="bob")))
    assert (passed, refused) == (5, 15)
    for s in started:
        done(s)
    users = store.db.execute("SELECT count(*) FROM messages WHERE role = 'user'").fetchone()[0]
    assert users == 5


def test_limits_concurrent_replies_hold_under_a_burst(store, tmp_path, ollama,  # noqa: F811
                                                      fake_ollama):
    for _ in range(10):
        fake_ollama.queue_reply(fake_ollama.make_tokens(50), delay=0.02)
    chat = make_service(store, tmp_path, ollama)
    chat._limits = Limits(concurrent_replies=2)
    started = []
    passed, refused = burst(10, lambda: started.append(
        chat.send(None, "hello", model=LOCAL, user="bob")))
    assert (passed, refused) == (2, 8)
    before = database(store)
    for s in started:
        done(s)
    assert len(database(store)) == len(before)
    done(chat.send(None, "now there is room", model=LOCAL, user="bob"))


def test_limits_hold_under_a_burst_of_image_jobs(fake, make_jobs):  # noqa: F811
    jobs = make_jobs(fake)
    jobs.limits = Limits(images_per_hour=3)
    submitted = []
    passed, refused = burst(8, lambda: submitted.append(jobs.submit(small(), user="bob")))
    assert (passed, refused) == (3, 5)
    assert len(jobs.recent("bob", limit=50)) == 3
    for live in submitted:
        finish(jobs, live)
