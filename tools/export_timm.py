#!/usr/bin/env python3
"""Exports a timm DeiT as a heatvit model directory.

    ~/hvenv/bin/python tools/export_timm.py deit_tiny_patch16_224 models/deit-tiny --pretrained

Writes OUT_DIR/model.safetensors (timm's state dict as is: float32, timm key names, no
renaming), OUT_DIR/config.json (the spec's config, pruning mode "none", no locations: a
plain DeiT has no trained selectors), OUT_DIR/imagenet_classes.txt and
OUT_DIR/model_card.json.

--pretrained downloads the weights through timm, so it needs a machine that can reach the
model hub. Without it the model is timm's random init (useful to test the plumbing; the
model card then says "trained": false).

Unless --no-check is given, the directory is loaded back with tools/heatvit_ref.py and its
dense forward is compared with timm's on one random input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heatvit_ref as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LABELS = os.path.join(os.path.dirname(ROOT), "shared", "data", "imagenet_classes.txt")
SUPPORTED = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")


def config_from_model(m, crop_pct: float) -> dict:
    """The spec config.json for a timm VisionTransformer, refusing what the spec lacks."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(m, VisionTransformer):
        raise SystemExit(f"not a timm VisionTransformer: {type(m).__name__}")
    if m.global_pool != "token" or m.cls_token is None or m.num_prefix_tokens != 1:
        raise SystemExit("only class-token models with one prefix token (no distillation "
                         "or register tokens) fit the heatvit spec")
    if getattr(m, "no_embed_class", False):
        raise SystemExit("pos_embed must cover the class token")
    blk = m.blocks[0]
    D = m.embed_dim
    H = blk.attn.num_heads
    hidden = blk.mlp.fc1.out_features
    P = m.patch_embed.patch_size[0]
    S = m.patch_embed.img_size[0]
    if m.patch_embed.patch_size[0] != m.patch_embed.patch_size[1] or \
            m.patch_embed.img_size[0] != m.patch_embed.img_size[1]:
        raise SystemExit("square images and patches only")
    eps = m.norm.eps
    pc = m.pretrained_cfg
    ratio = hidden / D
    cfg = {
        "arch": "deit",
        "image_size": S,
        "patch_size": P,
        "embed_dim": D,
        "depth": len(m.blocks),
        "num_heads": H,
        "mlp_ratio": int(ratio) if ratio == int(ratio) else ratio,
        "num_classes": m.num_classes,
        "ln_eps": eps,
        "mean": [float(v) for v in pc["mean"]],
        "std": [float(v) for v in pc["std"]],
        "crop_pct": crop_pct,
        "interpolation": pc["interpolation"],
        "labels": "imagenet_classes.txt",
        "pruning": {"locations": [], "mode": "none"},
    }
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_name", help=f"one of {', '.join(SUPPORTED)}")
    ap.add_argument("out_dir")
    ap.add_argument("--pretrained", action="store_true",
                    help="download the trained weights (needs the model hub)")
    ap.add_argument("--labels", default=DEFAULT_LABELS,
                    help="ImageNet class names, one a line (default: %(default)s)")
    ap.add_argument("--crop-pct", type=float, default=0.875,
                    help="eval crop fraction written to config.json (default %(default)s: the "
                         "DeiT paper's resize 256 / crop 224, as in the heatvit spec; timm's "
                         "own pretrained_cfg says 0.9)")
    ap.add_argument("--no-check", action="store_true", help="skip the reload + timm comparison")
    a = ap.parse_args(argv)

    import timm
    from safetensors.torch import save_file

    if a.model_name not in SUPPORTED:
        print(f"warning: {a.model_name} is not one of {SUPPORTED}; trying anyway",
              file=sys.stderr)
    torch.manual_seed(0)  # timm's random init, when not --pretrained, is then repeatable
    m = timm.create_model(a.model_name, pretrained=a.pretrained).eval()
    cfg = config_from_model(m, a.crop_pct)
    if abs(float(m.pretrained_cfg.get("crop_pct", a.crop_pct)) - a.crop_pct) > 1e-9:
        print(f"note: timm's pretrained_cfg has crop_pct {m.pretrained_cfg['crop_pct']}; "
              f"writing {a.crop_pct} (--crop-pct)", file=sys.stderr)
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in m.state_dict().items()}
    # what we write must parse strictly and match the spec's tensor names and shapes
    ref.check_weights(ref.parse_config(json.loads(json.dumps(cfg))), sd, 0)

    os.makedirs(a.out_dir, exist_ok=True)
    save_file(sd, os.path.join(a.out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if cfg["num_classes"] == 1000:
        shutil.copyfile(a.labels, os.path.join(a.out_dir, "imagenet_classes.txt"))
    else:
        del cfg["labels"]
    card = {
        "name": a.model_name,
        "trained": bool(a.pretrained),
        "source": f"timm {timm.__version__} {a.model_name}"
                  + (f" ({m.pretrained_cfg.get('hf_hub_id') or m.pretrained_cfg.get('url')})"
                     if a.pretrained else " random init"),
        "description": ("DeiT ImageNet-1k weights from timm; no token selectors (pruning mode none)"
                        if a.pretrained else
                        "timm random init (exported without --pretrained); predictions are "
                        "meaningless"),
    }
    with open(os.path.join(a.out_dir, "model_card.json"), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    n_params = sum(v.numel() for v in sd.values())
    print(f"wrote {a.out_dir}: {len(sd)} tensors, {n_params} parameters, "
          f"dense {ref.dense_macs(cfg)} MACs")

    if not a.no_check:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        cfg2, w2 = ref.load_model_dir(a.out_dir)
        x = torch.randn(3, cfg2["image_size"], cfg2["image_size"],
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = m(x[None])[0]
        got = ref.forward(cfg2, w2, x).logits
        diff = float((want - got).abs().max())
        print(f"reloaded with heatvit_ref: max |logit - timm logit| = {diff:.3e}")
        if diff > 1e-4:
            print("mismatch against timm", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
