#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: creates .venv, installs the project with its
# test extras, installs Debian's chromium for the browser tests if it is missing, runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k store -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/venv.sh test

if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests…"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest "$@"
