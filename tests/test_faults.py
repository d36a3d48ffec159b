"""Backends failing while the studio runs, and the studio itself killed (issue 13).

Each test plays one fault with the protocol-exact fakes and asserts two things: what the
person sees (the reply's text and error, the job's snapshot, the status strip) and what is
stored (the message row, the job and its items, the gallery). Chat and single-process
image faults drive the services in this process; the kill tests run ``python app.py`` as
a subprocess, SIGKILL it and start it again on the same data folder, while the fake
ComfyUI in this process keeps running across the kill. Every wait is bounded.
docs/reliability.md lists these faults with what is kept.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from studio.chat.models import ChatModels
from studio.chat.replies import ReplyManager
from studio.chat.router import Router
from studio.chat.service import ChatService
from studio.chat.streams import ChatStreams
from studio.clients.comfyui import ComfyUIClient
from studio.clients.ollama import OllamaClient
from studio.clients.openrouter import OpenRouterClient
from studio.config import Settings
from studio.images import plans as image_plans
from studio.images.jobs import ImageJobs
from studio.images.plans import WorkflowLibrary
from studio.images.runner import COMFYUI_PLACE
from studio.models.gpu_coordinator import ModelsInUse
from studio.ops.status import StatusBoard, check_comfyui, check_ollama, status_html
from studio.store.images import ImageStore
from tests.conftest import free_port, running_fake_ollama, start_studio
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter
from tests.test_images import finish, make_jobs, small  # noqa: F401 - make_jobs is a fixture

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = WorkflowLibrary(ROOT / "workflows")
WAIT = 15  # seconds; upper bound for every wait, never a sleep
LOCAL = "ollama:llama3.2:latest"
CLOUD = "openrouter:openai/gpt-4o-mini"


# --------------------------------------------------------------------------- helpers


def make_chat(store, tmp_path, *, ollama_url: str = "http://127.0.0.1:9",
              openrouter_url: str = "http://127.0.0.1:9", sleeps=None):
    """The chat service as build_services wires it, over the given backends; the router's
    retry waits are recorded in ``sleeps`` (when given: a list, or a callable that sleeps)
    instead of slept."""
    ollama = OllamaClient(ollama_url, timeout=5)
    openrouter = OpenRouterClient(DEFAULT_KEY, openrouter_url, timeout=5)
    router = Router({"ollama": ollama, "openrouter": openrouter},
                    sleep=time.sleep if sleeps is None else getattr(sleeps, "append", sleeps))
    replies = ReplyManager(ChatStreams(router, in_use=ModelsInUse()).open, store,
                           flush_every=0.05)
    return ChatService(store, replies, router, uploads_dir=tmp_path / "uploads",
                       exports_dir=tmp_path / "exports", max_message_chars=10_000,
                       supports_images=ChatModels(ollama).supports_images)


def send(chat, store, text: str, model: str, chat_id: str | None = None):
    """Send, wait for the reply to settle; (what the page shows last, the stored row)."""
    started = chat.send(chat_id, text, model=model, user="owner")
    assert started.reply.settled.wait(WAIT), "the reply never settled"
    stored = store.messages(started.chat_id)[-1]
    return started, started.reply.snapshot(), stored


def backend_states(board: StatusBoard) -> dict[str, str]:
    return {s.name: s.state for s in board.statuses()}


def wait_for(condition, timeout: float = WAIT, every: float = 0.05):
    """Poll ``condition`` until truthy (a state in another process has no event to wait
    on); returns its value, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_equal(read, expected, timeout: float = WAIT):
    """Poll ``read()`` until it equals ``expected``; fails showing the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == expected:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s, expected {expected!r}")
        time.sleep(0.05)


def jobs_for(make_jobs, comfyui, *, timeout: float = 5, **kwargs) -> ImageJobs:
    """The image service on the fake, its client named as build_services names it (ComfyUI's
    address never reaches a message)."""
    return make_jobs(comfyui, client={"timeout": timeout, "shown_as": COMFYUI_PLACE}, **kwargs)


# --------------------------------------------------------------------------- Ollama


def test_faults_ollama_stopped_and_started_again_the_strip_follows_and_chat_carries_on(
        store, tmp_path):
    fake = running_fake_ollama()
    port = fake.port
    settings = Settings.from_env({"OLLAMA_HOST": fake.url, "STUDIO_DATA_DIR": str(tmp_path),
                                  "COMFYUI_URL": f"http://127.0.0.1:{free_port()}"},
                                 dotenv_path=None)
    board = StatusBoard(settings, ttl=0.0, checks=(check_ollama, check_comfyui))
    chat = make_chat(store, tmp_path, ollama_url=fake.url)
    try:
        assert backend_states(board)["Ollama"] == "reachable"
        fake.queue_reply("first answer")
        first, _, _ = send(chat, store, "hello", LOCAL)

        fake.stop()  # Ollama stopped (a restart, an update, a crash)
        strip = status_html(board.statuses())
        assert "data-backend='ollama' data-state='unreachable'" in strip
        assert "Start it with `ollama serve`" in strip
        _, shown, stored = send(chat, store, "are you there?", LOCAL, first.chat_id)
        assert shown.status == "error" and shown.text == ""
        assert shown.error.startswith(f"Can't reach Ollama at {fake.url}.")
        assert "ollama serve" in shown.error
        assert (stored.role, stored.status, stored.content, stored.error) == (
            "assistant", "error", "", shown.error)

        fake.start()  # started again on the same port: no studio restart
        assert fake.port == port
        assert backend_states(board)["Ollama"] == "reachable"
        fake.queue_reply("back again")
        _, shown, stored = send(chat, store, "and now?", LOCAL, first.chat_id)
        assert (shown.status, shown.text) == ("complete", "back again")
        assert (stored.status, stored.content) == ("complete", "back again")
        # The failed turn's empty answer is not sent back to the model as history.
        sent = fake.requests_to("/api/chat")[-1].json["messages"]
        assert [(m["role"], m["content"]) for m in sent] == [
            ("user", "hello"), ("assistant", "first answer"), ("user", "are you there?"),
            ("user", "and now?")]
    finally:
        fake.stop()


def test_faults_status_strip_cache_shows_a_change_once_it_expires(tmp_path):
    fake = running_fake_ollama()
    settings = Settings.from_env({"OLLAMA_HOST": fake.url, "STUDIO_DATA_DIR": str(tmp_path)},
                                 dotenv_path=None)
    board = StatusBoard(settings, ttl=0.3, checks=(check_ollama,))
    try:
        assert backend_states(board) == {"Ollama": "reachable"}
        fake.stop()
        wait_for(lambda: backend_states(board) == {"Ollama": "unreachable"}, timeout=3)
        fake.start()
        wait_for(lambda: backend_states(board) == {"Ollama": "reachable"}, timeout=3)
    finally:
        fake.stop()


def test_faults_ollama_killed_mid_reply_keeps_the_text_so_far(store, tmp_path):
    fake = running_fake_ollama()
    chat = make_chat(store, tmp_path, ollama_url=fake.url)
    try:
        fake.queue_reply(["kept ", "words ", "never ", "sent "], delay=[0, 0, 5, 5])
        started = chat.send(None, "tell me", model=LOCAL, user="owner")
        assert started.reply.wait_until(lambda: len(started.reply.text_parts) == 2, WAIT)
        fake.stop()
        assert started.reply.settled.wait(WAIT)
        shown = started.reply.snapshot()
        stored = store.messages(started.chat_id)[-1]
        assert (shown.status, shown.text) == ("partial", "kept words ")
        assert "dropped in the middle of the reply" in shown.error
        assert (stored.status, stored.content, stored.error) == ("partial", "kept words ",
                                                                 shown.error)
    finally:
        fake.stop()


# --------------------------------------------------------------------------- OpenRouter


@pytest.fixture
def openrouter():
    with FakeOpenRouter() as fake:
        yield fake


def test_faults_openrouter_429_with_retry_after_is_waited_out_then_answers(store, tmp_path,
                                                                           openrouter):
    sleeps: list[float] = []
    chat = make_chat(store, tmp_path, openrouter_url=openrouter.url, sleeps=sleeps)
    openrouter.queue_reply(status=429, retry_after=4)
    openrouter.queue_reply(["fine ", "now"])
    _, shown, stored = send(chat, store, "hi", CLOUD)
    assert sleeps == [4.0] and len(openrouter.chat_requests) == 2
    assert (shown.status, shown.text, shown.error) == ("complete", "fine now", "")
    assert (stored.status, stored.content, stored.backend) == ("complete", "fine now",
                                                               "openrouter")


class HeldWaits:
    """The router's ``sleep``: records each wait and holds it until the test lets it go, so
    the test can look at the page while the studio waits to retry."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._asked = threading.Semaphore(0)
        self._go = threading.Semaphore(0)

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self._asked.release()
        assert self._go.acquire(timeout=WAIT), "the test never let the wait go"

    def reached(self) -> None:
        assert self._asked.acquire(timeout=WAIT), "the router never waited"

    def release(self) -> None:
        self._go.release()


