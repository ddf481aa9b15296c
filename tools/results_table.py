#!/usr/bin/env python3
"""Builds the accuracy-versus-pruning table of docs/results.md, measured by the runtime.

Every figure comes from `heatvit-run eval --json` on the full test split (top-1, mean kept
patch tokens per stage, MACs as % of dense, mean forward latency per image on 1 thread):

  the dense model (--dense-model: no selectors, the teacher the selector stages started from)
  a dense control (--dense-control: the teacher trained further for as many epochs as the
    selector stages took, so that the pruned model's extra training is not counted as a gain)
  the HeatViT model's own backbone with pruning off (float, --pruning none)
  HeatViT adaptive at each --thresholds value (float)
  DynamicViT-style top-k with the keep ratios matched to adaptive at --match (the mean
    kept tokens per stage / N0), same backbone and selectors
  EViT-style attention keep (--pruning evit) at the same matched ratios, same backbone
  the int8 model (cpu-int8) with pruning off and adaptive at each threshold

Usage:
  python3 tools/results_table.py --model models/fmnist-heatvit --qmodel models/fmnist-heatvit-int8 \
      [--dense-model models/fmnist-deit-dense] [--dense-control models/fmnist-deit-dense-control] --dataset /usr/share/datasets/fashion-mnist [--thresholds 0.4,0.5,0.6] [--match 0.5] \
      [--limit N] [--heatvit target/release/heatvit-run] [--json-out docs/results.json]
Prints the markdown table on stdout.
"""
import argparse
import json
import subprocess
import sys


def ev(binary, model, dataset, limit, *extra):
    cmd = [binary, "eval", "--model", model, "--dataset", dataset, "--json", *extra]
    if limit:
        cmd += ["--limit", str(limit)]
    print("$ " + " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["command"] = " ".join(["heatvit-run"] + cmd[1:])
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--qmodel")
    ap.add_argument("--dense-model", help="the dense model without selectors (the teacher)")
    ap.add_argument("--dense-control", help="the teacher trained as long as the selector stages (no selectors)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--thresholds", default="0.4,0.5,0.6")
    ap.add_argument("--match", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--n0", type=int, default=49, help="patch tokens of the model")
    ap.add_argument("--heatvit", default="target/release/heatvit-run")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    ths = [float(t) for t in a.thresholds.split(",")]
    rows = []
    f32 = ["--backend", "cpu-f32"]
    if a.dense_model:
        rows.append(("dense model (no selectors; the teacher)", "float",
                     ev(a.heatvit, a.dense_model, a.dataset, a.limit, *f32, "--pruning", "none")))
    if a.dense_control:
        rows.append(("dense control (the teacher trained as long as the selector stage)", "float",
                     ev(a.heatvit, a.dense_control, a.dataset, a.limit, *f32, "--pruning", "none")))
    rows.append(("HeatViT backbone, pruning off", "float",
                 ev(a.heatvit, a.model, a.dataset, a.limit, *f32, "--pruning", "none")))
    matched = None
    for t in ths:
        r = ev(a.heatvit, a.model, a.dataset, a.limit, *f32, "--pruning", "adaptive", "--threshold", str(t))
        rows.append((f"HeatViT adaptive, threshold {t}", "float", r))
        if abs(t - a.match) < 1e-9:
            matched = r
    if matched is None:
        sys.exit("--match must be one of --thresholds")
    ratios = ",".join(f"{max(k, 1) / a.n0:.4f}" for k in matched["mean_kept_per_stage"])
    rows.append((f"top-k (DynamicViT-style) at adaptive {a.match}'s mean keep", "float",
                 ev(a.heatvit, a.model, a.dataset, a.limit, *f32, "--pruning", "topk", "--keep-ratios", ratios)))
    rows.append((f"attention keep (EViT-style) at the same ratios", "float",
                 ev(a.heatvit, a.model, a.dataset, a.limit, *f32, "--pruning", "evit", "--keep-ratios", ratios)))
    if a.qmodel:
        i8 = ["--backend", "cpu-int8"]
        rows.append(("HeatViT backbone, pruning off", "int8", ev(a.heatvit, a.qmodel, a.dataset, a.limit, *i8, "--pruning", "none")))
        for t in ths:
            rows.append((f"HeatViT adaptive, threshold {t}", "int8",
                         ev(a.heatvit, a.qmodel, a.dataset, a.limit, *i8, "--pruning", "adaptive", "--threshold", str(t))))
    print("| row | arithmetic | top-1 | mean patch tokens kept per stage | MACs (% of dense) | CPU latency (ms/image) |")
    print("|---|---|---|---|---|---|")
    for name, arith, r in rows:
        kept = " / ".join(f"{k:.1f}" for k in r["mean_kept_per_stage"]) or "49 (all)"
        print(f"| {name} | {arith} | {100 * r['top1']:.2f}% | {kept} | {r['macs_pct_of_dense']:.1f}% | {r['mean_forward_ms']:.3f} |")
    print(f"\nMatched keep ratios: {ratios}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump([{"row": n, "arithmetic": ar, **r} for n, ar, r in rows], f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
