#!/usr/bin/env bash
# The main job (README): install what is missing, build, and run `netsleuth demo` — build a lab
# cluster from network namespaces, break it, diagnose it, explain, clean up. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p netsleuth
exec target/release/netsleuth demo "$@"
