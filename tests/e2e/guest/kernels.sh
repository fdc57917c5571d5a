#!/usr/bin/env bash
# Scenarios for guest kernels beside the project's own (issue "bring your
# own kernel", docs/guest-image.md): this test host's own Debian kernel,
# a compressed bzImage with its drivers as modules, prepared with
# `microrun kernel add` and chosen per container by its version. Sourced
# by suite.sh after lib.sh.

# with_kernel BUNDLE VERSION: the io.microrun.kernel annotation.
with_kernel() {
  sed -i "s|^  \"annotations\": {},\$|  \"annotations\": {\"io.microrun.kernel\": \"$2\"},|" "$1/config.json"
  grep -qF "\"io.microrun.kernel\": \"$2\"" "$1/config.json"
}

# with_caps BUNDLE CAP...: adds capabilities to every set of the bundle.
with_caps() {
  local b=$1 c; shift
  for c in "$@"; do sed -i "s|^        \"CAP_KILL\"\$|        \"CAP_KILL\", \"$c\"|" "$b/config.json"; done
}

# This host's Debian kernel, a compressed bzImage, boots in a microVM to
# the guest agent; `kernel add` refuses it, saying why: Debian builds
# virtio-mmio without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it cannot
# find devices declared on the command line (ACPI discovery is not done).
t_raw_cli_bzimage_boot() {
  local v out
  v=$(uname -r)
  timeout 300 "$MR" vm-boot --kernel "/boot/vmlinuz-$v" --append loglevel=6 --console /tmp/e2e-bz.log >/dev/null 2>&1 || true
  grep -E "Linux version|microrun-agent" /tmp/e2e-bz.log | cut -c1-100
  grep -q "Linux version $v" /tmp/e2e-bz.log
  grep -q "microrun-agent: ready" /tmp/e2e-bz.log
  out=$("$MR" kernel add --dir /tmp/e2e-kernels "/boot/vmlinuz-$v" "/lib/modules/$v" 2>&1) && return 1
  echo "$out"
  echo "$out" | grep -q "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"
  test ! -e "/tmp/e2e-kernels/kernels/$v"
}

# The same image under two kernels: the project's and Debian's (a bzImage
# whose virtio, virtio-fs and vsock drivers are modules the agent loads).
t_raw_cli_distro_kernel() {
  local v b ours theirs
  v=$(uname -r)
  "$MR" kernel add "/boot/vmlinuz-$v" "/lib/modules/$v"
  "$MR" kernel list | grep -q "^$v"
  b=/tmp/e2e-kern
  bundle $b '["uname", "-r"]'
  ours=$("$MR" run --bundle $b e2e-kern-own)
  with_kernel $b "$v"
  theirs=$("$MR" run --bundle $b e2e-kern-deb)
  echo "project kernel: $ours; with the annotation: $theirs"
  expect_eq "$theirs" "$v"
  [ "$ours" != "$v" ]
  # An annotation naming no installed kernel: a clear error.
  bundle $b '["true"]'
  with_kernel $b 9.9.9-none
  fails "$MR" run --bundle $b e2e-kern-none
  "$MR" run --bundle $b e2e-kern-none 2>&1 | grep -q "kernels/9.9.9-none/kernel"
}

# A container with CAP_SYS_MODULE loads a module into its own guest
# kernel (lsmod and dmesg inside show it); without the capability the
# load fails with EPERM, as under runc; the host's modules never change.
t_raw_cli_guest_modules() {
  local v b out host_before
  v=$(uname -r)
  [ -d "/var/lib/microrun-e2e/share/microrun/kernels/$v" ] || "$MR" kernel add "/boot/vmlinuz-$v" "/lib/modules/$v"
  host_before=$(awk '{print $1}' /proc/modules | sort)
  b=/tmp/e2e-mod
  bundle $b '["sh", "/modtest.sh"]'
  printf '%s\n' 'insmod /mods/kernel/drivers/block/loop.ko && lsmod | grep -c ^loop && dmesg | grep -c "loop: module loaded"' \
    >$b/rootfs/modtest.sh
  add_bind $b "/lib/modules/$v" /mods ro
  with_kernel $b "$v"
  with_caps $b CAP_SYS_MODULE CAP_SYSLOG
  grep -q CAP_SYS_MODULE $b/config.json
  out=$("$MR" run --bundle $b e2e-mod-cap 2>&1)
  echo "with CAP_SYS_MODULE: $out"
  expect_eq "$out" "$(printf '1\n1')"
  bundle $b '["insmod", "/mods/kernel/drivers/block/loop.ko"]'
  add_bind $b "/lib/modules/$v" /mods ro
  with_kernel $b "$v"
  out=$("$MR" run --bundle $b e2e-mod-nocap 2>&1) && return 1
  echo "without: $out"
  echo "$out" | grep -qi "not permitted"
  expect_eq "$(awk '{print $1}' /proc/modules | sort)" "$host_before"
}
