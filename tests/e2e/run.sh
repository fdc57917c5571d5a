#!/usr/bin/env bash
# make e2e: stage the freshly built artifacts, boot the emulated test host,
# run the suite there, and always end QEMU.
#
# Nested virtualization under TCG sometimes wedges the emulated host itself
# (soft lockups of its CPUs while they run a microVM; the host then panics,
# see softlockup_panic in testhost). That is a failure of the emulator, not
# of the scenario, so the suite resumes on a fresh boot: scenarios with a
# result are kept, the interrupted one runs once more, and a scenario that
# takes the host down twice counts as failed. So does the scenario whose
# failure came last before the host died, once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
share=${MICRORUN_E2E_SHARE:-$top/build/share}
results=$share/e2e-results
bash "$here/stage.sh" "$share"
: >"$results"
rm -f "$share/conformance-report.txt"
trap 'bash "$here/testhost" down' EXIT

# The scenario that was running when the host was lost, if any.
interrupted() {
  awk '$1=="start"{s=$2} $1=="ok"||$1=="FAIL"{if($2==s)s=""} END{print s}' "$results"
}

# The scenario whose failure is the last result before the host was lost,
# if any: a dying host wedges a microVM's vCPU (still runnable, no progress)
# for a while before its kernel gives up, so that failure is the host's.
failed_last() {
  awk '$1=="ok"||$1=="skip"{s=""} $1=="FAIL"{s=$2} END{print s}' "$results"
}

# A host can also wedge and still answer ssh: a CPU that never comes back
# from a microVM leaves every task that waits on it (an IPI, an RCU grace
# period) stuck in the kernel, even a scenario its time limit has killed,
# so the suite neither ends nor fails. Each scenario writes to the results
# file at least every E2E_SCENARIO_TIMEOUT (600 s) plus its kill grace; a
# file unchanged for much longer means the host is lost like one whose ssh
# died: show what its kernel says, drop the session; the loop below ends
# the host and resumes on a fresh boot.
stall_limit=$(( ${E2E_SCENARIO_TIMEOUT:-600} + 300 ))
suite() {
  bash "$here/testhost" run "E2E_RESULTS=/mnt/share/e2e-results E2E_ONLY='${E2E_ONLY:-}' bash /mnt/share/e2e/suite.sh" &
  local pid=$! age
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    age=$(( $(date +%s) - $(stat -c %Y "$results") ))
    [ "$age" -gt "$stall_limit" ] || continue
    echo "e2e: no result for ${age}s; the test host is wedged. Its blocked tasks and kernel log:" >&2
    timeout 60 bash "$here/testhost" run \
      'ps -eo pid,stat,wchan:30,args | awk "NR==1 || \$2 ~ /D/" | cut -c1-150; dmesg | grep -vE "docker0|veth|eth0|promiscuous|ADDRCONF" | tail -40' 2>&1 |
      sed 's/^/  | /' >&2 || true
    pkill -P "$pid" ssh || true
    wait "$pid" || true
    return 255
  done
  wait "$pid"
}

declare -A lost=()
for attempt in 1 2 3 4; do
  # A boot that fails (seen once: dockerd never answered) gets one more.
  timeout 1500 bash "$here/testhost" up "$share" ||
    { bash "$here/testhost" down; timeout 1500 bash "$here/testhost" up "$share"; }
  rc=0
  suite || rc=$?
  [ "$rc" -eq 255 ] || exit "$rc"
  # ssh lost the host: show why, then resume on a fresh boot.
  # QEMU still running means the host stopped answering (no panic, ssh's
  # keepalive gave up); exited, that it panicked or QEMU itself died.
  echo "e2e: lost the test host (attempt $attempt; $(bash "$here/testhost" status || true)," \
    "$(( $(date +%s) - $(stat -c %Y "$results") ))s after the last result); its console ends with:" >&2
  bash "$here/testhost" console | grep -v "TCG doesn't support" | tail -25 | sed 's/^/  | /' >&2
  bash "$here/testhost" down
  f=$(failed_last)
  if [ -n "$f" ] && ! grep -qE "^(rerun|retry) $f( |\$)" "$results"; then
    # Run it once more on the fresh host; a second failure counts.
    sed -i "/^FAIL $f /d; /^start $f\$/d" "$results"
    echo "rerun $f (a failure just before the test host died)" >>"$results"
  fi
  s=$(interrupted)
  if [ -n "$s" ]; then
    if [ -n "${lost[$s]:-}" ]; then
      echo "FAIL $s 0 255 (took the test host down twice)" >>"$results"
    else
      lost[$s]=1
      # Forget the start so the resumed suite runs it again.
      echo "retry $s" >>"$results"
      sed -i "/^start $s\$/d" "$results"
    fi
  fi
done
echo "e2e: the test host kept dying; giving up" >&2
exit 1
