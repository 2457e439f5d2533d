#!/usr/bin/env python3
"""Fault soak for Kelp's replicated blob cluster: longer than CI can afford.

A `kelp master` (-defaultReplication=001 -pulseSeconds=1
-replicationGraceSeconds=G) and N `kelp volume` servers (-pulseSeconds=1
-antiEntropySeconds=2 -max=30), all on 127.0.0.1 with fixed ports (picked
free at start, reused on every restart) and their data under a temp dir.

Load: 8 threads, each in a loop: /dir/assign, multipart POST of
deterministic pseudo-random content (1-8 KB, from a per-blob seed); 201 is
an acknowledged blob. Every 10th acknowledged blob of a thread is DELETEd
again; 202 is an acknowledged delete. Anything else (error answer,
connection error, timeout) is an unacknowledged attempt.

Faults, every --fault-every seconds, one at a time (a fault is undone
before the next one starts):
  kill-volume  kill -9 a random volume server, restart it 1-10 s later
               (same ports, same dir)
  stop-volume  SIGSTOP a random volume server for 1-8 s, then SIGCONT
  kill-master  kill -9 the master, restart it 0.5-3 s later (same -mdir)

At the end the faults and the load stop and the script waits (up to
--converge-timeout s) for convergence: every acknowledged blob has exactly
2 locations (/dir/lookup) and reads back byte-identical from each with
`GET /<fid>?proxied=true` (the copy's own answer, no proxying); every
acknowledged delete answers 404 on every location; no volume is read-only
on any server (/status Volumes[].ReadOnly). Unacknowledged uploads and
deletes are checked too (absent or intact, the same on every copy) and
reported as notes; they do not fail the run.

Exit status: 0 when everything acknowledged is right, 1 when anything
acknowledged is wrong (or convergence did not happen), 2 on a setup error.
Processes are stopped by pid at the end, also on failure; the temp dir
(process logs in logs/, the history in history.json, the fault timeline in
faults.log) is removed unless --keep.

    cd /work/main && CARGO_TARGET_DIR=/work/target-bench cargo build --release -p kelp
    bench/soak-cluster.py --minutes 8 --keep
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

DEFAULT_KELP = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "/work/target-bench"), "release", "kelp"
)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- HTTP


class Http:
    """Keep-alive connections, one per (thread, host:port)."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self, hostport):
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        c = conns.get(hostport)
        fresh = c is None
        if fresh:
            host, port = hostport.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
            conns[hostport] = c
        return c, fresh

    def _drop(self, hostport):
        c = self.local.conns.pop(hostport, None)
        if c is not None:
            c.close()

    def request(self, method, hostport, path, body=None, headers=None, idempotent=False):
        """(status, body bytes); raises OSError / HTTPException on failure."""
        for attempt in range(2):
            c, fresh = self._conn(hostport)
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                if r.will_close:
                    self._drop(hostport)
                return r.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(hostport)
                # A keep-alive connection the server closed: retry reads once.
                if idempotent and not fresh and attempt == 0:
                    continue
                raise e
            except Exception:
                self._drop(hostport)
                raise
        raise RuntimeError("unreachable")

    def json(self, hostport, path):
        status, data = self.request("GET", hostport, path, idempotent=True)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status}")
        return json.loads(data)


def blob(seed, length):
    return random.Random(seed).randbytes(length)


def blob_len(seed):
    return random.Random(seed ^ 0x5EED).randint(1024, 8192)


def multipart(data, name="soak.bin"):
    boundary = "kelpsoak" + os.urandom(8).hex()
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# ---------------------------------------------------------------- processes


