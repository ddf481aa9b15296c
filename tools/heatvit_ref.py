#!/usr/bin/env python3
"""Independent PyTorch reference of the heatvit float model.

Written from `shared/spec/heatvit-model.md` alone (the contract), not from the Rust code.
Float32, CPU, eval, batch 1. It is an offline tool: it produces the golden fixtures the
Rust conformance tests read (see tools/make_fixtures.py) and can run a model directory
on images for spot checks:

    ~/hvenv/bin/python tools/heatvit_ref.py MODEL_DIR IMAGE... [--mode adaptive|topk|none]
        [--threshold T] [--keep-ratios R,R,R] [--json]

Project choices this file follows (beyond the spec text):
  * a stage whose live patch-token count is 0 skips its selector (tokens_in 0, kept 0,
    no new package token);
  * `p_j >= threshold` is evaluated with the float32 p widened to float64;
  * ranking is by descending float32 p, ties to the lower (original) index;
  * topk keeps k_s = math.ceil(keep_ratio_s * N0) (float64), or every live token if fewer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# config.json

TOP_REQUIRED = {
    "arch": str,
    "image_size": int,
    "patch_size": int,
    "embed_dim": int,
    "depth": int,
    "num_heads": int,
    "mlp_ratio": (int, float),
    "num_classes": int,
    "ln_eps": (int, float),
    "mean": list,
    "std": list,
    "crop_pct": (int, float),
    "interpolation": str,
}
TOP_OPTIONAL = {"labels": str, "pruning": dict}
PRUNING_KEYS = {"locations", "mode", "threshold", "keep_ratios", "min_keep", "max_keep"}
MODES = ("adaptive", "topk", "none")


class ConfigError(ValueError):
    pass


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_type(where: str, v, ty) -> None:
    if ty is int:
        ok = _is_int(v)
    elif ty == (int, float):
        ok = _is_num(v)
    else:
        ok = isinstance(v, ty)
    if not ok:
        raise ConfigError(f"{where}: expected {ty}, got {v!r}")


def parse_pruning(pr: dict, depth: int) -> dict:
    """Validate a `pruning` object; returns a normalised copy (defaults filled in)."""
    if not isinstance(pr, dict):
        raise ConfigError("pruning: expected an object")
    unknown = set(pr) - PRUNING_KEYS
    if unknown:
        raise ConfigError(f"pruning: unknown key(s) {sorted(unknown)}")
    if "locations" not in pr:
        raise ConfigError("pruning: missing key 'locations'")
    locs = pr["locations"]
    if not isinstance(locs, list) or not all(_is_int(v) for v in locs):
        raise ConfigError("pruning.locations: expected a list of integers")
    for i, v in enumerate(locs):
        if not 0 <= v < depth:
            raise ConfigError(f"pruning.locations[{i}] = {v} is outside 0..{depth - 1}")
        if i and v <= locs[i - 1]:
            raise ConfigError("pruning.locations must be strictly increasing")
    out = {"locations": list(locs)}
    mode = pr.get("mode", "adaptive")
    if mode not in MODES:
        raise ConfigError(f"pruning.mode: expected one of {MODES}, got {mode!r}")
    out["mode"] = mode
    thr = pr.get("threshold", 0.5)
    if not _is_num(thr) or not 0.0 <= thr <= 1.0:
        raise ConfigError(f"pruning.threshold: expected a number in [0, 1], got {thr!r}")
    out["threshold"] = thr
    n = len(locs)
    if "keep_ratios" in pr:
        kr = pr["keep_ratios"]
        if not isinstance(kr, list) or len(kr) != n or not all(_is_num(v) for v in kr):
            raise ConfigError(f"pruning.keep_ratios: expected {n} numbers (one per location)")
        if not all(0.0 < v <= 1.0 for v in kr):
            raise ConfigError("pruning.keep_ratios: each must be in (0, 1]")
        out["keep_ratios"] = list(kr)
    elif mode == "topk":
        raise ConfigError("pruning.keep_ratios is required for mode 'topk'")
    for key in ("min_keep", "max_keep"):
        if key in pr:
            v = pr[key]
            if not isinstance(v, list) or len(v) != n or not all(_is_int(x) and x >= 0 for x in v):
                raise ConfigError(f"pruning.{key}: expected {n} non-negative integers")
            out[key] = list(v)
    if "min_keep" in out and "max_keep" in out:
        for i, (lo, hi) in enumerate(zip(out["min_keep"], out["max_keep"])):
            if lo > hi:
                raise ConfigError(f"pruning: min_keep[{i}] = {lo} > max_keep[{i}] = {hi}")
    return out


def parse_config(obj: dict) -> dict:
    if not isinstance(obj, dict):
        raise ConfigError("config: expected a JSON object")
    unknown = set(obj) - set(TOP_REQUIRED) - set(TOP_OPTIONAL)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {sorted(unknown)}")
    for k, ty in TOP_REQUIRED.items():
        if k not in obj:
            raise ConfigError(f"config: missing key {k!r}")
        _check_type(k, obj[k], ty)
    for k, ty in TOP_OPTIONAL.items():
        if k in obj:
            _check_type(k, obj[k], ty)
    cfg = dict(obj)
    if cfg["arch"] != "deit":
        raise ConfigError(f"arch: only 'deit' is supported, got {cfg['arch']!r}")
    for k in ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes"):
        if cfg[k] <= 0:
            raise ConfigError(f"{k} must be positive")
    S, P, D, H = cfg["image_size"], cfg["patch_size"], cfg["embed_dim"], cfg["num_heads"]
    if S % P:
        raise ConfigError("image_size must be a multiple of patch_size")
    if D % H:
        raise ConfigError("embed_dim must be a multiple of num_heads")
    hidden = D * cfg["mlp_ratio"]
    if hidden != int(hidden) or hidden <= 0:
        raise ConfigError("embed_dim * mlp_ratio must be a positive integer")
    for k in ("mean", "std"):
        if len(cfg[k]) != 3 or not all(_is_num(v) for v in cfg[k]):
            raise ConfigError(f"{k}: expected 3 numbers")
    if not all(v > 0 for v in cfg["std"]):
        raise ConfigError("std: must be positive")
    if not (0.0 < cfg["crop_pct"] <= 1.0):
        raise ConfigError("crop_pct must be in (0, 1]")
    if cfg["ln_eps"] <= 0:
        raise ConfigError("ln_eps must be positive")
    if cfg["interpolation"] not in ("bicubic", "bilinear", "nearest"):
        raise ConfigError(f"interpolation: unsupported {cfg['interpolation']!r}")
    cfg["pruning"] = parse_pruning(cfg.get("pruning", {"locations": [], "mode": "none"}),
                                   cfg["depth"])
    return cfg


def load_config(path: str) -> dict:
    with open(path, "r", encoding="utf-8") as f:
        return parse_config(json.load(f))


# --------------------------------------------------------------------------------------
# weights


def backbone_shapes(cfg: dict) -> dict:
    S, P, D = cfg["image_size"], cfg["patch_size"], cfg["embed_dim"]
    C, hidden = cfg["num_classes"], int(D * cfg["mlp_ratio"])
    np_ = (S // P) ** 2
    shapes = {
        "patch_embed.proj.weight": (D, 3, P, P),
        "patch_embed.proj.bias": (D,),
        "cls_token": (1, 1, D),
        "pos_embed": (1, 1 + np_, D),
        "norm.weight": (D,),
        "norm.bias": (D,),
        "head.weight": (C, D),
        "head.bias": (C,),
    }
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "mlp.fc1.weight": (hidden, D), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (D, hidden), b + "mlp.fc2.bias": (D,),
        })
    return shapes


def selector_shapes(cfg: dict, s: int, gate_hidden: int) -> dict:
    D, H = cfg["embed_dim"], cfg["num_heads"]
    d = D // H
    widths = [d, d, d // 2, d // 4, 2]  # fc1: d->d, fc2: d->d/2, fc3: d/2->d/4, fc4: d/4->2
    shapes = {}
    for h in range(H):
        b = f"selectors.{s}.heads.{h}."
        shapes[b + "norm.weight"] = (d,)
        shapes[b + "norm.bias"] = (d,)
        for i in range(4):
            shapes[b + f"fc{i + 1}.weight"] = (widths[i + 1], widths[i])
            shapes[b + f"fc{i + 1}.bias"] = (widths[i + 1],)
    g = f"selectors.{s}.gate."
    shapes[g + "fc1.weight"] = (gate_hidden, H)
    shapes[g + "fc1.bias"] = (gate_hidden,)
    shapes[g + "fc2.weight"] = (H, gate_hidden)
    shapes[g + "fc2.bias"] = (H,)
    return shapes


_SEL_RE = re.compile(r"^selectors\.(\d+)\.")


def check_weights(cfg: dict, w: dict, need_selectors: int) -> dict:
    """Checks names/shapes/dtypes. Returns {stage: gate_hidden} for the selectors present."""
    expected = backbone_shapes(cfg)
    for k, shp in expected.items():
        if k not in w:
            raise KeyError(f"weights: missing tensor {k} (expected shape {list(shp)})")
        if tuple(w[k].shape) != shp:
            raise ValueError(f"weights: {k} has shape {list(w[k].shape)}, expected {list(shp)}")
    stages = {}
    for k in w:
        if k in expected:
            continue
        m = _SEL_RE.match(k)
        if not m:
            raise KeyError(f"weights: unexpected tensor {k}")
        stages.setdefault(int(m.group(1)), None)
    gate = {}
    for s in sorted(stages):
        key = f"selectors.{s}.gate.fc1.weight"
        if key not in w or w[key].dim() != 2:
            raise KeyError(f"weights: missing tensor {key}")
        gate[s] = int(w[key].shape[0])
        shapes = selector_shapes(cfg, s, gate[s])
        for k, shp in shapes.items():
            if k not in w:
                raise KeyError(f"weights: missing tensor {k} (expected shape {list(shp)})")
            if tuple(w[k].shape) != shp:
                raise ValueError(f"weights: {k} has shape {list(w[k].shape)}, expected {list(shp)}")
        extra = [k for k in w if k.startswith(f"selectors.{s}.") and k not in shapes]
        if extra:
            raise KeyError(f"weights: unexpected tensor(s) {extra}")
    for s in range(need_selectors):
        if s not in gate:
            raise KeyError(f"weights: selector {s} is needed by pruning.locations but "
                           f"selectors.{s}.* is missing")
    for k, t in w.items():
        if t.dtype != torch.float32:
            raise ValueError(f"weights: {k} is {t.dtype}, expected float32")
    return gate


def load_model_dir(model_dir: str):
    from safetensors.torch import load_file

    cfg = load_config(os.path.join(model_dir, "config.json"))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    pr = cfg["pruning"]
    check_weights(cfg, w, len(pr["locations"]) if pr["mode"] != "none" else 0)
    return cfg, w


# --------------------------------------------------------------------------------------
# preprocessing: timm's own eval transform on PIL (no re-implementation of resizing)


def make_transform(cfg: dict):
    import timm.data

    S = cfg["image_size"]
    return timm.data.create_transform(
        input_size=(3, S, S),
        interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
    )


def preprocess(path: str, cfg: dict, transform=None) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    t = (transform or make_transform(cfg))(rgb)
    S = cfg["image_size"]
    assert t.shape == (3, S, S) and t.dtype == torch.float32, (t.shape, t.dtype)
    return t.contiguous()


# --------------------------------------------------------------------------------------
# MAC accounting (integers, definitions fixed by the project)


def macs_patch_embed(cfg: dict) -> int:
    P = cfg["patch_size"]
    np_ = (cfg["image_size"] // P) ** 2
    return np_ * (3 * P * P) * cfg["embed_dim"]


def macs_block(cfg: dict, n_tokens: int) -> int:
    # (4 + 2*mlp_ratio)*N*D*D + 2*N*N*D, written with the integer hidden width
    D = cfg["embed_dim"]
    hidden = int(D * cfg["mlp_ratio"])
    return 4 * n_tokens * D * D + 2 * n_tokens * D * hidden + 2 * n_tokens * n_tokens * D


def macs_selector(cfg: dict, n_live: int, gate_hidden: int) -> int:
    H = cfg["num_heads"]
    d = cfg["embed_dim"] // H
    per_head = d * d + d * (d // 2) + (d // 2) * (d // 4) + (d // 4) * 2
    return n_live * H * per_head + n_live * (H * gate_hidden + gate_hidden * H)


def macs_head(cfg: dict) -> int:
    return cfg["embed_dim"] * cfg["num_classes"]


def dense_macs(cfg: dict) -> int:
    np_ = (cfg["image_size"] // cfg["patch_size"]) ** 2
    return macs_patch_embed(cfg) + cfg["depth"] * macs_block(cfg, 1 + np_) + macs_head(cfg)


# --------------------------------------------------------------------------------------
# forward pass


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="none")  # exact erf GELU


def linear(x, w, prefix):
    return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])


def block(x: torch.Tensor, w: dict, i: int, cfg: dict) -> torch.Tensor:
    """One pre-norm DeiT block on an [N, D] token matrix."""
    N, D = x.shape
    H = cfg["num_heads"]
    d = D // H
    eps = cfg["ln_eps"]
    b = f"blocks.{i}."
    y = F.layer_norm(x, (D,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps)
    qkv = linear(y, w, b + "attn.qkv")  # [N, 3D]: q rows 0..D-1, k D..2D-1, v 2D..3D-1
    q = qkv[:, 0 * D:1 * D].reshape(N, H, d).transpose(0, 1)  # [H, N, d]
    k = qkv[:, 1 * D:2 * D].reshape(N, H, d).transpose(0, 1)
    v = qkv[:, 2 * D:3 * D].reshape(N, H, d).transpose(0, 1)
    att = torch.softmax((q @ k.transpose(1, 2)) * (d ** -0.5), dim=-1)  # [H, N, N]
    o = (att @ v).transpose(0, 1).reshape(N, D)
    x = x + linear(o, w, b + "attn.proj")
    y = F.layer_norm(x, (D,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps)
    x = x + linear(gelu(linear(y, w, b + "mlp.fc1")), w, b + "mlp.fc2")
    return x


def selector_probs(X: torch.Tensor, w: dict, s: int, cfg: dict) -> torch.Tensor:
    """Fused keep probability p (float32, [n]) for the live patch tokens X [n, D]."""
    n, D = X.shape
    H = cfg["num_heads"]
    d = D // H
    eps = cfg["ln_eps"]
    keep = []
    for h in range(H):
        b = f"selectors.{s}.heads.{h}."
        Xh = X[:, h * d:(h + 1) * d]
        u = gelu(linear(F.layer_norm(Xh, (d,), w[b + "norm.weight"], w[b + "norm.bias"], eps),
                        w, b + "fc1"))  # [n, d]
        local = u[:, : d // 2]
        glob = u[:, d // 2:].mean(dim=0, keepdim=True).expand(n, d - d // 2)
        f = torch.cat([local, glob], dim=1)
        z = linear(gelu(linear(gelu(linear(f, w, b + "fc2")), w, b + "fc3")), w, b + "fc4")
        keep.append(torch.softmax(z, dim=1)[:, 0])  # column 0 = keep
    T = torch.stack(keep, dim=1)  # [n, H]
    m = X.reshape(n, H, d).mean(dim=2)  # [n, H] channel mean per head slice
    g = f"selectors.{s}.gate."
    a = torch.sigmoid(linear(gelu(linear(m, w, g + "fc1")), w, g + "fc2"))  # [n, H]
    return (a * T).sum(dim=1) / a.sum(dim=1)


def rank_desc(p: list) -> list:
    """Indices by descending p, ties to the lower index."""
    return sorted(range(len(p)), key=lambda j: (-p[j], j))


def decide(p: list, stage: int, pr: dict, n0: int):
    """Returns (sorted kept local indices, margin or None).

    The margin is the distance of the decision from flipping: min |p_j - threshold| over
    all tokens for adaptive (plus the rank gap at the cut if min_keep/max_keep bind), the
    gap between the k-th and (k+1)-th largest p for topk (None when every token is kept).
    """
    n = len(p)
    margins = []
    if pr["mode"] == "adaptive":
        thr = pr["threshold"]
        keep = [j for j in range(n) if float(p[j]) >= thr]
        margins.append(min(abs(float(x) - thr) for x in p))
        k = len(keep)
        lo = pr.get("min_keep", [None] * (stage + 1))[stage]
        hi = pr.get("max_keep", [None] * (stage + 1))[stage]
        k2 = k
        if lo is not None and k2 < lo:
            k2 = min(lo, n)
        if hi is not None and k2 > hi:
            k2 = hi
        if k2 != k:
            order = rank_desc(p)
            keep = sorted(order[:k2])
            if 0 < k2 < n:
                margins.append(float(p[order[k2 - 1]]) - float(p[order[k2]]))
    elif pr["mode"] == "topk":
        k = math.ceil(pr["keep_ratios"][stage] * n0)
        if k >= n:
            keep = list(range(n))
        else:
            order = rank_desc(p)
            keep = sorted(order[:k])
            if k > 0:
                margins.append(float(p[order[k - 1]]) - float(p[order[k]]))
    else:
        raise ValueError(pr["mode"])
    return keep, (min(margins) if margins else None)


def package_token(R: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """P = sum_j p_j x_j / sum_j p_j over the pruned rows R [m, D] (plain mean if the
    weights sum to 0). Returns [1, D]."""
    tot = pw.sum()
    if float(tot) == 0.0:
        return R.mean(dim=0, keepdim=True)
    return (pw[:, None] * R).sum(dim=0, keepdim=True) / tot


@dataclass
class Result:
    logits: torch.Tensor
    keep_probs: list = field(default_factory=list)  # per stage: list of float32 p
    stages: list = field(default_factory=list)
    macs: int = 0
    dense_macs: int = 0
    min_margin: float | None = None


@torch.no_grad()
def forward(cfg: dict, w: dict, image: torch.Tensor, pruning: dict | None = None,
            trace: list | None = None) -> Result:
    """Runs the model on one preprocessed image [3, S, S]; `pruning` overrides the config's.

    If `trace` is a list, the live patch-token matrix entering each selector is appended
    to it (used by tools/make_fixtures.py to tune the random selectors).
    """
    pr = parse_pruning(pruning, cfg["depth"]) if pruning is not None else cfg["pruning"]
    S, P, D = cfg["image_size"], cfg["patch_size"], cfg["embed_dim"]
    n0 = (S // P) ** 2
    assert image.shape == (3, S, S) and image.dtype == torch.float32

    # patch embedding, CLS, position embedding
    pe = F.conv2d(image[None], w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=P)
    patches = pe.flatten(2)[0].transpose(0, 1)  # [n0, D], row-major over the patch grid
    x = torch.cat([w["cls_token"][0], patches], dim=0) + w["pos_embed"][0]
    cls, live, pkgs = x[:1], x[1:], x[1:1]  # pkgs: [n_packages, D]
    orig = list(range(n0))  # original patch index of each live token

    res = Result(logits=None, dense_macs=dense_macs(cfg))
    macs = macs_patch_embed(cfg)
    locs = pr["locations"] if pr["mode"] != "none" else []
    margins = []
    for i in range(cfg["depth"]):
        if i in locs:
            s = locs.index(i)
            n = live.shape[0]
            if n == 0:
                # project choice: nothing to score, the selector is skipped
                res.keep_probs.append([])
                res.stages.append({"block": i, "tokens_in": 0, "kept": 0,
                                   "packages": pkgs.shape[0], "kept_patch_indices": []})
            else:
                if trace is not None:
                    trace.append(live.clone())
                p = selector_probs(live, w, s, cfg)
                macs += macs_selector(cfg, n, int(w[f"selectors.{s}.gate.fc1.weight"].shape[0]))
                pl = p.tolist()
                keep, margin = decide(pl, s, pr, n0)
                if margin is not None:
                    margins.append(margin)
                res.keep_probs.append(pl)
                kept_set = set(keep)
                pruned = [j for j in range(n) if j not in kept_set]
                if pruned:
                    pkgs = torch.cat([pkgs, package_token(live[pruned], p[pruned])], dim=0)
                live = live[keep]
                orig = [orig[j] for j in keep]
                res.stages.append({"block": i, "tokens_in": n, "kept": len(keep),
                                   "packages": pkgs.shape[0], "kept_patch_indices": list(orig)})
        x = torch.cat([cls, live, pkgs], dim=0)
        macs += macs_block(cfg, x.shape[0])
        x = block(x, w, i, cfg)
        n = live.shape[0]
        cls, live, pkgs = x[:1], x[1:1 + n], x[1 + n:]
    x = torch.cat([cls, live, pkgs], dim=0)
    y = F.layer_norm(x[:1], (D,), w["norm.weight"], w["norm.bias"], cfg["ln_eps"])
    res.logits = linear(y, w, "head")[0]
    macs += macs_head(cfg)
    res.macs = macs
    res.min_margin = min(margins) if margins else None
    return res


# --------------------------------------------------------------------------------------
# CLI


def read_labels(model_dir: str, cfg: dict):
    name = cfg.get("labels")
    if not name:
        return None
    path = os.path.join(model_dir, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--mode", choices=MODES, help="override pruning.mode")
    ap.add_argument("--threshold", type=float, help="override pruning.threshold")
    ap.add_argument("--keep-ratios", help="override pruning.keep_ratios, comma-separated")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    a = ap.parse_args(argv)

    torch.set_num_threads(1)
    cfg, w = load_model_dir(a.model_dir)
    pr = dict(cfg["pruning"])
    if a.mode:
        pr["mode"] = a.mode
    if a.threshold is not None:
        pr["threshold"] = a.threshold
    if a.keep_ratios:
        pr["keep_ratios"] = [float(v) for v in a.keep_ratios.split(",")]
    pr = parse_pruning(pr, cfg["depth"])
    if pr["mode"] != "none":
        check_weights(cfg, w, len(pr["locations"]))
    labels = read_labels(a.model_dir, cfg)
    tf = make_transform(cfg)
    out = []
    for path in a.images:
        r = forward(cfg, w, preprocess(path, cfg, tf), pr)
        prob = torch.softmax(r.logits, 0)
        top = torch.topk(prob, min(a.top, prob.numel()))
        tops = [{"class": int(c), "label": labels[int(c)] if labels else None,
                 "prob": float(v)} for v, c in zip(top.values, top.indices)]
        rec = {"image": path, "mode": pr["mode"], "top": tops,
               "stages": [{k: v for k, v in st.items() if k != "kept_patch_indices"}
                          for st in r.stages],
               "macs": r.macs, "dense_macs": r.dense_macs, "min_margin": r.min_margin}
        out.append(rec)
        if not a.json:
            print(f"{path}: mode={pr['mode']} macs={r.macs} ({r.macs / r.dense_macs:.3f} of dense "
                  f"{r.dense_macs})")
            for st in r.stages:
                print(f"  block {st['block']}: {st['tokens_in']} -> {st['kept']} live, "
                      f"{st['packages']} package(s)")
            for t in tops:
                print(f"  {t['prob']:.4f}  {t['class']:4d}  {t['label'] or ''}")
    if a.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
