#!/usr/bin/env bash
# Fetches the Debian cloud kernel package for the test guests into the project's
# guest cache (TWIN_GUEST_DIR, default target/guest), unless it is already there.
# Prints the path of the .deb on stdout. Idempotent; fails loudly (non-zero, with the
# reason) when the package cannot be had. Nothing it fetches is ever committed
# (target/ is ignored).
#
# The kernel is the package that the meta-package linux-image-cloud-amd64 depends
# on (for example linux-image-6.1.0-56-cloud-amd64): a small kernel with virtio_pci,
# virtio_net and qemu_fw_cfg as modules.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${TWIN_GUEST_DIR:-$repo/target/guest}
debs=$dir/deb
mkdir -p "$debs"

fail() { echo "fetch-kernel: FAIL: $*" >&2; exit 1; }
# shellcheck source=../lib/programs.sh
. "$repo/scripts/lib/programs.sh"
require_programs apt-get apt-cache awk find

resolve() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# try: prints the cached or freshly downloaded .deb of the package the meta-package
# depends on now; fails when that cannot be had.
try() {
  local pkg cached tmp
  pkg=$(resolve || true)
  [ -n "$pkg" ] || return 1
  cached=$(ls "$debs/${pkg}"_*.deb 2>/dev/null | head -1 || true)
  if [ -n "$cached" ]; then echo "$cached"; return 0; fi
  echo "fetch-kernel: downloading $pkg into $debs" >&2
  tmp=$(mktemp -d "$debs/.dl.XXXXXX")
  # apt-get download writes into the current directory; as root it would warn that
  # the _apt sandbox user cannot write there, so it downloads as root on purpose.
  if (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
    # Keep one kernel: drop the ones the archive has moved on from.
    find "$debs" -maxdepth 1 -name 'linux-image-*.deb' ! -name "${pkg}_*" -delete
    mv "$tmp"/*.deb "$debs/"
    rmdir "$tmp"
    ls "$debs/${pkg}"_*.deb | head -1
    return 0
  fi
  rm -rf "$tmp"
  echo "fetch-kernel: apt-get download $pkg failed" >&2
  return 1
}

try && exit 0
# A fresh machine may have no package lists yet, or stale ones.
if [ "$(id -u)" = 0 ]; then
  echo "fetch-kernel: apt-get update" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
  try && exit 0
fi

# The archive may be unreachable: any cached cloud kernel will do.
cached=$(ls -t "$debs"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1 || true)
[ -n "$cached" ] || fail "no cloud kernel package: apt-cache depends linux-image-cloud-amd64 \
gave '$(resolve || true)', apt-get download failed, and nothing is cached in $debs \
(run scripts/setup-host.sh as root)"
echo "fetch-kernel: using the cached $(basename "$cached")" >&2
echo "$cached"
