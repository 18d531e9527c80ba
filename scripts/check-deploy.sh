#!/usr/bin/env bash
# Checks the deployment files offline; scripts/test.sh runs it, and it runs alone.
#
# 1. Installs what it needs when it is missing: python3 with pip, the Python packages
#    kubernetes-validate (Kubernetes' JSON schemas, bundled) and dockerfile-parse,
#    systemd-analyze, openssl and libseccomp (apt-get / pip, as scripts/test.sh does).
# 2. deploy/kubernetes/: every manifest kustomization.yaml lists, validated with
#    `kubernetes-validate --strict` (an unknown field fails) against Kubernetes 1.30.0,
#    the oldest the manifests support (preStop `sleep`), and 1.33.0; then what no
#    schema sees (scripts/check_deploy.py manifests): every file listed, the mounts
#    behind --config, --secrets-dir and --session-ticket-keys, no subPath, probe and
#    --health agree, grace period > preStop + --drain-timeout, selectors, ports,
#    security context, requests = limits and --shards.
# 3. The ConfigMap's Istio manifests load in `ringress check` (certificates made here,
#    cluster DNS names read as localhost).
# 4. Containerfile, read with dockerfile-parse (no container engine needed): two
#    stages, Rust as rust-toolchain.toml pins it, cargo build --release --locked, a
#    distroless runtime, a non-root USER, ENTRYPOINT ringress, and the COPY --from
#    path is the build's output.
# 5. deploy/systemd/ringress.service: `systemd-analyze verify` on a copy whose
#    ExecStart names the built binary (any message fails), and `systemd-analyze
#    security --offline=true`, whose exposure score must not exceed MAX_EXPOSURE.
# 6. ringress under that unit's system call filter and MemoryDenyWriteExecute
#    (applied with libseccomp): `ringress demo` answers over TLS, and a binary upgrade
#    (SIGUSR2, --upgrade-socket) completes under it.
# 7. deploy/kubernetes/seccomp/: the installer DaemonSet validated like the rest, the
#    profile it installs is the one the Deployment names, `ringress demo` answers under
#    that profile (applied with libseccomp), and under it without the io_uring calls
#    ringress exits at start saying seccomp refused io_uring.
#
# The ringress binary: $RINGRESS_BIN, else the newest target/{debug,release}/ringress
# (under $CARGO_TARGET_DIR if set), else `cargo build --locked` makes one.
# Runs from any working directory; exits non-zero on the first failing phase.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# Highest accepted `systemd-analyze security` exposure (0 = fully sandboxed, 10 = none).
MAX_EXPOSURE=2.5
# Kubernetes versions whose schemas the manifests must pass.
KUBERNETES_VERSIONS=(1.30.0 1.33.0)

banner() {
    printf '\n==== %s ====\n' "$*"
}

die() {
    printf 'scripts/check-deploy.sh: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "installing packages needs root (or sudo): $*"
    fi
}

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

banner "deploy check tools (python3, pip, kubernetes-validate, dockerfile-parse, systemd-analyze, openssl, libseccomp)"
# command -> Debian package that provides it
declare -A tool_pkg=(
    [python3]=python3
    [systemd-analyze]=systemd
    [openssl]=openssl
    [curl]=curl
)
missing_pkgs=()
for tool in python3 systemd-analyze openssl curl; do
    if command -v "$tool" >/dev/null 2>&1; then
        printf '  %-20s %s\n' "$tool" "$(command -v "$tool")"
    else
        printf '  %-20s missing (package %s)\n' "$tool" "${tool_pkg[$tool]}"
        missing_pkgs+=("${tool_pkg[$tool]}")
    fi
done
if ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2 '; then
    printf '  %-20s %s\n' libseccomp "$(ldconfig -p | awk '/libseccomp\.so\.2 /{print $NF; exit}')"
else
    printf '  %-20s missing (package libseccomp2)\n' libseccomp
    missing_pkgs+=(libseccomp2)
fi
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing_pkgs[*]} and there is no apt-get to install them; install them by hand"
    printf 'installing: %s\n' "${missing_pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}"
fi