def chat_page(chat):
    """The Chat tab's handlers over ``chat`` (no browser; the page's user is "owner")."""
    from types import SimpleNamespace

    from studio.ui.chat_handlers import ChatPage

    return ChatPage(SimpleNamespace(chat=chat, models=None, presets=[],
                                    settings=SimpleNamespace(stream_interval=0.01,
                                                            max_page_sessions=10)))


def page_send(page, text: str, model: str):
    """on_send as the page calls it (a generator of its updates)."""
    from studio.ui.chat_values import new_session

    return page.on_send(text, [], new_session(), model, "", False, 0.8, 0.9,
                        0, -1, 0, "auto")


def shown_reply(update) -> tuple[str, str]:
    """(the reply's text as the chatbot shows it, the line under the chat) of an on_send
    update (the rows after the answer are its collapsed figures)."""
    _sess, rows, stats, *_ = update
    answer = [r for r in rows if r["role"] == "assistant" and not r.get("metadata")]
    # The send event's rows are as Gradio sends them (blocks of text: chat_wire.py).
    return ("".join(b["text"] for b in answer[-1]["content"]) if answer else ""), stats


@pytest.mark.parametrize("answers, lines", [
    ([dict(status=429, retry_after=8)],
     ["OpenRouter is busy (429); trying again in 8 s (2 of 3)…"]),
    ([dict(status=502), dict(status=502)],
     ["OpenRouter answered 502; trying again in 1 s (2 of 3)…",
      "OpenRouter answered 502; trying again in 2 s (3 of 3)…"]),
], ids=["429", "502-twice"])
def test_faults_openrouter_retry_waits_show_in_the_reply_then_give_way_to_it(
        store, tmp_path, openrouter, answers, lines):
    waits = HeldWaits()
    chat = make_chat(store, tmp_path, openrouter_url=openrouter.url, sleeps=waits)
    for answer in answers:
        openrouter.queue_reply(**answer)
    openrouter.queue_reply(["fine ", "now"])
    page = chat_page(chat)
    updates = page_send(page, "hi", CLOUD)
    update = next(updates)
    for line in lines:
        waits.reached()  # the studio waits to retry: the page says so, as it happens
        while line not in shown_reply(update)[0]:
            update = next(updates)
        text, stats = shown_reply(update)
        assert text == f"_{line}_" and stats == line
        waits.release()
    *_, last = updates
    text, stats = shown_reply(last)
    assert text == "fine now" and "trying again" not in stats  # replaced by the reply
    assert len(openrouter.chat_requests) == len(lines) + 1
    [conversation] = store.list_conversations(user="owner")
    stored = store.messages(conversation.id)[-1]
    assert (stored.status, stored.content, stored.error) == ("complete", "fine now", "")
    assert "trying again" not in repr(stored)  # nothing of the wait is stored


