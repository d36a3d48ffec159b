"""The deployment files: the Dockerfile (read, since CI has no Docker engine), the compose
file through `docker-compose config`, and deploy/Caddyfile through `caddy validate` and a
real Caddy on 127.0.0.1 in front of a real studio, the fake ComfyUI and headless chromium."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websocket
import yaml

from studio.access.web import SESSION_COOKIE
from studio.config import Settings
from tests.conftest import (ROOT, free_port, require_tool, running_fake_ollama, start_studio,
                            stop_studio)
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import make_tokens
from tests.test_browser_access import (PASSWORD, add_user, fresh_page,  # noqa: F401 (a fixture)
                                       wait_for_models)
from tests.test_browser_chat import send, wait_chat_contains
from tests.test_browser_images import generate, open_images

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
HOMELAB_WEB = DEPLOY / "docker-compose.homelab-web.yml"
CADDYFILE = DEPLOY / "Caddyfile"
SETTING_NAMES = {f.metadata["env"] for f in fields(Settings)}
# What the studio needs to be told in a container: listen beyond loopback, keep its state in
# the volume, find its two backends and ComfyUI's model folder.
REQUIRED_IN_COMPOSE = {"GRADIO_SERVER_NAME", "STUDIO_DATA_DIR", "OLLAMA_HOST", "COMFYUI_URL",
                       "COMFYUI_MODELS_DIR"}


# -- Dockerfile -------------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def instruction(stage, name: str) -> list[str]:
    return [args for inst, args in stage if inst == name]


def env_of(stage) -> dict[str, str]:
    found = {}
    for args in instruction(stage, "ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            found[key] = value
    return found


def test_dockerfile_builds_wheels_apart_and_ships_no_compiler():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "the Dockerfile should build wheels in a stage of its own"
    assert any("pip wheel" in args for args in instruction(stages[0], "RUN"))
    final = " ".join(args for _, args in final_stage()).lower()
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install"):
        assert tool not in final, f"the final stage mentions {tool!r}"
    assert re.search(r"python:3\.11-slim", (ROOT / "Dockerfile").read_text())


def test_dockerfile_compiles_the_studio_it_copied():
    """The image carries the studio's bytecode: with PYTHONDONTWRITEBYTECODE nothing would
    write it at run time, and every start would compile the package from source."""
    stage = final_stage()
    assert env_of(stage).get("PYTHONDONTWRITEBYTECODE") == "1"
    copied_at = next(i for i, (inst, args) in enumerate(stage)
                     if inst == "COPY" and args.split()[0] == "studio")
    compiled_at = [i for i, (inst, args) in enumerate(stage)
                   if inst == "RUN" and re.search(r"compileall\b.*\bstudio\b", args)]
    assert compiled_at and compiled_at[0] > copied_at, "compile the studio after copying it"


def test_dockerfile_runs_as_a_user_other_than_root():
    users = instruction(final_stage(), "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_healthcheck_asks_healthz_with_python():
    checks = instruction(final_stage(), "HEALTHCHECK")
    assert len(checks) == 1
    assert "/healthz" in checks[0] and '"python"' in checks[0] and "curl" not in checks[0]


def test_dockerfile_port_data_volume_and_command_match_the_settings():
    stage = final_stage()
    env = env_of(stage)
    assert instruction(stage, "EXPOSE") == [str(Settings().port)]
    assert env["GRADIO_SERVER_PORT"] == str(Settings().port)
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert f'"{env["STUDIO_DATA_DIR"]}"' in instruction(stage, "VOLUME")[0]
    assert instruction(stage, "CMD") == ['["python", "app.py"]']
    studio_env = {k for k in env if k.startswith(("STUDIO_", "GRADIO_SERVER", "OLLAMA_",
                                                   "COMFYUI_", "OPENROUTER_"))}
    assert studio_env <= SETTING_NAMES, studio_env - SETTING_NAMES


def test_dockerfile_copies_what_the_app_needs_and_dockerignore_keeps_secrets_out():
    copied = [args.split()[0] for args in instruction(final_stage(), "COPY")
              if not args.startswith("--from")]
    for path in copied:
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which doesn't exist"
    assert {"app.py", "studio", "assets", "presets", "workflows"} <= set(copied)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for secret in (".env", ".git", ".venv", "data"):
        assert secret in ignored, f".dockerignore should leave out {secret}"
    for needed in copied + ["pyproject.toml", "README.md"]:
        assert needed not in ignored, f".dockerignore leaves out {needed}, which the build copies"


# -- docker compose ---------------------------------------------------------------------

def compose_config(*args: str, files=(COMPOSE,)) -> dict:
    tool = require_tool("/usr/bin/docker-compose", "docker-compose")
    command = [tool, *[a for f in files for a in ("-f", str(f))], *args, "config"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=DEPLOY,
                          env={k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"})
    assert done.returncode == 0, f"docker-compose config failed: {done.stderr}"
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def compose():
    return compose_config()


def gpu_devices(service: dict) -> list:
    return service["deploy"]["resources"]["reservations"]["devices"]


def test_compose_is_valid_with_and_without_profiles():
    plain = compose_config()
    with_profiles = compose_config("--profile", "caddy", "--profile", "monitoring")
    assert {"ollama", "comfyui", "studio"} <= set(plain["services"])
    assert {"caddy", "prometheus", "grafana"} <= set(with_profiles["services"])
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    assert raw["caddy"]["profiles"] == ["caddy"]
    assert raw["prometheus"]["profiles"] == raw["grafana"]["profiles"] == ["monitoring"]
    assert not any("profiles" in raw[name] for name in ("ollama", "comfyui", "studio"))


def ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address, published, target) of each port; `config` writes them long (compose v2)
    or short ("127.0.0.1:8188:8188/tcp", docker-compose 1.29)."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        parts = port.split("/")[0].split(":")
        host = parts[0] if len(parts) == 3 else ""
        found.append((host, int(parts[-2]), int(parts[-1])))
    return found


def test_compose_follows_the_port_plan(compose):
    services = compose["services"]
    plan = {"ollama": 11434, "comfyui": 8188, "studio": Settings().port}
    for name, port in plan.items():
        assert [(published, target) for _, published, target in ports(services[name])] == [
            (port, port)], name
    # No sign-in on Ollama and ComfyUI: this box only, unless the owner says otherwise.
    for name in ("ollama", "comfyui"):
        assert all(host == "127.0.0.1" for host, _, _ in ports(services[name])), name


def test_compose_gives_the_gpu_to_ollama_comfyui_and_the_studio(compose):
    for name in ("ollama", "comfyui", "studio"):
        [device] = gpu_devices(compose["services"][name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert device["count"] in ("all", -1), name  # compose v2 writes "all" as -1


def test_compose_healthchecks_and_start_order(compose):
    services = compose["services"]
    for name in ("ollama", "comfyui", "studio"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["studio"]["healthcheck"]["test"])
    assert services["studio"]["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert services["studio"]["depends_on"]["comfyui"]["condition"] == "service_healthy"


def test_compose_studio_settings_are_real_and_complete(compose):
    environment = compose["services"]["studio"]["environment"]
    unknown = set(environment) - SETTING_NAMES
    assert not unknown, f"the compose file sets {unknown}, which studio/config.py doesn't know"
    assert REQUIRED_IN_COMPOSE <= set(environment)
    Settings.from_env({k: str(v) for k, v in environment.items() if v is not None},
                      dotenv_path=None)  # valid values
    assert environment["GRADIO_SERVER_NAME"] == "0.0.0.0"


def volumes(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each mount, from the long or the short ("src:dst:rw") form."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            found.append((source, target))
    return found


def mounts(service: dict) -> dict[str, str]:
    """{volume name: target} for the named volumes of a service."""
    return {source: target for source, target in volumes(service) if not source.startswith("/")}


def test_compose_volumes_keep_models_outputs_and_data(compose):
    services = compose["services"]
    assert "ollama-models" in mounts(services["ollama"])
    comfyui = mounts(services["comfyui"])
    assert comfyui["comfyui-models"].endswith("/models")
    assert comfyui["comfyui-output"].endswith("/output")
    studio = mounts(services["studio"])
    environment = services["studio"]["environment"]
    assert studio["studio-data"] == environment["STUDIO_DATA_DIR"]
    # Model downloads from the Models tab land in ComfyUI's models volume.
    assert studio["comfyui-models"] == environment["COMFYUI_MODELS_DIR"]
    assert {"ollama-models", "comfyui-models", "comfyui-output", "studio-data"} <= set(
        compose["volumes"])


def test_compose_monitoring_mounts_the_prometheus_and_grafana_folders():
    services = compose_config("--profile", "monitoring")["services"]
    sources = {Path(source).relative_to(DEPLOY).parts[0]
               for name in ("prometheus", "grafana") for source, _ in volumes(services[name])
               if source.startswith("/")}
    assert sources == {"prometheus", "grafana"}


def test_compose_homelab_web_network_is_optional_and_external():
    assert "homelab-web" not in compose_config().get("networks", {})
    joined = compose_config(files=(COMPOSE, HOMELAB_WEB))
    assert joined["networks"]["homelab-web"]["external"] is True
    assert {"default", "homelab-web"} <= set(joined["services"]["studio"]["networks"])
    assert "homelab-web" not in joined["services"]["ollama"].get("networks", {})


def test_compose_caddy_is_the_proxy_the_studio_trusts():
    services = compose_config("--profile", "caddy")["services"]
    address = services["caddy"]["networks"]["default"]["ipv4_address"]
    assert services["studio"]["environment"]["STUDIO_TRUSTED_PROXIES"] == address
    assert {"STUDIO_HOST", "COMFYUI_HOST"} <= set(services["caddy"]["environment"])


def test_compose_variables_are_listed_in_the_env_example():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = (DEPLOY / ".env.example").read_text()
    missing = {name for name in used if f"{name}=" not in example}
    assert not missing, f"deploy/.env.example doesn't mention {missing}"


# -- Caddy ------------------------------------------------------------------------------

def caddy_env(tmp: Path, **values: str) -> dict:
    """Caddy's environment: the Caddyfile's variables, and its own state under ``tmp``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("STUDIO_HOST", "COMFYUI_HOST", "SITE_SCHEME")}
    env.update(HOME=str(tmp), XDG_DATA_HOME=str(tmp / "data"),
               XDG_CONFIG_HOME=str(tmp / "config"), **values)
    return env


