#!/usr/bin/env bash
# Run the studio: on a fresh machine creates .venv and installs the project; afterwards starts
# app.py straight away, offline, reinstalling only when pyproject.toml changed (scripts/venv.sh).
# Settings come from the environment or a .env file (see .env.example).
set -euo pipefail
cd "$(dirname "$0")/.."

# "" (no extras) on purpose: a bare `source` would hand venv.sh this script's arguments.
source scripts/venv.sh ""
exec .venv/bin/python app.py "$@"
