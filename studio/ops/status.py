"""Reachability of each backend, for the status strip: reachable / unreachable / key rejected /
not configured.

Checks run in parallel with short timeouts and are cached for a few seconds, so many open
pages polling the strip cost the backends almost nothing. No gradio imports.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from html import escape
from typing import Callable

import httpx

from ..backends.hosts import host_label
from ..config import Settings


@dataclass(frozen=True)
class BackendStatus:
    name: str
    state: str  # reachable | unreachable | key rejected | not configured
    url: str
    detail: str  # version or what went wrong
    advice: str  # what to do, when not reachable
    # ComfyUI has no sign-in, so its address never reaches the page (issue 3); the strip
    # names the setting instead. Ollama and OpenRouter are shown with their URL.
    public: bool = True
    latency_ms: float | None = None  # how long the probe took to answer; None when unsent
    host: str = ""  # the host's name when the engine has several (OLLAMA_HOST, COMFYUI_URL)

    @property
    def label(self) -> str:
        """"Ollama", or "Ollama desk" for one of several hosts."""
        return f"{self.name} {self.host}" if self.host else self.name

    @property
    def up(self) -> bool:
        return self.state == "reachable"

    @property
    def configured(self) -> bool:
        return self.state != "not configured"

    @property
    def shown_url(self) -> str:
        if self.public:
            return self.url
        return f"{self.host} in COMFYUI_URL" if self.host else "the address in COMFYUI_URL"


def _probe(name: str, url: str, path: str, advice: str, timeout: float,
           headers: dict | None = None, version_of: Callable[[httpx.Response], str] | None = None,
           key_advice: str = "Check OPENROUTER_API_KEY.") -> BackendStatus:
    started = time.monotonic()
    try:
        resp = httpx.get(url.rstrip("/") + path, timeout=timeout, headers=headers or {})
    except httpx.TimeoutException:
        return BackendStatus(name, "unreachable", url, f"no answer within {timeout:g} s", advice)
    except httpx.HTTPError as exc:
        return BackendStatus(name, "unreachable", url, f"connection failed ({type(exc).__name__})",
                             advice)
    latency = round((time.monotonic() - started) * 1000, 1)
    if resp.status_code == 401:
        # It answered, so it is not "unreachable": the key is what to fix (issue 14).
        return BackendStatus(name, "key rejected", url, f"{name} refused the key (401)",
                             key_advice, latency_ms=latency)
    if resp.status_code >= 400:
        return BackendStatus(name, "unreachable", url, f"answered HTTP {resp.status_code}", advice,
                             latency_ms=latency)
    detail = ""
    if version_of is not None:
        try:
            detail = version_of(resp)
        except Exception:  # noqa: BLE001 - a version string is cosmetic
            detail = ""
    return BackendStatus(name, "reachable", url, detail, "", latency_ms=latency)


def check_ollama(settings: Settings, timeout: float = 1.5) -> BackendStatus | list[BackendStatus]:
    """One status, or one per host when OLLAMA_HOST lists several."""
    hosts = settings.ollama_hosts

    def probe(h) -> BackendStatus:
        return replace(_probe("Ollama", h.url, "/api/version",
                              "Start it with `ollama serve`, or set OLLAMA_HOST.", timeout,
                              headers={"Authorization": f"Bearer {h.key}"} if h.key else None,
                              version_of=lambda r: "v" + r.json()["version"],
                              key_advice="Check key= for it in OLLAMA_HOST."),
                       host=h.name if len(hosts) > 1 else "")

    if len(hosts) == 1:
        return probe(hosts[0])
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="status") as pool:
        return list(pool.map(probe, hosts))


def check_local_servers(settings: Settings, timeout: float = 1.5) -> list[BackendStatus]:
    """One status per server in STUDIO_OPENAI_SERVERS (none when it is empty)."""
    hosts = settings.openai_server_hosts

    def probe(h) -> BackendStatus:
        return replace(_probe("Local server", h.url, "/models",
                              "Start it, or check its address in STUDIO_OPENAI_SERVERS.",
                              timeout,
                              headers={"Authorization": f"Bearer {h.key}"} if h.key else None,
                              key_advice="Check key= for it in STUDIO_OPENAI_SERVERS."),
                       host=h.name)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="status") as pool:
        return list(pool.map(probe, hosts))


def check_comfyui(settings: Settings, timeout: float = 1.5) -> BackendStatus | list[BackendStatus]:
    """One status, or one per host when COMFYUI_URL lists several, each named by its name
    or its place in the list ("host 2"), never by its address."""
    hosts = settings.comfyui_hosts

    def probe(index_and_host) -> BackendStatus:
        index, h = index_and_host
        status = _probe("ComfyUI", h.url, "/system_stats",
                        "Start ComfyUI (`python main.py --listen`), or set COMFYUI_URL.",
                        timeout, version_of=lambda r: "v" + r.json()["system"]["comfyui_version"])
        return replace(status, public=False, host=host_label(h, index) if len(hosts) > 1 else "")

    if len(hosts) == 1:
        return probe((0, hosts[0]))
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="status") as pool:
        return list(pool.map(probe, enumerate(hosts)))


def check_openrouter(settings: Settings, timeout: float = 3.0) -> BackendStatus:
    if not settings.openrouter_api_key:
        return BackendStatus("OpenRouter", "not configured", settings.openrouter_base_url, "",
                             "Set OPENROUTER_API_KEY to use cloud models.")
    # The key goes in a header only; it is never part of what this returns.
    return _probe("OpenRouter", settings.openrouter_base_url, "/key",
                  "Check the network, or OPENROUTER_BASE_URL.", timeout,
                  headers={"Authorization": f"Bearer {settings.openrouter_api_key}"})


class StatusBoard:
    """Cached, parallel checks of every backend."""

    def __init__(self, settings: Settings, *, ttl: float = 10.0,
                 checks: tuple[Callable[[Settings], BackendStatus], ...] = (
                     check_ollama, check_comfyui, check_openrouter, check_local_servers)):
        self._settings = settings
        self._ttl = ttl
        self._checks = checks
        self._lock = threading.Lock()
        self._cached: tuple[float, list[BackendStatus]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="status")

    def statuses(self, *, fresh: bool = False) -> list[BackendStatus]:
        with self._lock:
            if not fresh and self._cached and time.monotonic() - self._cached[0] < self._ttl:
                return self._cached[1]
            results = []
            for found in self._pool.map(lambda check: check(self._settings), self._checks):
                results.extend(found if isinstance(found, list) else [found])
            self._cached = (time.monotonic(), results)
            return results

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None


def backend_key(status: BackendStatus) -> str:
    """The short name used in JSON keys, metric labels and the strip: "ollama", "comfyui",
    "openrouter"; "ollama:desk" for one of several Ollama hosts, "local_server:big" for a
    server of STUDIO_OPENAI_SERVERS, "comfyui:host_2" for an unnamed one of several ComfyUI
    hosts."""
    key = status.name.lower().replace(" ", "_")
    return f"{key}:{status.host.replace(' ', '_')}" if status.host else key


_DOT = {"reachable": "ok", "unreachable": "down", "key rejected": "down", "not configured": "off"}


def status_html(statuses: list[BackendStatus]) -> str:
    """The status strip: one pill per backend, with the URL and advice in the tooltip/text."""
    pills = []
    for s in statuses:
        cls = _DOT.get(s.state, "off")
        tip = f"{s.label} at {s.shown_url}: {s.state}" + (f" ({s.detail})" if s.detail else "")
        if s.state != "reachable" and s.advice:
            tip += f". {s.advice}"
        text = f"<b>{escape(s.label)}</b> {escape(s.state)}"
        if s.state == "reachable" and s.detail:
            text += f" <span class='muted'>{escape(s.detail)}</span>"
        if s.advice and s.state != "reachable":
            text += f"<span class='advice'> — {escape(s.advice)}</span>"
        pills.append(f"<span class='pill {cls}' title='{escape(tip, quote=True)}' "
                     f"data-backend='{escape(backend_key(s))}' data-state='{escape(s.state)}'>"
                     f"<i></i>{text}</span>")
    return "<div class='status-strip'>" + "".join(pills) + "</div>"