def test_caddyfile_is_valid(tmp_path):
    caddy = require_tool("/usr/bin/caddy", "caddy")
    done = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60,
        env=caddy_env(tmp_path, STUDIO_HOST="ai.example.com", COMFYUI_HOST="comfyui.example.com"))
    assert done.returncode == 0, done.stderr
    text = CADDYFILE.read_text()
    assert "{$STUDIO_HOST:ai.example.com}" in text and "{$COMFYUI_HOST:comfyui.example.com}" in text
    assert "flush_interval -1" in text and "forward_auth" in text and "/auth/admin" in text


# Everything the test changes is in the global options: plain HTTP, no admin endpoint, and
# every site on loopback. The sites themselves are deploy/Caddyfile's, word for word.
TEST_GLOBALS = """{
	auto_https off
	admin off
	default_bind 127.0.0.1
}

"""


class Proxied:
    """Caddy on 127.0.0.1 with the two sites of deploy/Caddyfile, in front of a studio with
    users (ann admin, bob not) and the fake ComfyUI. The browser reaches them by name:
    chromium resolves *.localhost to loopback, and the cookie domain is studio.localhost."""

    def __init__(self, tmp: Path):
        caddy = require_tool("/usr/bin/caddy", "caddy")
        self.ollama = running_fake_ollama()
        self.comfyui = FakeComfyUI(step_delay=0.08).start()
        for name, admin in (("ann", True), ("bob", False)):
            add_user(tmp / "data", name, admin)
        self.studio = start_studio(tmp, self.ollama.url, {
            "COMFYUI_URL": self.comfyui.url, "STUDIO_COOKIE_DOMAIN": "studio.localhost"})
        self.port = free_port()
        self.studio_host = f"ai.studio.localhost:{self.port}"
        self.comfyui_host = f"comfyui.studio.localhost:{self.port}"
        config = tmp / "Caddyfile"
        config.write_text(TEST_GLOBALS + CADDYFILE.read_text())
        self.log_path = tmp / "caddy.log"
        self.caddy = subprocess.Popen(
            [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            env=caddy_env(tmp, SITE_SCHEME="http", STUDIO_HOST=self.studio_host,
                          COMFYUI_HOST=self.comfyui_host,
                          STUDIO_UPSTREAM=self.studio.url.split("//")[1].rstrip("/"),
                          COMFYUI_UPSTREAM=self.comfyui.url.split("//")[1].rstrip("/")))
        self.studio_url = f"http://{self.studio_host}/"
        self.comfyui_url = f"http://{self.comfyui_host}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.get(self.studio_host, "/signin").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.caddy.poll() is None, f"Caddy stopped:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"Caddy didn't answer:\n{self.log_path.read_text()}"
            time.sleep(0.1)

    def get(self, host: str, path: str, **kwargs) -> httpx.Response:
        """A request through Caddy on loopback for ``host`` (httpx can't resolve *.localhost)."""
        headers = {"host": host, **kwargs.pop("headers", {})}
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10,
                         **kwargs)

    def session(self, name: str) -> str:
        signed = httpx.post(f"http://127.0.0.1:{self.port}/signin",
                            headers={"host": self.studio_host},
                            data={"username": name, "password": PASSWORD[name]}, timeout=10)
        assert signed.status_code == 303, signed.text
        cookie = signed.headers["set-cookie"]
        assert "Domain=studio.localhost" in cookie, cookie
        # Read from the header: httpx's jar won't keep a studio.localhost cookie for 127.0.0.1.
        return re.match(rf"{SESSION_COOKIE}=([^;]+)", cookie).group(1)

    def stop(self) -> None:
        self.caddy.terminate()
        try:
            self.caddy.wait(10)
        except subprocess.TimeoutExpired:
            self.caddy.kill()
        stop_studio(self.studio)
        self.comfyui.stop()
        self.ollama.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    running = Proxied(tmp_path_factory.mktemp("caddy"))
    yield running
    running.stop()


