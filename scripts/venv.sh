# Sourced by run.sh and test.sh: make .venv (if missing) and install the project into it,
# but only when something changed, so a start after the first needs no network and no pip.
# Usage: source scripts/venv.sh [extras], e.g. `source scripts/venv.sh test` (a comma list works).
#
# .venv/studio-install records what was installed: pyproject.toml's sha256 and the extras.
# pip runs again only when pyproject.toml changed or an extra is asked for that isn't there.
# The project is installed editable, so changes to studio/ never need a reinstall.
# To force one (say after a failed pip run left things half done): rm .venv/studio-install
PYTHON=${PYTHON:-python3}
studio_extras=${1:-}
studio_stamp=.venv/studio-install

studio_sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1  # macOS has no sha256sum
  fi
}

# True when every extra in $1 (comma list) is in $2 (comma list).
studio_extras_within() {
  local extra
  for extra in ${1//,/ }; do
    case ",$2," in *",$extra,"*) ;; *) return 1 ;; esac
  done
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  rm -f "$studio_stamp"
fi

studio_want=$(studio_sha256 pyproject.toml)
studio_had="" studio_had_extras=""
if [ -f "$studio_stamp" ]; then
  read -r studio_had studio_had_extras <"$studio_stamp" || true
fi

if [ "$studio_had" != "$studio_want" ] || ! studio_extras_within "$studio_extras" "$studio_had_extras"; then
  echo "Installing the studio into .venv${studio_extras:+ with [$studio_extras]} (first start, or pyproject.toml changed)…" >&2
  # Keep the extras installed before while pyproject.toml is unchanged, so that run.sh after
  # test.sh doesn't drop the test extras from the stamp and make the next test.sh reinstall.
  if [ "$studio_had" = "$studio_want" ] && [ -n "$studio_had_extras" ]; then
    studio_extras=$studio_had_extras${studio_extras:+,$studio_extras}
  fi
  rm -f "$studio_stamp"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${studio_extras:+[$studio_extras]}"
  # Written only after pip succeeded, so a failed install is retried next time.
  echo "$studio_want $studio_extras" >"$studio_stamp"
fi
unset -f studio_sha256 studio_extras_within
unset studio_extras studio_stamp studio_want studio_had studio_had_extras
