#!/usr/bin/env bash
# Installs what the tests and the benchmark need on a fresh Debian 12 machine, and
# reserves hugepages for DPDK. Idempotent: does nothing that is already done.
# Fails loudly (non-zero, with the reason) when something cannot be installed.
set -euo pipefail

need_pkgs=()
command -v dpdk-testpmd >/dev/null || need_pkgs+=(dpdk)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v jq >/dev/null || need_pkgs+=(jq)
# The Linux guests of scripts/guest-e2e.sh (QEMU TCG, a busybox initramfs).
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
{ command -v busybox >/dev/null && ! ldd "$(command -v busybox)" >/dev/null 2>&1; } \
  || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup-host: installing ${need_pkgs[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: FAIL: need root to install ${need_pkgs[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || { echo "setup-host: FAIL: apt-get update" >&2; exit 1; }
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
    || { echo "setup-host: FAIL: apt-get install ${need_pkgs[*]}" >&2; exit 1; }
fi
command -v dpdk-testpmd >/dev/null || { echo "setup-host: FAIL: dpdk-testpmd still missing" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "setup-host: FAIL: qemu-system-x86_64 still missing" >&2; exit 1; }
# The guests' kernel: the Debian cloud kernel package, cached under target/guest.
kernel_deb=$("$(dirname "$0")/guest/fetch-kernel.sh") \
  || { echo "setup-host: FAIL: cannot fetch the guest kernel package" >&2; exit 1; }

# Hugepages for DPDK (2 MiB pages; testpmd uses -m 512 per instance).
want=${TWIN_HUGEPAGES:-1024}
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "$want" > /proc/sys/vm/nr_hugepages || true
  have=$(cat /proc/sys/vm/nr_hugepages)
  [ "$have" -ge 512 ] || { echo "setup-host: FAIL: only $have hugepages could be reserved (want $want)" >&2; exit 1; }
fi
if ! grep -q ' /dev/hugepages hugetlbfs' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages || { echo "setup-host: FAIL: cannot mount hugetlbfs" >&2; exit 1; }
fi
echo "setup-host: ok (dpdk-testpmd $(dpdk-testpmd --version 2>/dev/null | head -1 || true), $have hugepages, guest kernel $(basename "$kernel_deb"))"
