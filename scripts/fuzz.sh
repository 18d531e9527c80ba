#!/usr/bin/env bash
# Runs ringress's fuzz targets (fuzz/, cargo-fuzz + libFuzzer), each for a given time,
# and prints a summary line per target. Exits non-zero when any target found a crash
# (the input is kept in fuzz/artifacts/<target>/ and printed with the replay command).
#
#   scripts/fuzz.sh                       every target, 60 s each
#   scripts/fuzz.sh --time 600            every target, 10 minutes each
#   scripts/fuzz.sh --time 30 path config some targets
#   scripts/fuzz.sh --list                the targets
#
# Each target starts from its seeds (fuzz/seeds/<target>/; the config target also
# from the project's example configurations) and the corpus earlier runs left in
# fuzz/corpus/<target>/. cargo-fuzz is installed when missing. libFuzzer needs the
# sanitizer flags of a nightly compiler; RUSTC_BOOTSTRAP=1 lets the pinned stable
# toolchain take them.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

targets=(client_hello records_open request_head response_head body_framer path config)
seconds=60
chosen=()
while (($#)); do
    case "$1" in
        --time)
            seconds="${2:?--time needs seconds}"
            shift 2
            ;;
        --list)
            printf '%s\n' "${targets[@]}"
            exit 0
            ;;
        -h | --help)
            sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "fuzz.sh: unknown option $1 (see --help)" >&2
            exit 2
            ;;
        *)
            if [[ " ${targets[*]} " != *" $1 "* ]]; then
                echo "fuzz.sh: no target $1; targets: ${targets[*]}" >&2
                exit 2
            fi
            chosen+=("$1")
            shift
            ;;
    esac
done
((${#chosen[@]})) || chosen=("${targets[@]}")
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --time takes whole seconds" >&2; exit 2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

echo "fuzz.sh: building ${#chosen[@]} target(s)" >&2
for target in "${chosen[@]}"; do
    cargo fuzz build -O "$target"
done

failed=0
summary=()
for target in "${chosen[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    dirs=("$corpus")
    if [[ -d "seeds/$target" ]]; then
        dirs+=("seeds/$target")
    fi
    if [[ "$target" == config ]]; then
        dirs+=("$root/config" "$root/src/config/testdata")
    fi
    log="$(mktemp)"
    echo "fuzz.sh: $target for ${seconds}s" >&2
    status=0
    cargo fuzz run -O "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    # A run that never started has none of these lines: empty, not an exit of the script.
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)"
    if ((status == 0)); then
        summary+=("$(printf '%-14s clean  %10s runs in %ss (%s/s), coverage %s' \
            "$target" "${runs:-?}" "$seconds" "${speed:-?}" "${cov:-?}")")
    else
        failed=1
        crash="$(ls -t "artifacts/$target" 2>/dev/null | head -1)"
        if [[ -z "$crash" ]]; then
            # No input to blame: it did not get to fuzzing, or libFuzzer stopped; say why.
            tail -n 15 "$log" >&2
            summary+=("$(printf '%-14s FAILED (status %s) after %s runs, no crash input: see above' \
                "$target" "$status" "${runs:-0}")")
        else
            grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2 || true
            summary+=("$(printf '%-14s FAILED after %s runs: fuzz/artifacts/%s/%s (replay: RUSTC_BOOTSTRAP=1 cargo fuzz run -O %s fuzz/artifacts/%s/%s in fuzz/)' \
                "$target" "${runs:-?}" "$target" "$crash" "$target" "$target" "$crash")")
        fi
    fi
    rm -f "$log"
done

echo
echo "fuzz.sh summary (${seconds}s per target, $(date -u +%FT%TZ)):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
