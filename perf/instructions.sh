#!/usr/bin/env bash
# ringress's user-space cost as instructions, counted by valgrind's callgrind: a figure
# that does not move with the machine's load, unlike the CPU times of perf/compare.sh.
#
#   perf/instructions.sh [--ringress BIN[,BIN2]] [--requests N] [--conns C] [--handshakes M]
#                        [--workloads keepalive,serial,full] [--repeat R] [--args "ARGS"] [--jwt]
#                        [--out DIR]
#
# ringress runs under callgrind (one shard, no admin endpoint, no file watching) on CPU
# 0, with the HTTPS server, certificate and upstream nginx of perf/compare.sh. h2load,
# on CPU 1, sends an exact number of requests:
#   keepalive  C keep-alive connections (16), N requests in all: Ir per request
#   serial     the same over one connection: one request at a time, so every request
#              takes the same path through ringress's event loop (the steadiest figure)
#   full       M connections at once, one request each with Connection: close, every
#              one a full TLS 1.3 handshake (h2load's clients share no session): Ir per
#              connection
# With --jwt, ringress's config also requires a JWT (perf/ringress-jwt.yaml, as
# perf/compare.sh's jwt workload) and h2load sends the sample RS256 token with every
# request: against a run without it, what a required token costs.
# Each figure comes from two runs, one with N and one with 3N requests (M and 3M
# connections): (Ir(3N) - Ir(N)) / 2N, so start-up, warm-up and the dump cancel out.
#
# ringress under valgrind does not act on SIGTERM while idle, so the counts are dumped
# with callgrind_control -d while a few bare TCP connections ("nudges") make ringress
# run, and the process is then killed. Valgrind's CPU has no AVX-512, VAES, VPCLMULQDQ,
# SHA or ADX extensions, so aws-lc takes other code paths than on this CPU: the figure
# tracks ringress's own code (parsing, routing, the runtime, rustls's state machine,
# copies, allocations) well, its cryptography less so; kernel work is not counted.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# shellcheck source=perf/lib.sh
source "$repo_root/perf/lib.sh"

RINGRESS_BINS="target/release/ringress"
REQUESTS=2000
HANDSHAKES=100
WORKLOADS="keepalive,serial,full"
REPEAT=1
# Keep-alive connections h2load opens in the keepalive workload.
KEEPALIVE_CONNS=16
PROXY_CPU=0
LOAD_CPU=1
OUT_DIR=""
# Extra `ringress run` arguments (no access log, as perf/compare.sh runs every gateway).
RUN_ARGS="--access-log off"
# 1: every request carries the sample token, which the config requires (--jwt).
JWT=0

# Bound on one h2load run under valgrind.
LOAD_TIMEOUT_SECS=600
# Bound on callgrind_control -d (the dump), nudges included.
DUMP_TIMEOUT_SECS=60
# Valgrind's start-up (reading ringress's debug information) is slow.
READY_TIMEOUT_SECS=120
ALL_WORKLOADS="keepalive serial full"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    cat <<EOF

