#!/usr/bin/env bash
# make bench's figures inside the test host: bench.sh SECTION... runs the
# named sections (boot containers rate density pods fs-rootfs fs-volume
# fs-floor reread net), each
# printing its own table, so that scripts/bench.sh can run a section again
# on a fresh host when the emulated host dies under one.
set -euo pipefail
SHARE=/mnt/share/share/microrun
runs=5
# The runtimes and the local image (setup.sh), once per boot of the host.
[ -e /run/microrun-bench-setup ] || { bash /mnt/share/e2e/setup.sh >/dev/null && touch /run/microrun-bench-setup; }
. /mnt/share/e2e/lib.sh

# QEMU -M microvm booting our kernel and initramfs once (the guest reboots
# at once); the caller adds -serial. An array, not a function, so that a
# background run's $! is QEMU's own pid.
QEMU_MICROVM=(qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off -accel kvm -cpu host -smp 1 -m 256
  -nodefaults -no-user-config -display none -no-reboot
  -kernel "$SHARE/vmlinux" -initrd "$SHARE/initramfs.cpio"
  -append "console=ttyS0 reboot=t panic=-1 quiet")
qemu_cycle() {
  local log; log=$(mktemp)
  local t0; t0=$(date +%s%N)
  "${QEMU_MICROVM[@]}" -serial "file:$log"
  local t1; t1=$(date +%s%N)
  grep -q "microrun-agent: ready" "$log" || { echo "agent did not start" >&2; cat "$log" >&2; exit 1; }
  rm -f "$log"
  echo $(( (t1 - t0) / 1000000 ))
}
mr_cycle() {
  local log; log=$(mktemp)
  local t0; t0=$(date +%s%N)
  /mnt/share/bin/microrun vm-boot --console "$log" 2>/dev/null
  local t1; t1=$(date +%s%N)
  grep -q "microrun-agent: ready" "$log" || { echo "agent did not start" >&2; cat "$log" >&2; exit 1; }
  sed -n 's/.*uptime \([0-9.]*\)s.*/\1/p' "$log" >> /tmp/mr-uptimes
  rm -f "$log"
  echo $(( (t1 - t0) / 1000000 ))
}
sec_boot() {
  local total=0 i ms
  echo "== guest boot (start -> agent /init -> reboot -> exit)"
  for i in $(seq $runs); do ms=$(qemu_cycle); total=$((total + ms)); echo "qemu microvm cycle $i: ${ms} ms"; done
  printf '%-40s %8d ms (mean of %d)\n' "QEMU -M microvm: start->/init->exit" $((total / runs)) $runs
  rm -f /tmp/mr-uptimes
  total=0
  for i in $(seq $runs); do ms=$(mr_cycle); total=$((total + ms)); echo "microrun vm-boot cycle $i: ${ms} ms"; done
  printf '%-40s %8d ms (mean of %d)\n' "microrun VMM: start->/init->exit" $((total / runs)) $runs
  awk '{s+=$1} END {printf "%-40s %8.0f ms (guest uptime at /init, mean)\n", "microrun VMM: kernel boot to /init", s/NR*1000}' /tmp/mr-uptimes
  local last; last=$(/mnt/share/bin/microrun vm-boot --console /dev/null 2>&1)
  echo "last run: $last"
  sed -n 's/.*first KVM_RUN at \([0-9.]*\) ms.*/\1/p' <<<"$last" |
    awk '{printf "%-40s %8.1f ms\n", "microrun: VMM start to first KVM_RUN", $1}'
  sec_memory
}

