#!/usr/bin/env python3
"""heatvit's cpu-int8 against ONNX Runtime's int8 DeiT-T, measured in one run.

Alternates, for --rounds rounds: ONNX Runtime (tools/ort_baseline.py: timm DeiT-T, random
weights, quantize_dynamic QInt8 per-channel, 1 thread) and `heatvit-run bench` on the
DeiT-T geometry (random weights, quantised in memory) for cpu-int8 unpruned, cpu-int8 with
top-k at the keep ratios (0.7, 0.49, 0.343) and cpu-f32 unpruned, all with 1 thread.
Interleaving the rounds spreads the machine's load changes over every configuration;
the figure of each configuration is its median over all rounds' medians.

Prints (and with --out writes) one JSON object with the medians and the ratios the
issue's targets are about:
  int8_dense / ort_int8          (target <= 0.8)
  int8_pruned / ort_int8         (target <= 0.35)
  (int8_pruned / int8_dense) / (pruned MACs / dense MACs)   (target within 10% of 1)

Usage:
  ~/hvenv/bin/python tools/bench_vs_ort.py [--heatvit target/release/heatvit-run]
        [--rounds 3] [--runs 20] [--out docs/bench-vs-ort.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RATIOS = "0.7,0.49,0.343"


def heatvit(binary, backend, pruning, runs, extra=()):
    cmd = [binary, "bench", "--synthetic", "deit-tiny", "--backend", backend, "--pruning", pruning,
           "--runs", str(runs), "--warmup", "3", "--threads", "1", "--json", *extra]
    if pruning == "topk":
        cmd += ["--keep-ratios", RATIOS]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ort(runs):
    cmd = [sys.executable, os.path.join(HERE, "ort_baseline.py"), "--json", "--runs", str(runs), "--threads", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heatvit", default="target/release/heatvit-run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out")
    args = ap.parse_args()
    med = {k: [] for k in ("ort_int8", "ort_fp32", "int8_dense", "int8_pruned", "f32_dense")}
    macs = {}
    kept = None
    for r in range(args.rounds):
        o = ort(args.runs)
        med["ort_int8"].append(o["int8"]["median_ms"])
        med["ort_fp32"].append(o["fp32"]["median_ms"])
        for key, backend, pruning in (("int8_dense", "cpu-int8", "none"), ("int8_pruned", "cpu-int8", "topk"),
                                      ("f32_dense", "cpu-f32", "none")):
            h = heatvit(args.heatvit, backend, pruning, args.runs)
            med[key].append(h["median_ms"])
            macs[key] = h["macs"]
            if key == "int8_pruned":
                kept = h["kept_per_stage"]
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in med.items()), file=sys.stderr)
    m = {k: statistics.median(v) for k, v in med.items()}
    res = {
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "threads": 1,
        "keep_ratios": [float(x) for x in RATIOS.split(",")],
        "kept_per_stage": kept,
        "median_ms": {k: round(v, 2) for k, v in m.items()},
        "per_round_ms": med,
        "macs": macs,
        "int8_dense_over_ort_int8": round(m["int8_dense"] / m["ort_int8"], 3),
        "int8_pruned_over_ort_int8": round(m["int8_pruned"] / m["ort_int8"], 3),
        "pruned_latency_ratio": round(m["int8_pruned"] / m["int8_dense"], 3),
        "pruned_mac_ratio": round(macs["int8_pruned"] / macs["int8_dense"], 3),
        "load_before": os.getloadavg()[0],
    }
    res["latency_vs_mac_ratio"] = round(res["pruned_latency_ratio"] / res["pruned_mac_ratio"], 3)
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
