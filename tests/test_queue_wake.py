"""Gradio's queue woken by work (studio/ui/queue_wake.py): events still run, stream, wait
for their concurrency limit and report progress, and with nothing queued the dispatcher
and the progress loop sleep instead of looking every 1 / 10 ms."""

from __future__ import annotations

import threading
import time

import gradio as gr
import pytest
from gradio_client import Client

from studio.ui import queue_wake
from tests.conftest import free_port, launch_in_process


class _Counting:
    """Counts the reads of ``queue.stopped``: each loop of Gradio's dispatcher and progress
    updater reads it once per turn, so the count is how often they woke."""

    def __init__(self, queue) -> None:
        counter = self
        self.reads = 0
        base = type(queue)

        class Counted(base):  # type: ignore[misc, valid-type]
            @property
            def stopped(self):
                counter.reads += 1
                return self.__dict__["_stopped_value"]

            @stopped.setter
            def stopped(self, value):
                self.__dict__["_stopped_value"] = value

        queue.__dict__["_stopped_value"] = queue.__dict__.pop("stopped")
        queue.__class__ = Counted

    def over(self, seconds: float) -> int:
        start = self.reads
        time.sleep(seconds)
        return self.reads - start


def small_app(*, woken: bool):
    def double(x):
        return x * 2

    def count(n, progress=gr.Progress()):
        for i in progress.tqdm(range(int(n))):
            time.sleep(0.02)
            yield str(i)

    gate = threading.Event()

    def hold(x):
        gate.wait(10)
        return x

    with gr.Blocks() as demo:
        box, out = gr.Number(), gr.Textbox()
        gr.Button("d").click(double, box, box, api_name="double")
        gr.Button("c").click(count, box, out, api_name="count")
        gr.Button("h").click(hold, box, box, api_name="hold", concurrency_limit=1)
    if woken:
        assert queue_wake.install(demo._queue)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1",
                server_port=free_port())
    return demo, gate


@pytest.fixture
def woken_app():
    demo, gate = small_app(woken=True)
    yield demo, gate
    gate.set()
    demo.close()


def test_queue_wake_events_run_stream_and_wait_their_turn(woken_app):
    demo, gate = woken_app
    client = Client(demo.local_url, verbose=False)
    assert client.predict(21, api_name="/double") == 42
    # A generator with gr.Progress: every update arrives, in order, and so does the end.
    job = client.submit(5, api_name="/count")
    assert job.result(timeout=30) == "4"
    assert [str(i) for i in range(5)] == job.outputs()
    # concurrency_limit=1: the second waits for the first, then runs when its slot frees
    # (the wake-up a job's end gives), and an unlimited event is not held up meanwhile.
    first = client.submit(1, api_name="/hold")
    second = client.submit(2, api_name="/hold")
    time.sleep(0.3)
    assert not first.done() and not second.done()
    assert client.predict(4, api_name="/double") == 8
    gate.set()
    assert (first.result(timeout=30), second.result(timeout=30)) == (1, 2)


def test_queue_wake_idle_loops_sleep_where_gradios_poll(woken_app):
    polling, _ = small_app(woken=False)
    try:
        woken, _ = woken_app
        Client(woken.local_url, verbose=False).predict(1, api_name="/double")  # warmed up
        time.sleep(0.2)
        gradios, ours = _Counting(polling._queue), _Counting(woken._queue)
        # Gradio's loops look ~1,100 times a second; ours only at the 1 s backstop.
        assert gradios.over(0.5) > 100
        assert ours.over(0.5) <= 4
    finally:
        polling.close()


def test_queue_wake_refuses_a_queue_of_another_shape():
    class NotAQueue:
        start_processing = None

    assert queue_wake.install(NotAQueue()) is False


def test_queue_wake_the_studio_runs_on_the_woken_queue(tmp_path, fake_ollama):
    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url})
    try:
        time.sleep(1.0)  # start-up's one-off events are over
        counting = _Counting(studio.demo._queue)
        assert counting.over(1.0) <= 6
    finally:
        studio.close()