# last_smaps PID FILE: copies PID's smaps to FILE until PID ends.
last_smaps() {
  while kill -0 "$1" 2>/dev/null; do cat "/proc/$1/smaps" > "$2.tmp" 2>/dev/null && tail -1 "$2.tmp" | grep -q "^VmFlags" && mv -f "$2.tmp" "$2"; sleep 0.05; done
}
sec_memory() {
  echo "== VMM memory beside the guest's RAM (KiB: resident, proportional share, private)"
  local f; f=$(mktemp)
  "${QEMU_MICROVM[@]}" -serial null &
  last_smaps $! "$f"; wait
  printf '%-40s %8d %8d %8d\n' "QEMU -M microvm, booted guest" $(vmm_mem "$f")
  /mnt/share/bin/microrun vm-boot --console /dev/null 2>/dev/null &
  last_smaps $! "$f"; wait
  printf '%-40s %8d %8d %8d\n' "microrun vm-boot, booted guest" $(vmm_mem "$f")
  # Running containers: the VM's process with its agent link, file
  # sharing and network device, and the container's stand-in (its pid, a
  # fork of the monitor); with four, the code's pages are shared four ways.
  local i pid
  for n in 1 4; do
    for i in $(seq $n); do docker run -d --runtime microrun --name bench-mem$i local/busybox sleep 600 >/dev/null; done
    sleep 2
    for pid in $(pgrep -x microrun-vm); do cat "/proc/$pid/smaps" > "$f.$pid"; vmm_mem "$f.$pid"; rm -f "$f.$pid"; done |
      awk -v n=$n '{ r += $1; p += $2; a += $3 } END { printf "%-40s %8d %8d %8d\n", "microrun VM process, " n " running", r / NR, p / NR, a / NR }'
    for pid in $(pgrep -f ' monitor --bundle' | grep -vxF -f <(pgrep -x microrun-vm)); do
      cat "/proc/$pid/smaps" > "$f.$pid"; vmm_mem "$f.$pid"; rm -f "$f.$pid"
    done |
      awk -v n=$n '{ r += $1; p += $2; a += $3 } END { printf "%-40s %8d %8d %8d\n", "microrun stand-in, " n " running", r / NR, p / NR, a / NR }'
    for i in $(seq $n); do docker rm -f bench-mem$i >/dev/null; done
  done
  rm -f "$f"
}

# The stack a user who wants VM isolation would pick instead: Kata
# Containers' data path. QEMU -M microvm boots the same kernel; files go
# through virtiofsd (vhost-user-fs) with Kata's defaults (cache=auto, a
# thread pool of one, queues of 1024); the network through a tap with
# vhost-net in a container's network namespace, joined to its veth by tc
# redirects as Kata wires it. The guest's init is busybox running the same
# shell work as the containers, timed the same way inside the guest.
PEER=/tmp/bench-peer
VIRTIOFSD=/usr/lib/qemu/virtiofsd
PEER_NAME="QEMU stack"
peer_base() {
  # Made afresh by each bench.sh (a host that stays up keeps /tmp).
  [ -n "${PEER_READY:-}" ] && return 0
  rm -rf $PEER
  local d
  for d in bin dev proc sys mnt data tmp; do mkdir -p "$PEER/initfs/$d"; done
  mkdir -p $PEER/image
  cp /bin/busybox $PEER/initfs/bin/busybox
  cat > $PEER/initfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm; mount -t tmpfs shm /dev/shm
. /peer.env
if [ -n "$ADDR" ]; then
  ip link set lo up; ip link set eth0 up; ip addr add "$ADDR" dev eth0; ip route add default via "$GW"
fi
echo BENCH-BEGIN
case $WHERE in
  rootfs) mount -t virtiofs share /mnt && mount -t proc proc /mnt/proc && mount -o bind /dev /mnt/dev &&
    cp /work.sh /mnt/.work.sh && chroot /mnt sh /.work.sh ;;
  volume) mount -t virtiofs share /data && sh /work.sh ;;
  *) sh /work.sh ;;
