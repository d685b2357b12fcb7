#!/bin/busybox sh
# The guests' /init: a heartbeat. Each line carries a counter kept in guest memory, so a
# guest that was saved and restored (or migrated) goes on from the number it had reached.
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev
$bb mount -t proc proc /proc
$bb mount -t devtmpfs devtmpfs /dev
echo "DOMU: up, $($bb uname -m) kernel $($bb uname -r)"
n=0
while :; do
  n=$((n + 1))
  echo "DOMU: tick $n at $($bb cut -d' ' -f1 /proc/uptime)"
  $bb sleep 2
done
