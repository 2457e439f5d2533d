#!/bin/bash
# Disk bytes written per guest byte by a Kelp block volume (three downstairs
# and an upstairs on this machine, regions under TMPDIR), for one fio job.
#
#   bench/block-write-amplification.sh KELP DEVICE RW BS FSYNC [SECONDS]
#   bench/block-write-amplification.sh target/release/kelp vda randwrite 4k 4096
#
# DEVICE is the block device holding TMPDIR (its sectors-written counter in
# /sys/class/block/DEVICE/stat is read before and after the job, so run nothing
# else that writes to it). The volume (512 MiB: 16 extents of 8192 blocks of
# 4 KiB) is written twice with 1 MiB writes first, then the job runs for
# SECONDS (10) at queue depth 16 with an NBD flush every FSYNC writes (0:
# none) and one at the end. Three copies make 3.0 the floor.
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
K=$1; DEV=$2; RW=$3; BS=$4; FS=$5; SECS=${6:-10}
STAT=/sys/class/block/$DEV/stat
[ -r "$STAT" ] || { echo "no $STAT: DEVICE is a name such as vda or nvme0n1p2" >&2; exit 2; }
D=$(mktemp -d "${TMPDIR:-/tmp}/kelp-amp.XXXXXX")
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TARGETS=()
for i in 0 1 2; do
  "$K" block create --dir="$D/r$i" --block-size=4096 --extent-size=8192 --extent-count=16 >/dev/null
  P=$(port)
  "$K" downstairs --dir="$D/r$i" --port="$P" >"$D/ds$i.log" 2>&1 & PIDS+=($!)
  TARGETS+=("--target=127.0.0.1:$P")
done
NBD=$(port)
"$K" upstairs "${TARGETS[@]}" --gen=1 --nbd="127.0.0.1:$NBD" >"$D/up.log" 2>&1 & PIDS+=($!)
# The upstairs serves NBD once all three downstairs are active.
for _ in $(seq 300); do
  nbdinfo --size "nbd://127.0.0.1:$NBD" >/dev/null 2>&1 && break
  sleep 0.1
done
F=(fio --name=j --ioengine=nbd --uri="nbd://127.0.0.1:$NBD" --size=512M)
"${F[@]}" --rw=write --bs=1M --iodepth=4 --end_fsync=1 >/dev/null
"${F[@]}" --rw=write --bs=1M --iodepth=4 --end_fsync=1 >/dev/null
sync; sleep 1
S0=$(awk '{print $7}' "$STAT")
"${F[@]}" --rw="$RW" --bs="$BS" --iodepth=16 --time_based --runtime="$SECS" --fsync="$FS" \
  --end_fsync=1 --randseed=7 --output-format=json >"$D/fio.json"
sleep 1
S1=$(awk '{print $7}' "$STAT")
python3 - "$D/fio.json" "$S0" "$S1" "$RW $BS fsync=$FS" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
w = json.loads(text[text.index("{"):])["jobs"][0]["write"]
guest, disk = w["io_bytes"], (int(sys.argv[3]) - int(sys.argv[2])) * 512
print(f"{sys.argv[4]}: {w['iops']:.0f} IOPS, guest {guest / 2**20:.0f} MiB, "
      f"disk {disk / 2**20:.0f} MiB, disk/guest {disk / guest:.2f}")
PY
