#!/usr/bin/env bash
# Match a NIC's receive queues and their interrupts to ringress's shards.
#
#   scripts/tune-rss.sh --iface IFACE [--shards N] [--xps] [--rps] [--irq-pattern REGEX] [--apply]
#
# ringress runs shard i on CPU i. With `ringress run --steer-by-cpu`, a reuseport
# program sends each new connection to the shard on the CPU where its packets were
# received, so one connection is handled start to end by one CPU with warm caches and
# no cross-CPU wakeups. That only pays off when the NIC delivers each flow to a CPU
# that runs a shard, which is what this script sets up:
#
#   1. ethtool -L IFACE combined N     one receive/transmit queue pair per shard (RSS
#                                      then hashes each flow to one queue)
#   2. stop and disable irqbalance     it would move the interrupts again
#   3. /proc/irq/IRQ/smp_affinity_list queue q's interrupt on CPU q mod N
#   4. --xps: queues/tx-q/xps_cpus     replies leave through the queue of their CPU
#   5. --rps: queues/rx-q/rps_cpus     for NICs with fewer queues than shards: spread
#                                      flows over the shard CPUs in software
#
# By default it only prints what it would do, with the current values; --apply does
# it (as root). Settings do not survive a reboot or a driver reload: run it from the
# unit that starts ringress. See scripts/README.md.
set -euo pipefail

IFACE=""
SHARDS=""
APPLY=0
XPS=0
RPS=0
IRQ_PATTERN=""

die() {
    printf 'tune-rss.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    cat <<'EOF'

Options:
  --iface IFACE        network interface that receives ringress's traffic (required)
  --shards N           shard count (default: nproc, as `ringress run --shards auto`)
  --xps                also set transmit packet steering (XPS) per queue
  --rps                also set receive packet steering (RPS) over the shard CPUs
  --irq-pattern REGEX  which /proc/interrupts names are this NIC's queues, when the
                       built-in matching (interface name, virtio device, PCI address)
                       finds none
  --apply              make the changes (default: print them only)
EOF
}

opt_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
    printf '%s' "$2"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --iface) IFACE="$(opt_value "$@")"; shift 2 ;;
    --shards) SHARDS="$(opt_value "$@")"; shift 2 ;;
    --irq-pattern) IRQ_PATTERN="$(opt_value "$@")"; shift 2 ;;
    --xps) XPS=1; shift ;;
    --rps) RPS=1; shift ;;
    --apply) APPLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[ -n "$IFACE" ] || { usage >&2; die "--iface is required"; }
