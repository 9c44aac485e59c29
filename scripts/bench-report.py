#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`make bench`'s report: the thin table (results/bench.txt, after the linear one) and its
plot (results/bench.svg), from the raw lines bench-thin-guest.sh wrote.

usage: bench-report.py RAW_THIN OUT_TXT OUT_SVG [RAW_SCALE]
RAW_THIN lines: ROUND WORKLOAD JOBS TARGET IOPS.
RAW_SCALE lines (bench-scale-guest.sh): ROUND MAPPINGS TARGET IOPS META_BEFORE META_AFTER
COMMIT_MS; the cost-growth table goes after the thin one.
Ratios are taken within a round (the targets ran back to back), then their median over
rounds is reported with the lowest and highest: the spread.
"""
import statistics
import sys
from collections import defaultdict

import os

raw, out_txt, out_svg = sys.argv[1:4]
raw_scale = sys.argv[4] if len(sys.argv) > 4 else None
iops = defaultdict(dict)  # (workload, jobs) -> {(round, target): iops}
order = []
for line in (open(raw) if os.path.exists(raw) else []):
    f = line.split()
    if len(f) != 5:
        continue
    r, w, j, t, v = int(f[0]), f[1], int(f[2]), f[3], float(f[4])
    if (w, j) not in order:
        order.append((w, j))
    iops[w, j][r, t] = v

GOALS = {"provision": 1.5, "snap_break": 1.5}
LINEAR_GOALS = {"read_mapped": 0.9, "provision_skz": 0.7}


def med(key, tgt):
    vals = [v for (r, t), v in iops[key].items() if t == tgt]
    return statistics.median(vals) if vals else None


def ratio(key, a, b):
    rounds = sorted({r for (r, _) in iops[key]})
    rs = [iops[key][r, a] / iops[key][r, b] for r in rounds
          if (r, a) in iops[key] and (r, b) in iops[key] and iops[key][r, b] > 0]
    if not rs:
        return None
    return statistics.median(rs), min(rs), max(rs), len(rs)


def fmt(x):
    if x is None:
        return "-"
    m, lo, hi, _ = x
    return f"{m:.2f} [{lo:.2f}-{hi:.2f}]"


lines = []
nr = max((len({r for (r, _) in d}) for d in iops.values()), default=0)
lines.append(f"thin: fio psync direct IO, 64 KiB blocks; median IOPS over {nr} rounds; "
             "ratios: median [lowest-highest] of per-round ratios")
hdr = (f"{'workload':14} {'jobs':>4} {'dm-thin':>9} {'rthin':>9} {'dm-linear':>9} "
       f"{'rthin/dm-thin':>18} {'goal':>5} {'rthin/linear':>18} {'dm-thin/linear':>18}")
lines.append(hdr)
misses = []
for key in order:
    w, j = key
    a, b, c = med(key, "thin"), med(key, "rthin"), med(key, "linear")
    rt, rl, tl = ratio(key, "rthin", "thin"), ratio(key, "rthin", "linear"), ratio(key, "thin", "linear")
    goal = GOALS.get(w, 1.0)
    if rt and rt[0] < goal:
        misses.append(f"{w} jobs={j}: rthin/dm-thin {rt[0]:.2f} < {goal}")
    lg = LINEAR_GOALS.get(w)
    if lg and rl and rl[0] < lg:
        misses.append(f"{w} jobs={j}: rthin/linear {rl[0]:.2f} < {lg}")
    lines.append(f"{w:14} {j:>4} {a or 0:>9.0f} {b or 0:>9.0f} {(c or 0):>9.0f} "
                 f"{fmt(rt):>18} {goal:>5} {fmt(rl):>18} {fmt(tl):>18}")
lines.append("goals missed: " + ("; ".join(misses) if misses else "none"))
if not order:
    lines = []

# Cost growth: per mapping count, each target's median over rounds.
if raw_scale and os.path.exists(raw_scale):
    sc = defaultdict(list)  # (mappings, target) -> [(round, iops, before, after, commit_ms)]
    for line in open(raw_scale):
        f = line.split()
        if len(f) == 7:
            sc[int(f[1]), f[2]].append((int(f[0]), float(f[3]), int(f[4]), int(f[5]), float(f[6])))
    ns = sorted({n for n, _ in sc})
    lines.append("")
    lines.append("cost growth: 4096 provisions (4 KiB writes, zeroing on, spread over the mapping "
                 "tree) into a pool already holding N mappings; medians over rounds")
    lines.append(f"{'mappings':>9} {'dm-thin IOPS':>12} {'rthin IOPS':>10} {'rthin/dm-thin':>18} "
                 f"{'metadata blocks (dm-thin, rthin)':>33} {'fsync commit ms (dm-thin, rthin)':>33}")
    for n in ns:
        a, b = sc.get((n, "thin"), []), sc.get((n, "rthin"), [])
        byr = {r: v for r, v, *_ in a}
        rs = [v / byr[r] for r, v, *_ in b if byr.get(r)]
        rt = (statistics.median(rs), min(rs), max(rs), len(rs)) if rs else None
        def m(xs, i):
            return statistics.median(x[i] for x in xs) if xs else 0
        meta = f"{m(a, 2):.0f}->{m(a, 3):.0f}, {m(b, 2):.0f}->{m(b, 3):.0f}"
        lines.append(f"{n:>9} {m(a, 1):>12.0f} {m(b, 1):>10.0f} {fmt(rt):>18} {meta:>33} "
                     f"{m(a, 4):>15.1f}, {m(b, 4):<16.1f}")
with open(out_txt, "a") as f:
    f.write("\n".join(lines) + "\n")

if not order:
    sys.exit(0)
# The plot: per workload and job count, each target's median IOPS relative to dm-thin's.
colours = {"thin": "#4e79a7", "rthin": "#e15759", "linear": "#59a14f"}
names = {"thin": "dm-thin", "rthin": "rthin", "linear": "dm-linear"}
groups = [(k, {t: med(k, t) for t in colours}) for k in order]
top = max([v / g["thin"] for _, g in groups for v in g.values() if v and g["thin"]] + [1.0])
W, H, left, bottom, gw = 60 + 70 * len(groups), 360, 50, 90, 70
scale = (H - bottom - 30) / top
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<text x="{left}" y="16" font-size="13">IOPS relative to dm-thin (median of {nr} rounds)</text>']
y0 = H - bottom
for tick in range(0, int(top) + 2):
    y = y0 - tick * scale
    if y < 20:
        break
    svg.append(f'<line x1="{left}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
for i, ((w, j), g) in enumerate(groups):
    x = left + 10 + i * gw
    base = g["thin"]
    k = 0
    for t in colours:
        v = g[t]
        if v is None or not base:
            continue
        h = v / base * scale
        svg.append(f'<rect x="{x + k * 18}" y="{y0 - h:.1f}" width="16" height="{h:.1f}" fill="{colours[t]}">'
                   f'<title>{names[t]} {v:.0f} IOPS</title></rect>')
        k += 1
    svg.append(f'<text transform="translate({x + 20},{y0 + 10}) rotate(40)">{w} j{j}</text>')
for k, t in enumerate(colours):
    svg.append(f'<rect x="{W - 110}" y="{24 + k * 16}" width="12" height="12" fill="{colours[t]}"/>')
    svg.append(f'<text x="{W - 94}" y="{34 + k * 16}">{names[t]}</text>')
svg.append("</svg>")
with open(out_svg, "w") as f:
    f.write("\n".join(svg) + "\n")
print("\n".join(lines))
