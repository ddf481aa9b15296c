#!/usr/bin/env python3
"""Compares two `heatvit-run --json --trace --logits` outputs (host vs. aarch64 under qemu).

Exact: the image list and order, model, backend, pruning, top-5 class indices, every
stage's token counts and kept patch indices, MAC counts, and the logits of an integer
backend. Within 1e-4: top-5 probabilities and float logits -- the float GEMMs sum in a
different order with FMA on x86-64 and NEON on aarch64, so an f32 result may differ in its
last bits; the pruning decisions and the ranking may not.
Exits 1 listing every difference (also when --trace or --logits data is missing), 2 when
the first file has no records.
Usage: ci/compare-json.py HOST.jsonl OTHER.jsonl
"""
import json
import sys

TOL = 1e-4
FLOAT_BACKENDS = {"cpu-f32"}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(a, b):
    errors = []
    if len(a) != len(b):
        errors.append(f"{len(a)} records vs {len(b)}")
    for ra, rb in zip(a, b):
        name = ra.get("image")
        if name != rb.get("image"):
            errors.append(f"image order differs: {name} vs {rb.get('image')}")
            continue
        if "error" in ra or "error" in rb:
            errors.append(f"{name}: failed: {ra.get('error')!r} vs {rb.get('error')!r}")
            continue
        for key in ("model", "trained", "backend", "pruning", "macs", "dense_macs"):
            if ra.get(key) != rb.get(key):
                errors.append(f"{name}: {key} {ra.get(key)!r} vs {rb.get(key)!r}")
        ca = [t["class"] for t in ra["top5"]]
        cb = [t["class"] for t in rb["top5"]]
        if ca != cb:
            errors.append(f"{name}: top-5 classes {ca} vs {cb}")
        for ta, tb in zip(ra["top5"], rb["top5"]):
            if abs(ta["prob"] - tb["prob"]) > TOL:
                errors.append(f"{name}: class {ta['class']} prob {ta['prob']} vs {tb['prob']}")
        if len(ra["stages"]) != len(rb["stages"]):
            errors.append(f"{name}: {len(ra['stages'])} pruning stages vs {len(rb['stages'])}")
        for sa, sb in zip(ra["stages"], rb["stages"]):
            where = f"{name}: block {sa.get('block')}"
            for key in ("block", "tokens_in", "kept", "packages"):
                if sa.get(key) != sb.get(key):
                    errors.append(f"{where}: {key} {sa.get(key)} vs {sb.get(key)}")
            ka, kb = sa.get("kept_patch_indices"), sb.get("kept_patch_indices")
            if ka is None or kb is None:
                errors.append(f"{where}: no kept_patch_indices (run with --trace)")
            elif ka != kb:
                only_a, only_b = sorted(set(ka) - set(kb)), sorted(set(kb) - set(ka))
                errors.append(f"{where}: kept patches differ: only in first {only_a}, "
                              f"only in second {only_b}" + ("" if only_a or only_b else " (order)"))
        la, lb = ra.get("logits"), rb.get("logits")
        if la is None or lb is None:
            errors.append(f"{name}: logits missing (run with --logits)")
        elif len(la) != len(lb):
            errors.append(f"{name}: {len(la)} logits vs {len(lb)}")
        else:
            worst = max((abs(x - y) for x, y in zip(la, lb)), default=0.0)
            exact = ra.get("backend") not in FLOAT_BACKENDS
            if (exact and la != lb) or worst > TOL:
                errors.append(f"{name}: logits differ, max |diff| {worst:.3g} "
                              f"({'bit-exact' if exact else f'tolerance {TOL}'} required)")
    return errors


def main(a_path, b_path):
    a, b = load(a_path), load(b_path)
    if not a:
        print(f"compare-json: no records in {a_path}", file=sys.stderr)
        return 2
    errors = compare(a, b)
    if errors:
        print(f"compare-json: {a_path} and {b_path} DIFFER:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    worst = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["logits"], rb["logits"]))
    kept = sum(len(s["kept_patch_indices"]) for r in a for s in r["stages"])
    print(f"compare-json: {len(a)} images agree: top-5 classes, {kept} kept patch indices, "
          f"MACs exact; max |logit diff| {worst:.3g} (tolerance {TOL})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
