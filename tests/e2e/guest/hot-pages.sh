#!/usr/bin/env bash
# Which pages of microrun's code a container's monitor runs, for the link
# order of scripts/hot-functions.sh. Run in the test host as root; prints
# the file offsets (hex) of the touched code pages, one per line: "B OFF"
# for those a container that only runs touches (they go first), "A OFF"
# for those of the whole workload.
#
# The kernel maps up to 64 KiB of cached code around each page fault
# (fault-around), so the pages mapped are not the pages used; with it set
# to one page for the run, a mapped code page is one that was executed.
set -euo pipefail
# Always: the binary staged last is the one to look at.
bash /mnt/share/e2e/setup.sh >/dev/null
dbg=/sys/kernel/debug
mountpoint -q "$dbg" || mount -t debugfs none "$dbg"
old=$(cat "$dbg/fault_around_bytes")
out=$(mktemp -d)
trap 'echo "$old" > "$dbg/fault_around_bytes"; docker rm -f hot-a hot-b >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
echo 4096 > "$dbg/fault_around_bytes"

# snap PID [FILE]: appends the file offsets of PID's present code pages to
# FILE ($out/pages).
snap() {
  local pid=$1 to=${2:-$out/pages} start end off line
  line=$(grep -m1 ' r-xp .*microrun$' "/proc/$pid/maps" 2>/dev/null) || return 0
  start=$((16#${line%%-*})); end=${line#*-}; end=$((16#${end%% *}))
  off=$(awk '{print $3}' <<<"$line"); off=$((16#$off))
  dd if="/proc/$pid/pagemap" bs=4096 iflag=skip_bytes,count_bytes \
     skip=$((start / 4096 * 8)) count=$(((end - start) / 4096 * 8)) 2>/dev/null |
    od -An -v -tx8 -w8 |
    awk -v off="$off" '{ if (substr($1, 1, 1) ~ /[89a-f]/) printf "%x\n", off + (NR - 1) * 4096 }' \
      >> "$to" || true
}
# watch: snapshots every monitor of a hot-* container until stopped.
watch() {
  while :; do
    for pid in $(pgrep -x microrun-vm || true); do snap "$pid"; done
    sleep 0.2
  done
}
# A container that only runs, before anything else is asked of it.
docker run -d --runtime microrun --name hot-b local/busybox sleep 600 >/dev/null
sleep 2; snap "$(pgrep -x microrun-vm | head -1)" "$out/base"
watch & watcher=$!

vol=$(mktemp -d)
docker run -d --runtime microrun --name hot-a -v "$vol:/data" local/busybox sleep 600 >/dev/null
docker exec hot-a sh -c 'echo x > /data/f && cat /data/f && ls -l / /data >/dev/null &&
  for i in $(seq 200); do echo $i > /data/n$i; done && rm /data/n* &&
  dd if=/dev/zero of=/tmp/big bs=1M count=8 2>/dev/null && cat /tmp/big > /dev/null && rm /tmp/big &&
  mkdir -p /d/e && mv /d/e /d/f && rmdir /d/f /d && ln -s /etc/passwd /s && cat /s >/dev/null && rm /s' >/dev/null
echo host > "$vol/h"; docker exec hot-a cat /data/h >/dev/null
ip_b=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' hot-b)
docker exec hot-a ping -c 3 -W 2 "$ip_b" >/dev/null
docker exec -i hot-a sh -c 'cat > /dev/null' < /dev/zero & sleep 1; kill $! 2>/dev/null || true
docker exec hot-a sh -c 'echo out; echo err >&2' >/dev/null 2>&1
docker top hot-a >/dev/null
docker pause hot-a >/dev/null && docker unpause hot-a >/dev/null
docker update --memory 512m --memory-swap 1g hot-a >/dev/null 2>&1 || true
docker kill -s USR1 hot-b >/dev/null || true
sleep 1
docker stop -t 2 hot-a hot-b >/dev/null
docker rm hot-a hot-b >/dev/null
rm -rf "$vol"

# The boot benchmark's own path (vm-boot): snapshotted while it runs.
/mnt/share/bin/microrun vm-boot --console /dev/null 2>/dev/null &
boot=$!
while kill -0 "$boot" 2>/dev/null; do snap "$boot"; sleep 0.05; done
kill "$watcher" 2>/dev/null || true
wait 2>/dev/null || true
sort -u "$out/base" | sed 's/^/B /'
sort -u "$out/base" "$out/pages" | sed 's/^/A /'
