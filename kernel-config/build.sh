#!/usr/bin/env bash
# Builds the guest vmlinux from Debian's linux-source-6.12, the fragment and
# the patches beside this script, cached by the hash of (source version,
# fragment, patches, this script).
# Usage: build.sh OUT_DIR   -> OUT_DIR/vmlinux, OUT_DIR/kernel.config
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
pkg=linux-source-6.12
tarball=/usr/src/$pkg.tar.xz
version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || {
  echo "kernel: $pkg is not installed (run scripts/host-deps.sh)" >&2; exit 1; }
[ -f "$tarball" ] || { echo "kernel: $tarball missing" >&2; exit 1; }

patches=$(ls "$here"/patches/*.patch 2>/dev/null | sort || true)
key=$( { echo "$pkg $version"; cat "$here/microvm.config" "$here/build.sh" "$here/check-config.sh" $patches; } \
       | sha256sum | cut -c1-16)
cache=${MICRORUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microrun}/kernel/$key
if [ -f "$cache/vmlinux" ]; then
  echo "kernel: cache hit ($key)"
else
  echo "kernel: building $pkg $version (key $key); about 3 minutes on 2 cores"
  work=$(mktemp -d "${TMPDIR:-/tmp}/microrun-kernel.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  tar -C "$work" -xf "$tarball"
  src=$work/$pkg
  for p in $patches; do patch -s -p1 -d "$src" <"$p"; done
  jobs=$(( $(nproc) + 1 ))
  make -C "$src" -s tinyconfig
  (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$here/microvm.config" >/dev/null)
  make -C "$src" -s olddefconfig
  "$here/check-config.sh" "$here/microvm.config" "$src/.config"
  # Reproducible: no build host, user or timestamp in the image.
  KBUILD_BUILD_TIMESTAMP='@0' KBUILD_BUILD_USER=microrun KBUILD_BUILD_HOST=microrun \
    make -C "$src" -s -j"$jobs" vmlinux
  mkdir -p "$cache.tmp"
  cp "$src/vmlinux" "$cache.tmp/vmlinux"
  cp "$src/.config" "$cache.tmp/kernel.config"
  echo "$pkg $version" > "$cache.tmp/source-version"
  rm -rf "$cache"
  mv "$cache.tmp" "$cache"
fi
"$here/check-config.sh" "$here/microvm.config" "$cache/kernel.config"
cp "$cache/vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
cp "$cache/kernel.config" "$out/kernel.config"
echo "kernel: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes)"