def test_faults_openrouter_429_with_a_long_retry_after_says_how_long_to_wait(store, tmp_path,
                                                                             openrouter):
    sleeps: list[float] = []
    chat = make_chat(store, tmp_path, openrouter_url=openrouter.url, sleeps=sleeps)
    openrouter.queue_reply(status=429, retry_after=120)
    _, shown, stored = send(chat, store, "hi", CLOUD)
    assert sleeps == [] and len(openrouter.chat_requests) == 1  # not waited out
    assert shown.status == "error" and shown.text == ""
    assert shown.error.startswith("OpenRouter is rate limiting requests for 'openai/gpt-4o-mini'")
    assert "asks to wait 2 minutes" in shown.error
    assert (stored.status, stored.content, stored.error) == ("error", "", shown.error)


def test_faults_openrouter_502_is_retried_then_said_in_a_sentence(store, tmp_path, openrouter):
    sleeps: list[float] = []
    chat = make_chat(store, tmp_path, openrouter_url=openrouter.url, sleeps=sleeps)
    for _ in range(3):
        openrouter.queue_reply(status=502)
    _, shown, stored = send(chat, store, "hi", CLOUD)
    assert sleeps == [1.0, 2.0] and len(openrouter.chat_requests) == 3
    assert shown.status == "error" and shown.text == ""
    assert shown.error == ("OpenRouter's provider failed for 'openai/gpt-4o-mini' (502: Provider "
                           "returned error). Try again in a moment, or pick another model.")
    assert (stored.status, stored.content, stored.error) == ("error", "", shown.error)


