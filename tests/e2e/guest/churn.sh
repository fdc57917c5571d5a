#!/usr/bin/env bash
# churn.sh COUNT RESULTS: starts COUNT microVMs one after another in this
# test host, one in four through docker and the rest through the raw CLI,
# each streaming 20 000 lines of output (interrupts all the way) that must
# arrive intact, and appends one line per microVM to RESULTS:
#   vm N KIND ok|reset|fail SECONDS
# `reset` is a guest that ended in a shutdown exit nobody asked for (the
# emulated CPU's fault, docs/testing.md); `fail` anything else. Around the
# run it appends a census of what microrun leaves behind ("census before"
# / "census after") and the faults this host's own kernel reported.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
count=${1:?usage: churn.sh COUNT RESULTS}
out=${2:?usage: churn.sh COUNT RESULTS}
bash "$here/setup.sh"

census() {
  local dpid cpid
  dpid=$(pidof dockerd); cpid=$(pidof containerd)
  echo "monitors=$(pgrep -fc '[m]icrorun.* monitor ')" \
    "standins=$(pgrep -fc '[m]icrorun.* exec-standin')" \
    "state_dirs=$(( $(ls /run/microrun 2>/dev/null | wc -l) + $(ls /run/docker/runtime-microrun/moby 2>/dev/null | wc -l) ))" \
    "mounts=$(grep -c microrun /proc/self/mountinfo)" \
    "taps=$(ip -o link | grep -c mrtap)" \
    "cgroups=$(find /sys/fs/cgroup -type d -name '*microrun*' 2>/dev/null | wc -l)" \
    "dockerd_fds=$(ls /proc/$dpid/fd | wc -l)" "containerd_fds=$(ls /proc/$cpid/fd | wc -l)" \
    "mem_available_kib=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)"
}

b=/tmp/e2e-churn
bundle "$b" '["seq", "1", "20000"]'
want=$(seq 1 20000 | md5sum)
echo "census before $(census)" >>"$out"
read -r up0 _ </proc/uptime
done_n=$(grep -c '^vm ' "$out" || true)
for i in $(seq $((done_n + 1)) $((done_n + count))); do
  kind=raw; [ $((i % 4)) -eq 0 ] && kind=docker
  touch /tmp/e2e-scenario-start
  t0=$(date +%s.%N)
  if [ $kind = raw ]; then
    got=$(timeout -k 5 300 "$MR" run --bundle "$b" "churn-$i" 2>/tmp/churn.err </dev/null | md5sum)
    "$MR" delete --force "churn-$i" >/dev/null 2>&1 || true
  else
    got=$(timeout -k 5 300 docker run --rm --runtime microrun local/busybox seq 1 20000 2>/tmp/churn.err </dev/null | md5sum)
  fi
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  if [ "$got" = "$want" ]; then
    verdict=ok
  elif unexplained_reset churn /tmp/churn.err; then
    verdict=reset
  else
    verdict=fail
    sed 's/^/  | /' /tmp/churn.err | tail -5 >>"$out.log"
  fi
  echo "vm $i $kind $verdict $dt" >>"$out"
  sync "$out"
done
echo "census after $(census)" >>"$out"
host_stalled "$up0" | sed 's/^/host-fault /' >>"$out" || true
