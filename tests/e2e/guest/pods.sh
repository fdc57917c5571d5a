#!/usr/bin/env bash
# Scenarios for containers that share namespaces (issue "shared microVMs",
# docs/pods.md): under microrun a container that joins another's network,
# IPC or PID namespace runs in that container's microVM. Each runs the same
# thing under runc and microrun and wants the same result. Sourced by
# suite.sh after lib.sh.

# pod_vms: how many processes hold a microVM (one per VM; the containers'
# pids are their stand-ins).
pod_vms() { pgrep -cx microrun-vm || true; }

# leftovers: microrun processes of any kind.
leftovers() { pgrep -fc '[m]icrorun.* (monitor|exec-standin) ' || true; }

# docker --network container:X: the second container reaches the first's
# server on localhost. Under microrun both are in one microVM.
t_docker_network_container() {
  local rt out_runc out_mr vms b
  for rt in runc microrun; do
    docker rm -f "e2e-side-$rt" >/dev/null 2>&1 || true
    docker run -d --name "e2e-side-$rt" --runtime $rt local/busybox \
      sh -c 'mkdir -p /www && echo "page of side" >/www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
    sleep 1
    docker run --rm --runtime $rt --network "container:e2e-side-$rt" local/busybox \
      sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 1; done; exit 1' \
      >/tmp/e2e-netc-$rt.out 2>&1 && echo "(exit 0)" >>/tmp/e2e-netc-$rt.out ||
      echo "(exit $?)" >>/tmp/e2e-netc-$rt.out
    # Same host name and interfaces as the first container.
    docker run --rm --runtime $rt --network "container:e2e-side-$rt" local/busybox \
      sh -c 'ip -o addr show eth0 | awk "{print \$4}"' >>/tmp/e2e-netc-$rt.out 2>&1
    docker exec "e2e-side-$rt" sh -c 'ip -o addr show eth0 | awk "{print \$4}"' >>/tmp/e2e-netc-$rt.out 2>&1
    if [ $rt = microrun ]; then
      b=$(docker run -d --runtime $rt --network "container:e2e-side-$rt" local/busybox sleep 100)
      vms=$(pod_vms)
      docker rm -f "$b" >/dev/null
    fi
    docker rm -f "e2e-side-$rt" >/dev/null
  done
  out_runc=$(sed 's/[0-9.]*\/[0-9]*/ADDR/' /tmp/e2e-netc-runc.out)
  out_mr=$(sed 's/[0-9.]*\/[0-9]*/ADDR/' /tmp/e2e-netc-microrun.out)
  agree "$out_runc" "$out_mr"
  grep -q "page of side" /tmp/e2e-netc-microrun.out
  # The side container's address, seen from both: the same.
  expect_eq "$(grep -c . <(sed -n '3,4p' /tmp/e2e-netc-microrun.out | sort -u))" 1
  # Two containers, one microVM.
  expect_eq "$vms" 1
}

# docker --ipc shareable / container:X: the second reads what the first
# put in /dev/shm, and both are in one IPC namespace of one kernel.
t_docker_ipc_container() {
  local rt out_runc out_mr
  for rt in runc microrun; do
    docker rm -f "e2e-ipc-$rt" >/dev/null 2>&1 || true
    docker run -d --name "e2e-ipc-$rt" --runtime $rt --ipc shareable local/busybox \
      sh -c 'echo shared-memory >/dev/shm/note && sleep 1000' >/dev/null
    sleep 2
    docker run --rm --runtime $rt --ipc "container:e2e-ipc-$rt" local/busybox \
      sh -c 'cat /dev/shm/note; readlink /proc/self/ns/ipc; cat /proc/sys/kernel/random/boot_id' \
      >/tmp/e2e-ipcc-$rt.out 2>&1 || echo "(exit $?)" >>/tmp/e2e-ipcc-$rt.out
    docker exec "e2e-ipc-$rt" sh -c 'readlink /proc/self/ns/ipc; cat /proc/sys/kernel/random/boot_id' \
      >>/tmp/e2e-ipcc-$rt.out
    docker rm -f "e2e-ipc-$rt" >/dev/null
  done
  cat /tmp/e2e-ipcc-microrun.out
  # One IPC namespace, one kernel: the host's under runc, the microVM's
  # under microrun.
  for rt in runc microrun; do
    expect_eq "$(sed -n '2p;4p' /tmp/e2e-ipcc-$rt.out | sort -u | wc -l)" 1
    expect_eq "$(sed -n '3p;5p' /tmp/e2e-ipcc-$rt.out | sort -u | wc -l)" 1
  done
  out_runc=$(head -1 /tmp/e2e-ipcc-runc.out)
  out_mr=$(head -1 /tmp/e2e-ipcc-microrun.out)
  agree "$out_runc" "$out_mr"
}

