#!/usr/bin/env python3
"""Kelp block volumes against qemu-nbd, side by side, in one run.

Kelp: three `kelp downstairs` on loopback and a `kelp upstairs` exporting
NBD (every write on three copies, acknowledged by two). Reference:
`qemu-nbd` serving one raw file on the same disk (one copy: the practical
limit). Both are driven by `fio --ioengine=nbd` with the same jobs,
alternating for several rounds; ratios are Kelp/qemu-nbd.

Pairings, so that each comparison is like for like:

- *page cache*: qemu-nbd `--cache=writeback` against Kelp (whose downstairs
  always write through the page cache).
- *direct*: qemu-nbd `--cache=none` (O_DIRECT). Kelp has no direct mode, so
  its column there is the same page-cache run: the pairing shows the cost of
  qemu-nbd's direct IO, it is not a like-for-like comparison, and the table
  says so.
- *flush cadence*: Kelp's upstairs flushes on its own every 500 ms; fio sends
  a flush only when asked. Each write job runs twice: with no client flush
  (as before) and with the same client flushes on both sides (`--fsync=N`,
  one NBD flush per `--flush-mib` MiB written, and `--end_fsync=1`).

Dips: every write job logs its IOPS in 50 ms buckets (`--log_avg_msec=50
--write_iops_log`); the table gives the lowest bucket over the mean (first
and last bucket left out), median over rounds. The target is no bucket
below half the mean.

`--kelp-b` measures a second Kelp binary in the same rounds (an A/B of two
builds, order alternating), and `--jobs` picks jobs by substring.

Installs fio and libnbd-bin (Debian) when missing.

    bench/compare-qemu-nbd.py --rounds 3 --seconds 20
"""

import argparse
import json
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

