#!/usr/bin/env bash
# Scenario helpers for the suite that runs inside the test host.
export MR=/mnt/share/bin/microrun
export SHARE=/mnt/share/share/microrun
LOGDIR=/tmp/e2e-logs
mkdir -p "$LOGDIR"
# One line per event, on the share so the machine outside sees it even if
# this host dies: "start NAME", then "ok NAME SECS" or "FAIL NAME SECS RC",
# or "skip NAME REASON". tests/e2e/run.sh keeps it on the share, so that a
# rerun after a test-host crash skips what already has a result; by hand,
# each run starts afresh.
RESULTS=${E2E_RESULTS:-$(mktemp /tmp/e2e-results.XXXXXX)}
touch "$RESULTS"

has_result() { grep -qE "^(ok|FAIL|skip) $1( |\$)" "$RESULTS"; }

# scenario NAME FUNCTION: runs FUNCTION, records it, shows its log on failure.
scenario() {
  local name=$1 fn=$2 log="$LOGDIR/$1.log" t0 rc
  # E2E_ONLY=REGEX runs only the scenarios whose names match.
  if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then return 0; fi
  if has_result "$name"; then return 0; fi
  echo "start $name" >>"$RESULTS"; sync "$RESULTS"
  t0=$(date +%s.%N)
  touch /tmp/e2e-scenario-start
  local up0; read -r up0 _ </proc/uptime
  # Each scenario runs in its own shell with a time limit, so a hang fails
  # that scenario instead of the whole suite.
  timeout -k 10 "${E2E_SCENARIO_TIMEOUT:-600}" bash -ec "$(declare -f); $fn" >"$log" 2>&1 </dev/null && rc=0 || rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  if [ $rc -eq 0 ]; then
    echo "ok $name $dt" >>"$RESULTS"; echo "ok   $name (${dt}s)"
  else
    local verdict=FAIL why=
    # A guest that triple-faults with nothing on its console is a fault of
    # this emulated host seen about once in 100-200 VMs, and so is a stall
    # of the host's own CPUs (docs/testing.md): such a scenario runs once
    # more, and the summary names it.
    if unexplained_reset "$name" "$log"; then
      why="a guest reset"
    elif host_stalled "$up0" >>"$log"; then
      why="a stall of the test host"
    fi
    if [ -n "$why" ] && ! grep -q "^rerun $name " "$RESULTS"; then
      verdict=rerun
      echo "rerun $name ($why)" >>"$RESULTS"
    else
      echo "FAIL $name $dt $rc" >>"$RESULTS"
    fi
    echo "$verdict $name (${dt}s, exit $rc)"
    sed 's/^/     | /' "$log" | tail -40
    # The guest consoles of the containers docker/containerd ran meanwhile.
    local c
    for c in $(find /tmp/e2e-consoles -name '*.log' -newer /tmp/e2e-scenario-start 2>/dev/null); do
      echo "     guest console of ${c##*/}:"
      tail -15 "$c" | sed 's/^/     # /'
    done
    if [ $verdict = rerun ]; then scenario "$name" "$fn"; fi
  fi
}

# unexplained_reset NAME LOG: the scenario failed because a VM reset that
# its test did not ask for (raw-cli-guest-reset reboots its guest itself).
unexplained_reset() {
  [ "$1" != raw-cli-guest-reset ] || return 1
  grep -qE "the VM ended (before its agent answered|while the container ran): Reset" "$2" ||
    grep -qs "shutdown exit" $(find /tmp/e2e-consoles -name '*.vmm.log' -newer /tmp/e2e-scenario-start 2>/dev/null) /dev/null
}

# host_stalled UPTIME: this host's own kernel reported a stall or a bug
# since UPTIME (a CPU of the emulated host stopped for seconds,
# docs/testing.md); prints what it said.
host_stalled() {
  dmesg | awk -v t="$1" '{ s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s); if (s + 0 >= t) print }' |
    grep -E "rcu: INFO: .*detected stall|soft lockup|BUG: " | sed 's/^/test host: /' | grep .
}

# parity DOCKER_RUN_ARGS...: the same docker run under runc and microrun
# must give the same output and exit status. stdout and stderr are separate
# streams under both, so a command must not rely on how they interleave.
parity() {
  local out_runc out_mr rc_runc rc_mr
  out_runc=$(docker run --rm --runtime runc "$@" 2>&1) && rc_runc=0 || rc_runc=$?
  out_mr=$(docker run --rm --runtime microrun "$@" 2>&1) && rc_mr=0 || rc_mr=$?
  agree "(exit $rc_runc): $out_runc" "(exit $rc_mr): $out_mr"
}

