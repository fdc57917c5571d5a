#!/usr/bin/env bash
# make soak: SOAK_VMS (default 500) microVMs, one after another, in the
# emulated test host (tests/e2e/guest/churn.sh), resuming on a fresh host
# when the host is lost; then the counts: microVMs that ended well, guest
# resets and other failures per 1000, hosts lost, the host's own kernel
# faults, and the census of leftovers before and after each run.
# MICRORUN_QEMU picks the emulator (scripts/qemu-stable.sh for 7.2);
# MICRORUN_E2E_WORKAROUNDS the test host's workarounds (default none;
# see tests/e2e/guest/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
share=$top/build/share
results=$share/soak-results
want=${SOAK_VMS:-500}
bash "$here/stage.sh" "$share"
# SOAK_RESUME=1 goes on from the results of an earlier run.
[ -n "${SOAK_RESUME:-}" ] || { : >"$results"; : >"$results.log"; }
trap 'bash "$here/testhost" down' EXIT
started=$(date +%s)
for attempt in $(seq 1 20); do
  have=$(grep -c '^vm ' "$results" || true)
  [ "$have" -lt "$want" ] || break
  timeout 1500 bash "$here/testhost" up "$share" ||
    { bash "$here/testhost" down; timeout 1500 bash "$here/testhost" up "$share"; }
  if timeout $(( (want - have) * 60 + 600 )) bash "$here/testhost" run \
      "MICRORUN_E2E_WORKAROUNDS='${MICRORUN_E2E_WORKAROUNDS-}' bash /mnt/share/e2e/churn.sh $((want - have)) /mnt/share/soak-results"; then
    continue
  fi
  echo "soak: lost the test host after $(grep -c '^vm ' "$results" || true) microVMs; its console ends with:" >&2
  bash "$here/testhost" console | grep -v "TCG doesn't support" | tail -8 | sed 's/^/  | /' >&2 || true
  echo "lost after $(grep -c '^vm ' "$results" || true) microVMs; QEMU $(bash "$here/testhost" status 2>&1 || true)" >>"$results"
  n=$(bash "$here/testhost" console | grep -cE "soft lockup|rcu: INFO|BUG:|Kernel panic" || true)
  [ "$n" -eq 0 ] || echo "host-fault the console of the lost host: $n lines of soft lockups, stalls, BUGs or panics" >>"$results"
  bash "$here/testhost" down
done
qemu="$(cat "$top/build/testhost/qemu-version" 2>/dev/null || echo unknown), workarounds: ${MICRORUN_E2E_WORKAROUNDS:-none}"
awk -v qemu="$qemu" -v secs="$(( $(date +%s) - started ))" '
  $1 == "vm" { n++; v[$4]++; t += $5 }
  $1 == "census" { print "  " $0 }
  $1 == "host-fault" { hf++; print "  " $0 }
  $1 == "lost" { lost++; print "  " $0 }
  END {
    printf "soak (%s): %d microVMs (this run: %d s), %.2f s each, %d ok, %d guest resets (%.1f per 1000), %d other failures (%.1f per 1000), %d hosts lost, %d host-kernel fault lines\n",
      qemu, n, secs, n ? t / n : 0, v["ok"], v["reset"], n ? 1000 * v["reset"] / n : 0, v["fail"], n ? 1000 * v["fail"] / n : 0, lost, hf
  }' "$results"
[ -s "$results.log" ] && { echo "failures:"; cat "$results.log"; }
# Leftovers: every census after a run must match the one before it.
awk '$1 == "census" && $2 == "before" { b = $0; sub(/^census before /, "", b); sub(/ dockerd_fds.*/, "", b) }
     $1 == "census" && $2 == "after" { a = $0; sub(/^census after /, "", a); sub(/ dockerd_fds.*/, "", a); if (a != b) { print "soak: leftovers: before " b ", after " a; bad = 1 } }
     END { exit bad }' "$results"
! grep -q ' fail ' "$results"