@pytest.mark.parametrize("cut_mode, phrase", [
    ("abort", "The connection to OpenRouter dropped part way through the reply"),
    ("eof", "OpenRouter's stream for 'openai/gpt-4o-mini' ended before the reply was complete"),
])
def test_faults_openrouter_stream_cut_mid_reply_keeps_the_partial_text(store, tmp_path,
                                                                       openrouter, cut_mode,
                                                                       phrase):
    chat = make_chat(store, tmp_path, openrouter_url=openrouter.url, sleeps=[])
    openrouter.queue_reply(["Half ", "a ", "reply"], cut_after=2, cut_mode=cut_mode)
    _, shown, stored = send(chat, store, "hi", CLOUD)
    assert len(openrouter.chat_requests) == 1  # never restarted after the first token
    assert (shown.status, shown.text) == ("partial", "Half a ")
    # What happened only: the page's note under the reply adds the one way to retry (↻).
    assert phrase in shown.error and "try again" not in shown.error
    assert (stored.status, stored.content, stored.error) == ("partial", "Half a ", shown.error)
    # The figures so far stay with the text: two pieces arrived.
    assert stored.completion_tokens == 2 and stored.ttft_ms is not None


# --------------------------------------------------------------------------- ComfyUI


@pytest.fixture
def comfyui():
    with FakeComfyUI() as fake:
        yield fake


@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnects", "socket-refused"])
def test_faults_comfyui_websocket_dropped_mid_run_the_image_comes_from_history(
        comfyui, make_jobs, reconnect):
    comfyui.drop_ws_after(1, reconnect=reconnect)
    jobs = jobs_for(make_jobs, comfyui)
    final = finish(jobs, jobs.submit(small(steps=4)))[-1]
    assert (final.status, final.done, len(final.images), final.error) == ("done", 1, 1, "")
    [item] = jobs.store.job_items(final.job_id)
    assert (item.status, item.images, item.error) == ("done", 1, "")
    assert jobs.store.get_job(final.job_id).status == "done"
    [image] = jobs.store.images_of_job(final.job_id)
    assert image.comfy_prompt_id == item.prompt_id
    assert comfyui.requests_to(f"/history/{item.prompt_id}")  # the result was read there


