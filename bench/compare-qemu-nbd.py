#!/usr/bin/env python3
"""Kelp block volumes against qemu-nbd, side by side, in one run.

Kelp: three `kelp downstairs` on loopback and a `kelp upstairs` exporting
NBD (every write on three copies, acknowledged by two). Reference:
`qemu-nbd` serving one raw file on the same disk (one copy: the practical
limit). Both are driven by `fio --ioengine=nbd` with the same jobs,
alternating for several rounds; ratios are Kelp/qemu-nbd.

Installs fio and libnbd-bin (Debian) when missing.

    bench/compare-qemu-nbd.py --rounds 3 --seconds 20
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Group, fio, free_port, log, wait_nbd  # noqa: E402

JOBS = [
    ("4k randwrite QD16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "write", "iops"),
    ("4k randread QD16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "read", "iops"),
    ("1M seq write", ["--rw=write", "--bs=1M", "--iodepth=4"], "write", "bw"),
    ("1M seq read", ["--rw=read", "--bs=1M", "--iodepth=4"], "read", "bw"),
]


def ensure_tools():
    if not shutil.which("fio") or not shutil.which("nbdinfo"):
        log("installing fio and libnbd-bin")
        subprocess.check_call(["apt-get", "update", "-qq"])
        subprocess.check_call(["apt-get", "install", "-y", "-qq", "fio", "libnbd-bin"],
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which("qemu-nbd"):
        subprocess.check_call(["apt-get", "install", "-y", "-qq", "qemu-utils"],
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def start_kelp(kelp, d, size_mib, preallocate=False):
    g = Group(d)
    block, extent_blocks = 4096, 8192  # 32 MiB extents, kelp block create's default
    count = max(1, size_mib * 1024 * 1024 // (block * extent_blocks))
    ports = []
    for i in range(3):
        r = d / f"r{i}"
        subprocess.check_call([kelp, "block", "create", f"--dir={r}", f"--block-size={block}",
                               f"--extent-size={extent_blocks}", f"--extent-count={count}",
                               *(["--preallocate"] if preallocate else [])],
                              stdout=subprocess.DEVNULL)
        p = free_port()
        ports.append(p)
        g.start(f"ds{i}", [kelp, "downstairs", f"--dir={r}", f"--port={p}"])
    nbd = free_port()
    g.start("upstairs", [kelp, "upstairs", *[f"--target=127.0.0.1:{p}" for p in ports],
                         "--gen=1", f"--nbd=127.0.0.1:{nbd}"])
    uri = f"nbd://127.0.0.1:{nbd}"
    wait_nbd(uri)
    return g, uri


def start_qemu_nbd(d, size_mib):
    g = Group(d)
    img = d / "disk.raw"
    with open(img, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    port = free_port()
    g.start("qemu-nbd", ["qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", str(port),
                         "--cache=none", "--aio=threads", "-x", "", "-t", str(img)])
    uri = f"nbd://127.0.0.1:{port}"
    wait_nbd(uri)
    return g, uri


def measure(system, kelp, args):
    results = {}
    with tempfile.TemporaryDirectory(prefix=f"nbd-{system}-", dir=args.tmpdir) as d:
        d = Path(d)
        g, uri = (start_kelp(kelp, d, args.size_mib, args.preallocate) if system == "kelp"
                  else start_qemu_nbd(d, args.size_mib))
        try:
            # Precondition: write the whole volume `--precondition` times so
            # reads hit written blocks and writes overwrite, on both sides.
            for _ in range(args.precondition):
                fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4"], None, args.size_mib)
            for label, job, side, metric in JOBS:
                j = fio(uri, job, args.seconds, args.size_mib)[side]
                value = j["iops"] if metric == "iops" else j["bw_bytes"] / 1e6
                p99 = j.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1e6
                results[label] = (value, p99)
                log(f"{system} {label}: {value:.0f} {'IOPS' if metric == 'iops' else 'MB/s'}, p99 {p99:.2f} ms")
        finally:
            g.stop()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--tmpdir", default=None, help="where regions and the raw image live")
    ap.add_argument("--kelp", help="kelp binary (default: build target/release/kelp)")
    ap.add_argument("--preallocate", action="store_true",
                    help="create Kelp's regions with --preallocate (extent files allocated in full)")
    ap.add_argument("--precondition", type=int, default=2, metavar="N",
                    help="write the whole volume N times before measuring (default 2: steady "
                         "state, every block of Kelp's two slots written once; 1 measures "
                         "a fresh volume)")
    args = ap.parse_args()
    if args.precondition < 1:
        ap.error("--precondition must be at least 1")
    ensure_tools()
    kelp = args.kelp
    if not kelp:
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "kelp"], cwd=ROOT)
        kelp = str(ROOT / "target" / "release" / "kelp")
    rows = {"kelp": [], "qemu": []}
    for rnd in range(args.rounds):
        for system in (["kelp", "qemu"] if rnd % 2 == 0 else ["qemu", "kelp"]):
            rows[system].append(measure(system, kelp, args))
    print(f"\n### Kelp (3 downstairs, loopback) vs qemu-nbd (raw file), fio over NBD, "
          f"{args.seconds} s per job, {args.rounds} alternating rounds, "
          f"volume written {args.precondition}× before measuring\n")
    print("| job | Kelp (median) | qemu-nbd (median) | Kelp/qemu-nbd (median, min–max) | p99 ms Kelp / qemu-nbd |")
    print("|---|---|---|---|---|")
    for label, _, _, metric in JOBS:
        k = [r[label][0] for r in rows["kelp"]]
        q = [r[label][0] for r in rows["qemu"]]
        ratios = [a / b for a, b in zip(k, q) if b]
        unit = "IOPS" if metric == "iops" else "MB/s"
        kp = statistics.median(r[label][1] for r in rows["kelp"])
        qp = statistics.median(r[label][1] for r in rows["qemu"])
        print(f"| {label} | {statistics.median(k):.0f} {unit} | {statistics.median(q):.0f} {unit} | "
              f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | {kp:.2f} / {qp:.2f} |")


if __name__ == "__main__":
    main()
