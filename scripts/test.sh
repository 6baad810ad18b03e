#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite
# on every built backend. Extra arguments go to ctest, e.g. -L libev.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release "$@"
