#!/usr/bin/env python3
"""Draws docs/scale.svg from the JSON of `aegis bench scale` runs.

Reads docs/results/bench-scale-{before,after,refresh4s}-{N}.json (any N
present; bench-scale-monitor-{N}.json fills sizes the 4 s series lacks) and
draws, against the number of instances N (log-log), how each registry cost
grows: deliveries and bytes on the whole bus and to one caller process
(counts from nats-server, which do not depend on the build that ran). Before (the whole
registry watched by every caller) dashed, after solid. Plain SVG, no
plotting library needed.

usage: scripts/plot-scale.py [results-dir] [out.svg]
"""

import glob
import json
import math
import os
import re
import sys

RESULTS = sys.argv[1] if len(sys.argv) > 1 else "docs/results"
OUT = sys.argv[2] if len(sys.argv) > 2 else "docs/scale.svg"

PANELS = [
    ("busRegistryMsgsPerS", "registry deliveries on the bus (msgs/s)"),
    ("callerRegistryMsgsPerS", "registry deliveries per caller (msgs/s)"),
    ("callerRegistryBytesPerS", "registry bytes per caller (est., B/s)"),
    ("busRegistryBytesPerS", "registry bytes on the bus (est., B/s)"),
]
COLORS = {"before": "#c0392b", "after": "#2563eb", "refresh4s": "#15803d"}


def load():
    runs = {"before": {}, "after": {}, "refresh4s": {}}
    for path in glob.glob(os.path.join(RESULTS, "bench-scale-*.json")):
        m = re.search(r"bench-scale-(before|after|refresh4s|monitor)-(\d+)\.json$", path)
        if not m:
            continue
        with open(path) as f:
            results = json.load(f)["results"]
        # The later runs (same registry cadence, the new monitor) extend the
        # 4 s series to sizes it did not cover.
        side = "refresh4s" if m.group(1) == "monitor" else m.group(1)
        if m.group(1) == "monitor" and int(m.group(2)) in runs[side]:
            continue
        runs[side][int(m.group(2))] = results
    return runs


def nice_ticks(lo, hi):
    """Powers of ten covering [lo, hi]."""
    a = math.floor(math.log10(lo))
    b = math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10.0**e for e in range(a, b + 1)]


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def panel(x0, y0, w, h, key, title, runs):
    out = []
    pts = {
        side: sorted((n, r[key]) for n, r in data.items() if r.get(key, 0) > 0)
        for side, data in runs.items()
    }
    xs = [n for p in pts.values() for n, _ in p]
    ys = [v for p in pts.values() for _, v in p]
    if not xs:
        return ""
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(min(ys), max(ys))
    lx = lambda n: x0 + (math.log10(n) - math.log10(xt[0])) / (math.log10(xt[-1]) - math.log10(xt[0])) * w
    ly = lambda v: y0 + h - (math.log10(v) - math.log10(yt[0])) / (math.log10(yt[-1]) - math.log10(yt[0])) * h
    out.append(f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="600">{title}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for t in xt:
        out.append(f'<line x1="{lx(t)}" y1="{y0}" x2="{lx(t)}" y2="{y0 + h}" stroke="#eee"/>')
        out.append(f'<text x="{lx(t)}" y="{y0 + h + 16}" text-anchor="middle">{fmt(t)}</text>')
    for t in yt:
        out.append(f'<line x1="{x0}" y1="{ly(t)}" x2="{x0 + w}" y2="{ly(t)}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{ly(t) + 4}" text-anchor="end">{fmt(t)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle">instances N</text>')
    for side, p in pts.items():
        if not p:
            continue
        dash = ' stroke-dasharray="6 4"' if side == "before" else ""
        line = " ".join(f"{lx(n):.1f},{ly(v):.1f}" for n, v in p)
        out.append(f'<polyline points="{line}" fill="none" stroke="{COLORS[side]}" stroke-width="2"{dash}/>')
        for n, v in p:
            out.append(f'<circle cx="{lx(n):.1f}" cy="{ly(v):.1f}" r="3.5" fill="{COLORS[side]}"><title>{side} N={n}: {v:.3g}</title></circle>')
    return "\n".join(out)


def main():
    runs = load()
    w, h, pad = 360, 240, 90
    cols = 2
    rows = math.ceil(len(PANELS) / cols)
    width = cols * (w + pad) + pad
    height = rows * (h + pad + 20) + 80
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Inter, sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{pad}" y="24" font-size="15" font-weight="700">aegis bench scale: registry cost against fleet size (log-log)</text>',
        f'<line x1="{pad}" y1="40" x2="{pad + 30}" y2="40" stroke="{COLORS["before"]}" stroke-width="2" stroke-dasharray="6 4"/>',
        f'<text x="{pad + 36}" y="44">before: every caller watches the whole registry</text>',
        f'<line x1="{pad + 360}" y1="40" x2="{pad + 390}" y2="40" stroke="{COLORS["after"]}" stroke-width="2"/>',
        f'<text x="{pad + 396}" y="44">after: each caller watches the services it uses</text>',
        f'<line x1="{pad}" y1="60" x2="{pad + 30}" y2="60" stroke="{COLORS["refresh4s"]}" stroke-width="2"/>',
        f'<text x="{pad + 36}" y="64">then: unchanged records re-written every 4 s (TTL 15 s), not every 1 s beat (TTL 3 s)</text>',
    ]
    for i, (key, title) in enumerate(PANELS):
        r, c = divmod(i, cols)
        parts.append(panel(pad + c * (w + pad), 110 + r * (h + pad + 20), w, h, key, title, runs))
    parts.append("</svg>")
    with open(OUT, "w") as f:
        f.write("\n".join(parts) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
