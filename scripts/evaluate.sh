#!/usr/bin/env bash
# Regenerates docs/evaluation.md (its results section), docs/evaluation/*.svg and
# docs/evaluation/results.json with the full benchmark matrix (~12 minutes).
# Run on a quiet machine: anything else running moves the numbers.
# Extra arguments go to `twin bench` (e.g. --repeat 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
cargo build --release -p twin-cli
exec target/release/twin bench --report docs/evaluation.md "$@"