def test_faults_comfyui_answering_500_fails_the_image_with_a_sentence(comfyui, make_jobs):
    comfyui.fail_http("/prompt", 500)
    jobs = jobs_for(make_jobs, comfyui)
    final = finish(jobs, jobs.submit(small()))[-1]
    sentence = (f"ComfyUI at {COMFYUI_PLACE} failed on POST /prompt (500). "
                "Its console window shows why.")
    assert (final.status, final.error, tuple(final.images)) == ("failed", sentence, ())
    job = jobs.store.get_job(final.job_id)
    assert (job.status, job.error) == ("failed", sentence)
    assert [(i.status, i.error) for i in jobs.store.job_items(final.job_id)] == [
        ("failed", sentence)]
    assert jobs.store.count_images() == 0 and comfyui.url not in sentence


def test_faults_comfyui_history_500_right_after_an_image_is_tried_again(comfyui, make_jobs):
    comfyui.fail_http("/history", 500, times=2)  # the first two reads of the result fail
    jobs = jobs_for(make_jobs, comfyui)
    final = finish(jobs, jobs.submit(small()))[-1]
    assert (final.status, final.done, len(final.images), final.error) == ("done", 1, 1, "")
    [item] = jobs.store.job_items(final.job_id)
    assert (item.status, item.images, item.error) == ("done", 1, "")
    assert len(comfyui.requests_to(f"/history/{item.prompt_id}")) == 3


def test_faults_comfyui_history_failing_leaves_the_image_for_the_next_start(comfyui, make_jobs):
    from studio.clients.comfyui_job import _Job

    tries = len(_Job.HISTORY_RETRIES) + 1
    comfyui.fail_http("/history", 500, times=tries)  # every try of this run fails
    booked: list = []
    jobs = jobs_for(make_jobs, comfyui, on_job_finished=booked.append)
    final = finish(jobs, jobs.submit(small()))[-1]
    sentence = ("ComfyUI made this image but answered 500 each time the studio asked for it "
                "(GET /history), so it isn't in the gallery yet. It isn't lost: the studio "
                "fetches it from ComfyUI when it next starts. Restart the studio once ComfyUI "
                "answers again (its console window shows what failed).")
    assert (final.status, final.error, tuple(final.images)) == ("failed", sentence, ())
    [item] = jobs.store.job_items(final.job_id)
    # Kept for the restart recovery: the prompt id, and a state it picks up.
    assert (item.status, item.error, item.images) == ("running", sentence, 0)
    assert item.prompt_id and jobs.store.count_images() == 0
    assert len(comfyui.requests_to(f"/history/{item.prompt_id}")) == tries
    jobs.close()

    again = jobs_for(make_jobs, comfyui, on_job_finished=booked.append)  # the next start
    final = finish(again, again.get(final.job_id))[-1]
    assert (final.status, final.done, len(final.images), final.error) == ("done", 1, 1, "")
    assert again.store.get_job(final.job_id).status == "done"
    [item] = again.store.job_items(final.job_id)
    assert (item.status, item.images, item.error) == ("done", 1, "")
    assert len(comfyui.requests_to("/prompt", "POST")) == 1  # fetched, never made again
    assert [b.images for b in booked] == [0, 1]  # each image accounted once


def test_faults_comfyui_hanging_times_out_then_fails_with_a_sentence(comfyui, make_jobs):
    comfyui.hang_http("/prompt")
    jobs = jobs_for(make_jobs, comfyui, timeout=1)
    started = time.monotonic()
    final = finish(jobs, jobs.submit(small(seeds=2)))[-1]
    assert time.monotonic() - started < 10
    assert final.status == "failed" and final.failed == 2
    assert final.error.startswith(f"ComfyUI at {COMFYUI_PLACE} didn't answer POST /prompt "
                                  "within 1 s.")
    assert "busy or stuck" in final.error
    assert "Start it" not in final.error  # it is running: starting it is the wrong advice
    job = jobs.store.get_job(final.job_id)
    assert (job.status, job.error) == ("failed", final.error)
    items = jobs.store.job_items(final.job_id)
    assert [i.status for i in items] == ["failed", "failed"]
    assert items[0].error == final.error and items[1].error == "Not made: " + final.error
    comfyui.release_hung()


