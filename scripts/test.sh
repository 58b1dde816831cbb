#!/usr/bin/env bash
# Set up a virtual environment, install lben-ode from its wheel (not the source tree) and run the
# linter and the test suite against the installed package.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup-env.sh" test
cd "$root"
ruff check .
LBEN_ODE_EXPECT_INSTALLED=1 pytest "$@"
