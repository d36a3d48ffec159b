"""/healthz, /readyz, /status.json and /metrics of the running studio (in-process, 127.0.0.1)
with sign-in on, the fake Ollama up, the fake OpenRouter configured and ComfyUI down; and
the pure parts (readiness, the status document, the token check) on their own."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from starlette.requests import Request

from studio.costs.budget import CapStatus
from studio.models.gpu import GpuDevice, GpuReading
from studio.ops.health import readiness, status_document
from studio.ops.metrics import NO_TOKEN, token_refusal
from studio.ops.readings import Readings, StoreCheck
from studio.ops.status import BackendStatus
from tests.conftest import free_port, launch_in_process, running_fake_ollama
from tests.fakes.openrouter_server import DEFAULT_KEY, FakeOpenRouter
from tests.test_gpu import FakeNvml, pynvml

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio.access.users import Users
    from studio.store.db import Store

    data = tmp_path_factory.mktemp("ops")
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)  # sign-in is on
    store.close()
    ollama = running_fake_ollama()
    cloud = FakeOpenRouter().start()
    comfyui_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    running = launch_in_process(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url, "COMFYUI_URL": comfyui_url,
         "OPENROUTER_API_KEY": DEFAULT_KEY, "OPENROUTER_BASE_URL": cloud.url,
         "STUDIO_METRICS_TOKEN": TOKEN},
        nvml=FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))  # no GPU here
    yield {"url": running.url, "secrets": (ollama.url, comfyui_url, cloud.url, DEFAULT_KEY,
                                           str(data))}
    running.close()
    ollama.stop()
    cloud.stop()


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_healthz_answers_ok_without_signing_in(studio):
    response = httpx.get(studio["url"] + "/healthz")
    assert response.status_code == 200 and response.text == "ok"
    assert response.headers["content-type"].startswith("text/plain")


def test_readyz_is_degraded_when_a_backend_is_down(studio):
    response = httpx.get(studio["url"] + "/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    checks = body["checks"]
    assert set(checks) == {"store", "ollama", "comfyui", "openrouter"}
    assert checks["store"]["ok"] is True and checks["ollama"]["ok"] is True
    assert checks["ollama"]["latency_ms"] >= 0
    assert checks["comfyui"] == {"ok": False, "latency_ms": None}


def test_the_ops_routes_never_show_addresses_or_keys(studio):
    bodies = [httpx.get(studio["url"] + "/readyz").text,
              httpx.get(studio["url"] + "/status.json", headers=BEARER).text,
              httpx.get(studio["url"] + "/metrics", headers=BEARER).text]
    for body in bodies:
        for secret in studio["secrets"]:
            assert secret not in body
        assert "127.0.0.1" not in body and TOKEN not in body


@pytest.mark.parametrize("path", ["/status.json", "/metrics"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_status_and_metrics_need_the_token(studio, path, headers):
    response = httpx.get(studio["url"] + path, headers=headers)
    assert response.status_code == 401
    assert "STUDIO_METRICS_TOKEN" in response.json()["error"]


def test_status_json_has_the_tile_figures(studio):
    response = httpx.get(studio["url"] + "/status.json", headers=BEARER)
    assert response.status_code == 200
    body = response.json()
    assert body["backends"]["ollama"]["up"] is True
    assert body["backends"]["comfyui"] == {"up": False, "latency_ms": None}
    assert (body["backends_up"], body["backends_total"]) == (2, 3)
    assert body["gpu"] is None and body["gpus"] == []
    assert body["spend_today_usd"] == 0 and body["image_queue"] == 0
    assert body["active_replies"] == 0


def test_metrics_answer_the_prometheus_text_format(studio):
    response = httpx.get(studio["url"] + "/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert 'studio_backend_up{backend="ollama"} 1.0' in text
    assert 'studio_backend_up{backend="comfyui"} 0.0' in text
    assert "studio_store_up 1.0" in text
    assert 'studio_build_info{version="' in text
    assert "studio_outputs_disk_free_bytes " in text


# -- the pure parts ----------------------------------------------------------------------------


def backend(name: str, up: bool) -> BackendStatus:
    return BackendStatus(name, "reachable" if up else "unreachable", "http://10.0.0.5:1",
                         "connection failed to http://10.0.0.5:1", "advice",
                         latency_ms=3.0 if up else None)


@pytest.mark.parametrize("store_ok, ups, code, state", [
    (True, (True, True), 200, "ready"),
    (True, (True, False), 200, "degraded"),
    (False, (True, True), 503, "unready"),
    (False, (False, False), 503, "unready"),
])
def test_readiness_fails_only_on_the_store(store_ok, ups, code, state):
    backends = (backend("Ollama", ups[0]), backend("ComfyUI", ups[1]))
    status, body = readiness(StoreCheck(store_ok, 1.0), backends)
    assert (status, body["status"]) == (code, state)
    assert "10.0.0.5" not in str(body)


def test_store_ping_is_false_once_closed():
    from studio.store.db import Store

    store = Store.memory()
    assert store.ping() is True
    store.close()
    assert store.ping() is False


def readings(**changes) -> Readings:
    values = dict(store=StoreCheck(True, 0.5), backends=(backend("Ollama", True),),
                  gpu=GpuReading.unavailable(), spend_today_usd=Decimal("1.25"),
                  cloud_today_usd=Decimal("1"), budget_caps=(), image_queue=3,
                  active_replies=2, active_pulls=0, active_downloads=1,
                  disk_free_bytes=10, disk_total_bytes=100)
    values.update(changes)
    return Readings(**values)


def test_status_document_carries_the_first_gpu_and_the_caps():
    card = GpuDevice(index=0, name="RTX 3090", memory_used=6 * 2**30, memory_total=24 * 2**30,
                     utilization_gpu=40, temperature_c=61, power_w=215.5, power_limit_w=350.0)
    cap = CapStatus("all", "day", Decimal(10), Decimal(8), Decimal(1), "warning")
    body = status_document(readings(gpu=GpuReading(devices=(card,), available=True),
                                    budget_caps=(cap,)))
    assert body["gpu"]["memory_used_percent"] == 25.0 and body["gpu"]["temperature_c"] == 61
    assert body["budget_used"] == {"day": 0.9}
    assert (body["spend_today_usd"], body["image_queue"], body["active_replies"]) == (1.25, 3, 2)


def request(headers: dict) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/metrics",
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize("token, sign_in, headers, status", [
    ("", False, {}, None),  # a studio without sign-in: open, like its pages
    ("", True, {}, 403),  # sign-in on and no token set: say what to set
    ("", True, {"Authorization": "Bearer anything"}, 403),
    ("t0k", False, {}, 401),  # a token set is always asked for
    ("t0k", True, {"Authorization": "Bearer t0k"}, None),
    ("t0k", True, {"Authorization": "bearer  t0k "}, None),
    ("t0k", True, {"Authorization": "Bearer t0k2"}, 401),
])
def test_token_refusal(token, sign_in, headers, status):
    refusal = token_refusal(request(headers), token, sign_in)
    assert (refusal.status_code if refusal is not None else None) == status
    if status == 403:
        assert NO_TOKEN.encode() in refusal.body
