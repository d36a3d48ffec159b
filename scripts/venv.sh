# Sourced by run.sh and test.sh: make .venv (if missing) and install the project into it.
# Usage: source scripts/venv.sh [extras], e.g. `source scripts/venv.sh test`.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"
