"""The Models tab's GPU panel, read once per poll interval for every page together: this
machine's NVML readings (every card) with their recent history, each host's own view of its
GPUs (``backends/board.read_host_gpus``) and the loaded Ollama models.

N open pages must not mean N NVML reads (and N history points) per tick, nor N questions to
each host: each reading is a ``SharedPoll``. No components here; ``models.py`` shows them.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd

from ..backends.board import read_host_gpus
from ..errors import StudioError
from ..models.gpu import GpuReading, format_summary
from .models_values import HISTORY_MINUTES, SharedPoll, hosts_gpus_markdown, vram_frame


class GpuPanel:
    """``gpu`` is the NVML monitor, ``board`` the hosts, ``ollama`` the studio's Ollama;
    ``named``: name the hosts in the panel (several of an engine)."""

    def __init__(self, gpu, board, ollama, *, poll_s: float, policy: str | None,
                 named: bool) -> None:
        def read_running():
            try:
                return ollama.running()
            except StudioError:
                return []

        self._gpu = SharedPoll(lambda: gpu.sample(), poll_s * 0.8)
        self._hosts = SharedPoll(lambda: read_host_gpus(board, ollama), poll_s * 0.8)
        self._running = SharedPoll(read_running, poll_s * 0.8)
        self._policy = policy
        self._named = named
        self._lock = threading.Lock()
        self._history: list[GpuReading] = []
        self._last_taken: datetime | None = None

    def values(self) -> tuple[str, pd.DataFrame, bool, str]:
        """(this machine's cards and the sharing policy, their recent history, whether NVML
        reads, each host's own view)."""
        reading = self._gpu.get()
        hosts = hosts_gpus_markdown(self._hosts.get(), nvml=reading.available,
                                    named=self._named)
        policy = f"\n\n_GPU sharing policy: **{self._policy}**_" if self._policy else ""
        return (format_summary(reading) + policy, vram_frame(self._readings(reading)),
                reading.available, hosts)

    def running(self) -> list:
        """Ollama's loaded models (every host), or none when it can't be asked."""
        return self._running.get()

    def _readings(self, reading: GpuReading) -> list[GpuReading]:
        # GpuMonitor.history() drops the totals a percent chart needs, so keep our own
        # bounded list of the readings the panel showed.
        with self._lock:
            if reading.available and reading.taken_at != self._last_taken:
                self._history.append(reading)
                self._last_taken = reading.taken_at
                cutoff = reading.taken_at.timestamp() - HISTORY_MINUTES * 60
                while self._history and self._history[0].taken_at.timestamp() < cutoff:
                    self._history.pop(0)
            return list(self._history)