# agree RUNC_RESULT MICRORUN_RESULT: shows both; they must be the same.
agree() {
  echo "runc:     $1"
  echo "microrun: $2"
  [ "$1" = "$2" ]
}

# in_terminal SCRIPT: runs the bash SCRIPT with a terminal (script(1)), as
# a person at a tty would; prints its output without the CRs.
in_terminal() {
  local f; f=$(mktemp /tmp/e2e-tty.XXXXXX)
  printf '%s\n' "$1" >"$f"
  script -qec "bash $f" /dev/null | tr -d '\r'
  rm -f "$f"
}

# A busybox bundle for the raw CLI: bundle DIR ARGS-JSON
bundle() {
  local b=$1 args=$2 c
  rm -rf "$b"; mkdir -p "$b/rootfs"
  c=$(docker create local/busybox sh)
  docker export "$c" | tar -C "$b/rootfs" -x
  docker rm "$c" >/dev/null
  # No python here: edit the 2-space JSON `microrun spec` writes.
  local inner=${args#[}; inner=${inner%]}
  (cd "$b" && "$MR" spec && sed -i -e 's/"terminal": true/"terminal": false/' \
    -e "s|^      \"sh\"\$|      ${inner//&/\\&}|" config.json)
  grep -qF "$inner" "$b/config.json"
}

# add_bind BUNDLE SRC DEST [OPTION...]: a bind mount in a bundle's config.
add_bind() {
  local b=$1 src=$2 dest=$3 opts='"rbind"' o; shift 3
  for o in "$@"; do opts="$opts, \"$o\""; done
  sed -i "s|^  \"mounts\": \[\$|&\n    {\"destination\": \"$dest\", \"type\": \"bind\", \"source\": \"$src\", \"options\": [$opts]},|" "$b/config.json"
  grep -qF "\"source\": \"$src\"" "$b/config.json"
}

# fails CMD...: CMD must exit non-zero (`! CMD` does not trip `set -e`).
fails() {
  if "$@" >/dev/null 2>&1; then echo "expected to fail: $*"; return 1; fi
}

# known_failing NAME REASON FUNCTION: a scenario that is written but does
# not pass yet; it is listed (not run) so the summary says so. E2E_ONLY runs it.
known_failing() {
  if [ -n "${E2E_ONLY:-}" ] && [[ $1 =~ $E2E_ONLY ]]; then scenario "$1" "$3"; return; fi
  has_result "$1" || echo "skip $1 $2" >>"$RESULTS"
  echo "skip $1 (known failing: $2)"
}

# vmm_mem SMAPS: "RSS PSS ANON" in KiB of a VMM process, its guest RAM (the
# largest mapping) left out. ANON is what each further VM costs; RSS counts
# the code, which every monitor shares, in full; PSS counts its share.
vmm_mem() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / { n++ } /^Size:/ { size[n] = $2 } /^Rss:/ { rss[n] = $2 }
       /^Pss:/ { pss[n] = $2 } /^Anonymous:/ { anon[n] = $2 }
       END { g = 1; for (i = 1; i <= n; i++) if (size[i] > size[g]) g = i
             for (i = 1; i <= n; i++) if (i != g) { r += rss[i]; p += pss[i]; a += anon[i] }
             print r, p, a }' "$1"
}
expect_eq() {
  if [ "$1" != "$2" ]; then echo "expected: $2"; echo "got:      $1"; return 1; fi
}

# The totals over every attempt recorded in the results file.
summary() {
  local pass fail
  pass=$(grep -c '^ok ' "$RESULTS" || true)
  fail=$(grep -c '^FAIL ' "$RESULTS" || true)
  echo
  echo "$pass passed, $fail failed, $(grep -c '^skip ' "$RESULTS" || true) known failing"
  sed -n 's/^FAIL \([^ ]*\).*/  failed: \1/p; s/^skip \([^ ]*\) \(.*\)/  known failing: \1: \2/p
    s/^rerun \([^ ]*\) (\(.*\))/  run twice after \2: \1/p' "$RESULTS"
  [ "$fail" -eq 0 ]
}
