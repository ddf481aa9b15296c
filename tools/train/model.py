"""DeiT backbone with timm key names + HeatViT token selectors (shared/spec/heatvit-model.md).

Three forward paths:
  * `forward_dense`   - the plain backbone (pruning mode "none"), used for dense
                        training and as the distillation teacher.
  * `forward_train`   - HeatViT training semantics: Gumbel-softmax (hard, tau=1,
                        straight-through) on the log of the fused keep probability,
                        cumulative masks, DynamicViT `softmax_with_policy` attention,
                        one package token per stage (keep-score-weighted mean of the
                        tokens pruned at that stage).  Tokens are masked, not removed.
  * `forward_masked_eval` - deterministic decisions (adaptive threshold / topk) on a
                        batch, with exact -inf attention masks instead of compaction.
                        Mathematically identical to the spec's compacted inference
                        (attention, LN and MLP only ever see the live set); used for
                        fast validation.  `infer_one` (in evaluate.py) is the literal
                        spec implementation with physical compaction.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, n, D], row-major patches


def softmax_with_policy(attn, policy, eps=1e-6):
    """DynamicViT: attention over kept keys only; a dropped query attends to itself."""
    b, n = policy.shape
    attn_policy = policy.reshape(b, 1, 1, n)
    eye = torch.eye(n, dtype=attn.dtype, device=attn.device).view(1, 1, n, n)
    attn_policy = attn_policy + (1.0 - attn_policy) * eye
    attn = attn - attn.max(dim=-1, keepdim=True)[0]
    attn = attn.exp() * attn_policy
    return (attn + eps / n) / (attn.sum(dim=-1, keepdim=True) + eps)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, policy=None, key_mask=None):
        """policy: [B,N] float soft/hard mask (training); key_mask: [B,N] bool (exact eval)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if policy is None:
            mask = None if key_mask is None else key_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = softmax_with_policy(attn, policy)
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, ln_eps, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _dp(self, y):
        if not self.training or self.drop_path == 0.0:
            return y
        keep = 1.0 - self.drop_path
        m = torch.rand((y.shape[0], 1, 1), dtype=y.dtype, device=y.device) < keep
        return y * m / keep

    def forward(self, x, policy=None, key_mask=None):
        x = x + self._dp(self.attn(self.norm1(x), policy=policy, key_mask=key_mask))
        x = x + self._dp(self.mlp(self.norm2(x)))
        return x


# ----------------------------------------------------------------------------- selector

