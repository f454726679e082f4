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
# The output is kept in target/test-output.log; a digest of the failures is printed
# last, so that a log cut to its beginning and end still says what failed.
log=target/test-output.log
mkdir -p target
test_rc=0
cargo test --workspace --release --no-fail-fast -- --test-threads=1 2>&1 | tee "$log" || test_rc=$?
# A short run of every fuzz target (about a minute each); scripts/fuzz.sh --full
# makes the 10-million-execution runs recorded in docs/security.md.
fuzz_rc=0
./scripts/fuzz.sh --smoke || fuzz_rc=$?
# `cargo install` as docs/operations.md has an operator run it, into a scratch
# root (reusing this build's artifacts); the installed binary runs.
install_rc=0
install_root=$(mktemp -d)
{ cargo install --locked --quiet --path crates/cli --root "$install_root" --target-dir target \
    && "$install_root/bin/twin" --version; } || install_rc=$?
rm -rf "$install_root"

if [ "$test_rc" != 0 ]; then
  echo "==== failed tests (cargo test exit $test_rc; whole output in $log):"
  # Each failed test's name and the first lines of its panic message.
  awk '
    /^---- .* stdout ----$/ { name = $2; grab = 0; next }
    name != "" && index($0, "thread \x27" name "\x27") == 1 && /panicked at / { print "-- " $0; grab = 14; next }
    grab > 0 { if ($0 == "" || $0 ~ /^note: / || $0 ~ /^stack backtrace:/) grab = 0; else { print "   " $0; grab-- } }
  ' "$log" | head -60
  grep -E '^error: [0-9]+ targets? failed|^    `-p ' "$log" | head -10 || true
fi
[ "$fuzz_rc" = 0 ] || echo "==== scripts/fuzz.sh --smoke failed (exit $fuzz_rc)"
[ "$install_rc" = 0 ] || echo "==== cargo install --path crates/cli failed (exit $install_rc)"
[ "$test_rc" = 0 ] && [ "$fuzz_rc" = 0 ] && [ "$install_rc" = 0 ]
