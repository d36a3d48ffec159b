"""GPU readings through NVML (pynvml), as small frozen dataclasses.

"Unavailable" is a normal answer here: a box without an NVIDIA driver, a container
without the device, or a card that stopped answering all give
``GpuReading.unavailable(reason)`` with a sentence for the panel, never an exception.
An optional field the card does not support (power on some laptops, temperature on
some datacenter cards) is ``None``.

The NVML module is injected (``nvml=``): the real ``pynvml`` is imported lazily on
first use, tests pass a fake object with the same function names. ``GpuMonitor``
keeps NVML initialised across readings and a bounded history for a chart.
No gradio imports here, and nothing runs at import time.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, NamedTuple

NO_DRIVER_REASON = ("No NVIDIA driver found (NVML could not load). "
                    "GPU readings are off; everything else works.")

# NVML error codes (nvml.h); only used to pick the sentence shown to the user.
_NVML_ERROR_NO_PERMISSION = 4
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12
_NVML_ERROR_GPU_IS_LOST = 15
_NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
_NVML_TEMPERATURE_GPU = 0


@dataclass(frozen=True)
class GpuProcess:
    """A process holding GPU memory. ``name``/``used_memory`` are None when NVML can't tell."""

    pid: int
    name: str | None
    used_memory: int | None


@dataclass(frozen=True)
class GpuDevice:
    """One card at one moment. Memory in bytes; ``None`` means "not supported by this card"
    (memory is not reported on cards that share system RAM, such as the GB10)."""

    index: int
    name: str
    memory_used: int | None
    memory_total: int | None
    utilization_gpu: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...] | None = ()
    memory_reserved: int | None = None

    @property
    def memory_free(self) -> int | None:
        """Bytes a new model could still use: total less used and driver-reserved memory."""
        if self.memory_used is None or self.memory_total is None:
            return None
        return max(self.memory_total - self.memory_used - (self.memory_reserved or 0), 0)

    @property
    def label(self) -> str:
        return f"GPU {self.index}: {self.name}"


@dataclass(frozen=True)
class GpuReading:
    """All cards at one moment, or ``available=False`` with a reason fit for the panel."""

    devices: tuple[GpuDevice, ...]
    available: bool
    reason: str = ""
    driver_version: str | None = None
    taken_at: datetime = field(default_factory=lambda: datetime.now().astimezone())

    @classmethod
    def unavailable(cls, reason: str = NO_DRIVER_REASON) -> "GpuReading":
        return cls(devices=(), available=False, reason=reason)

    @property
    def free_vram_bytes(self) -> int | None:
        """Free memory on the card with the most free memory; None when nobody can tell."""
        known = [d.memory_free for d in self.devices if d.memory_free is not None]
        return max(known) if self.available and known else None


class HistoryRow(NamedTuple):
    """One chart point: a card's figures at one moment."""

    time: datetime
    device: str
    used_mb: float | None
    util: int | None
    temp: int | None
    power: float | None


HISTORY_COLUMNS = HistoryRow._fields


def _load_pynvml() -> Any:
    # The `pynvml` distribution (a deprecated shim beside nvidia-ml-py, which provides the
    # module we use) warns on every first import; the warning is not for our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*pynvml.*")
        import pynvml
    return pynvml


def _error_class(nvml: Any) -> type[BaseException]:
    return getattr(nvml, "NVMLError", Exception)


def _error_code(err: BaseException) -> int | None:
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


def _describe_error(err: BaseException) -> str:
    try:
        return str(err) or type(err).__name__
    except Exception:  # pynvml's __str__ itself calls into NVML for unknown codes
        return type(err).__name__


def _init_failure_reason(err: BaseException) -> str:
    code = _error_code(err)
    if code == _NVML_ERROR_LIBRARY_NOT_FOUND:
        return NO_DRIVER_REASON
    if code == _NVML_ERROR_DRIVER_NOT_LOADED:
        return ("The NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded). "
                "GPU readings are off; everything else works. Run `nvidia-smi` on the server "
                "to check the driver.")
    if code == _NVML_ERROR_NO_PERMISSION:
        return ("No permission to read the GPU through NVML. GPU readings are off; everything "
                "else works. Check that the studio's user can open /dev/nvidia*.")
    if code == _NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return ("The NVIDIA driver and its library have different versions (usually right after "
                "a driver update). GPU readings are off until the server is rebooted.")
    return (f"NVML could not start ({_describe_error(err)}). GPU readings are off; "
            "everything else works.")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _optional(nvml: Any, read: Callable[[], Any]) -> Any:
    """Run one optional NVML read; "not supported" (any NVMLError) becomes None."""
    try:
        return read()
    except _error_class(nvml) as err:
        if _error_code(err) == _NVML_ERROR_GPU_IS_LOST:
            raise
        return None


