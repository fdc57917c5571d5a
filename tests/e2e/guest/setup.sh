#!/usr/bin/env bash
# Imports local/busybox into docker, offline, from busybox-static.
# (host-init.sh registers microrun with dockerd.)
set -euo pipefail
if ! docker image inspect local/busybox >/dev/null 2>&1; then
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root" "$d/proc" "$d/sys" "$d/dev"
  chmod 1777 "$d/tmp"
  cp /bin/busybox "$d/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1000:1000::/tmp:/bin/sh\n' > "$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nuser:x:1000:\nextra:x:1001:user\n' > "$d/etc/group"
  tar -C "$d" -c . | docker import -c 'ENV PATH=/bin' - local/busybox >/dev/null
fi


# Executables mapped from the 9p share have crashed in ld.so (stale or torn
# pages after the host replaced the file): run microrun from a local copy.
# What sits at the share's path (docker's runtime path) is a wrapper: when
# containerd calls it (with --log) it adds --debug, which keeps the guest
# console in the state dir, and before `delete` it saves that console to
# /tmp/e2e-consoles/ID.log, so that a failing scenario can show it.
if mountpoint -q /mnt/share/bin/microrun; then umount -l /mnt/share/bin/microrun; fi
local_dir=/var/lib/microrun-e2e
install -D -m 0755 /mnt/share/bin/microrun "$local_dir/bin/microrun"
mkdir -p "$local_dir/share" /tmp/e2e-consoles
ln -sfn /mnt/share/share/microrun "$local_dir/share/microrun"
cat >"$local_dir/wrapper" <<'EOF'
#!/bin/sh
real=/var/lib/microrun-e2e/bin/microrun
root=/run/microrun verb= id= debug= log=
prev=
for a in "$@"; do
  case "$prev" in --root) root=$a ;; --log) log=$a ;; esac
  case "$a" in
    --log) debug=--debug ;;
    delete|create|start|kill|exec|state) [ -z "$verb" ] && verb=$a ;;
  esac
  prev=$a; id=$a
done
if [ "$verb" = delete ] && [ -f "$root/$id/console.log" ]; then
  cp "$root/$id/console.log" "/tmp/e2e-consoles/$id.log" 2>/dev/null
fi
# What the monitor said of a VM that ended early (how it ended; under
# --debug a shutdown exit's registers, which on AMD are already the reset
# state).
if [ "$verb" = delete ] && [ -n "$log" ] && grep -qE "shutdown exit|VM ended" "$log" 2>/dev/null; then
  grep -E "shutdown exit|VM ended" "$log" | tail -20 >"/tmp/e2e-consoles/$id.vmm.log"
fi
exec "$real" $debug "$@"
EOF
chmod 0755 "$local_dir/wrapper"
mount --bind "$local_dir/wrapper" /mnt/share/bin/microrun

# khugepaged collapsing a microVM's guest memory into huge pages flushes
# TLBs by IPI; a CPU of this emulated host that is running the guest then
# has not answered it (TCG nested SVM), and the host died in a soft lockup
# (collapse_huge_page -> smp_call_function). Huge pages stay where a fault
# finds one free (no compaction, which moves pages the same way); nothing
# collapses them later. (Without huge pages at all, guest memory costs
# more nested page faults: 64 MiB writes took 2-3x as long.)
# MICRORUN_E2E_WORKAROUNDS names the workarounds of this host's faults to
# apply ("hold,thp" for both); none by default since QEMU 10: 500 microVMs
# without the held VM ("hold") lost no host, and four rounds of the bench's
# file sections with khugepaged scanning every second (740 collapses) had
# no stall without the huge-page settings ("thp"; docs/testing.md).
workarounds=${MICRORUN_E2E_WORKAROUNDS-}
thp=/sys/kernel/mm/transparent_hugepage
if [[ ,$workarounds, == *,thp,* ]]; then
  echo never > $thp/defrag
  echo 86400000 > $thp/khugepaged/scan_sleep_millisecs
  echo 86400000 > $thp/khugepaged/alloc_sleep_millisecs
fi

# KVM in this host (Linux 6.1) switches SVM on in every CPU when the first
# VM is created and off when the last one goes, each time by an IPI to all
# CPUs and a wait for them; under TCG such a wait (kvm_destroy_vm) has
# stalled long enough for the soft-lockup watchdog to take the host down.
# One idle VM held open for the whole run keeps SVM on: no IPI per VM.
if [[ ,$workarounds, == *,hold,* ]] && ! pgrep -f '^e2e-kvm-hold' >/dev/null; then
  setsid perl -e '$0 = "e2e-kvm-hold"; open(my $k, "+<", "/dev/kvm") or die "kvm: $!";
    ioctl($k, 0xAE01, 0) or die "KVM_CREATE_VM: $!"; sleep' </dev/null >/dev/null 2>&1 &
fi
