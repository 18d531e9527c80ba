#!/usr/bin/env bash
# ringress's one test command: the README and CI (.ci/run) both call it.
#
# 1. Installs the command-line clients the integration tests drive (curl, openssl,
#    h2load, wrk, slowhttptest, testssl.sh, python3 with pip, the CA bundle) when they
#    are missing, with apt-get
#    on Debian, and the Python packages tlslite-ng (the record-level TLS client of
#    tests/tools/tls_peer.py), h2 (the frame-level HTTP/2 client of
#    tests/tools/h2_peer.py and of the RFC 9113 suite tests/tools/h2_conformance.py,
#    the HTTP/2 upstream of tests/tools/h2_upstream.py), grpcio
#    and grpcio-health-checking (the gRPC service and client of
#    tests/tools/grpc_service.py), websockets (the WebSocket server and client of
#    tests/tools/ws_peer.py) and kosoku (the Autobahn fuzzing cases it runs) with
#    pip. A machine that already has them installs
#    nothing and touches no package list.
# 2. cargo fmt --check (ringress and the fuzz crate)
# 3. cargo clippy --all-targets --locked -- -D warnings, also with the fuzzing feature,
#    and cargo doc of the whole crate (private items too) without a warning
# 4. cargo test --locked
# 5. the TLS integration tests once more with TLS 1.3 records left to rustls
#    (RINGRESS_TEST_TLS_RECORD_LAYER=rustls, i.e. `--tls-record-layer rustls`)
# 6. the deployment files, offline (scripts/check-deploy.sh; it installs
#    kubernetes-validate, dockerfile-parse, systemd-analyze and libseccomp when
#    missing): the Kubernetes manifests against Kubernetes' schemas and each other, the
#    ConfigMap's Istio manifests in `ringress check`, the Containerfile, and the systemd
#    unit (systemd-analyze verify and security, ringress under its system call filter)
# 7. a short smoke run of every fuzz target (scripts/fuzz.sh --time 10; it installs
#    cargo-fuzz when missing)
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

banner "test tools (curl, openssl, h2load, nghttp, wrk, slowhttptest, testssl, python3, CA bundle, tlslite-ng, h2, grpcio, websockets, kosoku)"
# command the tests run -> Debian package that provides it
declare -A tool_pkg=(
    [curl]=curl
    [openssl]=openssl
    [h2load]=nghttp2-client
    [nghttp]=nghttp2-client
    [wrk]=wrk
    [slowhttptest]=slowhttptest
    [testssl]=testssl.sh
    [python3]=python3
)
missing_pkgs=()
for tool in curl openssl h2load nghttp wrk slowhttptest testssl python3; do
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

# Python packages the tests import -> the pip package that provides each.
declare -A py_pkg=(
    [tlslite]=tlslite-ng
    [h2]=h2
    [grpc]=grpcio
    [grpc_health]=grpcio-health-checking
    [websockets]='websockets>=14'
    [kosoku]=kosoku==0.1.0
)
for module in tlslite h2 grpc grpc_health websockets kosoku; do
    if python3 -c "import $module" >/dev/null 2>&1; then
        printf '  %-8s %s\n' "$module" "$(python3 -c "import $module, os; print(os.path.dirname($module.__file__))")"
        continue
    fi
    printf '  %-8s missing (pip package %s)\n' "$module" "${py_pkg[$module]}"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "python3 has no pip to install ${py_pkg[$module]} with"
        missing_pkgs=(python3-pip)
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends python3-pip
    fi
    # Debian's own python3 refuses system-wide pip installs without this flag.
    python3 -m pip install -q "${py_pkg[$module]}" ||
        python3 -m pip install -q --break-system-packages "${py_pkg[$module]}" ||
        die "cannot install ${py_pkg[$module]} with pip"
done

command -v cargo >/dev/null 2>&1 ||
    die "cargo is not on PATH; install the Rust toolchain named in rust-toolchain.toml"

banner "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

banner "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features fuzzing -- -D warnings

banner "cargo doc --document-private-items (broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked

banner "cargo test --locked"
cargo test --locked

banner "TLS tests on rustls' record layer (--tls-record-layer rustls)"
RINGRESS_TEST_TLS_RECORD_LAYER=rustls \
    cargo test --locked --test proxy --test mutual --test hostile --test walkthrough --test tickets

banner "deployment files (scripts/check-deploy.sh)"
scripts/check-deploy.sh

banner "fuzz smoke (scripts/fuzz.sh --time 10)"
scripts/fuzz.sh --time 10

banner "all checks passed"
