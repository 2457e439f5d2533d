#!/usr/bin/env python3
"""Kelp's S3 gateway and SeaweedFS's side by side, in one run, on this machine.

Each round starts `weed server -filer -s3` and `kelp server -filer -s3` one at
a time (alternating which goes first), each on fresh temporary directories
and ports with the same identities file, and drives both with the same
client, `kelp benchmark -s3`:

- PUT then GET (bytes checked) of 4 KiB objects, 16 clients;
- PUT then GET of 8 MiB objects, 16 clients;
- ListObjectsV2 (pages of 1000) over a bucket of --list-objects objects
  (filled first with 16 clients; only the listing is timed).

Both run with the same `-filer.saveToFilerLimit` (--inline, 4096 by
default: Kelp's default; SeaweedFS's is 0): objects up to that size live in
the filer's metadata on both sides.

It prints each figure (median over rounds), the ratio Kelp/SeaweedFS with
its min-max, and the asymmetries: Kelp answers a write after its chunks and
metadata are fsynced; SeaweedFS's filer (leveldb) and volume servers do not
fsync by default.

`--only rss` instead creates --rss-files small files through each filer's
HTTP API and reports the filer's resident memory: `weed filer` and `kelp
filer` as their own processes (beside a master and a volume server), and
Kelp's one-process `kelp server -filer` as a whole.

    bench/compare-s3.py --kelp target/release/kelp --rounds 3
    bench/compare-s3.py --kelp target/release/kelp --only rss --rss-files 1000000
"""

import argparse
import concurrent.futures
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import log  # noqa: E402

compare = __import__("compare-seaweedfs")
free_port_pair, find_weed, Server = compare.free_port_pair, compare.find_weed, compare.Server
wait_assign, build_kelp = compare.wait_assign, compare.build_kelp

AK, SK = "kelpbenchAK", "kelpbenchSK"
IDENTITIES = {"identities": [{"name": "admin", "credentials": [{"accessKey": AK, "secretKey": SK}],
                              "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}

# (name, objects, object size, clients)
WORKLOADS = [("4k", 20000, 4096, 16), ("8m", 200, 8 << 20, 16)]


def wait_s3(port, deadline=90):
    """Until the gateway answers an S3 request (any status but a refused connection)."""
    start = time.time()
    while time.time() - start < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"S3 on :{port} never answered")


def wait_filer(port, deadline=90):
    start = time.time()
    while time.time() - start < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"filer on :{port} never answered")


def start_system(system, kelp, weed, d, inline):
    """`server -filer -s3` of either system on fresh ports; returns (server, s3 port)."""
    mp, vp, fp, sp = (free_port_pair() for _ in range(4))
    ident = d / "identities.json"
    ident.write_text(json.dumps(IDENTITIES))
    data = d / "data"
    data.mkdir()
    if system == "kelp":
        argv = [kelp, "server", f"-dir={data}", "-ip=127.0.0.1", f"-master.port={mp}",
                f"-volume.port={vp}", "-volume.max=100", "-filer", f"-filer.port={fp}",
                "-s3", f"-s3.port={sp}", f"-s3.config={ident}",
                f"-filer.saveToFilerLimit={inline}"]
    else:
        argv = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={mp}", f"-volume.port={vp}", "-volume.max=100",
                f"-master.dir={data}", "-master.telemetry=false", "-filer", f"-filer.port={fp}",
                "-s3", f"-s3.port={sp}", f"-s3.config={ident}",
                f"-filer.saveToFilerLimit={inline}"]
    s = Server(argv, d / "server.log")
    try:
        wait_assign(f"127.0.0.1:{mp}")
        wait_s3(sp)
    except Exception:
        s.stop()
        raise
    return s, sp


