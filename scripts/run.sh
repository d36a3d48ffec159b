#!/usr/bin/env bash
# Run the studio on a fresh machine: creates .venv, installs the project, starts app.py.
# Settings come from the environment or a .env file (see .env.example).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/venv.sh
exec .venv/bin/python app.py "$@"
