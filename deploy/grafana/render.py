#!/usr/bin/env python3
"""Draws deploy/grafana/ringress.json's panels from a real Prometheus, into one PNG.

This is not a Grafana screenshot (Grafana is not packaged where ringress is built):
it runs each panel's own PromQL (`targets[].expr`, with the dashboard's variables set to
"All" and `$__rate_interval` to --rate-interval) against Prometheus's HTTP API —
`query_range` for time series, `query` at the end of the window for stat and table
panels — and draws them in the dashboard's grid (`gridPos`, 24 columns), so the
picture shows exactly what the dashboard's queries return.

    deploy/grafana/render.py --prometheus http://127.0.0.1:9090 \\
        --start UNIX --end UNIX --out docs/dashboard.png

deploy/grafana/demo-scrape.sh does the whole run: ringress under load, Prometheus
scraping it, then this script. Needs matplotlib (pip install matplotlib).
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRID_COLUMNS = 24
BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]


def substitute(expr: str, rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval)
    # Every template variable at "All" (its allValue, `.*`).
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def api(prometheus: str, path: str, params: dict) -> list:
    url = f"{prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]["result"]


def legend(target: dict, metric: dict) -> str:
    fmt = target.get("legendFormat") or ""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)
    labels = {k: v for k, v in metric.items() if k not in ("__name__", "job", "instance")}
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or metric.get("__name__", "value")


def number(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.2f} %"
    if unit == "s" and value > 120:
        return f"{value / 60:.0f} min"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def draw(dashboard: dict, prometheus: str, start: float, end: float, step: str,
         rate_interval: str, out: Path) -> list:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.34  # inches per grid row unit
    width, height = 16.0, rows * unit_h
    figure = plt.figure(figsize=(width, height), facecolor=BACKGROUND)
    empty = []

    def box(pos: dict):
        pad = 0.004
        left = pos["x"] / GRID_COLUMNS + pad
        bottom = 1 - (pos["y"] + pos["h"]) / rows + pad * 2
        return [left, bottom, pos["w"] / GRID_COLUMNS - 2 * pad, pos["h"] / rows - pad * 3]

    for panel in panels:
        kind, title, pos = panel.get("type"), panel.get("title", ""), panel["gridPos"]
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if kind == "row":
            figure.text(pos["x"] / GRID_COLUMNS + 0.005, 1 - (pos["y"] + 0.7) / rows, title,
                        color=TEXT, fontsize=12, weight="bold")
            continue
        left, bottom, w, h = box(pos)
        # Below the axes: a figure draws its patches after its axes when their zorder
        # is equal, which would paint the panel over its own plot.
        figure.patches.append(plt.Rectangle((left, bottom), w, h, transform=figure.transFigure,
                                            facecolor=PANEL, edgecolor="#2c3235", zorder=-1))
        figure.text(left + 0.004, bottom + h - 0.004, title, color=TEXT, fontsize=9,
                    va="top", ha="left")
        # Room inside the panel for its title, and for tick labels on a time series.
        title_room = 0.9 / rows
        if kind == "timeseries":
            rect = [left + 0.032, bottom + 1.1 / rows, w - 0.038, h - title_room - 1.2 / rows]
        else:
            rect = [left + 0.004, bottom + 0.004, w - 0.008, h - title_room - 0.004]
        axes = figure.add_axes(rect, facecolor=PANEL)
        for spine in axes.spines.values():
            spine.set_color("#2c3235" if kind == "timeseries" else PANEL)
        axes.tick_params(colors=MUTED, labelsize=7)
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        if kind == "timeseries":
            drawn = 0
            for target in targets:
                series = api(prometheus, "query_range", {
                    "query": substitute(target["expr"], rate_interval),
                    "start": start, "end": end, "step": step})
                for result in series:
                    points = [(float(t) - start, float(v)) for t, v in result["values"]]
                    if not points:
                        continue
                    xs, ys = zip(*points)
                    axes.plot(xs, ys, linewidth=1.2, color=COLORS[drawn % len(COLORS)],
                              label=legend(target, result["metric"])[:48])
                    drawn += 1
            if drawn == 0:
                empty.append(title)
                axes.text(0.5, 0.5, "no data", color=MUTED, ha="center", transform=axes.transAxes)
            else:
                axes.legend(fontsize=6, loc="upper left", facecolor=PANEL, edgecolor=PANEL,
                            labelcolor=TEXT, ncol=2 if drawn > 4 else 1)
            axes.set_xlabel("seconds into the run", color=MUTED, fontsize=7, labelpad=1)
            axes.grid(color="#2c3235", linewidth=0.5)
        else:
            axes.set_xticks([])
            axes.set_yticks([])
            lines = []
            for target in targets:
                for result in api(prometheus, "query", {
                        "query": substitute(target["expr"], rate_interval), "time": end}):
                    value = float(result["value"][1])
                    lines.append((legend(target, result["metric"]), value))
            if not lines:
                empty.append(title)
                axes.text(0.5, 0.45, "no data", color=MUTED, ha="center", transform=axes.transAxes)
            elif kind == "stat":
                axes.text(0.5, 0.4, number(sum(v for _, v in lines), unit), color=COLORS[0],
                          fontsize=22, ha="center", va="center", transform=axes.transAxes,
                          weight="bold")
            else:
                for i, (name, value) in enumerate(lines[:9]):
                    axes.text(0.02, 0.86 - i * 0.1, name[:90], color=TEXT, fontsize=7,
                              transform=axes.transAxes, va="top")
                    axes.text(0.98, 0.86 - i * 0.1, number(value, unit), color=COLORS[2],
                              fontsize=7, ha="right", transform=axes.transAxes, va="top")
    figure.suptitle(f"{dashboard.get('title', 'ringress')} — drawn from a real Prometheus "
                    f"scrape by deploy/grafana/render.py", color=TEXT, fontsize=11, y=0.998)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=BACKGROUND)
    return empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", type=Path,
                        default=Path(__file__).with_name("ringress.json"))
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--step", default="2s")
    parser.add_argument("--rate-interval", default="10s")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args()
    dashboard = json.loads(args.dashboard.read_text())
    empty = draw(dashboard, args.prometheus, args.start, args.end, args.step,
                 args.rate_interval, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    if empty:
        print("panels without data: " + "; ".join(empty), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
