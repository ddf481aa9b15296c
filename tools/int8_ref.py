#!/usr/bin/env python3
"""Independent numpy reference of heatvit's 8-bit integer path (`cpu-int8`).

Written from `docs/integer-format.md` (the contract), not from the Rust code: numpy
int64 arithmetic for every integer step, numpy float32/float64 for the few float steps
the document fixes (LayerNorm, input quantisation, the f32 logits). It reads a quantised
model directory (`config.json`, `model.safetensors`, `model.int8.safetensors`, format
§9) and preprocessed float inputs, and writes, per input and pruning mode: the f32
logits, and per selector stage the integer (UQ0.16) fused keep scores, the kept patch
indices and the margin of the decision closest to flipping.

    ~/hvenv/bin/python tools/int8_ref.py MODEL_DIR INPUTS.safetensors \
        [--mode adaptive|topk|none]... [--int8 FILE] --json-out FILE

`--mode` may be given several times (default: the config's mode); `--int8` reads the
integer weights from FILE instead of MODEL_DIR/model.int8.safetensors. It produces the
golden fixture `tests/fixtures/tiny-int8/expected.json` that `tests/int8_golden.rs`
checks the Rust backend against (see tools/README.md, "Regenerating").

Before running, it re-derives the stored int8 weights, weight scales and int32 biases
from `model.safetensors` and the stored activation scales with the quantisation rules
of §1 and stops if any integer differs (`--no-weight-check` skips that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import struct
import sys

import numpy as np

I8_MAX = 127
I16_MAX = 32767
I32_MAX = 2**31 - 1
BIAS_MAX = 2**30
ONE_Q16 = 1 << 16
MODES = ("adaptive", "topk", "none")

# --------------------------------------------------------------------------------------
# §2: rounding, saturation, requantisation


def shift_round(x, sh):
    """x / 2^sh rounded half up (toward +inf): (x + 2^(sh-1)) >> sh, arithmetic shift.

    `x` is an int64 array (or Python int), `sh` a non-negative int or an int64 array of
    shifts (elementwise). sh == 0 returns x."""
    x = np.asarray(x, dtype=np.int64)
    sh = np.asarray(sh, dtype=np.int64)
    assert np.all(np.abs(x) <= 2**62), "shift_round operand out of the documented range"
    assert np.all((sh >= 0) & (sh <= 62))
    half = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    return np.right_shift(x + half, sh)


def div_round(num, den):
    """num / den rounded half up, den > 0: floor((2 num + den) / (2 den))."""
    num = np.asarray(num, dtype=np.int64)
    den = np.asarray(den, dtype=np.int64)
    assert np.all(den > 0)
    return np.floor_divide(2 * num + den, 2 * den)


def sat(x, lim):
    return np.clip(np.asarray(x, dtype=np.int64), -lim, lim)


def round_half_up(t):
    """Exact round half up of float64 values: compare t - floor(t) with 0.5 (§2)."""
    t = np.asarray(t, dtype=np.float64)
    assert not np.any(np.isnan(t))
    t = np.clip(t, -(2.0**62), 2.0**62)
    f = np.floor(t)
    return (f + (t - f >= 0.5)).astype(np.int64)


def quantize(x, s):
    """sat-less q = round_half_up(x / s), with ONE f32 division (§1)."""
    x = np.asarray(x, dtype=np.float32)
    q = x / np.float32(s)  # float32 / float32 -> float32, one IEEE rounding
    assert q.dtype == np.float32
    return round_half_up(q.astype(np.float64))


class Mult:
    """A dyadic multiplier m * 2^-shift (§2, `Multiplier::from_ratio`), per channel."""

    def __init__(self, ratios):
        ratios = [float(r) for r in np.atleast_1d(np.asarray(ratios, dtype=np.float64))]
        ms, shifts = zip(*(self.decompose(r) for r in ratios)) if ratios else ((), ())
        self.m = np.array(ms, dtype=np.int64)
        self.shift = np.array(shifts, dtype=np.int64)

    @staticmethod
    def decompose(r: float):
        if not (math.isfinite(r) and r > 0.0):
            raise ValueError(f"requantisation ratio {r!r} is not positive and finite")
        bits = struct.unpack("<Q", struct.pack("<d", r))[0]
        e_field = (bits >> 52) & 0x7FF
        if e_field == 0:
            raise ValueError(f"requantisation ratio {r!r} is subnormal")
        mant = (bits & ((1 << 52) - 1)) | (1 << 52)  # r = mant * 2^e
        e = e_field - 1075
        m = (mant + (1 << 21)) >> 22  # 31 bits, rounded half up
        if m == 1 << 31:
            m = 1 << 30
            e += 1
        shift = -(e + 22)
        if not 1 <= shift <= 62:
            raise ValueError(f"requantisation ratio {r!r} is outside [2^-32, 2^30)")
        assert (1 << 30) <= m < (1 << 31)
        return m, shift

    def apply(self, x):
        """(x * m + 2^(shift-1)) >> shift for int32 x (last axis = channel if per channel)."""
        x = np.asarray(x, dtype=np.int64)
        assert np.all(np.abs(x) <= I32_MAX + 1), "requantisation input is not int32"
        return shift_round(x * self.m, self.shift)


# --------------------------------------------------------------------------------------
# §4: nonlinearities in Q.16

GELU_A, GELU_NEG_B, INV_SQRT2 = -18927, 115933, 46341
LN2, EXP_A, EXP_B, EXP_C = 45426, 23495, 88670, 22544


def check_constants():
    """§4: every constant is round_half_up(c * 2^16) of its real value."""
    for q, real in [(GELU_A, -0.2888), (GELU_NEG_B, 1.769), (INV_SQRT2, 1 / math.sqrt(2)),
                    (LN2, math.log(2)), (EXP_A, 0.3585), (EXP_B, 1.353), (EXP_C, 0.344)]:
        assert q == int(round_half_up(real * 65536.0)), (q, real)


def gelu_q16(x):
    """i-GELU, delta1 = 1 (§4.1): Q.16 int32 in, Q.16 out."""
    x = np.asarray(x, dtype=np.int64)
    u = shift_round(x * INV_SQRT2, 16)
    m = np.minimum(np.abs(u), GELU_NEG_B)
    t = m - GELU_NEG_B  # min(|u|, -b) + b
    L = (shift_round(GELU_A * t * t, 32) + ONE_Q16) * np.sign(u)
    return shift_round(x * (ONE_Q16 + L), 17)


def exp_q16(x):
    """exp of x <= 0 (Q.16) in Q.16 (§4.2)."""
    x = np.asarray(x, dtype=np.int64)
    assert np.all(x <= 0)
    z = np.floor_divide(-x, LN2)
    zc = np.minimum(z, 31)
    p = x + zc * LN2
    t = p + EXP_B
    poly = shift_round(EXP_A * t * t, 32) + EXP_C
    return np.where(z >= 32, 0, shift_round(poly, zc))


def softmax_q16(rows):
    """Row softmax of Q.16 logits into UQ0.16 (delta2 = 1), last axis (§4.2)."""
    rows = np.asarray(rows, dtype=np.int64)
    e = exp_q16(rows - rows.max(axis=-1, keepdims=True))
    s = e.sum(axis=-1, keepdims=True)
    assert np.all(s >= 65554)
    factor = np.floor_divide(np.int64(1 << 48), s)
    return shift_round(e * factor, 32)


def prob_to_i8(p):
    """UQ0.16 probability -> Q0.7 int8 operand of P.V (§4.2)."""
    return np.minimum(shift_round(p, 9), 127)


def sigmoid_q16(x):
    """PLAN sigmoid (§4.3): Q.16 in, UQ0.16 out."""
    x = np.asarray(x, dtype=np.int64)
    a = np.abs(x)
    y = np.where(a >= 5 << 16, ONE_Q16,
        np.where(a >= 155648, shift_round(a, 5) + 55296,
        np.where(a >= 1 << 16, shift_round(a, 3) + 40960,
                 shift_round(a, 2) + 32768)))
    return np.where(x < 0, ONE_Q16 - y, y)


# --------------------------------------------------------------------------------------
# §3: LayerNorm on int16 rows, deterministic float


class LayerNorm:
    def __init__(self, gamma, beta, eps_f32, s_in, s_out):
        s_in, s_out = np.float32(s_in), np.float32(s_out)
        self.g = np.asarray(gamma, np.float32) / s_out  # f32 divisions, once
        self.b = np.asarray(beta, np.float32) / s_out
        assert self.g.dtype == np.float32 and self.b.dtype == np.float32
        self.s_in = float(s_in)
        self.eps = float(eps_f32)  # the f32 eps, widened

    def __call__(self, x):
        x = np.asarray(x, dtype=np.int64)
        D = x.shape[-1]
        S = x.sum(axis=-1, keepdims=True)
        c = D * x - S
        # V = sum c^2, exact, then one conversion to f64 (round to nearest even).
        # |c| <= 2 D 2^15, so V < 4 D^3 2^30 fits int64 for D < 2^10; wider rows use
        # Python integers.
        if D < 1024:
            V = (c * c).sum(axis=-1, keepdims=True).astype(np.float64)
        else:
            V = np.array([float(sum(int(v) * int(v) for v in row)) for row in c.reshape(-1, D)],
                         dtype=np.float64).reshape(S.shape)
        d = float(D)
        d3 = d * d * d
        var = (V / d3) * (self.s_in * self.s_in)
        k = (self.s_in / (d * np.sqrt(var + self.eps))).astype(np.float32)
        t = (c.astype(np.float32) * k) * self.g + self.b
        assert t.dtype == np.float32
        return sat(round_half_up(t.astype(np.float64)), I8_MAX)


# --------------------------------------------------------------------------------------
# the quantised model


def gemm(a, w):
    """Exact integer a [m, k] . w[out, k]^T in int64."""
    a = np.asarray(a, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    assert np.all(np.abs(a) <= 128) and np.all(np.abs(w) <= 127)
    return a @ w.T


class Linear:
    def __init__(self, st, name, s_x, out_scales=None, q16=False, logits=False):
        """`out_scales`: per output channel scale (array) or one scale; `q16`: output in
        Q.16; `logits`: no requantisation, f32 logits."""
        self.name = name
        self.w = st[f"{name}.weight"].reshape(st[f"{name}.weight"].shape[0], -1).astype(np.int64)
        self.sw = st[f"{name}.weight_scale"]
        self.bias = st[f"{name}.bias"].astype(np.int64)
        self.s_x = np.float32(s_x)
        n = self.w.shape[0]
        acc_scale = np.float64(self.s_x) * self.sw.astype(np.float64)  # exact in f64
        self.acc_scale = acc_scale
        if logits:
            self.mult = None
        elif q16:
            self.mult = Mult(acc_scale / (1.0 / 65536.0))
        else:
            so = np.broadcast_to(np.asarray(out_scales, dtype=np.float32).astype(np.float64), (n,))
            self.mult = Mult(acc_scale / so)

    def acc(self, a):
        y = gemm(a, self.w) + self.bias
        assert np.all(np.abs(y) <= I32_MAX), f"{self.name}: acc + bias leaves int32"
        return y

    def to_i8(self, a):
        return sat(self.mult.apply(self.acc(a)), I8_MAX)

    def to_q16(self, a):
        return sat(self.mult.apply(self.acc(a)), I32_MAX)

    def to_f32_logits(self, a):
        # (acc + bias) as f64 times (s_x * s_w[o]) in f64, one rounding to f32.
        return (self.acc(a).astype(np.float64) * self.acc_scale).astype(np.float32)


class Gelu8:
    """§4.1 (format version 2): the int8 GELU from the GELU-input point `p_in` to the
    output point `p`: each int8 input into Q.16 (s_in / 2^-16), i-GELU, then to int8 at
    s_out. Evaluated element by element here (the runtime tabulates it per layer)."""

    def __init__(self, s_in, s_out):
        self.to_q16 = Mult([float(np.float32(s_in)) / (1.0 / 65536.0)])
        self.to_i8 = q16_to(s_out)

    def __call__(self, q):
        assert np.all(np.abs(np.asarray(q)) <= I8_MAX), "GELU input is not int8"
        return sat(self.to_i8.apply(gelu_q16(sat(self.to_q16.apply(q), I32_MAX))), I8_MAX)


def q16_to(s_out):
    return Mult([(1.0 / 65536.0) / float(np.float32(s_out))])


def ratio(s_num, s_den):
    return Mult([float(np.float32(s_num)) / float(np.float32(s_den))])


class Model:
    def __init__(self, model_dir: str, weight_check: bool = True, int8_path: str | None = None):
        from safetensors import safe_open

        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self.cfg = cfg
        assert cfg["arch"] == "deit"
        self.S, self.P, self.D = cfg["image_size"], cfg["patch_size"], cfg["embed_dim"]
        self.depth, self.H = cfg["depth"], cfg["num_heads"]
        self.hd = self.D // self.H
        self.n0 = (self.S // self.P) ** 2
        self.eps = np.float32(cfg["ln_eps"])  # the config's f64 narrowed to f32
        pr = dict(cfg.get("pruning") or {"locations": [], "mode": "none"})
        pr.setdefault("mode", "adaptive")
        pr.setdefault("threshold", 0.5)
        self.pruning = pr
        path = int8_path or os.path.join(model_dir, "model.int8.safetensors")
        self.int8_path = path
        with safe_open(path, framework="numpy") as f:
            md = f.metadata() or {}
            if md.get("format") != "heatvit-int8" or md.get("version") != "2":
                raise ValueError(f"{path}: metadata {md}, expected format heatvit-int8 version 2")
            st = {k: f.get_tensor(k) for k in f.keys()}
        self.st = st
        self.used = set()
        for k, v in st.items():
            if k.endswith(".weight") and v.dtype == np.int8 and np.any(v == -128):
                raise ValueError(f"{path}: {k} holds -128")
            if k.endswith(".bias") and v.dtype == np.int32 and np.any(np.abs(v.astype(np.int64)) > BIAS_MAX):
                raise ValueError(f"{path}: {k} beyond 2^30")
        self.build()
        extra = sorted(set(st) - self.used)
        if extra:
            raise ValueError(f"{path}: unexpected tensors {extra}")
        fpath = os.path.join(model_dir, "model.safetensors")
        if weight_check:
            self.check_against_float(fpath)

    # -- reading --------------------------------------------------------------------
    def t(self, name, dtype):
        v = self.st[name]
        if v.dtype != dtype:
            raise ValueError(f"{name}: dtype {v.dtype}, expected {dtype}")
        self.used.add(name)
        return v

    def sc(self, point):
        v = self.t(f"scale.{point}", np.float32)
        assert v.shape == (1,) and 0 < v[0] <= 1e6, (point, v)
        return np.float32(v[0])

    def lin(self, name, s_x_point, **kw):
        for suffix, dt in ((".weight", np.int8), (".weight_scale", np.float32), (".bias", np.int32)):
            self.t(name + suffix, dt)
        self.s_x_point[name] = s_x_point
        return Linear(self.st, name, self.sc(s_x_point), **kw)

    def ln(self, name, s_in, s_out_point):
        g = self.t(f"{name}.weight", np.float32)
        b = self.t(f"{name}.bias", np.float32)
        return LayerNorm(g, b, self.eps, s_in, self.sc(s_out_point))

    @staticmethod
    def residual_before(i):
        return "embed" if i == 0 else f"blocks.{i - 1}.res_mlp"

    def build(self):
        sc, D, H, hd = self.sc, self.D, self.H, self.hd
        self.s_x_point = {}
        # embedding (§8): int8 image, GEMM to the int16 residual `embed`, + int16 rows.
        s_embed = sc("embed")
        self.s_image = sc("image")
        self.patch = self.lin("patch_embed.proj", "image", out_scales=s_embed)
        cls = self.t("cls_token", np.float32).reshape(D)
        pos = self.t("pos_embed", np.float32).reshape(1 + self.n0, D)
        rows = sat(quantize(pos, s_embed), I16_MAX)
        rows[0] = sat(quantize(cls + pos[0], s_embed), I16_MAX)  # f32 add, then quantise
        self.embed_rows = rows
        self.blocks = []
        for i in range(self.depth):
            n = lambda s: f"blocks.{i}.{s}"  # noqa: E731
            s_in = sc(self.residual_before(i))
            s_q, s_k, s_v = sc(n("q")), sc(n("k")), sc(n("v"))
            b = {
                "norm1": self.ln(n("norm1"), s_in, n("norm1")),
                "qkv": self.lin(n("attn.qkv"), n("norm1"),
                                out_scales=np.repeat(np.array([s_q, s_k, s_v], np.float32), D)),
                # Q.K^T accumulator (s_q s_k) times 1/sqrt(d_h) to Q.16:
                # ((s_q * s_k) / sqrt(d_h)) / 2^-16 in f64.
                "logits": Mult([(float(s_q) * float(s_k)) / math.sqrt(float(hd)) / (1.0 / 65536.0)]),
                # P.V accumulator (2^-7 s_v) to int8 ctx.
                "pv": Mult([((1.0 / 128.0) * float(s_v)) / float(sc(n("ctx")))]),
                "proj": self.lin(n("attn.proj"), n("ctx"), out_scales=sc(n("res_attn"))),
                "res1": ratio(s_in, sc(n("res_attn"))),
                "norm2": self.ln(n("norm2"), sc(n("res_attn")), n("norm2")),
                "fc1": self.lin(n("mlp.fc1"), n("norm2"), out_scales=sc(n("hidden_in"))),
                "hidden": Gelu8(sc(n("hidden_in")), sc(n("hidden"))),
                "fc2": self.lin(n("mlp.fc2"), n("hidden"), out_scales=sc(n("res_mlp"))),
                "res2": ratio(sc(n("res_attn")), sc(n("res_mlp"))),
            }
            self.blocks.append(b)
        self.selectors = []
        locs = self.pruning.get("locations", [])
        if locs and "selectors.0.gate.fc1.weight" in self.st:
            for s, loc in enumerate(locs):
                s_res = sc(self.residual_before(loc))
                heads = []
                for h in range(H):
                    n = lambda x: f"selectors.{s}.heads.{h}.{x}"  # noqa: E731
                    heads.append({
                        "norm": self.ln(n("norm"), s_res, n("norm")),
                        "fc1": self.lin(n("fc1"), n("norm"), out_scales=sc(n("u_in"))),
                        "u": Gelu8(sc(n("u_in")), sc(n("u"))),
                        "fc2": self.lin(n("fc2"), n("u"), out_scales=sc(n("f2_in"))),
                        "f2": Gelu8(sc(n("f2_in")), sc(n("f2"))),
                        "fc3": self.lin(n("fc3"), n("f2"), out_scales=sc(n("f3_in"))),
                        "f3": Gelu8(sc(n("f3_in")), sc(n("f3"))),
                        "fc4": self.lin(n("fc4"), n("f3"), q16=True),
                    })
                n = lambda x: f"selectors.{s}.{x}"  # noqa: E731
                self.selectors.append({
                    "heads": heads,
                    "gate_in": ratio(s_res, sc(n("gate_in"))),
                    "gate_fc1": self.lin(n("gate.fc1"), n("gate_in"), out_scales=sc(n("gate_hidden_in"))),
                    "gate_hidden": Gelu8(sc(n("gate_hidden_in")), sc(n("gate_hidden"))),
                    "gate_fc2": self.lin(n("gate.fc2"), n("gate_hidden"), q16=True),
                })
        self.norm = self.ln("norm", sc(self.residual_before(self.depth)), "norm")
        self.head = self.lin("head", "norm", logits=True)

    # -- §1: the stored integers must be what the float model + scales give ------------
    def check_against_float(self, fpath):
        from safetensors.numpy import load_file

        fw = load_file(fpath)
        bad = []
        for name, point in self.s_x_point.items():
            w = fw[f"{name}.weight"].astype(np.float32)
            w = w.reshape(w.shape[0], -1)
            mx = np.max(np.abs(w), axis=1)
            sw = np.where(mx == 0, np.float32(1.0), mx / np.float32(127)).astype(np.float32)
            q = sat(round_half_up((w / sw[:, None]).astype(np.float64)), I8_MAX)
            if not np.array_equal(sw.view(np.uint32), self.st[f"{name}.weight_scale"].view(np.uint32)):
                bad.append(f"{name}.weight_scale")
            if not np.array_equal(q, self.st[f"{name}.weight"].reshape(q.shape).astype(np.int64)):
                bad.append(f"{name}.weight")
            s_x = float(self.sc(point))
            bq = np.clip(round_half_up(fw[f"{name}.bias"].astype(np.float64)
                                       / (s_x * sw.astype(np.float64))), -BIAS_MAX, BIAS_MAX)
            if not np.array_equal(bq, self.st[f"{name}.bias"].astype(np.int64)):
                bad.append(f"{name}.bias")
        for k, v in self.st.items():
            if v.dtype == np.float32 and not k.startswith("scale.") and not k.endswith("weight_scale"):
                if not np.array_equal(v.view(np.uint32), fw[k].astype(np.float32).view(np.uint32)):
                    bad.append(k)
        if bad:
            raise ValueError(f"{fpath}: the stored integer tensors differ from the §1 quantisation "
                             f"of the float weights: {bad}")

    # -- forward ---------------------------------------------------------------------
    def embed(self, image):
        S, P, D = self.S, self.P, self.D
        g = S // P
        # im2col: patch (gy, gx) row-major; columns (channel, ky, kx) = the flattened
        # [D, 3, P, P] weight.
        cols = image.reshape(3, g, P, g, P).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * P * P)
        a = sat(quantize(cols, self.s_image), I8_MAX)
        x = self.embed_rows.copy()
        x[1:] = sat(self.patch.mult.apply(self.patch.acc(a)) + self.embed_rows[1:], I16_MAX)
        return x

    def block(self, b, x):
        D, H, hd = self.D, self.H, self.hd
        y = b["norm1"](x)
        qkv = b["qkv"].to_i8(y)
        ctx = np.zeros_like(y)
        for h in range(H):
            q = qkv[:, h * hd:(h + 1) * hd]
            k = qkv[:, D + h * hd:D + (h + 1) * hd]
            v = qkv[:, 2 * D + h * hd:2 * D + (h + 1) * hd]
            logits = sat(b["logits"].apply(gemm(q, k)), I32_MAX)
            probs = prob_to_i8(softmax_q16(logits))
            pv = gemm(probs, v.T)
            ctx[:, h * hd:(h + 1) * hd] = sat(b["pv"].apply(pv), I8_MAX)
        x = sat(b["proj"].mult.apply(b["proj"].acc(ctx)) + b["res1"].apply(x), I16_MAX)
        y = b["norm2"](x)
        hid = b["hidden"](b["fc1"].to_i8(y))
        x = sat(b["fc2"].mult.apply(b["fc2"].acc(hid)) + b["res2"].apply(x), I16_MAX)
        return x

    def selector(self, sel, X):
        """Fused UQ0.16 keep scores of the live patch rows X [n, D] (int16)."""
        n = X.shape[0]
        H, hd = self.H, self.hd
        T = np.zeros((n, H), np.int64)
        means = np.zeros((n, H), np.int64)
        for h, hw in enumerate(sel["heads"]):
            Xh = X[:, h * hd:(h + 1) * hd]
            means[:, h] = sat(sel["gate_in"].apply(div_round(Xh.sum(axis=1), hd)), I8_MAX)
            u = hw["u"](hw["fc1"].to_i8(hw["norm"](Xh)))
            half = hd // 2
            glob = sat(div_round(u[:, half:].sum(axis=0), n), I8_MAX)
            u = u.copy()
            u[:, half:] = glob[None, :]
            f2 = hw["f2"](hw["fc2"].to_i8(u))
            f3 = hw["f3"](hw["fc3"].to_i8(f2))
            lg = hw["fc4"].to_q16(f3)
            T[:, h] = softmax_q16(lg)[:, 0]  # column 0 = keep
        gh = sel["gate_hidden"](sel["gate_fc1"].to_i8(means))
        a = sigmoid_q16(sel["gate_fc2"].to_q16(gh))
        num = (a * T).sum(axis=1)
        den = a.sum(axis=1)
        safe = np.where(den > 0, den, 1)
        return np.where(den > 0, div_round(num, safe), div_round(T.sum(axis=1), H))

    def forward(self, image, pr):
        x = self.embed(np.asarray(image, np.float32))
        live = self.n0
        packages = 0
        orig = list(range(self.n0))
        stages = []
        locs = pr["locations"] if pr["mode"] != "none" else []
        for i in range(self.depth):
            if i in locs:
                s = locs.index(i)
                if live == 0:
                    stages.append({"block": i, "tokens_in": 0, "kept": 0, "packages": packages,
                                   "kept_patch_indices": [], "scores_q16": [], "margin_q16": None})
                else:
                    p = self.selector(self.selectors[s], x[1:1 + live])
                    keep, margin = decide(p, s, pr, self.n0)
                    kept_set = set(keep)
                    pruned = [j for j in range(live) if j not in kept_set]
                    rows = [x[:1], x[1 + np.array(keep, dtype=np.int64)], x[1 + live:]]
                    if pruned:
                        rows.append(package(x[1 + np.array(pruned)], p[np.array(pruned)])[None, :])
                        packages += 1
                    x = np.concatenate(rows, axis=0)
                    stages.append({"block": i, "tokens_in": live, "kept": len(keep),
                                   "packages": packages,
                                   "kept_patch_indices": [orig[j] for j in keep],
                                   "scores_q16": [int(v) for v in p], "margin_q16": margin})
                    orig = [orig[j] for j in keep]
                    live = len(keep)
            x = self.block(self.blocks[i], x)
        y = self.norm(x[:1])
        return self.head.to_f32_logits(y)[0], stages


def package(R, w):
    """§5: P = sum_j w_j x_j / sum_j w_j per channel, one div_round, sat16."""
    den = int(w.sum())
    if den > 0:
        return sat(div_round((w[:, None] * R).sum(axis=0), den), I16_MAX)
    return sat(div_round(R.sum(axis=0), R.shape[0]), I16_MAX)


def rank_desc(p):
    return sorted(range(len(p)), key=lambda j: (-int(p[j]), j))


def decide(p, stage, pr, n0):
    """§5 decision on the integer scores. Returns (kept positions ascending, margin in
    Q0.16 LSB: the distance of the closest decision from flipping, None if none made)."""
    n = len(p)
    margins = []
    if pr["mode"] == "adaptive":
        # The backend hands p / 65536 as f32 (exact); it is compared with the f32
        # threshold: p / 65536 >= f32(threshold).
        thr = np.float32(pr["threshold"])
        pf = (np.asarray(p, np.int64).astype(np.float32) / np.float32(65536))
        keep = [j for j in range(n) if pf[j] >= thr]
        t_q16 = float(thr) * 65536.0  # exact
        margins.append(min(abs(float(v) - t_q16) for v in p))
        lo = (pr.get("min_keep") or [0] * (stage + 1))[stage]
        hi = (pr.get("max_keep") or [None] * (stage + 1))[stage]
        k2 = len(keep)
        if k2 < lo:
            k2 = min(lo, n)
        elif hi is not None and k2 > hi:
            k2 = hi
        if k2 != len(keep):
            order = rank_desc(p)
            keep = sorted(order[:k2])
            if 0 < k2 < n:
                margins.append(float(int(p[order[k2 - 1]]) - int(p[order[k2]])))
    elif pr["mode"] == "topk":
        k = math.ceil(pr["keep_ratios"][stage] * n0)
        if k >= n:
            keep = list(range(n))
        else:
            order = rank_desc(p)
            keep = sorted(order[:k])
            if k > 0:
                margins.append(float(int(p[order[k - 1]]) - int(p[order[k]])))
    else:
        raise ValueError(pr["mode"])
    return keep, (min(margins) if margins else None)


# --------------------------------------------------------------------------------------
# CLI


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("inputs", help="safetensors file of preprocessed [3,S,S] float32 images")
    ap.add_argument("--mode", action="append", choices=MODES,
                    help="pruning mode (repeatable; default: the config's)")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--int8", help="integer weights file (default MODEL_DIR/model.int8.safetensors)")
    ap.add_argument("--quantize-command", help="recorded in the output as provenance")
    ap.add_argument("--no-weight-check", action="store_true")
    a = ap.parse_args(argv)

    from safetensors.numpy import load_file
    import safetensors

    check_constants()
    model = Model(a.model_dir, weight_check=not a.no_weight_check, int8_path=a.int8)
    inputs = load_file(a.inputs)
    modes = a.mode or [model.pruning["mode"]]
    cases = []
    seen = {}
    duplicates = {}
    for name in sorted(inputs):
        img = inputs[name]
        assert img.shape == (3, model.S, model.S) and img.dtype == np.float32, (name, img.shape)
        key = hashlib.sha256(img.tobytes()).hexdigest()
        if key in seen:  # bitwise the same tensor as an earlier input: same results
            duplicates[name] = seen[key]
            continue
        seen[key] = name
        for mode in modes:
            pr = dict(model.pruning)
            pr["mode"] = mode
            if mode == "topk" and "keep_ratios" not in pr:
                raise ValueError("mode topk needs pruning.keep_ratios in config.json")
            logits, stages = model.forward(img, pr)
            margins = [st["margin_q16"] for st in stages if st["margin_q16"] is not None]
            top = np.argsort(-logits.astype(np.float64), kind="stable")[:5]
            cases.append({
                "name": f"{name}/{mode}",
                "input": name,
                "pruning": pr,
                "logits_f32_hex": "".join(f"{v:08x}" for v in logits.view(np.uint32)),
                "top5": [[int(c), float(logits[c])] for c in top],
                "stages": stages,
                "min_margin_q16": min(margins) if margins else None,
            })
            print(f"{name}/{mode}: kept {[st['kept'] for st in stages]}, top-1 {int(top[0])}, "
                  f"min margin {cases[-1]['min_margin_q16']} LSB", file=sys.stderr)
    out = {
        "generator": "tools/int8_ref.py",
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "command": shlex.join(["tools/int8_ref.py"] + list(argv)),
        "quantize_command": a.quantize_command,
        "model": a.model_dir,
        "model_int8": model.int8_path,
        "model_int8_sha256": sha256(model.int8_path),
        "inputs": a.inputs,
        "inputs_sha256": sha256(a.inputs),
        "skipped_duplicate_inputs": duplicates,
        "conventions": "logits_f32_hex: 8 hex digits per logit, the f32 bits (big-endian "
                       "digits of the u32); scores_q16: fused keep scores in UQ0.16 "
                       "(65536 = 1.0); margin_q16: |p - threshold| (adaptive) or the "
                       "k-th/(k+1)-th gap (topk) of the closest decision, in 2^-16 units",
        "cases": cases,
    }
    with open(a.json_out, "w", encoding="utf-8") as f:
        f.write("{\n")
        items = [(k, v) for k, v in out.items() if k != "cases"]
        for k, v in items:
            f.write(f" {json.dumps(k)}: {json.dumps(v)},\n")
        f.write(' "cases": [\n')
        f.write(",\n".join(" " + json.dumps(c, separators=(",", ":")) for c in cases))
        f.write("\n ]\n}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
