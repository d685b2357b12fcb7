#!/bin/busybox sh
# dom0's /init for `cargo xtask realxen` (runs under Xen 4.17 inside QEMU).
#
# Starts the toolstack (xenstored, xenconsoled), then runs each scenario named on the kernel
# command line (realxen.scenarios=a+b+...). A scenario puts xenmig in place of libxl's save
# helper where it says so (LIBXL_SAVE_HELPER) and prints exactly one line
#     REALXEN-RESULT <scenario> PASS|FAIL <reason>
# on the console. Everything else goes to /out (steps.log: every command with its full
# output; xenmig's verdicts and `xenmig info` of each image), which is archived onto the
# second disk before the machine powers off.
export PATH=/usr/lib/xenmig:/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
XENMIG=/usr/lib/xenmig/xenmig
HELPER=/usr/lib/xenmig/libxl-save-helper
CON=/var/log/xen/console

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run && mkdir -p /run/lock /run/xen /run/xenstored
mount -t tmpfs -o size=900m tmpfs /out

now() { cut -d' ' -f1 /proc/uptime; }
T0=$(now)
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { # a progress line on the console and in steps.log
  echo "REALXEN[$(since "$T0")s] $*"
  echo "[$(now)] $*" >> /out/steps.log
}
run() { # run CMD...: full output to steps.log, its errors to the console on failure
  say "+ $*"
  local start rc
  start=$(now)
  "$@" > /tmp/cmd.out 2>&1
  rc=$?
  cat /tmp/cmd.out >> /out/steps.log
  [ $rc -eq 0 ] || grep -E 'error|ERROR|rror:|fail|critical' /tmp/cmd.out | tail -n 12 | sed 's/^/REALXEN    | /'
  say "rc=$rc in $(since "$start")s"
  return $rc
}
result() { # result SCENARIO PASS|FAIL REASON...
  local name verdict
  name=$1; verdict=$2; shift 2
  echo "REALXEN-RESULT $name $verdict $*"
  echo "$name $verdict $*" >> /out/results.txt
}
with_xenmig() { LIBXL_SAVE_HELPER=$HELPER "$@"; }
# xenmig's Xen backend reports the time its operations took on xl's stderr.
export XENMIG_XEN_TIMING=1

# The highest heartbeat a guest has printed, over every console log of that name (a
# restored or incoming copy may log to guest-NAME--incoming.log, and qemu truncates the
# serial file of an HVM guest when it starts again).
last_tick() {
  n=$(cat "$CON"/guest-"$1"*.log 2>/dev/null | grep -ao 'DOMU: tick [0-9]*' | sed 's/.* //' | sort -n | tail -n 1)
  echo "${n:-0}"
}
# The heartbeat a check starts from. Under TCG one read of a log that had ticks came back
# empty (0), which would make any later tick count as progress: read again before using 0.
start_tick() {
  for try in 1 2 3; do
    n=$(last_tick "$1")
    [ "$n" -gt 0 ] && break
    sleep 1
  done
  echo "$n"
}
wait_tick() { # wait_tick NAME MIN SECONDS: until the heartbeat passes MIN
  i=0
  while [ "$i" -lt "$3" ]; do
    [ "$(last_tick "$1")" -gt "$2" ] && return 0
    sleep 1; i=$((i + 1))
  done
  return 1
}
destroy_all() {
  for d in $(xl list 2>/dev/null | awk 'NR > 2 { print $2 }'); do xl destroy "$d" > /dev/null 2>&1; done
  sleep 1
}
create() { # create NAME: boots a guest from /etc/xen/NAME.cfg, waits for its heartbeat
  rm -f "$CON"/guest-"$1"*.log
  run xl -vvv create "/etc/xen/$1.cfg"
  rc=$?
  # Seen under TCG: xl crashes after the domain is up. The domain is what matters.
  [ $rc -ne 0 ] && ! xl domid "$1" > /dev/null 2>&1 && return 1
  wait_tick "$1" 2 300 || { say "$1 prints no heartbeat"; return 1; }
  say "$1 is up (tick $(last_tick "$1"))"
}
still_ticking() { # still_ticking NAME BEFORE: the heartbeat goes on past BEFORE
  if wait_tick "$1" $(($2 + 2)) 60; then
    say "$1 ticks on: $2 before, $(last_tick "$1") now"
    return 0
  fi
  say "$1 stopped ticking: $2 before, $(last_tick "$1") now"
  return 1
}
verify_image() { # verify_image FILE TAG: xenmig verify and info into /out/TAG.*
  $XENMIG verify -v "$1" > "/out/$2.verify.txt" 2>&1
  vrc=$?
  $XENMIG info "$1" > "/out/$2.info.txt" 2>&1
  say "xenmig verify $2: rc=$vrc, $(head -n 1 "/out/$2.verify.txt")"
  return $vrc
}
drop_image() { [ "$KEEP" = 1 ] || rm -f "$1"; }

