#!/usr/bin/env python3
"""What security costs, side by side in one run.

Three configurations, alternating order every round, on fresh temporary
directories, each driven by the same client:

- `old`: a kelp binary built from the previous release (no security code);
- `off`: this kelp with security off (the default) -- must match `old`;
- `on`:  this kelp with security on -- blobs: JWT write tokens (and so
  peer authentication), HTTPS on master and volume server (client
  certificates required by the volume server), mutual TLS on gRPC; blocks:
  the per-volume secret, mutual TLS between upstairs and downstairs, NBD
  over TLS (x509). Read tokens are left off: with them every read costs a
  token lookup at the master, which measures the client, not TLS.

Blobs are driven by this build's `kelp benchmark` (assign + multipart POST,
then GETs), blocks by `fio --ioengine=nbd` (`nbds://` for `on`, the client
certificate found by libnbd under `$HOME/.pki/libnbd`).
Certificates are made with the openssl CLI.

    git worktree add /tmp/kelp-old <previous-main> && \\
        (cd /tmp/kelp-old && cargo build --release)
    bench/compare-security.py --old /tmp/kelp-old/target/release/kelp --rounds 3
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Group, fio, free_port, log, wait_nbd  # noqa: E402

CONFIGS = ["old", "off", "on"]
BLOCK_JOBS = [
    ("4k randwrite QD16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "write", "iops"),
    ("4k randread QD16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "read", "iops"),
    ("1M seq write", ["--rw=write", "--bs=1M", "--iodepth=4"], "write", "bw"),
]


def make_pki(d):
    """CA, a server certificate (both purposes, SANs 127.0.0.1 and
    localhost) and a client certificate, named as QEMU and libnbd expect."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.check_call(["openssl", *args], cwd=d, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-days", "30", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, eku in [("server", "serverAuth,clientAuth"), ("client", "clientAuth")]:
        (d / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN=bench {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", f"{name}-cert.pem", "-days", "30",
            "-extfile", f"{name}.ext")
    return d


def security_toml(pki):
    ca, sc, sk = pki / "ca-cert.pem", pki / "server-cert.pem", pki / "server-key.pem"
    cc, ck = pki / "client-cert.pem", pki / "client-key.pem"
    return f"""[jwt.signing]
key = "bench-write-secret"
[grpc]
ca = "{ca}"
[grpc.master]
cert = "{sc}"
key = "{sk}"
[grpc.volume]
cert = "{sc}"
key = "{sk}"
[grpc.client]
cert = "{cc}"
key = "{ck}"
[https.master]
cert = "{sc}"
key = "{sk}"
[https.volume]
cert = "{sc}"
key = "{sk}"
ca = "{ca}"
[https.client]
enabled = true
ca = "{ca}"
cert = "{cc}"
key = "{ck}"
"""


def blob_round(config, kelp, client, args, pki):
    with tempfile.TemporaryDirectory(prefix=f"sec-blob-{config}-") as d:
        d = Path(d)
        cwd = d / "cwd"
        cwd.mkdir()
        if config == "on":
            (cwd / "security.toml").write_text(security_toml(pki))
        ready = d / "ready.json"
        g = Group(d)
        g.start("server", [kelp, "server", f"-dir={d / 'data'}", "-master.port=0",
                           "-volume.port=0", "-ip=127.0.0.1", f"--ready-file={ready}"], cwd=cwd)
        try:
            deadline = time.time() + 60
            while not ready.exists():
                if time.time() > deadline:
                    raise RuntimeError(f"{config}: kelp server never became ready")
                time.sleep(0.1)
            port = json.loads(ready.read_text())["master_port"]
            # Volumes grow on the first assign; a small warm-up run pays for it.
            warm = subprocess.run([client, "benchmark", f"-master=127.0.0.1:{port}", "-n=200",
                                   "-c=4", f"-list={d / 'warm.txt'}", "-json"], cwd=cwd,
                                  capture_output=True, text=True)
            if warm.returncode != 0:
                raise RuntimeError(f"{config}: warm-up failed: {warm.stderr[-800:]}")
            out = subprocess.run([client, "benchmark", f"-master=127.0.0.1:{port}",
                                  f"-n={args.n}", f"-c={args.c}", "-size=1024",
                                  f"-list={d / 'list.txt'}", "-json"],
                                 cwd=cwd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{config}: benchmark failed: {out.stderr[-800:]}")
            return json.loads(out.stdout)
        finally:
            g.stop()


def phase(report, name):
    for p in report["phases"]:
        if p["phase"] == name:
            if p["failed"]:
                raise RuntimeError(f"{p['failed']} failed requests in the {name} phase")
            return p
    raise KeyError(f"no {name} phase in {report}")


def p99(phase):
    return dict((round(k, 3), v) for k, v in phase["latency_ms"]["percentiles"]).get(99.0, 0.0)


def block_round(config, kelp, args, pki):
    with tempfile.TemporaryDirectory(prefix=f"sec-block-{config}-") as d:
        d = Path(d)
        g = Group(d)
        secure = []
        if config == "on":
            secret = d / "volume.secret"
            secret.write_text("a-bench-secret-of-32-bytes-length")
            secure = [f"--secret-file={secret}", f"--tls-ca={pki / 'ca-cert.pem'}"]
        block, extent_blocks = 4096, 8192
        count = max(1, args.size_mib * 1024 * 1024 // (block * extent_blocks))
        ports = []
        for i in range(3):
            r = d / f"r{i}"
            subprocess.check_call([kelp, "block", "create", f"--dir={r}",
                                   f"--block-size={block}", f"--extent-size={extent_blocks}",
                                   f"--extent-count={count}"], stdout=subprocess.DEVNULL)
            p = free_port()
            ports.append(p)
            tls = [f"--tls-cert={pki / 'server-cert.pem'}",
                   f"--tls-key={pki / 'server-key.pem'}"] if config == "on" else []
            g.start(f"ds{i}", [kelp, "downstairs", f"--dir={r}", f"--port={p}", *secure, *tls])
        nbd = free_port()
        up_tls = []
        if config == "on":
            up_tls = [f"--tls-cert={pki / 'client-cert.pem'}",
                      f"--tls-key={pki / 'client-key.pem'}",
                      f"--nbd-tls-cert={pki / 'server-cert.pem'}",
                      f"--nbd-tls-key={pki / 'server-key.pem'}"]
        g.start("upstairs", [kelp, "upstairs", *[f"--target=127.0.0.1:{p}" for p in ports],
                             "--gen=1", f"--nbd=127.0.0.1:{nbd}", *secure, *up_tls])
        uri = f"nbds://127.0.0.1:{nbd}" if config == "on" else f"nbd://127.0.0.1:{nbd}"
        env = None
        if config == "on":
            home = d / "home"
            (home / ".pki").mkdir(parents=True)
            shutil.copytree(pki, home / ".pki" / "libnbd")
            env = {**os.environ, "HOME": str(home)}
        try:
            wait_nbd(uri, env=env)
            fio(uri, ["--rw=write", "--bs=1M", "--iodepth=4"], None, args.size_mib, env)
            results = {}
            for label, job, side, metric in BLOCK_JOBS:
                j = fio(uri, job, args.seconds, args.size_mib, env)[side]
                value = j["iops"] if metric == "iops" else j["bw_bytes"] / 1e6
                p99 = j.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1e6
                results[label] = (value, p99)
                log(f"block {config} {label}: {value:.0f} "
                    f"{'IOPS' if metric == 'iops' else 'MB/s'}, p99 {p99:.2f} ms")
            return results
        finally:
            g.stop()


def ratio_row(name, values, a, b, unit=""):
    ra = values[a]
    rb = values[b]
    rs = [x / y for x, y in zip(ra, rb) if y]
    return (f"| {name} | {statistics.median(ra):.1f}{unit} | {statistics.median(rb):.1f}{unit} | "
            f"{statistics.median(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="kelp binary of the previous release")
    ap.add_argument("--kelp", default=str(ROOT / "target/release/kelp"), help="this kelp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000, help="blobs per benchmark run")
    ap.add_argument("-c", type=int, default=16, help="concurrency")
    ap.add_argument("--seconds", type=int, default=10, help="seconds per fio job")
    ap.add_argument("--size-mib", type=int, default=512, help="block volume size")
    ap.add_argument("--no-blob", action="store_true")
    ap.add_argument("--no-block", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="which of old,off,on to run (old,off compares two releases "
                         "with security off, as after a refactoring)")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    if not configs or any(c not in CONFIGS for c in configs):
        sys.exit(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    for tool in ["openssl", "fio", "nbdinfo"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is required (apt-get install openssl fio libnbd-bin)")
    binaries = {"old": args.old, "off": args.kelp, "on": args.kelp}
    with tempfile.TemporaryDirectory(prefix="sec-pki-") as pki:
        pki = make_pki(Path(pki))
        blob = {c: {"writes/s": [], "reads/s": [], "write p99 ms": [], "read p99 ms": []}
                for c in configs}
        block = {c: {} for c in configs}
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else list(reversed(configs))
            for config in order:
                if not args.no_blob:
                    rep = blob_round(config, binaries[config], args.kelp, args, pki)
                    w, rd = phase(rep, "write"), phase(rep, "read")
                    blob[config]["writes/s"].append(w["requests_per_second"])
                    blob[config]["reads/s"].append(rd["requests_per_second"])
                    blob[config]["write p99 ms"].append(p99(w))
                    blob[config]["read p99 ms"].append(p99(rd))
                    log(f"blob {config} round {r}: {w['requests_per_second']:.0f} writes/s, "
                        f"{rd['requests_per_second']:.0f} reads/s")
                if not args.no_block:
                    for label, v in block_round(config, binaries[config], args, pki).items():
                        block[config].setdefault(label, []).append(v[0])
                        block[config].setdefault(label + " p99 ms", []).append(v[1])
    for (a, b, title) in [("off", "old", "security off vs the previous release"),
                          ("on", "off", "everything on vs off")]:
        if a not in configs or b not in configs:
            continue
        print(f"\n### {title} ({args.rounds} alternating rounds)\n")
        print(f"| metric | {a} (median) | {b} (median) | {a}/{b} (median, min–max) |")
        print("|---|---|---|---|")
        if not args.no_blob:
            for m in ["writes/s", "reads/s", "write p99 ms", "read p99 ms"]:
                print(ratio_row(f"blob {m}", {a: blob[a][m], b: blob[b][m]}, a, b))
        if not args.no_block:
            for m in block[a]:
                print(ratio_row(f"block {m}", {a: block[a][m], b: block[b][m]}, a, b))


if __name__ == "__main__":
    main()
