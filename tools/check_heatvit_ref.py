#!/usr/bin/env python3
"""Unit checks of tools/heatvit_ref.py, plus a consistency check of the committed fixtures.

    ~/hvenv/bin/python tools/check_heatvit_ref.py

Each check prints one line; the script exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heatvit_ref as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny")
CASES = os.path.join(ROOT, "tests", "fixtures", "tiny-cases")

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


DEIT_T = {
    "arch": "deit", "image_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12,
    "num_heads": 3, "mlp_ratio": 4, "num_classes": 1000, "ln_eps": 1e-6,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.875,
    "interpolation": "bicubic", "labels": "imagenet_classes.txt",
    "pruning": {"locations": [3, 6, 9], "mode": "adaptive", "threshold": 0.5,
                "keep_ratios": [0.7, 0.49, 0.343]},
}


@check
def package_token_hand_example():
    R = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    p = torch.tensor([0.25, 0.25, 0.5])
    # (0.25*[1,0] + 0.25*[0,2] + 0.5*[4,4]) / 1.0 = [2.25, 2.5]
    assert torch.allclose(ref.package_token(R, p), torch.tensor([[2.25, 2.5]]))
    p2 = torch.tensor([0.1, 0.3, 0.0])
    # (0.1*[1,0] + 0.3*[0,2]) / 0.4 = [0.25, 1.5]
    assert torch.allclose(ref.package_token(R, p2), torch.tensor([[0.25, 1.5]]))
    # all weights 0: plain mean
    assert torch.allclose(ref.package_token(R, torch.zeros(3)), torch.tensor([[5 / 3, 2.0]]))


@check
def topk_ties_go_to_lower_index():
    pr = {"mode": "topk", "keep_ratios": [0.5]}
    keep, margin = ref.decide([0.5, 0.7, 0.5, 0.5], 0, pr, 4)  # k = 2
    assert keep == [0, 1] and margin == 0.0, (keep, margin)  # 0.5 at index 0 beats 2 and 3
    keep, margin = ref.decide([0.5, 0.5, 0.5, 0.5], 0, pr, 4)
    assert keep == [0, 1] and margin == 0.0
    # fewer alive than k: keep all, no margin
    keep, margin = ref.decide([0.1, 0.2], 0, {"mode": "topk", "keep_ratios": [0.9]}, 4)
    assert keep == [0, 1] and margin is None


@check
def topk_k_uses_float64_ceil():
    assert [math.ceil(r * 196) for r in (0.7, 0.49, 0.343)] == [138, 97, 68]
    assert math.ceil(0.25 * 196) == 49 and math.ceil(0.1 * 196) == 20
    p = [1.0 - j / 1000 for j in range(196)]
    for r, k in ((0.7, 138), (0.49, 97), (0.343, 68)):
        keep, _ = ref.decide(p, 0, {"mode": "topk", "keep_ratios": [r]}, 196)
        assert keep == list(range(k)), (r, len(keep))


@check
def adaptive_threshold_and_clamps():
    p = [0.9, 0.2, 0.5, 0.49, 0.8]
    pr = {"mode": "adaptive", "threshold": 0.5}
    assert ref.decide(p, 0, pr, 5)[0] == [0, 2, 4]  # p >= threshold, ties kept
    assert ref.decide(p, 0, dict(pr, max_keep=[2]), 5)[0] == [0, 4]
    assert ref.decide(p, 0, dict(pr, min_keep=[4]), 5)[0] == [0, 2, 3, 4]
    assert ref.decide(p, 0, dict(pr, min_keep=[9]), 5)[0] == [0, 1, 2, 3, 4]  # min > n: all
    assert ref.decide(p, 0, dict(pr, max_keep=[0]), 5)[0] == []
    # clamping ranks by p, ties to the lower index
    q = [0.1, 0.3, 0.3, 0.3]
    assert ref.decide(q, 0, dict(pr, min_keep=[2]), 4)[0] == [1, 2]
    # stage index selects the per-stage bound
    assert ref.decide(p, 1, dict(pr, max_keep=[5, 1]), 5)[0] == [0]


@check
def config_is_strict():
    ref.parse_config(json.loads(json.dumps(DEIT_T)))
    bad = json.loads(json.dumps(DEIT_T))
    bad["embed_dims"] = 192
    assert raises(ref.ConfigError, ref.parse_config, bad)
    bad = json.loads(json.dumps(DEIT_T))
    bad["pruning"]["keep_ratio"] = [0.5, 0.5, 0.5]
    assert raises(ref.ConfigError, ref.parse_config, bad)
    bad = json.loads(json.dumps(DEIT_T))
    bad["pruning"]["min_keep"] = [10, 10, 10]
    bad["pruning"]["max_keep"] = [5, 10, 10]
    assert raises(ref.ConfigError, ref.parse_config, bad)
    bad = json.loads(json.dumps(DEIT_T))
    bad["pruning"]["locations"] = [6, 3]
    assert raises(ref.ConfigError, ref.parse_config, bad)
    bad = json.loads(json.dumps(DEIT_T))
    bad["pruning"]["mode"] = "topk"
    del bad["pruning"]["keep_ratios"]
    assert raises(ref.ConfigError, ref.parse_config, bad)
    bad = json.loads(json.dumps(DEIT_T))
    del bad["ln_eps"]
    assert raises(ref.ConfigError, ref.parse_config, bad)


@check
def macs_match_published_deit_figures():
    cfg = ref.parse_config(json.loads(json.dumps(DEIT_T)))
    assert ref.dense_macs(cfg) == 1_253_683_200  # 1.254 GMACs (DeiT-T)
    # one selector over 196 tokens, gate 3 -> 1 -> 3: ~3.9 M MACs
    assert ref.macs_selector(cfg, 196, 1) == 196 * 3 * (4096 + 2048 + 512 + 32) + 196 * 6
    assert ref.macs_block(cfg, 197) == 12 * 197 * 192 * 192 + 2 * 197 * 197 * 192


def tiny_model():
    return ref.load_model_dir(TINY)


@check
def selector_is_permutation_equivariant():
    cfg, w = tiny_model()
    X = torch.randn(50, cfg["embed_dim"], generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    p = ref.selector_probs(X, w, 0, cfg)
    assert torch.allclose(ref.selector_probs(X[perm], w, 0, cfg), p[perm], atol=1e-6)
    assert bool(((p > 0) & (p < 1)).all())


@check
def threshold_zero_equals_dense():
    cfg, w = tiny_model()
    x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(5))
    dense = ref.forward(cfg, w, x, dict(cfg["pruning"], mode="none"))
    keep_all = ref.forward(cfg, w, x, dict(cfg["pruning"], mode="adaptive", threshold=0.0))
    assert all(st["kept"] == st["tokens_in"] == 196 and st["packages"] == 0
               for st in keep_all.stages)
    assert torch.equal(dense.logits, keep_all.logits)
    sel = sum(ref.macs_selector(cfg, 196, 1) for _ in range(3))
    assert keep_all.macs == dense.macs + sel and dense.macs == dense.dense_macs


@check
def fixture_decisions_follow_from_keep_probs():
    """Re-derives every stage of expected.json from its own keep_probs."""
    path = os.path.join(CASES, "expected.json")
    if not os.path.exists(path):
        print("    (no fixtures yet: skipped)")
        return
    with open(path, encoding="utf-8") as f:
        exp = json.load(f)
    cfg, _ = tiny_model()
    for case in exp["cases"]:
        # MACs from the stage table alone
        macs, live, pkgs, si = ref.macs_patch_embed(cfg), 196, 0, 0
        for i in range(cfg["depth"]):
            if si < len(case["stages"]) and case["stages"][si]["block"] == i:
                st = case["stages"][si]
                if st["tokens_in"]:
                    macs += ref.macs_selector(cfg, st["tokens_in"], 1)
                live, pkgs, si = st["kept"], st["packages"], si + 1
            macs += ref.macs_block(cfg, 1 + live + pkgs)
        macs += ref.macs_head(cfg)
        assert case["macs"] == macs and case["dense_macs"] == ref.dense_macs(cfg), case["name"]
        pr = case["pruning"]
        if pr["mode"] == "none":
            assert case["stages"] == [] and case["keep_probs"] == [], case["name"]
            assert case["macs"] == case["dense_macs"] and case["min_margin"] is None
            continue
        orig = list(range(196))
        pkgs = 0
        for s, (st, kp) in enumerate(zip(case["stages"], case["keep_probs"])):
            assert st["block"] == pr["locations"][s]
            assert st["tokens_in"] == len(orig) == len(kp), case["name"]
            if kp:
                keep, _ = ref.decide(kp, s, pr, 196)
                if len(keep) < len(kp):
                    pkgs += 1
                orig = [orig[j] for j in keep]
            assert st["kept"] == len(orig) and st["kept_patch_indices"] == orig, case["name"]
            assert st["packages"] == pkgs, case["name"]
        assert case["min_margin"] >= 2e-3, case["name"]


def main() -> int:
    torch.set_num_threads(1)
    for fn in CHECKS:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
            return 1
        print(f"ok   {fn.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
