#!/usr/bin/env bash
# Where an idle connection's memory goes: ringress under heaptrack, holding N idle TLS
# connections (perf/idle_conns.py: each did one request, or with --h2 one HTTP/2
# stream), then heaptrack's peak consumers, per connection.
#
#   perf/heap.sh [--h2] [--conns N] [--ringress PATH] [--out DIR]
#
# The gateway runs perf/compare.sh's configuration (its certificate, upstream nginx and
# Istio manifests) with one shard. Once every connection is open and idle, ringress is
# killed (SIGKILL: heaptrack still writes what it saw; a SIGTERM would drain, and
# every connection's GOAWAY would make a peak of its own), and `heaptrack_print
# --print-peaks` lists what was allocated at the peak, the idle state, by call site.
# The summary keeps the sites that allocated at least once per connection and hold at
# least 100 bytes per connection, with their bytes at the peak divided by N and the first frames that name ringress, h2 or a
# library function: the table perf/RESULTS.md's "what an idle h2 connection held" comes
# from. heaptrack counts allocated bytes (RSS per connection, perf/compare.sh's idle
# and h2idle workloads, also counts what the allocator keeps around them).
#
# Everything listens on 127.0.0.1; every wait is bounded; what the script starts is
# stopped on exit. heaptrack's data, the full peak report and the summary are kept in
# --out (default: a new directory under ${TMPDIR:-/tmp}).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# shellcheck source=perf/lib.sh
source "$repo_root/perf/lib.sh"

CONNS=1000
H2=()
RINGRESS_BIN="target/release/ringress"
OUT_DIR=""
LOAD_CPU=1

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --h2) H2=(--h2); shift ;;
    --conns) CONNS="$(opt_value "$@")"; shift 2 ;;
    --ringress) RINGRESS_BIN="$(opt_value "$@")"; shift 2 ;;
    --out) OUT_DIR="$(opt_value "$@")"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
check_range --conns "$CONNS" 10 20000
ulimit -n 65536 2>/dev/null || true
nofile="$(ulimit -n)"

set_cleanup_traps
ensure_tools openssl curl python3 taskset heaptrack
NGINX="$(find_bin nginx)"
HEAPTRACK="$(find_bin heaptrack)"
make_dirs heap
RINGRESS_BIN="$(ringress_binary "$RINGRESS_BIN" "$OUT_DIR/cargo-build.log")" || die "$RINGRESS_BIN"

gen_certs
start_upstream
dir="$WORK/ringress"
mkdir -p "$dir"
port="$(free_port)"
write_ringress_config "$dir" "$port"
spawn "$dir/ringress.log" "$HEAPTRACK" -o "$OUT_DIR/heaptrack" "$RINGRESS_BIN" run \
    --config "$dir/ringress.yaml" --shards 1 --admin off --no-watch --access-log off
heap_pid="$SPAWNED"
GW_PID="$heap_pid"
wait_ready ringress "$dir" "$port" || die "$GW_FAIL"
log "ringress under heaptrack on 127.0.0.1:$port; opening $CONNS idle connections ${H2[*]:-}"

out="$OUT_DIR/idle_conns.txt"
spawn "$out" taskset -c "$LOAD_CPU" python3 "$repo_root/perf/idle_conns.py" \
    --port "$port" --server-name "$SERVER_NAME" --cafile "$CA" \
    --count "$CONNS" --hold 120 "${H2[@]}"
client_pid="$SPAWNED"
for _ in $(seq 1 1200); do
    grep -q '^READY' "$out" && break
    alive "$client_pid" || die "the idle client ended: $(tail -n 2 "$out" | tr '\n' ' ')"
    sleep 0.1
done
grep -q '^READY' "$out" || die "the idle client did not open $CONNS connections in 120 s"
log "$(grep -m1 '^READY' "$out")"
sleep 1

# The application heaptrack runs; killing it (not heaptrack) lets heaptrack finish.
gw="$(pgrep -n -f "^$RINGRESS_BIN run --config $dir/ringress.yaml")" ||
    die "no ringress process under heaptrack"
kill -KILL "$gw"
for _ in $(seq 1 300); do
    alive "$heap_pid" || break
    sleep 0.1
done
alive "$heap_pid" && die "heaptrack did not finish within 30 s of ringress's end"
wait "$heap_pid" 2>/dev/null || true
forget_pid "$heap_pid"
stop_pid "$client_pid"

data="$(ls "$OUT_DIR"/heaptrack.* | head -n 1)"
heaptrack_print -f "$data" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 60 --sub-peak-limit 40 >"$OUT_DIR/peaks.txt" 2>/dev/null
# "16.38M consumed over 1001 calls from:" and the stack under it: the first frame that
# is not the allocator, Vec/BytesMut plumbing or std.
awk -v n="$CONNS" '
    function bytes(s,   v, u) {
        v = s + 0; u = substr(s, length(s))
        if (u == "K") v *= 1000; else if (u == "M") v *= 1000000; else if (u == "G") v *= 1000000000
        return v
    }
    /consumed over [0-9]+ calls from:/ {
        if (site != "") print_site()
        size = bytes($1); calls = $4; site = ""; frames = 0; next
    }
    size > 0 && frames < 2 && /^ +[A-Za-z_<$]/ && !/^ +(at|in) / && !/alloc::|raw_vec|RawVec|with_capacity|bytes_mut|__rust|_RNv|core::|std::/ {
        f = $1; sub(/::h[0-9a-f]+$/, "", f); gsub(/\$LT\$/, "<", f); gsub(/\$GT\$/, ">", f)
        gsub(/\$C\$/, ",", f); gsub(/\$u7b\$\$u7b\$closure\$u7d\$\$u7d\$/, "{closure}", f)
        site = site (frames ? " < " : "") f; frames++
    }
    function print_site() {
        if (calls >= n && size / n >= 100) printf "%8.2f KiB/conn  %6d calls  %s\n", size / n / 1024, calls, site
        size = 0
    }
    END { if (site != "") print_site() }
' "$OUT_DIR/peaks.txt" | sort -rn >"$OUT_DIR/summary.txt"
log "per connection, by allocation site (heaptrack, $CONNS connections${H2:+, HTTP/2}):"
cat "$OUT_DIR/summary.txt"
log "results: $OUT_DIR"
