#!/usr/bin/env bash
# Lays out what the test host sees at /mnt/share: microrun, the guest
# kernel and initramfs, and the suite. Usage: stage.sh SHARE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
share=${1:?share dir}
mkdir -p "$share/bin" "$share/share/microrun" "$share/e2e"
install -m 0755 "$top/target/x86_64-unknown-linux-gnu/release/microrun" "$share/bin/microrun"
install -m 0644 "$top/build/vmlinux" "$share/share/microrun/vmlinux"
install -m 0644 "$top/build/initramfs.cpio" "$share/share/microrun/initramfs.cpio"
# Static programs the suite runs inside containers (busybox lacks them).
(cd "$top" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release \
  -p microrun-e2e-tools -p microrun-conformance --target x86_64-unknown-linux-gnu)
install -m 0755 "$top/target/x86_64-unknown-linux-gnu/release/inotify-watch" "$share/bin/inotify-watch"
install -m 0755 "$top/target/x86_64-unknown-linux-gnu/release/oci-conformance" "$share/bin/oci-conformance"
install -m 0644 "$top/tests/conformance/differences.txt" "$share/e2e/conformance-differences.txt"
cp "$here"/guest/*.sh "$share/e2e/"
chmod +x "$share/e2e/"*.sh
# The VMM's unit tests, to run as root with real taps, tc and mount
# namespaces in the test host (this machine's kernel lacks some of them).
tests=$(cd "$top" && cargo test -p microrun --lib --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
install -m 0755 "$tests" "$share/bin/microrun-unit-tests"