case "$IFACE" in
*/* | . | ..) die "'$IFACE' is not an interface name" ;;
esac
NETDIR="/sys/class/net/$IFACE"
if [ ! -e "$NETDIR" ]; then
    die "there is no network interface '$IFACE' ($NETDIR does not exist); interfaces here: $(cd /sys/class/net && printf '%s ' *)"
fi

NCPU="$(nproc --all)"
if [ -z "$SHARDS" ]; then
    SHARDS="$(nproc)"
fi
if ! [[ "$SHARDS" =~ ^[0-9]+$ ]] || [ "$SHARDS" -lt 1 ]; then
    die "--shards must be a whole number >= 1, got '$SHARDS'"
fi
if [ "$SHARDS" -gt "$NCPU" ]; then
    die "--shards $SHARDS is more than the $NCPU CPUs here; shard i runs on CPU i"
fi

if [ "$APPLY" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    die "--apply needs root (it writes /proc/irq and /sys, and runs ethtool -L)"
fi

FAILURES=0

# run CMD...: print it; run it when applying. A failing step is reported, counted and
# the others still run.
run() {
    if [ "$APPLY" -eq 1 ]; then
        printf '+ %s\n' "$*"
        if ! "$@"; then
            printf '  failed: %s\n' "$*" >&2
            FAILURES=$((FAILURES + 1))
        fi
    else
        printf 'would run: %s\n' "$*"
    fi
}

# write VALUE FILE: print it with the current value; write it when applying.
write() {
    local value="$1" file="$2" current
    current="$(cat "$file" 2>/dev/null || echo '?')"
    if [ "$APPLY" -eq 1 ]; then
        printf '+ echo %s > %s   (was %s)\n' "$value" "$file" "$current"
        if ! printf '%s\n' "$value" 2>/dev/null >"$file"; then
            printf '  failed: writing %s to %s (a kernel-managed interrupt refuses new affinity)\n' \
                "$value" "$file" >&2
            FAILURES=$((FAILURES + 1))
        fi
    else
        printf 'would write: echo %s > %s   (now %s)\n' "$value" "$file" "$current"
    fi
}

# cpu_mask CPU...: the hex CPU mask sysfs expects (32-bit words, comma-separated).
cpu_mask() {
    local words=() c w i out=""
    for ((i = 0; i <= (NCPU - 1) / 32; i++)); do
        words[i]=0
    done
    for c in "$@"; do
        w=$((c / 32))
        words[w]=$((words[w] | (1 << (c % 32))))
    done
    for ((i = ${#words[@]} - 1; i >= 0; i--)); do
        if [ -z "$out" ]; then
            out="$(printf '%x' "${words[i]}")"
        else
            out="$out,$(printf '%08x' "${words[i]}")"
        fi
    done
    printf '%s' "$out"
}

# ---------------------------------------------------------------------------------
printf '# interface %s, %s shards on CPUs 0-%s (of %s)\n' "$IFACE" "$SHARDS" "$((SHARDS - 1))" "$NCPU"
if [ "$APPLY" -eq 0 ]; then
    printf '# print only: nothing is changed; add --apply to do it\n'
fi

# 1. Queues.
printf '\n## 1. one queue per shard\n'
if ! command -v ethtool >/dev/null 2>&1; then
    printf 'ethtool is not installed (Debian: apt-get install ethtool); skipping the queue count\n'
    [ "$APPLY" -eq 0 ] || FAILURES=$((FAILURES + 1))
elif ! channels="$(ethtool -l "$IFACE" 2>&1)"; then
    printf '%s does not report channels (%s); its queue count stays as it is\n' \
        "$IFACE" "$(printf '%s' "$channels" | tail -n1)"
else
    # maximum and current count of one channel kind (Combined, RX, TX)
    chan() {
        awk -v k="$1:" -v sect="$2" '/^Pre-set maximums/ { s = "max" } /^Current/ { s = "cur" }
            s == sect && $1 == k { print $2 }' <<<"$channels"
    }
    kind=""
    if [[ "$(chan Combined max)" =~ ^[0-9]+$ ]] && [ "$(chan Combined max)" -gt 0 ]; then
        kind=combined
    elif [[ "$(chan RX max)" =~ ^[0-9]+$ ]] && [[ "$(chan TX max)" =~ ^[0-9]+$ ]]; then
        kind=rxtx
    fi
    case "$kind" in
    combined)
        max="$(chan Combined max)" cur="$(chan Combined cur)"
        ;;
    rxtx)
        max="$(chan RX max)" cur="$(chan RX cur)"
        [ "$(chan TX max)" -ge "$max" ] || max="$(chan TX max)"
        [ "$(chan TX cur)" = "$cur" ] || cur="$cur/$(chan TX cur)"
        ;;
    *)
        printf '%s reports no settable channel counts; its queue count stays as it is\n' "$IFACE"
        ;;
    esac
    if [ -n "$kind" ]; then
        want="$SHARDS"
        if [ "$max" -lt "$want" ]; then
            printf '%s has at most %s queues, fewer than %s shards: using %s; consider --rps\n' \
                "$IFACE" "$max" "$SHARDS" "$max"
            want="$max"
        fi
        if [ "$cur" = "$want" ]; then
            printf '%s already has %s %s queues\n' "$IFACE" "$cur" "$kind"
        elif [ "$kind" = combined ]; then
            printf 'now %s combined queues (maximum %s)\n' "$cur" "$max"
            run ethtool -L "$IFACE" combined "$want"
        else
            printf 'now %s rx/tx queues (maximum %s)\n' "$cur" "$max"
            run ethtool -L "$IFACE" rx "$want" tx "$want"
        fi
    fi
fi

# 2. irqbalance.
printf '\n## 2. irqbalance off (it would move the interrupts again)\n'
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet irqbalance 2>/dev/null; then
    run systemctl disable --now irqbalance
elif pgrep -x irqbalance >/dev/null 2>&1; then
    printf 'irqbalance is running outside systemd (pid %s): stop it the way it was started\n' \
        "$(pgrep -x irqbalance | tr '\n' ' ')"
    [ "$APPLY" -eq 0 ] || FAILURES=$((FAILURES + 1))
else
    printf 'irqbalance is not running\n'
fi

# 3. Interrupts of the queues, read after the queue count changed.
printf '\n## 3. queue interrupts on their shard CPU\n'
names=("$IFACE")
dev="$(readlink -f "$NETDIR/device" 2>/dev/null || true)"
if [ -n "$dev" ]; then
    case "$(basename "$dev")" in
    virtio*) names+=("$(basename "$dev")-") ;;                      # virtio2-input.0
    esac
    if [[ "$(basename "$dev")" =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$ ]]; then
        names+=("$(basename "$dev")") # PCI address: mlx5_comp3@pci:0000:3b:00.0
    fi
fi
found=0
while read -r irq name; do
    [ -n "$irq" ] || continue
    match=0
    if [ -n "$IRQ_PATTERN" ]; then
        [[ "$name" =~ $IRQ_PATTERN ]] && match=1
    else
        for n in "${names[@]}"; do
            [[ "$name" == *"$n"* ]] && match=1
        done
        # Not queues: the device's configuration, control, async and link interrupts.
        [[ "$name" =~ (config|ctrl|async|link|misc|cmd|pages|event|fdir) ]] && match=0
        [ "$name" != "$IFACE" ] || match=0 # igb and others: the link interrupt
    fi
    [ "$match" -eq 1 ] || continue
    # The queue number is the last number in the name (TxRx-3, input.3, comp3@...).
    q="$(sed -E 's/@.*//; s/.*[^0-9]([0-9]+)[^0-9]*$/\1/' <<<"$name")"
    [[ "$q" =~ ^[0-9]+$ ]] || q=0
    cpu=$((q % SHARDS))
    printf 'irq %s (%s): queue %s -> CPU %s\n' "$irq" "$name" "$q" "$cpu"
    write "$cpu" "/proc/irq/$irq/smp_affinity_list"
    found=$((found + 1))
