#!/usr/bin/env bash
# make budgets: the figures that do not depend on timing, against their
# budgets, so that they cannot grow unseen. (The monitor's memory beside
# guest RAM is checked in the test host: the e2e scenario
# monitor-memory-budget.)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rc=0
# check NAME BYTES BUDGET
check() {
  if [ "$2" -gt "$3" ]; then
    echo "budget: $1 is $2 bytes, over its budget of $3" >&2; rc=1
  else
    printf 'budget: %-32s %9d bytes (budget %d)\n' "$1" "$2" "$3"
  fi
}
stripped() { local t; t=$(mktemp); strip -o "$t" "$1"; stat -c %s "$t"; rm -f "$t"; }
check "microrun binary (stripped)" "$(stripped "$top/target/x86_64-unknown-linux-gnu/release/microrun")" $((5 * 1024 * 1024))
check "guest initramfs" "$(stat -c %s "$top/build/initramfs.cpio")" $((5 * 1024 * 1024))
exit $rc
