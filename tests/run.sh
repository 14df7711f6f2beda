#!/usr/bin/env bash
# The project's test command (README, CI): prepares the bench host and the
# test guest, then runs every check CI requires: formatting, clippy, the
# generated man pages and completions, mandoc lint, and all tests against
# the real libvirt daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
step() { printf '\n== %s\n' "$*" >&2; }

step "bench host (libvirt 11, QEMU 10, daemons)"
as_root bash tests/bench/setup-host.sh
step "test guest"
as_root bash tests/guest/build.sh
step "object store (Garage, built once into /var/cache/hv-test)"
as_root bash tests/bench/garage.sh install
as_root bash tests/bench/sweep.sh
trap 'as_root bash tests/bench/sweep.sh' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --features bench --quiet -- -D warnings
step "generated man pages and completions are current"
cargo xtask gen --check
mandoc -T lint man/*.1

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --features bench --no-fail-fast
else
    cargo test --workspace --features bench --no-fail-fast
fi

step "Debian package and cargo xtask install (tests/bench/deb.sh)"
bash tests/bench/deb.sh
