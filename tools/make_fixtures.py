#!/usr/bin/env python3
"""Builds the golden fixtures the Rust conformance tests read.

    ~/hvenv/bin/python tools/make_fixtures.py            # regenerate (seed fixed below)
    ~/hvenv/bin/python tools/make_fixtures.py --search   # look for a seed that meets the
                                                         # margin rules, then regenerate

Writes (paths relative to the repository root):
  tests/images/                          the photos + derived grey / RGBA / palette PNGs
  tests/fixtures/tiny/                   a random-weight reduced DeiT model directory
  tests/fixtures/tiny-cases/inputs.safetensors   timm-preprocessed inputs [3,224,224] f32
  tests/fixtures/tiny-cases/expected.json        logits, keep probabilities, kept indices, MACs

The model is random. Random selectors score every token p ~ 0.5, which would make the
kept indices depend on float noise, so the selector layers are scaled so p spreads over
(0, 1), and the keep-logit bias of each stage is tuned (greedily, stage by stage, from the
live tokens every case actually presents to that stage) to the value that maximises the
smallest decision margin over all cases. A seed is accepted only if every case has
margin >= MARGIN_FLOOR and adaptive mode prunes a real fraction at every stage of every
input. The dense path is checked against timm's own VisionTransformer.

Deterministic: one CPU thread, a fixed seed, fixed file order; running it twice writes
identical bytes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heatvit_ref as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# Found by `make_fixtures.py --search` (best of the seeds tried): the seed, and per stage
# the fc4 weight scale and keep-logit shift the tuner chose for it. A plain run rebuilds
# the model from these and checks the rules again; it does not re-tune.
SEED = 10
KEEP_LOGITS = [(0.771703, -12.44), (0.390969, 4.4), (0.689021, -4.98)]
MARGIN_FLOOR = 2e-3

CONFIG = {
    "arch": "deit", "image_size": 224, "patch_size": 16, "embed_dim": 64, "depth": 4,
    "num_heads": 2, "mlp_ratio": 4, "num_classes": 1000, "ln_eps": 1e-6,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.875,
    "interpolation": "bicubic", "labels": "imagenet_classes.txt",
    "pruning": {"locations": [1, 2, 3], "mode": "adaptive", "threshold": 0.5,
                "keep_ratios": [0.7, 0.49, 0.343]},
}
MODEL_CARD = {"name": "tiny-random", "trained": False,
              "description": "random weights for conformance tests; predictions are meaningless"}

PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
# input name -> file in tests/images, in the order cases are written
INPUTS = [
    ("chelsea", "chelsea.png"),
    ("chelsea-grey", "chelsea-grey.png"),
    ("chelsea-rgba", "chelsea-rgba.png"),
    ("coffee", "coffee.png"),
    ("coffee-palette", "coffee-palette.png"),
    ("astronaut", "astronaut.png"),
    ("rocket", "rocket.jpg"),
]


def cases() -> list:
    """(name, input, pruning object) for every case, in file order."""
    base = CONFIG["pruning"]
    out = []
    for name, _ in INPUTS:
        out.append((f"{name}/adaptive", name, dict(base, mode="adaptive")))
        out.append((f"{name}/topk", name, dict(base, mode="topk")))
        out.append((f"{name}/none", name, dict(base, mode="none")))
    # min_keep binds at blocks 1 and 2; at block 3 it exceeds the live count (keep all)
    out.append(("chelsea/adaptive-min-keep", "chelsea",
                dict(base, mode="adaptive", min_keep=[180, 160, 170])))
    # max_keep binds at every stage (min_keep present but loose)
    out.append(("astronaut/adaptive-max-keep", "astronaut",
                dict(base, mode="adaptive", min_keep=[10, 5, 1], max_keep=[60, 30, 15])))
    # max_keep 0: everything goes into one package at block 1; blocks 2, 3 have no live
    # patch token, so their selectors are skipped
    out.append(("chelsea/adaptive-max-keep-0", "chelsea",
                dict(base, mode="adaptive", max_keep=[0, 0, 0])))
    out.append(("rocket/adaptive-t0.3", "rocket", dict(base, mode="adaptive", threshold=0.3)))
    # k = 98, 49 (0.25 * 196 is exactly 49), 20
    out.append(("coffee/topk-ratios", "coffee",
                dict(base, mode="topk", keep_ratios=[0.5, 0.25, 0.1])))
    # k = 118, 157 (> 118 alive: keep all, no new package), 59
    out.append(("rocket/topk-keep-all", "rocket",
                dict(base, mode="topk", keep_ratios=[0.6, 0.8, 0.3])))
    return out


# --------------------------------------------------------------------------------------
# images


def make_images(out_dir: str) -> None:
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    src = os.path.join(SHARED, "data", "images")
    for f in PHOTOS:
        shutil.copyfile(os.path.join(src, f), os.path.join(out_dir, f))
        os.chmod(os.path.join(out_dir, f), 0o644)
    with Image.open(os.path.join(src, "chelsea.png")) as im:
        rgb = im.convert("RGB")
    rgb.convert("L").save(os.path.join(out_dir, "chelsea-grey.png"))
    w, h = rgb.size
    # alpha varies along both axes (0..255); PIL's convert('RGB') drops it
    alpha = np.fromfunction(lambda y, x: (x * 255 // (w - 1) + y * 97 // (h - 1)) % 256,
                            (h, w), dtype=np.int64).astype(np.uint8)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha, mode="L"))
    rgba.save(os.path.join(out_dir, "chelsea-rgba.png"))
    with Image.open(os.path.join(src, "coffee.png")) as im:
        pal = im.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(os.path.join(out_dir, "coffee-palette.png"))
    checks = {"chelsea-grey.png": "L", "chelsea-rgba.png": "RGBA", "coffee-palette.png": "P"}
    for f, mode in checks.items():
        with Image.open(os.path.join(out_dir, f)) as im:
            assert im.mode == mode, (f, im.mode)


# --------------------------------------------------------------------------------------
# weights


def build_weights(cfg: dict, seed: int) -> dict:
    """Random reduced DeiT + selectors; every tensor drawn in a fixed order."""
    g = torch.Generator().manual_seed(seed)

    def rnd(shape, std, mean=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean).contiguous()

    D, H = cfg["embed_dim"], cfg["num_heads"]
    d = D // H
    w = {}
    for k, shp in ref.backbone_shapes(cfg).items():
        if k.endswith(("norm1.weight", "norm2.weight")) or k == "norm.weight":
            w[k] = rnd(shp, 0.1, 1.0)
        elif k == "patch_embed.proj.weight":
            t = rnd(shp, 1.0 / math.sqrt(shp[1] * shp[2] * shp[3]))
            # mostly edge-like filters: keep 10% of each filter's DC response, so a token's
            # features depend on local texture more than on the image's mean colour
            w[k] = (t - 0.9 * t.mean(dim=(2, 3), keepdim=True)).contiguous()
        elif k in ("cls_token", "pos_embed"):
            w[k] = rnd(shp, 0.5)
        elif k == "head.weight":
            w[k] = rnd(shp, 0.4)
        elif k.endswith(".bias"):
            w[k] = rnd(shp, 0.1)
        elif k.endswith("mlp.fc2.weight"):
            w[k] = rnd(shp, 0.1)
        else:  # qkv, proj, fc1
            w[k] = rnd(shp, 0.15)
    gate_hidden = max(1, H // 2)
    for s in range(len(cfg["pruning"]["locations"])):
        for k, shp in ref.selector_shapes(cfg, s, gate_hidden).items():
            leaf = k.split(".")[-2] + "." + k.split(".")[-1]
            if leaf == "norm.weight":
                w[k] = rnd(shp, 0.1, 1.0)
            elif leaf == "norm.bias":
                w[k] = rnd(shp, 0.1)
            elif k.startswith(f"selectors.{s}.gate."):
                if leaf == "fc1.weight":
                    w[k] = rnd(shp, 3.0)
                elif leaf == "fc2.bias":
                    # one head dominates (a ~ 0.9 vs ~ 0.1), alternating by stage, so
                    # heads that disagree do not pile the fused p up around 0.5
                    sign = torch.tensor([1.0 if (s + h) % 2 == 0 else -1.0 for h in range(H)])
                    w[k] = (rnd(shp, 0.1) + 2.0 * sign).contiguous()
                elif leaf.endswith("weight"):
                    w[k] = rnd(shp, 1.0)
                else:
                    w[k] = rnd(shp, 0.1)
            elif leaf.endswith("weight"):
                fan_in = shp[1]
                if leaf == "fc4.weight":
                    # wide keep logits (std ~ 10) so p spreads over (0, 1)
                    w[k] = rnd(shp, 30.0 / math.sqrt(fan_in))
                else:
                    t = rnd(shp, 1.4 / math.sqrt(fan_in))
                    if leaf == "fc2.weight":
                        t[:, d // 2:] *= 0.4  # the image-wide (global) half weighs less
                    w[k] = t.contiguous()
            else:  # biases; fc2/fc3 biased positive so few tokens hit dead GELUs
                w[k] = rnd(shp, 0.1, 0.3 if leaf in ("fc2.bias", "fc3.bias") else 0.0)
    return w


def backbone_only(w: dict) -> dict:
    return {k: v for k, v in w.items() if not k.startswith("selectors.")}


def set_keep_logit(w: dict, cfg: dict, s: int, gamma: float, delta: float) -> None:
    """Scales every head's fc4 weight by gamma and adds delta to its keep logit (z0 - z1)."""
    for h in range(cfg["num_heads"]):
        k = f"selectors.{s}.heads.{h}.fc4."
        w[k + "weight"] = (w[k + "weight"] * gamma).contiguous()
        b = w[k + "bias"].clone()
        b[0] += delta / 2
        b[1] -= delta / 2
        w[k + "bias"] = b.contiguous()


