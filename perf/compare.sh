#!/usr/bin/env bash
# The benchmark of record: ringress against nginx and HAProxy as TLS-terminating
# reverse proxies, on this machine, with the same certificate, upstream and clients.
#
#   perf/compare.sh [--rounds N] [--duration S] [--only nginx,haproxy,ringress]
#                   [--workloads keepalive,jwt,close,full,1m,h2m10,h2m1,idle,h2idle,latency,passthrough,tcp]
#                   [--idle-conns N]
#                   [--latency-rate N] [--proxy-cpu C] [--load-cpu C]
#                   [--ringress PATH] [--out DIR]
#
# Layout: the gateway under test runs alone on CPU 0 (taskset); the load generator
# (wrk -t1, or perf/idle_conns.py) and ONE upstream nginx (plain HTTP, "hello\n" on /,
# a 1 MiB file on /1m) share CPU 1. Each gateway terminates TLS (ECDSA P-256 leaf for
# bench.example.com, signed by a root CA generated here) and proxies HTTP/1.1 to the
# upstream over keep-alive connections.
#
# The main figure is the gateway's CPU time per request: utime+stime of all its
# processes, read from /proc/<pid>/stat before and after each run, divided by the
# requests wrk completed; utime and stime are also kept apart (user_cost, sys_cost):
# on loopback the kernel half is much the same for every gateway, the user half is
# the gateway's own code. All three are set to negotiate TLS 1.3 with
# TLS_AES_128_GCM_SHA256 and X25519 (checked with openssl s_client, logged, printed
# under the table). The close workload's reconnects resume their TLS session (wrk
# keeps it), the full workload's new connections (h2load) never do. The latency
# workload offers every gateway the same fixed rate (70 % of nginx's keep-alive peak)
# and reports p50/p99 latency measured from each request's scheduled send time
# (perf/wrk-rate.lua). The jwt workload (ringress only: nginx OSS and HAProxy cannot
# verify JWTs) is keepalive again against a ringress whose config requires an RS256
# token (perf/ringress-jwt.yaml), with wrk sending Istio's sample token: its CPU per
# request beside the keepalive row is the cost of verification (cached per shard).
# The passthrough and tcp workloads measure each gateway as an L4 relay on ports of
# their own: passthrough is wrk's keep-alive HTTPS load on a port where the gateway
# reads the ClientHello's SNI and relays the bytes to the upstream nginx's TLS port
# (nginx: stream with ssl_preread; HAProxy: mode tcp with req_ssl_sni; ringress: a
# TLS PASSTHROUGH server and a tls route); tcp is wrk's keep-alive plain HTTP load
# relayed to the upstream's HTTP port (nginx stream, HAProxy mode tcp, a ringress TCP
# server and a tcp route). The cost is the gateway's CPU per request relayed.
# Rounds are interleaved (each round
# runs every gateway once, in a rotated order) and the table shows medians. See
# perf/README.md for the method.
#
# Everything listens on 127.0.0.1 only; every loop and wait is bounded; every process
# this script starts is stopped on exit. Results (raw TSV, logs, summary) are kept in
# the --out directory (default: a new directory under ${TMPDIR:-/tmp}).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# shellcheck source=perf/lib.sh
source "$repo_root/perf/lib.sh"

# ---------------------------------------------------------------------------------
# Parameters

ROUNDS=5
DURATION=10
ONLY="nginx,haproxy,ringress"
WORKLOADS="keepalive,jwt,close,full,1m,h2m10,h2m1,idle,h2idle,latency,passthrough,tcp"
IDLE_CONNS=3000
# Offered load of the latency workload in requests/s; empty: measured (see below).
LATENCY_RATE=""
LATENCY_RATE_WHY=""
PROXY_CPU=0
LOAD_CPU=1
RINGRESS_BIN="target/release/ringress"
OUT_DIR=""

# Connections wrk keeps open in each workload.
KEEPALIVE_CONNS=64
CLOSE_CONNS=16
# Fresh connections h2load opens at once in each batch of the full workload.
FULL_CONNS=32
# Bound on one h2load batch (FULL_CONNS handshakes; well under a second normally).
FULL_BATCH_TIMEOUT_SECS=30
BIG_CONNS=16
# Connections h2load opens in the HTTP/2 workloads (h2load -c).
H2_CONNS=16
LATENCY_CONNS=64
# The latency workload runs at this share of nginx's keep-alive peak, measured for
# LATENCY_PEAK_SECS before the rounds unless --latency-rate gives the rate.
LATENCY_SHARE_PCT=70
LATENCY_PEAK_SECS=3
# Start of each latency run (one TLS handshake per connection) left out of the figures.
LATENCY_SKIP_MS=500
# An achieved rate further than this below the target is flagged.
LATENCY_RATE_TOLERANCE_PCT=3
# Seconds of unrecorded keep-alive load after each gateway start.
WARMUP_SECS=1
# TLS 1.3 suites in the servers' order of preference, as ringress orders them: nginx and
# HAProxy are set to pick by this order too, so all three negotiate AES-128-GCM with
# wrk (whose OpenSSL offers AES-256-GCM first).
TLS13_SUITES="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

ALL_GATEWAYS="nginx haproxy ringress"
ALL_WORKLOADS="keepalive jwt close full 1m h2m10 h2m1 idle h2idle latency passthrough tcp"
# The gateway's ports for the passthrough and tcp workloads (run_gateway sets them).
PASS_PORT=""
TCP_PORT=""

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    cat <<EOF

