#!/usr/bin/env bash
# The full-stack suite, run inside the emulated test host.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/parity.sh"
. "$here/pods.sh"
. "$here/kernels.sh"

t_kvm_present() {
  test -c /dev/kvm
  grep -qw svm /proc/cpuinfo
  lsmod | grep -q kvm_amd
}

# The VMM's unit tests that need root, real taps, tc and mount namespaces
# (on a build machine without them they skip).
t_host_unit_tests() {
  (cd /tmp && /mnt/share/bin/microrun-unit-tests vmm::net:: vmm::share::)
}

t_microrun_check() {
  "$MR" check
}

t_runc_baseline() {
  expect_eq "$(docker run --rm --runtime runc local/busybox echo hi)" "hi"
}

# The project's guest kernel and initramfs reach the agent as /init, booted
# by QEMU -M microvm (the benchmark peer) on this host's KVM.
t_guest_kernel_boots_agent() {
  local log=/tmp/microvm-console.log
  rm -f "$log"
  timeout 120 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off -accel kvm -cpu host -smp 1 -m 256 \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$SHARE/vmlinux" -initrd "$SHARE/initramfs.cpio" \
    -append "console=ttyS0 reboot=t panic=-1" -serial "file:$log"
  cat "$log"
  grep -q "microrun-agent: ready" "$log"
}

# microrun's own VMM boots the same kernel and initramfs to the agent.
t_microrun_vmm_boots_agent() {
  local log=/tmp/microrun-vm-console.log
  timeout 120 "$MR" vm-boot --console "$log"
  cat "$log"
  grep -q "microrun-agent: ready" "$log"
}

# Two vCPUs and 1 GiB: the secondary CPU comes up (INIT/SIPI) and all RAM is seen.
t_microrun_vmm_smp() {
  local log=/tmp/microrun-vm-smp.log
  timeout 120 "$MR" vm-boot --cpus 2 --memory 1024 --append "ignore_loglevel microrun.selftest" --console "$log"
  grep -q "microrun-agent: ready" "$log"
  grep -E "smp: Brought up 1 node, 2 CPUs" "$log"
  grep -q "selftest: cpus 2" "$log"
  grep -E "Memory: [0-9]+K/10[0-9]{5}K available" "$log"
}

# virtio-mmio devices from inside the guest: rng, and a disk that reads
# and writes through to the host's image file; a read-only disk refuses.
t_microrun_vmm_virtio() {
  local img=/tmp/e2e-disk.img log=/tmp/microrun-vm-virtio.log
  rm -f "$img"; printf 'disk-from-host' > "$img"; truncate -s 8M "$img"
  timeout 120 "$MR" vm-boot --rng --disk "$img" --append microrun.selftest --console "$log"
  cat "$log"
  grep -q "selftest: hwrng ok" "$log"
  grep -q "selftest: vda read disk-from-host" "$log"
  grep -q "selftest: vda write ok" "$log"
  expect_eq "$(dd if="$img" bs=1 skip=4096 count=16 2>/dev/null)" "written-by-guest"
  rm -f "$img"; printf 'disk-from-host' > "$img"; truncate -s 8M "$img"
  timeout 120 "$MR" vm-boot --disk "$img,ro" --append microrun.selftest --console "$log"
  cat "$log"
  grep -q "selftest: vda read disk-from-host" "$log"
  grep -q "selftest: vda write Err.*PermissionDenied" "$log"
  expect_eq "$(dd if="$img" bs=1 skip=4096 count=16 2>/dev/null | tr -d '\0')" ""
}

# virtio-vsock: the guest connects to host port 1024, which the hybrid
# mapping turns into a connection to the unix socket PATH_1024.
t_microrun_vmm_vsock() {
  local sock=/tmp/e2e-vsock.sock log=/tmp/microrun-vm-vsock.log
  rm -f "$sock" "${sock}_1024"
  perl -MIO::Socket::UNIX -e '
    my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 1) or die "listen: $!";
    my $c = $l->accept or die "accept: $!";
    my $line = <$c>; chomp $line; print $c "pong:$line\n"; close $c;' "${sock}_1024" &
  local server=$!
  timeout 120 "$MR" vm-boot --vsock "$sock" --append microrun.selftest --console "$log"
  kill $server 2>/dev/null || true
  cat "$log"
  grep -q "selftest: vsock reply pong:ping" "$log"
  test ! -e "$sock"
}

t_docker_echo() {
  expect_eq "$(docker run --rm --runtime microrun local/busybox echo hi)" "hi"
  # The VMM's virtio_mmio.used_only=1 reached the guest kernel's patched
  # driver: interrupts without status reads (docs/guest-image.md).
  expect_eq "$(docker run --rm --runtime microrun local/busybox cat /sys/module/virtio_mmio/parameters/used_only)" "Y"
}
# The VM process's memory beside its guest RAM, with one container running,
# against its budget (#32; make bench prints the figures): memory does not
# jitter the way time does, so growth here is a regression.
t_monitor_memory_budget() {
  local budget=3072 c pid rss
  c=$(docker run -d --runtime microrun local/busybox sleep 600)
  sleep 2
  pid=$(pgrep -P "$(docker inspect -f '{{.State.Pid}}' "$c")" -x microrun-vm)
  cat "/proc/$pid/smaps" >/tmp/monitor-budget.smaps
  docker rm -f "$c" >/dev/null
  read -r rss _ < <(vmm_mem /tmp/monitor-budget.smaps)
  echo "VM process beside guest RAM: $rss KiB resident (budget $budget)"
  if [ "$rss" -gt "$budget" ]; then
    awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Rss:/ && $2 > 0 { print $2, m }' /tmp/monitor-budget.smaps | sort -rn | head -12
    return 1
  fi
}
t_docker_exit_code() { parity local/busybox sh -c 'exit 7'; }

# stdout and stderr stay apart; stdin reaches the workload and EOF ends it.
t_docker_stdio() {
  expect_eq "$(docker run --rm --runtime microrun local/busybox sh -c 'echo out; echo err >&2' 2>/dev/null)" "out"
  expect_eq "$(docker run --rm --runtime microrun local/busybox sh -c 'echo out; echo err >&2' 2>&1 >/dev/null)" "err"
  expect_eq "$(printf 'hello\nworld\n' | docker run -i --rm --runtime microrun local/busybox cat)" "$(printf 'hello\nworld')"
}