done < <(awk 'NR > 1 && $1 ~ /^[0-9]+:$/ { sub(/:$/, "", $1); print $1, $NF }' /proc/interrupts)
if [ "$found" -eq 0 ]; then
    printf 'no queue interrupts of %s found in /proc/interrupts (looked for: %s)\n' "$IFACE" "${names[*]}"
    printf '(a virtual interface such as lo, veth or a bridge has none; otherwise pass --irq-pattern)\n'
fi

# 4. XPS.
if [ "$XPS" -eq 1 ]; then
    printf '\n## 4. transmit packet steering: queue q used by CPU q mod %s\n' "$SHARDS"
    ntx="$(find "$NETDIR/queues" -maxdepth 1 -name 'tx-*' | wc -l)"
    for txq in "$NETDIR"/queues/tx-*; do
        [ -e "$txq/xps_cpus" ] || continue
        q="${txq##*/tx-}"
        cpus=()
        for ((c = 0; c < SHARDS; c++)); do
            [ $((c % ntx)) -ne "$q" ] || cpus+=("$c")
        done
        [ "${#cpus[@]}" -gt 0 ] || cpus=("$((q % SHARDS))")
        write "$(cpu_mask "${cpus[@]}")" "$txq/xps_cpus"
    done
fi

# 5. RPS.
if [ "$RPS" -eq 1 ]; then
    all=()
    for ((c = 0; c < SHARDS; c++)); do all+=("$c"); done
    printf '\n## 5. receive packet steering: flows of every rx queue spread over CPUs 0-%s\n' "$((SHARDS - 1))"
    for rxq in "$NETDIR"/queues/rx-*; do
        [ -e "$rxq/rps_cpus" ] || continue
        write "$(cpu_mask "${all[@]}")" "$rxq/rps_cpus"
    done
fi

printf '\n## then\n'
printf 'ringress run --config FILE --shards %s --steer-by-cpu\n' "$SHARDS"
printf 'check: grep -E "%s" /proc/interrupts   (each queue counts up on its own CPU)\n' "$(IFS='|'; printf '%s' "${names[*]}")"

if [ "$FAILURES" -gt 0 ]; then
    die "$FAILURES step(s) failed (see above)"
fi
