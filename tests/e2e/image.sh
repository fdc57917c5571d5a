#!/usr/bin/env bash
# Builds (or reuses) the emulated test host's image: a Debian bookworm root
# made with debootstrap, as a raw ext4 disk, plus its kernel, initrd and an
# ssh key. Cached by the hash of this script and the host's init script.
# Prints the cache directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=linux-image-amd64,qemu-system-x86,kmod,udev,openssh-server,docker.io,containerd,runc,busybox-static,iproute2,iptables,procps,e2fsprogs,psmisc,util-linux,podman,crun,conmon,containernetworking-plugins,uidmap,slirp4netns,catatonit
key=$( { cat "$here/image.sh" "$here/host-init.sh"; } | sha256sum | cut -c1-16)
cache=${MICRORUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microrun}/testhost/$key
if [ -f "$cache/rootfs.img" ]; then
  echo "testhost image: cache hit ($key)" >&2
  echo "$cache"; exit 0
fi
for t in debootstrap mkfs.ext4 qemu-system-x86_64 ssh-keygen; do
  command -v "$t" >/dev/null || { echo "testhost image: $t missing (run scripts/host-deps.sh)" >&2; exit 1; }
done
# The machine's configured Debian mirror (never hard-coded in the project).
mirror=${MICRORUN_DEBIAN_MIRROR:-$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "testhost image: no Debian mirror found; set MICRORUN_DEBIAN_MIRROR" >&2; exit 1; }

echo "testhost image: building ($key); a few minutes" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/microrun-testhost.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
start=$(date +%s)
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >&2
echo "testhost image: debootstrap took $(( $(date +%s) - start ))s" >&2

install -m 0755 "$here/host-init.sh" "$root/sbin/testhost-init"
echo testhost > "$root/etc/hostname"
printf '127.0.0.1 localhost testhost\n' > "$root/etc/hosts"
# ssh logs in to the test host as root; its home inside the tree being built.
ssh_dir="$root/$(chroot "$root" getent passwd root | cut -d: -f6)/.ssh"
mkdir -p "$ssh_dir" "$root/mnt/share" "$root/etc/docker"
ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
install -m 0600 "$work/id_ed25519.pub" "$ssh_dir/authorized_keys"
chroot "$root" ssh-keygen -A >/dev/null
cat >> "$root/etc/ssh/sshd_config" <<'CFG'
PermitRootLogin prohibit-password
UseDNS no
PasswordAuthentication no
CFG
# Initrd that can mount a virtio root, whatever the build host runs.
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n9p\n9pnet_virtio\n' >> "$root/etc/initramfs-tools/modules"
kver=$(ls "$root/lib/modules" | head -1)
chroot "$root" update-initramfs -u -k "$kver" >&2

mkdir -p "$cache.tmp"
cp "$root/boot/vmlinuz-$kver" "$cache.tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$cache.tmp/initrd.img"
cp "$work/id_ed25519" "$cache.tmp/id_ed25519"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
mkfs.ext4 -q -F -L testhost -d "$root" "$cache.tmp/rootfs.img" 4G >&2
rm -rf "$cache"; mv "$cache.tmp" "$cache"
echo "testhost image: done in $(( $(date +%s) - start ))s" >&2
echo "$cache"