# docker --pid container:X: the second container's ps shows the first's
# processes, and its own.
t_docker_pid_container() {
  local rt out_runc out_mr
  for rt in runc microrun; do
    docker rm -f "e2e-pid-$rt" >/dev/null 2>&1 || true
    docker run -d --name "e2e-pid-$rt" --runtime $rt local/busybox sleep 1234 >/dev/null
    sleep 1
    # The first container's init is pid 1 of the shared namespace.
    docker run --rm --runtime $rt --pid "container:e2e-pid-$rt" local/busybox \
      sh -c 'ps -o pid,args | grep "[s]leep 1234"' >/tmp/e2e-pidc-$rt.out 2>&1 ||
      echo "(exit $?)" >>/tmp/e2e-pidc-$rt.out
    docker rm -f "e2e-pid-$rt" >/dev/null
  done
  out_runc=$(cat /tmp/e2e-pidc-runc.out)
  out_mr=$(cat /tmp/e2e-pidc-microrun.out)
  agree "$out_runc" "$out_mr"
  grep -q "sleep 1234" /tmp/e2e-pidc-microrun.out
}

# Each container keeps its own limits: the joined one, limited to 32 MiB,
# is OOM-killed alone while the first goes on; containers are deleted in
# either order (the first one first, too: the joined one keeps running in
# the VM), and nothing is left behind.
t_docker_pod_limits_and_order() {
  local rt out_runc out_mr b
  for rt in runc microrun; do
    docker rm -f "e2e-poda-$rt" >/dev/null 2>&1 || true
    : >/tmp/e2e-podl-$rt.out
    docker run -d --name "e2e-poda-$rt" --runtime $rt local/busybox sleep 1000 >/dev/null
    docker run --rm --runtime $rt -m 32m --memory-swap 32m --network "container:e2e-poda-$rt" \
      local/busybox tail /dev/zero >/dev/null 2>&1 && echo "oom: exit 0" >>/tmp/e2e-podl-$rt.out ||
      echo "oom: exit $?" >>/tmp/e2e-podl-$rt.out
    docker exec "e2e-poda-$rt" echo "first still runs" >>/tmp/e2e-podl-$rt.out 2>&1
    # The first container goes first; the joined one runs on.
    b=$(docker run -d --runtime $rt --network "container:e2e-poda-$rt" local/busybox \
      sh -c 'trap "exit 7" TERM; while :; do sleep 1; done')
    sleep 1
    docker rm -f "e2e-poda-$rt" >/dev/null
    sleep 2
    docker exec "$b" echo "joined still runs" >>/tmp/e2e-podl-$rt.out 2>&1
    docker stop -t 10 "$b" >/dev/null
    echo "joined: exit $(docker wait "$b")" >>/tmp/e2e-podl-$rt.out
    docker rm "$b" >/dev/null
  done
  out_runc=$(cat /tmp/e2e-podl-runc.out)
  out_mr=$(cat /tmp/e2e-podl-microrun.out)
  agree "$out_runc" "$out_mr"
  expect_eq "$(pod_vms)" 0
  expect_eq "$(leftovers)" 0
}

