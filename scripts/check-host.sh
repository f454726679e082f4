#!/usr/bin/env bash
# Verifies that every external program the tests, the demo and the benchmark run
# comes from a package that scripts/setup-host.sh installs itself, so that a test
# can never pass only because the machine happened to have a package already (the
# trap that hid `dpdk-testpmd` moving from `dpdk` to `dpdk-dev`).
#
# For each program in scripts/host-programs:
#   * it is on the PATH;
#   * `dpkg -S` names its owner (through symlinks, alternatives and the merged /usr);
#   * that owner is in `scripts/setup-host.sh --list-packages`.
# And in the sources:
#   * every `Command::new("PROGRAM")` in crates/ names a declared program (the
#     scripts declare theirs through `require_programs`, which refuses the others).
#
# Runs first in scripts/test.sh, after setup. Fails with one line per problem,
# naming the program and the package. For the check's own test, the inputs can be
# replaced: TWIN_SETUP_HOST (the setup script), TWIN_HOST_PROGRAMS (the list).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
setup=${TWIN_SETUP_HOST:-$repo/scripts/setup-host.sh}
programs=${TWIN_HOST_PROGRAMS:-$repo/scripts/host-programs}

mapfile -t setup_pkgs < <("$setup" --list-packages) \
  || { echo "check-host: FAIL: $setup --list-packages failed" >&2; exit 1; }
in_setup() {
  local p
  for p in "${setup_pkgs[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}

# owner PATH: the package that ships PATH, trying the path as found, its target,
# and their twins across the merged /usr (/usr/bin/x is shipped as /bin/x).
owner() {
  local cand c out
  local -a cands=("$1" "$(readlink -f "$1")")
  for c in "${cands[@]}"; do
    case "$c" in
      /usr/bin/* | /usr/sbin/* | /usr/lib/*) cands+=("${c#/usr}") ;;
      /bin/* | /sbin/* | /lib/*) cands+=("/usr$c") ;;
    esac
  done
  for cand in "${cands[@]}"; do
    # "pkg[:arch][, pkg2]: /path"; diversions ("diversion by ...") are skipped.
    out=$(dpkg -S "$cand" 2>/dev/null | grep -v '^diversion' | head -1) || true
    if [ -n "$out" ]; then
      out=${out%%: /*}
      out=${out%%,*}
      echo "${out%%:*}"
      return 0
    fi
  done
  return 1
}

problems=()
declared=()
while read -r prog pkg used_by; do
  case "$prog" in '' | '#'*) continue ;; esac
  declared+=("$prog")
  path=$(command -v "$prog" 2>/dev/null || true)
  # A shell builtin (kill) answers `command -v` with its name: find the file.
  [ "${path#/}" != "$path" ] || path=$(type -P "$prog" 2>/dev/null || true)
  if [ -z "$path" ]; then
    if in_setup "$pkg" && [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
      problems+=("$prog ($used_by) is not installed, nor is its package $pkg: run scripts/setup-host.sh (as root) first")
    elif in_setup "$pkg"; then
      problems+=("$prog ($used_by) is not installed, although package $pkg is: $pkg does not provide it; find the package that does, and list that one in scripts/setup-host.sh and scripts/host-programs")
    else
      problems+=("$prog ($used_by) is not installed: scripts/setup-host.sh must install package $pkg")
    fi
    continue
  fi
  if ! own=$(owner "$path"); then
    problems+=("$prog ($path) belongs to no Debian package (dpkg -S): install it from package $pkg through scripts/setup-host.sh, not by hand")
    continue
  fi
  if ! in_setup "$own"; then
    problems+=("$prog ($path, $used_by) is provided by package $own, which scripts/setup-host.sh does not install: add $own to its package list")
  elif [ "$own" != "$pkg" ]; then
    problems+=("$prog ($path) is provided by package $own, but scripts/host-programs expects $pkg: correct the list")
  fi
done <"$programs"

is_declared() {
  local p
  for p in "${declared[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}
while read -r prog; do
  is_declared "$prog" || problems+=("$prog is run by the Rust code (Command::new(\"$prog\")) but not declared in scripts/host-programs")
done < <(grep -rhoE 'Command::new\("[^"]+"\)' "$repo/crates" --include='*.rs' \
  | sed -E 's/Command::new\("([^"]+)"\)/\1/' | sort -u)

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "check-host: FAIL: $p" >&2; done
  exit 1
fi
echo "check-host: ok (${#declared[@]} programs, each from a package scripts/setup-host.sh installs)"