# 10 MiB of output arrives intact, and before the exit status (raw CLI:
# docker itself drops the tail of output this large here, under runc too).
t_bulk_output() {
  local b=/tmp/e2e-bulk
  bundle "$b" '["seq", "1", "1400000"]'
  expect_eq "$("$MR" run --bundle "$b" e2e-bulk | md5sum)" "$(seq 1 1400000 | md5sum)"
  parity local/busybox seq 1 150000
}

# What the workload sees of itself: the same as under runc.
t_docker_inside() {
  parity -h inside-host -e FOO=bar -w /tmp -u 1000:1000 --group-add 1001 --ulimit nofile=1000:2000 \
    local/busybox sh -c 'hostname; echo $FOO; pwd; id; ulimit -n; ulimit -Hn; grep -E "^(Cap|NoNewPrivs|Seccomp:)" /proc/self/status'
  parity --security-opt no-new-privileges local/busybox grep NoNewPrivs /proc/self/status
  parity -m 64m --pids-limit 50 --cpus 1.5 local/busybox cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max
  parity local/busybox sh -c '(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo writable || echo read-only; cat /proc/timer_list | wc -c'
  # Only stdio is inherited (ls's own directory is the 3).
  parity local/busybox ls /proc/self/fd
  # Docker's default seccomp profile refuses what it must.
  parity local/busybox sh -c 'unshare -U true 2>/dev/null && echo allowed || echo refused'
}

