#!/usr/bin/env python3
"""Cluster figures for Kelp's blob store: repair, scrub and compaction.

Three measurements, each on fresh processes and temporary directories
(under /tmp), all on 127.0.0.1:

1. repair: a master (-defaultReplication=001 -replicationGraceSeconds=1)
   and three volume servers; about 1 GB written with replication 001 by
   `kelp benchmark`; the server holding the most bytes is killed with
   SIGKILL and the time until every volume it held has 2 locations again
   (`/dir/lookup`, polled every 0.2 s) is measured. Then a sample of blobs
   is read from both new locations and compared with what was read before
   the kill. Run with the volume servers' -compactionMBps (the re-replication
   copy budget) at 0 (unlimited) and at the default 64.
2. scrub: one volume server with about 500 MB, loaded with -scrubMBps=0,
   restarted with -scrubMBps=1000 and with -scrubMBps=100000 (one pass
   each, cold page cache for the .dat files via posix_fadvise DONTNEED),
   then with the default -scrubMBps=8 for a fixed time; rates come from
   /status Scrub.BytesChecked.
3. compaction: one master, one volume server; ~50k blobs of 1-4 KB, half
   deleted; a read+write load (two concurrent `kelp benchmark` processes,
   -readOnly and -writeOnly) runs once idle and once while
   `/vol/vacuum?garbageThreshold=0.1` compacts; read and write p99 compared.

Processes are stopped by pid at the end, also on failure.

    CARGO_TARGET_DIR=/work/target-bench bench/cluster-figures.py --rounds 2 --comp-writes 15000 --json out.json
    bench/cluster-figures.py --only compaction --rounds 1 --comp-mbps 64
"""

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
PROCS = []  # every Popen started, stopped by pid in stop_all()


def log(msg):
    print(f"# [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kelp_binary(args):
    if args.kelp:
        return args.kelp
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "kelp")


def free_port():
    """A port P with P and P+10000 (gRPC) free."""
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 55000 or p < 10000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            pass
    raise RuntimeError("no free port pair")


def start(cmd, logfile):
    f = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    f.close()
    p.kelp_log = logfile
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    if p.poll() is not None:
        return
    try:
        os.kill(p.pid, sig)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            stop(p)
    PROCS.clear()


def http(url, method="GET", data=None, timeout=30):
    req = urllib.request.Request(url, method=method, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def get_json(url, timeout=30):
    return json.loads(http(url, timeout=timeout))


def wait_for(pred, what, timeout=60, every=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - servers starting up
            last = e
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last})")


def data_nodes(master):
    st = get_json(f"http://{master}/dir/status")
    nodes = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "DataNodes" and isinstance(v, list):
                    nodes.extend(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(st)
    return nodes


class Cluster:
    def __init__(self, kelp, tmp, master_flags=(), log_level="info"):
        self.kelp = kelp
        self.tmp = Path(tmp)
        self.port = free_port()
        self.master = f"127.0.0.1:{self.port}"
        (self.tmp / "m").mkdir(parents=True, exist_ok=True)
        self.mproc = start([kelp, "master", "-ip=127.0.0.1", f"-port={self.port}",
                            f"-mdir={self.tmp / 'm'}", *master_flags],
                           self.tmp / "master.log")
        wait_for(lambda: get_json(f"http://{self.master}/dir/status"), "master")
        self.volumes = {}  # url -> (Popen, dir, flags)

    def add_volume(self, flags=(), port=None, vdir=None):
        port = port or free_port()
        url = f"127.0.0.1:{port}"
        vdir = vdir or self.tmp / f"v{port}"
        p = start([self.kelp, "volume", "-ip=127.0.0.1", f"-port={port}", f"-dir={vdir}",
                   f"-mserver={self.master}", *flags], self.tmp / f"volume-{port}.log")
        self.volumes[url] = (p, vdir, list(flags))
        wait_for(lambda: get_json(f"http://{url}/status"), f"volume {url}")
        return url

    def wait_nodes(self, n):
        wait_for(lambda: len(data_nodes(self.master)) >= n, f"{n} volume servers registered")

    def benchmark(self, *flags, check=True):
        cmd = [self.kelp, "benchmark", f"-master={self.master}", "--json", *flags]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout)


