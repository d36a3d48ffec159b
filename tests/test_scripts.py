"""scripts/run.sh and scripts/venv.sh: install once, then start without pip or network.

The scripts run for real in a temporary copy of the repository's root, with a stub `python`
that plays the venv module, pip and app.py and writes each call to a log: no venv is made,
nothing is downloaded. With `STUB_OFFLINE` set the stub's pip fails as it would with no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

# `python -m venv .venv` copies the stub into .venv/bin; `-m pip` fails when offline.
STUB_PYTHON = """#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
elif [ "$1 $2" = "-m pip" ] && [ -n "${STUB_OFFLINE:-}" ]; then
  echo "ERROR: Could not find a version that satisfies the requirement (no network)" >&2
  exit 1
fi
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A temporary root holding the scripts, pyproject.toml and the stub python on PATH."""
    root = tmp_path / "studio"
    (root / "scripts").mkdir(parents=True)
    for name in ("run.sh", "venv.sh"):
        shutil.copy(ROOT / "scripts" / name, root / "scripts" / name)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "python3").write_text(STUB_PYTHON)
    (stub_bin / "python3").chmod(0o755)
    return root


def calls(root: Path) -> list[str]:
    log = root.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def run(root: Path, command: list[str], offline: bool = False) -> subprocess.CompletedProcess:
    """Runs a command in `root` with the stub first on PATH; the call log starts empty."""
    (root.parent / "calls.log").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "STUB_OFFLINE")}
    env["PATH"] = f"{root.parent / 'bin'}{os.pathsep}{env['PATH']}"
    env["STUB_LOG"] = str(root.parent / "calls.log")
    if offline:
        env["STUB_OFFLINE"] = "1"
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=30)


def start(root: Path, offline: bool = False) -> subprocess.CompletedProcess:
    return run(root, ["bash", "scripts/run.sh", "--port", "9999"], offline)


def set_up(root: Path, extras: str = "", offline: bool = False) -> subprocess.CompletedProcess:
    """What test.sh does before pytest: source venv.sh with its extras."""
    return run(root, ["bash", "-c", f"set -euo pipefail; source scripts/venv.sh {extras}"],
               offline)


def pip_calls(root: Path) -> list[str]:
    return [line for line in calls(root) if line.startswith("-m pip")]


def test_run_first_start_creates_venv_installs_and_starts(checkout):
    result = start(checkout)
    assert result.returncode == 0, result.stderr
    assert calls(checkout) == ["-m venv .venv", "-m pip install -q --upgrade pip",
                               "-m pip install -q -e .", "app.py --port 9999"]


def test_run_second_start_needs_no_pip_and_no_network(checkout):
    assert start(checkout).returncode == 0
    result = start(checkout, offline=True)
    assert result.returncode == 0, result.stderr
    assert calls(checkout) == ["app.py --port 9999"]


def test_run_reinstalls_when_pyproject_changes(checkout):
    assert start(checkout).returncode == 0
    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n# a new dependency would go here\n')
    result = start(checkout)
    assert result.returncode == 0, result.stderr
    assert pip_calls(checkout) == ["-m pip install -q --upgrade pip", "-m pip install -q -e ."]
    assert start(checkout, offline=True).returncode == 0


def test_run_with_changed_pyproject_and_no_network_fails_and_retries_next_time(checkout):
    assert start(checkout).returncode == 0
    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n# changed\n')
    failed = start(checkout, offline=True)
    assert failed.returncode != 0
    assert "app.py" not in "\n".join(calls(checkout))
    assert "no network" in failed.stderr
    assert start(checkout).returncode == 0
    assert pip_calls(checkout)  # the failed install wasn't recorded as done


def test_venv_with_other_extras_reinstalls_then_keeps_them(checkout):
    assert start(checkout).returncode == 0
    assert set_up(checkout, "test").returncode == 0
    assert pip_calls(checkout)[-1] == "-m pip install -q -e .[test]"
    # Both the app and the tests now start offline: the test extras cover run.sh's none.
    assert set_up(checkout, "test", offline=True).returncode == 0
    assert start(checkout, offline=True).returncode == 0
    assert pip_calls(checkout) == []


def test_venv_recreates_a_missing_venv_despite_an_old_stamp(checkout):
    assert start(checkout).returncode == 0
    shutil.rmtree(checkout / ".venv" / "bin")
    assert start(checkout).returncode == 0
    assert calls(checkout)[0] == "-m venv .venv"
    assert "-m pip install -q -e ." in calls(checkout)