Options:
  --rounds N        rounds; each runs every gateway once (default $ROUNDS)
  --duration S      seconds of wrk load per workload (default $DURATION)
  --only LIST       gateways, comma-separated: nginx,haproxy,ringress (default all)
  --workloads LIST  keepalive,jwt,close,full,1m,h2m10,h2m1,idle,h2idle,latency,passthrough,tcp
                    (default all)
                      keepalive  $KEEPALIVE_CONNS keep-alive connections, "hello\\n" response
                      jwt        ringress only (nginx OSS and HAProxy cannot verify JWTs):
                                 keepalive with a RequestAuthentication (RS256, inline JWKS)
                                 and a DENY policy for requests without a verified token;
                                 wrk sends Authorization: Bearer <$JWT_TOKEN_FILE>
                      close      $CLOSE_CONNS connections, Connection: close: a new TCP connection and a
                                 resumed TLS 1.3 handshake (session ticket, X25519) per request
                      full       batches of $FULL_CONNS new connections (h2load), one request each: a
                                 full TLS 1.3 handshake (X25519, ECDSA P-256 signature) per request
                      1m         $BIG_CONNS keep-alive connections, 1 MiB response
                      h2m10      HTTP/2 (ALPN h2, h2load): $H2_CONNS connections with 10 concurrent
                                 streams each, "hello\n" response
                      h2m1       the same with 1 stream at a time per connection
                      idle       RSS per idle keep-alive TLS connection (--idle-conns of them)
                      h2idle     the same for idle HTTP/2 connections (ALPN h2, one stream done)
                      latency    $LATENCY_CONNS keep-alive connections at a fixed request rate:
                                 p50/p99 latency from the scheduled send time
  --idle-conns N    connections held open in the idle workload (default $IDLE_CONNS)
  --latency-rate N  requests/s offered in the latency workload (default: ${LATENCY_SHARE_PCT} % of
                    nginx's keep-alive peak, measured for ${LATENCY_PEAK_SECS} s before the rounds)
  --proxy-cpu C     CPU the gateway runs on (default $PROXY_CPU)
  --load-cpu C      CPU of wrk and the upstream (default $LOAD_CPU)
  --ringress PATH   ringress binary (default $RINGRESS_BIN; built with
                    cargo build --release when it is the default and missing)
  --out DIR         where results and logs go (default: new dir under \${TMPDIR:-/tmp})
EOF
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS="$(opt_value "$@")"; shift 2 ;;
    --duration) DURATION="$(opt_value "$@")"; shift 2 ;;
    --only) ONLY="$(opt_value "$@")"; shift 2 ;;
    --workloads) WORKLOADS="$(opt_value "$@")"; shift 2 ;;
    --idle-conns) IDLE_CONNS="$(opt_value "$@")"; shift 2 ;;
    --latency-rate) LATENCY_RATE="$(opt_value "$@")"; shift 2 ;;
    --proxy-cpu) PROXY_CPU="$(opt_value "$@")"; shift 2 ;;
    --load-cpu) LOAD_CPU="$(opt_value "$@")"; shift 2 ;;
    --ringress) RINGRESS_BIN="$(opt_value "$@")"; shift 2 ;;
    --out) OUT_DIR="$(opt_value "$@")"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

check_range --rounds "$ROUNDS" 1 100
check_range --duration "$DURATION" 1 600
check_range --idle-conns "$IDLE_CONNS" 1 50000
if [ -n "$LATENCY_RATE" ]; then
    check_range --latency-rate "$LATENCY_RATE" 1 10000000
    LATENCY_RATE_WHY="given by --latency-rate"
fi
if [ "$IDLE_CONNS" -lt 1000 ]; then
    log "warning: --idle-conns $IDLE_CONNS: below 1000 the allocator's free memory hides part of each connection's cost"
fi
check_cpus
[ "$PROXY_CPU" != "$LOAD_CPU" ] ||
    log "warning: gateway and load generator share CPU $PROXY_CPU; CPU per request still holds, req/s does not"
GATEWAYS="$(check_list only "$ONLY" "$ALL_GATEWAYS")"
WORKLOAD_LIST="$(check_list workloads "$WORKLOADS" "$ALL_WORKLOADS")"