esac
echo "BENCH-END $?"
reboot -f
INIT
  chmod +x $PEER/initfs/init
  (cd $PEER/initfs && find . | cpio -o -H newc --quiet) > $PEER/base.cpio
  local c; c=$(docker create local/busybox sh)
  docker export "$c" | tar -C $PEER/image -x
  docker rm "$c" >/dev/null
  PEER_READY=1
}
# peer_vm WHERE DIR SCRIPT [NSPID ADDR GW MAC]: SCRIPT's output, run in a
# VM of the QEMU stack, DIR shared by virtiofsd as its root or /data
# (WHERE rootfs|volume|none), wired into the network namespace of NSPID.
peer_vm() {
  local where=$1 dir=$2 script=$3 ns=${4:-} addr=${5:-} gw=${6:-} mac=${7:-} run vfs= rc=0
  peer_base
  run=$(mktemp -d)
  printf '%s\n%s\n' "$NOW" "$script" > "$run/work.sh"
  printf 'WHERE=%s\nADDR=%s\nGW=%s\n' "$where" "$addr" "$gw" > "$run/peer.env"
  (cd "$run" && printf 'work.sh\npeer.env\n' | cpio -o -H newc --quiet) | cat $PEER/base.cpio - > "$run/initrd"
  local qemu=(qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,acpi=off,memory-backend=mem
    -global virtio-mmio.force-legacy=false -object memory-backend-memfd,id=mem,size=256M,share=on
    -accel kvm -cpu host -smp 1 -m 256
    -nodefaults -no-user-config -display none -no-reboot -name "bench-peer-$$"
    -kernel "$SHARE/vmlinux" -initrd "$run/initrd" -append "console=ttyS0 reboot=t panic=-1 quiet"
    -serial "file:$run/console")
  if [ "$where" != none ]; then
    "$VIRTIOFSD" --socket-path="$run/vfs.sock" -o source="$dir" -o cache=auto --thread-pool-size=1 \
      >"$run/virtiofsd.log" 2>&1 &
    vfs=$!
    for _ in $(seq 100); do [ -S "$run/vfs.sock" ] && break; sleep 0.05; done
    qemu+=(-chardev "socket,id=vfs,path=$run/vfs.sock" -device vhost-user-fs-device,chardev=vfs,tag=share,queue-size=1024)
  fi
  if [ -n "$ns" ]; then
    qemu+=(-netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on -device "virtio-net-device,netdev=n0,mac=$mac")
    nsenter -t "$ns" -n "${qemu[@]}" || rc=$?
  else
    "${qemu[@]}" || rc=$?
  fi
  if [ -n "$vfs" ]; then kill "$vfs" 2>/dev/null; wait "$vfs" 2>/dev/null || true; fi
  if ! grep -q '^BENCH-END 0' "$run/console"; then
    echo "bench: a run of the QEMU stack failed (QEMU exit $rc); its console ends with:" >&2
    tail -15 "$run/console" >&2; cat "$run/virtiofsd.log" >&2 2>/dev/null
    rm -rf "$run"
    return 1
  fi
  sed -n '/^BENCH-BEGIN/,/^BENCH-END/{/^BENCH-/d;p}' "$run/console" | tr -d '\r'
  rm -rf "$run"
}
# peer_fs DIR VOLUME SCRIPT: fs_op for the QEMU stack. Its rootfs is, as
# Kata's, an overlay of the image shared whole by virtiofsd.
peer_fs() {
  local where=$1 vol=$2 script=$3 o rc=0
  if [ "$where" = /data ]; then peer_vm volume "$vol" "cd /data && $script"; return; fi
  peer_base
  o=$(mktemp -d); mkdir "$o/upper" "$o/work" "$o/merged"
  mount -t overlay overlay -o "lowerdir=$PEER/image,upperdir=$o/upper,workdir=$o/work" "$o/merged"
  peer_vm rootfs "$o/merged" "cd $where && $script" || rc=$?
  umount "$o/merged"; rm -rf "$o"
  return $rc
}
# peer_net NSPID: wires a tap (vhost-net) to the namespace's veth by tc
# redirects both ways, as Kata does; prints "ADDR GW MAC" of its eth0.
peer_net() {
  local ns=$1
  [ -e /dev/vhost-net ] || modprobe vhost_net
  nsenter -t "$ns" -n sh -ec 'ip tuntap add dev tap0 mode tap vnet_hdr; ip link set tap0 up
    tc qdisc add dev eth0 ingress; tc filter add dev eth0 parent ffff: matchall action mirred egress redirect dev tap0
    tc qdisc add dev tap0 ingress; tc filter add dev tap0 parent ffff: matchall action mirred egress redirect dev eth0
    echo "$(ip -o -4 addr show eth0 | awk "{print \$4}") $(ip route | awk "/default/ {print \$3}") $(ip -o link show eth0 | sed "s|.*link/ether \([^ ]*\).*|\1|")"'
}