def free_ports(n):
    """n distinct free ports (bound together, then released)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class Proc:
    """One kelp daemon: restartable with the same arguments; log appended."""

    def __init__(self, name, kelp, args, root):
        self.name = name
        self.kelp = kelp
        self.args = args
        self.log_path = os.path.join(root, "logs", f"{name}.log")
        self.ready = os.path.join(root, "logs", f"{name}.ready.json")
        self.p = None
        self.starts = 0

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def start(self):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.starts += 1
        with open(self.log_path, "ab") as out:
            out.write(
                f"=== soak: start #{self.starts} of {self.name} at {time.strftime('%H:%M:%S')} "
                f"({time.time():.3f}) ===\n".encode()
            )
            out.flush()
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
            self.p = subprocess.Popen(
                [self.kelp, *self.args, f"--ready-file={self.ready}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=env,
            )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.p.returncode}; see {self.log_path}")
            try:
                with open(self.ready) as f:
                    json.load(f)
                return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not get ready within 30 s; see {self.log_path}")

    def mark(self, text):
        with open(self.log_path, "ab") as out:
            out.write(f"=== soak: {text} at {time.strftime('%H:%M:%S')} ({time.time():.3f}) ===\n".encode())

    def kill9(self):
        if self.p and self.p.poll() is None:
            self.mark(f"kill -9 pid {self.p.pid}")
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def sigstop(self):
        self.mark(f"SIGSTOP pid {self.p.pid}")
        os.kill(self.p.pid, signal.SIGSTOP)

    def sigcont(self):
        os.kill(self.p.pid, signal.SIGCONT)
        self.mark(f"SIGCONT pid {self.p.pid}")

    def stop(self):
        """SIGCONT + SIGTERM, then SIGKILL after 10 s; by pid only."""
        if not self.p or self.p.poll() is not None:
            return
        try:
            os.kill(self.p.pid, signal.SIGCONT)
            os.kill(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()
        except ProcessLookupError:
            pass


def has_url(v, url):
    if isinstance(v, dict):
        return v.get("Url") == url or any(has_url(x, url) for x in v.values())
    if isinstance(v, list):
        return any(has_url(x, url) for x in v)
    return False


class Cluster:
    def __init__(self, kelp, root, servers, grace):
        self.root = root
        ports = free_ports(2 + 2 * servers)
        self.master_port, self.master_grpc = ports[0], ports[1]
        self.master_addr = f"127.0.0.1:{self.master_port}"
        os.makedirs(os.path.join(root, "logs"))
        self.master = Proc(
            "master",
            kelp,
            [
                "master",
                "-ip=127.0.0.1",
                f"-port={self.master_port}",
                f"-port.grpc={self.master_grpc}",
                f"-mdir={os.path.join(root, 'master')}",
                "-defaultReplication=001",
                "-pulseSeconds=1",
                f"-replicationGraceSeconds={grace}",
            ],
            root,
        )
        self.volumes = []
        self.urls = []
        for i in range(servers):
            port, grpc = ports[2 + 2 * i], ports[3 + 2 * i]
            d = os.path.join(root, f"v{i}")
            os.makedirs(d)
            self.urls.append(f"127.0.0.1:{port}")
            self.volumes.append(
                Proc(
                    f"v{i}",
                    kelp,
                    [
                        "volume",
                        "-ip=127.0.0.1",
                        f"-port={port}",
                        f"-port.grpc={grpc}",
                        f"-dir={d}",
                        f"-mserver=127.0.0.1:{self.master_port}.{self.master_grpc}",
                        "-max=30",
                        "-pulseSeconds=1",
                        "-antiEntropySeconds=2",
                    ],
                    root,
                )
            )
        self.http = Http(timeout=5)

    def name(self, url):
        return f"v{self.urls.index(url)}" if url in self.urls else url

    def listed(self, url):
        try:
            return has_url(self.http.json(self.master_addr, "/dir/status"), url)
        except Exception:
            return False

    def wait_listed(self, urls, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.listed(u) for u in urls):
                return True
            time.sleep(0.2)
        return False

    def start(self):
        self.master.start()
        for v in self.volumes:
            v.start()
        if not self.wait_listed(self.urls):
            raise RuntimeError("volume servers did not join the master")

    def all_procs(self):
        return [self.master, *self.volumes]

    def stop_all(self):
        for p in self.all_procs():
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.name}: {e}")


# ---------------------------------------------------------------- load


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []  # (fid, seed, len, t, url)
        self.deleted = []  # (fid, t, url)
        self.unacked = []  # (fid, seed, len, t, url, why)
        self.unacked_deletes = []  # (fid, seed, len, t, url, why)
        self.assign_failures = 0


def writer(cl, h, stop, t0, base_seed, w):
    client = Http(timeout=10)
    n = 0
    acked_here = 0
    while not stop.is_set():
        try:
            status, data = client.request("GET", cl.master_addr, "/dir/assign")
            v = json.loads(data) if status == 200 else {}
        except Exception:
            v = {}
        fid, url = v.get("fid"), v.get("url")
        if not fid or not url:
            with h.lock:
                h.assign_failures += 1
            time.sleep(0.1)
            continue
        n += 1
        seed = (base_seed << 32) | (w << 24) | n
        length = blob_len(seed)
        body, headers = multipart(blob(seed, length))
        try:
            status, resp = client.request("POST", url, f"/{fid}", body=body, headers=headers)
            why = f"{status} {resp[:200].decode(errors='replace').strip()}"
        except Exception as e:
            status, why = None, f"{type(e).__name__}: {e}"
        t = time.time() - t0
        if status != 201:
            with h.lock:
                h.unacked.append((fid, seed, length, t, url, why))
            continue
        acked_here += 1
        if acked_here % 10 != 0:
            with h.lock:
                h.acked.append((fid, seed, length, t, url))
            continue
        try:
            status, resp = client.request("DELETE", url, f"/{fid}")
            why = f"{status} {resp[:200].decode(errors='replace').strip()}"
        except Exception as e:
            status, why = None, f"{type(e).__name__}: {e}"
        t = time.time() - t0
        with h.lock:
            if status == 202:
                h.deleted.append((fid, t, url))
            else:
                h.unacked_deletes.append((fid, seed, length, t, url, why))


# ---------------------------------------------------------------- faults


def fault_loop(cl, stop, every, rng, t0, faults, timeline, notes):
    try:
        fault_loop_inner(cl, stop, every, rng, t0, faults, timeline, notes)
    except Exception as e:
        notes.append(f"fault loop stopped: {type(e).__name__}: {e}")
        log(f"fault loop stopped: {type(e).__name__}: {e}")


def fault_loop_inner(cl, stop, every, rng, t0, faults, timeline, notes):
    kinds = ["kill-volume", "stop-volume", "kill-master"]
    next_at = time.time() + every
    while not stop.wait(max(0.0, next_at - time.time())):
        kind = rng.choice(kinds)
        start = time.time() - t0
        if kind in ("kill-volume", "stop-volume"):
            i = rng.randrange(len(cl.volumes))
            v = cl.volumes[i]
            if kind == "kill-volume":
                down = rng.uniform(1, 10)
                pid = v.pid
                v.kill9()
                time.sleep(down)
                v.start()
                what = f"kill -9 v{i} (pid {pid}), restarted after {down:.1f} s as pid {v.pid}"
            else:
                hung = rng.uniform(1, 8)
                v.sigstop()
                time.sleep(hung)
                v.sigcont()
                what = f"SIGSTOP v{i} (pid {v.pid}) for {hung:.1f} s"
            if not cl.wait_listed([cl.urls[i]]):
                notes.append(f"t={start:.0f}s: v{i} not listed by the master 30 s after: {what}")
        else:
            down = rng.uniform(0.5, 3)
            pid = cl.master.pid
            cl.master.kill9()
            time.sleep(down)
            cl.master.start()
            what = f"kill -9 master (pid {pid}), restarted after {down:.1f} s as pid {cl.master.pid}"
            if not cl.wait_listed(cl.urls):
                notes.append(f"t={start:.0f}s: not every volume server rejoined the restarted master within 30 s")
        faults[kind] = faults.get(kind, 0) + 1
        line = f"t={start:7.1f}s  {what}"
        timeline.append(line)
        log(f"fault: {what}")
        next_at += every
        if next_at < time.time():
            next_at = time.time() + 1


# ---------------------------------------------------------------- checks


class Checker:
    def __init__(self, cl):
        self.cl = cl
        self.http = Http(timeout=10)
        self.lookups = {}
        self.lock = threading.Lock()

    def new_round(self):
        with self.lock:
            self.lookups = {}

    def locations(self, fid):
        vid = fid.split(",")[0]
        with self.lock:
            if vid in self.lookups:
                return self.lookups[vid]
        try:
            v = self.http.json(self.cl.master_addr, f"/dir/lookup?volumeId={vid}")
            locs = sorted(l["url"] for l in v.get("locations") or [])
        except Exception:
            locs = None
        with self.lock:
            self.lookups[vid] = locs
        return locs

    def local(self, url, fid):
        """The copy's own answer: (status, body) or (None, error)."""
        try:
            return self.http.request("GET", url, f"/{fid}?proxied=true", idempotent=True)
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    def where(self, locs):
        return "[" + ", ".join(self.cl.name(u) for u in (locs or [])) + "]"

    def check_acked(self, item):
        fid, seed, length, t, url = item
        locs = self.locations(fid)
        if locs is None:
            return f"acked {fid}: /dir/lookup failed"
        # (How many copies a volume has is checked per volume.)
        out = []
        want = None
        for u in locs:
            status, body = self.local(u, fid)
            if status == 200:
                if want is None:
                    want = blob(seed, length)
                if body != want:
                    out.append(f"{self.cl.name(u)}: wrong bytes ({len(body)} of {length})")
            else:
                out.append(f"{self.cl.name(u)}: {status if status is not None else body}")
        if out:
            return (
                f"acked {fid} (t={t:.1f}s via {self.cl.name(url)}, {length} B): " + "; ".join(out)
            )
        return None

    def check_deleted(self, item):
        fid, t, url = item
        locs = self.locations(fid)
        if locs is None:
            return f"deleted {fid}: /dir/lookup failed"
        out = []
        for u in locs:
            status, body = self.local(u, fid)
            if status != 404:
                out.append(f"{self.cl.name(u)}: {status if status is not None else body}")
        if out:
            return f"deleted {fid} (t={t:.1f}s via {self.cl.name(url)}): " + "; ".join(out)
        return None

    def check_unacked(self, item, delete):
        fid, seed, length, t, url, why = item
        locs = self.locations(fid) or []
        seen = []
        for u in locs:
            status, body = self.local(u, fid)
            if status == 200:
                seen.append("intact" if body == blob(seed, length) else f"WRONG BYTES ({len(body)} B)")
            elif status == 404:
                seen.append("absent")
            else:
                seen.append(str(status if status is not None else body))
        ok = all(s in ("intact", "absent") for s in seen) and len(set(seen)) <= 1
        if ok:
            return None
        kind = "unacked delete of" if delete else "unacked upload"
        detail = ", ".join(f"{self.cl.name(u)} {s}" for u, s in zip(locs, seen))
        return f"{kind} {fid} (t={t:.1f}s via {self.cl.name(url)}, answer: {why[:80]}): {detail}"

    def read_only(self):
        out = []
        for url in self.cl.urls:
            try:
                v = self.http.json(url, "/status")
            except Exception as e:
                out.append(f"{self.cl.name(url)}: no /status ({e})")
                continue
            for vol in v.get("Volumes") or []:
                if vol.get("ReadOnly") is True:
                    out.append(f"{self.cl.name(url)}: volume {vol.get('Id')} read-only")
        return out


