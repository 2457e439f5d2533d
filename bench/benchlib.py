"""Helpers the benchmark scripts share: logging, ports, a group of
processes stopped together, and NBD/fio plumbing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_nbd(uri, deadline=60, env=None):
    start = time.time()
    while time.time() - start < deadline:
        if subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                          env=env).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{uri} never answered")


class Group:
    """Processes started for one measurement, stopped together."""

    def __init__(self, workdir):
        self.procs = []
        self.workdir = workdir

    def start(self, name, argv, cwd=None):
        out = open(self.workdir / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True, cwd=cwd))

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def fio(uri, args, seconds, size_mib, env=None):
    """One fio job; `seconds=None` runs through the size once. `env`: for
    NBD over TLS, a HOME whose `.pki/libnbd` holds the client's files
    (fio's nbd engine cannot pass `tls-certificates` in the URI)."""
    timing = ["--time_based", f"--runtime={seconds}"] if seconds else []
    out = subprocess.run(
        ["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", f"--size={size_mib}M",
         *timing, "--output-format=json", *args],
        capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr.strip()[:500]}")
    # The nbd engine prints "fio: connected to NBD server" before the JSON.
    return json.loads(out.stdout[out.stdout.index("{"):])["jobs"][0]
