#!/usr/bin/env bash
# Installs the Debian packages the build, the guest kernel and the emulated
# test host need. Idempotent: does nothing when everything is present.
#
# The test host's emulator comes from bookworm-backports (QEMU 10): it runs
# the suite about 30% faster than bookworm's 7.2 and faults less often
# (docs/testing.md has the counts). MICRORUN_QEMU_SUITE=bookworm keeps 7.2.
set -euo pipefail
pkgs=(
  build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils patch
  linux-source-6.12
  libseccomp-dev pkg-config
  qemu-utils debootstrap e2fsprogs
  busybox-static iproute2 openssh-client
)
qemu_suite=${MICRORUN_QEMU_SUITE:-bookworm-backports}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
qemu_version() { dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true; }
updated=0
apt_update() { [ $updated = 1 ] || { $SUDO apt-get update -q; updated=1; }; }

# has_backports: some apt source already names the suite.
has_backports() {
  grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/
}

# add_backports: a deb822 source for bookworm-backports on the same archive
# (URIs and keyring) as the machine's own bookworm entry, so no mirror is
# named here. Fails when no such entry is found.
add_backports() {
  local uri="" key=""
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Stanzas are separated by blank lines; take one whose Suites has bookworm.
    read -r uri key < <(awk 'BEGIN { RS = ""; FS = "\n" }
      { u = ""; s = ""; k = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
          if ($i ~ /^Suites:/) s = " " $i " "
          if ($i ~ /^Signed-By:/) { k = $i; sub(/^Signed-By:[ \t]*/, "", k) }
        }
        if (s ~ /[ \t]bookworm[ \t]/ && u != "") { print u, k; exit } }' "$f") || true
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $3 == "bookworm" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || return 1
  {
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: bookworm-backports"
    echo "Components: main"
    [ -z "$key" ] || echo "Signed-By: $key"
  } | $SUDO tee /etc/apt/sources.list.d/microrun-backports.sources >/dev/null
  updated=0
}

missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The emulator. Keep what is installed when it already is the wanted kind.
have=$(qemu_version)
case "$qemu_suite:$have" in
  bookworm-backports:*bpo12*|bookworm:1:7.*) ;;
  bookworm-backports:*)
    if { has_backports || add_backports; } && apt_update &&
       $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86; then
      :
    else
      echo "host-deps: QEMU from bookworm-backports could not be installed;" \
           "the test host falls back to bookworm's QEMU 7.2 (slower, more emulator faults: docs/testing.md)" >&2
      installed qemu-system-x86 || { apt_update; $SUDO apt-get install -y -q --no-install-recommends qemu-system-x86; }
    fi ;;
  bookworm:*)
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends --allow-downgrades \
      "qemu-system-x86/bookworm" "qemu-system-common/bookworm" "qemu-system-data/bookworm" ;;
esac
echo "host-deps: the test host runs on QEMU $(qemu_version)" >&2
