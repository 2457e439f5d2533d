#!/usr/bin/env python3
"""Block-volume snapshots and send/receive, measured beside their
reference in one run on one machine (docs/snapshots.md).

1. Snapshot create time at two volume sizes, with 2% of the volume freshly
   written (dirty) each time: Kelp's `POST /snapshots` on a running volume
   (when the upstairs has a control API with snapshots) and the offline
   `kelp block snapshot create` on three regions, beside `qemu-img snapshot
   -c` (a qcow2 internal snapshot) of an image holding the same writes.
2. Full send of a snapshot (`kelp block send` of one region to a file)
   beside `qemu-img convert` of the same volume's NBD export to a raw file.
3. Incremental send after 1% of the blocks changed, as a fraction of the
   full send's time, and the stream's size against the changed data.
4. 4 KiB random writes (fio over NBD, QD16) with three snapshots held
   (copy-on-write on the first overwrite of every block) beside the same
   run on the same volume with none.
5. Clone of a snapshot of a running volume full of random data (`clone`,
   not in the default set): `kelp block clone` (linked on ext4) beside
   `qemu-img create -b` (a qcow2 overlay on a backing image holding the
   same data); then a full read of each through NBD (`nbdcopy` to
   `null:`), and how long the clone's downstairs take to copy it in
   the background.

Runs alternate where there are two sides. Installs fio, libnbd-bin and
qemu-utils (Debian) when missing.

    bench/compare-snapshots.py --sizes-gib 1,8 --send-gib 4 --seconds 20
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Group, fio, free_port, log, wait_nbd  # noqa: E402

BS = 4096
EXTENT_BLOCKS = 8192  # 32 MiB extents, kelp block create's default


def ensure_tools():
    need = [t for t in ("fio", "nbdinfo", "qemu-img", "qemu-nbd") if not shutil.which(t)]
    if need:
        log(f"installing what provides {need}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.check_call(["apt-get", "update", "-qq"], env=env)
        subprocess.check_call(["apt-get", "install", "-y", "-qq", "fio", "libnbd-bin",
                               "qemu-utils"], env=env)


class KelpVolume:
    """Three regions, three downstairs and an upstairs (started on demand)."""

    def __init__(self, kelp, d, size_gib):
        self.kelp, self.d = kelp, d
        count = max(1, size_gib * (1 << 30) // (BS * EXTENT_BLOCKS))
        self.blocks = count * EXTENT_BLOCKS
        self.dirs = [d / f"r{i}" for i in range(3)]
        for r in self.dirs:
            subprocess.check_call([kelp, "block", "create", f"--dir={r}", f"--block-size={BS}",
                                   f"--extent-size={EXTENT_BLOCKS}", f"--extent-count={count}"],
                                  stdout=subprocess.DEVNULL)
        self.g = None

    def dir_arg(self):
        return "--dir=" + ",".join(str(r) for r in self.dirs)

    def start(self):
        self.g = Group(self.d)
        ports = []
        for i, r in enumerate(self.dirs):
            p = free_port()
            ports.append(p)
            self.g.start(f"ds{i}", [self.kelp, "downstairs", f"--dir={r}", f"--port={p}"])
        nbd, ctl = free_port(), free_port()
        self.g.start("upstairs", [self.kelp, "upstairs", *[f"--target=127.0.0.1:{p}" for p in ports],
                                  "--gen=1", f"--nbd=127.0.0.1:{nbd}", f"--control=127.0.0.1:{ctl}"])
        self.uri = f"nbd://127.0.0.1:{nbd}"
        self.control = f"http://127.0.0.1:{ctl}"
        wait_nbd(self.uri)
        return self.uri

    def stop(self):
        if self.g:
            self.g.stop()
            self.g = None

    def snapshot_online(self, name):
        """Seconds for POST /snapshots, or None without that API."""
        req = urllib.request.Request(f"{self.control}/snapshots", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"content-type": "application/json"})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
        except urllib.error.HTTPError as e:
            if e.code in (404, 405):
                return None
            raise
        return time.perf_counter() - t

    def snapshot_offline(self, name):
        t = time.perf_counter()
        subprocess.check_call([self.kelp, "block", "snapshot", "create", self.dir_arg(), name],
                              stdout=subprocess.DEVNULL)
        return time.perf_counter() - t


def write_blocks(uri, blocks, count, seed):
    """`count` random 4 KiB blocks of random data through NBD, then a flush
    (the same on both sides, so a snapshot's time is its own)."""
    fio(uri, ["--rw=randwrite", "--bs=4k", "--iodepth=16", f"--number_ios={count}",
              f"--randseed={seed}", "--refill_buffers", "--end_fsync=1"], None, blocks * BS >> 20)


def bench_create(kelp, args, size_gib, tmp):
    rows = {"online": [], "offline": [], "qcow2": []}
    with tempfile.TemporaryDirectory(prefix="snap-create-", dir=tmp) as d:
        d = Path(d)
        v = KelpVolume(kelp, d, size_gib)
        qcow = d / "img.qcow2"
        subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow),
                               f"{size_gib}G"])
        dirty = v.blocks // 50
        for i in range(args.tries):
            # Kelp: write 2%, then the running volume's snapshot.
            uri = v.start()
            write_blocks(uri, v.blocks, dirty, 100 + i)
            t = v.snapshot_online(f"on{i}")
            if t is not None:
                rows["online"].append(t)
            v.stop()
            # Offline: write 2% again, stop, snapshot the regions.
            uri = v.start()
            write_blocks(uri, v.blocks, dirty, 200 + i)
            v.stop()
            rows["offline"].append(v.snapshot_offline(f"off{i}"))
            # qcow2: the same writes through qemu-nbd, then an internal snapshot.
            g, quri = serve_qcow(d, qcow)
            write_blocks(quri, v.blocks, dirty, 200 + i)
            g.stop()
            t0 = time.perf_counter()
            subprocess.check_call(["qemu-img", "snapshot", "-c", f"s{i}", str(qcow)])
            rows["qcow2"].append(time.perf_counter() - t0)
            log(f"{size_gib} GiB try {i}: " + ", ".join(
                f"{k} {v_[-1] * 1000:.0f} ms" for k, v_ in rows.items() if v_))
    return rows