# Whole containers, next to runc in the same host and run.
mean_ms() { # mean_ms RUNS CMD...: mean wall time of CMD in ms
  local n=$1 t0 total=0; shift
  for _ in $(seq "$n"); do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
    total=$(( total + ($(date +%s%N) - t0) / 1000000 ))
  done
  echo $(( total / n ))
}
sec_containers() {
  echo "== whole containers (create -> exit), next to runc"
  for rt in runc microrun; do
    printf '%-40s %8d ms (mean of 3)\n' "docker run --rm ($rt) true" "$(mean_ms 3 docker run --rm --runtime $rt local/busybox true)"
  done
  b=/tmp/bench-bundle
  bundle $b '["true"]'
  for rt in runc /mnt/share/bin/microrun; do
    printf '%-40s %8d ms (mean of 3)\n' "$(basename $rt) run (raw CLI) true" "$(mean_ms 3 $rt run --bundle $b bench-$$)"
  done
}

# Density and rate. Idle containers (`sleep`), DENSITY_N of each kind at
# once: what the host gives up for each (MemAvailable before and after,
# guest RAM touched, page tables and page cache included), and the PSS of
# the processes that make it (the shim, the runtime's processes, the
# workload; for the QEMU stack, QEMU and its virtiofsd); how many would
# fit in the host's MemAvailable at that cost.
pss_sum() { # pss_sum PID...: their PSS in KiB
  local p t=0
  for p in "$@"; do t=$((t + $(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
  echo $t
}
avail() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }
sec_density() {
  local n=${DENSITY_N:-8} rt i a0 a1 pids pss ids
  peer_base
  echo "== density: $n idle containers of each kind (KiB per container)"
  printf '%-44s %12s %12s %10s\n' "" "host gives" "PSS" "would fit"
  for rt in runc microrun qemu; do
    sync; echo 3 > /proc/sys/vm/drop_caches; sleep 1
    a0=$(avail)
    ids=()
    for i in $(seq "$n"); do
      if [ $rt = qemu ]; then
        peer_fs /tmp "" "sleep 3600" >/dev/null 2>&1 &
      else
        ids+=("$(docker run -d --runtime $rt local/busybox sleep 3600)")
      fi
    done
    if [ $rt = qemu ]; then
      for _ in $(seq 300); do [ "$(pgrep -fc "name bench-peer-$$")" -ge "$n" ] && break; sleep 1; done
      sleep 15  # the guests boot
      pids=$(pgrep -f "name bench-peer-$$|virtiofsd --socket-path")
    else
      sleep 3
      pids=$(for i in "${ids[@]}"; do docker inspect -f '{{.State.Pid}}' "$i"; done
        pgrep -f containerd-shim-runc-v2
        [ $rt = runc ] || pgrep -x microrun-vm)
    fi
    a1=$(avail)
    # shellcheck disable=SC2086
    pss=$(pss_sum $pids)
    printf '%-44s %12d %12d %10d\n' "$( [ $rt = qemu ] && echo "$PEER_NAME" || echo $rt)" \
      $(( (a0 - a1) / n )) $(( pss / n )) $(( a1 * n / (a0 - a1 > 0 ? a0 - a1 : 1) ))
    if [ $rt = qemu ]; then pkill -f "name bench-peer-$$" || true; wait || true
    else docker rm -f "${ids[@]}" >/dev/null; fi
  done
}
# Containers run (create -> `true` exits -> removed) per second with 1, 4
# and 8 in flight, through docker and the raw CLI.
sec_rate() {
  local total=${RATE_N:-16} c rt via t0 ms bin fails b=/tmp/bench-rate
  bundle $b '["true"]'
  echo "== start rate: $total containers running \`true\`, C at a time (containers per second; failed runs, such as this host's guest resets, in brackets)"
  printf '%-44s %12s %12s %12s\n' "" "C=1" "C=4" "C=8"
  for rt in runc microrun; do
    bin=runc; [ $rt = runc ] || bin=$MR
    for via in docker raw; do
      local row=()
      for c in 1 4 8; do
        t0=$(date +%s%N)
        if [ $via = docker ]; then
          fails=$(seq "$total" | xargs -P "$c" -I{} sh -c "docker run --rm --runtime $rt local/busybox true >/dev/null 2>&1 || echo x" | wc -l)
        else
          fails=$(seq "$total" | xargs -P "$c" -I{} sh -c "cd $b && $bin run rate-$$-{} >/dev/null 2>&1 || { $bin delete -f rate-$$-{} >/dev/null 2>&1; echo x; }" | wc -l)
        fi
        ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        row+=("$(awk -v n="$total" -v ms="$ms" -v f="$fails" 'BEGIN {printf (f ? "%.2f (%d)" : "%.2f"), (n - f) * 1000 / ms, f}')")
      done
      printf '%-44s %12s %12s %12s\n' "$rt ($via)" "${row[@]}"
    done
  done
}

# Containers that join a running one (docs/pods.md): the start of the
# second, next to runc, and the memory of one VM holding one and three
# containers (the VM's process: all of it, its guest RAM, the rest; and
# the stand-ins, one per container).
pod_mem() { # pod_mem PID: "RSS GUEST_RSS REST_RSS" in KiB
  cat "/proc/$1/smaps" >/tmp/bench-pod.smaps
  awk '/^[0-9a-f]+-[0-9a-f]+ / { n++ } /^Size:/ { size[n] = $2 } /^Rss:/ { rss[n] = $2 }
       END { g = 1; for (i = 1; i <= n; i++) if (size[i] > size[g]) g = i
             for (i = 1; i <= n; i++) t += rss[i]; print t, rss[g], t - rss[g] }' /tmp/bench-pod.smaps
}
sec_pods() {
  echo "== containers that join a running one (docker --network container:), next to runc"
  local rt a n i vm
  for rt in runc microrun; do
    a=$(docker run -d --runtime $rt local/busybox sleep 600)
    printf '%-44s %8d ms (mean of 3)\n' "docker run --rm ($rt) joining, true" \
      "$(mean_ms 3 docker run --rm --runtime $rt --network "container:$a" local/busybox true)"
    docker rm -f "$a" >/dev/null
  done
  printf '%-44s %10s %10s %10s %10s\n' "microrun pod VM (KiB)" "VM RSS" "guest RAM" "rest" "stand-ins"
  a=$(docker run -d --runtime microrun --name bench-pod0 local/busybox sleep 600)
  for n in 1 3; do
    for i in $(seq 1 $((n - 1))); do
      docker inspect "bench-pod$i" >/dev/null 2>&1 ||
        docker run -d --runtime microrun --name "bench-pod$i" --network container:bench-pod0 local/busybox sleep 600 >/dev/null
    done
    sleep 2
    vm=$(pgrep -x microrun-vm | head -1)
    local standins=0 pid
    for pid in $(pgrep -f ' monitor --bundle' | grep -vxF -f <(pgrep -x microrun-vm)); do
      standins=$((standins + $(awk '/^Rss:/ { t += $2 } END { print t }' "/proc/$pid/smaps")))
    done
    printf '%-44s %10d %10d %10d %10d\n' "  $n container(s) in one VM" $(pod_mem "$vm") "$standins"
  done
  docker rm -f bench-pod0 bench-pod1 bench-pod2 >/dev/null
}

# Milliseconds since boot inside a busybox container (its date has no %N).
NOW='now() { read u _ < /proc/uptime; echo $(( ${u%.*}${u#*.} * 10 )); }'

# File I/O through the runtimes' file sharing (virtio-fs for microrun), in
# the container's rootfs (/tmp of the image) and in a volume: the work is
# timed inside the container, so container start is not counted.
# The tables of times: runc, microrun and the QEMU stack, and microrun's
# ratio to each (the other's time / microrun's, higher is better).
RATIOS="vs runc = runc time / microrun time, vs QEMU = $PEER_NAME time / microrun time; higher is better"
table_head() { printf '%-44s %9s %9s %15s %8s %8s\n' "" runc microrun "$PEER_NAME" "vs runc" "vs QEMU"; }
table_row() { # table_row WHAT RUNC MICRORUN QEMU
  awk -v w="$1" -v a="${2:-0}" -v b="${3:-0}" -v q="${4:-0}" \
    'BEGIN {printf "%-44s %9d %9d %15d %8.2f %8.2f\n", w, a, b, q, (b > 0 ? a / b : 0), (b > 0 ? q / b : 0)}'
}
fs_op() { # fs_op RUNTIME DIR VOLUME SCRIPT: SCRIPT's output, run in DIR
  if [ "$1" = qemu ]; then peer_fs "$2" "$3" "$4"; return; fi
  local vol=()
  [ -z "$3" ] || vol=(-v "$3:/data")
  docker run --rm --runtime "$1" "${vol[@]}" local/busybox sh -c "$NOW; cd $2 && $4"
}
# Prints the ms of each step: create, stat, unlink of 10000 small files.
files='t0=$(now); mkdir s && i=0 && while [ $i -lt 10000 ]; do : > s/f$i; i=$((i+1)); done
  t1=$(now); ls -l s >/dev/null; t2=$(now); rm -rf s; t3=$(now)
  echo $((t1 - t0)) $((t2 - t1)) $((t3 - t2))'
write='t0=$(now); dd if=/dev/zero of=big bs=1M count=256 conv=fsync 2>/dev/null; echo $(( $(now) - t0 ))'
read_big='t0=$(now); dd if=big of=/dev/null bs=1M 2>/dev/null; echo $(( $(now) - t0 ))'
# The emulated host's speed moves by tens of percent between runs (and
# within one), so each runtime runs the file work FS_RUNS times, the two
# by turns, and the table gives the medians.
FS_RUNS=${FS_RUNS:-3}
# The median of the numbers on stdin.
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2))}'; }
# fs_op, once more when a guest reset ended it (about one microVM in
# 100-200 of the emulated host ends in a triple fault, docs/testing.md),
# as the suite reruns such a scenario; any other failure stands.
fs_try() {
  local out err rc=0
  err=$(mktemp)
  out=$(fs_op "$@" 2>"$err") || rc=$?
  cat "$err" >&2
  if [ "$rc" -ne 0 ] && [ "$1" != qemu ] && unexplained_reset bench "$err"; then
    rm -f "$err"
    echo "bench: a guest reset ended a $1 run, running it again" >&2
    fs_op "$@"
    return
  fi
  rm -f "$err"
  echo "$out"
  return "$rc"
}
# by_turns FN ARGS...: FS_RUNS runs of `FN RUNTIME VOLUME ARGS...` for each
# runtime, the two by turns, each with a fresh volume directory; their
# output lines go to RUNS[RUNTIME]. A run that fails (past one guest
# reset) fails the caller.
declare -A RUNS=()
by_turns() {
  local fn=$1 i rt vol rc run
  shift
  RUNS=()
  peer_base
  for i in $(seq "$FS_RUNS"); do
    for rt in runc microrun qemu; do
      vol=$(mktemp -d)
      rc=0
      run=$("$fn" "$rt" "$vol" "$@") || rc=$?
      rm -rf "$vol"
      [ "$rc" -eq 0 ] || return "$rc"
      RUNS[$rt]+="$run"$'\n'
    done
  done
}
# median_of RUNTIME COLUMN: the median of that column of RUNS[RUNTIME].
median_of() { echo -n "${RUNS[$1]}" | awk -v c="$2" '{print $c}' | median; }
fs_round() { # fs_round RUNTIME VOLUME DIR: one run of the file work, "write read create stat unlink" (ms)
  local rt=$1 vol=$2 where=$3 out w r
  if [ "$where" = /data ]; then
    w=$(fs_try "$rt" "$where" "$vol" "$write") || return
    # Read in a fresh container, host page cache dropped.
    sync; echo 3 > /proc/sys/vm/drop_caches
    r=$(fs_try "$rt" "$where" "$vol" "$read_big") || return
  else
    # The rootfs is per container: write and read back in the same one.
    out=$(fs_try "$rt" "$where" "$vol" "$write; $read_big") || return
    w=$(echo "$out" | sed -n 1p)
    r=$(echo "$out" | sed -n 2p)
  fi
  rm -f "$vol/big"
  out=$(fs_try "$rt" "$where" "$vol" "$files") || return
  echo "$w $r $out"
}
fs_section() { # fs_section DIR: the file I/O table for the rootfs (/tmp) or a volume (/data)
  local where=$1 rt op what col
  echo "== file I/O in the $( [ $where = /tmp ] && echo rootfs || echo volume) (ms, median of $FS_RUNS runs by turns; $RATIOS)"
  declare -A ms=()
  by_turns fs_round "$where" || return
  for rt in runc microrun qemu; do
    echo "$rt runs (write read create stat unlink):" $(echo -n "${RUNS[$rt]}" | tr '\n' ';' | sed 's/;$//; s/;/; /g')
  done
  table_head
  col=1
  for op in write read create stat unlink; do
    for rt in runc microrun qemu; do
      ms[$rt,$op]=$(median_of "$rt" "$col")
    done
    col=$((col + 1))
    case $op in write|read) what="sequential $op 256 MiB" ;; *) what="$op 10000 small files" ;; esac
    table_row "$what ($( [ $where = /tmp ] && echo rootfs || echo volume))" "${ms[runc,$op]}" "${ms[microrun,$op]}" "${ms[qemu,$op]}"
  done
}
sec_fs-rootfs() { fs_section /tmp; }
sec_fs-volume() { fs_section /data; }