Options:
  --ringress BIN[,BIN2]  ringress binaries; two are shown side by side with their ratio
                         (default $RINGRESS_BINS, built when missing)
  --requests N           keepalive and serial: runs of N and 3N requests (default $REQUESTS)
  --conns C              keepalive: connections h2load keeps open (default $KEEPALIVE_CONNS)
  --handshakes M         full: runs of M and 3M connections (default $HANDSHAKES)
  --workloads LIST       keepalive,serial,full (default $WORKLOADS)
  --repeat R             measure every figure R times; the table shows the median and
                         the range (default $REPEAT)
  --proxy-cpu C          CPU ringress runs on (default $PROXY_CPU)
  --load-cpu C           CPU of h2load and the upstream (default $LOAD_CPU)
  --args "ARGS"          extra \`ringress run\` arguments for every binary (default
                         "$RUN_ARGS"; a build older than the flag needs others, e.g.
                         --args "--log-level info")
  --jwt                  the config requires a JWT (perf/ringress-jwt.yaml); h2load sends
                         the sample RS256 token with every request
  --out DIR              results.tsv, summary.md, logs and callgrind files
                         (default: new dir under \${TMPDIR:-/tmp})
EOF
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --ringress) RINGRESS_BINS="$(opt_value "$@")"; shift 2 ;;
    --requests) REQUESTS="$(opt_value "$@")"; shift 2 ;;
    --conns) KEEPALIVE_CONNS="$(opt_value "$@")"; shift 2 ;;
    --handshakes) HANDSHAKES="$(opt_value "$@")"; shift 2 ;;
    --workloads) WORKLOADS="$(opt_value "$@")"; shift 2 ;;
    --repeat) REPEAT="$(opt_value "$@")"; shift 2 ;;
    --proxy-cpu) PROXY_CPU="$(opt_value "$@")"; shift 2 ;;
    --load-cpu) LOAD_CPU="$(opt_value "$@")"; shift 2 ;;
    --out) OUT_DIR="$(opt_value "$@")"; shift 2 ;;
    --args) RUN_ARGS="$(opt_value "$@")"; shift 2 ;;
    --jwt) JWT=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

check_range --requests "$REQUESTS" 100 1000000
check_range --conns "$KEEPALIVE_CONNS" 1 1000
check_range --handshakes "$HANDSHAKES" 10 2000
check_range --repeat "$REPEAT" 1 20
check_cpus
WORKLOAD_LIST="$(check_list workloads "$WORKLOADS" "$ALL_WORKLOADS")"
IFS=',' read -ra BINS <<<"$RINGRESS_BINS"
read -ra EXTRA_ARGS <<<"$RUN_ARGS"
if [ "${#BINS[@]}" -lt 1 ] || [ "${#BINS[@]}" -gt 2 ]; then
    die "--ringress takes one or two binaries, comma-separated, got '$RINGRESS_BINS'"
fi
for bin in "${BINS[@]}"; do
    [ -x "$bin" ] || [ "$bin" = target/release/ringress ] || die "--ringress $bin is not an executable file"
done
# 3M connections at once: ringress and h2load need a descriptor each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nofile" -ge $((3 * HANDSHAKES + 256)) ] ||
    die "--handshakes $HANDSHAKES needs $((3 * HANDSHAKES + 256)) open files; the limit is $nofile"

set_cleanup_traps
# ringress under valgrind ignores SIGTERM while idle: on exit, kill it at once rather than
# after stop_pid's 5 s wait; then the usual cleanup.
kill_ringress_then_cleanup() {
    local rc=$?
    [ -z "$GW_PID" ] || kill -KILL "$GW_PID" 2>/dev/null || true
    # cleanup reads the status from $?; set -e must not end the trap at (exit).
    set +e
    (exit "$rc")
    cleanup
}
trap kill_ringress_then_cleanup EXIT

# ---------------------------------------------------------------------------------
# Tools (installed when missing, see perf/lib.sh)

ensure_tools valgrind callgrind_control h2load openssl curl python3 taskset pgrep
NGINX="$(find_bin nginx)"
H2LOAD="$(find_bin h2load)"
VALGRIND="$(find_bin valgrind)"
CALLGRIND_CONTROL="$(find_bin callgrind_control)"

make_dirs insn
RESULTS="$OUT_DIR/results.tsv"
printf 'workload\tbinary\trepeat\tn\tir_n\tir_3n\tper_unit\tnudges_n\tnudges_3n\ttls\n' >"$RESULTS"

for i in "${!BINS[@]}"; do
    BINS[i]="$(ringress_binary "${BINS[$i]}" "$OUT_DIR/cargo-build.log")" || die "${BINS[$i]}"
done
# Table labels: the file names, or the full paths when those are the same.
LABELS=()
for bin in "${BINS[@]}"; do
    LABELS+=("$(basename "$bin")")
done
if [ "${#BINS[@]}" -eq 2 ] && [ "${LABELS[0]}" = "${LABELS[1]}" ]; then
    LABELS=("${BINS[@]}")
fi

{
    printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'cpu model: %s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'valgrind: %s\n' "$("$VALGRIND" --version)"
    printf 'h2load: %s\n' "$("$H2LOAD" --version 2>&1 | head -n1 || true)"
    for i in "${!BINS[@]}"; do
        printf 'ringress %s: %s (sha256 %s)\n' "${LABELS[$i]}" "${BINS[$i]}" "$(sha256sum "${BINS[$i]}" | cut -c1-16)"
    done
    printf 'command: perf/instructions.sh --ringress %s --requests %s --conns %s --handshakes %s --workloads %s --repeat %s --args "%s"%s\n' \
        "$(IFS=,; printf '%s' "${BINS[*]}")" "$REQUESTS" "$KEEPALIVE_CONNS" "$HANDSHAKES" "${WORKLOAD_LIST// /,}" "$REPEAT" "$RUN_ARGS" \
        "$([ "$JWT" -eq 0 ] || printf ' --jwt')"
} | tee "$OUT_DIR/machine.txt" >&2

gen_certs
start_upstream
# The header h2load and the readiness check send (the token with --jwt).
AUTH_HEADER=""
if [ "$JWT" -eq 1 ]; then
    prepare_jwt
    AUTH_HEADER="$JWT_HEADER"
fi

# ---------------------------------------------------------------------------------
# One run under callgrind

# nudge PORT: a bare TCP connection, opened and closed: ringress runs a little code
# (accept, a read of nothing, close), enough for valgrind to see a pending command.
nudge() {
    python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.close()' "$1" 2>/dev/null || true
}

# count_ir BIN DIR H2LOAD_ARGS...: starts BIN under callgrind, sends the load, dumps the
# counts and kills it; sets IR (all instructions executed, start-up included) and
# NUDGES, and TLS (protocol, suite and group h2load negotiated), or dies with the reason.
IR="" NUDGES=0 TLS=
count_ir() {
    local bin="$1" dir="$2" port line cc i want why auth=()
    shift 2
    mkdir -p "$dir"
    port="$(free_port)"
    write_ringress_config "$dir" "$port"
    if [ -n "$AUTH_HEADER" ]; then
        add_jwt_policy "$dir/ringress.yaml"
        auth=(-H "$AUTH_HEADER")
    fi
    GW_PID="" GW_FAIL=""
    spawn "$dir/ringress.log" taskset -c "$PROXY_CPU" "$VALGRIND" --tool=callgrind \
        --callgrind-out-file="$dir/cg.out" --dump-instr=no \
        "$bin" run --config "$dir/ringress.yaml" --shards 1 --admin off --no-watch "${EXTRA_ARGS[@]}"
    GW_PID="$SPAWNED"
    wait_ready ringress "$dir" "$port" "$AUTH_HEADER" || die "$GW_FAIL (log: $dir/ringress.log)"
    if [ -n "$AUTH_HEADER" ]; then
        why="$(check_jwt_policy "$port")" || die "$why (log: $dir/ringress.log)"
    fi
    spawn "$dir/h2load.txt" timeout "$LOAD_TIMEOUT_SECS" taskset -c "$LOAD_CPU" "$H2LOAD" --h1 "$@" "${auth[@]}" \
        --connect-to="127.0.0.1:$port" "$(gw_url "$port" /)"
    wait "$SPAWNED" || true
    forget_pid "$SPAWNED"
    # requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, ...
    want="$(sed -nE 's/^requests: ([0-9]+) total.*/\1/p' "$dir/h2load.txt")"
    line="$(grep -m1 '^status codes:' "$dir/h2load.txt" || true)"
    if [ -z "$want" ] || ! grep -qE "^requests: $want total, $want started, $want done, $want succeeded, 0 failed" "$dir/h2load.txt" ||
        [[ "$line" != "status codes: $want 2xx,"* ]]; then
        die "h2load did not get every answer right ($dir/h2load.txt): $(grep -E '^(requests|status codes):' "$dir/h2load.txt" | tr '\n' ' ')"
    fi
    TLS="$(sed -nE 's/^(TLS Protocol|Cipher|Server Temp Key): ([^ ]+).*/\2/p' "$dir/h2load.txt" | tr '\n' ' ')"
    TLS="${TLS% }"
    # The dump happens when ringress next runs code: give callgrind_control time to
    # post the command, then nudge until it is done.
    spawn "$dir/callgrind_control.log" timeout "$DUMP_TIMEOUT_SECS" "$CALLGRIND_CONTROL" -d "$GW_PID"
    cc="$SPAWNED"
    NUDGES=0
    sleep 1
    for i in $(seq 1 $((DUMP_TIMEOUT_SECS * 2))); do
        alive "$cc" || break
        nudge "$port"
        NUDGES=$((NUDGES + 1))
        sleep 0.5
    done
    wait "$cc" || true
    forget_pid "$cc"
    kill -KILL "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    forget_pid "$GW_PID"
    GW_PID=""
    IR="$(cat "$dir"/cg.out.* 2>/dev/null | sed -nE 's/^summary: ([0-9]+).*/\1/p' | head -n1)"
    [ -n "$IR" ] || die "callgrind wrote no dump ($dir; callgrind_control: $(tail -n 2 "$dir/callgrind_control.log" | tr '\n' ' '))"
}

# measure WORKLOAD INDEX REPEAT: the two runs of one figure; appends to RESULTS.
measure() {
    local wl="$1" idx="$2" rep="$3" n ir1 ir3 nd1 nd3 per unit dir
    local bin="${BINS[$idx]}" label="${LABELS[$idx]}"
    dir="$OUT_DIR/runs/$wl-$idx-r$rep"
    case "$wl" in
    keepalive | serial) n="$REQUESTS" unit=request ;;
    full) n="$HANDSHAKES" unit=connection ;;
    esac
    local k args
    for k in 1 3; do
        if [ "$wl" = keepalive ]; then
            args=(-c "$KEEPALIVE_CONNS" -n $((k * n)))
        elif [ "$wl" = serial ]; then
            args=(-c 1 -n $((k * n)))
        else
            # Connection: close, as in compare.sh's close and full workloads.
            args=(-c $((k * n)) -n $((k * n)) -H 'Connection: close')
        fi
        count_ir "$bin" "$dir/x$k" "${args[@]}"
        if [ "$k" -eq 1 ]; then ir1="$IR" nd1="$NUDGES"; else ir3="$IR" nd3="$NUDGES"; fi
        printf '%s\n' "$IR" >"$dir/x$k/ir.txt"
    done
    per="$(awk -v a="$ir3" -v b="$ir1" -v n="$n" 'BEGIN { printf "%.0f", (a - b) / (2 * n) }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$label" "$rep" "$n" "$ir1" "$ir3" "$per" "$nd1" "$nd3" "$TLS" >>"$RESULTS"
    log "  $wl $label #$rep: $per Ir/$unit (Ir $ir1 with $n, $ir3 with $((3 * n)); $nd1 and $nd3 nudges)"
}

# ---------------------------------------------------------------------------------
# Main

for rep in $(seq 1 "$REPEAT"); do
    for wl in $WORKLOAD_LIST; do
        for i in "${!BINS[@]}"; do
            log "$wl, ${LABELS[$i]}, measure $rep of $REPEAT"
            measure "$wl" "$i" "$rep"
        done
    done
done

# The table: the median per workload and binary, with the range when repeated.
summarize() {
    awk -F'\t' -v labels="$(IFS=$'\t'; printf '%s' "${LABELS[*]}")" '
    function fmt(x,   s, neg, out) {
        s = sprintf("%.0f", x); neg = ""
        if (s ~ /^-/) { neg = "-"; s = substr(s, 2) }
        out = ""
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        return neg s out
    }
    function median(key,   n, i, j, t, v) {
        n = cnt[key]
        for (i = 1; i <= n; i++) v[i] = val[key, i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        lo[key] = v[1]; hi[key] = v[n]
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    NR == 1 { next }
    {
        key = $1 SUBSEP $2
        val[key, ++cnt[key]] = $7
        n[$1] = $4
        if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
    }
    END {
        nl = split(labels, lab, "\t")
        head = "| workload | unit | N |"; rule = "|---|---|---:|"
        for (i = 1; i <= nl; i++) { head = head " " lab[i] " |"; rule = rule "---:|" }
        if (nl == 2) { head = head " " lab[2] " / " lab[1] " |"; rule = rule "---:|" }
        print head; print rule
        for (w = 1; w <= nw; w++) {
            wl = order[w]
            unit = wl == "full" ? "Ir/connection" : "Ir/request"
            line = "| " wl " | " unit " | " n[wl] " |"
            for (i = 1; i <= nl; i++) {
                key = wl SUBSEP lab[i]
                if (!(key in cnt)) { line = line " - |"; continue }
                m[i] = median(key)
                cell = fmt(m[i])
                if (cnt[key] > 1)
                    cell = cell sprintf(" (%s..%s, ±%.2f %%)", fmt(lo[key]), fmt(hi[key]), m[i] ? 50 * (hi[key] - lo[key]) / m[i] : 0)
                line = line " " cell " |"
            }
            if (nl == 2) line = line sprintf(" %.3f |", m[1] ? m[2] / m[1] : 0)
            print line
        }
    }' "$RESULTS"
}

log "results: $OUT_DIR"
{
    summarize
    printf '\nN: requests (keepalive: %s connections, serial: 1) or connections (full, one request each) of the\n' "$KEEPALIVE_CONNS"
    printf 'smaller run; each figure is (Ir(3N) - Ir(N)) / 2N, user space only, counted by callgrind.\n'
    # The TLS parameters h2load negotiated: a different suite changes the crypto's count.
    tls="$(awk -F'\t' 'NR > 1 && !seen[$2 FS $10]++ { printf "%s%s %s", sep, $2, $10; sep = "; " }' "$RESULTS")"
    printf 'negotiated: %s\n' "$tls"
    if [ "$(awk -F'\t' 'NR > 1 { print $10 }' "$RESULTS" | sort -u | wc -l)" -gt 1 ]; then
        printf '**WARNING: the runs did not all negotiate the same TLS parameters: the figures are not like-for-like.**\n'
    fi
} | tee "$OUT_DIR/summary.md"