# --------------------------------------------------------------------------------------
# tuning the keep logits


def selector_parts(X: torch.Tensor, w: dict, s: int, cfg: dict):
    """Per head, the weight part zw [n, H] and bias part zb [H] of the keep logit z0 - z1,
    and the gate a [n, H] (same maths as heatvit_ref.selector_probs)."""
    n, D = X.shape
    H = cfg["num_heads"]
    d = D // H
    eps = cfg["ln_eps"]
    zw, zb = [], []
    for h in range(H):
        b = f"selectors.{s}.heads.{h}."
        u = ref.gelu(ref.linear(F.layer_norm(X[:, h * d:(h + 1) * d], (d,), w[b + "norm.weight"],
                                             w[b + "norm.bias"], eps), w, b + "fc1"))
        f = torch.cat([u[:, :d // 2], u[:, d // 2:].mean(0, keepdim=True).expand(n, d - d // 2)], 1)
        v = ref.gelu(ref.linear(ref.gelu(ref.linear(f, w, b + "fc2")), w, b + "fc3"))
        wt = w[b + "fc4.weight"]
        zw.append(v @ (wt[0] - wt[1]))
        zb.append(float(w[b + "fc4.bias"][0] - w[b + "fc4.bias"][1]))
    g = f"selectors.{s}.gate."
    a = torch.sigmoid(ref.linear(ref.gelu(ref.linear(X.reshape(n, H, d).mean(2), w, g + "fc1")),
                                 w, g + "fc2"))
    return torch.stack(zw, 1), torch.tensor(zb), a


def margins_for_deltas(p, pr, s, n0):
    """Vectorised ref.decide margin for candidate keep probabilities p [C, n].

    Returns (margin [C], adaptive kept count [C])."""
    C, n = p.shape
    inf = torch.full((C,), math.inf, dtype=p.dtype)
    srt = torch.sort(p, dim=1, descending=True).values

    def gap_at(k):  # k: [C] long, gap between k-th and (k+1)-th largest where 0 < k < n
        ok = (k > 0) & (k < n)
        kk = k.clamp(1, max(n - 1, 1))
        gp = srt.gather(1, (kk - 1)[:, None])[:, 0] - srt.gather(1, kk[:, None])[:, 0]
        return torch.where(ok, gp, inf)

    if pr["mode"] == "adaptive":
        thr = pr["threshold"]
        m = (p - thr).abs().min(1).values
        c = (p >= thr).sum(1)
        k2 = c.clone()
        if "min_keep" in pr:
            lo = pr["min_keep"][s]
            k2 = torch.where(k2 < lo, torch.full_like(k2, min(lo, n)), k2)
        if "max_keep" in pr:
            k2 = k2.clamp(max=pr["max_keep"][s])
        m = torch.minimum(m, torch.where(k2 != c, gap_at(k2), inf))
        return m, c
    k = math.ceil(pr["keep_ratios"][s] * n0)
    if k >= n:
        return inf, torch.full((C,), n)
    return gap_at(torch.full((C,), k, dtype=torch.long)), torch.full((C,), k)


GAMMAS = [round(0.08 * 1.12 ** i, 6) for i in range(36)]  # fc4 weight scales tried (0.08..4.4)
DELTAS = [round(-30.0 + 0.02 * i, 2) for i in range(3001)]  # keep-logit shifts tried


def tune_keep_logits(cfg, w, inputs, case_list, log=print):
    """Greedy, stage by stage: choose the fc4 weight scale and keep-logit shift that
    maximise the smallest margin over every case reaching that stage, with adaptive mode
    keeping 20-95% of each input's live tokens and 45-85% overall."""
    n0 = (cfg["image_size"] // cfg["patch_size"]) ** 2
    chosen = []
    for s in range(len(cfg["pruning"]["locations"])):
        parts = []
        for name, inp, pr in case_list:
            if pr["mode"] == "none":
                continue
            pr = ref.parse_pruning(pr, cfg["depth"])
            trace = []
            ref.forward(cfg, w, inputs[inp], pr, trace=trace)
            if len(trace) > s and trace[s].shape[0] > 0:
                parts.append((name, pr, selector_parts(trace[s], w, s, cfg)))
        best = (-math.inf, None, None)
        deltas = torch.tensor(DELTAS)
        for gamma in GAMMAS:
            objective = torch.full(deltas.shape, math.inf)
            feasible = torch.ones(deltas.shape, dtype=torch.bool)
            kept_tot = torch.zeros(deltas.shape)
            live_tot = 0
            for name, pr, (zw, zb, a) in parts:
                z = gamma * zw[None] + zb[None, None] + deltas[:, None, None]  # [C, n, H]
                p = (a[None] * torch.sigmoid(z)).sum(-1) / a.sum(-1)[None]
                m, c = margins_for_deltas(p, pr, s, n0)
                objective = torch.minimum(objective, m)
                if name.endswith("/adaptive"):
                    n = zw.shape[0]
                    frac = c.float() / n
                    feasible &= (frac >= 0.2) & (frac <= 0.95)
                    kept_tot += c.float()
                    live_tot += n
            frac = kept_tot / max(live_tot, 1)
            feasible &= (frac >= 0.45) & (frac <= 0.85)
            obj = torch.where(feasible, objective, torch.full_like(objective, -1.0))
            i = int(torch.argmax(obj))
            if float(obj[i]) > best[0]:
                best = (float(obj[i]), gamma, DELTAS[i])
        _, gamma, delta = best
        set_keep_logit(w, cfg, s, gamma, delta)
        chosen.append((gamma, delta))
        log(f"  stage {s}: fc4 scale {gamma:.3f}, keep-logit shift {delta:+.2f}, "
            f"predicted min margin {best[0]:.5f}")
    return chosen


# --------------------------------------------------------------------------------------
# evaluation


def adaptive_count(probs: list, thr: float) -> int:
    return sum(1 for p in probs if float(p) >= thr)


def run_cases(cfg, w, inputs, case_list):
    results = []
    for name, inp, pr in case_list:
        pr = ref.parse_pruning(pr, cfg["depth"])
        results.append((name, inp, pr, ref.forward(cfg, w, inputs[inp], pr)))
    return results


def acceptance(results) -> list:
    """Problems that make a seed unusable (empty list = accepted)."""
    bad = []
    for name, inp, pr, r in results:
        if r.min_margin is not None and r.min_margin < MARGIN_FLOOR:
            bad.append(f"{name}: margin {r.min_margin:.2e}")
        if name.endswith("/adaptive"):
            for st in r.stages:
                if not 0 < st["kept"] < st["tokens_in"]:
                    bad.append(f"{name}: block {st['block']} keeps {st['kept']}/{st['tokens_in']}")
        if "min_keep" in pr or "max_keep" in pr:
            binds = []
            for s, (st, kp) in enumerate(zip(r.stages, r.keep_probs)):
                c = adaptive_count(kp, pr["threshold"])
                binds.append(c != st["kept"])
            if not any(binds):
                bad.append(f"{name}: min_keep/max_keep never bind")
        if name == "astronaut/adaptive-max-keep":
            for s, (st, kp) in enumerate(zip(r.stages, r.keep_probs)):
                if adaptive_count(kp, pr["threshold"]) <= pr["max_keep"][s]:
                    bad.append(f"{name}: max_keep does not bind at block {st['block']}")
        if name == "chelsea/adaptive-min-keep":
            for st, kp in list(zip(r.stages, r.keep_probs))[:2]:
                if adaptive_count(kp, pr["threshold"]) >= st["kept"]:
                    bad.append(f"{name}: min_keep does not bind at block {st['block']}")
    return bad


def build_model(cfg, seed, inputs, case_list, keep_logits=None, log=print):
    """The fixture model for `seed`; keep_logits [(scale, shift)] per stage, or None to tune."""
    w = build_weights(cfg, seed)
    if keep_logits is None:
        keep_logits = tune_keep_logits(cfg, w, inputs, case_list, log)
    else:
        for s, (gamma, delta) in enumerate(keep_logits):
            set_keep_logit(w, cfg, s, gamma, delta)
    results = run_cases(cfg, w, inputs, case_list)
    return w, keep_logits, results


def smallest_margin(results) -> float:
    return min(r.min_margin for *_, r in results if r.min_margin is not None)


def timm_check(cfg, w, inputs, results) -> float:
    """Max |logit difference| between timm's VisionTransformer and the mode-none forward."""
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(
        img_size=cfg["image_size"], patch_size=cfg["patch_size"], in_chans=3,
        num_classes=cfg["num_classes"], global_pool="token", embed_dim=cfg["embed_dim"],
        depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
        qkv_bias=True, class_token=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=cfg["ln_eps"]), act_layer=torch.nn.GELU,
    ).eval()
    m.load_state_dict(backbone_only(w), strict=True)
    worst = 0.0
    with torch.no_grad():
        for name, inp, pr, r in results:
            if pr["mode"] != "none":
                continue
            t = m(inputs[inp][None])[0]
            diff = float((t - r.logits).abs().max())
            print(f"  timm vs reference (mode none) {inp:15s} max |dlogit| = {diff:.3e}")
            worst = max(worst, diff)
    assert worst < 1e-5, f"dense path disagrees with timm: {worst}"
    return worst


# --------------------------------------------------------------------------------------
# writing


def f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32."""
    return float(str(np.float32(v)))


def case_json(name, inp, pr, r) -> dict:
    return {
        "name": name,
        "input": inp,
        "pruning": pr,
        "logits": [f32(v) for v in r.logits.tolist()],
        "keep_probs": [[f32(v) for v in kp] for kp in r.keep_probs],
        "stages": r.stages,
        "macs": r.macs,
        "dense_macs": r.dense_macs,
        "min_margin": r.min_margin,
    }


def write_expected(path, seed, timm_diff, results) -> None:
    import timm

    head = {
        "generator": "tools/make_fixtures.py",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "model": "tests/fixtures/tiny",
        "seed": seed,
        "timm_dense_max_abs_diff": timm_diff,
    }
    lines = ["{"]
    for k, v in head.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    lines.append(' "cases": [')
    body = [" " + json.dumps(case_json(*res), separators=(",", ":")) for res in results]
    lines.append(",\n".join(body))
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_all(cfg_obj, w, inputs, results, seed, timm_diff) -> None:
    from safetensors.torch import save_file

    model_dir = os.path.join(ROOT, "tests", "fixtures", "tiny")
    cases_dir = os.path.join(ROOT, "tests", "fixtures", "tiny-cases")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(cases_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg_obj, f, indent=2)
        f.write("\n")
    with open(os.path.join(model_dir, "model_card.json"), "w", encoding="utf-8") as f:
        json.dump(MODEL_CARD, f, indent=2)
        f.write("\n")
    shutil.copyfile(os.path.join(SHARED, "data", "imagenet_classes.txt"),
                    os.path.join(model_dir, "imagenet_classes.txt"))
    os.chmod(os.path.join(model_dir, "imagenet_classes.txt"), 0o644)
    save_file({k: v.contiguous() for k, v in sorted(w.items())},
              os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    save_file({name: inputs[name].contiguous() for name, _ in INPUTS},
              os.path.join(cases_dir, "inputs.safetensors"))
    write_expected(os.path.join(cases_dir, "expected.json"), seed, timm_diff, results)


def summarise(results) -> None:
    for name, inp, pr, r in results:
        st = " ".join(f"{x['tokens_in']}->{x['kept']}" for x in r.stages) or "-"
        mm = "-" if r.min_margin is None else f"{r.min_margin:.4f}"
        top = int(torch.argmax(r.logits))
        print(f"  {name:30s} {st:24s} macs {r.macs:>9d} ({r.macs / r.dense_macs:.3f})  "
              f"margin {mm:>7s}  top1 {top}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="regenerate tests/fixtures (see module doc)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--search", action="store_true",
                    help="tune --tries seeds from --seed upwards and keep the one with the "
                         "largest smallest margin")
    ap.add_argument("--tries", type=int, default=12)
    a = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = ref.parse_config(copy.deepcopy(CONFIG))

    images_dir = os.path.join(ROOT, "tests", "images")
    make_images(images_dir)
    tf = ref.make_transform(cfg)
    inputs = {name: ref.preprocess(os.path.join(images_dir, f), cfg, tf) for name, f in INPUTS}
    case_list = cases()

    if a.search:
        found = []
        for seed in range(a.seed, a.seed + a.tries):
            print(f"seed {seed}:")
            w, kl, results = build_model(cfg, seed, inputs, case_list)
            bad = acceptance(results)
            for b in bad[:6]:
                print(f"  rejected: {b}")
            if not bad:
                print(f"  accepted, smallest margin {smallest_margin(results):.5f}")
                found.append((smallest_margin(results), -seed, seed, kl))
        if not found:
            print("no seed met the rules", file=sys.stderr)
            return 1
        _, _, seed, kl = max(found)
        print(f"best: SEED = {seed}\nKEEP_LOGITS = {kl!r}\n(paste both into {__file__})")
    else:
        seed, kl = a.seed, KEEP_LOGITS
    w, kl, results = build_model(cfg, seed, inputs, case_list, kl)
    bad = acceptance(results)
    if bad:
        for b in bad:
            print(f"  rejected: {b}", file=sys.stderr)
        print("the stored seed/keep logits no longer meet the rules (other torch version?); "
              "rerun with --search", file=sys.stderr)
        return 1

    summarise(results)
    diff = timm_check(cfg, w, inputs, results)
    print(f"timm VisionTransformer vs reference dense path: max |dlogit| = {diff:.3e}")
    print(f"smallest decision margin over all cases: {smallest_margin(results):.5f} "
          f"(floor {MARGIN_FLOOR})")
    write_all(CONFIG, w, inputs, results, seed, diff)
    print(f"wrote tests/fixtures/tiny, tests/fixtures/tiny-cases, tests/images (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