# The floor under a volume's small-file figures: what one round trip to
# the host costs, next to runc's whole operation. Per operation (us), 4000
# of each timed inside the container: the guest's own tmpfs (/dev/shm)
# asks the host nothing under microrun; a stat of an absent name in a
# volume is one LOOKUP whose host work is a failed openat.
floor='N=4000; t0=$(now); i=0; while [ $i -lt $N ]; do i=$((i+1)); done; t1=$(now)
  mkdir /dev/shm/s s; i=0; while [ $i -lt $N ]; do [ -e /dev/shm/s/x$i ]; i=$((i+1)); done; t2=$(now)
  i=0; while [ $i -lt $N ]; do [ -e s/x$i ]; i=$((i+1)); done; t3=$(now)
  i=0; while [ $i -lt $N ]; do : > /dev/shm/s/f$i; i=$((i+1)); done; t4=$(now)
  i=0; while [ $i -lt $N ]; do : > s/f$i; i=$((i+1)); done; t5=$(now)
  rm -rf s; t6=$(now); rm -rf /dev/shm/s
  echo $(( (t1 - t0) * 1000 / N )) $(( (t2 - t1) * 1000 / N )) $(( (t3 - t2) * 1000 / N )) $(( (t4 - t3) * 1000 / N )) $(( (t5 - t4) * 1000 / N )) $(( (t6 - t5) * 1000 / N ))'
