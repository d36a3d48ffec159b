"""Manual check on a real NVIDIA GPU: the Models panel's readings under load, and the
GPU-sharing policy deciding from real free memory.

Run from the repository root on the GPU server: ``python bench/gpu_share_check.py``.
It needs PyTorch with CUDA (only for the load it makes) and nvidia-ml-py; the studio's
other dependencies are not imported. Ollama and ComfyUI are not needed: the policy is
given two stand-ins that report which models they hold and record what they are asked
to unload or free, so the only real figures are NVML's, which is what this checks.

What it does, printing each step:
1. the panel at rest, beside nvidia-smi (``bench/nvml_check.py``);
2. a PyTorch process that holds most of the GPU memory and runs bf16 matrix products;
   the panel is sampled every half second while it runs (load, memory, power,
   temperature, and whether the process is listed with its memory);
3. the sharing policy ("automatic") before an image job and before a chat, with free
   memory read from NVML while the load holds the memory, and again after it ended.
Exit status 0 when every check printed ``ok``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from studio.models.gpu import GpuMonitor, format_bytes, format_summary  # noqa: E402
from studio.models.gpu_coordinator import GpuCoordinator  # noqa: E402
from studio.models.gpu_policy import DEFAULT_VRAM_BY_FAMILY, GiB  # noqa: E402

WORKER = r"""
import sys, time, torch
hold = int(sys.argv[1]); seconds = float(sys.argv[2])
block = torch.empty(hold, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
print("done", flush=True)
"""


class StandInOllama:
    """Answers like the studio's OllamaClient for the calls the policy makes."""

    def __init__(self, loaded: list[tuple[str, int]], installed: list[tuple[str, int]]):
        self.loaded = loaded
        self.installed = installed
        self.unloaded: list[str] = []

    def running(self):
        return [SimpleNamespace(name=n, size_vram=s) for n, s in self.loaded
                if n not in self.unloaded]

    def list_models(self):
        return [SimpleNamespace(name=n, size=s) for n, s in self.installed]

    def unload(self, name: str) -> None:
        self.unloaded.append(name)


class StandInComfyUI:
    def __init__(self):
        self.freed = 0

    def system_stats(self):
        return SimpleNamespace(devices=[])

    def free(self, **_kw) -> None:
        self.freed += 1


RESULTS: list[tuple[str, bool]] = []


def check(label: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((label, ok))
    print(f"  [{'ok' if ok else 'FAIL'}] {label}{': ' + detail if detail else ''}")


def policy_round(monitor: GpuMonitor, title: str, expect_short: bool) -> None:
    print(f"\n== The sharing policy, {title}")
    ollama = StandInOllama(loaded=[("llama3.1:70b", 40 * GiB), ("qwen2.5:7b", 5 * GiB)],
                           installed=[("llama3.1:70b", 40 * GiB), ("qwen2.5:7b", 5 * GiB),
                                      ("mixtral:8x22b", 80 * GiB)])
    comfy = StandInComfyUI()
    coordinator = GpuCoordinator(policy="automatic", gpu=monitor, ollama=ollama, comfyui=comfy,
                                 busy_models=lambda: ["qwen2.5:7b"])
    free, source = coordinator.free_vram()
    print(f"  free GPU memory from {source or 'nowhere'}: {format_bytes(free)}")
    check("free memory comes from NVML", source == "NVML")
    image = coordinator.before_image_job("flux")
    print(f"  before a flux image job ({format_bytes(DEFAULT_VRAM_BY_FAMILY['flux'])}): "
          f"{image.action} / {image.outcome}: {image.message}")
    if expect_short:
        check("image job: the idle model is unloaded, the busy one kept",
              ollama.unloaded == ["llama3.1:70b"], f"unloaded {ollama.unloaded}")
    else:
        check("image job fits, nothing unloaded", image.outcome == "fits" and not ollama.unloaded,
              f"unloaded {ollama.unloaded}")
    chat = coordinator.before_chat("mixtral:8x22b")
    print(f"  before a chat with mixtral:8x22b (80 GiB): {chat.action} / {chat.outcome}: "
          f"{chat.message}")
    if expect_short:
        check("chat: ComfyUI asked to free its models", comfy.freed == 1)
    else:
        check("chat fits, ComfyUI left alone", chat.outcome == "fits" and comfy.freed == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--leave-free-gib", type=float, default=6.0,
                        help="memory the load leaves free (default 6 GiB, less than a flux job)")
    args = parser.parse_args()

    print("== 1. The panel at rest, beside nvidia-smi")
    import nvml_check
    nvml_check.main()

    monitor = GpuMonitor()
    rest = monitor.sample()
    if not rest.available:
        print(f"no GPU readings: {rest.reason}")
        return 1
    device = rest.devices[0]
    check("NVML reading at rest", device.memory_total is not None,
          f"{device.name}, {format_bytes(device.memory_used)} of "
          f"{format_bytes(device.memory_total)} used")

    hold = int(device.memory_free - args.leave_free_gib * GiB)
    print(f"\n== 2. Under load: a PyTorch process holds {format_bytes(hold)} and multiplies "
          f"bf16 matrices for {args.seconds:.0f} s")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(hold), str(args.seconds)],
                              stdout=subprocess.PIPE, text=True)
    line = worker.stdout.readline().strip()
    check("the load started", line == "ready", line or "(no answer)")
    samples = []
    print(f"  {'t (s)':>6} {'load %':>7} {'memory used':>12} {'power W':>8} {'°C':>4}  processes")
    started = time.monotonic()
    while worker.poll() is None and time.monotonic() - started < args.seconds - 1:
        r = monitor.sample()
        d = r.devices[0]
        procs = ", ".join(f"{p.pid}:{format_bytes(p.used_memory)}" for p in d.processes or ())
        samples.append(r)
        print(f"  {time.monotonic() - started:6.1f} {d.utilization_gpu!s:>7} "
              f"{format_bytes(d.memory_used):>12} {d.power_w!s:>8} {d.temperature_c!s:>4}  "
              f"{procs or '(none listed)'}")
        time.sleep(0.5)
    busy = max((s.devices[0].utilization_gpu or 0) for s in samples) if samples else 0
    used = max((s.devices[0].memory_used or 0) for s in samples) if samples else 0
    check("the panel sees the load", busy >= 50, f"peak {busy} %")
    check("the panel sees the memory held", used >= hold,
          f"peak {format_bytes(used)} against {format_bytes(hold)} held")
    listed = any(p.pid == worker.pid for s in samples for p in s.devices[0].processes or ())
    others = {p.pid for s in samples for p in s.devices[0].processes or ()}
    print(f"  the load's pid {worker.pid} {'is' if listed else 'is not'} listed "
          f"(pids listed: {sorted(others) or 'none'})")
    print("\n  The panel as the Models tab shows it, under load:\n")
    print(format_summary(samples[-1]) if samples else "(no sample)")
    policy_round(monitor, "while the load holds the memory", expect_short=True)
    worker.wait(timeout=args.seconds + 60)
    time.sleep(1.0)
    policy_round(monitor, "after the load ended", expect_short=False)
    monitor.close()

    failed = [label for label, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} checks ok"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
