"""Which patch tokens can a trained dense model lose without retraining?

Drops a fixed fraction of the 49 patch tokens before one block of a dense model (no
selector, no fine-tuning) and measures top-1 on Fashion-MNIST test images, for three
rules: keep the brightest patches (drop the background, what a selector learns first),
the same plus one package token (mean of the dropped tokens, spec §3), and a random
keep of the same size. Dropped tokens are masked out of every later block's keys.

    ~/hvenv/bin/python tools/train/probe_background.py --model-dir /work/runs/fmnist2/export-dense

Finding (docs/results.md): the dense model needs its background tokens; dropping them
costs far more than dropping random ones, which is why the selector stages must retrain
the backbone.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import load_split, to_input  # noqa: E402
from evaluate import load_model_dir  # noqa: E402


@torch.no_grad()
def accuracy(model, imgs, labels, loc, keep_frac, rule, package, seed=0, batch=500):
    gen = torch.Generator().manual_seed(seed)
    n0 = model.num_patches
    p = model.patch_size
    g = model.image_size // p
    correct = 0
    for i in range(0, len(imgs), batch):
        u8 = imgs[i:i + batch]
        b = u8.shape[0]
        pat = u8.float().reshape(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, n0, p * p)
        score = pat.mean(-1) if rule == "bright" else torch.rand(b, n0, generator=gen)
        k = math.ceil(keep_frac * n0)
        live = torch.zeros(b, n0, dtype=torch.bool)
        live.scatter_(1, score.argsort(1, descending=True)[:, :k], True)
        h = model.embed(to_input(u8))
        extra = []
        for j, blk in enumerate(model.blocks):
            if j == loc and package and k < n0:
                dropped = (~live).float()
                pkg = (dropped[..., None] * h[:, 1:1 + n0]).sum(1, keepdim=True) / dropped.sum(1).clamp_min(1)[:, None, None]
                h = torch.cat([h, pkg], 1)
                extra = [torch.ones(b, 1, dtype=torch.bool)]
            if j >= loc:
                h = blk(h, key_mask=torch.cat([torch.ones(b, 1, dtype=torch.bool), live] + extra, 1))
            else:
                h = blk(h)
        logits = model.head(model.norm(h)[:, 0])
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return 100.0 * correct / len(imgs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="an exported dense model directory")
    ap.add_argument("--count", type=int, default=3000, help="test images (first N)")
    ap.add_argument("--locations", default="1,2,3")
    ap.add_argument("--keep", default="0.9,0.7,0.5")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, _ = load_model_dir(args.model_dir)
    imgs, labels = load_split("t10k")
    imgs, labels = imgs[:args.count], labels[:args.count]
    print(f"dense: {accuracy(model, imgs, labels, 99, 1.0, 'bright', False):.2f}% on {len(imgs)} test images")
    print("| before block | keep | brightest | brightest + package | random |")
    print("|---|---|---|---|---|")
    for loc in map(int, args.locations.split(",")):
        for kf in map(float, args.keep.split(",")):
            r = [accuracy(model, imgs, labels, loc, kf, rule, pkg)
                 for rule, pkg in (("bright", False), ("bright", True), ("random", False))]
            print(f"| {loc} | {kf} | " + " | ".join(f"{v:.2f}" for v in r) + " |", flush=True)


if __name__ == "__main__":
    main()
