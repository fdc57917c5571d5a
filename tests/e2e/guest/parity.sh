#!/usr/bin/env bash
# Scenarios for differences from runc that outside suites found (issue
# "exact runc parity"): each runs the same thing under runc and microrun
# and wants the same result. Sourced by suite.sh after lib.sh.

# A workload starts with every signal at its default and none blocked: a
# pipeline whose reader goes first ends (its writer dies of SIGPIPE), in
# the container's init and in an exec'd process alike.
t_docker_signals_default() {
  local rt c out_runc out_mr rc
  for rt in runc microrun; do
    timeout -k 5 180 docker run --rm --runtime $rt local/busybox sh -c 'yes abc | head -c 10485760 | md5sum' \
      >/tmp/e2e-sig-$rt.out 2>&1 && rc=0 || rc=$?
    echo "(exit $rc)" >>/tmp/e2e-sig-$rt.out
    docker run --rm --runtime $rt local/busybox grep -E "^Sig(Ign|Blk)" /proc/self/status >>/tmp/e2e-sig-$rt.out 2>&1
    c=$(docker run -d --runtime $rt local/busybox sleep 100)
    timeout -k 5 60 docker exec "$c" sh -c 'yes | head -c 1000 | wc -c' >>/tmp/e2e-sig-$rt.out 2>&1 ||
      echo "exec failed: $?" >>/tmp/e2e-sig-$rt.out
    docker exec "$c" grep -E "^Sig(Ign|Blk)" /proc/self/status >>/tmp/e2e-sig-$rt.out 2>&1
    docker rm -f "$c" >/dev/null
  done
  out_runc=$(cat /tmp/e2e-sig-runc.out)
  out_mr=$(cat /tmp/e2e-sig-microrun.out)
  agree "$out_runc" "$out_mr"
  expect_eq "$(grep -c '^SigIgn:.0000000000000000' /tmp/e2e-sig-microrun.out)" 2
}

# An executable that cannot be run: docker maps the runtime's "permission
# denied" to 126 (runc says so of a directory too) and a missing file to 127.
t_docker_exec_errors() {
  local target rt out rc want
  for target in /etc/passwd / /no/such/file; do
    want=
    for rt in runc microrun; do
      out=$(docker run --rm --runtime $rt local/busybox "$target" 2>&1) && rc=0 || rc=$?
      echo "$rt $target: exit $rc: $out"
      [ -n "$want" ] || want=$rc
      test "$rc" -eq "$want"
    done
    case $target in
      /etc/passwd|/) echo "$out" | grep -q 'permission denied' ;;
      *) echo "$out" | grep -q 'no such file or directory' ;;
    esac
  done
}

# Limits the spec does not set are the runtime's own (its caller's), in
# the container and in an exec'd process.
t_docker_rlimits_inherited() {
  parity local/busybox sh -c 'ulimit -a; ulimit -Ha'
  local rt c out_runc out_mr
  for rt in runc microrun; do
    c=$(docker run -d --runtime $rt local/busybox sleep 100)
    docker exec "$c" sh -c 'ulimit -a; ulimit -Ha' >/tmp/e2e-rl-$rt.out 2>&1
    docker rm -f "$c" >/dev/null
  done
  out_runc=$(cat /tmp/e2e-rl-runc.out)
  out_mr=$(cat /tmp/e2e-rl-microrun.out)
  agree "$out_runc" "$out_mr"
}

# raw_parity BUNDLE ID: `run` of the bundle under runc and microrun gives
# the same output and exit status.
raw_parity() {
  local b=$1 id=$2 out_runc out_mr rc_runc rc_mr
  runc delete --force "$id" >/dev/null 2>&1 || true
  "$MR" delete --force "$id" >/dev/null 2>&1 || true
  out_runc=$(timeout -k 5 120 runc run --bundle "$b" "$id" </dev/null 2>&1) && rc_runc=0 || rc_runc=$?
  out_mr=$(timeout -k 5 120 "$MR" run --bundle "$b" "$id" </dev/null 2>&1) && rc_mr=0 || rc_mr=$?
  agree "(exit $rc_runc): $out_runc" "(exit $rc_mr): $out_mr"
}