# (label, fio args, side, metric, flush every this many MiB or None).
BASE_JOBS = [
    ("4k randwrite QD16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "write", "iops"),
    ("4k randread QD16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "read", "iops"),
    ("1M seq write", ["--rw=write", "--bs=1M", "--iodepth=4"], "write", "bw"),
    ("1M seq read", ["--rw=read", "--bs=1M", "--iodepth=4"], "read", "bw"),
]

# qemu-nbd modes: name -> (cache flag, how the pairing is labelled).
QEMU_MODES = {
    "writeback": ("--cache=writeback", "page cache (both)"),
    "none": ("--cache=none", "qemu-nbd direct, Kelp page cache (Kelp has no direct mode)"),
}


def jobs(flush_mib, wanted):
    out = []
    for label, args, side, metric in BASE_JOBS:
        bs_kib = 4 if "--bs=4k" in args else 1024
        variants = [(label, args, None)]
        if side == "write":
            every = max(1, flush_mib * 1024 // bs_kib)
            variants.append((f"{label}, flush/{flush_mib} MiB",
                             [*args, f"--fsync={every}", "--end_fsync=1"], flush_mib))
        for lab, a, fl in variants:
            if not wanted or any(w in lab for w in wanted):
                out.append((lab, a, side, metric, fl))
    return out


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


def start_qemu_nbd(d, size_mib, mode):
    g = Group(d)
    img = d / "disk.raw"
    with open(img, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    port = free_port()
    g.start("qemu-nbd", ["qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", str(port),
                         QEMU_MODES[mode][0], "--aio=threads", "-x", "", "-t", str(img)])
    uri = f"nbd://127.0.0.1:{port}"
    wait_nbd(uri)
    return g, uri


def dips(path):
    """Lowest 50 ms IOPS bucket over the mean, and the share of buckets
    under half the mean; the first and last (partial) buckets left out."""
    vals = []
    for line in Path(path).read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].isdigit():
            vals.append(int(parts[1]))
    vals = vals[1:-1]
    if len(vals) < 3:
        return None
    mean = statistics.mean(vals)
    if not mean:
        return None
    return min(vals) / mean, sum(v < mean / 2 for v in vals) / len(vals)


def measure(system, binary, args, joblist):
    """One instance of a system, every job once: {label: (value, p99 ms, dips)}."""
    results = {}
    with tempfile.TemporaryDirectory(prefix=f"nbd-{system}-", dir=args.tmpdir) as d:
        d = Path(d)
        if system.startswith("qemu-"):
            g, uri = start_qemu_nbd(d, args.size_mib, system[len("qemu-"):])
        else:
            g, uri = start_kelp(binary, d, args.size_mib, args.preallocate)
        try:
            # Precondition: write the whole volume `--precondition` times so
            # reads hit written blocks and writes overwrite, on both sides.
            for _ in range(args.precondition):
                fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4", "--end_fsync=1"], None,
                    args.size_mib)
            for n, (label, job, side, metric, _) in enumerate(joblist):
                logargs = []
                if side == "write":
                    logargs = ["--log_avg_msec=50", f"--write_iops_log={d}/j{n}"]
                j = fio(uri, [*job, *logargs], args.seconds, args.size_mib)[side]
                value = j["iops"] if metric == "iops" else j["bw_bytes"] / 1e6
                p99 = j.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1e6
                dip = dips(f"{d}/j{n}_iops.1.log") if logargs else None
                results[label] = (value, p99, dip)
                unit = "IOPS" if metric == "iops" else "MB/s"
                extra = f", min 50 ms bucket {dip[0]:.2f}× mean" if dip else ""
                log(f"{system} {label}: {value:.0f} {unit}, p99 {p99:.2f} ms{extra}")
        finally:
            g.stop()
    return results


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_dip(rows, label):
    d = med(r[label][2][0] if r[label][2] else None for r in rows)
    share = med(r[label][2][1] if r[label][2] else None for r in rows)
    if d is None:
        return "–"
    return f"{d:.2f} ({share * 100:.0f}%)"


def table(rows, a, pairs, joblist, names):
    """Markdown table of system `a` against each (system, pairing label)
    in `pairs`."""
    print(f"| job | pairing | {names[0]} (median) | {names[1]} (median) | "
          f"{names[0]}/{names[1]} (median, min–max) | p99 ms {names[0]} / {names[1]} | "
          f"min 50 ms bucket / mean (share < ½ mean) {names[0]} / {names[1]} |")
    print("|---|---|---|---|---|---|---|")
    for label, _, side, metric, _ in joblist:
        for other, pairing in pairs:
            k = [r[label][0] for r in rows[a]]
            q = [r[label][0] for r in rows[other]]
            ratios = [x / y for x, y in zip(k, q) if y]
            unit = "IOPS" if metric == "iops" else "MB/s"
            kp = med(r[label][1] for r in rows[a])
            qp = med(r[label][1] for r in rows[other])
            dip = (f"{fmt_dip(rows[a], label)} / {fmt_dip(rows[other], label)}"
                   if side == "write" else "–")
            print(f"| {label} | {pairing} | {statistics.median(k):.0f} {unit} | "
                  f"{statistics.median(q):.0f} {unit} | {statistics.median(ratios):.2f}× "
                  f"({min(ratios):.2f}–{max(ratios):.2f}) | {kp:.2f} / {qp:.2f} | {dip} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--tmpdir", default=None, help="where regions and the raw image live")
    ap.add_argument("--kelp", help="kelp binary (default: build target/release/kelp)")
    ap.add_argument("--kelp-b", help="a second kelp binary measured in the same rounds (A/B)")
    ap.add_argument("--qemu", default="writeback,none",
                    help="qemu-nbd cache modes to pair with, comma-separated: writeback "
                         "(page cache, like Kelp), none (O_DIRECT); empty for none at all")
    ap.add_argument("--flush-mib", type=int, default=16,
                    help="in the flushed variant of each write job, one client flush per "
                         "this many MiB written (default 16: every 4096 writes of 4 KiB, "
                         "every 16 writes of 1 MiB; about Kelp's own 500 ms cadence)")
    ap.add_argument("--jobs", default="",
                    help="only jobs whose label contains one of these comma-separated strings")
    ap.add_argument("--json", help="write every round's raw figures here")
    ap.add_argument("--preallocate", action="store_true",
                    help="create Kelp's regions with --preallocate (extent files allocated in full)")
    ap.add_argument("--precondition", type=int, default=2, metavar="N",
                    help="write the whole volume N times before measuring (default 2: steady "
                         "state, every block of Kelp's two slots written once; 1 measures "
                         "a fresh volume)")
    args = ap.parse_args()
    if args.precondition < 1:
        ap.error("--precondition must be at least 1")
    modes = [m for m in args.qemu.split(",") if m]
    for m in modes:
        if m not in QEMU_MODES:
            ap.error(f"unknown qemu-nbd mode {m!r}")
    joblist = jobs(args.flush_mib, [w for w in args.jobs.split(",") if w])
    ensure_tools()
    kelp = args.kelp
    if not kelp:
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "kelp"], cwd=ROOT)
        kelp = str(ROOT / "target" / "release" / "kelp")
    systems = {"kelp": kelp}
    if args.kelp_b:
        systems["kelp-b"] = args.kelp_b
    for m in modes:
        systems[f"qemu-{m}"] = None
    order = list(systems)
    rows = {s: [] for s in systems}
    for rnd in range(args.rounds):
        # Rotate the order each round so no system always runs first.
        k = rnd % len(order)
        for system in order[k:] + order[:k]:
            rows[system].append(measure(system, systems[system], args, joblist))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\n### Kelp (3 downstairs, loopback) vs qemu-nbd (raw file), fio over NBD, "
          f"{args.seconds} s per job, {args.rounds} alternating rounds, "
          f"volume written {args.precondition}× before measuring\n")
    pairs = [(f"qemu-{m}", QEMU_MODES[m][1]) for m in modes]
    if pairs:
        table(rows, "kelp", pairs, joblist, ("Kelp", "qemu-nbd"))
    if args.kelp_b:
        print("\n### Kelp B vs Kelp A (same rounds)\n")
        table(rows, "kelp-b", [("kelp", "B vs A")], joblist, ("B", "A"))
        for m in modes:
            print(f"\n### Kelp B vs qemu-nbd ({m})\n")
            table(rows, "kelp-b", [(f"qemu-{m}", QEMU_MODES[m][1])], joblist,
                  ("Kelp B", "qemu-nbd"))


if __name__ == "__main__":
    main()
