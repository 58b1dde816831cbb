#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install lben-ode from a freshly built wheel.
# Usage: source scripts/setup-env.sh [extras]   e.g. "test"
# Environment: LBEN_VENV (default .venv), LBEN_TORCH (default torch==2.13.0; set to e.g. "torch"
# for the newest release, which on Linux is a CUDA build of several GB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LBEN_VENV:-$root/.venv}"
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# torch first and pinned: an unpinned torch pulled in as a dependency would be a multi-GB CUDA build.
"${pip[@]}" install "${LBEN_TORCH:-torch==2.13.0}"
rm -rf "$root/build" "$root/dist"
"${pip[@]}" wheel --no-deps --no-build-isolation -w "$root/dist" "$root" 2>/dev/null \
  || "${pip[@]}" wheel --no-deps -w "$root/dist" "$root"
# The build leaves metadata in the source tree, where it could pass for an installed copy.
rm -rf "$root"/*.egg-info "$root/build"
wheel="$(ls "$root"/dist/lben_ode-*.whl)"
"${pip[@]}" install --force-reinstall --no-deps "$wheel"
"${pip[@]}" install "${wheel}${extras:+[$extras]}"
export PATH="$venv/bin:$PATH"
