#!/usr/bin/env bash
# make demo: run a container in a microVM. Locally when this host's KVM can
# run guests (microrun check); otherwise inside the emulated test host.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mr=$top/target/x86_64-unknown-linux-gnu/release/microrun
if "$mr" check; then
  b=$(mktemp -d)
  trap 'rm -rf "$b"' EXIT
  mkdir -p "$b/rootfs/bin"
  cp /bin/busybox "$b/rootfs/bin/busybox"
  (cd "$b" && "$mr" spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/busybox", "echo", "hello from a microrun microVM"/' config.json)
  MICRORUN_KERNEL=$top/build/vmlinux MICRORUN_INITRD=$top/build/initramfs.cpio \
    "$mr" --root "$b/state" run --bundle "$b" demo
else
  echo "demo: this host's KVM cannot run guests; using the emulated test host (first run builds it)"
  bash "$top/tests/e2e/stage.sh" "$top/build/share"
  trap 'bash "$top/tests/e2e/testhost" down' EXIT
  bash "$top/tests/e2e/testhost" up "$top/build/share"
  bash "$top/tests/e2e/testhost" run 'bash /mnt/share/e2e/setup.sh'
  bash "$top/tests/e2e/testhost" run 'docker run --rm --runtime microrun local/busybox echo hello from a microrun microVM'
fi