# The verbs act on the container they name alone: pausing the joined one
# leaves the first running, `update` changes its limit only, stats and
# exec see it alone.
t_docker_pod_verbs() {
  local rt out_runc out_mr a b
  for rt in runc microrun; do
    : >/tmp/e2e-podv-$rt.out
    a=$(docker run -d --runtime $rt local/busybox sleep 1000)
    b=$(docker run -d --runtime $rt -m 48m --memory-swap 48m --network "container:$a" local/busybox sleep 1000)
    docker pause "$b" >/dev/null
    docker inspect -f '{{.State.Status}}' "$a" "$b" >>/tmp/e2e-podv-$rt.out
    docker exec "$a" echo "first answers while the joined one is paused" >>/tmp/e2e-podv-$rt.out 2>&1
    docker unpause "$b" >/dev/null
    docker exec "$b" echo "joined answers again" >>/tmp/e2e-podv-$rt.out 2>&1
    docker update --memory 64m --memory-swap 64m "$b" >/dev/null
    # The new limit, as the joined container's own cgroup has it (v1 on
    # this host under runc, v2 in the guest under microrun).
    docker exec "$b" sh -c 'cat /sys/fs/cgroup/memory.max 2>/dev/null ||
      cat /sys/fs/cgroup/memory/memory.limit_in_bytes' >>/tmp/e2e-podv-$rt.out 2>&1
    docker exec "$b" sh -c 'ps -o args | grep -c "[s]leep 1000"' >>/tmp/e2e-podv-$rt.out 2>&1
    docker kill "$b" >/dev/null
    echo "joined: exit $(docker wait "$b")" >>/tmp/e2e-podv-$rt.out
    docker exec "$a" echo "first runs on" >>/tmp/e2e-podv-$rt.out 2>&1
    docker rm -f "$a" "$b" >/dev/null
  done
  out_runc=$(cat /tmp/e2e-podv-runc.out)
  out_mr=$(cat /tmp/e2e-podv-microrun.out)
  agree "$out_runc" "$out_mr"
  grep -qx "67108864" /tmp/e2e-podv-microrun.out
}

