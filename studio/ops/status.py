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

    @property
    def up(self) -> bool:
        return self.state == "reachable"

    @property
    def configured(self) -> bool:
        return self.state != "not configured"

    @property
    def shown_url(self) -> str:
        return self.url if self.public else "the address in COMFYUI_URL"


def _probe(name: str, url: str, path: str, advice: str, timeout: float,
           headers: dict | None = None, version_of: Callable[[httpx.Response], str] | None = None
           ) -> BackendStatus:
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
        return BackendStatus(name, "key rejected", url, "OpenRouter refused the key (401)",
                             "Check OPENROUTER_API_KEY.", latency_ms=latency)
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


def check_ollama(settings: Settings, timeout: float = 1.5) -> BackendStatus:
    return _probe("Ollama", settings.ollama_url, "/api/version",
                  "Start it with `ollama serve`, or set OLLAMA_HOST.", timeout,
                  version_of=lambda r: "v" + r.json()["version"])


def check_comfyui(settings: Settings, timeout: float = 1.5) -> BackendStatus:
    status = _probe("ComfyUI", settings.comfyui_url, "/system_stats",
                  "Start ComfyUI (`python main.py --listen`), or set COMFYUI_URL.", timeout,
                  version_of=lambda r: "v" + r.json()["system"]["comfyui_version"])
    return replace(status, public=False)


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
                     check_ollama, check_comfyui, check_openrouter)):
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
            results = list(self._pool.map(lambda check: check(self._settings), self._checks))
            self._cached = (time.monotonic(), results)
            return results

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None


_DOT = {"reachable": "ok", "unreachable": "down", "key rejected": "down", "not configured": "off"}


def status_html(statuses: list[BackendStatus]) -> str:
    """The status strip: one pill per backend, with the URL and advice in the tooltip/text."""
    pills = []
    for s in statuses:
        cls = _DOT.get(s.state, "off")
        tip = f"{s.name} at {s.shown_url}: {s.state}" + (f" ({s.detail})" if s.detail else "")
        if s.state != "reachable" and s.advice:
            tip += f". {s.advice}"
        text = f"<b>{escape(s.name)}</b> {escape(s.state)}"
        if s.state == "reachable" and s.detail:
            text += f" <span class='muted'>{escape(s.detail)}</span>"
        if s.advice and s.state != "reachable":
            text += f"<span class='advice'> — {escape(s.advice)}</span>"
        pills.append(f"<span class='pill {cls}' title='{escape(tip, quote=True)}' "
                     f"data-backend='{escape(s.name.lower())}' data-state='{escape(s.state)}'>"
                     f"<i></i>{text}</span>")
    return "<div class='status-strip'>" + "".join(pills) + "</div>"
