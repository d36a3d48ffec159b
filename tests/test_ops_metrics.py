"""studio.ops.metrics: what each settled reply and finished image job counts, labels that
stay bounded, and the scrape-time gauges from one set of readings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from studio.chat.replies import ReplyManager, ReplySnapshot
from studio.chat.streams import record_usage
from studio.costs.budget import CapStatus
from studio.errors import BackendUnavailable
from studio.events import ChatDelta, ChatDone, ChatOptions, Usage
from studio.images.live_job import FinishedJob
from studio.models.gpu import GpuDevice, GpuReading
from tests.test_chat_service import database, ollama  # noqa: F401 - fixtures
from studio.ops.metrics import StudioMetrics
from tests.test_ops_health import readings


def snapshot(**changes) -> ReplySnapshot:
    values = dict(reply_id="r1", conversation_id="c-secret", message_id=7,
                  model_id="ollama:llama3.2:latest", text="hi", thinking="", notices=(),
                  status="complete", error="", ttft_ms=250.0, elapsed_ms=2000.0,
                  usage=Usage(prompt_tokens=12, completion_tokens=30), backend="ollama",
                  answered_by="llama3.2:latest", version=3, via="")
    values.update(changes)
    return ReplySnapshot(**values)


class Row:
    cost_usd = 0.002


def sample(metrics: StudioMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_metrics_a_reply_counts_its_kind_timings_tokens_and_cost():
    metrics = StudioMetrics(version="9.9")
    model = {"backend": "ollama", "model": "llama3.2:latest"}
    metrics.observe_reply(snapshot(), Row())
    metrics.observe_reply(snapshot(via="api: laptop", ttft_ms=None), None)
    assert sample(metrics, "studio_requests_total", kind="chat_page") == 1
    assert sample(metrics, "studio_requests_total", kind="api") == 1
    assert sample(metrics, "studio_time_to_first_token_seconds_count", **model) == 1
    assert sample(metrics, "studio_time_to_first_token_seconds_sum", **model) == 0.25
    assert sample(metrics, "studio_reply_duration_seconds_count", **model) == 2
    assert sample(metrics, "studio_tokens_total", direction="in", **model) == 24
    assert sample(metrics, "studio_tokens_total", direction="out", **model) == 60
    assert sample(metrics, "studio_cost_usd_total", **model) == pytest.approx(0.002)
    assert sample(metrics, "studio_build_info", version="9.9") == 1


def test_metrics_a_failed_reply_counts_its_error_class_and_no_model():
    metrics = StudioMetrics()
    metrics.observe_reply(snapshot(status="error", text="", backend="",
                                   answered_by="ollama:whatever-someone-typed",
                                   failure_kind="ModelNotFound"), None)
    metrics.observe_reply(snapshot(status="error", failure_kind="NotAStudioErrorName"), None)
    assert sample(metrics, "studio_errors_total", kind="chat_page", error="ModelNotFound") == 1
    assert sample(metrics, "studio_errors_total", kind="chat_page", error="Other") == 1
    text = metrics.exposition(readings()).decode()
    assert "whatever-someone-typed" not in text and "NotAStudioErrorName" not in text
    assert "c-secret" not in text  # no conversation ids


def test_metrics_image_jobs_count_by_outcome():
    metrics = StudioMetrics()
    for status in ("done", "done", "failed"):
        metrics.observe_image_job(FinishedJob("j", "ann", "sdxl", "m", status, 1, 2.0))
    assert sample(metrics, "studio_image_jobs_total", outcome="done") == 2
    assert sample(metrics, "studio_image_jobs_total", outcome="failed") == 1
    assert sample(metrics, "studio_requests_total", kind="image") == 3


def test_metrics_state_gauges_come_from_the_readings():
    metrics = StudioMetrics()
    card = GpuDevice(index=1, name="RTX", memory_used=6 * 2**30, memory_total=24 * 2**30,
                     utilization_gpu=37, temperature_c=61, power_w=215.5, power_limit_w=None)
    cap = CapStatus("all", "month", Decimal(20), Decimal(15), Decimal(1), "ok")
    text = metrics.exposition(readings(gpu=GpuReading(devices=(card,), available=True),
                                       budget_caps=(cap,))).decode()
    for line in ('studio_gpu_memory_used_bytes{gpu="1"} 6.442450944e+09',
                 'studio_gpu_temperature_celsius{gpu="1"} 61.0',
                 'studio_gpu_power_watts{gpu="1"} 215.5',
                 'studio_budget_used_ratio{period="month"} 0.8',
                 'studio_backend_up{backend="ollama"} 1.0',
                 "studio_image_queue_depth 3.0", "studio_active_replies 2.0",
                 "studio_outputs_disk_free_bytes 10.0", "studio_spend_today_usd 1.25"):
        assert line in text
    assert "studio_gpu_" not in metrics.exposition(readings()).decode().replace(
        "# HELP studio_gpu_", "").replace("# TYPE studio_gpu_", "")


def test_metrics_are_fed_by_the_settled_hook_of_real_replies():
    metrics = StudioMetrics()

    class Ledger:
        def record_chat(self, *args, **kwargs):
            return Row()

    def stream(model_id, messages, options, *, user):
        if model_id.endswith("down"):
            raise BackendUnavailable("Can't reach Ollama.")
        yield ChatDelta("hello")
        yield ChatDone(backend="ollama", model="llama3.2:latest",
                       usage=Usage(prompt_tokens=3, completion_tokens=1))

    replies = ReplyManager(stream, on_settled=record_usage(Ledger(),
                                                           observe=metrics.observe_reply))
    for model in ("ollama:llama3.2:latest", "ollama:down"):
        assert replies.start(model, [], ChatOptions()).settled.wait(5)
    assert sample(metrics, "studio_requests_total", kind="chat_page") == 2
    assert sample(metrics, "studio_errors_total", kind="chat_page",
                  error="BackendUnavailable") == 1
    assert sample(metrics, "studio_tokens_total", backend="ollama", model="llama3.2:latest",
                  direction="out") == 1


def test_metrics_count_requests_the_chat_service_refuses(store, tmp_path, ollama):  # noqa: F811
    from studio.access.limits import Limits
    from studio.errors import InvalidInput, LimitReached
    from studio.events import ChatMessage
    from tests.test_chat_service import LOCAL, make_service

    metrics = StudioMetrics()
    chat = make_service(store, tmp_path, ollama)
    chat._on_refused = metrics.observe_refusal
    chat._limits = Limits(chat_per_minute=1)
    with pytest.raises(InvalidInput):
        chat.complete([ChatMessage("user", "hi")], model="nonsense", user="bob", via="api: k")
    chat.complete([ChatMessage("user", "hi")], model=LOCAL, user="bob", via="api: k")
    with pytest.raises(LimitReached):
        chat.send(None, "again", model=LOCAL, user="bob")
    assert sample(metrics, "studio_errors_total", kind="api", error="InvalidInput") == 1
    assert sample(metrics, "studio_errors_total", kind="chat_page", error="LimitReached") == 1
    assert sample(metrics, "studio_requests_total", kind="api") == 1  # the one refused
    assert sample(metrics, "studio_requests_total", kind="chat_page") == 1
