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
# pages after the host replaced the file): run microrun from a local copy,
# bind-mounted over the share's path so docker's runtime path still works.
if mountpoint -q /mnt/share/bin/microrun; then umount -l /mnt/share/bin/microrun; fi
install -D -m 0755 /mnt/share/bin/microrun /var/lib/microrun-e2e/microrun
mount --bind /var/lib/microrun-e2e/microrun /mnt/share/bin/microrun