def bench_send(kelp, args, tmp):
    out = {}
    with tempfile.TemporaryDirectory(prefix="snap-send-", dir=tmp) as d:
        d = Path(d)
        v = KelpVolume(kelp, d, args.send_gib)
        uri = v.start()
        log(f"filling {args.send_gib} GiB with random data")
        fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4", "--refill_buffers"], None,
            v.blocks * BS >> 20)
        v.stop()
        v.snapshot_offline("s1")
        full_k, full_q = [], []
        for rnd in range(args.rounds):
            for side in (["kelp", "qemu"] if rnd % 2 == 0 else ["qemu", "kelp"]):
                dst = d / "out"
                if side == "kelp":
                    t = time.perf_counter()
                    subprocess.check_call([kelp, "block", "send", "-q", f"--dir={v.dirs[0]}",
                                           "s1", f"--output={dst}"], stderr=subprocess.DEVNULL)
                    full_k.append(time.perf_counter() - t)
                    full_size = dst.stat().st_size
                else:
                    uri = v.start()
                    t = time.perf_counter()
                    subprocess.check_call(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                                           uri, str(dst)])
                    full_q.append(time.perf_counter() - t)
                    v.stop()
                dst.unlink()
                log(f"full send round {rnd} {side}: "
                    f"{(full_k if side == 'kelp' else full_q)[-1]:.2f} s")
        # 1% of the blocks change; then the incremental.
        uri = v.start()
        changed = v.blocks // 100
        write_blocks(uri, v.blocks, changed, 7)
        v.stop()
        v.snapshot_offline("s2")
        inc = []
        for _ in range(args.rounds):
            dst = d / "inc"
            t = time.perf_counter()
            subprocess.check_call([kelp, "block", "send", "-q", f"--dir={v.dirs[0]}",
                                   "--from=s1", "s2", f"--output={dst}"], stderr=subprocess.DEVNULL)
            inc.append(time.perf_counter() - t)
            inc_size = dst.stat().st_size
            dst.unlink()
        out.update(full_k=full_k, full_q=full_q, inc=inc, inc_size=inc_size,
                   changed_bytes=changed * BS, full_size=full_size,
                   volume_bytes=v.blocks * BS)
    return out