# A script that prints the kinds of propagation each mount named in its
# arguments shows in mountinfo (shared, master, unbindable; the peer group
# numbers differ between hosts): "DEST: KINDS" per line.
propagation_script() {
  cat <<'EOS'
for d in "$@"; do
  awk -v d="$d" '$5 == d { k = ""; for (i = 7; $i != "-"; i++) { f = $i; sub(/:.*/, "", f); k = k " " f } print d ":" k }' /proc/self/mountinfo
done
EOS
}

# Bind mounts with each propagation option, from a source on a shared
# mount (as a systemd host's are), and the root's own propagation.
t_raw_cli_propagation() {
  local b=/tmp/e2e-prop src=/tmp/e2e-prop-src opt
  umount "$src" 2>/dev/null || true
  mkdir -p "$src"
  mount -t tmpfs e2e-prop "$src"
  mount --make-shared "$src"
  mkdir -p "$src/d"
  bundle "$b" '["sh", "/prop.sh", "/", "/b-shared", "/b-rshared", "/b-slave", "/b-rslave", "/b-private", "/b-rprivate", "/b-unbindable", "/b-default"]'
  propagation_script >"$b/rootfs/prop.sh"
  for opt in shared rshared slave rslave private rprivate unbindable; do
    add_bind "$b" "$src/d" "/b-$opt" "$opt"
  done
  add_bind "$b" "$src/d" /b-default
  raw_parity "$b" e2e-prop
  local prop
  for prop in shared rshared slave rslave private rprivate; do
    sed -i -e '/"rootfsPropagation"/d' -e "s|^  \"linux\": {\$|&\n    \"rootfsPropagation\": \"$prop\",|" "$b/config.json"
    grep -q "\"rootfsPropagation\": \"$prop\"" "$b/config.json"
    echo "rootfsPropagation $prop:"
    raw_parity "$b" e2e-prop
  done
  umount "$src"
  rm -rf "$b" "$src"
}

