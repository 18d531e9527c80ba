#!/usr/bin/env python3
"""Turn perf/compare.sh's results.tsv into the Markdown table of medians.

    python3 perf/summarize.py RESULTS.tsv [--gateways nginx,haproxy,ringress]
                                          [--workloads keepalive,jwt,close,full,1m,idle,latency,passthrough,tcp]
                                          [--latency-why TEXT]

One row per workload and gateway: the median cost (gateway CPU µs per request, per MiB
for 1m, or RSS KiB per idle connection) and the median rate (requests/s, MiB/s for
1m), each with its ratio to HAProxy's and nginx's median in the same workload, the
spread (min-max) of the cost over the rounds, the rounds that succeeded and the total
client-side errors, and the median share of the gateway's CPU that other processes
used during the runs ("other load", the noise figure). For the CPU workloads the
"user / kernel" column splits the CPU cost into its user and kernel medians
(user_cost, sys_cost; absent in older results.tsv files), with the user part's ratio
to HAProxy's and nginx's. The jwt workload is ringress's only (nginx OSS and HAProxy
cannot verify JWTs; their rows say so), and under the table its median is set against
ringress's keepalive median (the issue's target: at most 1.15). Under the table: the TLS parameters each gateway negotiated
and whether it resumed a session, from tls.tsv next to results.tsv when present, with
a warning when they differ. A gateway whose runs all failed
shows "failed", and the reasons are listed under the table. Lower cost is better; higher rate is better.

The latency workload's rows show instead the median p99 latency in µs (lower is
better) with its ratios, the achieved rate at the fixed offered load (the same for
every gateway), and in the spread column the p99's min-max followed by the medians of
p50, p99.9 and the gateway's CPU µs per request at that load. --latency-why says where
the offered rate came from; it is printed under the table.
"""

import argparse
import csv
import os
import re
import statistics
import sys

COST_UNIT = {
    "keepalive": "µs/req",
    "jwt": "µs/req",
    "close": "µs/req",
    "full": "µs/req",
    "1m": "µs/MiB",
    "h2m10": "µs/req",
    "h2m1": "µs/req",
    "idle": "KiB/conn",
    "h2idle": "KiB/conn",
    "latency": "µs p99",
    "passthrough": "µs/req",
    "tcp": "µs/req",
}
RATE_UNIT = {
    "keepalive": "req/s",
    "jwt": "req/s",
    "close": "req/s",
    "full": "req/s",
    "1m": "MiB/s",
    "h2m10": "req/s",
    "h2m1": "req/s",
    "idle": "",
    "h2idle": "",
    "latency": "req/s",
    "passthrough": "req/s",
    "tcp": "req/s",
}
# Workloads whose rows split the gateway's CPU per request into user and kernel time
# (for latency: the CPU per request at the fixed rate, not the p99 of the main column).
CPU_SPLIT = (
    "keepalive",
    "jwt",
    "close",
    "full",
    "1m",
    "h2m10",
    "h2m1",
    "latency",
    "passthrough",
    "tcp",
)
# Workloads only ringress runs, and why the others do not.
RINGRESS_ONLY = {"jwt": "n/a: no JWT verification"}

# Above this median share of "other load" on the gateway's core, latency rows get a
# warning under the table (a stalled gateway goes straight into its tail).
NOISY_OTHER_PCT = 10

WORKLOAD_TITLE = {
    "keepalive": "keep-alive, small response",
    "jwt": "keep-alive, small response, RS256 JWT required",
    "close": "new connection per request, resumed TLS",
    "full": "new connection per request, full TLS handshake",
    "1m": "1 MiB response",
    "h2m10": "HTTP/2, 16 connections × 10 streams, small response",
    "h2m1": "HTTP/2, 16 connections × 1 stream, small response",
    "idle": "idle TLS connections (RSS)",
    "h2idle": "idle HTTP/2 TLS connections (RSS)",
    "latency": "latency at a fixed rate",
    "passthrough": "TLS passthrough by SNI, keep-alive HTTPS to a TLS upstream",
    "tcp": "TCP relay, keep-alive plain HTTP",
}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value, base) -> str:
    if value is None or base is None or base == 0:
        return "—"
    return f"{value / base:.2f}×"