def _process_name(nvml: Any, pid: int) -> str | None:
    name = _optional(nvml, lambda: nvml.nvmlSystemGetProcessName(pid))
    if name:
        return _text(name)
    # Inside a container NVML often can't see the host's pids; psutil (optional) may.
    try:
        import psutil
    except ImportError:
        return None
    try:
        return psutil.Process(pid).name()
    except Exception:  # no such process here, or not ours to read
        return None


def _read_processes(nvml: Any, handle: Any) -> tuple[GpuProcess, ...] | None:
    running = _optional(nvml, lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    if running is None:
        return None
    processes = []
    for proc in running:
        used = getattr(proc, "usedGpuMemory", None)
        processes.append(GpuProcess(pid=int(proc.pid), name=_process_name(nvml, int(proc.pid)),
                                    used_memory=int(used) if used is not None else None))
    return tuple(processes)


def _milliwatts(value: Any) -> float | None:
    return None if value is None else round(value / 1000.0, 1)


def _read_memory(nvml: Any, handle: Any) -> tuple[int | None, int | None, int | None]:
    """(used, total, reserved). The v2 call splits the driver's reservation out of "used",
    as nvidia-smi does; the v1 call (older drivers, fakes) counts it as used."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        memory = _optional(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle, version=version))
        if memory is not None:
            return int(memory.used), int(memory.total), int(memory.reserved)
    memory = _optional(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    if memory is None:
        return None, None, None
    return int(memory.used), int(memory.total), None


def _read_device(nvml: Any, index: int) -> GpuDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    used, total, reserved = _read_memory(nvml, handle)
    name = _optional(nvml, lambda: nvml.nvmlDeviceGetName(handle))
    utilization = _optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU)
    temperature = _optional(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, sensor))
    power = _optional(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    power_limit = _optional(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return GpuDevice(
        index=index,
        name=_text(name) if name else "NVIDIA GPU",
        memory_used=used,
        memory_total=total,
        memory_reserved=reserved,
        utilization_gpu=int(utilization.gpu) if utilization is not None else None,
        temperature_c=int(temperature) if temperature is not None else None,
        power_w=_milliwatts(power),
        power_limit_w=_milliwatts(power_limit),
        processes=_read_processes(nvml, handle),
    )


def _read_initialised(nvml: Any) -> GpuReading:
    """Read every card through an already initialised NVML."""
    try:
        count = int(nvml.nvmlDeviceGetCount())
        devices = tuple(_read_device(nvml, i) for i in range(count))
        driver = _optional(nvml, nvml.nvmlSystemGetDriverVersion)
    except _error_class(nvml) as err:
        if _error_code(err) == _NVML_ERROR_GPU_IS_LOST:
            return GpuReading.unavailable(
                "The GPU stopped answering (NVML: GPU is lost). GPU readings are off; the card "
                "may need a reset or the server a reboot. Check `nvidia-smi` and the kernel log.")
        return GpuReading.unavailable(
            f"Reading the GPU through NVML failed ({_describe_error(err)}). "
            "GPU readings are off for now; everything else works.")
    if not devices:
        return GpuReading.unavailable(
            "The NVIDIA driver is loaded but reports no GPU. GPU readings are off; "
            "everything else works.")
    return GpuReading(devices=devices, available=True,
                      driver_version=_text(driver) if driver else None)


def _start(nvml: Any | None) -> tuple[Any | None, GpuReading | None]:
    """Import (if needed) and initialise NVML: (module, None) or (None, unavailable reading)."""
    if nvml is None:
        try:
            nvml = _load_pynvml()
        except ImportError:
            return None, GpuReading.unavailable(
                "The NVML Python bindings are not installed (pip install nvidia-ml-py). "
                "GPU readings are off; everything else works.")
    try:
        nvml.nvmlInit()
    except _error_class(nvml) as err:
        return None, GpuReading.unavailable(_init_failure_reason(err))
    except OSError as err:  # a broken libnvidia-ml can fail inside ctypes itself
        return None, GpuReading.unavailable(
            f"NVML could not load ({err}). GPU readings are off; everything else works.")
    return nvml, None


def _stop(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except _error_class(nvml):
        pass  # shutting down a library that is already gone changes nothing for us


def read_gpus(nvml: Any | None = None) -> GpuReading:
    """Take one reading of every NVIDIA card: init NVML, read, shut it down.

    ``nvml`` defaults to the ``pynvml`` module; tests pass a fake with the same function
    names. Never raises for a missing driver or an unsupported field: the answer is
    ``GpuReading.unavailable(reason)`` or a device field set to ``None``. For repeated
    readings use ``GpuMonitor``, which initialises NVML once.
    """
    module, failed = _start(nvml)
    if failed is not None:
        return failed
    try:
        return _read_initialised(module)
    finally:
        _stop(module)


class GpuMonitor:
    """Keeps NVML initialised and the last ``history_size`` readings for a chart.

    Thread-safe: one lock guards NVML state and the history, so several browser tabs
    polling at once are fine. If NVML can't start, ``sample()`` answers the unavailable
    reading and tries again after ``retry_after_s`` (a driver can appear later).
    """

    def __init__(self, nvml: Any | None = None, *, history_size: int = 720,
                 retry_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._nvml_arg = nvml
        self._nvml: Any | None = None
        self._failed: GpuReading | None = None
        self._failed_at = 0.0
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._history: deque[GpuReading] = deque(maxlen=history_size)
        self._latest: GpuReading | None = None

    def sample(self, *, record: bool = True) -> GpuReading:
        """Take a reading, add it to the chart's history when available (unless ``record``
        is False: a scrape or a status poll must not thin out the chart's interval), and
        return it."""
        with self._lock:
            reading = self._sample_locked()
            self._latest = reading
            if reading.available and record:
                self._history.append(reading)
            return reading

    def _sample_locked(self) -> GpuReading:
        if self._nvml is None:
            if self._failed is not None and self._clock() - self._failed_at < self._retry_after_s:
                return self._failed
            module, failed = _start(self._nvml_arg)
            if failed is not None:
                self._failed, self._failed_at = failed, self._clock()
                return failed
            self._nvml, self._failed = module, None
        reading = _read_initialised(self._nvml)
        if not reading.available:
            # Start afresh next time: after a lost GPU or a driver reload the old
            # NVML session is no good.
            _stop(self._nvml)
            self._nvml = None
            self._failed, self._failed_at = reading, self._clock()
        return reading

    def latest(self) -> GpuReading:
        """The last reading taken, or a fresh one if none was taken yet."""
        with self._lock:
            latest = self._latest
        return latest if latest is not None else self.sample()

    def history(self) -> list[HistoryRow]:
        """Chart rows, oldest first: one per card per available reading (``HISTORY_COLUMNS``)."""
        with self._lock:
            readings = list(self._history)
        return [HistoryRow(time=r.taken_at, device=d.label,
                           used_mb=None if d.memory_used is None
                           else round(d.memory_used / 2**20, 1),
                           util=d.utilization_gpu, temp=d.temperature_c, power=d.power_w)
                for r in readings for d in r.devices]

    def close(self) -> None:
        """Shut NVML down; a later ``sample()`` initialises it again."""
        with self._lock:
            if self._nvml is not None:
                _stop(self._nvml)
                self._nvml = None

    def __enter__(self) -> "GpuMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_bytes(n: int | float | None) -> str:
    """Binary units the way nvidia-smi counts them.

    >>> format_bytes(0)
    '0 B'
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(24 * 2**30)
    '24.0 GiB'
    >>> format_bytes(None)
    'n/a'
    """
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


_MARKDOWN_SPECIALS = "\\`*_{}[]<>()#+-!|~"


def _md(text: str) -> str:
    return "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in text)


def _process_line(proc: GpuProcess) -> str:
    name = os.path.basename(proc.name) if proc.name else f"pid {proc.pid}"
    return f"{_md(name)} ({format_bytes(proc.used_memory)})"


def _device_markdown(device: GpuDevice) -> str:
    if device.memory_used is not None and device.memory_total:
        figures = [f"VRAM {format_bytes(device.memory_used)} / {format_bytes(device.memory_total)} "
                   f"({100 * device.memory_used / device.memory_total:.0f}%)"]
    else:
        figures = ["VRAM not reported"]
    if device.utilization_gpu is not None:
        figures.append(f"load {device.utilization_gpu}%")
    if device.temperature_c is not None:
        figures.append(f"{device.temperature_c} °C")
    if device.power_w is not None:
        limit = f" / {device.power_limit_w:.0f} W" if device.power_limit_w is not None else ""
        figures.append(f"{device.power_w:.0f} W{limit}")
    lines = [f"**{_md(device.label)}**  ", " · ".join(figures)]
    if device.processes is None:
        lines.append("\nProcesses: not reported by this card.")
    elif device.processes:
        lines.append("\nProcesses: " + ", ".join(_process_line(p) for p in device.processes))
    else:
        lines.append("\nProcesses: none using the GPU.")
    return "\n".join(lines)


def format_summary(reading: GpuReading) -> str:
    """Markdown for the Models panel: one block per card, or the reason readings are off."""
    if not reading.available:
        return f"**GPU readings are off.** {reading.reason}"
    blocks = [_device_markdown(d) for d in reading.devices]
    footer = f"Driver {_md(reading.driver_version)}, " if reading.driver_version else ""
    blocks.append(f"_{footer}read at {reading.taken_at:%H:%M:%S}_")
    return "\n\n".join(blocks)