def sign_in_through(page, proxied: Proxied, name: str) -> None:
    page.wait_for_selector("#signin-form")
    page.fill("#username", name)
    page.fill("#password", PASSWORD[name])
    page.click("#signin-button")


def open_signed_in(page, proxied: Proxied, name: str) -> None:
    """The studio's page through Caddy, signed in as ``name``, its model list filled."""
    page.goto(proxied.studio_url)
    sign_in_through(page, proxied, name)
    page.wait_for_selector("#chat-input textarea")
    wait_for_models(page)


@pytest.mark.browser
def test_caddy_browser_signs_in_and_sees_a_reply_stream(proxied, fresh_page):
    page = fresh_page
    open_signed_in(page, proxied, "bob")
    tokens = make_tokens(40)
    proxied.ollama.queue_reply(tokens, delay=0.05)
    send(page, f"through caddy {uuid.uuid4().hex[:6]}")
    wait_chat_contains(page, tokens[2].strip())
    # The text comes over the page's own channel (its quick send's answer, ui/chat_quick.py),
    # through Caddy as well: drawn by the page, in the turn it draws itself until Gradio's
    # update shows it (under load, the whole reply may come before that), then in Gradio's.
    page.wait_for_function("(t) => [...document.querySelectorAll("
                           "'#chatbot .studio-live-text, #chatbot .studio-pending')]"
                           ".some((o) => o.innerText.includes(t))", arg=tokens[10].strip())
    # Part of the reply is on screen while the rest is still being generated: Caddy passes
    # the stream on as it comes.
    assert tokens[-1].strip() not in page.inner_text("#chatbot")
    wait_chat_contains(page, tokens[-1].strip())