# fake "ssh" for xl migrate/remus: ignores the host, keeps a copy of the stream
cat > /bin/fakessh <<'EOS'
#!/bin/sh
shift
tee "/out/$STREAM.stream" | exec "$@"
EOS
chmod +x /bin/fakessh

# --- scenarios -------------------------------------------------------------------------

save_with_xenmig() { # GUEST: xenmig saves, xenmig verify, Xen's helper restores
  g=$1; sc=$2; img=/out/$sc.xl
  create "$g" || { result "$sc" FAIL "the guest did not boot"; return; }
  before=$(start_tick "$g")
  run with_xenmig xl -vvv save "$g" "$img" || { result "$sc" FAIL "xl save through xenmig failed"; return; }
  verify_image "$img" "$sc" || { result "$sc" FAIL "xenmig verify rejects the image"; return; }
  run xl -vvv restore "$img" || { result "$sc" FAIL "xl restore (Xen's helper) failed"; return; }
  drop_image "$img"
  still_ticking "$g" "$before" || { result "$sc" FAIL "the restored guest does not tick"; return; }
  result "$sc" PASS "saved by xenmig ($(grep -E '^records' "/out/$sc.info.txt" | tr -s ' ')), restored by Xen, ticks $before -> $(last_tick "$g")"
}

restore_with_xenmig() { # GUEST: Xen's helper saves, xenmig restores
  g=$1; sc=$2; img=/out/$sc.xl
  create "$g" || { result "$sc" FAIL "the guest did not boot"; return; }
  before=$(start_tick "$g")
  run xl -vvv save "$g" "$img" || { result "$sc" FAIL "xl save (Xen's helper) failed"; return; }
  verify_image "$img" "$sc"
  run with_xenmig xl -vvv restore "$img" || { result "$sc" FAIL "xl restore through xenmig failed"; return; }
  drop_image "$img"
  still_ticking "$g" "$before" || { result "$sc" FAIL "the restored guest does not tick"; return; }
  result "$sc" PASS "saved by Xen, restored by xenmig, ticks $before -> $(last_tick "$g")"
}

migrate_with_xenmig() { # GUEST: live migration to localhost, xenmig on both ends
  g=$1; sc=$2
  create "$g" || { result "$sc" FAIL "the guest did not boot"; return; }
  for attempt in 1 2; do
    before=$(start_tick "$g")
    export STREAM=$sc
    if run with_xenmig xl -vvv migrate -s /bin/fakessh "$g" localhost; then
      verify_image "/out/$sc.stream" "$sc"
      drop_image "/out/$sc.stream"
      still_ticking "$g" "$before" || { result "$sc" FAIL "the migrated guest does not tick"; return; }
      result "$sc" PASS "attempt $attempt, live migration through xenmig both ends, ticks $before -> $(last_tick "$g")"
      return
    fi
    mv "/out/$sc.stream" "/out/$sc.attempt$attempt.stream" 2> /dev/null
    drop_image "/out/$sc.attempt$attempt.stream"
    # One live pass in eight fails under TCG; the guest keeps running, so try again.
    xl list | grep -q -- '--incoming' && run xl destroy "$g--incoming"
    xl domid "$g" > /dev/null 2>&1 || { result "$sc" FAIL "the guest is gone after a failed migration"; return; }
    sleep 3
  done
  result "$sc" FAIL "xl migrate through xenmig failed twice"
}

