"""studio.gpu against a fake NVML (known readings, unsupported fields, failures) and the
real pynvml on a machine without a driver."""

from __future__ import annotations

import sys
import threading
import warnings
from types import SimpleNamespace

import pytest

from studio.models import gpu
from studio.models.gpu import GpuMonitor, GpuReading, format_bytes, format_summary, read_gpus

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

GiB = 2**30
MiB = 2**20


class Raises:
    """A fake field value: reading it raises NVMLError(code)."""

    def __init__(self, code):
        self.code = code


NOT_SUPPORTED = Raises(pynvml.NVML_ERROR_NOT_SUPPORTED)
GPU_LOST = Raises(pynvml.NVML_ERROR_GPU_IS_LOST)

RTX_3090 = {
    "name": "NVIDIA GeForce RTX 3090",
    "used": 6 * GiB, "total": 24 * GiB,
    "util": 37, "temp": 61, "power_mw": 215_500, "limit_mw": 350_000,
    "processes": [(4242, 5 * GiB), (777, None)],
}
# A card that reports nothing optional (every optional call: "Not Supported").
BARE_CARD = {
    "name": "Tesla K80", "used": 1 * GiB, "total": 12 * GiB,
    "util": NOT_SUPPORTED, "temp": NOT_SUPPORTED, "power_mw": NOT_SUPPORTED,
    "limit_mw": NOT_SUPPORTED, "processes": NOT_SUPPORTED,
}


class FakeNvml:
    """Same function names as pynvml; a field set to ``Raises(code)`` raises that NVMLError."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, devices=(), *, init_error=None, count_error=None,
                 process_names=None, driver="550.54.15"):
        self.devices = list(devices)
        self.init_error = init_error
        self.count_error = count_error
        self.process_names = ({4242: "/usr/bin/ollama"} if process_names is None
                              else process_names)
        self.driver = driver
        self.init_calls = 0
        self.shutdown_calls = 0

    def _value(self, handle, key):
        value = self.devices[handle][key]
        if isinstance(value, Raises):
            raise pynvml.NVMLError(value.code)
        return value

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self):
        if self.count_error is not None:
            raise pynvml.NVMLError(self.count_error)
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle]["name"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        device = self.devices[handle]
        if isinstance(device["used"], Raises):
            raise pynvml.NVMLError(device["used"].code)
        return SimpleNamespace(used=device["used"], total=device["total"],
                               free=device["total"] - device["used"])

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self._value(handle, "util"), memory=0)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._value(handle, "temp")

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._value(handle, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._value(handle, "limit_mw")

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        procs = self._value(handle, "processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in procs]

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetProcessName(self, pid):
        if pid not in self.process_names:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self.process_names[pid]


@pytest.fixture
def no_psutil(monkeypatch):
    """Process names come only from NVML (psutil would find real pids on this machine)."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` now raises ImportError


def test_read_gpus_returns_known_readings(no_psutil):
    reading = read_gpus(FakeNvml([RTX_3090]))

    assert reading.available is True
    assert reading.driver_version == "550.54.15"
    (device,) = reading.devices
    assert device.index == 0
    assert device.name == "NVIDIA GeForce RTX 3090"
    assert (device.memory_used, device.memory_total) == (6 * GiB, 24 * GiB)
    assert device.memory_free == 18 * GiB
    assert device.utilization_gpu == 37
    assert device.temperature_c == 61
    assert device.power_w == 215.5
    assert device.power_limit_w == 350.0


def test_read_gpus_lists_processes_with_unknown_names_and_memory(no_psutil):
    device = read_gpus(FakeNvml([RTX_3090])).devices[0]

    assert [(p.pid, p.name, p.used_memory) for p in device.processes] == [
        (4242, "/usr/bin/ollama", 5 * GiB), (777, None, None)]


@pytest.mark.parametrize("field", ["utilization_gpu", "temperature_c", "power_w",
                                   "power_limit_w", "processes"])
def test_read_gpus_unsupported_field_is_none(field):
    device = read_gpus(FakeNvml([BARE_CARD])).devices[0]

    assert getattr(device, field) is None
    assert device.memory_used == 1 * GiB


def test_read_gpus_unsupported_memory_is_none():
    card = dict(RTX_3090, used=NOT_SUPPORTED, processes=[])
    reading = read_gpus(FakeNvml([card]))

    assert reading.available is True
    assert reading.devices[0].memory_used is None
    assert reading.devices[0].memory_free is None
    assert reading.free_vram_bytes is None


