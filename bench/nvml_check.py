"""Manual check: the GPU figures the Models panel shows, beside nvidia-smi's own.

Run from the repository root on the GPU server: ``python bench/nvml_check.py``.
Needs only the project's dependencies. On a machine without an NVIDIA GPU it says so
and exits 0. Figures are read a moment apart, so load and power may differ a little;
memory, name and temperature should match.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from studio.models.gpu import format_summary, read_gpus  # noqa: E402

SMI_FIELDS = ("name", "memory.used", "memory.total", "utilization.gpu", "temperature.gpu",
              "power.draw")
SMI_COMMAND = ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}",
               "--format=csv,noheader,nounits"]


def run_nvidia_smi() -> tuple[list[list[str]], str]:
    """Rows of nvidia-smi figures, or ([], why not)."""
    if shutil.which("nvidia-smi") is None:
        return [], "nvidia-smi is not on PATH"
    try:
        done = subprocess.run(SMI_COMMAND, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return [], f"nvidia-smi did not run: {err}"
    if done.returncode != 0:
        return [], f"nvidia-smi failed ({done.returncode}): {(done.stdout + done.stderr).strip()}"
    rows = [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines()
            if line.strip()]
    return rows, ""


def _figure(value, unit: str = "") -> str:
    return "n/a" if value is None else f"{value}{unit}"


def studio_rows(reading) -> list[list[str]]:
    """The panel's figures in nvidia-smi's units (MiB, %, °C, W)."""
    rows = []
    for d in reading.devices:
        rows.append([
            d.name,
            _figure(None if d.memory_used is None else d.memory_used // 2**20),
            _figure(None if d.memory_total is None else d.memory_total // 2**20),
            _figure(d.utilization_gpu),
            _figure(d.temperature_c),
            _figure(d.power_w),
        ])
    return rows


def main() -> int:
    reading = read_gpus()
    smi_rows, smi_problem = run_nvidia_smi()
    if not reading.available and not smi_rows:
        print(f"no GPU: {reading.reason}")
        print(f"nvidia-smi: {smi_problem or 'no GPUs listed'}")
        return 0

    print("What the Models panel shows:\n")
    print(format_summary(reading))
    print()
    ours = studio_rows(reading)
    header = ["field (nvidia-smi units)", "studio", "nvidia-smi"]
    for index in range(max(len(ours), len(smi_rows))):
        print(f"GPU {index}")
        print(f"  {header[0]:<26} {header[1]:<28} {header[2]}")
        for column, field in enumerate(SMI_FIELDS):
            mine = ours[index][column] if index < len(ours) else "(missing)"
            theirs = smi_rows[index][column] if index < len(smi_rows) else "(missing)"
            print(f"  {field:<26} {mine:<28} {theirs}")
    if not reading.available:
        print(f"\nstudio: {reading.reason}")
    if smi_problem:
        print(f"\nnvidia-smi: {smi_problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