def bench_cow(kelp, args, tmp):
    """The same running volume, alternating: no snapshots held, then three
    taken online (1% of the blocks written between them) and deleted after
    the measurement."""
    res = {"none": [], "three": []}
    with tempfile.TemporaryDirectory(prefix="snap-cow-", dir=tmp) as d:
        d = Path(d)
        v = KelpVolume(kelp, d, args.cow_gib)
        uri = v.start()
        size_mib = v.blocks * BS >> 20
        try:
            for _ in range(2):  # both slots of every block written: steady state
                fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4"], None, size_mib)
            job = ["--rw=randwrite", "--bs=4k", "--iodepth=16"]
            for rnd in range(args.rounds):
                for side in (["none", "three"] if rnd % 2 == 0 else ["three", "none"]):
                    names = [f"c{rnd}-{i}" for i in range(3)]
                    if side == "three":
                        for n in names:
                            write_blocks(uri, v.blocks, v.blocks // 100, zlib.crc32(n.encode()) & 0xffff)
                            if v.snapshot_online(n) is None:
                                raise RuntimeError("the upstairs has no snapshot API")
                    j = fio(uri, job, args.seconds, size_mib)["write"]
                    res[side].append(j["iops"])
                    log(f"4k randwrite round {rnd} {side} snapshots: {j['iops']:.0f} IOPS")
                    if side == "three":
                        for n in names:
                            urllib.request.urlopen(urllib.request.Request(
                                f"{v.control}/snapshots/{n}", method="DELETE"), timeout=120).read()
        finally:
            v.stop()
    return res


def serve_qcow(d, image):
    """qemu-nbd serving a qcow2 image (persistent); returns (group, uri)."""
    g = Group(d)
    port = free_port()
    g.start("qemu-nbd", ["qemu-nbd", "-f", "qcow2", "-b", "127.0.0.1", "-p", str(port),
                         "--cache=none", "-x", "", "-t", str(image)])
    uri = f"nbd://127.0.0.1:{port}"
    wait_nbd(uri)
    return g, uri


def read_all(uri):
    """Seconds to read a whole export with nbdcopy."""
    t0 = time.perf_counter()
    subprocess.check_call(["nbdcopy", uri, "null:"])
    return time.perf_counter() - t0


def bench_clone(kelp, args, tmp):
    out = {"kelp_create": [], "qcow_create": [], "kelp_read": [], "qcow_read": [], "fill": [],
           "origin_read": [], "base_read": []}
    with tempfile.TemporaryDirectory(prefix="snap-clone-", dir=tmp) as d:
        d = Path(d)
        v = KelpVolume(kelp, d, args.clone_gib)
        size_mib = v.blocks * BS >> 20
        uri = v.start()
        fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4", "--refill_buffers", "--randseed=5"],
            None, size_mib)
        v.snapshot_online("base")
        # The reference: the same data in a qcow2 base image.
        base = d / "base.qcow2"
        subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", str(base), f"{size_mib}M"])
        g, quri = serve_qcow(d, base)
        fio(quri, ["--rw=write", "--bs=1M", "--iodepth=4", "--refill_buffers", "--randseed=5"],
            None, size_mib)
        g.stop()
        for rnd in range(args.rounds):
            # Baselines: the origin volume itself (running) and the base image.
            out["origin_read"].append(read_all(uri))
            g, quri = serve_qcow(d, base)
            out["base_read"].append(read_all(quri))
            g.stop()
            cdirs = [d / f"c{rnd}-{i}" for i in range(3)]
            t0 = time.perf_counter()
            subprocess.check_call([kelp, "block", "clone", v.dir_arg(), "base",
                                   "--to=" + ",".join(str(c) for c in cdirs)],
                                  stdout=subprocess.DEVNULL)
            out["kelp_create"].append(time.perf_counter() - t0)
            overlay = d / f"o{rnd}.qcow2"
            t0 = time.perf_counter()
            subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base),
                                   "-F", "qcow2", str(overlay)])
            out["qcow_create"].append(time.perf_counter() - t0)
            # Read each in full through NBD; the clone's downstairs copy
            # it in the background meanwhile, as they would in use.
            c = KelpVolume.__new__(KelpVolume)
            c.kelp, c.d, c.blocks, c.dirs, c.g = kelp, d / f"cv{rnd}", v.blocks, cdirs, None
            c.d.mkdir()
            t_fill = time.perf_counter()
            out["kelp_read"].append(read_all(c.start()))
            while any((x / "origin.kelp").exists() for x in cdirs):
                time.sleep(0.05)
            out["fill"].append(time.perf_counter() - t_fill)
            c.stop()
            g, quri = serve_qcow(d, overlay)
            out["qcow_read"].append(read_all(quri))
            g.stop()
            log(f"clone round {rnd}: " + ", ".join(f"{k} {x[-1]:.3f} s" for k, x in out.items()))
        v.stop()
    out["bytes"] = v.blocks * BS
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-gib", default="1,8", help="volume sizes for snapshot create")
    ap.add_argument("--send-gib", type=int, default=4)
    ap.add_argument("--cow-gib", type=int, default=1)
    ap.add_argument("--clone-gib", type=int, default=1)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--only", default="create,send,cow",
                    help="comma-separated: create, send, cow, clone")
    ap.add_argument("--kelp", help="kelp binary (default: build target/release/kelp)")
    args = ap.parse_args()
    ensure_tools()
    kelp = args.kelp
    if not kelp:
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "kelp"], cwd=ROOT)
        kelp = str(ROOT / "target" / "release" / "kelp")
    only = set(args.only.split(","))
    random.seed(1)
    if "create" in only:
        print("\n### Snapshot create (2% of the volume written since the last one), "
              f"median of {args.tries}\n")
        print("| volume | Kelp running volume (POST /snapshots) | Kelp offline command "
              "(3 regions, incl. process start and open) | qemu-img snapshot -c (qcow2) |")
        print("|---|---|---|---|")
        for s in [int(x) for x in args.sizes_gib.split(",")]:
            r = bench_create(kelp, args, s, args.tmpdir)
            online = f"{med(r['online']) * 1000:.0f} ms" if r["online"] else "n/a"
            print(f"| {s} GiB | {online} | {med(r['offline']) * 1000:.0f} ms | "
                  f"{med(r['qcow2']) * 1000:.0f} ms |", flush=True)
    if "send" in only:
        r = bench_send(kelp, args, args.tmpdir)
        gib = r["volume_bytes"] / (1 << 30)
        k, q, i = med(r["full_k"]), med(r["full_q"]), med(r["inc"])
        ratios = [q_ / k_ for k_, q_ in zip(r["full_k"], r["full_q"])]
        print(f"\n### Send of a {gib:.0f} GiB volume of random data, median of {args.rounds} "
              "alternating rounds\n")
        print("| measure | Kelp | reference | ratio |")
        print("|---|---|---|---|")
        print(f"| full send to a file: `kelp block send` (one region) vs `qemu-img convert` "
              f"(the NBD export to raw) | {r['volume_bytes'] / k / 1e6:.0f} MB/s ({k:.1f} s) | "
              f"{r['volume_bytes'] / q / 1e6:.0f} MB/s ({q:.1f} s) | "
              f"{med(ratios):.2f}× throughput (min {min(ratios):.2f}, max {max(ratios):.2f}) |")
        print(f"| incremental send, 1% of blocks changed | {i:.2f} s | full send {k:.1f} s | "
              f"{i / k * 100:.1f}% of the full send's time |")
        print(f"| incremental stream size | {r['inc_size'] / 1e6:.1f} MB | changed data "
              f"{r['changed_bytes'] / 1e6:.1f} MB | {r['inc_size'] / r['changed_bytes']:.3f}× |")
    if "cow" in only:
        r = bench_cow(kelp, args, args.tmpdir)
        ratios = [a / b for a, b in zip(r["three"], r["none"]) if b]
        print(f"\n### 4 KiB random writes, QD16, fio over NBD, {args.seconds} s, "
              f"{args.cow_gib} GiB volume, median of {args.rounds} alternating rounds\n")
        print("| no snapshots | three snapshots held | ratio |")
        print("|---|---|---|")
        print(f"| {med(r['none']):.0f} IOPS | {med(r['three']):.0f} IOPS | "
              f"{med(ratios):.2f}× (min {min(ratios):.2f}, max {max(ratios):.2f}) |")
    if "clone" in only:
        r = bench_clone(kelp, args, args.tmpdir)
        mb = r["bytes"] / 1e6
        kr, qr = med(r["kelp_read"]), med(r["qcow_read"])
        print(f"\n### Clone of a snapshot of a running {args.clone_gib} GiB volume of random data, "
              f"median of {args.rounds} rounds\n")
        print("| measure | Kelp | qcow2 overlay | ratio |")
        print("|---|---|---|---|")
        print(f"| create (`kelp block clone`, 3 regions / `qemu-img create -b`) | "
              f"{med(r['kelp_create']) * 1000:.0f} ms | {med(r['qcow_create']) * 1000:.0f} ms | |")
        print(f"| first full read through NBD (`nbdcopy` to `null:`) | "
              f"{mb / kr:.0f} MB/s | {mb / qr:.0f} MB/s | {qr / kr:.2f}× |")
        ore, bre = med(r["origin_read"]), med(r["base_read"])
        print(f"| baseline: full read of the origin volume / of the base image | "
              f"{mb / ore:.0f} MB/s | {mb / bre:.0f} MB/s | {bre / ore:.2f}× |")
        print(f"| background copy done, from the downstairs' start | {med(r['fill']):.1f} s | "
              "(an overlay reads its backing file for ever) | |")


if __name__ == "__main__":
    main()