# create, rewrite config.json, start: what the workload sees is what the
# config said at create (runc reads it once), with rootfsPropagation,
# masked and read-only paths, a sysctl, oom_score_adj and RLIMIT_NOFILE
# all set at once; and the poststart hook is the one read at create.
config_case() {
  local rt=$1 b=$2 id=e2e-cfg n=${1##*/}
  "$rt" delete --force $id >/dev/null 2>&1 || true
  rm -f /tmp/e2e-cfg-hook
  "$rt" create --bundle "$b" $id </dev/null >/tmp/e2e-cfg-$n.out 2>&1 || { cat /tmp/e2e-cfg-$n.out; return 1; }
  cp "$b/config.json" "$b/config.json.orig"
  sed -i -e 's/"oomScoreAdj": 100/"oomScoreAdj": 200/' -e 's/"soft": 1024/"soft": 512/' \
    -e 's/"hard": 1024/"hard": 512/' -e 's|"/cfg.sh"|"/no-such-script"|' -e 's|"/etc/group",||' \
    -e 's|"net.ipv4.ip_forward": "1"|"net.ipv4.ip_forward": "0"|' -e 's|"e2e-hook-at-create"|"e2e-hook-rewritten"|' "$b/config.json"
  "$rt" start $id
  for _ in $(seq 600); do "$rt" state $id 2>/dev/null | grep -q '"status": "stopped"' && break; sleep 0.2; done
  "$rt" delete $id
  mv "$b/config.json.orig" "$b/config.json"
  cat /tmp/e2e-cfg-$n.out
  echo "hook: $(cat /tmp/e2e-cfg-hook 2>/dev/null)"
}

t_raw_cli_config_after_create() {
  local b=/tmp/e2e-cfg out_runc out_mr
  bundle "$b" '["sh", "/cfg.sh"]'
  cat >"$b/rootfs/cfg.sh" <<'EOF'
awk '$5 == "/" { k = ""; for (i = 7; $i != "-"; i++) { f = $i; sub(/:.*/, "", f); k = k " " f } print "root:" k }' /proc/self/mountinfo
echo "masked: $(wc -c </etc/group)"
touch /tmp/x 2>/dev/null && echo "tmp: rw" || echo "tmp: ro"
echo "ip_forward: $(cat /proc/sys/net/ipv4/ip_forward)"
echo "oom_score_adj: $(cat /proc/self/oom_score_adj)"
echo "nofile: $(ulimit -n) $(ulimit -Hn)"
EOF
  sed -i -e 's|^  "linux": {$|&\n    "rootfsPropagation": "shared",\n    "sysctl": {"net.ipv4.ip_forward": "1"},|' \
    -e 's|^    "noNewPrivileges": true|    "oomScoreAdj": 100,\n&|' \
    -e 's|^      "/proc/acpi",|      "/etc/group",\n&|' \
    -e 's|^      "/proc/bus",|      "/tmp",\n&|' -e 's/"readonly": true/"readonly": false/' \
    -e 's|^  "hostname": |  "hooks": {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo e2e-hook-at-create > /tmp/e2e-cfg-hook"]}]},\n&|' \
    "$b/config.json"
  grep -q '"oomScoreAdj": 100' "$b/config.json"
  grep -q '"/tmp",' "$b/config.json"
  out_runc=$(config_case runc "$b")
  out_mr=$(config_case "$MR" "$b")
  agree "$out_runc" "$out_mr"
  echo "$out_mr" | grep -q '^oom_score_adj: 100$'
  echo "$out_mr" | grep -q '^hook: e2e-hook-at-create$'
  rm -rf "$b"
}

# userns_case RUNTIME BUNDLE: a container in a user namespace (root inside
# is 100000 outside), its init and an exec'd process.
userns_case() {
  local rt=$1 b=$2 id=e2e-userns n=${1##*/}
  "$rt" delete --force $id >/dev/null 2>&1 || true
  "$rt" create --bundle "$b" $id </dev/null >/tmp/e2e-userns-$n.out 2>&1 || { cat /tmp/e2e-userns-$n.out; return 1; }
  "$rt" start $id
  for _ in $(seq 300); do grep -q '^done' /tmp/e2e-userns-$n.out && break; sleep 0.2; done
  "$rt" exec $id sh -c 'echo "exec: $(id) $(cat /proc/self/uid_map | tr -s " ")"'
  "$rt" kill $id KILL
  for _ in $(seq 300); do "$rt" state $id 2>/dev/null | grep -q '"status": "stopped"' && break; sleep 0.2; done
  "$rt" delete $id
  cat /tmp/e2e-userns-$n.out
  echo "owner on the host: $(stat -c '%u:%g' "$b/rootfs/tmp/made-inside")"
  rm -f "$b/rootfs/tmp/made-inside"
}

t_raw_cli_user_namespace() {
  local b=/tmp/e2e-userns out_runc out_mr
  bundle "$b" '["sh", "/userns.sh"]'
  cat >"$b/rootfs/userns.sh" <<'EOS'
id
tr -s ' ' </proc/self/uid_map
tr -s ' ' </proc/self/gid_map
grep CapEff /proc/self/status
echo "busybox: $(stat -c '%u:%g' /bin/busybox)"
touch /tmp/made-inside && echo "made: $(stat -c '%u:%g' /tmp/made-inside)"
ls -l /dev/null | cut -c1-10
echo x >/dev/null && echo "dev/null writable"
test -d /sys/kernel && echo "sys mounted"
echo done
sleep 100
EOS
  sed -i -e 's/"readonly": true/"readonly": false/' \
    -e 's|^  "linux": {$|&\n    "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],\n    "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],|' \
    -e 's|^    "namespaces": \[$|&\n      {"type": "user"},|' "$b/config.json"
  grep -q '"type": "user"' "$b/config.json"
  chown -R 100000:100000 "$b/rootfs"
  out_runc=$(userns_case runc "$b")
  out_mr=$(userns_case "$MR" "$b")
  agree "$out_runc" "$out_mr"
  echo "$out_mr" | grep -q '^owner on the host: 100000:100000$'
  echo "$out_mr" | grep -q '^uid=0(root)'
  rm -rf "$b"
}

# The project's OCI conformance suite (tests/conformance): every case under
# runc and microrun; a case microrun fails where runc passes fails this
# scenario unless tests/conformance/differences.txt gives the reason.
t_conformance() {
  local r=/tmp/conformance-rootfs c
  rm -rf "$r"; mkdir -p "$r"
  c=$(docker create local/busybox sh)
  docker export "$c" | tar -C "$r" -x
  docker rm "$c" >/dev/null
  # The report stays on the share: run.sh prints it after the suite.
  /mnt/share/bin/oci-conformance drive --rootfs "$r" \
    --differences /mnt/share/e2e/conformance-differences.txt runc "$MR" | tee /mnt/share/conformance-report.txt
  test "${PIPESTATUS[0]}" -eq 0
}
