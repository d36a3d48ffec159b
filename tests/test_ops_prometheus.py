"""deploy/prometheus and deploy/grafana against the real tools: promtool checks the config and
the rules and runs the alert unit tests; a real Prometheus scrapes a studio running in this
process (sign-in on, token set, a fake GPU) after a few chats through /v1, and every query
of every dashboard panel must return data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.conftest import ROOT, free_port, launch_in_process, require_tool, running_fake_ollama
from tests.test_gpu import RTX_3090, FakeNvml

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "studio.json"
TOKEN = "prometheus-test-token-0123456789"
# What Grafana would put in for its variables over a short test.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "1s"}


@pytest.fixture
def prometheus_dir(tmp_path) -> Path:
    """deploy/prometheus copied beside a token file, as the owner sets it up."""
    folder = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, folder)
    (folder / "studio_metrics_token").write_text(TOKEN + "\n")
    return folder


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    tool = require_tool("/usr/bin/promtool", "prometheus")
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("check", "config", "prometheus.yml"),
                                  ("check", "rules", "alerts.yml"),
                                  ("test", "rules", "alerts_test.yml")])
def test_prometheus_files_pass_promtool(prometheus_dir, args):
    result = promtool(*args, cwd=prometheus_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_tests_cover_every_alert():
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if not case.get("exp_alerts")}
    assert alerts == firing == quiet


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, Grafana variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown Grafana variable in {expr}"
            found.append((panel["title"], expr))
    return found


def test_dashboard_uses_the_provisioned_datasource():
    datasource = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
                                 / "studio.yml").read_text())["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {datasource["uid"]}
    assert len(panel_queries()) >= 15


@pytest.fixture
def studio(tmp_path):
    from studio.access.keys import ApiKeys
    from studio.access.users import Users
    from studio.store.db import Store

    data = tmp_path / "data"
    data.mkdir()
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)  # sign-in is on
    _, key = ApiKeys(store).create("ann", "bench")
    store.close()
    ollama = running_fake_ollama()
    running = launch_in_process(
        {"STUDIO_DATA_DIR": str(data), "OLLAMA_HOST": ollama.url,
         "COMFYUI_URL": f"http://127.0.0.1:{free_port()}", "STUDIO_METRICS_TOKEN": TOKEN,
         "STUDIO_BUDGET_DAILY_USD": "5"},
        nvml=FakeNvml([RTX_3090]))
    yield running, ollama, openai.OpenAI(base_url=running.url + "/v1", api_key=key,
                                         max_retries=0)
    running.close()
    ollama.stop()


def start_prometheus(folder: Path, target: str) -> tuple[subprocess.Popen, str]:
    """The deploy config, scraping ``target`` every second; returns the process and its URL."""
    binary = require_tool("/usr/bin/prometheus", "prometheus")
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (folder / "test.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'test.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("w"))
    return process, f"http://127.0.0.1:{port}"


def query(url: str, expr: str) -> list[dict]:
    response = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=5)
    assert response.status_code == 200, f"{expr}: {response.text}"
    return response.json()["data"]["result"]


def wait_for(url: str, expr: str, deadline: float) -> list[dict]:
    while time.monotonic() < deadline:
        try:
            found = query(url, expr)
        except httpx.HTTPError:
            found = []
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"Prometheus had no data for {expr} in time")


def chat(client: openai.OpenAI, ollama, n: int) -> None:
    for _ in range(n):
        ollama.queue_reply(ollama.make_tokens(20), delay=0.002)
        answer = client.chat.completions.create(model="ollama:llama3.2:latest",
                                                messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content


def test_dashboard_queries_return_data_from_a_real_prometheus(studio, prometheus_dir):
    running, ollama, client = studio
    deadline = time.monotonic() + 50
    process, url = start_prometheus(prometheus_dir, running.url.removeprefix("http://"))
    try:
        wait_for(url, 'up{job="studio"} == 1', deadline)  # the token was accepted
        # Two rounds with a scrape between them, so counters and histograms grow inside the
        # rate window (a series first seen with its count already there has no rate yet).
        chat(client, ollama, 2)
        ollama.queue_reply("x", status_error=(400, "the fake refuses this one"))
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model="ollama:llama3.2:latest",
                                           messages=[{"role": "user", "content": "fail"}])
        wait_for(url, "studio_time_to_first_token_seconds_count > 0", deadline)
        chat(client, ollama, 2)
        wait_for(url, "increase(studio_time_to_first_token_seconds_count[1m]) > 0", deadline)
        time.sleep(2.5)  # two more scrapes after the last chat
        empty = []
        for title, expr in panel_queries():
            values = [float(r["value"][1]) for r in query(url, expr)]
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{title}: {expr} -> {values}")
        assert not empty, "\n".join(empty)
        assert query(url, 'studio_errors_total{kind="api"}'), "the failed chat was not counted"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
