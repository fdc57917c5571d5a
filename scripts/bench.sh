#!/usr/bin/env bash
# make bench: prints microrun's figures next to its peers, measured in the
# same run. Sizes here; boot times in the emulated test host (this host's
# KVM cannot run guests).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mr=$top/target/x86_64-unknown-linux-gnu/release/microrun
size() { stat -c %s "$1"; }
strip_size() { local t; t=$(mktemp); strip -o "$t" "$1"; size "$t"; rm -f "$t"; }
echo "== sizes"
printf '%-34s %10s bytes\n' "microrun binary (stripped)" "$(strip_size "$mr")"
printf '%-34s %10s bytes\n' "guest vmlinux" "$(size "$top/build/vmlinux")"
printf '%-34s %10s bytes\n' "guest initramfs" "$(size "$top/build/initramfs.cpio")"

echo "== CLI round trip (state of an unknown id, 200 runs)"
t0=$(date +%s%N)
for _ in $(seq 200); do "$mr" --root "$(mktemp -u)" state none >/dev/null 2>&1 || true; done
printf '%-34s %10.2f ms\n' "microrun state" "$(( ($(date +%s%N) - t0) / 200 ))e-6"
if command -v runc >/dev/null; then
  t0=$(date +%s%N)
  for _ in $(seq 200); do runc --root "$(mktemp -u)" state none >/dev/null 2>&1 || true; done
  printf '%-34s %10.2f ms\n' "runc state" "$(( ($(date +%s%N) - t0) / 200 ))e-6"
fi

echo "== emulated test host ($(${MICRORUN_QEMU:-qemu-system-x86_64} --version | head -1); docs/testing.md has its fault counts)"
bash "$top/tests/e2e/stage.sh" "$top/build/share"
th=$top/tests/e2e/testhost
trap 'bash "$th" down' EXIT
# One section at a time: when the emulated host dies under one (see
# docs/testing.md) or hangs for half an hour, the section runs once more on
# a fresh host; a section that loses the host twice is reported as missing.
up=
for section in boot containers rate density pods fs-rootfs fs-volume fs-floor reread net; do
  for attempt in 1 2; do
    [ -n "$up" ] || { bash "$th" up "$top/build/share"; up=1; }
    rc=0
    timeout 1800 bash "$th" run "bash /mnt/share/e2e/bench.sh $section" || rc=$?
    [ "$rc" -ne 0 ] || break
    if [ "$rc" -ne 255 ] && [ "$rc" -ne 124 ]; then echo "bench: section $section failed (exit $rc)" >&2; exit "$rc"; fi
    echo "bench: lost the test host in section $section (attempt $attempt); its console ends with:" >&2
    bash "$th" console | grep -v "TCG doesn't support" | tail -8 | sed 's/^/  | /' >&2
    bash "$th" down; up=
    [ "$attempt" -eq 1 ] || echo "bench: section $section: no figures (the host died twice)"
  done
done
