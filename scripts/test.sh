#!/usr/bin/env bash
# The test command (README): installs what is missing, then runs every test the project has —
# unit, golden and real-kernel tests (network namespaces: needs root, as CI runs), then a short
# fuzz run of every parser.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Lab tests of other crates start pod listeners from the lab's own binary.
cargo build --locked -p lab --bins
cargo test --workspace --locked 2>&1
scripts/fuzz-smoke.sh
