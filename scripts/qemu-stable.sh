#!/usr/bin/env bash
# Unpacks bookworm's own QEMU (7.2) beside the installed one (10, from
# bookworm-backports) and prints a command that runs it, for measuring the
# two emulators on the same tree (docs/testing.md):
#   MICRORUN_QEMU=$(bash scripts/qemu-stable.sh) make soak
# Cached by package version; nothing is installed.
set -euo pipefail
ver=$(apt-cache madison qemu-system-x86 | awk -F'|' '$3 ~ /bookworm\/main/ && $3 !~ /backports|security/ { gsub(/ /, "", $2); print $2; exit }')
[ -n "$ver" ] || { echo "qemu-stable: bookworm's qemu-system-x86 is not in the apt lists (apt-get update?)" >&2; exit 1; }
dver=$(apt-cache madison qemu-system-data | awk -F'|' -v v="${ver%+b*}" '{ gsub(/ /, "", $2) } $2 == v { print $2; exit }')
[ -n "$dver" ] || { echo "qemu-stable: no qemu-system-data $ver in the apt lists" >&2; exit 1; }
cache=${MICRORUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microrun}/qemu/${ver//:/_}
if [ ! -x "$cache/qemu-system-x86_64" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # -common has the modules (TCG among them), -data the firmware.
  (cd "$work" && apt-get download -q "qemu-system-x86=$ver" "qemu-system-common=$ver" "qemu-system-data=$dver" >&2)
  mkdir -p "$work/root"
  for f in "$work"/*.deb; do dpkg-deb -x "$f" "$work/root"; done
  rm -rf "$cache"; mkdir -p "$cache"
  mv "$work/root" "$cache/root"
  # Its own modules (TCG is one) and firmware first; links into other
  # packages (seabios, ipxe) resolve through the directories where the
  # installed packages keep their firmware, as dpkg lists them.
  # Found in the unpacked tree by what they hold: the emulator, its TCG
  # module, its own firmware.
  bin=$(find "$cache/root" -type f -name qemu-system-x86_64 | head -1)
  modules=$(find "$cache/root" -name 'accel-tcg-*.so' -printf '%h\n' | head -1)
  data=$(find "$cache/root" -name 'linuxboot_dma.bin' -printf '%h\n' | head -1)
  fw=""
  for d in $(dpkg -L qemu-system-data seabios ipxe-qemu 2>/dev/null | grep -E '\.(bin|rom)$' | xargs -r -n1 dirname | sort -u); do
    fw="$fw -L $d"
  done
  cat > "$cache/qemu-system-x86_64" <<EOS
#!/bin/sh
export QEMU_MODULE_DIR="$modules"
exec "$bin" -L "$data"$fw "\$@"
EOS
  chmod +x "$cache/qemu-system-x86_64"
fi
"$cache/qemu-system-x86_64" --version | head -1 >&2
echo "$cache/qemu-system-x86_64"
