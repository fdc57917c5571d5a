#!/usr/bin/env bash
# Scenario helpers for the suite that runs inside the test host.
PASS=0; FAIL=0; FAILED=(); SKIPPED=()
export MR=/mnt/share/bin/microrun
export SHARE=/mnt/share/share/microrun
LOGDIR=/tmp/e2e-logs
mkdir -p "$LOGDIR"

# scenario NAME FUNCTION: runs FUNCTION, counts it, shows its log on failure.
scenario() {
  local name=$1 fn=$2 log="$LOGDIR/$1.log" t0 rc
  # E2E_ONLY=REGEX runs only the scenarios whose names match.
  if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then return 0; fi
  t0=$(date +%s.%N)
  # Each scenario runs in its own shell with a time limit, so a hang fails
  # that scenario instead of the whole suite.
  timeout -k 10 "${E2E_SCENARIO_TIMEOUT:-600}" bash -ec "$(declare -f); $fn" >"$log" 2>&1 </dev/null && rc=0 || rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  if [ $rc -eq 0 ]; then
    PASS=$((PASS+1)); echo "ok   $name (${dt}s)"
  else
    FAIL=$((FAIL+1)); FAILED+=("$name"); echo "FAIL $name (${dt}s, exit $rc)"
    sed 's/^/     | /' "$log" | tail -40
  fi
}

# parity NAME -- DOCKER_RUN_ARGS...: the same docker run under runc and
# microrun must give the same output and exit status.
parity() {
  local out_runc out_mr rc_runc rc_mr
  out_runc=$(docker run --rm --runtime runc "$@" 2>&1) && rc_runc=0 || rc_runc=$?
  out_mr=$(docker run --rm --runtime microrun "$@" 2>&1) && rc_mr=0 || rc_mr=$?
  echo "runc     (exit $rc_runc): $out_runc"
  echo "microrun (exit $rc_mr): $out_mr"
  [ "$rc_runc" = "$rc_mr" ] && [ "$out_runc" = "$out_mr" ]
}

# fails CMD...: CMD must exit non-zero (`! CMD` does not trip `set -e`).
fails() {
  if "$@" >/dev/null 2>&1; then echo "expected to fail: $*"; return 1; fi
}

# known_failing NAME REASON: a scenario that is written but does not pass
# yet; it is listed (not run) so the summary says so. E2E_ONLY runs it.
known_failing() {
  if [ -n "${E2E_ONLY:-}" ] && [[ $1 =~ $E2E_ONLY ]]; then scenario "$1" "$3"; return; fi
  SKIPPED+=("$1: $2"); echo "skip $1 (known failing: $2)"
}

expect_eq() {
  if [ "$1" != "$2" ]; then echo "expected: $2"; echo "got:      $1"; return 1; fi
}

summary() {
  echo
  echo "$PASS passed, $FAIL failed, ${#SKIPPED[@]} known failing"
  for k in "${SKIPPED[@]}"; do echo "  known failing: $k"; done
  [ $FAIL -eq 0 ]
}
