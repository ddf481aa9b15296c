#!/usr/bin/env python3
"""Compares two `heatvit-run --json --trace` outputs (host vs. aarch64 under qemu).

Exact: image order, backend, top-5 class indices, every stage's token counts and kept patch
indices, MAC counts, and (when present on both sides) integer-backend logits. Within 1e-4:
top-5 probabilities and float logits -- float GEMMs use FMA kernels of different widths on
x86-64 and NEON, so the last bits of an f32 sum may differ; decisions may not.
Exits 1 with every difference listed.
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(a_path, b_path):
    a, b = load(a_path), load(b_path)
    errors = []
    if len(a) != len(b):
        errors.append(f"{len(a)} records vs {len(b)}")
    for ra, rb in zip(a, b):
        name = ra.get("image")
        if ra.get("image") != rb.get("image"):
            errors.append(f"image order differs: {ra.get('image')} vs {rb.get('image')}")
            continue
        if "error" in ra or "error" in rb:
            if ra.get("error") != rb.get("error"):
                errors.append(f"{name}: error {ra.get('error')!r} vs {rb.get('error')!r}")
            continue
        for key in ("backend", "pruning", "macs", "dense_macs"):
            if ra[key] != rb[key]:
                errors.append(f"{name}: {key} {ra[key]} vs {rb[key]}")
        ca = [t["class"] for t in ra["top5"]]
        cb = [t["class"] for t in rb["top5"]]
        if ca != cb:
            errors.append(f"{name}: top-5 classes {ca} vs {cb}")
        for ta, tb in zip(ra["top5"], rb["top5"]):
            if abs(ta["prob"] - tb["prob"]) > 1e-4:
                errors.append(f"{name}: class {ta['class']} prob {ta['prob']} vs {tb['prob']}")
        if ra["stages"] != rb["stages"]:
            errors.append(f"{name}: stages differ:\n  {ra['stages']}\n  {rb['stages']}")
        la, lb = ra.get("logits"), rb.get("logits")
        if la is not None and lb is not None:
            exact = ra["backend"] != "cpu-f32"
            worst = max((abs(x - y) for x, y in zip(la, lb)), default=0.0)
            if len(la) != len(lb) or (exact and la != lb) or worst > 1e-4:
                errors.append(f"{name}: logits differ (max |diff| {worst}, exact required: {exact})")
    if errors:
        print("host and aarch64 outputs DIFFER:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    print(f"host and aarch64 outputs agree on {len(a)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