def run_checks(pool, checker, acked, deleted):
    """Problems for the given acked and deleted items: (acked_bad, deleted_bad) lists of (item, msg)."""
    checker.new_round()
    ra = list(pool.map(checker.check_acked, acked, chunksize=64))
    rd = list(pool.map(checker.check_deleted, deleted, chunksize=64))
    return (
        [(i, m) for i, m in zip(acked, ra) if m],
        [(i, m) for i, m in zip(deleted, rd) if m],
    )


def placement_problems(checker, vids):
    """Cheap checks: volumes read-only anywhere, volumes without exactly 2 locations."""
    checker.new_round()
    out = checker.read_only()
    for vid in sorted(vids, key=int):
        locs = checker.locations(f"{vid},0")
        if locs is None:
            out.append(f"volume {vid}: /dir/lookup failed")
        elif len(locs) != 2:
            out.append(f"volume {vid}: copies on {checker.where(locs)}")
    return out


def converge(cl, h, timeout):
    """Waits for convergence.

    1. Cheap checks (read-only volumes, location counts of every volume in
       the history) until they pass.
    2. One full pass: every acked blob on every location, every acked
       delete on every location.
    3. What was wrong is re-checked every 3 s until it is right, then the
       cheap checks once more.
    Returns (seconds or None, problems, placement_seconds, pass_seconds, notes).
    """
    checker = Checker(cl)
    t_start = time.time()
    deadline = t_start + timeout
    vids = {f[0].split(",")[0] for f in h.acked} | {f[0].split(",")[0] for f in h.deleted}
    placement_s = pass_s = None
    converged = None
    problems = []
    with ThreadPoolExecutor(32) as pool:
        while True:
            cheap = placement_problems(checker, vids)
            if not cheap:
                placement_s = time.time() - t_start
                break
            log(f"converging ({time.time() - t_start:.0f} s): {len(cheap)} volume problems, e.g. {cheap[0]}")
            if time.time() >= deadline:
                break
            time.sleep(2)
        # The full pass runs even when the volumes did not settle.
        p0 = time.time()
        bad_a, bad_d = run_checks(pool, checker, list(h.acked), list(h.deleted))
        pass_s = time.time() - p0
        log(f"full pass over {len(h.acked)} acked and {len(h.deleted)} deleted: {pass_s:.0f} s, "
            f"{len(bad_a)} + {len(bad_d)} wrong")
        while True:
            cheap = placement_problems(checker, vids)
            if not bad_a and not bad_d and not cheap:
                converged = time.time() - t_start
                break
            wrong = [m for _, m in bad_a] + [m for _, m in bad_d] + cheap
            log(f"converging ({time.time() - t_start:.0f} s): {len(wrong)} wrong, e.g. {wrong[0]}")
            if time.time() >= deadline:
                problems = wrong
                break
            time.sleep(3)
            bad_a, bad_d = run_checks(pool, checker, [i for i, _ in bad_a], [i for i, _ in bad_d])
        checker.new_round()
        notes = [m for m in pool.map(lambda i: checker.check_unacked(i, False), h.unacked) if m]
        notes += [m for m in pool.map(lambda i: checker.check_unacked(i, True), h.unacked_deletes) if m]
    return converged, problems, placement_s, pass_s, notes


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10, help="load + fault time (default 10)")
    ap.add_argument("--fault-every", type=float, default=15, help="seconds between faults (default 15)")
    ap.add_argument("--servers", type=int, default=4, help="volume servers (default 4)")
    ap.add_argument("--grace", type=int, default=5, help="master -replicationGraceSeconds (default 5)")
    ap.add_argument("--threads", type=int, default=8, help="writer threads (default 8)")
    ap.add_argument("--converge-timeout", type=float, default=300, help="seconds (default 300)")
    ap.add_argument("--seed", type=int, default=None, help="fault choice seed (default: time)")
    ap.add_argument("--kelp", default=DEFAULT_KELP, help=f"kelp binary (default {DEFAULT_KELP})")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data, history)")
    args = ap.parse_args()

    if not os.access(args.kelp, os.X_OK):
        print(f"no kelp binary at {args.kelp}; build it with cargo build --release -p kelp", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="kelp-soak-")
    log(f"seed {seed}, temp dir {root}")
    cl = Cluster(args.kelp, root, args.servers, args.grace)
    h = History()
    faults, timeline, fault_notes = {}, [], []
    stop = threading.Event()
    threads = []
    rc = 2
    try:
        cl.start()
        log(f"master {cl.master_addr}, volume servers " + ", ".join(f"v{i}={u}" for i, u in enumerate(cl.urls)))
        t0 = time.time()
        for w in range(args.threads):
            t = threading.Thread(target=writer, args=(cl, h, stop, t0, seed, w), daemon=True)
            t.start()
            threads.append(t)
        ft = threading.Thread(
            target=fault_loop,
            args=(cl, stop, args.fault_every, rng, t0, faults, timeline, fault_notes),
            daemon=True,
        )
        ft.start()
        threads.append(ft)
        end = t0 + args.minutes * 60
        while time.time() < end:
            time.sleep(min(30, max(0, end - time.time())))
            with h.lock:
                log(
                    f"t={time.time() - t0:.0f}s acked {len(h.acked)}, deleted {len(h.deleted)}, "
                    f"unacked {len(h.unacked)}+{len(h.unacked_deletes)}, faults {sum(faults.values())}"
                )
        stop.set()
        ft.join()  # the fault in progress is undone first
        for t in threads:
            t.join()
        load_seconds = time.time() - t0
        log("load and faults stopped; every process is running; waiting for convergence")
        if not cl.wait_listed(cl.urls):
            fault_notes.append("not every volume server was listed by the master after the faults stopped")

        with open(os.path.join(root, "history.json"), "w") as f:
            json.dump(
                {
                    "acked": h.acked,
                    "deleted": h.deleted,
                    "unacked": h.unacked,
                    "unacked_deletes": h.unacked_deletes,
                    "servers": {f"v{i}": u for i, u in enumerate(cl.urls)},
                    "master": cl.master_addr,
                    "t0": t0,
                },
                f,
            )
        with open(os.path.join(root, "faults.log"), "w") as f:
            f.write("\n".join(timeline) + "\n")

        converged, problems, placement_s, pass_s, notes = converge(cl, h, args.converge_timeout)

        print()
        print("==== soak summary ====")
        print(f"seed {seed}; {args.servers} volume servers; grace {args.grace} s; "
              f"{args.threads} writers for {load_seconds:.0f} s; a fault every {args.fault_every:g} s")
        print(f"acknowledged blobs:   {len(h.acked)} (+{len(h.deleted)} deleted again)")
        print(f"acknowledged deletes: {len(h.deleted)}")
        print(f"unacknowledged:       {len(h.unacked)} uploads, {len(h.unacked_deletes)} deletes "
              f"({h.assign_failures} failed assigns, not counted)")
        print("faults injected:      " + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none")
              + f" ({sum(faults.values())} total)")
        print("convergence:          " + (f"{converged:.1f} s" if converged is not None
                                         else f"NOT converged within {args.converge_timeout:g} s"))
        print("                      (volumes settled: "
              + (f"after {placement_s:.1f} s" if placement_s is not None else "never")
              + f"; full read-back pass took {pass_s:.1f} s)")
        print(f"problems:             {len(problems)}")
        by_vol = {}
        for p in problems:
            m = p.split(" ", 2)
            vid = m[1].split(",")[0] if m[0] in ("acked", "deleted") else None
            if vid:
                by_vol[vid] = by_vol.get(vid, 0) + 1
        if by_vol:
            print("  by volume: " + ", ".join(f"{v}: {n}" for v, n in sorted(by_vol.items(), key=lambda x: int(x[0]))))
        for p in problems[:20]:
            print(f"  - {p}")
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more")
        if notes or fault_notes:
            print(f"notes (unacknowledged attempts / harness; do not fail the run): {len(notes) + len(fault_notes)}")
            for n in (fault_notes + notes)[:20]:
                print(f"  - {n}")
        print("fault timeline:")
        for line in timeline:
            print(f"  {line}")
        rc = 1 if problems or converged is None else 0
        print("RESULT: " + ("PASS" if rc == 0 else "FAIL"))
    except Exception as e:
        log(f"error: {type(e).__name__}: {e}")
        rc = 2
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        cl.stop_all()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