# The raw CLI, as containerd's shim drives it: a second bundle joins the
# first one's network and PID namespaces by /proc path; `ps` and `events
# --stats` answer for it; SIGKILL of its pid ends it alone; the first is
# killed and deleted after.
raw_pod_run() { # raw_pod_run RUNTIME: the states seen, a line each
  local rt=$1 ba=/tmp/e2e-rpa bb=/tmp/e2e-rpb pid bpid st
  st() { "$rt" state "$1" 2>/dev/null | sed -n 's/.*"status": "\([a-z]*\)".*/\1/p'; }
  "$rt" delete -f rp-a >/dev/null 2>&1 || true
  "$rt" delete -f rp-b >/dev/null 2>&1 || true
  bundle $ba '["sleep", "1000"]'
  "$rt" create --bundle $ba rp-a </dev/null >/dev/null 2>&1
  "$rt" start rp-a
  pid=$("$rt" state rp-a | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  bundle $bb '["sleep", "1001"]'
  sed -i -e "s|\"type\": \"network\"|\"type\": \"network\", \"path\": \"/proc/$pid/ns/net\"|" \
    -e "s|\"type\": \"pid\"|\"type\": \"pid\", \"path\": \"/proc/$pid/ns/pid\"|" $bb/config.json
  "$rt" create --bundle $bb rp-b </dev/null >/dev/null 2>&1
  "$rt" start rp-b
  echo "a $(st rp-a), b $(st rp-b)"
  echo "ps of b: $("$rt" ps --format json rp-b | grep -c '[0-9]')"
  "$rt" events --stats rp-b | grep -q '"memory"' && echo "stats of b: yes"
  bpid=$("$rt" state rp-b | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  kill -9 "$bpid"
  for _ in $(seq 100); do [ "$(st rp-b)" = stopped ] && break; sleep 0.1; done
  echo "after SIGKILL of b's pid: a $(st rp-a), b $(st rp-b)"
  "$rt" delete rp-b
  "$rt" kill rp-a KILL
  for _ in $(seq 100); do [ "$(st rp-a)" = stopped ] && break; sleep 0.1; done
  echo "a $(st rp-a)"
  "$rt" delete rp-a
}
t_raw_cli_pod() {
  local out_runc out_mr
  out_runc=$(raw_pod_run runc 2>&1)
  out_mr=$(raw_pod_run "$MR" 2>&1)
  agree "$out_runc" "$out_mr"
  expect_eq "$(pod_vms)" 0
  expect_eq "$(leftovers)" 0
}

# A joining container whose memory limit does not fit in the VM fails with
# the sizes (until VMs grow); a namespace of the host cannot be joined. The
# raw CLI: nothing of the refused container is left.
t_raw_cli_pod_refusals() {
  local b out
  docker rm -f e2e-small >/dev/null 2>&1 || true
  docker run -d --name e2e-small --runtime microrun local/busybox sleep 1000 >/dev/null
  out=$(docker run --rm --runtime microrun -m 512m --network container:e2e-small local/busybox true 2>&1) &&
    return 1
  echo "$out"
  echo "$out" | grep -q "does not fit in the microVM"
  docker rm -f e2e-small >/dev/null
  b=/tmp/e2e-podref
  bundle $b '["true"]'
  sed -i 's|"type": "ipc"|"type": "ipc", "path": "/proc/1/ns/ipc"|' "$b/config.json"
  grep -q '/proc/1/ns/ipc' "$b/config.json"
  out=$("$MR" run --bundle "$b" e2e-podref 2>&1) && return 1
  echo "$out"
  echo "$out" | grep -q "not a running microrun container"
  fails "$MR" state e2e-podref
  test ! -e /run/microrun/e2e-podref
  expect_eq "$(leftovers)" 0
}

# podman (Debian's 4.3, with conmon): the runtime by its path, cgroupfs (no
# systemd in the test host), the image from docker's store. `podman_setup
# nocgroups`: podman makes no cgroups (a pod's infra container fails under
# crun and runc on this host's cgroup v1 device controller: "mknod
# /dev/null: Operation not permitted").
podman_setup() {
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'CONF'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[engine.runtimes]
microrun = ["/mnt/share/bin/microrun"]
CONF
  if [ "${1:-}" = nocgroups ]; then
    printf '[containers]\ncgroups = "disabled"\n' >>/etc/containers/containers.conf
  fi
  podman image exists local/busybox || docker save local/busybox | podman load -q >/dev/null
}

# podman run, next to crun.
t_podman_run() {
  podman_setup
  local rt out_crun out_mr
  for rt in crun microrun; do
    podman --runtime $rt run --rm local/busybox sh -c 'echo hello from podman; id; cat /proc/self/cgroup | wc -l; exit 3' \
      >/tmp/e2e-podman-$rt.out 2>&1 && echo "(exit 0)" >>/tmp/e2e-podman-$rt.out ||
      echo "(exit $?)" >>/tmp/e2e-podman-$rt.out
  done
  out_crun=$(cat /tmp/e2e-podman-crun.out)
  out_mr=$(cat /tmp/e2e-podman-microrun.out)
  agree "$out_crun" "$out_mr"
}

# podman pod create, then two containers of the pod that talk over
# localhost; under microrun the pod is one microVM (infra and both). Next
# to crun, for which podman makes no cgroups (see podman_setup; podman
# allows that for crun only, and microrun's cgroups are in the guest).
t_podman_pod() {
  local rt out_crun out_mr vms=
  for rt in crun microrun; do
    if [ $rt = crun ]; then podman_setup nocgroups; else podman_setup; fi
    podman pod rm -f "e2e-pod-$rt" >/dev/null 2>&1 || true
    podman --runtime $rt pod create --name "e2e-pod-$rt" >/dev/null
    podman --runtime $rt run -d --pod "e2e-pod-$rt" --name "e2e-pod-web-$rt" local/busybox \
      sh -c 'mkdir -p /www && echo "pod page" >/www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
    podman --runtime $rt run --rm --pod "e2e-pod-$rt" local/busybox \
      sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 1; done; exit 1' \
      >/tmp/e2e-podmanpod-$rt.out 2>&1 && echo "(exit 0)" >>/tmp/e2e-podmanpod-$rt.out ||
      echo "(exit $?)" >>/tmp/e2e-podmanpod-$rt.out
    [ $rt = microrun ] && vms=$(pod_vms)
    podman pod rm -f "e2e-pod-$rt" >/dev/null
  done
  podman_setup
  out_crun=$(cat /tmp/e2e-podmanpod-crun.out)
  out_mr=$(cat /tmp/e2e-podmanpod-microrun.out)
  agree "$out_crun" "$out_mr"
  expect_eq "$vms" 1
  expect_eq "$(leftovers)" 0
}
