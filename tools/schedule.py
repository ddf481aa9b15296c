#!/usr/bin/env python3
"""Latency-aware choice of the selector schedule from a measured block-latency table.

HeatViT (§1.5 of ../shared/reference/heatvit-facts.md) measures a keep-ratio -> block-
latency look-up table on the target and uses it to choose where the selectors go and
their average (cumulative) keep ratios for a latency budget.  This script does that
choice from the table `heatvit-run bench --block-lut --json` prints (one JSON line per
token count, `tokens` includes the CLS token):

  heatvit-run bench --model models/fmnist-heatvit --block-lut --backend cpu-int8 \\
      --threads 1 --runs 200 --json > lut.jsonl
  python3 tools/schedule.py --lut lut.jsonl --depth 6 --n0 49 --stages 3 --budget 0.55

The predicted latency of a schedule is the sum over blocks of the table's latency at that
block's token count (CLS + kept patches + one package token after the first selector),
linearly interpolated, over the dense sum.  Every placement of --stages selectors in
blocks 1..depth-1 and every non-increasing cumulative keep ratio on a 0.05 grid is
tried; among the schedules within the budget, the rule ranks first those whose smallest
per-stage keep fraction (rho_s / rho_(s-1)) is largest -- no single selector has to
drop much at once, the failure mode seen when a late selector was asked for 0.2/0.35
of its input (run 3 in models/fmnist-heatvit/MODEL_CARD.md) -- then those using
the budget most fully, then the later placements.  Prints the top --show schedules and,
with --evaluate, the prediction for given schedules.
"""
import argparse
import itertools
import json
import sys


def load_lut(path):
    pts = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                pts.append((r["tokens"], r["median_us"]))
    if len(pts) < 2:
        sys.exit(f"{path}: need at least two JSON lines from `bench --block-lut --json`")
    return sorted(pts)


def interp(lut, tokens):
    if tokens <= lut[0][0]:
        (t0, y0), (t1, y1) = lut[0], lut[1]
    elif tokens >= lut[-1][0]:
        (t0, y0), (t1, y1) = lut[-2], lut[-1]
    else:
        i = next(i for i in range(1, len(lut)) if lut[i][0] >= tokens)
        (t0, y0), (t1, y1) = lut[i - 1], lut[i]
    return y0 + (y1 - y0) * (tokens - t0) / (t1 - t0)


def predict(lut, depth, n0, locations, keeps):
    total = 0.0
    for b in range(depth):
        stage = sum(1 for loc in locations if loc <= b)
        if stage == 0:
            tokens = 1 + n0
        else:
            tokens = 1 + round(keeps[stage - 1] * n0) + 1
        total += interp(lut, tokens)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lut", required=True)
    ap.add_argument("--depth", type=int, required=True)
    ap.add_argument("--n0", type=int, required=True, help="patch tokens")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--budget", type=float, required=True, help="latency budget as a fraction of dense")
    ap.add_argument("--show", type=int, default=5)
    ap.add_argument("--evaluate", action="append", default=[],
                    help="LOCS:KEEPS, e.g. 1,2,4:0.7,0.5,0.3 (repeatable)")
    a = ap.parse_args()
    lut = load_lut(a.lut)
    dense = predict(lut, a.depth, a.n0, [], [])
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    cands = []
    for locs in itertools.combinations(range(1, a.depth), a.stages):
        for keeps in itertools.combinations_with_replacement(sorted(grid, reverse=True), a.stages):
            rel = predict(lut, a.depth, a.n0, locs, keeps) / dense
            if rel > a.budget:
                continue
            steps = [keeps[0]] + [keeps[i] / keeps[i - 1] for i in range(1, len(keeps))]
            cands.append((min(steps), rel, locs, keeps))
    cands.sort(key=lambda c: (-round(c[0], 3), -c[1], [-x for x in c[2]]))
    print(f"dense blocks: {dense:.1f} us predicted from {a.lut}; budget {a.budget:.2f} "
          f"({len(cands)} schedules fit)")
    print("| locations | cumulative keep | min per-stage keep | predicted latency (% of dense) |")
    print("|---|---|---|---|")
    for m, rel, locs, keeps in cands[:a.show]:
        print(f"| {list(locs)} | {list(keeps)} | {m:.3f} | {100 * rel:.1f} |")
    for e in a.evaluate:
        locs, keeps = e.split(":")
        locs = [int(v) for v in locs.split(",")]
        keeps = [float(v) for v in keeps.split(",")]
        rel = predict(lut, a.depth, a.n0, locs, keeps) / dense
        steps = [keeps[0]] + [keeps[i] / keeps[i - 1] for i in range(1, len(keeps))]
        print(f"evaluate {locs} {keeps}: min per-stage keep {min(steps):.3f}, "
              f"predicted latency {100 * rel:.1f}% of dense")
    if not cands:
        sys.exit("no schedule fits the budget")


if __name__ == "__main__":
    main()