def test_faults_comfyui_stuck_mid_run_is_cancelled_after_the_image_timeout(comfyui, make_jobs):
    comfyui.pause_after_step(1)  # a node that never finishes
    jobs = jobs_for(make_jobs, comfyui, item_timeout=1.0)
    final = finish(jobs, jobs.submit(small(steps=4)))[-1]
    [item] = jobs.store.job_items(final.job_id)
    sentence = "ComfyUI didn't finish this image within 1 s, so the studio cancelled it."
    assert (final.status, final.error) == ("failed", sentence)
    assert (item.status, item.error) == ("failed", sentence)
    assert jobs.store.get_job(final.job_id).error == sentence
    assert comfyui.requests_to("/interrupt", "POST")  # ComfyUI was told to stop it
    assert comfyui.wait_idle(WAIT) and jobs.store.count_images() == 0


# --------------------------------------------------------------------------- studio restart


def left_behind(comfyui, store, *, batch_size: int = 1):
    """A job whose one prompt a killed studio sent and ComfyUI finished: what the store held
    at the kill. Returns (job, item, the image refs in ComfyUI's history)."""
    image_store = ImageStore(store)
    template = LIBRARY.templates()["sd15_txt2img"]
    params = {"prompt": "left", "seed": 1, "steps": 2, "width": 64, "height": 64,
              "batch_size": batch_size, "workflow": "sd15_txt2img"}
    job = image_store.create_job(user="ann", lane="ann", workflow="sd15_txt2img", title="left",
                                 spec={}, items=[(params, image_plans.render_item(template,
                                                                                 params))])
    [item] = image_store.job_items(job.id)
    prompt_id = str(uuid.uuid4())
    image_store.update_item(item.id, status="running", prompt_id=prompt_id)
    image_store.update_job(job.id, status="running")
    client = ComfyUIClient(comfyui.url, timeout=5)
    client.queue_prompt(item.graph, prompt_id=prompt_id)
    assert comfyui.wait_idle(WAIT)
    refs = client.history(prompt_id).images
    assert len(refs) == batch_size
    return job, image_store.get_item(item.id), refs


def test_faults_killed_while_storing_a_batch_image_stores_the_rest_once(comfyui, store,
                                                                         make_jobs, tmp_path):
    job, item, refs = left_behind(comfyui, store, batch_size=2)
    # The kill came between the first picture's gallery row and the item marked done.
    ImageStore(store).add_image(job_id=job.id, item_id=item.id, user="ann", path="kept.png",
                                thumb="kept.webp", width=64, height=64, bytes=1, prompt="left",
                                workflow="sd15_txt2img", comfy_prompt_id=item.prompt_id,
                                comfy_filename=refs[0].filename)
    jobs = jobs_for(make_jobs, comfyui)  # the studio starts again
    final = finish(jobs, jobs.get(job.id))[-1]
    assert (final.status, final.done) == ("done", 1)
    stored = jobs.store.images_of_job(job.id)
    assert sorted(i.comfy_filename for i in stored) == sorted(r.filename for r in refs)
    item = jobs.store.get_item(item.id)
    assert (item.status, item.images) == ("done", 2)
    assert len(list((tmp_path / "outputs").rglob("*.png"))) == 1  # only the missing one fetched


def image_service(data: Path, comfyui_url: str, *, start: bool = True) -> ImageJobs:
    """The image service on a data folder, as a studio process builds it (a killed child
    and the studio started after it build the same)."""
    from studio.store.db import Store

    client = ComfyUIClient(comfyui_url, timeout=5, run_timeout=30, poll_interval=0.02)
    jobs = ImageJobs(client, ImageStore(Store.open(data / "studio.db")), data / "outputs",
                     WorkflowLibrary(ROOT / "workflows", data / "custom"),
                     uploads_dir=data / "uploads")
    return jobs.start() if start else jobs


# A studio process that picks up the left-behind job and is SIGKILLed while storing its
# picture: with the picture's files written and its gallery row not yet stored
# (after_row False), or stored but the files not yet named (after_row True).
KILLED_AT_THE_SEAM = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_faults import image_service

