"""No monitoring summary per event while monitoring is off (studio/ui/queue_analytics.py):
events run as before, Gradio builds no pandas frame of its event record after each, and
with monitoring on it still does."""

from __future__ import annotations

import time

import gradio as gr
import pytest
from gradio.queueing import Queue
from gradio_client import Client

from studio.ui import queue_analytics
from tests.conftest import free_port, launch_in_process


@pytest.fixture
def frames(monkeypatch):
    """Counts the frames Gradio's summary builds (``Queue._get_df``, one per summary)."""
    built = []
    get_df = Queue._get_df

    def counted(records):
        built.append(len(records))
        return get_df(records)

    monkeypatch.setattr(Queue, "_get_df", staticmethod(counted))
    return built


def small_app(*, monitoring: bool):
    with gr.Blocks() as demo:
        box = gr.Number()
        gr.Button("d").click(lambda x: x * 2, box, box, api_name="double")
    assert queue_analytics.install(demo._queue)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1",
                server_port=free_port(), enable_monitoring=monitoring)
    return demo


def test_queue_analytics_monitoring_off_events_run_and_no_summary_is_built(frames):
    demo = small_app(monitoring=False)
    try:
        client = Client(demo.local_url, verbose=False)
        assert [client.predict(n, api_name="/double") for n in (1, 2, 3)] == [2, 4, 6]
        # Gradio asks for the summary after it answered: ask once more, as for a new event
        # (Gradio's own would build a frame now whether or not its calls had run yet).
        queue = demo._queue
        queue.events_recorded += 1
        assert queue.compute_analytics_summary(list(queue.event_analytics.values())) == {
            "functions": {}}
        assert frames == []
    finally:
        demo.close()


def test_queue_analytics_monitoring_on_gradio_still_summarises(frames):
    demo = small_app(monitoring=True)
    try:
        client = Client(demo.local_url, verbose=False)
        assert client.predict(5, api_name="/double") == 10
        # Gradio computes it after it answered: wait for it.
        functions = demo._queue.cached_event_analytics_summary["functions"]
        deadline = time.monotonic() + 10
        while "double" not in functions and time.monotonic() < deadline:
            time.sleep(0.02)
            functions = demo._queue.cached_event_analytics_summary["functions"]
        assert frames, "Gradio's summary was not computed with monitoring on"
        assert functions["double"]["total_requests"] == 1
        assert functions["double"]["success_rate"] == 1.0
    finally:
        demo.close()


def test_queue_analytics_refuses_a_queue_of_another_shape():
    class NotAQueue:
        compute_analytics_summary = None

    assert queue_analytics.install(NotAQueue()) is False


def test_queue_analytics_the_studios_queue_builds_no_summary(tmp_path, fake_ollama, frames):
    studio = launch_in_process({"STUDIO_DATA_DIR": str(tmp_path / "data"),
                                "OLLAMA_HOST": fake_ollama.url})
    try:
        queue = studio.demo._queue
        record = {"time": 0.0, "status": "success", "process_time": 0.01,
                  "function": "send", "session_hash": "abc"}
        queue.events_recorded += 1  # as a pushed event counts itself
        assert queue.compute_analytics_summary([record] * 50) == {"functions": {}}
        assert frames == []
    finally:
        studio.close()
