#!/usr/bin/env bash
# ringress's one test command: the README and CI (.ci/run) both call it.
#
# 1. Installs the command-line clients the integration tests drive (curl, openssl,
#    h2load, wrk, the CA bundle) when they are missing, with apt-get on Debian. A
#    machine that already has them installs nothing and touches no package list.
# 2. cargo fmt --check
# 3. cargo clippy --all-targets --locked -- -D warnings
# 4. cargo test --locked
#
# Runs from any working directory; exits non-zero on the first failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

banner() {
    printf '\n==== %s ====\n' "$*"
}

die() {
    printf 'scripts/test.sh: %s\n' "$*" >&2
    exit 1
}

# Prefix for commands that need root: nothing when we are root, sudo when it is there.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "installing packages needs root (or sudo); missing: ${missing_pkgs[*]}"
    fi
}

banner "test tools (curl, openssl, h2load, wrk, CA bundle)"
# command the tests run -> Debian package that provides it
declare -A tool_pkg=(
    [curl]=curl
    [openssl]=openssl
    [h2load]=nghttp2-client
    [wrk]=wrk
)
missing_pkgs=()
for tool in curl openssl h2load wrk; do
    if command -v "$tool" >/dev/null 2>&1; then
        printf '  %-8s %s\n' "$tool" "$(command -v "$tool")"
    else
        printf '  %-8s missing (package %s)\n' "$tool" "${tool_pkg[$tool]}"
        missing_pkgs+=("${tool_pkg[$tool]}")
    fi
done
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    printf '  %-8s %s\n' "CA list" /etc/ssl/certs/ca-certificates.crt
else
    printf '  %-8s missing (package ca-certificates)\n' "CA list"
    missing_pkgs+=(ca-certificates)
fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing_pkgs[*]} and there is no apt-get to install them; install them by hand"
    printf 'installing: %s\n' "${missing_pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}"
fi

command -v cargo >/dev/null 2>&1 ||
    die "cargo is not on PATH; install the Rust toolchain named in rust-toolchain.toml"

banner "cargo fmt --check"
cargo fmt --all --check

banner "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

banner "cargo test --locked"
cargo test --locked

banner "all checks passed"