jobs = image_service(Path({data!r}), {url!r}, start=False)
add_image = jobs.store.add_image

def killed(**fields):
    if {after_row}:
        add_image(**fields)
    os.kill(os.getpid(), signal.SIGKILL)

jobs.store.add_image = killed
jobs.start()
signal.pause()
"""


@pytest.mark.parametrize("after_row", [False, True], ids=["before-its-row", "after-its-row"])
def test_faults_killed_between_a_pictures_file_and_its_row_leaves_no_orphan(comfyui, tmp_path,
                                                                             after_row):
    import subprocess
    import sys

    from studio.store.db import Store

    data = tmp_path / "data"
    store = Store.open(data / "studio.db")
    job, item, _refs = left_behind(comfyui, store)
    store.close()
    child = subprocess.run([sys.executable, "-c", KILLED_AT_THE_SEAM.format(
        root=str(ROOT), data=str(data), url=comfyui.url, after_row=after_row)],
        cwd=ROOT, timeout=WAIT * 2, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    # Killed at the seam: the picture and its thumbnail are on disk under pending names.
    assert len(list((data / "outputs").rglob(".*.pending"))) == 2
    assert len(read_db(data, "SELECT id FROM images")) == (1 if after_row else 0)

    jobs = image_service(data, comfyui.url)  # the studio starts again
    try:
        final = finish(jobs, jobs.get(job.id))[-1]
        assert (final.status, final.done, len(final.images)) == ("done", 1, 1)
        [(_pid, _name, path)] = no_duplicates(data)  # one row, one file: no orphan
        [thumb] = read_db(data, "SELECT thumb FROM images")[0]
        assert (data / "outputs" / thumb).is_file()
        assert not list((data / "outputs").rglob(".*"))  # nothing pending is left
        # A picture whose row was stored is kept (named at start-up), not fetched again.
        assert len(comfyui.requests_to("/view")) == (1 if after_row else 2)
        assert len(comfyui.requests_to("/prompt", "POST")) == 1
    finally:
        jobs.close(cancel=True)
        jobs.store.store.close()


# --------------------------------------------------------------------------- SIGKILL


def prepare_data(tmp: Path) -> str:
    """A data folder with an admin (no image limit) and their API key; returns the key."""
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.store.db import Store

    store = Store.open(tmp / "data" / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    _, key = ApiKeys(store).create("ann", "kill test")
    store.close()
    return key


def read_db(data_dir: Path, sql: str, params=()) -> list[tuple]:
    """Read the studio's database from outside (WAL: readers never block the studio)."""
    con = sqlite3.connect(f"file:{data_dir / 'studio.db'}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def items_of(data_dir: Path) -> list[tuple]:
    return read_db(data_dir, "SELECT seq, status, prompt_id, images FROM image_job_items "
                             "ORDER BY seq")


def generate_in_background(url: str, key: str, n: int) -> threading.Thread:
    """POST /v1/images/generations on a thread; the request dies with the studio."""
    def post() -> None:
        try:
            httpx.post(url + "v1/images/generations", timeout=WAIT * 2,
                       headers={"Authorization": f"Bearer {key}"},
                       json={"prompt": "a lighthouse", "n": n, "size": "64x64", "steps": 3,
                             "response_format": "b64_json"})
        except httpx.HTTPError:
            pass  # the studio was killed under it: that is the point

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def kill(studio) -> None:
    os.kill(studio.process.pid, signal.SIGKILL)
    studio.process.wait(WAIT)


def stop(studio) -> None:
    studio.process.terminate()
    try:
        studio.process.wait(10)
    except Exception:  # noqa: BLE001 - a test must never leave the process behind
        studio.process.kill()


def no_duplicates(data_dir: Path) -> list[tuple]:
    """Every gallery row once per ComfyUI file, and one file (plus thumbnail) per row."""
    rows = read_db(data_dir, "SELECT comfy_prompt_id, comfy_filename, path FROM images")
    assert len({(pid, name) for pid, name, _ in rows}) == len(rows), rows
    pngs = sorted(str(p.relative_to(data_dir / "outputs"))
                  for p in (data_dir / "outputs").rglob("*.png"))
    assert pngs == sorted(path for _, _, path in rows)
    return rows


@pytest.fixture
def slow_comfyui():
    with FakeComfyUI(step_delay=0.02) as fake:
        yield fake


def test_faults_studio_killed_while_an_image_runs_finds_it_on_restart(tmp_path, slow_comfyui):
    key = prepare_data(tmp_path)
    env = {"COMFYUI_URL": slow_comfyui.url}
    ollama = f"http://127.0.0.1:{free_port()}"
    slow_comfyui.pause_after_step(1)
    studio = start_studio(tmp_path, ollama, env)
    try:
        generate_in_background(studio.url, key, n=1)
        assert slow_comfyui.wait_paused(WAIT)
        [(_, status, prompt_id, _)] = items_of(studio.data_dir)
        assert prompt_id and status in ("queued", "running")
        kill(studio)
    finally:
        stop(studio)

    slow_comfyui.resume()  # ComfyUI finishes the image while no studio listens
    assert slow_comfyui.wait_idle(WAIT)
    studio = start_studio(tmp_path, ollama, env)
    try:
        wait_equal(lambda: read_db(studio.data_dir, "SELECT status FROM image_jobs"), [("done",)])
        assert items_of(studio.data_dir) == [(1, "done", prompt_id, 1)]
        [(pid, _, _)] = no_duplicates(studio.data_dir)
        assert pid == prompt_id
        assert len(slow_comfyui.requests_to("/prompt", "POST")) == 1  # never sent twice
        assert "picking up image job" in studio.log()
    finally:
        stop(studio)


def test_faults_studio_killed_with_a_batch_half_done_finishes_it_once(tmp_path, slow_comfyui):
    key = prepare_data(tmp_path)
    # Two prompts in ComfyUI at once: at the kill one is running and one waits in its queue.
    env = {"COMFYUI_URL": slow_comfyui.url, "STUDIO_IMAGE_INFLIGHT": "2"}
    ollama = f"http://127.0.0.1:{free_port()}"
    slow_comfyui.pause_after_step(1, job=2)  # the first image finishes, the second holds
    studio = start_studio(tmp_path, ollama, env)
    try:
        generate_in_background(studio.url, key, n=4)
        assert slow_comfyui.wait_paused(WAIT)
        # One image stored, one running, one sent to ComfyUI's queue behind it, one not sent
        # yet (the first two go out together, in either order).
        wait_equal(lambda: sorted((st, bool(p), n) for _, st, p, n in items_of(studio.data_dir)),
                   [("done", True, 1), ("pending", False, 0), ("queued", True, 0),
                    ("running", True, 0)])
        wait_equal(lambda: len(slow_comfyui.requests_to("/prompt", "POST")), 3)
        before = no_duplicates(studio.data_dir)
        assert len(before) == 1
        kill(studio)
    finally:
        stop(studio)

    studio = start_studio(tmp_path, ollama, env)
    try:
        assert "picking up image job" in studio.log()
        slow_comfyui.resume()  # image 2 finishes now, image 3 runs after it
        wait_equal(lambda: read_db(studio.data_dir, "SELECT status FROM image_jobs"), [("done",)])
        items = items_of(studio.data_dir)
        assert [(seq, status, n) for seq, status, _, n in items] == [
            (1, "done", 1), (2, "done", 1), (3, "done", 1), (4, "done", 1)]
        rows = no_duplicates(studio.data_dir)
        assert len(rows) == 4 and before[0] in rows  # the image from before the kill is kept
        assert {pid for pid, _, _ in rows} == {pid for _, _, pid, _ in items}
        # Images 2 and 3 were followed, not sent again; only image 4 went out after restart.
        assert len(slow_comfyui.requests_to("/prompt", "POST")) == 4
    finally:
        stop(studio)
