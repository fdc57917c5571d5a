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

echo "== emulated test host: guest boot (start -> agent /init -> reboot -> exit)"
bash "$top/tests/e2e/stage.sh" "$top/build/share"
trap 'bash "$top/tests/e2e/testhost" down' EXIT
bash "$top/tests/e2e/testhost" up "$top/build/share"
bash "$top/tests/e2e/testhost" run 'bash /mnt/share/e2e/bench.sh'
