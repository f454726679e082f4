#!/usr/bin/env bash
# Builds the test guest into the guest cache (TWIN_GUEST_DIR, default target/guest):
#   vmlinuz    the Debian cloud kernel (scripts/guest/fetch-kernel.sh fetches its .deb)
#   initrd.gz  busybox, the virtio_pci / virtio_net / qemu_fw_cfg modules (with their
#              dependencies, in load order), iperf3 and its libraries, and
#              scripts/guest/init as /init
# Rebuilds only when an input changed (kernel package, busybox, iperf3, init, this
# script). Needs busybox-static, cpio, kmod (depmod, modprobe) and iperf3
# (scripts/setup-host.sh installs them). Concurrent runs are serialised by a lock.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${TWIN_GUEST_DIR:-$repo/target/guest}
mkdir -p "$dir"

fail() { echo "guest-build: FAIL: $*" >&2; exit 1; }

# shellcheck source=../lib/programs.sh
. "$repo/scripts/lib/programs.sh"
require_programs busybox cpio depmod modprobe iperf3 gzip dpkg-deb ldd sha256sum flock find xz zstd
busybox_bin=$(command -v busybox)
# A dynamically linked busybox would need its libraries in the guest.
if ldd "$busybox_bin" >/dev/null 2>&1; then
  fail "$busybox_bin is dynamically linked: install busybox-static"
fi

exec 9>"$dir/.build.lock"
flock 9

deb=$("$here/fetch-kernel.sh")
[ -f "$deb" ] || fail "no kernel package ($deb)"

inputs=$( {
  basename "$deb"
  sha256sum "$here/init" "$here/build.sh" "$busybox_bin" /usr/bin/iperf3
} | sha256sum | cut -d' ' -f1)
if [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.gz" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$inputs" ]; then
  exit 0
fi

echo "guest-build: building the guest from $(basename "$deb")" >&2
work=$(mktemp -d "$dir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

dpkg-deb -x "$deb" "$work/kernel"
kver=$(ls "$work/kernel/lib/modules" | head -1)
if [ -z "$kver" ] || [ ! -f "$work/kernel/boot/vmlinuz-$kver" ]; then fail "no kernel in $(basename "$deb")"; fi
depmod -b "$work/kernel" "$kver" # the .deb ships no modules.dep

r=$work/root
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/modules}
cp "$busybox_bin" "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$r/bin/$applet"
done

# Modules and their dependencies, in load order (/lib/modules/load.order).
: >"$r/lib/modules/load.order"
for m in virtio_pci virtio_net qemu_fw_cfg; do
  deps=$(modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }')
  [ -n "$deps" ] || fail "module $m not found in $kver"
  for f in $deps; do
    b=$(basename "$f"); b=${b%.ko*}
    grep -qx "$b" "$r/lib/modules/load.order" && continue
    case "$f" in
      *.ko) cp "$f" "$r/lib/modules/$b.ko" ;;
      *.ko.xz) xz -dc "$f" >"$r/lib/modules/$b.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$r/lib/modules/$b.ko" ;;
      *) fail "unknown module format: $f" ;;
    esac
    echo "$b" >>"$r/lib/modules/load.order"
  done
done

# iperf3 and the shared libraries it links (with the loader).
cp /usr/bin/iperf3 "$r/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
  mkdir -p "$r$(dirname "$lib")"
  cp -L "$lib" "$r$lib"
done

echo "root:x:0:0:root:/:/bin/sh" >"$r/etc/passwd"
echo "root:x:0:" >"$r/etc/group"
printf '127.0.0.1 localhost\n' >"$r/etc/hosts"
cp "$here/init" "$r/init"
chmod +x "$r/init"

(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
mv "$work/vmlinuz" "$dir/vmlinuz"
mv "$work/initrd.gz" "$dir/initrd.gz"
echo "$kver" >"$dir/kernel-version"
echo "$inputs" >"$dir/stamp"
echo "guest-build: $dir/vmlinuz ($kver), $dir/initrd.gz ($(du -k "$dir/initrd.gz" | cut -f1) KiB)" >&2