floor_run() { fs_try "$1" /data "$2" "$floor"; }
sec_fs-floor() {
  echo "== a volume's small files against one round trip (us per operation, median of $FS_RUNS runs by turns)"
  local rt op col
  declare -A us=()
  by_turns floor_run || return
  printf '%-44s %9s %9s %15s\n' "" runc microrun "$PEER_NAME"
  col=1
  for op in "empty shell loop turn" "stat of an absent name, own tmpfs" "stat of an absent name, volume" \
    "create, own tmpfs" "create, volume" "unlink (rm -rf), volume"; do
    for rt in runc microrun qemu; do
      us[$rt,$col]=$(median_of "$rt" "$col")
    done
    printf '%-44s %9d %9d %15d\n' "$op" "${us[runc,$col]}" "${us[microrun,$col]}" "${us[qemu,$col]}"
    col=$((col + 1))
  done
  # A create or unlink in a volume waits for at least one round trip; the
  # goal (half of runc's speed) allows twice runc's whole operation.
  printf '%-44s %19d\n' "microrun: one round trip (row 3 - row 2)" $(( us[microrun,3] - us[microrun,2] ))
  printf '%-44s %19d\n' "$PEER_NAME: one round trip (row 3 - row 2)" $(( us[qemu,3] - us[qemu,2] ))
  printf '%-44s %19d\n' "0.5x runc allows for a whole create" $(( 2 * us[runc,5] ))
  printf '%-44s %19d\n' "0.5x runc allows for a whole unlink" $(( 2 * us[runc,6] ))
}