class FakeNvmlV2(FakeNvml):
    """A driver with the v2 memory call: the driver's reservation is apart from "used"."""

    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        if version is None:
            return super().nvmlDeviceGetMemoryInfo(handle)
        assert version == pynvml.nvmlMemory_v2
        device = self.devices[handle]
        if isinstance(device.get("reserved"), Raises):
            raise pynvml.NVMLError(device["reserved"].code)
        reserved = device.get("reserved", 0)
        return SimpleNamespace(used=device["used"] - reserved, reserved=reserved,
                               total=device["total"], free=device["total"] - device["used"])


def test_read_gpus_v2_memory_matches_nvidia_smi_used():
    card = dict(RTX_3090, used=6 * GiB, reserved=512 * MiB)
    device = read_gpus(FakeNvmlV2([card])).devices[0]

    assert device.memory_used == 6 * GiB - 512 * MiB
    assert device.memory_reserved == 512 * MiB
    assert device.memory_free == 18 * GiB


def test_read_gpus_falls_back_to_v1_memory_when_v2_unsupported():
    card = dict(RTX_3090, reserved=NOT_SUPPORTED)
    device = read_gpus(FakeNvmlV2([card])).devices[0]

    assert (device.memory_used, device.memory_reserved) == (6 * GiB, None)
    assert device.memory_free == 18 * GiB


def test_read_gpus_reads_every_card_and_reports_most_free_vram():
    small = dict(BARE_CARD, used=2 * GiB, total=8 * GiB)
    reading = read_gpus(FakeNvml([RTX_3090, small]))

    assert [d.index for d in reading.devices] == [0, 1]
    assert reading.free_vram_bytes == 18 * GiB


def test_read_gpus_initialises_and_shuts_down_once():
    fake = FakeNvml([RTX_3090])
    read_gpus(fake)

    assert (fake.init_calls, fake.shutdown_calls) == (1, 1)


@pytest.mark.parametrize("code, words", [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "No NVIDIA driver found"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "No permission"),
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "rebooted"),
    (pynvml.NVML_ERROR_UNKNOWN, "NVML could not start"),
])
def test_read_gpus_init_failure_is_unavailable_with_reason(code, words):
    reading = read_gpus(FakeNvml(init_error=code))

    assert reading.available is False
    assert reading.devices == ()
    assert words in reading.reason
    assert "everything else works" in reading.reason or "rebooted" in reading.reason


@pytest.mark.parametrize("fake", [
    FakeNvml([RTX_3090], count_error=pynvml.NVML_ERROR_GPU_IS_LOST),
    FakeNvml([dict(RTX_3090, temp=GPU_LOST)]),  # lost mid-reading
], ids=["count", "temperature"])
def test_read_gpus_lost_gpu_is_unavailable(fake):
    reading = read_gpus(fake)

    assert reading.available is False
    assert "stopped answering" in reading.reason


def test_read_gpus_no_cards_is_unavailable():
    reading = read_gpus(FakeNvml([]))

    assert reading.available is False
    assert "reports no GPU" in reading.reason


def test_read_gpus_without_driver_uses_real_pynvml_and_answers_unavailable():
    # This machine has pynvml but no NVIDIA driver: the default path must not raise.
    reading = read_gpus()

    if reading.available:  # pragma: no cover - only on a box with a real GPU
        pytest.skip("a real NVIDIA GPU is present")
    assert reading.reason == gpu.NO_DRIVER_REASON
    assert reading.free_vram_bytes is None


def test_read_gpus_without_bindings_is_unavailable(monkeypatch):
    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gpu, "_load_pynvml", missing)
    reading = read_gpus()

    assert reading.available is False
    assert "nvidia-ml-py" in reading.reason


def test_gpu_monitor_initialises_nvml_once():
    fake = FakeNvml([RTX_3090])
    monitor = GpuMonitor(fake)
    for _ in range(3):
        monitor.sample()

    assert (fake.init_calls, fake.shutdown_calls) == (1, 0)
    monitor.close()
    assert fake.shutdown_calls == 1


def test_gpu_monitor_history_is_bounded_and_in_order():
    fake = FakeNvml([RTX_3090])
    monitor = GpuMonitor(fake, history_size=2)
    for used in (1, 2, 3):
        fake.devices[0] = dict(RTX_3090, used=used * GiB)
        monitor.sample()

    assert [row.used_mb for row in monitor.history()] == [2 * 1024, 3 * 1024]