has_gateway() { [[ " $GATEWAYS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------
# Processes: everything started with spawn (perf/lib.sh) is stopped on exit.

set_cleanup_traps

# The pid and all its descendants (nginx master + workers), at most 3 levels deep.
proc_tree() {
    local level=("$1") next all=("$1") p c
    for _ in 1 2 3; do
        next=()
        for p in "${level[@]}"; do
            while read -r c; do
                [ -n "$c" ] && next+=("$c")
            done < <(pgrep -P "$p" 2>/dev/null || true)
        done
        [ "${#next[@]}" -gt 0 ] || break
        all+=("${next[@]}")
        level=("${next[@]}")
    done
    printf '%s\n' "${all[@]}"
}

# Sum of VmRSS (KiB) over the given pids.
rss_kib() {
    local pid total=0 v
    for pid in "$@"; do
        v="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
        total=$((total + ${v:-0}))
    done
    printf '%s\n' "$total"
}

# cpu_line CPU: "busy total" clock ticks of that CPU so far, from /proc/stat.
cpu_line() {
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit }' /proc/stat
}

# ---------------------------------------------------------------------------------
# Setup

# Tools (installed when missing, see ensure_tools in perf/lib.sh).
tools=(wrk openssl curl python3 h2load taskset pgrep)
has_gateway haproxy && tools+=(haproxy)
ensure_tools "${tools[@]}"
NGINX="$(find_bin nginx)"
HAPROXY="$(find_bin haproxy || true)"
WRK="$(find_bin wrk)"
H2LOAD="$(find_bin h2load)"

# Raise the descriptor limit for the idle workload (gateways and clients inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 256)) ]; then
    log "warning: open-file limit $(ulimit -n) is below --idle-conns $IDLE_CONNS + 256; the idle workload may fail"
fi

# HAProxy needs two descriptors per connection (client and server side) and refuses to
# start when maxconn does not fit the limit.
nofile="$(ulimit -n)"
[ "$nofile" = unlimited ] && nofile=1048576
HAPROXY_MAXCONN=$(((nofile - 256) / 2))
[ "$HAPROXY_MAXCONN" -le 20000 ] || HAPROXY_MAXCONN=20000

make_dirs perf
RESULTS="$OUT_DIR/results.tsv"
# Columns up to note are those of older results.tsv files (summarize.py reads both);
# user_cost and sys_cost split cost into the gateway's user and kernel CPU time.
printf 'round\tgateway\tworkload\tstatus\tcost\trate\terrors\tcount\tp50_us\tp99_us\tcpu_other_pct\tnote\tuser_cost\tsys_cost\n' >"$RESULTS"

machine_info() {
    printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'cpus: %s (nproc)\n' "$ncpu"
    printf 'cpu model: %s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'kernel: %s\n' "$(uname -r)"
    printf 'load average at start: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'nginx: %s\n' "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    if has_gateway haproxy; then
        printf 'haproxy: %s\n' "$("$HAPROXY" -v 2>&1 | head -n1)"
    fi
    printf 'wrk: %s\n' "$("$WRK" -v 2>&1 | head -n1 || true)"
    printf 'h2load: %s\n' "$("$H2LOAD" --version 2>&1 | head -n1 || true)"
    printf 'openssl: %s\n' "$(openssl version)"
    printf 'ringress: %s\n' "$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'command: perf/compare.sh --rounds %s --duration %s --only %s --workloads %s --idle-conns %s%s\n' \
        "$ROUNDS" "$DURATION" "${GATEWAYS// /,}" "${WORKLOAD_LIST// /,}" "$IDLE_CONNS" \
        "${LATENCY_RATE:+ --latency-rate $LATENCY_RATE}"
    printf 'pinning: gateway on CPU %s; wrk, idle client and upstream nginx on CPU %s\n' "$PROXY_CPU" "$LOAD_CPU"
}
machine_info | tee "$OUT_DIR/machine.txt" >&2
if awk -v n="$ncpu" '{ exit !($1 > n / 2) }' /proc/loadavg; then
    log "warning: load average $(cut -d' ' -f1 /proc/loadavg) on $ncpu CPUs: other programs are running; watch the 'other load' column"
fi

# ---------------------------------------------------------------------------------
# Gateways. start_<name> DIR PORT sets GW_PID, or sets GW_FAIL and returns 1.

RINGRESS_UNAVAILABLE=""

# nginx's stream module, for the passthrough and tcp workloads: built in (--with-stream),
# or loaded from the modules path (--with-stream=dynamic, Debian's libnginx-mod-stream).
# Sets NGINX_STREAM_LOAD (a load_module line, or empty) and NGINX_STREAM_MISSING (why
# nginx cannot run them, or empty).
NGINX_STREAM_LOAD="" NGINX_STREAM_MISSING=""
find_nginx_stream() {
    local flags dir
    flags="$("$NGINX" -V 2>&1 | tr ' ' '\n')"
    if grep -qx -- '--with-stream' <<<"$flags"; then
        return 0
    fi
    dir="$(sed -n 's/^--modules-path=//p' <<<"$flags")"
    if grep -qx -- '--with-stream=dynamic' <<<"$flags" && [ -f "$dir/ngx_stream_module.so" ]; then
        NGINX_STREAM_LOAD="load_module $dir/ngx_stream_module.so;"
        return 0
    fi
    NGINX_STREAM_MISSING="nginx's stream module is not installed (nginx -V: no --with-stream, or --with-stream=dynamic without $dir/ngx_stream_module.so; Debian: libnginx-mod-stream)"
}

# nginx_stream_block: the passthrough and tcp workloads' stream block, only when the
# module is there (the other workloads run anyway).
nginx_stream_block() {
    [ -z "$NGINX_STREAM_MISSING" ] || return 0
    cat <<EOF
stream {
    # The passthrough workload: the SNI read (ssl_preread), the bytes relayed.
    map \$ssl_preread_server_name \$l4_tls_upstream {
        $SERVER_NAME 127.0.0.1:$UPSTREAM_TLS_PORT;
        default 127.0.0.1:1;
    }
    server {
        listen 127.0.0.1:$PASS_PORT;
        ssl_preread on;
        proxy_pass \$l4_tls_upstream;
    }
    # The tcp workload.
    server {
        listen 127.0.0.1:$TCP_PORT;
        proxy_pass 127.0.0.1:$UPSTREAM_PORT;
    }
}
EOF
}

start_nginx() {
    local dir="$1" port="$2" admin
    {
        printf '%s\n' "$NGINX_STREAM_LOAD"
        nginx_common "$dir"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port ssl http2;
        server_name $SERVER_NAME;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        # The server's preference, AES-128-GCM first, like ringress and HAProxy here.
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites $TLS13_SUITES;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream large responses through memory buffers, never a temp file.
            proxy_max_temp_file_size 0;
        }
    }
}
$(nginx_stream_block)
EOF
    } >"$dir/nginx.conf"
    "$NGINX" -t -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/check.log" 2>&1 || {
        GW_FAIL="nginx -t rejected the generated config: $(tail -n 3 "$dir/check.log" | tr '\n' ' ')"
        return 1
    }
    spawn "$dir/stdout.log" taskset -c "$PROXY_CPU" "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    GW_PID="$SPAWNED"
}

start_haproxy() {
    local dir="$1" port="$2"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
    # HAProxy picks by its own order unless a bind says prefer-client-ciphers.
    ssl-default-bind-ciphersuites $TLS13_SUITES

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:$port ssl crt $HAPROXY_PEM alpn h2,http/1.1
    default_backend bench_upstream

backend bench_upstream
    http-reuse always
    server upstream 127.0.0.1:$UPSTREAM_PORT

# The passthrough workload: the SNI read from the ClientHello, the bytes relayed.
frontend pass
    mode tcp
    bind 127.0.0.1:$PASS_PORT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend tls_upstream if { req_ssl_sni -i $SERVER_NAME }

backend tls_upstream
    mode tcp
    server upstream 127.0.0.1:$UPSTREAM_TLS_PORT

# The tcp workload.
frontend tcp
    mode tcp
    bind 127.0.0.1:$TCP_PORT
    default_backend tcp_upstream

backend tcp_upstream
    mode tcp
    server upstream 127.0.0.1:$UPSTREAM_PORT
EOF
    "$HAPROXY" -c -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 || {
        GW_FAIL="haproxy -c rejected the generated config: $(tail -n 3 "$dir/check.log" | tr '\n' ' ')"
        return 1
    }
    spawn "$dir/stdout.log" taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$dir/haproxy.cfg"
    GW_PID="$SPAWNED"
}

prepare_ringress() {
    local bin
    if bin="$(ringress_binary "$RINGRESS_BIN" "$OUT_DIR/cargo-build.log")"; then
        RINGRESS_BIN="$bin"
    else
        RINGRESS_UNAVAILABLE="$bin"
    fi
}

# start_ringress DIR PORT [jwt]: with jwt, the config also requires the token
# (add_jwt_policy).
start_ringress() {
    local dir="$1" port="$2" policy="${3:-}"
    if [ -n "$RINGRESS_UNAVAILABLE" ]; then
        GW_FAIL="$RINGRESS_UNAVAILABLE"
        return 1
    fi
    admin="$(free_port)"
    write_ringress_config "$dir" "$port"
    [ "$policy" != jwt ] || add_jwt_policy "$dir/ringress.yaml"
    add_l4_servers "$dir/ringress.yaml"
    # No access log, as nginx and HAProxy run here (perf/ab.sh measures its cost).
    spawn "$dir/ringress.log" taskset -c "$PROXY_CPU" "$RINGRESS_BIN" run \
        --config "$dir/ringress.yaml" --shards 1 --admin "127.0.0.1:$admin" --access-log off
    GW_PID="$SPAWNED"
}

