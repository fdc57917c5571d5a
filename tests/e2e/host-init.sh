#!/bin/sh
# PID 1 of the emulated test host: the minimum to run microrun for real
# (kvm-amd, the shared artifacts, sshd, containerd, dockerd), no systemd.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
# cgroup v2 only, as on current distributions.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname testhost
ip link set lo up
for dev in /sys/class/net/*; do
  n=${dev##*/}; [ "$n" = lo ] && continue
  ip link set "$n" up
  ip addr add 10.0.2.15/24 dev "$n" && ip route add default via 10.0.2.2
  break
done
modprobe kvm_amd 2>/dev/null || modprobe kvm_intel 2>/dev/null
modprobe tun 2>/dev/null; modprobe vhost_vsock 2>/dev/null; modprobe fuse 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/share
mkdir -p /run/sshd
/usr/sbin/sshd -E /var/log/sshd.log
containerd >/var/log/containerd.log 2>&1 &
rt=/mnt/share/bin/microrun
# iptables on: docker's embedded DNS on user-defined networks needs its
# rules in each container's namespace.
dockerd --containerd=/run/containerd/containerd.sock --ip6tables=false \
  --storage-driver=overlay2 --add-runtime microrun="$rt" >/var/log/dockerd.log 2>&1 &
echo "testhost: up ($(cat /proc/uptime | cut -d' ' -f1)s)" > /dev/ttyS0
# Stay PID 1; reap orphans; power off on request (testhost down).
trap 'sync; echo o > /proc/sysrq-trigger' USR1 TERM
while :; do wait; sleep 1; done
