#!/usr/bin/env bash
# Runs every test of the project: installs what a fresh machine lacks (DPDK, QEMU, the
# guest kernel package, hugepages), builds, checks formatting and lints, then runs unit
# and end-to-end tests. The end-to-end tests start real processes (the switch, the
# software NIC, generators, DPDK testpmd, and Linux guests under QEMU TCG through
# scripts/guest-e2e.sh) and fail, never skip, when a peer is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-host.sh
# First check: every external program a test runs comes from a package that
# setup-host.sh installs itself (not from whatever this machine already had).
./scripts/check-host.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
# One test at a time: end-to-end tests busy-poll and the machine has two cores.
cargo test --workspace --release --no-fail-fast -- --test-threads=1
# A short run of every fuzz target (about a minute each); scripts/fuzz.sh --full
# makes the 10-million-execution runs recorded in docs/security.md.
./scripts/fuzz.sh --smoke