class HeadScorer(nn.Module):
    """One head's score branch: LN -> fc1(d,d) -> GELU -> [local | global] -> fc2..fc4."""

    def __init__(self, d, ln_eps):
        super().__init__()
        self.norm = nn.LayerNorm(d, eps=ln_eps)
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d // 2)
        self.fc3 = nn.Linear(d // 2, d // 4)
        self.fc4 = nn.Linear(d // 4, 2)

    def forward(self, xh, live=None, log_both=False):
        """xh [B,n,d]; live [B,n] float mask (None = all live). Returns keep prob [B,n]
        (or, with log_both, log-softmax of (keep, drop) [B,n,2])."""
        d = xh.shape[-1]
        u = F.gelu(self.fc1(self.norm(xh)))
        local, glob = u[..., : d // 2], u[..., d // 2:]
        if live is None:
            g = glob.mean(dim=1, keepdim=True)
        else:
            w = live.unsqueeze(-1)
            g = (glob * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1e-6)
        f = torch.cat([local, g.expand_as(local)], dim=-1)
        z = self.fc4(F.gelu(self.fc3(F.gelu(self.fc2(f)))))
        if log_both:
            return z.log_softmax(dim=-1)
        return z.softmax(dim=-1)[..., 0]


class Gate(nn.Module):
    def __init__(self, num_heads):
        super().__init__()
        hidden = max(1, num_heads // 2)
        self.fc1 = nn.Linear(num_heads, hidden)
        self.fc2 = nn.Linear(hidden, num_heads)

    def forward(self, m, log=False):
        z = self.fc2(F.gelu(self.fc1(m)))
        return F.logsigmoid(z) if log else torch.sigmoid(z)


class Selector(nn.Module):
    def __init__(self, dim, num_heads, ln_eps):
        super().__init__()
        self.num_heads = num_heads
        self.d = dim // num_heads
        self.heads = nn.ModuleList([HeadScorer(self.d, ln_eps) for _ in range(num_heads)])
        self.gate = Gate(num_heads)

    def forward(self, x, live=None):
        """x: live patch tokens [B,n,D] -> fused keep probability p [B,n]."""
        b, n, _ = x.shape
        xs = x.reshape(b, n, self.num_heads, self.d)
        t = torch.stack([hd(xs[:, :, h], live) for h, hd in enumerate(self.heads)], dim=-1)  # [B,n,H]
        a = self.gate(xs.mean(dim=-1))  # [B,n,H]
        return (a * t).sum(-1) / a.sum(-1)

    def log_keep_drop(self, x, live=None):
        """log p and log(1 - p) [B,n] of the fused keep probability, computed in log space
        (no clamping, so the gradient never dies when p saturates)."""
        b, n, _ = x.shape
        xs = x.reshape(b, n, self.num_heads, self.d)
        lt = torch.stack([hd(xs[:, :, h], live, log_both=True) for h, hd in enumerate(self.heads)], dim=-2)  # [B,n,H,2]
        la = self.gate(xs.mean(dim=-1), log=True)  # [B,n,H]
        norm = torch.logsumexp(la, dim=-1)
        lp = torch.logsumexp(la + lt[..., 0], dim=-1) - norm
        lq = torch.logsumexp(la + lt[..., 1], dim=-1) - norm
        return lp, lq


# ----------------------------------------------------------------------------- model

class HeatViT(nn.Module):
    def __init__(self, image_size=28, patch_size=4, embed_dim=64, depth=6, num_heads=4,
                 mlp_ratio=4, num_classes=10, ln_eps=1e-6, locations=(), drop_path=0.0,
                 selector_init="vit"):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.mlp_ratio, self.num_classes, self.ln_eps = mlp_ratio, num_classes, ln_eps
        self.num_patches = (image_size // patch_size) ** 2
        self.locations = list(locations)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim))
        dpr = [drop_path * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, ln_eps, dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self.selectors = nn.ModuleList(
            [Selector(embed_dim, num_heads, ln_eps) for _ in self.locations])
        self._init(selector_init)

    def _init(self, selector_init="vit"):
        """ViT init (trunc-normal std 0.02 for every Linear).  With selector_init="fan-in"
        the selectors' Linear layers get std sqrt(2/fan_in) instead (He, for the GELUs;
        sqrt(1/fan_in) for each head's last layer and the gate's): at std 0.02 a selector
        head (d = 16, four layers) starts dead: its output varies by ~1e-6 across tokens,
        so it is a constant until training happens to grow its weights."""
        if selector_init not in ("vit", "fan-in"):
            raise ValueError(f"selector_init must be 'vit' or 'fan-in', not {selector_init!r}")
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if selector_init == "fan-in":
            for name, m in self.selectors.named_modules():
                if isinstance(m, nn.Linear):
                    gain = 1.0 if name.endswith("fc4") or ".gate." in f".{name}." else 2.0
                    nn.init.trunc_normal_(m.weight, std=math.sqrt(gain / m.in_features))

    def backbone_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("selectors.")]

    def selector_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("selectors.")]

    def embed(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    # ---- dense ------------------------------------------------------------------
    def forward_dense(self, x):
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(x[:, 0]), x

    # ---- training (masks, Gumbel, package tokens) ---------------------------------
    def forward_train(self, x, n_stages=None, hard=True, noise=1.0, tau=1.0,
                      detach_selector_input=False):
        """Returns logits, final normed tokens [B,1+n0+S,D], final patch mask [B,n0],
        list of cumulative hard decisions per active stage [B,n0].

        Hard decisions are Gumbel-softmax on log(p, 1-p) with the Gumbel noise scaled by
        `noise` (straight-through, temperature `tau`): noise=1 is the standard hard
        Gumbel-softmax (keep with probability p); noise=0 is exactly the inference rule
        p >= 0.5 with a sigmoid straight-through gradient.

        With `detach_selector_input` the selectors score a detached copy of the tokens:
        the backbone then learns only from the task losses through the decisions and the
        package tokens, not from the ratio/calibration losses on the keep probabilities."""
        n_stages = len(self.locations) if n_stages is None else n_stages
        locs = {loc: s for s, loc in enumerate(self.locations[:n_stages])}
        x = self.embed(x)
        b, n0 = x.shape[0], self.num_patches
        mask = torch.ones(b, n0, dtype=x.dtype, device=x.device)
        pkg_pol = []  # policies of the package tokens appended so far
        decisions = []
        soft_keeps = []  # (log p, log(1-p), incoming mask) per stage, for the calibration loss
        for i, blk in enumerate(self.blocks):
            if i in locs:
                s = locs[i]
                patches = x[:, 1:1 + n0]
                sel_in = patches.detach() if detach_selector_input else patches
                lp, lq = self.selectors[s].log_keep_drop(sel_in, live=mask)  # [B,n0]
                p = lp.exp()
                soft_keeps.append((lp, lq, mask))
                if hard:
                    z = lp - lq
                    if noise > 0:
                        u = torch.rand_like(z).clamp(1e-10, 1 - 1e-10)
                        z = z + noise * (u.log() - (-u).log1p())   # g1 - g2 ~ Logistic(0, 1)
                    soft = torch.sigmoid(z / tau)
                    dec = (z >= 0).to(z.dtype) - soft.detach() + soft
                else:
                    dec = p
                new_mask = dec * mask                                      # cumulative
                pruned = mask * (1.0 - dec)                                # straight-through
                w = pruned * p
                wsum = w.sum(1, keepdim=True)
                cnt = pruned.sum(1, keepdim=True)
                pkg_w = torch.where(wsum > 0, w / wsum.clamp_min(1e-12),
                                    pruned / cnt.clamp_min(1e-12))
                pkg = torch.einsum("bn,bnd->bd", pkg_w, patches).unsqueeze(1)
                present = (cnt.detach() > 0.5).to(x.dtype)                 # [B,1]
                x = torch.cat([x, pkg], dim=1)
                pkg_pol.append(present)
                mask = new_mask
                decisions.append(new_mask)
            if decisions:
                ones = torch.ones(b, 1, dtype=x.dtype, device=x.device)
                policy = torch.cat([ones, mask] + pkg_pol, dim=1)
                x = blk(x, policy=policy)
            else:
                x = blk(x)
        x = self.norm(x)
        self.last_soft_keeps = soft_keeps
        return self.head(x[:, 0]), x, mask, decisions

    # ---- deterministic batched eval with exact masks ------------------------------
    @torch.no_grad()
    def forward_masked_eval(self, x, mode="adaptive", threshold=0.5, keep_ratios=None,
                            n_stages=None):
        """Spec inference semantics with -inf key masks instead of compaction.
        Returns logits and per-image stats: kept patches per stage [B,S], packages [B,S],
        and executed MACs [B]."""
        n_stages = len(self.locations) if (n_stages is None or mode == "none") else n_stages
        if mode == "none":
            n_stages = 0
        locs = {loc: s for s, loc in enumerate(self.locations[:n_stages])}
        x = self.embed(x)
        b, n0 = x.shape[0], self.num_patches
        dev = x.device
        live = torch.ones(b, n0, dtype=torch.bool, device=dev)
        pkgs = []
        kept_counts, pkg_counts = [], []
        macs = torch.full((b,), float(self.patch_embed_macs() + self.head_macs()),
                          dtype=torch.float64, device=dev)
        for i, blk in enumerate(self.blocks):
            if i in locs:
                s = locs[i]
                patches = x[:, 1:1 + n0]
                n_live = live.sum(1)
                macs += self.selector_macs(1) * n_live.double()
                p = self.selectors[s](patches, live=live.to(x.dtype))
                if mode == "adaptive":
                    keep = (p >= threshold) & live
                elif mode == "topk":
                    k = math.ceil(keep_ratios[s] * n0)
                    score = torch.where(live, p, torch.full_like(p, -1.0))
                    order = torch.sort(score, dim=1, descending=True, stable=True).indices
                    rank = torch.empty_like(order)
                    rank.scatter_(1, order, torch.arange(n0, device=dev).expand(b, -1))
                    keep = (rank < k) & live
                else:
                    raise ValueError(mode)
                # an image with no live patch left skips the selector (nothing to prune)
                keep = torch.where((n_live == 0)[:, None], live, keep)
                pruned = live & ~keep
                pf = pruned.to(x.dtype)
                w = pf * p
                wsum = w.sum(1, keepdim=True)
                cnt = pf.sum(1, keepdim=True)
                pw = torch.where(wsum > 0, w / torch.where(wsum > 0, wsum, torch.ones_like(wsum)),
                                 pf / cnt.clamp_min(1))
                pkg = torch.einsum("bn,bnd->bd", pw, patches).unsqueeze(1)
                x = torch.cat([x, pkg], dim=1)
                pkgs.append(pruned.any(1, keepdim=True))
                live = keep
                kept_counts.append(live.sum(1))
                pkg_counts.append(torch.cat(pkgs, 1).sum(1))
            key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=dev), live] + pkgs, 1)
            n_tok = key_mask.sum(1).double()
            macs += self.block_macs(n_tok)
            x = blk(x, key_mask=None if not pkgs and bool(live.all()) else key_mask)
        x = self.norm(x)
        kept = torch.stack(kept_counts, 1) if kept_counts else torch.zeros(b, 0, dtype=torch.long)
        npk = torch.stack(pkg_counts, 1) if pkg_counts else torch.zeros(b, 0, dtype=torch.long)
        return self.head(x[:, 0]), kept, npk, macs

    # ---- MAC accounting (spec section 4) -----------------------------------------
    def block_macs(self, n):
        """Spec section 4: (4 + 2*mlp_ratio)*N*D^2 + 2*N^2*D for N tokens (int or tensor)."""
        d = self.embed_dim
        return (4 + 2 * self.mlp_ratio) * n * d * d + 2 * n * n * d

    def selector_macs(self, n):
        """Linear layers of one selector over n live patch tokens (LN/softmax not counted)."""
        d, h = self.embed_dim // self.num_heads, self.num_heads
        g = max(1, h // 2)
        per_head = d * d + d * (d // 2) + (d // 2) * (d // 4) + (d // 4) * 2
        return n * (h * per_head + h * g + g * h)

    def patch_embed_macs(self):
        return self.num_patches * self.embed_dim * 3 * self.patch_size ** 2

    def head_macs(self):
        return self.embed_dim * self.num_classes

    def dense_macs(self):
        return self.patch_embed_macs() + self.depth * self.block_macs(1 + self.num_patches) \
            + self.head_macs()