# Checkpoints the Remus primary completes before it is stopped, and the longest wait for them.
REMUS_CHECKPOINTS=4
REMUS_LIMIT=300
# Checkpoints the primary has taken so far: the helper reports no progress for the first one,
# then one "Checkpointed save" line per later one.
remus_checkpoints() {
  n=$(grep -c 'Checkpointed save: .*100%' /tmp/remus.out 2> /dev/null)
  if [ "${n:-0}" -gt 0 ]; then echo $((n + 1)); else echo 0; fi
}
remus_with_xenmig() { # GUEST: Remus for a while, then the primary's xl is killed: failover
  g=$1; sc=$2
  for attempt in 1 2; do
    destroy_all
    create "$g" || { result "$sc" FAIL "the guest did not boot"; return; }
    export STREAM=$sc
    say "+ xl -vvv remus -F -n -d -e -i 2000 -s /bin/fakessh $g localhost (SIGTERM after $REMUS_CHECKPOINTS checkpoints, attempt $attempt)"
    start=$(now)
    # Stopped once the primary has taken enough checkpoints (a fixed time would leave none
    # at all when emulation runs slow). A background job ignores SIGINT, hence SIGTERM.
    LIBXL_SAVE_HELPER=$HELPER xl -vvv remus -F -n -d -e -i 2000 -s /bin/fakessh "$g" localhost > /tmp/remus.out 2>&1 &
    xlpid=$!
    i=0
    while kill -0 $xlpid 2> /dev/null && [ "$(remus_checkpoints)" -lt $REMUS_CHECKPOINTS ] && [ $i -lt $REMUS_LIMIT ]; do
      sleep 1; i=$((i + 1))
    done
    taken=$(remus_checkpoints)
    kill -TERM $xlpid 2> /dev/null
    wait $xlpid
    rrc=$?
    cat /tmp/remus.out >> /out/steps.log
    say "remus rc=$rrc in $(since "$start")s after $taken checkpoints (143: stopped by our SIGTERM while checkpointing)"
    grep -E 'Remus|failover|Failover|error|ERROR' /tmp/remus.out | tail -n 8 | sed 's/^/REALXEN    | /'
    $XENMIG info "/out/$sc.stream" > "/out/$sc.info.txt" 2>&1
    checkpoints=$(sed -n 's/^checkpoints: *//p' "/out/$sc.info.txt")
    if [ $rrc -eq 143 ] && [ "$taken" -lt $REMUS_CHECKPOINTS ]; then
      result "$sc" FAIL "the primary took $taken checkpoints in ${REMUS_LIMIT}s, fewer than $REMUS_CHECKPOINTS"
      destroy_all
      return
    fi
    if [ $rrc -eq 143 ]; then
      drop_image "/out/$sc.stream"
      sleep 5
      run xl list
      incoming=$(start_tick "$g--incoming")
      if still_ticking "$g--incoming" "$incoming"; then
        result "$sc" PASS "attempt $attempt, ${checkpoints:-?} checkpoints through xenmig, primary killed, the secondary failed over and ticks on ($incoming -> $(last_tick "$g--incoming"))"
        destroy_all
        return
      fi
      result "$sc" FAIL "after the failover the secondary does not tick (${checkpoints:-?} checkpoints)"
      destroy_all
      return
    fi
    # Kept for a look: the stream as the primary wrote it.
    mv "/out/$sc.stream" "/out/$sc.attempt$attempt.stream" 2> /dev/null
    mv "/out/$sc.info.txt" "/out/$sc.attempt$attempt.info.txt" 2> /dev/null
    sleep 3
  done
  result "$sc" FAIL "xl remus through xenmig did not run until stopped (rc $rrc, twice)"
  destroy_all
}

# --- main ------------------------------------------------------------------------------

SCENARIOS=$(sed -n 's/.*realxen\.scenarios=\([^ ]*\).*/\1/p' /proc/cmdline | tr '+' ' ')
KEEP=$(sed -n 's/.*realxen\.keep=\([01]\).*/\1/p' /proc/cmdline)
say "dom0 up: kernel $(uname -r), scenarios: $SCENARIOS"
while read -r ko; do insmod "$ko" || say "insmod $ko failed"; done < /etc/modules.order
mount -t xenfs xenfs /proc/xen || say "xenfs mount failed"
xenstored --pid-file=/run/xenstored.pid || say "xenstored failed"
i=0; while [ ! -S /run/xenstored/socket ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
run xen-init-dom0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=$CON || say "xenconsoled failed"
run xl info
$XENMIG --version > /out/xenmig-version.txt 2>&1
HVM=0; xl info | grep -q 'virt_caps.*hvm' && HVM=1

for sc in $SCENARIOS; do
  say "=== scenario $sc"
  sc_start=$(now)
  case $sc in
    pv-save) save_with_xenmig pv64 "$sc" ;;
    pv-restore) restore_with_xenmig pv64 "$sc" ;;
    hvm-save | hvm-restore | hvm-migrate | pvh-save | pvh-restore | pvh-remus)
      if [ $HVM = 0 ]; then
        result "$sc" FAIL "the hypervisor has no HVM support here"
      else
        case $sc in
          hvm-save) save_with_xenmig hvm64 "$sc" ;;
          hvm-restore) restore_with_xenmig hvm64 "$sc" ;;
          hvm-migrate) migrate_with_xenmig hvm64 "$sc" ;;
          pvh-save) save_with_xenmig pvh64 "$sc" ;;
          pvh-restore) restore_with_xenmig pvh64 "$sc" ;;
          pvh-remus) remus_with_xenmig pvh64 "$sc" ;;
        esac
      fi ;;
    *) result "$sc" FAIL "no such scenario" ;;
  esac
  say "=== scenario $sc done in $(since "$sc_start")s"
  destroy_all
done

say "collecting logs"
xl dmesg > /out/xen-dmesg.txt 2>&1
dmesg > /out/dom0-dmesg.txt 2>&1
mkdir -p /out/logs && cp -r /var/log/xen/. /out/logs/ 2> /dev/null
ls -la /out > /out/listing.txt
tar -cf /dev/vda -C /out . && sync && say "archive written"
say "REALXEN-DONE"
sleep 1
poweroff -f