# --privileged: the spec lists the host's devices (its /dev/ptmx among
# them), every capability, no seccomp, writable /sys and /proc/sys.
t_docker_privileged() {
  parity --privileged local/busybox sh -c 'grep -E "^(CapEff|Seccomp:)" /proc/self/status; readlink /dev/ptmx
    grep -E " /sys | /proc/sys " /proc/self/mounts | cut -d" " -f2,4 | cut -d, -f1
    (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo writable; test -c /dev/null && echo null'
  expect_eq "$(in_terminal 'docker run --rm -t --privileged --runtime microrun local/busybox tty')" "/dev/pts/0"
}

# kill through docker: SIGKILL gives 137; an exec'd process has its own exit code.
t_docker_kill_and_exec() {
  local c
  c=$(docker run -d --runtime microrun local/busybox sleep 100)
  expect_eq "$(docker exec "$c" echo from-exec)" "from-exec"
  expect_eq "$(docker exec "$c" ls /proc/self/fd | tr '\n' ' ')" "0 1 2 3 "
  docker exec "$c" sh -c 'exit 3' && return 1 || test $? -eq 3
  expect_eq "$(docker exec "$c" sh -c 'echo a & echo b & wait' | sort | tr -d '\n')" "ab"
  docker kill -s KILL "$c" >/dev/null
  expect_eq "$(docker wait "$c")" "137"
  docker rm "$c" >/dev/null
  # SIGTERM kills a workload that is not the namespace's init (under
  # docker-init): 143, as under runc.
  local rt
  for rt in runc microrun; do
    c=$(docker run -d --init --runtime $rt local/busybox sleep 100)
    # docker-init forwards signals once it runs the workload.
    for _ in $(seq 300); do docker exec "$c" pidof sleep >/dev/null 2>&1 && break; sleep 0.2; done
    docker kill -s TERM "$c" >/dev/null
    expect_eq "$rt $(docker wait "$c")" "$rt 143"
    docker rm "$c" >/dev/null
  done
}

# What docker does to a running container, under both runtimes: logs,
# pause/unpause, top, stats, and stop (sh as init ignores SIGTERM, so stop
# ends it with SIGKILL after the timeout: 137).
lifecycle_case() {
  local rt=$1 c i
  c=$(docker run -d --runtime "$rt" local/busybox sh -c 'echo started; sleep 100')
  for i in $(seq 300); do docker logs "$c" 2>&1 | grep -q started && break; sleep 0.2; done
  echo "logs: $(docker logs "$c" 2>&1)"
  docker pause "$c" >/dev/null
  echo "paused: $(docker inspect -f '{{.State.Status}}' "$c")"
  docker unpause "$c" >/dev/null
  echo "unpaused: $(docker inspect -f '{{.State.Status}}' "$c")"
  docker top "$c" >/dev/null && echo "top: ok"
  docker stats --no-stream --format '{{.Container}}' "$c" | grep -q "${c:0:12}" && echo "stats: ok"
  docker stop -t 2 "$c" >/dev/null
  echo "stopped: $(docker wait "$c")"
  docker rm "$c" >/dev/null
}

t_docker_lifecycle() {
  local out_runc out_mr c
  out_runc=$(lifecycle_case runc)
  out_mr=$(lifecycle_case microrun)
  agree "$out_runc" "$out_mr"
  # rm -f of a running container leaves no monitor behind.
  c=$(docker run -d --runtime microrun local/busybox sleep 100)
  docker rm -f "$c" >/dev/null
  fails docker inspect "$c"
  fails pgrep -f "[m]onitor --bundle .*$c"
}

# Volumes and a read-only root, as under runc.
t_docker_volumes() {
  local d; d=$(mktemp -d)
  echo from-host > "$d/f"
  parity -v "$d:/data:ro" local/busybox cat /data/f
  parity --read-only local/busybox sh -c 'touch /x 2>/dev/null && echo rw || echo ro'
  parity --read-only --tmpfs /scratch local/busybox sh -c 'touch /scratch/x && echo tmpfs-rw'
  rm -rf "$d"
}

# The rootfs is the container's own and cached longer (10 s): what the
# container writes it reads back (in the same file and after a reopen);
# docker cp into a running container shows at once for a name not looked
# up yet, and within the cache time for a file the container had seen.
t_docker_rootfs_cache() {
  local c
  c=$(docker run -d --runtime microrun local/busybox sh -c 'echo v1 > /seen; sleep 300')
  expect_eq "$(docker exec "$c" sh -c 'cat /seen; ls /absent 2>/dev/null || echo absent')" "$(printf 'v1\nabsent')"
  echo fresh > /tmp/e2e-cp-new; echo v2-longer > /tmp/e2e-cp-seen
  docker cp /tmp/e2e-cp-new "$c:/new"
  docker cp /tmp/e2e-cp-seen "$c:/seen"
  docker cp /tmp/e2e-cp-new "$c:/absent"
  expect_eq "$(docker exec "$c" cat /new)" "fresh"
  sleep 11
  expect_eq "$(docker exec "$c" sh -c 'cat /seen /absent')" "$(printf 'v2-longer\nfresh')"
  expect_eq "$(docker exec "$c" sh -c 'dd if=/dev/urandom of=/w bs=1M count=8 2>/dev/null; a=$(md5sum < /w); b=$(md5sum < /w); [ "$a" = "$b" ] && echo same')" "same"
  docker rm -f "$c" >/dev/null
  rm -f /tmp/e2e-cp-new /tmp/e2e-cp-seen
}

# virtio-fs volumes are live both ways: the host sees the container's
# writes, the container sees the host's while it runs; owners, large files
# and many small files come through.
t_docker_volume_live() {
  local d c; d=$(mktemp -d)
  docker run --rm --runtime microrun -v "$d:/data" local/busybox sh -c 'echo x > /data/f'
  expect_eq "$(cat "$d/f")" "x"
  echo v1 > "$d/changing"
  : > "$d/grows"
  # The guest keeps looking at the empty file (so it holds its attributes,
  # size 0, from under a second ago) until the host has written both files:
  # an open after the host's write must read it whole, as under runc.
  c=$(docker run -d --runtime microrun -v "$d:/data" local/busybox sh -c \
    'for i in $(seq 300); do stat -c %s /data/grows >/dev/null; [ -f /data/late ] && [ "$(cat /data/changing)" = v2 ] && cat /data/late /data/grows && exit 0; sleep 0.1; done; exit 1')
  sleep 2
  echo late > "$d/late"
  echo grown > "$d/grows"
  echo v2 > "$d/changing"
  expect_eq "$(docker wait "$c")" "0"
  expect_eq "$(docker logs "$c")" "$(printf 'late\ngrown')"
  docker rm "$c" >/dev/null
  parity -v "$d:/data" --user 1234:5678 local/busybox sh -c 'touch /data/own-$$; stat -c %u:%g /data/own-$$'
  # 64 MiB written in the guest, checked on the host, read back in the guest.
  docker run --rm --runtime microrun -v "$d:/data" local/busybox sh -c \
    'dd if=/dev/urandom of=/data/big bs=1M count=64 2>/dev/null; md5sum /data/big' >"$d.sum"
  expect_eq "$(cd "$d" && md5sum big | cut -d' ' -f1)" "$(cut -d' ' -f1 "$d.sum")"
  expect_eq "$(docker run --rm --runtime microrun -v "$d:/data" local/busybox md5sum /data/big | cut -d' ' -f1)" \
    "$(cut -d' ' -f1 "$d.sum")"
  docker run --rm --runtime microrun -v "$d:/data" local/busybox sh -c \
    'mkdir /data/many && cd /data/many && for i in $(seq 5000); do echo $i > f$i; done'
  expect_eq "$(ls "$d/many" | wc -l)" "5000"
  expect_eq "$(cat "$d/many/f4999")" "4999"
  rm -rf "$d" "$d.sum"
}

# inotify in a volume: a watcher in the container sees the container's own
# changes (the guest kernel makes those events) and the changes made on
# the host (the monitor watches the volume with fanotify and the guest
# kernel raises them), each once and in order, as under runc.
t_docker_volume_inotify() {
  local d rt c i; d=$(mktemp -d)
  declare -A out=()
  install -m 0755 /mnt/share/bin/inotify-watch "$d.iw"
  parity -v "$d:/data" -v "$d.iw:/iw:ro" local/busybox sh -c '
    timeout 60 /iw /data stop > /tmp/ev & p=$!
    i=0; while ! grep -qs ready /tmp/ev && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    echo a > /data/f; echo b >> /data/f; mkdir /data/d; mv /data/f /data/g; chmod 600 /data/g
    rm /data/g; rmdir /data/d; touch /data/stop
    wait $p; echo "watcher: $?"; cat /tmp/ev; rm /data/stop'
  mkdir "$d/sub"
  for rt in runc microrun; do
    c=$(docker run -d --runtime $rt -v "$d:/data" -v "$d.iw:/iw:ro" local/busybox timeout 120 /iw /data/sub stop)
    for i in $(seq 300); do docker logs "$c" 2>&1 | grep -q ready && break; sleep 0.1; done
    sleep 1
    # Apart, so that neither side merges two changes of one name.
    for step in 'echo a > h' 'echo b >> h' 'mkdir hd' 'mv h h2' 'chmod 600 h2' 'rm h2' 'rmdir hd' 'touch stop'; do
      (cd "$d/sub" && eval "$step"); sleep 0.5
    done
    out[$rt]="(exit $(docker wait "$c")): $(docker logs "$c" 2>&1)"
    docker rm "$c" >/dev/null
    rm -f "$d/sub/stop"
  done
  agree "${out[runc]}" "${out[microrun]}"
  rm -rf "$d" "$d.iw"
}

# Reads and writes of 1 MiB and more skip the guest's page cache (kernel
# patch fuse-uncached-large-io): mixed with small reads, cached pages,
# overwrites, appends, holes and unaligned sizes, in the rootfs and in a
# volume, every file reads as under runc, and the host has the same bytes.
t_docker_large_io() {
  local rt d out=() src; src=$(mktemp)
  head -c 3146962 /dev/urandom >"$src"
  for rt in runc microrun; do
    d=$(mktemp -d)
    cp "$src" "$d/src"; cp "$src" "$d/host"
    out+=("$(docker run --rm --runtime $rt -v "$d:/data" local/busybox sh -c '
      sums() { md5sum < $1 | cut -c1-8; dd if=$1 bs=1M 2>/dev/null | md5sum | cut -c1-8
               dd if=$1 bs=1100000 2>/dev/null | md5sum | cut -c1-8; stat -c %s $1; }
      for dir in /tmp /data; do
        cd $dir; echo "$dir"
        dd if=/data/src of=a bs=1M 2>/dev/null; sums a
        dd if=a bs=4k count=1 2>/dev/null >/dev/null; cat a >/dev/null
        dd if=/dev/zero of=a bs=1M count=1 seek=1 conv=notrunc 2>/dev/null; sums a
        dd if=/data/src of=a bs=1M count=1 oflag=append conv=notrunc 2>/dev/null; sums a
        dd if=/data/src of=a bs=1100000 count=2 seek=5 conv=notrunc 2>/dev/null; sums a
        dd if=/data/src of=a bs=1M count=1 2>/dev/null; sums a
        cp a /data/from-$(basename $dir)
      done
      dd if=/data/host bs=1M count=1 2>/dev/null | md5sum | cut -c1-8
      dd if=/dev/zero of=/data/host bs=2M count=1 seek=1 2>/dev/null; sums /data/host' 2>&1)
      host: $(cd "$d" && md5sum from-tmp from-data host | cut -c1-8 | tr '\n' ' ')")
    rm -rf "$d"
  done
  rm -f "$src"
  agree "${out[0]}" "${out[1]}"
}

# A large directory in a volume lists every entry once (the guest asks for
# many entries per request), and deleting it while reading it (rm -rf)
# removes every entry, as under runc.
t_docker_volume_rm_rf() {
  local d; d=$(mktemp -d)
  parity -v "$d:/data" local/busybox sh -c \
    'mkdir /data/s; i=0; while [ $i -lt 3000 ]; do : > /data/s/f$i; i=$((i+1)); done
     ls /data/s | wc -l; ls /data/s | sort -u | wc -l; ls -l /data/s | grep -c " f[0-9]*$"
     rm -rf /data/s; ls /data | wc -l'
  rm -rf "$d"
}

# Listings show what the host has. In the rootfs, files the container made
# and lists again (plain READDIR while the guest has every entry cached,
# READDIRPLUS finding the files it holds by statx, docs/storage.md) list as
# under runc. In a volume the container keeps listing while the host
# replaces, removes and adds names: its next listing has the host's names
# and inode numbers at once, and sizes the host changed after the cache time.
# A name found absent, then made by docker cp, lists as a file.
t_docker_volume_listing() {
  parity local/busybox sh -c 'mkdir /tmp/s; i=0; while [ $i -lt 300 ]; do echo $i > /tmp/s/f$i; i=$((i+1)); done
    for k in 1 2; do ls -l /tmp/s | awk "{print \$1, \$5, \$9}" | sort | md5sum; done
    ls -la /tmp/s | wc -l; ls /tmp/s | sort -u | wc -l'
  local d c i; d=$(mktemp -d)
  c=$(docker run -d --runtime microrun -v "$d:/data" local/busybox sh -c '
    mkdir /data/s; i=0; while [ $i -lt 300 ]; do echo $i > /data/s/f$i; i=$((i+1)); done
    touch /data/ready; while [ ! -f /data/go ]; do ls -l /data/s >/dev/null; done
    ls -i /data/s; echo --; sleep 2; ls -l /data/s')
  for i in $(seq 300); do [ -f "$d/ready" ] && break; sleep 0.2; done
  rm "$d/s/f1"; echo replaced-on-the-host > "$d/s/f1"
  rm "$d/s/f2"; echo new > "$d/s/added"
  echo grown-on-the-host >> "$d/s/f3"
  touch "$d/go"
  expect_eq "$(docker wait "$c")" "0"
  local out; out=$(docker logs "$c")
  docker rm "$c" >/dev/null
  expect_eq "$(echo "$out" | sed '/^--$/,$d' | awk '{print $1, $2}' | sort)" \
    "$(ls -i "$d/s" | awk '{print $1, $2}' | sort)"
  expect_eq "$(echo "$out" | sed '1,/^--$/d' | awk 'NF > 2 {print $5, $9}' | sort)" \
    "$(ls -l "$d/s" | awk 'NF > 2 {print $5, $9}' | sort)"
  # A name the container found absent in its rootfs (a negative entry,
  # cached 10 s) and docker cp then made is listed with its attributes.
  rm -rf "$d"; d=$(mktemp -d)
  c=$(docker run -d --runtime microrun -v "$d:/sig" local/busybox sh -c '
    mkdir /tmp/n; i=0; while [ $i -lt 50 ]; do : > /tmp/n/f$i; i=$((i+1)); done
    ls /tmp/n/late 2>/dev/null; touch /sig/ready; while [ ! -f /sig/go ]; do sleep 0.1; done
    ls -l /tmp/n 2>&1 | grep -c " late$"')
  for i in $(seq 300); do [ -f "$d/ready" ] && break; sleep 0.2; done
  echo late > /tmp/e2e-late; docker cp /tmp/e2e-late "$c:/tmp/n/late"; touch "$d/go"
  expect_eq "$(docker wait "$c")" "0"
  expect_eq "$(docker logs "$c")" "1"
  docker rm "$c" >/dev/null
  rm -rf "$d" /tmp/e2e-late
}

# Creating names the guest has not looked up (it asks the host for an
# exclusive create without a lookup first, docs/storage.md): open(O_CREAT)
# of an existing file opens it, not replaces it; a dangling symlink creates
# its target; a directory, noclobber, a file in a directory the user may
# not write and a new name there, mkdir, ln and ln -s onto names that exist
# give what they give under runc. Each runtime gets a fresh volume.
create_case_volume() {
  local d; d=$(mktemp -d)
  echo old > "$d/exists"; ln -s tgt "$d/link"; mkdir "$d/dir" "$d/locked"
  echo mine > "$d/locked/mine"; chown 1234:1234 "$d/locked/mine"; chmod 666 "$d/exists"; chmod 777 "$d"
  echo "$d"
}
t_docker_volume_open_create() {
  local rt d out=()
  for rt in runc microrun; do
    d=$(create_case_volume)
    out+=("$(docker run --rm --runtime $rt -v "$d:/data" --user 1234:1234 local/busybox sh -c '
      cd /data; echo new >> exists; cat exists; echo t > link; cat tgt; ls -l link | cut -c1
      { echo x > dir; } 2>&1; set -C; { echo y > exists; } 2>&1; set +C
      echo more >> locked/mine; cat locked/mine; touch locked/new 2>&1
      : > fresh; stat -c "%n %s %u" fresh exists tgt
      mkdir dir 2>&1; mkdir -p dir && echo p-ok; mkdir newdir && ls -ld newdir | cut -c1
      ln -s x exists 2>&1; ln -s tgt newlink && cat newlink; ln fresh hard && stat -c %h hard
      mv -n fresh hard; ls' 2>&1)
      host: $(cat "$d/exists" "$d/tgt" "$d/locked/mine" | tr '\n' ' ')/ $(ls "$d" | tr '\n' ' ')")
    rm -rf "$d"
  done
  agree "${out[0]}" "${out[1]}"
}

# Read-only is enforced on the host, not only by the guest's mount flags: a
# container that remounts its read-only volume or root read-write in the
# guest still cannot write through to the host.
t_docker_readonly_host_side() {
  local d out; d=$(mktemp -d)
  out=$(docker run --rm --runtime microrun --cap-add SYS_ADMIN -v "$d:/data:ro" local/busybox sh -c \
    'mount -o remount,rw,bind /data && echo remounted; { echo x > /data/f; } 2>/dev/null || echo refused') || true
  echo "$out"
  expect_eq "$out" "$(printf 'remounted\nrefused')"
  test ! -e "$d/f"
  out=$(docker run --rm --runtime microrun --cap-add SYS_ADMIN --read-only local/busybox sh -c \
    'mount -o remount,rw / && echo remounted; touch /x 2>/dev/null || echo refused') || true
  echo "$out"
  expect_eq "$out" "$(printf 'remounted\nrefused')"
  rm -rf "$d"
}

# docker's /etc/hosts, /etc/resolv.conf and /etc/hostname reach the guest
# with docker's contents.
t_docker_etc_files() {
  local c f
  c=$(docker run -d --runtime microrun --hostname e2e-host local/busybox sleep 100)
  for f in Hosts ResolvConf Hostname; do
    local path; path=$(docker inspect -f "{{.${f}Path}}" "$c")
    local guest=/etc/$(echo "$f" | tr 'A-Z' 'a-z' | sed 's/resolvconf/resolv.conf/')
    agree "$(cat "$path")" "$(docker exec "$c" cat "$guest")"
  done
  docker exec "$c" hostname | grep -qx e2e-host
  docker rm -f "$c" >/dev/null
}

# From inside the guest, nothing outside the shared paths can be read:
# symlinks (absolute and relative) and `..` resolve in the guest.
t_virtiofs_escape() {
  local d secret out; d=$(mktemp -d)
  secret="canary-$RANDOM$RANDOM"
  mkdir "$d/vol"; echo "$secret" > "$d/canary"
  ln -s "$d/canary" "$d/vol/abs"
  ln -s ../canary "$d/vol/rel"
  ln -s ../../../../../../../.. "$d/vol/up"
  out=$(docker run --rm --runtime microrun -v "$d/vol:/data" local/busybox sh -c \
    "cat /data/abs /data/rel /data/up$d/canary /data/../canary /data/../../$d/canary; ls /data/up; cat /proc/self/mounts" 2>&1) || true
  echo "$out"
  if echo "$out" | grep -q "$secret"; then echo "host canary leaked"; return 1; fi
  # The guest sees its own root through the symlink, never the host's.
  echo "$out" | grep -q '^bin$'
  rm -rf "$d"
}

# The raw CLI on a bundle: the rootfs and a bind mount are the host's own
# directories (writes land there, as with runc); a missing bind source is
# an error that leaves nothing behind.
t_raw_cli_binds() {
  local b=/tmp/e2e-binds d; d=$(mktemp -d)
  bundle "$b" '["sh", "-c", "echo in-root > /written; cat /data/f; echo from-guest > /data/g"]'
  sed -i 's/"readonly": true/"readonly": false/' "$b/config.json"
  echo from-host > "$d/f"
  add_bind "$b" "$d" /data
  expect_eq "$("$MR" run --bundle "$b" e2e-binds)" "from-host"
  expect_eq "$(cat "$b/rootfs/written")" "in-root"
  expect_eq "$(cat "$d/g")" "from-guest"
  bundle "$b" '["true"]'
  add_bind "$b" /nonexistent/e2e-src /data
  local err; err=$("$MR" run --bundle "$b" e2e-binds 2>&1) && return 1
  echo "$err"
  echo "$err" | grep -q /nonexistent/e2e-src
  "$MR" list | grep -q e2e-binds && return 1
  test ! -e /run/microrun/e2e-binds
  rm -rf "$d" "$b"
}

# A root on a block image (annotation io.microrun.rootfs-block): attached
# with virtio-blk, mounted by the agent; writes land in the image; bind
# mounts still come through virtio-fs.
t_raw_cli_block_root() {
  local b=/tmp/e2e-blk img=/tmp/e2e-root.img d; d=$(mktemp -d)
  bundle "$b" '["sh", "-c", "head -1 /proc/mounts; cat /data/f; echo in-image > /written"]'
  sed -i 's/"readonly": true/"readonly": false/' "$b/config.json"
  rm -f "$img"; truncate -s 64M "$img"
  mkfs.ext4 -q -d "$b/rootfs" "$img"
  rm -rf "$b/rootfs"; mkdir "$b/rootfs"
  sed -i "s|\"annotations\": {}|\"annotations\": {\"io.microrun.rootfs-block\": \"$img\"}|" "$b/config.json"
  echo from-host > "$d/f"
  add_bind "$b" "$d" /data
  local out; out=$("$MR" run --bundle "$b" e2e-blk)
  echo "$out"
  expect_eq "$(echo "$out" | cut -d' ' -f1-3)" "$(printf '/dev/vda / ext4\nfrom-host')"
  expect_eq "$(debugfs -R 'cat /written' "$img" 2>/dev/null)" "in-image"
  rm -rf "$d" "$b" "$img"
}

# http_get HOST PORT PATH: the body of an HTTP/1.0 GET.
http_get() {
  exec 3<>"/dev/tcp/$1/$2" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$3" >&3
  sed '1,/^\r*$/d' <&3
  exec 3<&-
}

# Docker's default bridge: microrun containers reach each other and runc
# containers by IP (ICMP and TCP), a published port works from dockerd's
# side, the addresses and routes are runc's, and nothing is left behind.
t_docker_network() {
  local c1 ip1 pid out
  docker rm -f e2e-web >/dev/null 2>&1 || true
  c1=$(docker run -d --runtime microrun --name e2e-web -p 18080:80 local/busybox httpd -f -p 80 -h /etc)
  ip1=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$c1")
  out=$(docker run --rm --runtime microrun local/busybox sh -c \
    "ping -c 2 -W 10 $ip1 >/dev/null && echo ping-ok; wget -q -O - http://$ip1/hostname")
  expect_eq "$out" "$(printf 'ping-ok\n%s' "${c1:0:12}")"
  expect_eq "$(docker run --rm --runtime runc local/busybox wget -q -O - "http://$ip1/hostname")" "${c1:0:12}"
  # From dockerd's side of the published port (bash's /dev/tcp: no HTTP
  # client in the test host).
  for _ in $(seq 50); do out=$(http_get 127.0.0.1 18080 /hostname) && [ -n "$out" ] && break; sleep 0.2; done
  expect_eq "$out" "${c1:0:12}"
  # The container's view of its network, without what differs between
  # any two containers (its own address, interface indexes).
  local view='me=$(hostname -i); { ip -4 -o addr; ip route; ip -6 addr; cat /sys/class/net/eth0/mtu; } | sed "s/$me/SELF/g; s/^[0-9]*: //; s/eth0@if[0-9]*/eth0/"'
  out=$(docker run --rm --runtime microrun local/busybox sh -c "$view")
  echo "$out" | grep -q 'eth0 *inet SELF/16'
  parity local/busybox sh -c "$view"
  # Hold the container's namespace: after rm -f it must hold only lo.
  pid=$(docker inspect -f '{{.State.Pid}}' "$c1")
  touch /tmp/e2e-netns; mount --bind "/proc/$pid/ns/net" /tmp/e2e-netns
  nsenter --net=/tmp/e2e-netns ip -o link | grep -q mrtap0
  nsenter --net=/tmp/e2e-netns tc filter show dev eth0 ingress | grep -q mirred
  docker rm -f "$c1" >/dev/null
  out=$(nsenter --net=/tmp/e2e-netns ip -o link | cut -d: -f2 | tr -d ' ')
  umount /tmp/e2e-netns
  expect_eq "$out" "lo"
}

# The monitor killed outright: its tap goes with it, docker's cleanup
# removes the rest.
t_docker_network_sigkill() {
  local c pid out
  c=$(docker run -d --runtime microrun local/busybox sleep 100)
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  touch /tmp/e2e-netns; mount --bind "/proc/$pid/ns/net" /tmp/e2e-netns
  kill -9 "$pid"
  docker rm -f "$c" >/dev/null
  out=$(nsenter --net=/tmp/e2e-netns ip -o link | cut -d: -f2 | tr -d ' ')
  umount /tmp/e2e-netns
  expect_eq "$out" "lo"
}

# --network none: only loopback, as with runc.
t_docker_network_none() {
  parity --network none local/busybox sh -c "ip -o link | cut -d: -f2; ip -4 -o addr | cut -d' ' -f2-4"
}

# A user-defined bridge: containers find each other by name (docker's
# embedded DNS, 127.0.0.11 in the container's namespace).
t_docker_network_dns() {
  docker rm -f e2e-srv >/dev/null 2>&1 || true
  docker network rm e2e-net >/dev/null 2>&1 || true
  docker network create e2e-net >/dev/null
  local c out
  c=$(docker run -d --runtime microrun --network e2e-net --name e2e-srv local/busybox httpd -f -p 80 -h /etc)
  # By name through docker's embedded DNS (127.0.0.11 in the container's
  # namespace on the host), from a microrun and a runc client alike.
  # (The image's static busybox wget crashes resolving names, under runc too.)
  # Over UDP (nslookup, ping) and TCP: a query for e2e-srv's A record in
  # DNS-over-TCP framing; the answer's last 4 bytes are the address.
  local tcp='printf "\0\031\022\064\001\0\0\001\0\0\0\0\0\0\007e2e-srv\0\0\001\0\001" | nc -w 5 127.0.0.11 53 | od -An -tx1 | tr -d " \n" | tail -c 8'
  local probe="grep nameserver /etc/resolv.conf; nslookup e2e-srv | grep -A1 '^Name:'; ping -c 1 -W 10 e2e-srv | sed -n 2p | cut -d: -f1; $tcp"
  local ip; ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$c")
  out=$(docker run --rm --runtime microrun --network e2e-net local/busybox sh -c "$probe") || true
  echo "$out"
  parity --network e2e-net local/busybox sh -c "$probe"
  docker rm -f "$c" >/dev/null
  docker network rm e2e-net >/dev/null
  local hex; hex=$(printf '%02x' ${ip//./ })
  expect_eq "$out" "$(printf 'nameserver 127.0.0.11\nName:\te2e-srv\nAddress: %s\n64 bytes from %s\n%s' "$ip" "$ip" "$hex")"
}

# A terminal: the size set on the client's terminal reaches the guest pty.
t_docker_tty() {
  local out
  # docker sets the size on the master just after start, racing the
  # workload (under runc too): the workload waits for it to arrive (a 0×0
  # size prints nothing and still succeeds in busybox stty).
  local size='for i in $(seq 100); do s=$(stty size 2>/dev/null); [ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.1; done; echo "$s"'
  out=$(in_terminal "stty rows 33 cols 101
docker run -t --rm --runtime microrun local/busybox sh -c '$size; tty'
stty rows 20 cols 70
c=\$(docker run -d -t --runtime microrun local/busybox sleep 100)
docker exec -t \$c tty
docker rm -f \$c >/dev/null")
  echo "$out"
  expect_eq "$out" "$(printf '33 101\n/dev/pts/0\n/dev/pts/1')"
}

# docker's resize of an exec's terminal.
t_docker_exec_tty_size() {
  local out
  out=$(in_terminal 'stty rows 20 cols 70
c=$(docker run -d -t --runtime microrun local/busybox sleep 100)
docker exec -t $c sh -c "sleep 3; stty size"
docker rm -f $c >/dev/null')
  expect_eq "$out" "20 70"
}

t_raw_cli_lifecycle() {
  local b=/tmp/e2e-raw
  bundle "$b" '["sh", "-c", "read x; echo got $x; exit 3"]'
  "$MR" delete --force e2e-raw 2>/dev/null || true
  exec 3< <(sleep 2; echo line)
  "$MR" create --bundle "$b" e2e-raw <&3 >/tmp/e2e-raw.out 2>&1 &
  local creator=$!
  for _ in $(seq 600); do "$MR" state e2e-raw 2>/dev/null | grep -q '"status": "created"' && break; sleep 0.2; done
  "$MR" state e2e-raw | grep '"status": "created"' || { echo "create said:"; cat /tmp/e2e-raw.out; return 1; }
  "$MR" start e2e-raw
  for _ in $(seq 600); do "$MR" state e2e-raw | grep -q '"status": "stopped"' && break; sleep 0.2; done
  "$MR" state e2e-raw | grep '"status": "stopped"'
  wait $creator || true
  "$MR" delete e2e-raw
  expect_eq "$(cat /tmp/e2e-raw.out)" "got line"
  fails "$MR" state e2e-raw
  test ! -e /run/microrun/e2e-raw
}

# Docker ≥ 26 moves the veth into the container's namespace between create
# and start: the interface is hotplugged into the running VM and configured
# before the workload runs. Here the namespace is given by path (as CNI does).
# A guest that resets under a running workload (here: reboot(2) from a
# container in the guest's own pid namespace, with CAP_SYS_BOOT) ends the
# container at once with what it wrote delivered and a clear error, not a
# monitor waiting forever for streams the guest will never close.
t_raw_cli_guest_reset() {
  local b=/tmp/e2e-reset out rc
  bundle "$b" '["sh", "-c", "echo before; sleep 1; reboot -f; sleep 100"]'
  sed -i -e '/^      {$/{N;N;/"type": "pid"/d}' -e 's|"CAP_KILL"|&, "CAP_SYS_BOOT"|' "$b/config.json"
  if grep -q '"type": "pid"' "$b/config.json"; then echo "pid namespace still in the spec"; return 1; fi
  "$MR" delete --force e2e-reset 2>/dev/null || true
  out=$(timeout -k 5 120 "$MR" run --bundle "$b" e2e-reset 2>/tmp/e2e-reset.err) && rc=0 || rc=$?
  cat /tmp/e2e-reset.err
  echo "exit $rc"
  expect_eq "$out" "before"
  test "$rc" -ne 124 && test "$rc" -ne 0
  grep -q "the VM ended while the container ran: Reset" /tmp/e2e-reset.err
  "$MR" delete --force e2e-reset 2>/dev/null || true
  fails pgrep -f "[m]onitor --bundle $b"
}

t_raw_cli_late_interface() {
  local b=/tmp/e2e-late
  bundle "$b" '["sh", "/probe.sh"]'
  cat > "$b/rootfs/probe.sh" <<'EOF'
ip -4 -o addr show dev eth0 | grep -o 10.99.0.2/24
ip route | grep -o 'default via 10.99.0.1 dev eth0'
ping -c 1 -W 10 10.99.0.1 >/dev/null && echo ping-ok
EOF
  sed -i -e 's|"type": "network"|&, "path": "/var/run/netns/e2e-late"|' \
    -e 's|"CAP_KILL"|&, "CAP_NET_RAW"|' "$b/config.json"
  grep -q '/var/run/netns/e2e-late' "$b/config.json"
  "$MR" delete --force e2e-late 2>/dev/null || true
  ip link del e2e-lh 2>/dev/null || true
  ip netns del e2e-late 2>/dev/null || true
  ip netns add e2e-late
  "$MR" create --bundle "$b" e2e-late >/tmp/e2e-late.out 2>&1 &
  local creator=$!
  for _ in $(seq 600); do "$MR" state e2e-late 2>/dev/null | grep -q '"status": "created"' && break; sleep 0.2; done
  ip link add e2e-lh type veth peer name eth0 netns e2e-late
  ip addr add 10.99.0.1/24 dev e2e-lh
  ip link set e2e-lh up
  ip -n e2e-late addr add 10.99.0.2/24 dev eth0
  ip -n e2e-late link set eth0 up
  ip -n e2e-late route add default via 10.99.0.1
  "$MR" start e2e-late
  for _ in $(seq 600); do "$MR" state e2e-late | grep -q '"status": "stopped"' && break; sleep 0.2; done
  wait $creator || true
  "$MR" delete e2e-late
  local left; left=$(ip -n e2e-late -o link | cut -d: -f2 | sed 's/@.*//' | tr -d ' ' | tr '\n' ' ')
  ip link del e2e-lh
  ip netns del e2e-late
  cat /tmp/e2e-late.out
  expect_eq "$(cat /tmp/e2e-late.out)" "$(printf '10.99.0.2/24\ndefault via 10.99.0.1 dev eth0\nping-ok')"
  # The tap went with the container; the veth is the caller's.
  expect_eq "$left" "lo eth0 "
}

t_raw_cli_run() {
  local b=/tmp/e2e-run
  bundle "$b" '["echo", "raw-hi"]'
  expect_eq "$("$MR" run --bundle "$b" e2e-run)" "raw-hi"
  # A caller's stdin that stays open must not keep the container alive.
  expect_eq "$(timeout 120 "$MR" run --bundle "$b" e2e-run < <(sleep 600))" "raw-hi"
  bundle "$b" '["sh", "-c", "exit 7"]'
  "$MR" run --bundle "$b" e2e-run && return 1 || test $? -eq 7
}

# Signals through the raw CLI, as runc does them: an init without a
# handler ignores SIGTERM (pid-namespace rule), SIGKILL gives 137.
signal_case() {
  local rt=$1 b=$2 p rc
  "$rt" delete --force e2e-sig >/dev/null 2>&1 || true
  "$rt" run --bundle "$b" e2e-sig </dev/null >/dev/null 2>&1 &
  p=$!
  for _ in $(seq 600); do "$rt" state e2e-sig 2>/dev/null | grep -q '"status": "running"' && break; sleep 0.2; done
  "$rt" kill e2e-sig 15
  sleep 3
  "$rt" state e2e-sig | grep -o '"status": "[a-z]*"'
  "$rt" kill e2e-sig KILL
  wait "$p" && rc=0 || rc=$?
  echo "exit $rc"
}

t_raw_cli_signals() {
  local b=/tmp/e2e-sig out_runc out_mr
  bundle "$b" '["sleep", "100"]'
  out_runc=$(signal_case runc "$b")
  out_mr=$(signal_case "$MR" "$b")
  agree "$out_runc" "$out_mr"
  expect_eq "$out_mr" "$(printf '"status": "running"\nexit 137')"
}

# delete --force of a running container leaves no process, socket or state.
t_raw_cli_delete_force() {
  local b=/tmp/e2e-del
  bundle "$b" '["sleep", "100"]'
  "$MR" delete --force e2e-del 2>/dev/null || true
  "$MR" create --bundle "$b" e2e-del </dev/null >/dev/null 2>&1
  "$MR" start e2e-del
  "$MR" state e2e-del | grep '"status": "running"'
  local pid; pid=$("$MR" state e2e-del | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  "$MR" delete --force e2e-del
  fails "$MR" state e2e-del
  test ! -e /run/microrun/e2e-del
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fails kill -0 "$pid"
  fails pgrep -f "[m]onitor --bundle $b"
}

t_ctr_run() {
  ctr image ls -q | grep -q local/busybox || docker save local/busybox | ctr image import - >/dev/null
  expect_eq "$(ctr run --rm --runc-binary "$MR" docker.io/local/busybox:latest e2e-ctr echo hi)" "hi"
}

bash "$here/setup.sh"
scenario kvm-present t_kvm_present
scenario microrun-check t_microrun_check
scenario runc-baseline t_runc_baseline
scenario guest-kernel-boots-agent t_guest_kernel_boots_agent
scenario microrun-vmm-boots-agent t_microrun_vmm_boots_agent
scenario microrun-vmm-smp t_microrun_vmm_smp
scenario microrun-vmm-virtio t_microrun_vmm_virtio
scenario microrun-vmm-vsock t_microrun_vmm_vsock
scenario docker-echo t_docker_echo
scenario docker-exit-code t_docker_exit_code
scenario monitor-memory-budget t_monitor_memory_budget
scenario docker-stdio t_docker_stdio
scenario bulk-output t_bulk_output
scenario docker-inside t_docker_inside
scenario docker-signals-default t_docker_signals_default
scenario docker-exec-errors t_docker_exec_errors
scenario docker-rlimits-inherited t_docker_rlimits_inherited
scenario docker-kill-and-exec t_docker_kill_and_exec
scenario docker-privileged t_docker_privileged
scenario docker-tty t_docker_tty
scenario docker-exec-tty-size t_docker_exec_tty_size
scenario docker-lifecycle t_docker_lifecycle
scenario docker-volumes t_docker_volumes
scenario docker-volume-live t_docker_volume_live
scenario docker-volume-inotify t_docker_volume_inotify
scenario docker-large-io t_docker_large_io
scenario docker-rootfs-cache t_docker_rootfs_cache
scenario docker-volume-rm-rf t_docker_volume_rm_rf
scenario docker-volume-listing t_docker_volume_listing
scenario docker-volume-open-create t_docker_volume_open_create
scenario docker-readonly-host-side t_docker_readonly_host_side
scenario docker-etc-files t_docker_etc_files
scenario virtiofs-escape t_virtiofs_escape
scenario raw-cli-binds t_raw_cli_binds
scenario raw-cli-block-root t_raw_cli_block_root
scenario raw-cli-propagation t_raw_cli_propagation
scenario raw-cli-config-after-create t_raw_cli_config_after_create
scenario raw-cli-user-namespace t_raw_cli_user_namespace
scenario docker-network-container t_docker_network_container
scenario docker-ipc-container t_docker_ipc_container
scenario docker-pid-container t_docker_pid_container
scenario docker-pod-limits-and-order t_docker_pod_limits_and_order
scenario docker-pod-verbs t_docker_pod_verbs
scenario raw-cli-pod t_raw_cli_pod
scenario raw-cli-pod-refusals t_raw_cli_pod_refusals
scenario podman-run t_podman_run
scenario podman-pod t_podman_pod
scenario raw-cli-bzimage-boot t_raw_cli_bzimage_boot
known_failing raw-cli-distro-kernel "Debian's kernel finds virtio-mmio devices only through ACPI, not implemented" t_raw_cli_distro_kernel
known_failing raw-cli-guest-modules "needs a kernel with modules that finds the devices (ACPI, or the project's kernel with modules)" t_raw_cli_guest_modules
scenario conformance t_conformance
scenario host-unit-tests t_host_unit_tests
scenario docker-network t_docker_network
scenario docker-network-sigkill t_docker_network_sigkill
scenario docker-network-none t_docker_network_none
scenario docker-network-dns t_docker_network_dns
scenario raw-cli-late-interface t_raw_cli_late_interface
scenario raw-cli-guest-reset t_raw_cli_guest_reset
scenario raw-cli-run t_raw_cli_run
scenario raw-cli-lifecycle t_raw_cli_lifecycle
scenario raw-cli-signals t_raw_cli_signals
scenario raw-cli-delete-force t_raw_cli_delete_force
scenario ctr-run t_ctr_run
# The conformance counts, runc and microrun side by side, before the totals.
if [ -f /mnt/share/conformance-report.txt ]; then
  echo; echo "conformance (docs/conformance.md):"
  sed -n '/^area /,$p' /mnt/share/conformance-report.txt | sed 's/^/  /'
fi
summary