def p99(phase):
    for pct, ms in phase["latency_ms"]["percentiles"]:
        if abs(pct - 99) < 1e-9:
            return ms
    raise KeyError("no p99 in benchmark output")


def phase(report, name):
    for ph in report["phases"]:
        if ph["phase"].lower().startswith(name):
            return ph
    raise KeyError(f"no {name} phase in {report}")


def status_bytes(url):
    st = get_json(f"http://{url}/status")
    return {v["Id"]: v["Size"] for v in st["Volumes"]}


def lookup(master, vid):
    try:
        return [l["url"] for l in get_json(f"http://{master}/dir/lookup?volumeId={vid}",
                                           timeout=5)["locations"]]
    except urllib.error.HTTPError:
        return []


def kv(line, key):
    """The value of `key=value` in a tracing log line."""
    for tok in line.split():
        if tok.startswith(key + "="):
            return tok.split("=", 1)[1].strip('"')
    return None


def log_ts(line):
    """Seconds (since the epoch, UTC) of a tracing log line's timestamp."""
    import datetime
    ts = line.split()[0].rstrip("Z")
    return datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp()


def grep_log(path, needle):
    try:
        return [l.rstrip() for l in open(path, errors="replace") if needle in l]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- 1. repair


def run_repair(args, kelp, copy_mbps, round_no):
    tmp = tempfile.mkdtemp(prefix="kelp-repair-", dir="/tmp")
    log(f"repair round {round_no}, -compactionMBps={copy_mbps}, in {tmp}")
    try:
        c = Cluster(kelp, tmp, ["-defaultReplication=001", "-replicationGraceSeconds=1",
                                "-volumeSizeLimitMB=1024"])
        vflags = ["-max=20", "-pulseSeconds=1", f"-compactionMBps={copy_mbps}"]
        urls = [c.add_volume(vflags) for _ in range(3)]
        c.wait_nodes(3)
        listfile = Path(tmp) / "list.txt"
        t = time.monotonic()
        rep = c.benchmark("-n", str(args.repair_n), "-c", "16", "-size", "65536",
                          "-replication=001", "-collection=rr", "-writeOnly=true",
                          f"-list={listfile}")
        w = phase(rep, "writ")
        log(f"loaded {w['completed']} blobs ({w['failed']} failed) in {time.monotonic() - t:.1f} s")
        time.sleep(2.5)  # let heartbeats carry the final sizes
        held = {u: status_bytes(u) for u in urls}
        victim = max(urls, key=lambda u: sum(held[u].values()))
        vids = sorted(held[victim])
        victim_bytes = sum(held[victim].values())
        log(f"victim {victim}: {len(vids)} volumes, {victim_bytes / MIB:.0f} MiB; "
            f"others: {[round(sum(held[u].values()) / MIB) for u in urls if u != victim]} MiB")
        for v in vids:
            locs = lookup(c.master, v)
            assert len(locs) == 2 and victim in locs, f"volume {v} before kill: {locs}"
        # Sample blobs on the victim's volumes, read before the kill.
        fids = [l.strip() for l in open(listfile) if l.strip()]
        on_victim = [f for f in fids if int(f.split(",")[0]) in held[victim]]
        sample = random.Random(round_no).sample(on_victim, min(args.repair_sample, len(on_victim)))
        expect = {f: hashlib.sha256(http(f"http://{victim}/{f}")).hexdigest() for f in sample}

        vproc = c.volumes[victim][0]
        os.kill(vproc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        vproc.wait()
        pending = set(vids)
        restored_at = {}
        while pending:
            if time.monotonic() - t0 > args.repair_timeout:
                raise RuntimeError(f"placement not restored after {args.repair_timeout} s: {sorted(pending)}")
            for v in sorted(pending):
                locs = lookup(c.master, v)
                if len(locs) == 2 and victim not in locs:
                    restored_at[v] = time.monotonic() - t0
                    pending.discard(v)
            time.sleep(0.2)
        secs = time.monotonic() - t0
        log(f"placement restored in {secs:.1f} s ({victim_bytes / MIB / secs:.1f} MiB/s)")
        # Read the sample from both locations of each volume, directly.
        bad = 0
        checked = 0
        for f in sample:
            locs = lookup(c.master, int(f.split(",")[0]))
            for loc in locs:
                body = http(f"http://{loc}/{f}")
                checked += 1
                if hashlib.sha256(body).hexdigest() != expect[f]:
                    bad += 1
        master_lines = grep_log(c.mproc.kelp_log, "placement restored")
        fill_lines = []
        for u in urls:
            if u != victim:
                fill_lines += grep_log(c.volumes[u][0].kelp_log, "new replica filled")
        fill_ms = sum(int(kv(l, "elapsed_ms") or 0) for l in fill_lines)
        left = [l for l in grep_log(c.mproc.kelp_log, "data node left") if victim in l]
        asked = grep_log(c.mproc.kelp_log, "re-replicating an under-replicated volume")
        first_ask_s = (log_ts(asked[0]) - log_ts(left[0])) if left and asked else None
        res = {
            "round": round_no, "copy_mbps": copy_mbps, "blobs": w["completed"],
            "write_failed": w["failed"], "victim_volumes": len(vids),
            "victim_bytes": victim_bytes, "seconds": round(secs, 2),
            "mib_per_s": round(victim_bytes / MIB / secs, 1),
            "per_volume_restored_at_s": {str(k): round(v, 2) for k, v in sorted(restored_at.items())},
            "sample_reads": checked, "sample_mismatches": bad,
            "master_restored_lines": len(master_lines), "fill_lines": fill_lines[:50],
            "fill_seconds_sum": round(fill_ms / 1000, 2),
            "fill_mib_per_s": round(victim_bytes / MIB / (fill_ms / 1000), 1) if fill_ms else None,
            "left_to_first_fill_s": round(first_ask_s, 2) if first_ask_s is not None else None,
        }
        log(f"sample: {checked} reads, {bad} mismatches")
        return res
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------- 2. scrub


def drop_cache(vdir):
    n = 0
    for p in glob.glob(f"{vdir}/**/*.dat", recursive=True):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def scrub_stats(url):
    return get_json(f"http://{url}/status")["Scrub"]


def run_scrub(args, kelp):
    tmp = tempfile.mkdtemp(prefix="kelp-scrub-", dir="/tmp")
    log(f"scrub in {tmp}")
    try:
        c = Cluster(kelp, tmp, ["-volumeSizeLimitMB=1024"])
        port = free_port()
        vdir = Path(tmp) / "v"
        url = c.add_volume(["-max=20", "-scrubMBps=0"], port=port, vdir=vdir)
        c.wait_nodes(1)
        rep = c.benchmark("-n", str(args.scrub_n), "-c", "16", "-size", "65536",
                          "-collection=sc", "-writeOnly=true",
                          f"-list={Path(tmp) / 'list.txt'}")
        total = sum(status_bytes(url).values())
        log(f"scrub: loaded {phase(rep, 'writ')['completed']} blobs, {total / MIB:.0f} MiB")
        out = {"bytes": total}
        for mode, flags in (("unlimited", ["-scrubMBps=1000", "-scrubIntervalSeconds=3600"]),
                            ("unthrottled", ["-scrubMBps=100000", "-scrubIntervalSeconds=3600"]),
                            ("default", [])):
            stop(c.volumes[url][0])
            dropped = drop_cache(vdir)
            t_start = time.monotonic()
            c.add_volume(["-max=20", *flags], port=port, vdir=vdir)
            samples = []
            while True:
                s = scrub_stats(url)
                now = time.monotonic()
                samples.append((now, s["BytesChecked"], s["Passes"]))
                if mode != "default" and s["Passes"] >= 1:
                    break
                if mode == "default" and now - t_start >= args.scrub_default_seconds:
                    break
                if now - t_start > 1800:
                    raise RuntimeError("scrub pass did not finish in 30 min")
                time.sleep(0.05)
            t_first = samples[0][0]
            t_last, b_last, _ = samples[-1]
            # From the process start (the scrub starts at startup) to the
            # poll that saw the pass end (or the fixed run time).
            secs = t_last - t_start
            rate = b_last / MIB / secs
            # Steady rate after the first 2 s (skips the startup burst).
            steady = [x for x in samples if x[0] - t_first >= 2.0]
            steady_rate = ((b_last - steady[0][1]) / MIB / (t_last - steady[0][0])
                           if len(steady) > 1 and t_last > steady[0][0] else None)
            b_first = samples[0][1]
            out[mode] = {"flags": flags, "dat_files_uncached": dropped,
                         "mib_per_s_from_first_status": round((b_last - b_first) / MIB / (t_last - t_first), 1)
                         if t_last > t_first else None,
                         "seconds": round(secs, 2), "bytes_checked": b_last,
                         "passes": samples[-1][2], "mib_per_s": round(rate, 1),
                         "mib_per_s_after_2s": round(steady_rate, 2) if steady_rate else None,
                         "startup_s": round(t_first - t_start, 2)}
            log(f"scrub {mode}: {out[mode]}")
            if mode != "default":
                s = scrub_stats(url)
                out[mode]["needles_checked"] = s["NeedlesChecked"]
                out[mode]["corrupt"] = s["Corrupt"]
        return out
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------ 3. compaction


def dat_bytes(vdir):
    return sum(os.path.getsize(p) for p in glob.glob(f"{vdir}/**/*.dat", recursive=True))


def load(c, live_list, tmp, tag, args):
    """Concurrent read (-readOnly) and write (-writeOnly) benchmarks; returns both reports."""
    kelp = c.kelp
    rl = subprocess.Popen([kelp, "benchmark", f"-master={c.master}", "--json", "-readOnly=true",
                           "-n", str(args.comp_reads), "-c", str(args.comp_c // 2),
                           f"-list={live_list}", "-collection=cp"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wl = subprocess.Popen([kelp, "benchmark", f"-master={c.master}", "--json", "-writeOnly=true",
                           "-n", str(args.comp_writes), "-c", str(args.comp_c // 2),
                           "-size", "2048", f"-list={Path(tmp) / ('w-' + tag + '.txt')}",
                           "-collection=cp"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.extend([rl, wl])
    t0 = time.monotonic()
    ro, re_ = rl.communicate()
    tr = time.monotonic() - t0
    wo, we = wl.communicate()
    tw = time.monotonic() - t0
    if rl.returncode or wl.returncode:
        raise RuntimeError(f"load failed: {re_[-1000:]} {we[-1000:]}")
    return json.loads(ro), json.loads(wo), tr, tw


def run_compaction(args, kelp, round_no):
    tmp = tempfile.mkdtemp(prefix="kelp-compact-", dir="/tmp")
    log(f"compaction round {round_no} in {tmp}, -compactionMBps={args.comp_mbps}")
    try:
        c = Cluster(kelp, tmp, ["-volumeSizeLimitMB=1024", "-vacuumIntervalSeconds=0"])
        vdir = Path(tmp) / "v"
        url = c.add_volume(["-max=20", f"-compactionMBps={args.comp_mbps}"], vdir=vdir)
        c.wait_nodes(1)
        live = Path(tmp) / "live.txt"
        per = args.comp_n // 4
        written = 0
        with open(live, "w") as out:
            for size in (1024, 2048, 3072, 4000):  # each blob gets +0..63 bytes
                lf = Path(tmp) / f"l{size}.txt"
                rep = c.benchmark("-n", str(per), "-c", "16", "-size", str(size),
                                  "-deletePercent=50", "-writeOnly=true", "-collection=cp",
                                  f"-list={lf}")
                written += phase(rep, "writ")["completed"]
                if rep.get("delete_failures"):
                    raise RuntimeError(f"{rep['delete_failures']} deletes failed")
                out.write(open(lf).read())
        nlive = sum(1 for _ in open(live))
        time.sleep(2)
        st = get_json(f"http://{url}/status")["Volumes"]
        log(f"wrote {written}, live {nlive}, {len(st)} volumes, .dat {dat_bytes(vdir) / MIB:.0f} MiB, "
            f"deleted {sum(v['DeleteCount'] for v in st)}")
        rounds = {}
        order = ("idle", "compaction") if round_no % 2 == 1 else ("compaction", "idle")
        for mode in order:
            vac = {}
            before = dat_bytes(vdir)
            if mode == "compaction":
                def vacuum():
                    t = time.monotonic()
                    try:
                        body = get_json(f"http://{c.master}/vol/vacuum?garbageThreshold=0.1",
                                        timeout=3600)
                        vac["result"] = body.get("Vacuum")
                    except Exception as e:  # noqa: BLE001
                        vac["error"] = str(e)
                    vac["end"] = time.monotonic()
                    vac["start"] = t
                th = threading.Thread(target=vacuum)
                t_load = time.monotonic()
                th.start()
            else:
                t_load = time.monotonic()
            r, w, tr, tw = load(c, live, tmp, f"{round_no}-{mode}", args)
            t_load_end = time.monotonic()
            if mode == "compaction":
                th.join()
            after = dat_bytes(vdir)
            rr, ww = phase(r, "read"), phase(w, "writ")
            res = {"read_p99_ms": p99(rr), "write_p99_ms": p99(ww),
                   "reads_per_s": round(rr["requests_per_second"]),
                   "writes_per_s": round(ww["requests_per_second"]),
                   "read_failed": rr["failed"], "write_failed": ww["failed"],
                   "read_s": round(tr, 1), "write_s": round(tw, 1),
                   "dat_mib_before": round(before / MIB, 1), "dat_mib_after": round(after / MIB, 1)}
            for pct, ms in rr["latency_ms"]["percentiles"]:
                if abs(pct - 50) < 1e-9:
                    res["read_p50_ms"] = ms
            for pct, ms in ww["latency_ms"]["percentiles"]:
                if abs(pct - 50) < 1e-9:
                    res["write_p50_ms"] = ms
            if mode == "compaction":
                load_s = t_load_end - t_load
                vac_s = vac["end"] - vac["start"]
                overlap = max(0.0, min(vac["end"], t_load_end) - max(vac["start"], t_load))
                res.update({"vacuum_s": round(vac_s, 1), "load_s": round(load_s, 1),
                            "load_overlapped_pct": round(100 * overlap / load_s),
                            "vacuum": vac.get("result"), "vacuum_error": vac.get("error")})
            log(f"{mode}: {res}")
            rounds[mode] = res
        rounds["read_p99_ratio"] = round(rounds["compaction"]["read_p99_ms"] / rounds["idle"]["read_p99_ms"], 2)
        rounds["write_p99_ratio"] = round(rounds["compaction"]["write_p99_ms"] / rounds["idle"]["write_p99_ms"], 2)
        rounds["compaction_log"] = [l for l in grep_log(c.volumes[url][0].kelp_log, "compact")][:20]
        rounds["round"] = round_no
        rounds["order"] = order
        return rounds
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ report


def print_report(res):
    if "repair" in res:
        print("\n## Restoring placement after killing one of 3 servers (replication 001)\n")
        print("| round | -compactionMBps | volumes | MiB held | seconds | MiB/s | kill→first fill s | fills s (sum) | fill MiB/s | sample reads (bad) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in res["repair"]:
            print(f"| {r['round']} | {r['copy_mbps']} | {r['victim_volumes']} | "
                  f"{r['victim_bytes'] / MIB:.0f} | {r['seconds']:.1f} | {r['mib_per_s']:.1f} | "
                  f"{r['left_to_first_fill_s']} | {r['fill_seconds_sum']} | {r['fill_mib_per_s']} | "
                  f"{r['sample_reads']} ({r['sample_mismatches']}) |")
    if "scrub" in res:
        s = res["scrub"]
        print(f"\n## Scrub ({s['bytes'] / MIB:.0f} MiB on one server, .dat page cache dropped)\n")
        print("| flags | seconds | MiB checked | MiB/s (from start) | MiB/s (from first /status) | MiB/s after 2 s |")
        print("|---|---|---|---|---|---|")
        for mode in ("unlimited", "unthrottled", "default"):
            m = s[mode]
            print(f"| {' '.join(m['flags']) or '(default -scrubMBps=8)'} | {m['seconds']:.1f} | "
                  f"{m['bytes_checked'] / MIB:.0f} | {m['mib_per_s']:.1f} | {m['mib_per_s_from_first_status']} | "
                  f"{m['mib_per_s_after_2s']} |")
    if "compaction" in res:
        print("\n## p99 during compaction vs idle\n")
        print("| round | mode | read p99 ms | write p99 ms | reads/s | writes/s | vacuum s | load overlapped | .dat MiB before→after |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in res["compaction"]:
            for mode in ("idle", "compaction"):
                m = r[mode]
                print(f"| {r['round']} | {mode} | {m['read_p99_ms']:.2f} | {m['write_p99_ms']:.2f} | "
                      f"{m['reads_per_s']} | {m['writes_per_s']} | {m.get('vacuum_s', '')} | "
                      f"{str(m.get('load_overlapped_pct', '')) + '%' if mode == 'compaction' else ''} | "
                      f"{m['dat_mib_before']}→{m['dat_mib_after']} |")
            print(f"| {r['round']} | ratio | {r['read_p99_ratio']}× | {r['write_p99_ratio']}× | | | | | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kelp", help="kelp binary (default: $CARGO_TARGET_DIR/release/kelp)")
    ap.add_argument("--only", default="repair,scrub,compaction")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of repair (unlimited budget) and compaction")
    ap.add_argument("--repair-n", type=int, default=16000, help="64 KiB blobs written before the kill")
    ap.add_argument("--repair-default-budget", type=int, default=64,
                    help="-compactionMBps of the extra repair run (0: skip)")
    ap.add_argument("--repair-sample", type=int, default=200)
    ap.add_argument("--repair-timeout", type=float, default=1200)
    ap.add_argument("--scrub-n", type=int, default=8000, help="64 KiB blobs for the scrub test")
    ap.add_argument("--scrub-default-seconds", type=float, default=10)
    ap.add_argument("--comp-n", type=int, default=50000, help="blobs of 1-4 KB, half deleted")
    ap.add_argument("--comp-mbps", type=int, default=4, help="-compactionMBps of the volume server")
    ap.add_argument("--comp-reads", type=int, default=200000)
    ap.add_argument("--comp-writes", type=int, default=20000)
    ap.add_argument("--comp-c", type=int, default=8, help="total concurrency (half reads, half writes)")
    ap.add_argument("--json", metavar="FILE", help="also write all figures as JSON here ('-': stdout)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    kelp = kelp_binary(args)
    if not os.access(kelp, os.X_OK):
        sys.exit(f"no kelp binary at {kelp}; cargo build --release -p kelp")
    only = set(args.only.split(","))
    res = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        res["commit"] = commit
        if "repair" in only:
            res["repair"] = []
            for i in range(1, args.rounds + 1):
                res["repair"].append(run_repair(args, kelp, 0, i))
            if args.repair_default_budget:
                res["repair"].append(run_repair(args, kelp, args.repair_default_budget, args.rounds + 1))
        if "scrub" in only:
            res["scrub"] = run_scrub(args, kelp)
        if "compaction" in only:
            res["compaction"] = [run_compaction(args, kelp, i) for i in range(1, args.rounds + 1)]
    finally:
        stop_all()
        if args.json:
            text = json.dumps(res, indent=2)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
    print_report(res)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
