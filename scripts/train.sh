#!/usr/bin/env bash
# Set up a virtual environment, install lben-ode and train the default model on the embedded
# handwritten-digits data (no download). Extra arguments go to `lben-ode fit`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# An explicit empty extras argument: otherwise `source` would hand this script's arguments to it.
source "$root/scripts/setup-env.sh" ""
cd "$root"
lben-ode fit "$@"
