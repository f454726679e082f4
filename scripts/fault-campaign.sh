#!/usr/bin/env bash
# The fault campaign: TWIN_FAULTS (default 2000) driver-domain and twin faults of
# every kind, round-robin, with two clients attached and traffic flowing
# (crates/cli/tests/fault_campaign.rs). Prints the recovery time p50/p99/max per
# kind and over all; fails on any switch crash, client disconnect or unrecovered
# fault. About 0.6 s per fault (some 25 minutes for 2000): faults in a row meet
# the restart backoff's 500 ms ceiling. The test command runs it with 22 faults.
set -euo pipefail
cd "$(dirname "$0")/.."
export TWIN_FAULTS=${TWIN_FAULTS:-2000}
exec cargo test --release -p twin-cli --test fault_campaign -- --nocapture --test-threads=1 2>&1 \
  | grep -v -E '^\S*[0-9]{4}-[0-9]{2}-[0-9]{2}T.* (INFO|WARN) '
