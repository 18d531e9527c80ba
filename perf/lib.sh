# Shared by perf/compare.sh, perf/ab.sh, perf/instructions.sh and perf/heap.sh (sourced, not run):
# logging and option checks, tool installation, background processes that are stopped
# on exit, the benchmark's certificate (bench.example.com), its upstream nginx, the
# ringress config (and the JWT policy of the jwt workloads) and the wait for a
# gateway's first answer.
#
# The sourcing script sets repo_root (the checkout) and, before using the functions
# that need them: WORK and OUT_DIR (directories), LOAD_CPU (the upstream's CPU), nofile
# (nginx's descriptor limit), NGINX (its path), GW_PID (for wait_ready).
# Globals are set for, and by, the sourcing script:
# shellcheck shell=bash disable=SC2034,SC2154

SERVER_NAME="bench.example.com"
# The upstream's answers: SMALL_BODY and a newline on /, BIG_BYTES random bytes on /1m.
SMALL_BODY="hello"
BIG_BYTES=1048576
# How long a gateway may take to answer its first request.
READY_TIMEOUT_SECS=15
# Clock ticks per second of /proc/<pid>/stat's CPU times (per_request).
CLK_TCK="$(getconf CLK_TCK)"
GW_PID=""
GW_FAIL=""

die() {
    printf 'perf/%s: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

log() {
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

is_uint() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

# Checks a comma-separated list against the allowed words; prints it space-separated.
check_list() {
    local what="$1" given="$2" allowed="$3" item out=""
    IFS=',' read -ra items <<<"$given"
    [ "${#items[@]}" -gt 0 ] || die "--$what is empty; choose from: $allowed"
    for item in "${items[@]}"; do
        [[ " $allowed " == *" $item "* ]] || die "--$what: unknown '$item'; choose from: $allowed"
        out+="$item "
    done
    printf '%s' "${out% }"
}

# check_cpus: PROXY_CPU and LOAD_CPU (--proxy-cpu, --load-cpu) are CPUs of this
# machine; sets ncpu.
check_cpus() {
    ncpu="$(nproc)"
    check_range --proxy-cpu "$PROXY_CPU" 0 $((ncpu - 1))
    check_range --load-cpu "$LOAD_CPU" 0 $((ncpu - 1))
}

# opt_value "$@": the value after an option, or a clear error when there is none.
opt_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
    printf '%s' "$2"
}

# check_range OPTION VALUE MIN MAX
check_range() {
    if ! is_uint "$2" || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
        die "$1 must be a whole number in $3..$4, got '$2'"
    fi
}
# ---------------------------------------------------------------------------------
# Tools

find_bin() {
    local name="$1" dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "installing packages needs root or sudo: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and there is no apt-get to install it"
    # Installing nginx or haproxy must not start their system services (port 80...):
    # when no policy says otherwise, deny service starts for the time of the install.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
        MADE_POLICY_RC=1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" || rc=$?
    if [ "$made_policy" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        MADE_POLICY_RC=0
    fi
    return "$rc"
}

# ensure_tools TOOL...: installs the Debian packages of the tools that are missing
# (nginx, the upstream of every benchmark, always), then checks every one is there.
ensure_tools() {
    local need=() tool
    # tool -> package
    declare -A pkg=([wrk]=wrk [openssl]=openssl [curl]=curl [python3]=python3
        [h2load]=nghttp2-client [haproxy]=haproxy [taskset]=util-linux [pgrep]=procps
        [valgrind]=valgrind [callgrind_control]=valgrind)
    for tool in "$@"; do
        find_bin "$tool" >/dev/null || need+=("${pkg[$tool]:-$tool}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
        log "installing: ${need[*]}"
        apt_install "${need[@]}"
    fi
    if ! find_bin nginx >/dev/null; then
        log "installing nginx"
        apt_install nginx || apt_install nginx-light
    fi
    for tool in "$@" nginx; do
        find_bin "$tool" >/dev/null || die "$tool is still missing after installing packages"
    done
}

# ---------------------------------------------------------------------------------
# Processes: everything started with spawn is in STARTED_PIDS and stopped on exit.

STARTED_PIDS=()
WORK=""
MADE_POLICY_RC=0

stop_pid() {
    local pid="$1" i
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        forget_pid "$pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop in 5 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Drops a stopped pid from STARTED_PIDS, so a later reuse of the number is never signalled.
forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    STARTED_PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[$i]}"
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf "$WORK"
    fi
    # Interrupted during a package install: remove the service-start block it set up.
    if [ "$MADE_POLICY_RC" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    exit "$rc"
}

# Stops everything spawn started, and removes WORK, when the script ends or is stopped.
set_cleanup_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# make_dirs NAME: WORK, a new scratch directory (removed on exit), and OUT_DIR, the
# --out directory or a new one, both under ${TMPDIR:-/tmp} and named for NAME;
# OUT_DIR made absolute.
make_dirs() {
    local name="$1"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/ringress-$name-work.XXXXXX")"
    # nginx workers run as nobody when started as root and must reach the upstream's files.
    chmod 755 "$WORK"
    if [ -z "$OUT_DIR" ]; then
        OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ringress-$name-$(date +%Y%m%d-%H%M%S).XXXXXX")"
    fi
    mkdir -p "$OUT_DIR"
    OUT_DIR="$(cd "$OUT_DIR" && pwd)"
}

# spawn LOGFILE CMD... : starts CMD in the background, records its pid in SPAWNED.
SPAWNED=""
spawn() {
    local logfile="$1"
    shift
    "$@" >"$logfile" 2>&1 </dev/null &
    SPAWNED=$!
    STARTED_PIDS+=("$SPAWNED")
}

alive() {
    local pid="$1" state
    kill -0 "$pid" 2>/dev/null || return 1
    # A zombie still answers kill -0.
    state="$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo X)"
    [ "$state" != "Z" ] && [ "$state" != "X" ]
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# "user system": sums of utime and of stime (clock ticks) over the given pids; fields
# 14 and 15 of /proc/<pid>/stat, counted after the ")" that ends the command name.
cpu_ticks() {
    local pid user=0 sys=0 line rest
    for pid in "$@"; do
        line="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${line##*) }"
        read -ra f <<<"$rest"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    printf '%s %s\n' "$user" "$sys"
}

# per_request TICKS REQUESTS: clock ticks of CPU time as µs per request.
per_request() {
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'
}

# ---------------------------------------------------------------------------------
# The benchmark's certificate and upstream

# gen_certs: a root CA and an ECDSA P-256 leaf for SERVER_NAME under WORK/certs; sets
# CA, CERT, KEY, HAPROXY_PEM and CERT_DIR.
gen_certs() {
    local d="$WORK/certs"
    mkdir -p "$d"
    (
        cd "$d" || exit 1
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
        openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=ringress perf root CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$SERVER_NAME.key" 2>/dev/null
        openssl req -new -key "$SERVER_NAME.key" -subj "/CN=$SERVER_NAME" -out leaf.csr 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n' \
            "$SERVER_NAME" >leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -sha256 -extfile leaf.ext -out "$SERVER_NAME.crt" 2>/dev/null
        # HAProxy wants the certificate and its key in one file.
        cat "$SERVER_NAME.crt" "$SERVER_NAME.key" >haproxy.pem
        chmod 600 ./*.key haproxy.pem
    )
    CA="$d/ca.crt"
    CERT="$d/$SERVER_NAME.crt"
    KEY="$d/$SERVER_NAME.key"
    HAPROXY_PEM="$d/haproxy.pem"
    CERT_DIR="$d"
}

# Writes nginx's temp paths into its own directory, away from /var/lib/nginx.
nginx_common() {
    local dir="$1"
    mkdir -p "$dir/tmp"
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
EOF
}

nginx_temp_paths() {
    local dir="$1"
    cat <<EOF
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

# start_upstream: the plain-HTTP upstream nginx on LOAD_CPU ("hello\n" on /, 1 MiB on
# /1m), also over TLS on UPSTREAM_TLS_PORT; sets UPSTREAM_PORT and UPSTREAM_PID. Needs
# NGINX, nofile, WORK, OUT_DIR and gen_certs' CERT and KEY.
UPSTREAM_PORT=""
# The same responses over TLS (the certificate of gen_certs, TLS 1.3 with
# AES-128-GCM first): what compare.sh's passthrough workload reaches.
UPSTREAM_TLS_PORT=""
UPSTREAM_PID=""
start_upstream() {
    local dir="$WORK/upstream"
    mkdir -p "$dir/www"
    chmod 755 "$dir" "$dir/www"
    head -c "$BIG_BYTES" /dev/urandom >"$dir/www/1m"
    chmod 644 "$dir/www/1m"
    UPSTREAM_PORT="$(free_port)"
    UPSTREAM_TLS_PORT="$(free_port)"
    {
        nginx_common "$dir"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        listen 127.0.0.1:$UPSTREAM_TLS_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        location = /1m {
            root $dir/www;
            default_type application/octet-stream;
        }
        # The latency workload: the small response, with the request's scheduled send
        # time (X-Sched, from perf/wrk-rate.lua) copied back so wrk can match them.
        location = /lat {
            default_type text/plain;
            add_header X-Sched \$http_x_sched;
            return 200 "$SMALL_BODY\n";
        }
        location / {
            default_type text/plain;
            return 200 "$SMALL_BODY\n";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    spawn "$OUT_DIR/upstream.log" taskset -c "$LOAD_CPU" "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    UPSTREAM_PID="$SPAWNED"
    local i
    for i in $(seq 1 50); do
        if curl -fsS "http://127.0.0.1:$UPSTREAM_PORT/" 2>/dev/null | grep -qx "$SMALL_BODY"; then
            log "upstream nginx (pid $UPSTREAM_PID) on 127.0.0.1:$UPSTREAM_PORT, CPU $LOAD_CPU"
            return 0
        fi
        alive "$UPSTREAM_PID" || break
        sleep 0.1
    done
    cat "$dir/error.log" "$OUT_DIR/upstream.log" >&2 2>/dev/null || true
    die "the upstream nginx did not start (see above)"
}

# ---------------------------------------------------------------------------------
# ringress and the gateways' first answer

# ringress_binary PATH BUILD_LOG: PATH made absolute; target/release/ringress, the
# default, is built (cargo build --release) when missing. On failure prints why and
# returns 1.
ringress_binary() {
    local bin="$1" build_log="$2"
    if [ ! -x "$bin" ]; then
        if [ "$bin" != "target/release/ringress" ]; then
            printf -- '--ringress %s is not an executable file' "$bin"
            return 1
        fi
        log "building target/release/ringress (cargo build --release; log in $build_log)"
        if ! cargo build --release --locked >"$build_log" 2>&1; then
            printf 'cargo build --release failed: %s' "$(grep -m1 -E '^error' "$build_log" || tail -n1 "$build_log")"
            return 1
        fi
    fi
    printf '%s' "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

# spawn_h2load OUTFILE PORT STREAMS CONNS: h2load on the load CPU (H2LOAD, LOAD_CPU),
# CONNS connections over ALPN h2 to the gateway on PORT with STREAMS requests in
# flight on each, for DURATION seconds after a second of warm-up; its pid in SPAWNED.
spawn_h2load() {
    local out="$1" port="$2" streams="$3" conns="$4"
    spawn "$out" timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" "$H2LOAD" \
        -c "$conns" -m "$streams" -D "$DURATION" --warm-up-time=1 \
        --connect-to="127.0.0.1:$port" "$(gw_url "$port" /)"
}

# h2load_summary FILE DURATION_US: appends to FILE, h2load's output, the summary line
# of wrk-report.lua's format (requests that succeeded; failed, errored and timed-out
# ones as status_err; no latency). Appends none when h2load printed no totals, and
# says so when it did not negotiate h2.
h2load_summary() {
    local out="$1" duration_us="$2" line ok bad
    # requests: N total, N started, N done, N succeeded, 0 failed, 0 errored, 0 timeout
    line="$(grep -m1 '^requests:' "$out" || true)"
    [ -n "$line" ] || return 0
    if ! grep -q '^Application protocol: h2' "$out"; then
        printf 'h2load did not negotiate h2\n' >>"$out"
        return 0
    fi
    read -r ok bad < <(awk -F'[:,] *' '{
        for (i = 2; i <= NF; i++) { split($i, w, " "); v[w[2]] = w[1] }
        print v["succeeded"] + 0, v["failed"] + v["errored"] + v["timeout"] }' <<<"$line")
    printf 'RINGRESS_PERF requests=%s duration_us=%s bytes=0 connect_err=0 read_err=0 write_err=0 status_err=%s timeout_err=0 p50_us=0 p99_us=0\n' \
        "$ok" "$duration_us" "$bad" >>"$out"
}

# write_ringress_config DIR PORT: DIR/ringress.yaml, perf/ringress.yaml with the gateway
# on 127.0.0.1:PORT, the certificate of gen_certs and the upstream of start_upstream.
write_ringress_config() {
    local dir="$1" port="$2"
    sed -e "s#/tmp/ringress-perf/#$CERT_DIR/#g" \
        -e "s/number: 8443\$/number: $port/" \
        -e "s/number: 8080\$/number: $UPSTREAM_PORT/" \
        "$repo_root/perf/ringress.yaml" >"$dir/ringress.yaml"
}

gw_url() {
    printf 'https://%s:%s%s' "$SERVER_NAME" "$1" "$2"
}

# fetch_check PORT PATH EXPECTED_BYTES [HEADER]: one verified HTTPS request (with the
# request header HEADER, "Name: value", when given); prints why on failure.
fetch_check() {
    local port="$1" path="$2" want="$3" header=() out got
    [ -z "${4:-}" ] || header=(-H "$4")
    out="$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 "${header[@]}" \
        --resolve "$SERVER_NAME:$port:127.0.0.1" --cacert "$CA" "$(gw_url "$port" "$path")" 2>&1)" || {
        printf 'curl %s: %s' "$path" "$(printf '%s' "$out" | tail -n1)"
        return 1
    }
    got="${out##* }"
    if [ "${out%% *}" != 200 ] || [ "$got" != "$want" ]; then
        printf 'GET %s answered status %s with %s bytes, expected 200 with %s' "$path" "${out%% *}" "$got" "$want"
        return 1
    fi
}

# fetch_status PORT PATH [HEADER]: the status code of one verified HTTPS request, or
# "000" when none came.
fetch_status() {
    local port="$1" path="$2" header=()
    [ -z "${3:-}" ] || header=(-H "$3")
    curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "${header[@]}" \
        --resolve "$SERVER_NAME:$port:127.0.0.1" --cacert "$CA" "$(gw_url "$port" "$path")" 2>/dev/null ||
        true
}

# wait_ready NAME DIR PORT [HEADER]: bounded wait for the gateway's first good answer
# (to a request with HEADER, when given: a gateway that wants a token).
wait_ready() {
    local name="$1" dir="$2" port="$3" header="${4:-}" i why="" st
    for i in $(seq 1 $((READY_TIMEOUT_SECS * 10))); do
        if ! alive "$GW_PID"; then
            st=0
            wait "$GW_PID" 2>/dev/null || st=$?
            why="$(cat "$dir"/*.log 2>/dev/null | grep -v '^$' | tail -n 3 | tr '\n' ' ' || true)"
            GW_FAIL="$name exited with status $st before serving: ${why:-it printed nothing}"
            return 1
        fi
        if why="$(fetch_check "$port" / $((${#SMALL_BODY} + 1)) "$header")"; then
            return 0
        fi
        sleep 0.1
    done
    GW_FAIL="$name did not answer $(gw_url "$port" /) within ${READY_TIMEOUT_SECS} s ($why)"
    return 1
}

# ---------------------------------------------------------------------------------
# The jwt workloads: every request carries a token the gateway must verify

# Istio's sample token (issuer testing@secure.istio.io, RS256) and its key set.
JWT_TOKEN_FILE="src/auth/testdata/demo.jwt"
JWT_JWKS_FILE="src/auth/testdata/jwks.json"

# prepare_jwt: the token and key set (JWT_TOKEN, JWT_HEADER, JWT_JWKS); stops the
# benchmark when the token has expired or expires within a day.
JWT_TOKEN="" JWT_HEADER="" JWT_JWKS=""
prepare_jwt() {
    local exp now
    JWT_TOKEN="$(tr -d ' \n' <"$repo_root/$JWT_TOKEN_FILE")"
    JWT_JWKS="$(tr -d '\n' <"$repo_root/$JWT_JWKS_FILE")"
    JWT_HEADER="Authorization: Bearer $JWT_TOKEN"
    exp="$(python3 -c '
import base64, json, sys
payload = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp", 0))' "$JWT_TOKEN")" ||
        die "$JWT_TOKEN_FILE is not a readable JWT"
    now="$(date +%s)"
    [ "$exp" -gt $((now + 86400)) ] ||
        die "$JWT_TOKEN_FILE expires at $(date -u -d "@$exp" '+%Y-%m-%d %H:%M UTC'): the jwt workload needs a token valid for the whole run"
    log "jwt: token $JWT_TOKEN_FILE (RS256, issuer testing@secure.istio.io, exp $(date -u -d "@$exp" +%Y-%m-%d)), ${#JWT_TOKEN} bytes"
}

# add_jwt_policy FILE: appends perf/ringress-jwt.yaml, with the key set of prepare_jwt,
# to the ringress config FILE: then every request needs the token.
add_jwt_policy() {
    local manifests
    manifests="$(<"$repo_root/perf/ringress-jwt.yaml")"
    printf -- '---\n%s\n' "${manifests//@JWKS@/"$JWT_JWKS"}" >>"$1"
}

# check_jwt_policy PORT: that the gateway on PORT enforces the policy: no token 403, a
# token with one signature character changed 401 (the token itself is checked by
# wait_ready). Prints why on failure.
check_jwt_policy() {
    local port="$1" sig="${JWT_TOKEN##*.}" c status tampered
    c="${sig:20:1}"
    [ "$c" = A ] && c=B || c=A
    status="$(fetch_status "$port" /)"
    tampered="$(fetch_status "$port" / "Authorization: Bearer ${JWT_TOKEN%.*}.${sig:0:20}$c${sig:21}")"
    if [ "$status" != 403 ] || [ "$tampered" != 401 ]; then
        printf 'the policy is not in force (without a token: %s, expected 403; a tampered token: %s, expected 401)' \
            "$status" "$tampered"
        return 1
    fi
}