@pytest.mark.browser
def test_caddy_browser_sees_image_progress(proxied, fresh_page):
    page = fresh_page
    open_signed_in(page, proxied, "ann")
    open_images(page, SimpleNamespace(url=proxied.studio_url))
    generate(page, f"a fox behind a proxy {uuid.uuid4().hex[:6]}", 30)
    page.wait_for_function("() => +document.querySelector('#img-progress .img-progress')"
                           ".dataset.step >= 2")
    page.wait_for_function("() => document.querySelector('#img-progress').innerText"
                           ".includes('Done: 1 image.')", timeout=30_000)
    page.wait_for_selector("#img-results img")
    assert page.get_attribute("#img-results img", "src").startswith(proxied.studio_url.rstrip("/"))


@pytest.mark.browser
def test_caddy_browser_comfyui_opens_after_an_admin_signs_in(proxied, fresh_page):
    page = fresh_page
    page.goto(proxied.comfyui_url + "system_stats")
    # A visitor lands on the studio's sign-in, and comes back to ComfyUI afterwards.
    page.wait_for_selector("#signin-form")
    assert page.url.startswith(proxied.studio_url + "signin")
    sign_in_through(page, proxied, "ann")
    page.wait_for_url(proxied.comfyui_url + "system_stats")
    assert '"system"' in page.inner_text("body")