# add_l4_servers CONFIG: the passthrough and tcp workloads' servers and routes,
# appended to a ringress configuration.
add_l4_servers() {
    cat >>"$1" <<EOF
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-l4
spec:
  servers:
  - port: {number: $PASS_PORT, name: tls-bench, protocol: TLS}
    bind: 127.0.0.1
    hosts: [$SERVER_NAME]
    tls: {mode: PASSTHROUGH}
  - port: {number: $TCP_PORT, name: tcp-bench, protocol: TCP}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-l4
spec:
  hosts: [$SERVER_NAME]
  gateways: [bench-l4]
  tls:
  - match:
    - sniHosts: [$SERVER_NAME]
    route:
    - destination: {host: upstream-l4.bench.internal, port: {number: $UPSTREAM_TLS_PORT}}
  tcp:
  - route:
    - destination: {host: upstream-l4.bench.internal, port: {number: $UPSTREAM_PORT}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: bench-l4-upstream
spec:
  hosts: [upstream-l4.bench.internal]
  ports:
  - {number: $UPSTREAM_TLS_PORT, name: tls, protocol: TLS}
  - {number: $UPSTREAM_PORT, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
EOF
}

# ---------------------------------------------------------------------------------
# Workloads

record() {
    # round gateway workload status cost rate errors count p50 p99 cpu_other_pct note
    # [user_cost sys_cost]; the last two are "-" when not given.
    local IFS=$'\t' fields=("$@")
    while [ "${#fields[@]}" -lt 14 ]; do
        fields+=(-)
    done
    printf '%s\n' "${fields[*]}" >>"$RESULTS"
}

# run_load OUTFILE SCRIPT WRK_ARGS...: one wrk thread on the load CPU running the wrk
# script perf/SCRIPT, in the background so a signal stops the benchmark at once (the
# trap then stops wrk too).
run_load() {
    local out="$1" script="$2"
    shift 2
    spawn "$out" env WRK_CONNECT_ADDR=127.0.0.1 taskset -c "$LOAD_CPU" "$WRK" -t1 \
        -s "$repo_root/perf/$script" "$@"
    wait "$SPAWNED" || true
    forget_pid "$SPAWNED"
}

# run_full_load OUTFILE PORT: the full workload's client. wrk resumes its TLS session
# on every reconnect, and so does h2load within one client; but h2load's clients do not
# share sessions, so "h2load -c N -n N" opens N connections that each do a full
# handshake and send one request (with Connection: close, like the close workload). Batches of that run back to back on the load CPU for
# --duration seconds; the summary line has wrk-report.lua's format (no latency).
run_full_load() {
    local out="$1" port="$2" batch="$WORK/h2load-batch.txt" t0 now end line
    local requests=0 errors=0 batches=0 ok bad
    t0="$(date +%s%N)"
    end=$((t0 + DURATION * 1000000000))
    now="$t0"
    : >"$out"
    while [ "$now" -lt "$end" ]; do
        spawn "$batch" timeout "$FULL_BATCH_TIMEOUT_SECS" taskset -c "$LOAD_CPU" "$H2LOAD" --h1 \
            -c "$FULL_CONNS" -n "$FULL_CONNS" -H 'Connection: close' \
            --connect-to="127.0.0.1:$port" "$(gw_url "$port" /)"
        wait "$SPAWNED" || true
        forget_pid "$SPAWNED"
        now="$(date +%s%N)"
        batches=$((batches + 1))
        # requests: 32 total, 32 started, 32 done, 32 succeeded, 0 failed, 0 errored, 0 timeout
        line="$(grep -m1 '^requests:' "$batch" || true)"
        if [ -z "$line" ]; then
            printf 'batch %s printed no result: %s\n' "$batches" "$(tail -n 2 "$batch" | tr '\n' ' ')" >>"$out"
            errors=$((errors + FULL_CONNS))
            break
        fi
        read -r ok bad < <(awk -F'[:,] *' '{
            for (i = 2; i <= NF; i++) { split($i, w, " "); v[w[2]] = w[1] }
            print v["succeeded"] + 0, v["failed"] + v["errored"] + v["timeout"] }' <<<"$line")
        requests=$((requests + ok))
        errors=$((errors + bad))
        [ "$ok" -gt 0 ] || break
    done
    printf '%s batches of %s connections\n' "$batches" "$FULL_CONNS" >>"$out"
    printf 'RINGRESS_PERF requests=%s duration_us=%s bytes=0 connect_err=0 read_err=0 write_err=0 status_err=%s timeout_err=0 p50_us=0 p99_us=0\n' \
        "$requests" $(((now - t0) / 1000)) "$errors" >>"$out"
}

# run_h2_load OUTFILE PORT STREAMS: the HTTP/2 workloads' client: h2load on the load CPU,
# H2_CONNS connections over ALPN h2 with STREAMS requests in flight on each, for
# --duration seconds; the summary line has wrk-report.lua's format (no latency).
run_h2_load() {
    local out="$1" port="$2" streams="$3" t0 t1
    t0="$(date +%s%N)"
    spawn_h2load "$out.h2load" "$port" "$streams" "$H2_CONNS"
    wait "$SPAWNED" || true
    forget_pid "$SPAWNED"
    t1="$(date +%s%N)"
    cat "$out.h2load" >"$out"
    h2load_summary "$out" $(((t1 - t0) / 1000))
}

# run_wrk ROUND NAME PORT WORKLOAD
run_wrk() {
    local round="$1" name="$2" port="$3" wl="$4" conns path want extra=() after=() why auth=""
    local script=wrk-report.lua
    case "$wl" in
    keepalive) conns=$KEEPALIVE_CONNS path=/ want=$((${#SMALL_BODY} + 1)) ;;
    jwt)
        conns=$KEEPALIVE_CONNS path=/ want=$((${#SMALL_BODY} + 1)) auth="$JWT_HEADER"
        extra=(-H "$JWT_HEADER")
        ;;
    close) conns=$CLOSE_CONNS path=/ want=$((${#SMALL_BODY} + 1)) extra=(-H 'Connection: close') ;;
    full) conns=$FULL_CONNS path=/ want=$((${#SMALL_BODY} + 1)) ;;
    1m) conns=$BIG_CONNS path=/1m want=$BIG_BYTES ;;
    h2m10 | h2m1) conns=$H2_CONNS path=/ want=$((${#SMALL_BODY} + 1)) ;;
    latency)
        conns=$LATENCY_CONNS path=/lat want=$((${#SMALL_BODY} + 1)) script=wrk-rate.lua
        after=(-- "$LATENCY_RATE" "$LATENCY_SKIP_MS")
        ;;
    passthrough) conns=$KEEPALIVE_CONNS path=/ want=$((${#SMALL_BODY} + 1)) port=$PASS_PORT ;;
    tcp) conns=$KEEPALIVE_CONNS path=/ want=$((${#SMALL_BODY} + 1)) port=$TCP_PORT ;;
    esac
    if [[ "$wl" == passthrough || "$wl" == tcp ]] && [ "$name" = nginx ] && [ -n "$NGINX_STREAM_MISSING" ]; then
        record "$round" "$name" "$wl" failed - - - - - - - "$NGINX_STREAM_MISSING"
        log "  $wl: failed: $NGINX_STREAM_MISSING"
        return 0
    fi
    local url
    url="$(gw_url "$port" "$path")"
    [ "$wl" != tcp ] || url="http://$SERVER_NAME:$port$path"
    if [ "$wl" = tcp ]; then
        why="$(plain_check "$url" "$port" "$want")" || {
            record "$round" "$name" "$wl" failed - - - - - - - "$why"
            log "  $wl: failed: $why"
            return 0
        }
    elif ! why="$(fetch_check "$port" "$path" "$want" "$auth")"; then
        record "$round" "$name" "$wl" failed - - - - - - - "$why"
        log "  $wl: failed: $why"
        return 0
    fi
    local pids u0 s0 u1 s1 t0 t1 out line
    mapfile -t pids < <(proc_tree "$GW_PID")
    out="$OUT_DIR/wrk-r$round-$name-$wl.txt"
    read -r u0 s0 < <(cpu_ticks "${pids[@]}")
    read -r c0_busy c0_total < <(cpu_line "$PROXY_CPU")
    if [ "$wl" = full ]; then
        run_full_load "$out" "$port"
    elif [ "$wl" = h2m10 ]; then
        run_h2_load "$out" "$port" 10
    elif [ "$wl" = h2m1 ]; then
        run_h2_load "$out" "$port" 1
    else
        run_load "$out" "$script" -c "$conns" -d "${DURATION}s" --timeout 5s "${extra[@]}" \
            "$url" "${after[@]}"
    fi
    read -r u1 s1 < <(cpu_ticks "${pids[@]}")
    t0=$((u0 + s0))
    t1=$((u1 + s1))
    read -r c1_busy c1_total < <(cpu_line "$PROXY_CPU")
    if ! alive "$GW_PID"; then
        record "$round" "$name" "$wl" failed - - - - - - - "$name exited during $wl"
        log "  $wl: failed: $name exited during the run"
        return 1
    fi
    line="$(grep -m1 '^RINGRESS_PERF ' "$out" || true)"
    if [ -z "$line" ]; then
        why="wrk printed no summary: $(tail -n 2 "$out" | tr '\n' ' ')"
        record "$round" "$name" "$wl" failed - - - - - - - "$why"
        log "  $wl: failed: $why"
        return 0
    fi
    local requests duration_us errors p50 p99
    requests="$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")"
    duration_us="$(sed -E 's/.* duration_us=([0-9]+).*/\1/' <<<"$line")"
    p50="$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$line")"
    p99="$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$line")"
    errors="$(awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /_err=/) { split($i, kv, "="); n += kv[2] } print n }' <<<"$line")"
    if [ "$requests" -eq 0 ]; then
        record "$round" "$name" "$wl" failed - - "$errors" 0 - - - "no request completed"
        log "  $wl: failed: no request completed ($errors errors)"
        return 0
    fi
    if [ "$wl" = jwt ] && [ "$(field "$line" status_err)" -gt 0 ]; then
        # Refusals are cheap: a run with any would not measure verification.
        why="$(field "$line" status_err) of $requests answers had a status of 400 or more (401/403: the token was refused); not measured"
        record "$round" "$name" "$wl" failed - - "$errors" "$requests" - - - "$why"
        log "  $wl: failed: $why"
        JWT_REFUSED=$((JWT_REFUSED + 1))
        return 0
    fi
    local cost user_cost sys_cost rate other note=""
    # Share of the gateway's CPU that something else used meanwhile: the noise figure.
    other="$(awk -v b=$((c1_busy - c0_busy - (t1 - t0))) -v t=$((c1_total - c0_total)) \
        'BEGIN { if (t <= 0) print "-"; else { if (b < 0) b = 0; printf "%.0f", 100 * b / t } }')"
    cost="$(per_request $((t1 - t0)) "$requests")"
    user_cost="$(per_request $((u1 - u0)) "$requests")"
    sys_cost="$(per_request $((s1 - s0)) "$requests")"
    rate="$(awk -v n="$requests" -v us="$duration_us" 'BEGIN { printf "%.0f", n / (us / 1e6) }')"
    if [[ "$wl" == full || "$wl" == h2m* ]]; then
        # h2load measures no latency worth keeping here.
        p50="-" p99="-"
    fi
    if [ "$wl" = latency ]; then
        latency_fields "$line" || {
            record "$round" "$name" "$wl" failed - - "$errors" "$requests" - - "$other" "$LAT_WHY"
            log "  $wl: failed: $LAT_WHY"
            return 0
        }
        rate="$LAT_ACHIEVED"
        errors=$((errors + LAT_UNMATCHED))
        note="$LAT_NOTE"
    fi
    record "$round" "$name" "$wl" ok "$cost" "$rate" "$errors" "$requests" "$p50" "$p99" "$other" "$note" \
        "$user_cost" "$sys_cost"
    if [ "$wl" = latency ]; then
        log "  $(printf '%-9s' "$wl") p50 $p50 µs  p99 $p99 µs  p99.9 $LAT_P999 µs  $rate of $LATENCY_RATE req/s offered  CPU $cost µs/req (user $user_cost, kernel $sys_cost)  $errors errors  wrk's own p99 $LAT_WRK_P99 µs  other load on CPU $PROXY_CPU ${other}%${LAT_WARN:+  WARNING: $LAT_WARN}"
        return 0
    fi
    local unit=req lat="  p50 ${p50} µs  p99 ${p99} µs"
    [ "$wl" != 1m ] || unit=MiB
    [[ "$wl" != full && "$wl" != h2m* ]] || lat=""
    log "  $(printf '%-9s' "$wl") CPU $cost µs/$unit (user $user_cost, kernel $sys_cost)  $rate $unit/s  $requests requests  $errors errors$lat  other load on CPU $PROXY_CPU ${other}%"
}

# plain_check URL PORT EXPECTED_BYTES: one plain-HTTP request through the gateway's
# tcp port; prints why on failure.
plain_check() {
    local out
    out="$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 \
        --resolve "$SERVER_NAME:$2:127.0.0.1" "$1" 2>&1)" || {
        printf 'curl %s: %s' "$1" "$(printf '%s' "$out" | tail -n1)"
        return 1
    }
    if [ "$out" != "200 $3" ]; then
        printf 'GET %s answered %s (status, bytes), expected 200 %s' "$1" "$out" "$3"
        return 1
    fi
}

# latency_fields LINE: reads perf/wrk-rate.lua's extra figures into LAT_*; returns 1
# with LAT_WHY when nothing usable was recorded.
LAT_ACHIEVED="" LAT_UNMATCHED=0 LAT_NOTE="" LAT_WHY="" LAT_P999="" LAT_WRK_P99="" LAT_WARN=""
latency_fields() {
    local line="$1" recorded target max wrk_p50
    recorded="$(field "$line" recorded)"
    target="$(field "$line" target_rps)"
    LAT_ACHIEVED="$(field "$line" achieved_rps)"
    LAT_UNMATCHED="$(field "$line" unmatched)"
    LAT_P999="$(field "$line" p999_us)"
    max="$(field "$line" max_us)"
    wrk_p50="$(field "$line" wrk_p50_us)"
    LAT_WRK_P99="$(field "$line" wrk_p99_us)"
    LAT_WARN=""
    if [ "$recorded" -eq 0 ]; then
        if [ "$LAT_UNMATCHED" -gt 0 ]; then
            LAT_WHY="no response carried the X-Sched header back ($LAT_UNMATCHED without it): the gateway dropped it"
        else
            LAT_WHY="no answer arrived after the first ${LATENCY_SKIP_MS} ms of the run"
        fi
        return 1
    fi
    if [ "$LAT_UNMATCHED" -gt 0 ]; then
        LAT_WARN="$LAT_UNMATCHED responses without X-Sched (counted as errors)"
    fi
    if [ $((LAT_ACHIEVED * 100)) -lt $((target * (100 - LATENCY_RATE_TOLERANCE_PCT))) ]; then
        LAT_WARN="${LAT_WARN:+$LAT_WARN; }achieved $LAT_ACHIEVED req/s is more than ${LATENCY_RATE_TOLERANCE_PCT} % below the target $target: the gateway or wrk could not keep up ($(field "$line" late) requests were sent late, waiting for a free connection; $(field "$line" requests) were answered), so the latency measures a growing queue"
    fi
    LAT_NOTE="target_rps=$target p999_us=$LAT_P999 max_us=$max recorded=$recorded late=$(field "$line" late) wrk_p50_us=$wrk_p50 wrk_p99_us=$LAT_WRK_P99${LAT_WARN:+ warning: $LAT_WARN}"
}

# wait_line FILE PREFIX PID: the first line of FILE starting with PREFIX, waiting while
# PID lives; 300 s at most (the idle client needs a few seconds per thousand connections).
wait_line() {
    local file="$1" prefix="$2" pid="$3" i line=""
    for i in $(seq 1 3000); do
        line="$(grep -m1 "^$prefix " "$file" 2>/dev/null || true)"
        [ -n "$line" ] && break
        alive "$pid" || break
        sleep 0.1
    done
    printf '%s' "$line"
}

# field LINE NAME: the number after NAME= in LINE.
field() {
    sed -E "s/.*[ ]$2=([0-9]+).*/\1/" <<<"$1"
}

# run_idle ROUND NAME PORT [WORKLOAD]   (WORKLOAD idle, or h2idle for HTTP/2 connections)
# Opens half the connections, samples RSS, opens the other half, samples again. The
# figure is the second half's growth per connection: the first half soaks up memory
# the gateway's allocator already held from the warm-up, which would otherwise make
# the cost look smaller than it is.
run_idle() {
    local round="$1" name="$2" port="$3" wl="${4:-idle}" pids before mid after out cpid paused ready go why
    local first total second h2=()
    [ "$wl" = h2idle ] && h2=(--h2)
    if ! why="$(fetch_check "$port" / $((${#SMALL_BODY} + 1)))"; then
        record "$round" "$name" "$wl" failed - - - - - - - "$why"
        log "  $wl: failed: $why"
        return 0
    fi
    mapfile -t pids < <(proc_tree "$GW_PID")
    sleep 0.5
    before="$(rss_kib "${pids[@]}")"
    out="$OUT_DIR/$wl-r$round-$name.txt"
    go="$WORK/$wl-go-r$round-$name"
    spawn "$out" taskset -c "$LOAD_CPU" python3 "$repo_root/perf/idle_conns.py" \
        --port "$port" --server-name "$SERVER_NAME" --cafile "$CA" \
        --count "$IDLE_CONNS" --pause-at $((IDLE_CONNS / 2)) --go-file "$go" --hold 300 "${h2[@]}"
    cpid="$SPAWNED"
    paused=""
    if [ "$IDLE_CONNS" -ge 2 ]; then
        paused="$(wait_line "$out" PAUSED "$cpid")"
        sleep 1
        mid="$(rss_kib "${pids[@]}")"
    fi
    touch "$go"
    ready="$(wait_line "$out" READY "$cpid")"
    if [ -z "$ready" ]; then
        stop_pid "$cpid"
        why="idle client did not get ready: $(tail -n 2 "$out" | tr '\n' ' ')"
        record "$round" "$name" "$wl" failed - - - - - - - "$why"
        log "  $wl: failed: $why"
        return 0
    fi
    sleep 1
    mapfile -t pids < <(proc_tree "$GW_PID")
    after="$(rss_kib "${pids[@]}")"
    stop_pid "$cpid"
    total="$(field "$ready" opened)"
    first="$(field "${paused:-x opened=0}" opened)"
    second=$((total - first))
    if [ "$total" -eq 0 ]; then
        why="no idle connection opened: $(grep -m1 'first error' "$out" || true)"
        record "$round" "$name" "$wl" failed - - "$(field "$ready" failed)" 0 - - - "$why"
        log "  $wl: failed: $why"
        return 0
    fi
    local cost all
    all="$(awk -v a="$after" -v b="$before" -v n="$total" 'BEGIN { printf "%.2f", (a - b) / n }')"
    if [ -n "$paused" ] && [ "$first" -gt 0 ] && [ "$second" -gt 0 ]; then
        cost="$(awk -v a="$after" -v b="$mid" -v n="$second" 'BEGIN { printf "%.2f", (a - b) / n }')"
    else
        cost="$all"
        mid="-"
    fi
    record "$round" "$name" "$wl" ok "$cost" "$after" "$(field "$ready" failed)" "$total" - - - \
        "RSS KiB ${before} -> ${mid} -> ${after}; over all ${total}: ${all} KiB/conn"
    log "  $wl    RSS $before -> $mid -> $after KiB: $cost KiB/conn over the last $second of $total connections ($all over all; $(field "$ready" failed) failed)"
    # Let the gateway close them before the next workload.
    sleep 1
}

# tls_check NAME PORT: what a client with wrk's TLS library and defaults (OpenSSL's
# s_client) negotiates with the gateway: protocol, suite and key-exchange group; and
# whether a second connection that offers the first one's session ticket is resumed.
# Once per gateway, before its warm-up; the s_client output goes to the out dir, one
# line per gateway to tls.tsv (summarize.py prints them under the table).
close_request() {
    printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$SERVER_NAME"
}
declare -A TLS_CHECKED=()
TLS_TSV=""
TLS_FIRST=""
tls_check() {
    local name="$1" port="$2" first second proto suite group reused sess
    sess="$WORK/tls-$name.sess"
    rm -f "$sess"
    # A whole request, read to the end (-ign_eof): TLS 1.3 tickets arrive after the
    # handshake, so a client that hangs up at once may never see one.
    first="$(close_request | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
        -servername "$SERVER_NAME" -CAfile "$CA" -ign_eof -sess_out "$sess" 2>&1 || true)"
    second=""
    if [ -s "$sess" ]; then
        second="$(close_request | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
            -servername "$SERVER_NAME" -CAfile "$CA" -ign_eof -sess_in "$sess" 2>&1 || true)"
    fi
    printf '%s\n\n--- second connection, with the first one'"'"'s session ---\n%s\n' "$first" "$second" \
        >"$OUT_DIR/tls-$name.txt"
    proto="$(sed -nE 's/^(New|Reused), ([^,]+), Cipher is .*/\2/p' <<<"$first" | head -n1)"
    suite="$(sed -nE 's/^(New|Reused), [^,]+, Cipher is ([^ ]+).*/\2/p' <<<"$first" | head -n1)"
    group="$(sed -nE 's/^(Server Temp Key|Negotiated TLS1\.3 group): ([^ ,]+).*/\2/p' <<<"$first" | head -n1)"
    if [ -z "$second" ]; then
        reused="no-ticket"
    elif grep -q '^Reused,' <<<"$second"; then
        reused="resumed"
    else
        reused="not-resumed"
    fi
    TLS_CHECKED[$name]=1
    if [ -z "$TLS_TSV" ]; then
        TLS_TSV="$OUT_DIR/tls.tsv"
        printf 'gateway\tprotocol\tsuite\tgroup\tresumption\n' >"$TLS_TSV"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${proto:-?}" "${suite:-?}" "${group:-?}" "$reused" >>"$TLS_TSV"
    printf 'tls %s: %s %s %s, second connection %s\n' "$name" "${proto:-?}" "${suite:-?}" "${group:-?}" "$reused" \
        >>"$OUT_DIR/machine.txt"
    log "  TLS: ${proto:-?} ${suite:-?} ${group:-?}; a second connection with the first one's ticket: $reused"
    local got="${proto:-?} ${suite:-?} ${group:-?} $reused"
    if [ -z "$TLS_FIRST" ]; then
        TLS_FIRST="$name: $got"
    elif [ "$got" != "${TLS_FIRST#*: }" ]; then
        log "  WARNING: $name negotiated $got, but ${TLS_FIRST%%: *} ${TLS_FIRST#*: }: the gateways' CPU figures are not like-for-like"
    fi
}

# start_jwt_gateway ROUND DIR: replaces this round's ringress with one whose config
# requires the token (start_ringress ... jwt), on a port of its own, and sets JWT_PORT.
# Before any load it checks that the policy is in force: no token 403, a tampered one
# 401, the token 200; then warms it up with the token. On failure the jwt row is
# recorded as failed and it returns 1.
JWT_PORT=""
JWT_REFUSED=0
start_jwt_gateway() {
    local round="$1" dir="$2/jwt" port
    stop_pid "$GW_PID"
    mkdir -p "$dir"
    port="$(free_port)"
    GW_PID="" GW_FAIL=""
    log "  jwt: ringress requiring the token (RequestAuthentication + DENY notRequestPrincipals) on 127.0.0.1:$port"
    if start_ringress "$dir" "$port" jwt; then
        wait_ready ringress "$dir" "$port" "$JWT_HEADER" || true
    fi
    [ -n "$GW_FAIL" ] || GW_FAIL="$(check_jwt_policy "$port")" || true
    if [ -n "$GW_FAIL" ]; then
        record "$round" ringress jwt failed - - - - - - - "$GW_FAIL"
        log "  jwt: failed: $GW_FAIL"
        JWT_REFUSED=$((JWT_REFUSED + 1))
        return 1
    fi
    log "  jwt: without a token 403, a tampered token 401, the token 200"
    JWT_PORT="$port"
    run_load /dev/null wrk-report.lua -c "$KEEPALIVE_CONNS" -d "${WARMUP_SECS}s" -H "$JWT_HEADER" \
        "$(gw_url "$port" /)"
}

# run_gateway ROUND NAME
declare -A FAILED_AT_START=()
run_gateway() {
    local round="$1" name="$2" dir port wl
    dir="$WORK/r$round-$name"
    mkdir -p "$dir"
    port="$(free_port)"
    PASS_PORT="$(free_port)"
    TCP_PORT="$(free_port)"
    GW_PID="" GW_FAIL=""
    log "round $round/$ROUNDS: $name on 127.0.0.1:$port, CPU $PROXY_CPU"
    if [ -n "${FAILED_AT_START[$name]:-}" ]; then
        GW_FAIL="${FAILED_AT_START[$name]}"
    elif "start_$name" "$dir" "$port"; then
        wait_ready "$name" "$dir" "$port" || true
    fi
    if [ -n "$GW_FAIL" ]; then
        log "  $name failed: $GW_FAIL"
        FAILED_AT_START[$name]="$GW_FAIL"
        for wl in $WORKLOAD_LIST; do
            [ "$wl" != jwt ] || [ "$name" = ringress ] || continue
            record "$round" "$name" "$wl" failed - - - - - - - "$GW_FAIL"
        done
        [ -z "$GW_PID" ] || stop_pid "$GW_PID"
        cp "$dir"/*.log "$OUT_DIR/" 2>/dev/null || true
        return 0
    fi
    [ -n "${TLS_CHECKED[$name]:-}" ] || tls_check "$name" "$port"
    # Unrecorded warm-up: caches, lazy allocations, upstream keep-alive pool.
    run_load /dev/null wrk-report.lua -c "$KEEPALIVE_CONNS" -d "${WARMUP_SECS}s" "$(gw_url "$port" /)"
    # idle first, so earlier bursts have not left freed memory for it to reuse.
    local order=()
    [[ " $WORKLOAD_LIST " == *" idle "* ]] && order+=(idle)
    [[ " $WORKLOAD_LIST " == *" h2idle "* ]] && order+=(h2idle)
    for wl in $WORKLOAD_LIST; do
        [ "$wl" = idle ] || [ "$wl" = h2idle ] || [ "$wl" = jwt ] || order+=("$wl")
    done
    # jwt last: it runs on a gateway of its own, started with the policy.
    [[ " $WORKLOAD_LIST " == *" jwt "* ]] && [ "$name" = ringress ] && order+=(jwt)
    for wl in "${order[@]}"; do
        if [ "$wl" = idle ] || [ "$wl" = h2idle ]; then
            run_idle "$round" "$name" "$port" "$wl"
        elif [ "$wl" = jwt ]; then
            start_jwt_gateway "$round" "$dir" && run_wrk "$round" "$name" "$JWT_PORT" jwt || true
        elif ! run_wrk "$round" "$name" "$port" "$wl"; then
            break
        fi
    done
    [ -z "$GW_PID" ] || stop_pid "$GW_PID"
    mkdir -p "$OUT_DIR/logs"
    for f in "$dir"/*.log; do
        [ -e "$f" ] && cp "$f" "$OUT_DIR/logs/r$round-$name-$(basename "$f")"
    done
    # Only ringress has them (the jwt workload's gateway).
    for f in "$dir"/jwt/*.log; do
        [ ! -e "$f" ] || cp "$f" "$OUT_DIR/logs/r$round-$name-jwt-$(basename "$f")"
    done
}

# ---------------------------------------------------------------------------------
# Main

# The latency workload's offered rate: LATENCY_SHARE_PCT of nginx's keep-alive peak,
# measured once here so every gateway of every round gets the same rate.
measure_latency_rate() {
    local dir="$WORK/peak-nginx" port out line requests duration_us peak
    mkdir -p "$dir"
    port="$(free_port)"
    GW_PID="" GW_FAIL=""
    log "latency: measuring nginx's keep-alive peak (${LATENCY_PEAK_SECS} s, $KEEPALIVE_CONNS connections) for the offered rate"
    if start_nginx "$dir" "$port"; then
        wait_ready nginx "$dir" "$port" || true
    fi
    if [ -n "$GW_FAIL" ]; then
        [ -z "$GW_PID" ] || stop_pid "$GW_PID"
        die "cannot measure nginx's keep-alive peak for the latency workload ($GW_FAIL); pass --latency-rate N"
    fi
    out="$OUT_DIR/wrk-peak-nginx.txt"
    run_load /dev/null wrk-report.lua -c "$KEEPALIVE_CONNS" -d "${WARMUP_SECS}s" "$(gw_url "$port" /)"
    run_load "$out" wrk-report.lua -c "$KEEPALIVE_CONNS" -d "${LATENCY_PEAK_SECS}s" --timeout 5s "$(gw_url "$port" /)"
    stop_pid "$GW_PID"
    GW_PID=""
    line="$(grep -m1 '^RINGRESS_PERF ' "$out" || true)"
    [ -n "$line" ] || die "nginx's keep-alive peak: wrk printed no summary ($(tail -n 2 "$out" | tr '\n' ' ')); pass --latency-rate N"
    requests="$(field "$line" requests)"
    duration_us="$(field "$line" duration_us)"
    if [ "$requests" -eq 0 ] || [ "$duration_us" -eq 0 ]; then
        die "nginx's keep-alive peak: no request completed; pass --latency-rate N"
    fi
    peak=$((requests * 1000000 / duration_us))
    LATENCY_RATE=$((peak * LATENCY_SHARE_PCT / 100))
    [ "$LATENCY_RATE" -ge 1 ] || die "nginx's keep-alive peak of $peak req/s is too low for the latency workload; pass --latency-rate N"
    LATENCY_RATE_WHY="${LATENCY_SHARE_PCT} % of nginx's keep-alive peak of $peak req/s, measured for ${LATENCY_PEAK_SECS} s before the rounds"
}

gen_certs
has_gateway ringress && prepare_ringress
has_gateway nginx && find_nginx_stream
if [[ " $WORKLOAD_LIST " == *" jwt "* ]]; then
    [ "$GATEWAYS" = ringress ] || log "jwt: run by ringress only (nginx OSS and HAProxy cannot verify JWTs)"
    has_gateway ringress && prepare_jwt
fi
start_upstream
if [[ " $WORKLOAD_LIST " == *" latency "* ]]; then
    [ -n "$LATENCY_RATE" ] || measure_latency_rate
    log "latency: offering $LATENCY_RATE req/s to every gateway ($LATENCY_RATE_WHY)"
    printf 'latency workload: %s req/s offered (%s)\n' "$LATENCY_RATE" "$LATENCY_RATE_WHY" >>"$OUT_DIR/machine.txt"
fi

read -ra gw_array <<<"$GATEWAYS"
n="${#gw_array[@]}"
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order each round so no gateway always runs first or last.
    for k in $(seq 0 $((n - 1))); do
        run_gateway "$round" "${gw_array[$(((k + round - 1) % n))]}"
    done
done

log "results: $OUT_DIR"
python3 "$repo_root/perf/summarize.py" "$RESULTS" --gateways "${GATEWAYS// /,}" \
    --workloads "${WORKLOAD_LIST// /,}" ${LATENCY_RATE_WHY:+--latency-why "$LATENCY_RATE_WHY"} |
    tee "$OUT_DIR/summary.md"
# A jwt run that was refused measured nothing worth a row: the benchmark fails.
[ "$JWT_REFUSED" -eq 0 ] || die "jwt: $JWT_REFUSED run(s) were refused or found the policy not in force (see above); their rows are not measured"