# Python modules -> the pip package that provides each.
declare -A py_pkg=(
    [kubernetes_validate]=kubernetes-validate
    [dockerfile_parse]=dockerfile-parse
    [yaml]=pyyaml
)
for module in kubernetes_validate dockerfile_parse yaml; do
    if python3 -c "import $module" >/dev/null 2>&1; then
        printf '  %-20s %s\n' "$module" "$(python3 -c "import $module, os; print(os.path.dirname($module.__file__))")"
        continue
    fi
    printf '  %-20s missing (pip package %s)\n' "$module" "${py_pkg[$module]}"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "python3 has no pip to install ${py_pkg[$module]} with"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends python3-pip
    fi
    # Debian's own python3 refuses system-wide pip installs without this flag.
    python3 -m pip install -q "${py_pkg[$module]}" ||
        python3 -m pip install -q --break-system-packages "${py_pkg[$module]}" ||
        die "cannot install ${py_pkg[$module]} with pip"
done
# Run as `python3 -m kubernetes_validate`: pip may put its console script off PATH.
kv_dir="$(python3 -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')"
for version in "${KUBERNETES_VERSIONS[@]}"; do
    [ -d "$kv_dir/kubernetes-json-schema/v$version-local-strict" ] ||
        die "kubernetes-validate $(python3 -m pip show kubernetes-validate 2>/dev/null | awk '/^Version/{print $2}') has no schemas for Kubernetes $version; upgrade it (pip install -U kubernetes-validate)"
done

ringress_bin="${RINGRESS_BIN:-}"
if [ -z "$ringress_bin" ]; then
    target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
    ringress_bin="$(ls -t "$target_dir/debug/ringress" "$target_dir/release/ringress" 2>/dev/null | head -n 1 || true)"
fi
if [ -z "$ringress_bin" ]; then
    command -v cargo >/dev/null 2>&1 || die "no ringress binary: set RINGRESS_BIN or install the Rust toolchain"
    banner "cargo build --locked --bin ringress (no binary to check with)"
    cargo build --locked --bin ringress
    ringress_bin="${CARGO_TARGET_DIR:-$repo_root/target}/debug/ringress"
fi
ringress_bin="$(realpath "$ringress_bin")"
printf '  %-20s %s\n' ringress "$ringress_bin"