@pytest.mark.browser
def test_caddy_browser_comfyui_stays_shut_for_a_plain_user(proxied, fresh_page):
    page = fresh_page
    page.goto(proxied.comfyui_url + "system_stats")
    sign_in_through(page, proxied, "bob")
    page.wait_for_selector("text=Only an admin can open ComfyUI")
    assert '"system"' not in page.inner_text("body")


def test_caddy_comfyui_refuses_a_visitor_and_lets_an_admin_through(proxied):
    host = proxied.comfyui_host
    before = len(proxied.comfyui.requests_to("/system_stats"))
    visitor = proxied.get(host, "/system_stats")
    assert visitor.status_code == 303
    assert visitor.headers["location"] == (
        f"{proxied.studio_url}signin?next=http://{host}/system_stats")
    plain = proxied.get(host, "/system_stats",
                        headers={"cookie": f"{SESSION_COOKIE}={proxied.session('bob')}"})
    assert plain.status_code == 403 and "Only an admin" in plain.text
    assert len(proxied.comfyui.requests_to("/system_stats")) == before
    admin = proxied.get(host, "/system_stats",
                        headers={"cookie": f"theme=dark; {SESSION_COOKIE}={proxied.session('ann')}"})
    assert admin.status_code == 200 and "system" in admin.json()
    seen = proxied.comfyui.requests_to("/system_stats")[-1].headers
    cookie = next(v for k, v in seen.items() if k.lower() == "cookie")
    assert "theme=dark" in cookie and re.search(rf"{SESSION_COOKIE}=(;|$)", cookie), cookie


def test_caddy_comfyui_websocket_only_for_an_admin(proxied):
    host = proxied.comfyui_host
    handshake = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
                 "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "origin": f"http://{host}"}
    assert proxied.get(host, "/ws", headers=handshake).status_code == 303
    socket = websocket.create_connection(
        f"ws://127.0.0.1:{proxied.port}/ws?clientId=caddy-test", host=host,
        origin=f"http://{host}", cookie=f"{SESSION_COOKIE}={proxied.session('ann')}", timeout=10)
    try:
        assert '"status"' in socket.recv()
    finally:
        socket.close()
    # Another site's page can't use an admin's cookie on ComfyUI's socket.
    evil = proxied.get(host, "/ws", headers={
        **handshake, "origin": "https://evil.example",
        "cookie": f"{SESSION_COOKIE}={proxied.session('ann')}"})
    assert evil.status_code == 403
