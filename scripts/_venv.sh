# Sourced by the scripts: create or reuse .venv and install the project into it.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS like "test" or "" for none)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
stamp="$VENV/.installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] \
        || [ "${BASH_SOURCE[0]}" -nt "$stamp" ]; then
    # editable_mode=compat: a plain .pth path rather than setuptools' import hook,
    # which would load pathlib, re and more into every process (and its memory).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=compat -e "$spec"
    touch "$stamp"
fi
