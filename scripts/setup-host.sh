#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh Debian 12
# machine, reserves hugepages for DPDK and fetches the guest kernel package.
# Idempotent: does nothing that is already done. Fails loudly (non-zero, with the
# reason) when something cannot be installed.
#
#   scripts/setup-host.sh                  set the machine up (as root)
#   scripts/setup-host.sh --list-packages  print the packages it installs, one a line
#
# What it changes on the machine:
#   * installs the Debian packages below (apt-get, with their dependencies);
#   * reserves TWIN_HUGEPAGES (default 1024) 2 MiB hugepages, 2 GiB, and mounts
#     hugetlbfs at /dev/hugepages if nothing is mounted there;
#   * downloads the Debian cloud kernel package into target/guest (about 70 MB with
#     what scripts/guest/build.sh makes of it).
set -euo pipefail

# Every package providing a program listed in scripts/host-programs.
# scripts/check-host.sh fails when a listed program is owned by a package missing here.
packages=(
  dpdk-dev        # dpdk-testpmd (in bookworm's 22.11.11 it is no longer in `dpdk`)
  qemu-system-x86 # qemu-system-x86_64
  iperf3
  netsniff-ng # trafgen: the kernel-forwarding rows of scripts/bench-kernel.sh
  busybox-static
  cpio
  kmod   # depmod, modprobe
  dash   # sh
  dpkg   # dpkg-deb
  apt    # apt-get, apt-cache
  libc-bin
  gzip
  xz-utils
  zstd
  util-linux # flock
  bash
  procps # kill
  iproute2 # ip: network namespaces and interfaces in the kernel-uplink tests
  iputils-ping # ping: traffic from the kernel side of a TAP uplink
  ethtool # ethtool: checksum offload off on a veth whose far end is a local stack (scripts/guest-kernel.sh)
  jq
  grep
  sed
  mawk
  findutils
  coreutils
  g++ # libFuzzer's runtime for scripts/fuzz.sh
  prometheus # promtool: checks the switch's metrics endpoint (crates/cli/tests/metrics.rs)
  tcpdump # reads back a port's capture (crates/cli/tests/capture.rs)
  systemd # systemd-analyze: checks the service unit (crates/cli/tests/service_unit.rs)
)

if [ "${1:-}" = --list-packages ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

fail() { echo "setup-host: FAIL: $*" >&2; exit 1; }

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

need_pkgs=()
for p in "${packages[@]}"; do installed "$p" || need_pkgs+=("$p"); done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup-host: installing ${need_pkgs[*]}"
  [ "$(id -u)" = 0 ] || fail "need root to install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update"
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
    || fail "apt-get install ${need_pkgs[*]}"
  for p in "${need_pkgs[@]}"; do installed "$p" || fail "package $p is still not installed"; done
fi

# The guests' kernel: the Debian cloud kernel package, cached under target/guest.
kernel_deb=$("$(dirname "$0")/guest/fetch-kernel.sh") || fail "cannot fetch the guest kernel package"

# Hugepages for DPDK (2 MiB pages; testpmd uses -m 512 per instance).
want=${TWIN_HUGEPAGES:-1024}
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "$want" >/proc/sys/vm/nr_hugepages || true
  have=$(cat /proc/sys/vm/nr_hugepages)
  [ "$have" -ge 512 ] || fail "only $have hugepages could be reserved (want $want)"
fi
if ! grep -q ' /dev/hugepages hugetlbfs' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages || fail "cannot mount hugetlbfs"
fi
echo "setup-host: ok (dpdk-dev $(dpkg-query -W -f='${Version}' dpdk-dev), $have hugepages, guest kernel $(basename "$kernel_deb"))"