manifests_dir=deploy/kubernetes
mapfile -t manifests < <(python3 -c '
import sys, yaml
print("\n".join(yaml.safe_load(open(sys.argv[1]))["resources"]))' "$manifests_dir/kustomization.yaml")
[ "${#manifests[@]}" -gt 0 ] || die "$manifests_dir/kustomization.yaml lists no resources"

for version in "${KUBERNETES_VERSIONS[@]}"; do
    banner "Kubernetes manifests against the $version schemas (kubernetes-validate --strict)"
    failed=0
    for manifest in "${manifests[@]}"; do
        if ! python3 -m kubernetes_validate -k "$version" --strict "$manifests_dir/$manifest"; then
            failed=1
        fi
    done
    [ "$failed" -eq 0 ] || die "a manifest in $manifests_dir does not validate against Kubernetes $version"
done

banner "Kubernetes manifests agree with each other (scripts/check_deploy.py manifests)"
python3 scripts/check_deploy.py manifests "$manifests_dir" ||
    die "$manifests_dir: the manifests do not fit together"

installer_dir="$manifests_dir/seccomp"
mapfile -t installer < <(python3 -c '
import sys, yaml
print("\n".join(yaml.safe_load(open(sys.argv[1]))["resources"]))' "$installer_dir/kustomization.yaml")
for version in "${KUBERNETES_VERSIONS[@]}"; do
    banner "seccomp profile installer against the $version schemas (kubernetes-validate --strict)"
    for manifest in "${installer[@]}"; do
        python3 -m kubernetes_validate -k "$version" --strict "$installer_dir/$manifest" ||
            die "$installer_dir/$manifest does not validate against Kubernetes $version"
    done
done
banner "the pods' seccomp profile is the one the installer writes (scripts/check_deploy.py seccomp-installer)"
python3 scripts/check_deploy.py seccomp-installer "$manifests_dir" ||
    die "$installer_dir: the profile and its installer do not fit the Deployment"

banner "the ConfigMap's Istio manifests (ringress check)"
credentials="$(python3 scripts/check_deploy.py istio-config "$manifests_dir" "$work/istio.yaml")"
if [ -n "$credentials" ]; then
    # One certificate for every host of the walkthrough; each credential gets it.
    scripts/gen-certs.sh "$work/certs" httpbin.example.com >/dev/null
    for name in $credentials; do
        mkdir -p "$work/secrets/$name"
        cp "$work/certs/httpbin.example.com.crt" "$work/secrets/$name/tls.crt"
        cp "$work/certs/httpbin.example.com.key" "$work/secrets/$name/tls.key"
    done
fi
mkdir -p "$work/secrets"
"$ringress_bin" check --config "$work/istio.yaml" --secrets-dir "$work/secrets" ||
    die "$manifests_dir/configmap.yaml: ringress check refuses its istio.yaml"

banner "Containerfile (dockerfile-parse)"
python3 scripts/check_deploy.py containerfile Containerfile || die "Containerfile: see above"

unit=deploy/systemd/ringress.service
banner "systemd unit: systemd-analyze verify $unit"
grep -q '^ExecStart=/usr/local/bin/ringress ' "$unit" || die "$unit: ExecStart does not start /usr/local/bin/ringress"
# verify wants the ExecStart binary to exist: a copy of the unit names the built one.
mkdir -p "$work/unit"
sed "s|^ExecStart=/usr/local/bin/ringress |ExecStart=$ringress_bin |" "$unit" >"$work/unit/ringress.service"
verify_out="$(systemd-analyze verify "$work/unit/ringress.service" 2>&1)" ||
    die "systemd-analyze verify failed: $verify_out"
[ -z "$verify_out" ] || die "systemd-analyze verify reports: $verify_out"
echo "  ok    no message"

banner "systemd unit: systemd-analyze security --offline=true (exposure at most $MAX_EXPOSURE)"
security_out="$(systemd-analyze security --offline=true "$work/unit/ringress.service" 2>&1)" || true
exposure="$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
[ -n "$exposure" ] || die "no exposure score in: $security_out"
printf '%s\n' "$security_out" | grep -v '^✓' | sed 's/  */ /g' | grep -v '^ *$' | sed 's/^/  /'
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }' ||
    die "$unit: exposure $exposure is above $MAX_EXPOSURE"
echo "  ok    exposure $exposure (at most $MAX_EXPOSURE)"

banner "systemd unit: ringress under its system call filter (libseccomp)"
# The allow list the unit's SystemCallFilter= lines make, expanded by systemd itself.
python3 - "$unit" >"$work/syscalls" <<'PY'
import subprocess, sys

def expand(name, seen=set()):
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                         capture_output=True, text=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            calls |= expand(word)
    return calls

allowed = set()
for line in open(sys.argv[1]):
    if line.startswith("SystemCallFilter="):
        value = line.split("=", 1)[1].strip()
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
print("\n".join(sorted(allowed)))
PY
printf '  %s system calls allowed, io_uring: %s\n' "$(wc -l <"$work/syscalls")" \
    "$(grep '^io_uring' "$work/syscalls" | tr '\n' ' ')"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits until curl's status for a URL is $1, at most 10 s.
await_status() {
    local want="$1" got
    shift
    for _ in $(seq 100); do
        got="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true)"
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    echo "  last status: $got (wanted $want)" >&2
    return 1
}
http_port="$(free_port)"
https_port="$(free_port)"
python3 scripts/check_deploy.py seccomp-exec "$work/syscalls" -- \
    "$ringress_bin" demo --dir "$work/demo" --http-port "$http_port" --https-port "$https_port" \
    --shards 2 --admin off >"$work/demo.log" 2>&1 &
pids+=($!)
if ! await_status 418 --resolve "httpbin.example.com:$https_port:127.0.0.1" \
    --cacert "$work/demo/ca-chain.pem" "https://httpbin.example.com:$https_port/status/418"; then
    cat "$work/demo.log" >&2
    die "ringress demo does not serve under the unit's system call filter"
fi
echo "  ok    ringress demo answers 418 over TLS (2 shards, io_uring) under the filter"

# A gateway of its own on other ports, proxying to the demo's upstream, upgraded in place.
gw_http="$(free_port)"
gw_https="$(free_port)"
sed -e "s/number: $http_port\$/number: $gw_http/" -e "s/number: $https_port\$/number: $gw_https/" \
    "$work/demo/gateway.yaml" >"$work/demo/upgrade.yaml"
python3 scripts/check_deploy.py seccomp-exec "$work/syscalls" -- \
    "$ringress_bin" run --config "$work/demo/upgrade.yaml" --upgrade-socket "$work/upgrade.sock" \
    --shards 1 --admin off --drain-timeout 2 >"$work/upgrade.log" 2>&1 &
old_pid=$!
pids+=("$old_pid")
https_url=(--resolve "httpbin.example.com:$gw_https:127.0.0.1" --cacert "$work/demo/ca-chain.pem"
    "https://httpbin.example.com:$gw_https/status/200")
if ! await_status 200 "${https_url[@]}"; then
    cat "$work/upgrade.log" >&2
    die "ringress run does not serve under the unit's system call filter"
fi
kill -USR2 "$old_pid"
for _ in $(seq 100); do
    kill -0 "$old_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$old_pid" 2>/dev/null || ! await_status 200 "${https_url[@]}"; then
    cat "$work/upgrade.log" >&2
    die "the binary upgrade (SIGUSR2) does not complete under the unit's system call filter"
fi
new_pid="$(pgrep -f -- "--config $work/demo/upgrade.yaml" | head -n 1 || true)"
[ -n "$new_pid" ] && pids+=("$new_pid")
echo "  ok    SIGUSR2: the new process ($new_pid) serves, the old one ($old_pid) drained and exited"

banner "Kubernetes: ringress under the pods' seccomp profile ($installer_dir/ringress.json, libseccomp)"
profile="$installer_dir/ringress.json"
http_port="$(free_port)"
https_port="$(free_port)"
python3 scripts/check_deploy.py seccomp-exec "$profile" -- \
    "$ringress_bin" demo --dir "$work/demo-k8s" --http-port "$http_port" --https-port "$https_port" \
    --shards 2 --admin off >"$work/demo-k8s.log" 2>&1 &
pids+=($!)
if ! await_status 418 --resolve "httpbin.example.com:$https_port:127.0.0.1" \
    --cacert "$work/demo-k8s/ca-chain.pem" "https://httpbin.example.com:$https_port/status/418"; then
    cat "$work/demo-k8s.log" >&2
    die "ringress demo does not serve under $profile"
fi
echo "  ok    ringress demo answers 418 over TLS (2 shards, io_uring) under the profile"

# The same profile without the io_uring calls, as a runtime's default is: ringress must
# refuse to start and say why, which is what a node without the profile would show.
python3 -c '
import json, sys
profile = json.load(open(sys.argv[1]))
for rule in profile["syscalls"]:
    rule["names"] = [n for n in rule["names"] if not n.startswith("io_uring")]
json.dump(profile, sys.stdout)' "$profile" >"$work/no-io-uring.json"
set +e
python3 scripts/check_deploy.py seccomp-exec "$work/no-io-uring.json" -- \
    "$ringress_bin" demo --dir "$work/demo-denied" --http-port "$(free_port)" --https-port "$(free_port)" \
    --shards 1 --admin off >"$work/denied.log" 2>&1 &
denied_pid=$!
pids+=("$denied_pid")
for _ in $(seq 100); do
    kill -0 "$denied_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$denied_pid" 2>/dev/null; then
    die "without io_uring in its seccomp profile ringress did not exit within 10 s"
fi
wait "$denied_pid"
denied_rc=$?
set -e
[ "$denied_rc" -ne 0 ] && grep -q 'io_uring_setup was denied (EPERM).*seccomp' "$work/denied.log" || {
    cat "$work/denied.log" >&2
    die "without io_uring in its seccomp profile ringress did not refuse to start naming seccomp (exit $denied_rc)"
}
echo "  ok    without the io_uring calls ringress exits $denied_rc: $(grep -o 'ringress needs io_uring[^(]*' "$work/denied.log" | head -n 1)"

banner "deployment files check out"
