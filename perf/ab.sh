#!/usr/bin/env bash
# Two ringress builds measured at the same time: CPU per request of A and B side by side.
#
#   perf/ab.sh --ringress A,B [--workloads keepalive,close,1m,h2m10,h2m1] [--rounds N] [--duration S]
#              [--conns C] [--proxy-cpu C] [--load-cpu C] [--out DIR]
#              [--args-a "ARGS"] [--args-b "ARGS"] [--jwt-b]
#
# This machine's speed drifts by up to ±30 % within minutes, more than most changes
# move CPU time, so two builds measured one after the other (perf/compare.sh) can
# disagree by chance. Here both run at once, pinned to the same CPU, each with its own
# wrk on the load CPU (the certificate, upstream nginx and Istio config of
# perf/compare.sh): whatever slows the machine slows both, and B ÷ A holds steady.
# Each round reads both processes' user and system time (/proc/PID/stat) around the
# two wrk runs and divides by each one's requests. Workloads:
#   keepalive  C keep-alive connections each (default 32), a small response
#   close      C connections each (default 8), Connection: close: a resumed TLS
#              handshake, one request and the close per connection
#   1m         C connections each (default 8), 1 MiB responses: CPU per MiB
#   h2m10      HTTP/2 (ALPN h2, h2load instead of wrk): C connections each (default
#              16) with 10 requests in flight on each, a small response
#   h2m1       the same with one request in flight per connection
# The two share the CPU, so each gets about half of it: absolute figures are higher
# than perf/compare.sh's (less batching per loop turn); compare B with A, not with
# those tables. The median of the rounds' B ÷ A is the figure to quote.
# --args-a / --args-b are extra `ringress run` arguments for A and B (default for
# both `--access-log off`, as perf/compare.sh runs every gateway without an access
# log); the same binary twice with `--args-b "--access-log FILE"` measures the cost of
# the access log. --jwt-b gives B the jwt workload's policy (perf/ringress-jwt.yaml: a
# RequestAuthentication and a DENY policy for requests without a verified token) and
# B's wrk the sample RS256 token: the same binary twice then measures what a required
# token costs (rounds with any refused answer stop the script).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# shellcheck source=perf/lib.sh
source "$repo_root/perf/lib.sh"

RINGRESS_BINS=""
WORKLOADS="keepalive,close"
ROUNDS=5
DURATION=5
CONNS=""
PROXY_CPU=0
LOAD_CPU=1
OUT_DIR=""
ARGS_A="--access-log off"
ARGS_B="--access-log off"
JWT_B=0
ALL_WORKLOADS="keepalive close 1m h2m10 h2m1"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    cat <<EOF