def other_load(ok_rows) -> str:
    """Median share of the gateway's CPU used by other processes during the runs."""
    values = [float(r["cpu_other_pct"]) for r in ok_rows if r.get("cpu_other_pct", "-") not in ("", "-")]
    if not values:
        return "—"
    return f"{statistics.median(values):.0f}%"


def note_field(row, name):
    """The number after NAME= in the row's note, or None."""
    m = re.search(rf"(?:^| ){name}=([0-9.]+)", row.get("note") or "")
    return float(m.group(1)) if m else None


def numbers(ok_rows, column):
    """The column's values as floats, leaving out "-", empty and absent (older files)."""
    return [float(r[column]) for r in ok_rows if r.get(column) not in (None, "", "-")]


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def latency_extra(ok_rows) -> str:
    """p50, p99.9 and CPU per request (medians) of the latency workload's rows."""
    p50 = median_of([float(r["p50_us"]) for r in ok_rows if r.get("p50_us", "-") not in ("", "-")])
    p999 = median_of([note_field(r, "p999_us") for r in ok_rows])
    cpu = median_of([float(r["cost"]) for r in ok_rows if r.get("cost", "-") not in ("", "-")])
    parts = []
    if p50 is not None:
        parts.append(f"p50 {fmt(p50)} µs")
    if p999 is not None:
        parts.append(f"p99.9 {fmt(p999)} µs")
    if cpu is not None:
        parts.append(f"CPU {fmt(cpu)} µs/req")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--gateways", default="nginx,haproxy,ringress")
    parser.add_argument("--workloads", default="keepalive,close,full,1m,idle,latency")
    parser.add_argument("--latency-why", default="", help="where the latency workload's offered rate came from")
    args = parser.parse_args()

    gateways = [g for g in args.gateways.split(",") if g]
    workloads = [w for w in args.workloads.split(",") if w]

    rows = []
    with open(args.results, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.append(row)

    # (workload, gateway) -> median cost / median rate / spread / runs / errors
    stats = {}
    reasons = {}
    for wl in workloads:
        for gw in gateways:
            mine = [r for r in rows if r["workload"] == wl and r["gateway"] == gw]
            ok = [r for r in mine if r["status"] == "ok"]
            for r in mine:
                if r["status"] != "ok" and r["note"]:
                    reasons.setdefault(gw, []).append(f"{wl}, round {r['round']}: {r['note']}")
            if not ok:
                stats[(wl, gw)] = None if mine else "not run"
                continue
            if wl == "latency":
                # The figure is p99 latency; CPU per request goes to the extra column.
                costs = [float(r["p99_us"]) for r in ok]
            else:
                costs = [float(r["cost"]) for r in ok]
            rates = [float(r["rate"]) for r in ok] if wl not in ("idle", "h2idle") else []
            errors = sum(int(r["errors"]) for r in ok if r["errors"] not in ("", "-"))
            user = numbers(ok, "user_cost") if wl in CPU_SPLIT else []
            system = numbers(ok, "sys_cost") if wl in CPU_SPLIT else []
            stats[(wl, gw)] = {
                "user": statistics.median(user) if user else None,
                "sys": statistics.median(system) if system else None,
                "cost": statistics.median(costs),
                "rate": statistics.median(rates) if rates else None,
                "min": min(costs),
                "max": max(costs),
                "runs": f"{len(ok)}/{len(mine)}",
                "errors": errors,
                "other": other_load(ok),
                "extra": latency_extra(ok) if wl == "latency" else "",
            }

    out = sys.stdout
    out.write(
        "| workload | gateway | CPU, RSS or p99 (median) | ÷ HAProxy | ÷ nginx "
        "| user / kernel | user ÷ HAProxy | user ÷ nginx "
        "| rate (median) | ÷ HAProxy | ÷ nginx | spread (min–max) | rounds ok | errors | other load |\n"
    )
    out.write("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    for wl in workloads:
        base_h = stats.get((wl, "haproxy"))
        base_n = stats.get((wl, "nginx"))
        base_h = base_h if isinstance(base_h, dict) else None
        base_n = base_n if isinstance(base_n, dict) else None
        for gw in gateways:
            s = stats.get((wl, gw))
            title = WORKLOAD_TITLE.get(wl, wl)
            if not isinstance(s, dict):
                label = "not run" if s == "not run" else "failed"
                if wl in RINGRESS_ONLY and gw != "ringress":
                    label = RINGRESS_ONLY[wl]
                out.write(f"| {title} | {gw} | {label} | | | | | | | | | | | | |\n")
                continue
            cost = f"{fmt(s['cost'])} {COST_UNIT.get(wl, '')}"
            if s["rate"] is None:
                rate, rh, rn = "—", "—", "—"
            else:
                rate = f"{fmt(s['rate'])} {RATE_UNIT.get(wl, '')}"
                rh = ratio(s["rate"], base_h and base_h["rate"])
                rn = ratio(s["rate"], base_n and base_n["rate"])
            if s["user"] is None or s["sys"] is None:
                split, uh, un = "—", "—", "—"
            else:
                split = f"{fmt(s['user'])} / {fmt(s['sys'])}"
                uh = ratio(s["user"], base_h and base_h["user"])
                un = ratio(s["user"], base_n and base_n["user"])
            out.write(
                f"| {title} | {gw} | {cost} | {ratio(s['cost'], base_h and base_h['cost'])} "
                f"| {ratio(s['cost'], base_n and base_n['cost'])} | {split} | {uh} | {un} "
                f"| {rate} | {rh} | {rn} "
                f"| {fmt(s['min'])}–{fmt(s['max'])}{'; ' + s['extra'] if s['extra'] else ''} "
                f"| {s['runs']} | {s['errors']} | {s['other']} |\n"
            )
    write_split_note(out, stats, workloads, gateways)
    if "jwt" in workloads:
        write_jwt_note(out, stats)
    write_tls_notes(out, os.path.join(os.path.dirname(os.path.abspath(args.results)), "tls.tsv"), gateways)
    if "latency" in workloads:
        write_latency_notes(out, rows, gateways, args.latency_why)
    if reasons:
        out.write("\nFailures:\n")
        for gw, items in reasons.items():
            # The same reason in every round is said once.
            seen = []
            for item in items:
                why = item.split(": ", 1)[-1]
                if why not in seen:
                    seen.append(why)
                    out.write(f"- {gw}: {item}\n")
    return 0


def write_split_note(out, stats, workloads, gateways) -> None:
    """Under the table: what the user / kernel column is, when any row has it."""
    if not any(isinstance(stats.get((wl, gw)), dict) and stats[(wl, gw)]["user"] is not None
               for wl in workloads for gw in gateways):
        return
    out.write(
        "\nuser / kernel: the medians of the gateway's user and kernel CPU µs per request (per MiB for 1m; "
        "for latency, at the fixed rate). The user part is the gateway's own code (TLS records, "
        "parsing, proxying); the kernel part (system calls, TCP and loopback delivery into the peer's "
        "socket, copies, wake-ups) is close to a floor shared by all three on loopback. "
        "`user ÷` compares the user parts.\n"
    )


# The target for the jwt workload: at most this much more CPU per request than
# keepalive.
JWT_TARGET = 1.15


def write_jwt_note(out, stats) -> None:
    """Under the table: ringress's jwt median against its keepalive median of the same run."""
    jwt, plain = stats.get(("jwt", "ringress")), stats.get(("keepalive", "ringress"))
    if not isinstance(jwt, dict) or not isinstance(plain, dict):
        return
    parts = [f"{fmt(jwt['cost'])} ÷ {fmt(plain['cost'])} µs/req = {jwt['cost'] / plain['cost']:.3f}"]
    if None not in (jwt["user"], plain["user"], jwt["sys"], plain["sys"]):
        parts.append(f"user {ratio(jwt['user'], plain['user'])}, kernel {ratio(jwt['sys'], plain['sys'])}")
    verdict = "within" if jwt["cost"] <= JWT_TARGET * plain["cost"] else "ABOVE"
    out.write(
        f"\njwt ÷ keepalive (ringress, medians): {'; '.join(parts)}; {verdict} the target of "
        f"≤ {JWT_TARGET:.2f}. nginx OSS and HAProxy cannot verify JWTs, so the jwt row is ringress's only.\n"
    )


def write_tls_notes(out, path, gateways) -> None:
    """Under the table: the TLS parameters each gateway negotiated with an OpenSSL client
    (tls.tsv, written by compare.sh), and a warning when they differ."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            tls = {r["gateway"]: r for r in csv.DictReader(f, delimiter="\t")}
    except OSError:
        return
    seen = [gw for gw in gateways if gw in tls]
    if not seen:
        return
    params = {gw: f"{tls[gw]['protocol']} {tls[gw]['suite']} {tls[gw]['group']}" for gw in seen}
    out.write("\nnegotiated: " + "; ".join(f"{gw} {params[gw]}" for gw in seen) + "\n")
    out.write(
        "session resumption (a second connection offering the first one's ticket): "
        + "; ".join(f"{gw} {tls[gw]['resumption']}" for gw in seen)
        + "\n"
    )
    if len(set(params.values())) > 1 or any("?" in p.split() for p in params.values()):
        out.write(
            "\n**WARNING: the gateways did not negotiate the same TLS protocol, suite and group "
            "(or one could not be read): the CPU figures are not like-for-like.**\n"
        )
    if len({tls[gw]["resumption"] for gw in seen}) > 1:
        out.write(
            "\n**WARNING: not every gateway resumed the session: the close workload "
            "compares resumed with full handshakes.**\n"
        )


# Offered latency rate above this share of nginx's keep-alive median of the same run:
# the fixed-rate rounds ran at or past capacity.
LATENCY_SATURATED_SHARE = 0.85


def write_latency_notes(out, rows, gateways, why) -> None:
    """Under the table: the offered rate, how it compares with nginx's keep-alive rate
    of the same run, and the latency runs that did not reach it."""
    lat = [r for r in rows if r["workload"] == "latency" and r["status"] == "ok" and r["gateway"] in gateways]
    targets = sorted({note_field(r, "target_rps") for r in lat} - {None})
    if not targets:
        return
    target = targets[0]
    out.write(
        f"\nLatency rows: every gateway offered {fmt(target)} req/s"
        + (f" ({why})" if why else "")
        + "; p50/p99/p99.9 from the scheduled send time when a request waited for a free"
        " connection, else from its actual send; lower is better.\n"
    )
    keepalive = median_of(
        [float(r["rate"]) for r in rows if r["workload"] == "keepalive" and r["gateway"] == "nginx" and r["status"] == "ok"]
    )
    if keepalive:
        out.write(f"nginx's keep-alive median in this run: {fmt(keepalive)} req/s; the offered rate is {100 * target / keepalive:.0f} % of it.\n")
        if target > LATENCY_SATURATED_SHARE * keepalive:
            out.write(
                f"WARNING: that is above {100 * LATENCY_SATURATED_SHARE:.0f} %: the latency rows measure queues at "
                "(or past) capacity, not latency (a peak measured at a fast moment of a drifting machine does this); "
                f"rerun them with --workloads latency --latency-rate {0.7 * keepalive:.0f} "
                "(70 % of this median).\n"
            )
    others = [float(r["cpu_other_pct"]) for r in lat if r.get("cpu_other_pct", "-") not in ("", "-")]
    if others and statistics.median(others) > NOISY_OTHER_PCT:
        out.write(
            f"Other load on the gateway's core was {statistics.median(others):.0f} % (median): the latency tails "
            "measure when the other programs let the gateway run as much as the gateway itself; "
            "compare them only from a quiet machine.\n"
        )
    for r in lat:
        note = r.get("note") or ""
        if "warning:" in note:
            out.write(f"- {r['gateway']}, round {r['round']}: {note.split('warning: ', 1)[1]}\n")


if __name__ == "__main__":
    sys.exit(main())
