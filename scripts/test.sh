#!/usr/bin/env bash
# The test command (README): installs what is missing, then runs every test the project has.
# Tests that build network namespaces need root; run as root (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo test --workspace --locked 2>&1