def s3_bench(kelp, port, bucket, n, size, c, extra=()):
    out = subprocess.run(
        [kelp, "benchmark", "-s3", f"-endpoint=http://127.0.0.1:{port}", f"-accessKey={AK}",
         f"-secretKey={SK}", f"-bucket={bucket}", "-n", str(n), "-c", str(c), f"-size={size}",
         "-json", *extra],
        capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kelp benchmark -s3 failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def pct(phase, p):
    return dict((int(k), v) for k, v in phase["latency_ms"]["percentiles"])[p]


def one_round(system, kelp, weed, args):
    row = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-s3-{system}-", dir=args.tmp) as d:
        server, port = start_system(system, kelp, weed, Path(d), args.inline)
        try:
            for name, n, size, c in WORKLOADS:
                n = args.n_small if name == "4k" else args.n_large
                r = s3_bench(kelp, port, f"b{name}", n, size, c)
                for p in r["phases"]:
                    k = f"{name}_{p['phase']}"
                    row[f"{k}_ops"] = p["requests_per_second"]
                    row[f"{k}_mibs"] = p["mib_per_second"]
                    row[f"{k}_p50"], row[f"{k}_p99"] = pct(p, 50), pct(p, 99)
                    row[f"{k}_failed"] = p["failed"]
                if r["error_samples"]:
                    log(f"{system} {name}: {r['error_samples'][:3]}")
            if args.list_objects:
                fill = s3_bench(kelp, port, "blist", args.list_objects, 16, 16, ["-writeOnly"])
                row["fill_failed"] = fill["errors"]
                r = s3_bench(kelp, port, "blist", 0, 16, 1, ["-listOnly"])
                lp = r["phases"][0]
                row["list_keys"] = r["listed_keys"]
                row["list_keys_per_s"] = r["listed_keys_per_second"]
                row["list_seconds"] = lp["seconds"]
                row["list_page_p50"], row["list_page_p99"] = pct(lp, 50), pct(lp, 99)
                row["list_failed"] = lp["failed"]
        finally:
            server.stop()
    return row


def fmt_ratio(kr, wr):
    ratios = [k / w for k, w in zip(kr, wr) if w]
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def fmt_range(rows):
    return f"{statistics.median(rows):.1f} ({min(rows):.1f}–{max(rows):.1f})"


def print_rounds(k, w, args):
    print(f"\n### S3: Kelp vs SeaweedFS, `kelp benchmark -s3`, {args.rounds} alternating rounds\n")
    print("Kelp: every PUT answered after its chunks (volume fdatasync) and its entry (redb "
          "commit) are durable. SeaweedFS: defaults, no fsync in the filer's leveldb nor in the "
          f"volume servers. Both with -filer.saveToFilerLimit={args.inline}.\n")
    print("| figure | Kelp (median, min–max) | SeaweedFS (median, min–max) | Kelp/SeaweedFS (median, min–max) |")
    print("|---|---|---|---|")
    labels = []
    for name, _, _, c in WORKLOADS:
        size = "4 KiB" if name == "4k" else "8 MiB"
        n = args.n_small if name == "4k" else args.n_large
        for ph in ("put", "get"):
            labels += [(f"{name}_{ph}_ops", f"{size} {ph.upper()} ops/s (n={n}, c={c})"),
                       (f"{name}_{ph}_mibs", f"{size} {ph.upper()} MiB/s"),
                       (f"{name}_{ph}_p50", f"{size} {ph.upper()} p50 ms"),
                       (f"{name}_{ph}_p99", f"{size} {ph.upper()} p99 ms")]
    if args.list_objects:
        labels += [("list_keys_per_s", f"ListObjectsV2 keys/s ({args.list_objects} keys, pages of 1000)"),
                   ("list_seconds", "ListObjectsV2 whole bucket, s"),
                   ("list_page_p50", "ListObjectsV2 page p50 ms"),
                   ("list_page_p99", "ListObjectsV2 page p99 ms")]
    for key, label in labels:
        kr, wr = [r.get(key, 0.0) for r in k], [r.get(key, 0.0) for r in w]
        print(f"| {label} | {fmt_range(kr)} | {fmt_range(wr)} | {fmt_ratio(kr, wr)} |")
    fails = lambda rows: sum(v for r in rows for kk, v in r.items() if kk.endswith("failed"))  # noqa: E731
    print(f"| failed requests (all rounds) | {fails(k)} | {fails(w)} | |")
    if args.list_objects:
        print(f"| keys listed | {[r['list_keys'] for r in k]} | {[r['list_keys'] for r in w]} | |")


# ---- filer RSS ---------------------------------------------------------------------------

def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fill_filer(port, count, clients=16, dirs=1000):
    """`count` files of 16 bytes, `count/dirs` per directory, through the filer's HTTP API."""
    per_dir = max(1, count // dirs)

    def worker(w):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        failed = 0
        for i in range(w, count, clients):
            path = f"/rss/d{i // per_dir:05}/f{i:08}"
            for _ in range(3):
                try:
                    conn.request("PUT", path, body=b"x" * 16,
                                 headers={"Content-Type": "application/octet-stream"})
                    r = conn.getresponse()
                    r.read()
                    if r.status < 300:
                        break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            else:
                failed += 1
        return failed

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        failed = sum(ex.map(worker, range(clients)))
    return failed, time.time() - t0


def rss_one(system, kelp, weed, args, standalone):
    with tempfile.TemporaryDirectory(prefix=f"bench-rss-{system}-", dir=args.tmp) as d:
        d = Path(d)
        for sub in ("m", "v", "f"):
            (d / sub).mkdir()
        mp, vp, fp = free_port_pair(), free_port_pair(), free_port_pair()
        procs = []
        try:
            if standalone:
                if system == "kelp":
                    procs.append(Server([kelp, "master", f"-port={mp}", f"-mdir={d / 'm'}",
                                         "-ip=127.0.0.1"], d / "master.log"))
                    procs.append(Server([kelp, "volume", f"-port={vp}", f"-dir={d / 'v'}",
                                         f"-mserver=127.0.0.1:{mp}", "-ip=127.0.0.1", "-max=100"],
                                        d / "volume.log"))
                    wait_assign(f"127.0.0.1:{mp}")
                    filer = Server([kelp, "filer", f"-master=127.0.0.1:{mp}", f"-port={fp}",
                                    f"-dir={d / 'f'}", "-ip=127.0.0.1",
                                    f"-saveToFilerLimit={args.inline}"], d / "filer.log")
                else:
                    procs.append(Server([weed, "master", f"-port={mp}", f"-mdir={d / 'm'}",
                                         "-ip=127.0.0.1", "-telemetry=false"], d / "master.log"))
                    procs.append(Server([weed, "volume", f"-port={vp}", f"-dir={d / 'v'}",
                                         f"-mserver=127.0.0.1:{mp}", "-ip=127.0.0.1", "-max=100"],
                                        d / "volume.log"))
                    wait_assign(f"127.0.0.1:{mp}")
                    filer = Server([weed, "filer", f"-master=127.0.0.1:{mp}", f"-port={fp}",
                                    f"-defaultStoreDir={d / 'f'}", "-ip=127.0.0.1",
                                    f"-saveToFilerLimit={args.inline}"],
                                   d / "filer.log")
            else:
                filer = Server([kelp, "server", f"-dir={d / 'v'}", "-ip=127.0.0.1",
                                f"-master.port={mp}", f"-volume.port={vp}", "-volume.max=100",
                                "-filer", f"-filer.port={fp}",
                                f"-filer.saveToFilerLimit={args.inline}"], d / "server.log")
                wait_assign(f"127.0.0.1:{mp}")
            procs.append(filer)
            wait_filer(fp)
            before = rss_bytes(filer.proc.pid)
            failed, secs = fill_filer(fp, args.rss_files)
            after = rss_bytes(filer.proc.pid)
            time.sleep(10)
            idle = rss_bytes(filer.proc.pid)
        finally:
            for p in reversed(procs):
                p.stop()
    row = {"rss_empty": before, "rss_full": after, "rss_idle": idle, "failed": failed,
           "fill_s": secs}
    log(f"rss {system} standalone={standalone}: {row}")
    return row


def print_rss(rows, args):
    print(f"\n### Filer resident memory with {args.rss_files} files of 16 bytes "
          f"(1000 directories, filer HTTP API, 16 clients)\n")
    print("| process | RSS empty MiB | RSS after the writes MiB | RSS 10 s later MiB | "
          "bytes per entry | fill time s (files/s) | failed |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        per = (r["rss_idle"] - r["rss_empty"]) / args.rss_files
        print(f"| {label} | {r['rss_empty'] / 2**20:.0f} | {r['rss_full'] / 2**20:.0f} | "
              f"{r['rss_idle'] / 2**20:.0f} | {per:.0f} | {r['fill_s']:.0f} "
              f"({args.rss_files / r['fill_s']:.0f}/s) | {r['failed']} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-small", type=int, default=20000, help="4 KiB objects per round")
    ap.add_argument("--n-large", type=int, default=200, help="8 MiB objects per round")
    ap.add_argument("--list-objects", type=int, default=100000,
                    help="objects in the listed bucket (0: no listing)")
    ap.add_argument("--inline", type=int, default=4096,
                    help="-filer.saveToFilerLimit for both systems: files up to this size live in "
                         "the filer's metadata (Kelp's default 4096, SeaweedFS's 0)")
    ap.add_argument("--only", choices=["rounds", "rss"], default="rounds")
    ap.add_argument("--rss-files", type=int, default=1000000)
    ap.add_argument("--kelp", help="kelp binary (default: build target/release/kelp)")
    ap.add_argument("--systems", default="kelp,weed", help="kelp,weed or one of them")
    ap.add_argument("--tmp", default=None, help="where the temporary data directories go")
    args = ap.parse_args()

    systems = args.systems.split(",")
    kelp = args.kelp or build_kelp()
    weed = find_weed()
    if args.only == "rss":
        rows = []
        if "kelp" in systems:
            rows.append(("`kelp filer` (own process)", rss_one("kelp", kelp, weed, args, True)))
        if "weed" in systems:
            rows.append(("`weed filer` (own process, leveldb2)", rss_one("weed", kelp, weed, args, True)))
        if "kelp" in systems:
            rows.append(("`kelp server -filer` (whole process: master, volume, filer)",
                         rss_one("kelp", kelp, weed, args, False)))
        print_rss(rows, args)
        return

    res = {s: [] for s in systems}
    for rnd in range(args.rounds):
        order = systems if rnd % 2 == 0 else list(reversed(systems))
        for system in order:
            row = one_round(system, kelp, weed, args)
            log(f"round {rnd + 1} {system}: {json.dumps(row)}")
            res[system].append(row)
    print(json.dumps(res), file=sys.stderr)
    if "kelp" in res and "weed" in res:
        print_rounds(res["kelp"], res["weed"], args)
    else:
        for s, rows in res.items():
            print(f"\n{s}: " + json.dumps({k: statistics.median(r[k] for r in rows) for k in rows[0]}))


if __name__ == "__main__":
    main()
