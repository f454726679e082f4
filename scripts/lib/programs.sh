# Sourced by the project's scripts: the external programs they run, checked against
# scripts/host-programs (the list that scripts/check-host.sh verifies).
#
#   require_programs PROGRAM...
#
# fails (exit 1, with the reason) when a PROGRAM is not declared in
# scripts/host-programs, which would let a script depend on a program that no step
# installs, or when it is not on the PATH.

twin_host_programs=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/host-programs

require_programs() {
  local p missing=()
  for p in "$@"; do
    if ! awk -v p="$p" '$1 == p { found = 1 } END { exit !found }' "$twin_host_programs"; then
      echo "$(basename "$0"): FAIL: '$p' is not declared in scripts/host-programs;" \
        "add it with the package that provides it, and that package to scripts/setup-host.sh" >&2
      exit 1
    fi
    command -v "$p" >/dev/null || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$(basename "$0"): FAIL: missing ${missing[*]}: run scripts/setup-host.sh (as root)" >&2
    exit 1
  fi
}
