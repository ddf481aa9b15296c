"""Evaluation with the spec's inference semantics (shared/spec/heatvit-model.md §2-§4).

`infer_one` is a literal, per-image implementation: deterministic decisions (no Gumbel,
no masks), physical compaction to `[CLS, kept (original order), P_1 .. P_s]`, one
package token per stage that pruned anything.  `evaluate_exact` runs it over a data set;
`evaluate_masked` is the fast batched equivalent used during training.

CLI: evaluate an exported model directory (config.json + model.safetensors):
    python tools/train/evaluate.py --model-dir models/fmnist-heatvit [--limit N]
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from model import HeatViT  # noqa: E402


@torch.no_grad()
def infer_one(model, img, mode="adaptive", threshold=0.5, keep_ratios=None):
    """img: normalized [3,S,S].  Returns (logits [C], kept_per_stage list[int],
    packages_per_stage list[int], macs int, kept_indices list[list[int]])."""
    x = model.embed(img.unsqueeze(0))[0]
    n0 = model.num_patches
    cls, patches, pkgs = x[0:1], x[1:], []
    idx = torch.arange(n0)
    locs = {} if mode == "none" else {loc: s for s, loc in enumerate(model.locations)}
    macs = model.patch_embed_macs() + model.head_macs()
    kept, npk, kept_idx = [], [], []
    for i, blk in enumerate(model.blocks):
        if i in locs:
            s = locs[i]
            n = patches.shape[0]
            if n > 0:
                macs += model.selector_macs(n)
                p = model.selectors[s](patches.unsqueeze(0))[0]      # global = mean of n rows
                if mode == "adaptive":
                    keep = p >= threshold
                elif mode == "topk":
                    k = math.ceil(keep_ratios[s] * n0)
                    if n <= k:
                        keep = torch.ones(n, dtype=torch.bool)
                    else:
                        order = torch.sort(p, descending=True, stable=True).indices
                        keep = torch.zeros(n, dtype=torch.bool)
                        keep[order[:k]] = True
                else:
                    raise ValueError(mode)
                pruned = ~keep
                if bool(pruned.any()):
                    pr, xr = p[pruned], patches[pruned]
                    ssum = pr.sum()
                    if float(ssum) > 0:
                        pkg = (pr[:, None] * xr).sum(0) / ssum
                    else:
                        pkg = xr.mean(0)
                    pkgs.append(pkg.unsqueeze(0))
                patches, idx = patches[keep], idx[keep]
            kept.append(int(patches.shape[0]))
            npk.append(len(pkgs))
            kept_idx.append(idx.tolist())
        seq = torch.cat([cls, patches] + pkgs, dim=0)
        macs += int(model.block_macs(seq.shape[0]))
        seq = blk(seq.unsqueeze(0))[0]
        n = patches.shape[0]
        cls, patches = seq[0:1], seq[1:1 + n]
        pkgs = [seq[1 + n + j:2 + n + j] for j in range(len(pkgs))]
    logits = model.head(model.norm(cls))[0]
    return logits, kept, npk, macs, kept_idx


def _summary(correct, kept, macs, n0, dense_macs):
    r = {
        "top1": round(100.0 * correct / max(1, len(macs)), 2),
        "images": len(macs),
        "mean_macs": round(sum(macs) / max(1, len(macs))),
        "mac_reduction_pct": round(100.0 * (1 - sum(macs) / max(1, len(macs)) / dense_macs), 2),
    }
    if kept and kept[0]:
        st = len(kept[0])
        means = [sum(k[s] for k in kept) / len(kept) for s in range(st)]
        r["mean_kept_patches"] = [round(m, 2) for m in means]
        r["mean_keep_ratio"] = [round(m / n0, 4) for m in means]
        r["min_kept_patches"] = [min(k[s] for k in kept) for s in range(st)]
        r["max_kept_patches"] = [max(k[s] for k in kept) for s in range(st)]
    return r


@torch.no_grad()
def evaluate_exact(model, imgs_u8, labels, mode, threshold=0.5, keep_ratios=None):
    model.eval()
    correct, kept, macs = 0, [], []
    x_all = data.to_input(imgs_u8)
    for j in range(len(labels)):
        logits, k, _, m, _ = infer_one(model, x_all[j], mode, threshold, keep_ratios)
        correct += int(int(logits.argmax()) == int(labels[j]))
        kept.append(k)
        macs.append(m)
    return _summary(correct, kept, macs, model.num_patches, model.dense_macs())


@torch.no_grad()
def evaluate_masked(model, imgs_u8, labels, mode, threshold=0.5, keep_ratios=None,
                    n_stages=None, batch=500):
    model.eval()
    correct, kept, macs = 0, [], []
    for j in range(0, len(labels), batch):
        x = data.to_input(imgs_u8[j:j + batch])
        logits, k, _, m = model.forward_masked_eval(x, mode, threshold, keep_ratios, n_stages)
        correct += int((logits.argmax(1) == labels[j:j + batch]).sum())
        kept += k.tolist()
        macs += m.tolist()
    return _summary(correct, kept, macs, model.num_patches, model.dense_macs())


def full_report(model, imgs_u8, labels, exact=True, log=print):
    """Dense, adaptive at 0.4/0.5/0.6, and topk at keep ratios matched to adaptive 0.5."""
    ev = evaluate_exact if exact else evaluate_masked
    rows = {}
    t0 = time.time()
    rows["dense"] = ev(model, imgs_u8, labels, "none")
    log(f"dense: {rows['dense']}")
    for thr in (0.4, 0.5, 0.6):
        rows[f"adaptive@{thr}"] = ev(model, imgs_u8, labels, "adaptive", thr)
        log(f"adaptive@{thr}: {rows[f'adaptive@{thr}']}")
    matched = rows["adaptive@0.5"].get("mean_keep_ratio")
    if matched:
        rows["topk@matched"] = ev(model, imgs_u8, labels, "topk", keep_ratios=matched)
        rows["topk@matched"]["keep_ratios"] = matched
        log(f"topk@matched {matched}: {rows['topk@matched']}")
    rows["seconds"] = round(time.time() - t0, 1)
    rows["method"] = "exact per-image compaction (evaluate.infer_one)" if exact else \
        "batched, exact -inf key masks (model.forward_masked_eval)"
    return rows


def load_model_dir(model_dir):
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    pr = cfg.get("pruning", {})
    model = HeatViT(image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                    embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                    mlp_ratio=cfg["mlp_ratio"], num_classes=cfg["num_classes"],
                    ln_eps=cfg["ln_eps"], locations=pr.get("locations", []))
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{model_dir}: missing {missing}, unexpected {unexpected}")
    if abs(cfg["mean"][0] - data.MEAN) > 1e-6 or abs(cfg["std"][0] - data.STD) > 1e-6:
        raise SystemExit("config mean/std differ from tools/train/data.py")
    return model.eval(), cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data-dir", default=data.DEFAULT_DIR)
    ap.add_argument("--limit", type=int, default=0, help="only the first N test images")
    ap.add_argument("--masked", action="store_true", help="fast batched evaluation")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg = load_model_dir(args.model_dir)
    imgs, labels = data.load_split("t10k", args.data_dir)
    if args.limit:
        imgs, labels = imgs[:args.limit], labels[:args.limit]
    if model.locations:
        rep = full_report(model, imgs, labels, exact=not args.masked)
    else:
        ev = evaluate_masked if args.masked else evaluate_exact
        rep = {"dense": ev(model, imgs, labels, "none")}
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