# Reopening unchanged files (the guest keeps its cache) and running programs
# from the rootfs, which every shell script does.
sec_reread() {
  echo "== repeated reads and execs in the rootfs (ms; $RATIOS)"
  table_head
  declare -A rx=()
  peer_base
  local work='t0=$(now); i=0; while [ $i -lt 50 ]; do cat /bin/busybox > /dev/null; i=$((i+1)); done; t1=$(now)
      i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done; t2=$(now)
      echo $((t1 - t0)) $((t2 - t1))'
  for rt in runc microrun qemu; do
    read -r rx[$rt,read] rx[$rt,exec] < <(fs_op $rt / "" "$work")
  done
  for op in read exec; do
    case $op in read) what="read /bin/busybox 50 times" ;; exec) what="exec /bin/true 100 times" ;; esac
    table_row "$what" "${rx[runc,$op]}" "${rx[microrun,$op]}" "${rx[qemu,$op]}"
  done
}

# Network between two containers on docker's bridge, both of one runtime;
# for the QEMU stack, two of its VMs in the network namespaces of two
# (runc) containers.
net_client='i=0; until ping -c 1 -W 1 $SRV >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || exit 1; done; sleep 1
  ping -c 10 -i 0.2 $SRV | sed -n "s|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p"
  t0=$(now); dd if=/dev/zero bs=1M count=64 2>/dev/null | nc $SRV 5001; echo $(( $(now) - t0 ))'