def test_gpu_monitor_history_rows_have_chart_columns():
    monitor = GpuMonitor(FakeNvml([RTX_3090, BARE_CARD]))
    reading = monitor.sample()

    rows = monitor.history()
    assert gpu.HISTORY_COLUMNS == ("time", "device", "used_mb", "util", "temp", "power")
    assert [tuple(r)[1:] for r in rows] == [
        ("GPU 0: NVIDIA GeForce RTX 3090", 6144.0, 37, 61, 215.5),
        ("GPU 1: Tesla K80", 1024.0, None, None, None),
    ]
    assert {r.time for r in rows} == {reading.taken_at}


def test_gpu_monitor_retries_init_only_after_interval():
    now = [0.0]
    fake = FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    monitor = GpuMonitor(fake, retry_after_s=60, clock=lambda: now[0])

    first = monitor.sample()
    monitor.sample()
    assert (first.available, fake.init_calls) == (False, 1)

    fake.init_error, fake.devices, now[0] = None, [RTX_3090], 61.0
    assert monitor.sample().available is True
    assert fake.init_calls == 2
    assert monitor.history()[0].device == "GPU 0: NVIDIA GeForce RTX 3090"


def test_gpu_monitor_restarts_nvml_after_lost_gpu():
    fake = FakeNvml([RTX_3090], count_error=pynvml.NVML_ERROR_GPU_IS_LOST)
    monitor = GpuMonitor(fake, retry_after_s=0)

    assert monitor.sample().available is False
    assert fake.shutdown_calls == 1
    fake.count_error = None
    assert monitor.sample().available is True
    assert fake.init_calls == 2
    assert len(monitor.history()) == 1


def test_gpu_monitor_latest_samples_when_empty():
    monitor = GpuMonitor(FakeNvml([RTX_3090]))

    first = monitor.latest()
    assert first.available is True
    assert monitor.latest() is first


def test_gpu_monitor_parallel_samples_are_all_recorded():
    fake = FakeNvml([RTX_3090])
    monitor = GpuMonitor(fake, history_size=1000)
    start = threading.Barrier(8)

    def worker():
        start.wait(timeout=5)
        for _ in range(25):
            monitor.sample()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert len(monitor.history()) == 200
    assert fake.init_calls == 1


@pytest.mark.parametrize("value, text", [
    (None, "n/a"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
    (1536 * MiB, "1.5 GiB"), (24 * GiB, "24.0 GiB"), (3 * 2**40, "3.0 TiB"),
])
def test_format_bytes_uses_binary_units(value, text):
    assert format_bytes(value) == text


def test_format_summary_shows_figures_and_processes(no_psutil):
    text = format_summary(read_gpus(FakeNvml([RTX_3090])))

    assert "RTX 3090" in text
    assert "VRAM 6.0 GiB / 24.0 GiB (25%)" in text
    assert "load 37%" in text and "61 °C" in text and "216 W / 350 W" in text
    assert "ollama (5.0 GiB)" in text
    assert "pid 777 (n/a)" in text
    assert "Driver 550.54.15" in text


def test_format_summary_skips_unsupported_figures():
    text = format_summary(read_gpus(FakeNvml([BARE_CARD])))

    assert "VRAM 1.0 GiB / 12.0 GiB" in text
    assert "load" not in text and "°C" not in text and " W" not in text
    assert "not reported" in text


def test_format_summary_unavailable_gives_reason():
    text = format_summary(GpuReading.unavailable())

    assert text == f"**GPU readings are off.** {gpu.NO_DRIVER_REASON}"


def test_format_summary_escapes_markdown_in_process_names():
    card = dict(RTX_3090, processes=[(1, 1 * GiB)])
    text = format_summary(read_gpus(FakeNvml([card], process_names={1: "my_*model*"})))

    assert r"my\_\*model\*" in text


def test_read_gpus_falls_back_to_psutil_for_process_names(monkeypatch):
    fake_psutil = SimpleNamespace(Process=lambda pid: SimpleNamespace(name=lambda: f"proc{pid}"))
    monkeypatch.setitem(sys.modules, "psutil", fake_psutil)
    device = read_gpus(FakeNvml([RTX_3090])).devices[0]

    assert [p.name for p in device.processes] == ["/usr/bin/ollama", "proc777"]


def test_gpu_monitor_readings_for_scrapes_stay_out_of_the_chart():
    monitor = GpuMonitor(FakeNvml([RTX_3090]))
    assert monitor.sample(record=False).available
    assert monitor.history() == [] and monitor.latest().available
    monitor.sample()
    assert len(monitor.history()) == 1