Options:
  --ringress A,B     the two ringress binaries (required)
  --workloads LIST   keepalive,close,1m,h2m10,h2m1 (default $WORKLOADS)
  --rounds N         rounds per workload (default $ROUNDS)
  --duration S       seconds of load per round (default $DURATION)
  --conns C          connections per gateway (default: per workload, above)
  --proxy-cpu C      CPU both gateways run on (default $PROXY_CPU)
  --load-cpu C       CPU of the two wrk and the upstream (default $LOAD_CPU)
  --out DIR          results.tsv, summary.md, logs (default: new dir under \${TMPDIR:-/tmp})
  --args-a "ARGS"    extra \`ringress run\` arguments of A (default "$ARGS_A")
  --args-b "ARGS"    extra \`ringress run\` arguments of B (default "$ARGS_B")
  --jwt-b            B requires a JWT (perf/ringress-jwt.yaml) and B's wrk sends one
EOF
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --ringress) RINGRESS_BINS="$(opt_value "$@")"; shift 2 ;;
    --workloads) WORKLOADS="$(opt_value "$@")"; shift 2 ;;
    --rounds) ROUNDS="$(opt_value "$@")"; shift 2 ;;
    --duration) DURATION="$(opt_value "$@")"; shift 2 ;;
    --conns) CONNS="$(opt_value "$@")"; shift 2 ;;
    --proxy-cpu) PROXY_CPU="$(opt_value "$@")"; shift 2 ;;
    --load-cpu) LOAD_CPU="$(opt_value "$@")"; shift 2 ;;
    --out) OUT_DIR="$(opt_value "$@")"; shift 2 ;;
    --args-a) ARGS_A="$(opt_value "$@")"; shift 2 ;;
    --args-b) ARGS_B="$(opt_value "$@")"; shift 2 ;;
    --jwt-b) JWT_B=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

check_range --rounds "$ROUNDS" 1 50
check_range --duration "$DURATION" 1 600
[ -z "$CONNS" ] || check_range --conns "$CONNS" 1 1000
check_cpus
WORKLOAD_LIST="$(check_list workloads "$WORKLOADS" "$ALL_WORKLOADS")"
IFS=',' read -ra BINS <<<"$RINGRESS_BINS"
[ "${#BINS[@]}" -eq 2 ] || die "--ringress takes two binaries, comma-separated (see --help)"
ulimit -n 65536 2>/dev/null || true
nofile="$(ulimit -n)"
[ "$nofile" = unlimited ] && nofile=1048576

set_cleanup_traps
ensure_tools wrk openssl curl python3 taskset
NGINX="$(find_bin nginx)"
WRK="$(find_bin wrk)"
H2LOAD=""
if [[ " $WORKLOAD_LIST " == *" h2m"* ]]; then
    ensure_tools h2load
    H2LOAD="$(find_bin h2load)"
fi

make_dirs ab
for i in 0 1; do
    BINS[i]="$(ringress_binary "${BINS[$i]}" "$OUT_DIR/cargo-build.log")" || die "${BINS[$i]}"
done
LABELS=(A B)
{
    printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'cpu model: %s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    for i in 0 1; do
        printf 'ringress %s: %s (sha256 %s)\n' "${LABELS[$i]}" "${BINS[$i]}" "$(sha256sum "${BINS[$i]}" | cut -c1-16)"
    done
    printf 'command: perf/ab.sh --ringress %s,%s --workloads %s --rounds %s --duration %s%s --args-a "%s" --args-b "%s"%s\n' \
        "${BINS[0]}" "${BINS[1]}" "$WORKLOADS" "$ROUNDS" "$DURATION" "${CONNS:+ --conns $CONNS}" "$ARGS_A" "$ARGS_B" \
        "$([ "$JWT_B" -eq 0 ] || printf ' --jwt-b')"
} | tee "$OUT_DIR/machine.txt" >&2
read -ra EXTRA_A <<<"$ARGS_A"
read -ra EXTRA_B <<<"$ARGS_B"

gen_certs
start_upstream
# The request header each side's wrk sends (B's token with --jwt-b).
AUTH=("" "")
if [ "$JWT_B" -eq 1 ]; then
    prepare_jwt
    AUTH[1]="$JWT_HEADER"
fi

# Both gateways, started once and kept for every round.
PIDS=() PORTS=()
for i in 0 1; do
    dir="$WORK/${LABELS[$i]}"
    mkdir -p "$dir"
    port="$(free_port)"
    write_ringress_config "$dir" "$port"
    [ -z "${AUTH[$i]}" ] || add_jwt_policy "$dir/ringress.yaml"
    if [ "$i" -eq 0 ]; then extra=("${EXTRA_A[@]}"); else extra=("${EXTRA_B[@]}"); fi
    spawn "$dir/ringress.log" taskset -c "$PROXY_CPU" "${BINS[$i]}" run \
        --config "$dir/ringress.yaml" --shards 1 --admin off --no-watch "${extra[@]}"
    GW_PID="$SPAWNED"
    wait_ready "ringress ${LABELS[$i]}" "$dir" "$port" "${AUTH[$i]}" || die "$GW_FAIL"
    if [ -n "${AUTH[$i]}" ]; then
        why="$(check_jwt_policy "$port")" || die "ringress ${LABELS[$i]}: $why"
        log "ringress ${LABELS[$i]}: without a token 403, a tampered token 401, the token 200"
    fi
    PIDS+=("$SPAWNED") PORTS+=("$port")
    log "ringress ${LABELS[$i]} (pid $SPAWNED) on 127.0.0.1:$port, CPU $PROXY_CPU"
done

RESULTS="$OUT_DIR/results.tsv"
printf 'workload\tround\tbuild\trequests\tuser_us\tsys_us\ttotal_us\n' >"$RESULTS"

# one_round WORKLOAD ROUND: both wrk at once; one results line per build.
one_round() {
    local wl="$1" round="$2" conns path extra=() i out pids=() before=() after=() line n u0 s0 u1 s1 auth
    local streams=""
    case "$wl" in
    keepalive) conns=32 path=/ ;;
    close) conns=8 path=/ extra=(-H 'Connection: close') ;;
    1m) conns=8 path=/1m ;;
    h2m10) conns=16 streams=10 ;;
    h2m1) conns=16 streams=1 ;;
    esac
    conns="${CONNS:-$conns}"
    for i in 0 1; do
        before[i]="$(cpu_ticks "${PIDS[$i]}")"
    done
    for i in 0 1; do
        out="$OUT_DIR/wrk-$wl-r$round-${LABELS[$i]}.txt"
        auth=()
        [ -z "${AUTH[$i]}" ] || auth=(-H "${AUTH[$i]}")
        if [ -n "$streams" ]; then
            [ -z "${AUTH[$i]}" ] || die "--jwt-b is for the HTTP/1.1 workloads (h2load sends no token here)"
            spawn_h2load "$out" "${PORTS[$i]}" "$streams" "$conns"
        else
            spawn "$out" env WRK_CONNECT_ADDR=127.0.0.1 taskset -c "$LOAD_CPU" "$WRK" -t1 \
                -s "$repo_root/perf/wrk-report.lua" -c "$conns" -d "${DURATION}s" --timeout 5s \
                "${extra[@]}" "${auth[@]}" "$(gw_url "${PORTS[$i]}" "$path")"
        fi
        pids+=("$SPAWNED")
    done
    for i in 0 1; do
        wait "${pids[$i]}" || true
        forget_pid "${pids[$i]}"
        [ -z "$streams" ] || h2load_summary "$OUT_DIR/wrk-$wl-r$round-${LABELS[$i]}.txt" $((DURATION * 1000000))
    done
    for i in 0 1; do
        after[i]="$(cpu_ticks "${PIDS[$i]}")"
        alive "${PIDS[$i]}" || die "ringress ${LABELS[$i]} exited during $wl (log: $WORK/${LABELS[$i]}/ringress.log)"
        out="$OUT_DIR/wrk-$wl-r$round-${LABELS[$i]}.txt"
        line="$(grep -m1 '^RINGRESS_PERF ' "$out" || true)"
        [ -n "$line" ] || die "wrk printed no summary for ${LABELS[$i]}: $(tail -n 2 "$out" | tr '\n' ' ')"
        n="$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")"
        [ "$n" -gt 0 ] || die "no request completed through ${LABELS[$i]} in $wl round $round"
        # A refused request (401/403) costs less than a verified one: not a measurement.
        [ "$(sed -E 's/.* status_err=([0-9]+).*/\1/' <<<"$line")" -eq 0 ] ||
            die "${LABELS[$i]} answered status 400 or more in $wl round $round: $line"
        # 1m: CPU per MiB, i.e. per response.
        read -r u0 s0 <<<"${before[$i]}"
        read -r u1 s1 <<<"${after[$i]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$round" "${LABELS[$i]}" "$n" \
            "$(per_request $((u1 - u0)) "$n")" "$(per_request $((s1 - s0)) "$n")" \
            "$(per_request $((u1 - u0 + s1 - s0)) "$n")" >>"$RESULTS"
    done
    log "  $wl round $round: $(awk -F'\t' -v w="$wl" -v r="$round" '$1 == w && $2 == r {
        printf "%s %s µs (user %s, kernel %s, %s requests)  ", $3, $7, $5, $6, $4 }' "$RESULTS")"
}

for wl in $WORKLOAD_LIST; do
    log "$wl: $ROUNDS rounds of ${DURATION} s"
    for round in $(seq 1 "$ROUNDS"); do
        one_round "$wl" "$round"
    done
done

python3 - "$RESULTS" >"$OUT_DIR/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| workload | A µs (user / kernel) | B µs (user / kernel) | B ÷ A total | B ÷ A user | B ÷ A kernel | B ÷ A per round |")
print("|---|--:|--:|--:|--:|--:|--:|")
for wl in dict.fromkeys(r["workload"] for r in rows):
    by = {}
    for r in rows:
        if r["workload"] == wl:
            by.setdefault(r["round"], {})[r["build"]] = r
    rounds = [v for v in by.values() if "A" in v and "B" in v]
    def med(build, key):
        return statistics.median(float(v[build][key]) for v in rounds)
    def ratio(key):
        return statistics.median(float(v["B"][key]) / float(v["A"][key]) for v in rounds if float(v["A"][key]) > 0)
    per_round = ", ".join("%.3f" % (float(v["B"]["total_us"]) / float(v["A"]["total_us"])) for v in rounds)
    unit = "µs/MiB" if wl == "1m" else "µs/req"
    print("| %s | %.1f (%.1f / %.1f) %s | %.1f (%.1f / %.1f) %s | %.3f | %.3f | %.3f | %s |" % (
        wl, med("A", "total_us"), med("A", "user_us"), med("A", "sys_us"), unit,
        med("B", "total_us"), med("B", "user_us"), med("B", "sys_us"), unit,
        ratio("total_us"), ratio("user_us"), ratio("sys_us"), per_round))
EOF
printf '\nA: %s\nB: %s\n' "${BINS[0]}" "${BINS[1]}" >>"$OUT_DIR/summary.md"
log "results: $OUT_DIR"
cat "$OUT_DIR/summary.md"