net_server='while true; do nc -l -p 5001 > /dev/null; done'
sec_net() {
  echo "== network (two containers on the default bridge; $PEER_NAME: two VMs, tap + vhost-net, in two containers' namespaces)"
  printf '%-44s %9s %9s %15s\n' "" runc microrun "$PEER_NAME"
  declare -A net=()
  local rt srv cli srv_pid cli_pid ip out ms a b
  peer_base
  for rt in runc microrun qemu; do
    if [ $rt = qemu ]; then
      srv=$(docker run -d --runtime runc local/busybox sleep 3600)
      cli=$(docker run -d --runtime runc local/busybox sleep 3600)
      srv_pid=$(docker inspect -f '{{.State.Pid}}' "$srv")
      cli_pid=$(docker inspect -f '{{.State.Pid}}' "$cli")
      read -r a < <(peer_net "$srv_pid")
      read -r b < <(peer_net "$cli_pid")
      ip=${a%%/*}
      # shellcheck disable=SC2086
      peer_vm none "" "$net_server" "$srv_pid" $a >/dev/null 2>&1 &
      # shellcheck disable=SC2086
      out=$(peer_vm none "" "SRV=$ip; $net_client" "$cli_pid" $b) || out=
      pkill -f "name bench-peer-$$" || true
      wait || true
      docker rm -f "$srv" "$cli" >/dev/null
    else
      srv=$(docker run -d --runtime $rt local/busybox sh -c "$net_server")
      ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$srv")
      out=$(docker run --rm --runtime $rt local/busybox sh -c "$NOW; SRV=$ip; $net_client")
      docker rm -f "$srv" >/dev/null
    fi
    net[$rt,ping]=$(echo "$out" | sed -n 1p)
    ms=$(echo "$out" | sed -n 2p)
    net[$rt,tcp]=$(awk -v ms="$ms" 'BEGIN {printf "%.1f", (ms > 0 ? 64 * 1000 / ms : 0)}')
  done
  printf '%-44s %9s %9s %15s\n' "ping round trip (ms, mean of 10)" "${net[runc,ping]}" "${net[microrun,ping]}" "${net[qemu,ping]}"
  printf '%-44s %9s %9s %15s\n' "TCP transfer 64 MiB (MiB/s)" "${net[runc,tcp]}" "${net[microrun,tcp]}" "${net[qemu,tcp]}"
}

for section in "$@"; do
  declare -F "sec_$section" >/dev/null || { echo "bench.sh: no section $section" >&2; exit 2; }
  "sec_$section"
done
