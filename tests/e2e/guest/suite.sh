#!/usr/bin/env bash
# The full-stack suite, run inside the emulated test host.
# E2E_VM=1 adds the scenarios that boot microVMs through docker/containerd
# (they need the VMM and guest agent).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

t_kvm_present() {
  test -c /dev/kvm
  grep -qw svm /proc/cpuinfo
  lsmod | grep -q kvm_amd
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
  grep -q "selftest: vda unavailable" "$log"
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

t_docker_echo() { expect_eq "$(docker run --rm --runtime microrun local/busybox echo hi)" "hi"; }
t_docker_exit_code() { parity local/busybox sh -c 'exit 7'; }
t_raw_cli_lifecycle() {
  local b; b=$(mktemp -d)
  mkdir -p "$b/rootfs"; docker export "$(docker create local/busybox)" | tar -C "$b/rootfs" -x
  (cd "$b" && "$MR" spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"echo", "raw-hi"/' config.json)
  expect_eq "$("$MR" run --bundle "$b" e2e-raw)" "raw-hi"
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
if [ "${E2E_VM:-0}" = 1 ]; then
  scenario docker-echo t_docker_echo
  scenario docker-exit-code t_docker_exit_code
  scenario raw-cli-lifecycle t_raw_cli_lifecycle
  scenario ctr-run t_ctr_run
fi
summary
