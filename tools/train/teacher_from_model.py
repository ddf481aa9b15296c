"""Turn a committed dense runtime model directory into a teacher state dict for run.py.

    ~/hvenv/bin/python tools/train/teacher_from_model.py models/fmnist-deit-dense /work/runs/teacher13.pt
    ~/hvenv/bin/python tools/train/run.py --run-dir ... --init-from /work/runs/teacher13.pt --dense-epochs 0 ...

A fresh machine has the committed models but none of the run directories they came from.
This writes OUT (the float32 state dict, timm key names, as run.py's dense_final.pt) and
OUT.lineage.json: the dense cycles the model descends from, read from its model_card.json,
so that a model trained from OUT still lists them in its card (export.dense_lineage).
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model import HeatViT  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out")
    args = ap.parse_args()
    card_path = os.path.join(args.model_dir, "model_card.json")
    try:
        with open(card_path) as f:
            card = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{card_path}: {e}")
    recipe = card.get("recipe") or {}
    sd = load_file(os.path.join(args.model_dir, "model.safetensors"))
    if any(k.startswith("selectors.") for k in sd):
        raise SystemExit(f"{args.model_dir}: has selector weights; a teacher must be a dense model")
    # the state dict must load into the training model exactly (no missing or extra keys)
    geo = recipe.get("geometry")
    if not geo:
        raise SystemExit(f"{card_path}: no recipe.geometry")
    HeatViT(locations=[], **geo).load_state_dict(sd, strict=True)
    dense_hist = [h for h in card.get("history", []) if h.get("phase") == "dense"]
    # its own cycle, from its card, named by the run directory it trained in (older cards lack it)
    own = {"run_dir": card.get("run_dir") or os.path.normpath(args.model_dir),
           "epochs": recipe.get("dense", {}).get("epochs"), "lr": recipe.get("dense", {}).get("lr"),
           "history": dense_hist,
           "train_seconds": max([h.get("train_seconds_total", 0) for h in dense_hist] or [0])}
    lineage = list(card.get("dense_lineage") or []) + [own]
    torch.save(sd, args.out)
    with open(args.out + ".lineage.json", "w") as f:
        json.dump(lineage, f)
    last = dense_hist[-1]["test_top1"] if dense_hist else "n/a"
    print(f"{args.out}: {len(sd)} tensors; {len(lineage)} dense cycles, the last ending at {last}%")


if __name__ == "__main__":
    main()
