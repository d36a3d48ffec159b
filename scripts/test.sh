#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: creates .venv, installs the project with its
# test extras, installs the Debian packages the tests drive (chromium, caddy, prometheus,
# docker-compose) when they are missing, runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k store -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/venv.sh test

# The real tools the owner runs, from Debian: chromium for the browser tests, caddy
# (`caddy validate`, Caddy in front of the studio), prometheus (promtool, a real Prometheus
# scraping the studio) and docker-compose (`docker-compose config`; no engine needed).
MISSING=""
for pair in chromium:/usr/bin/chromium caddy:/usr/bin/caddy prometheus:/usr/bin/promtool \
            docker-compose:/usr/bin/docker-compose; do
  [ -x "${pair#*:}" ] || MISSING="$MISSING ${pair%%:*}"
done
if [ -n "$MISSING" ]; then
  echo "Installing Debian's$MISSING for the tests…"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # --no-install-recommends: prometheus would pull in node-exporter and its services.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $MISSING >/dev/null
fi

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest "$@"
