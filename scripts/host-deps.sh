#!/usr/bin/env bash
# Installs the Debian packages the build, the guest kernel and the emulated
# test host need. Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(
  build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils patch
  linux-source-6.12
  libseccomp-dev pkg-config
  qemu-system-x86 qemu-utils debootstrap e2fsprogs
  busybox-static iproute2 openssh-client
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
