"""The single resumable training driver: dense -> selector stages 1..S -> export.

    nohup nice -n 10 ~/hvenv/bin/python tools/train/run.py --run-dir /work/runs/fmnist \
        >> /work/runs/fmnist/train.log 2>&1 &

Re-running the same command resumes exactly from the last checkpoint
(<run-dir>/ckpt.pt, written atomically every --ckpt-every seconds and at every epoch
end; data order, augmentation and Gumbel noise are restored from the saved RNG state).
Finished phases are skipped.  Outputs in <run-dir>:
  train.log        progress (appended)
  metrics.jsonl    one line per finished epoch (rewritten from the checkpoint history)
  dense_final.pt   the dense model (teacher for the selector phases)
  export-dense/    runtime model dir of the dense model (pruning mode "none")
  results.json     final evaluation (exact spec inference on the 10k test images)
and the final runtime model dir in --export-dir (default: models/fmnist-heatvit).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
import evaluate  # noqa: E402
import export  # noqa: E402
from model import HeatViT  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))

# Everything that defines the run.  Saved in the checkpoint; a resume with a different
# recipe is refused.
RECIPE = {
    "geometry": {"image_size": 28, "patch_size": 4, "embed_dim": 64, "depth": 6,
                 "num_heads": 4, "mlp_ratio": 4, "num_classes": 10, "ln_eps": 1e-6},
    "locations": [1, 2, 4],
    "keep_targets": [0.6, 0.35, 0.2],     # cumulative fractions of the 49 patch tokens
    "batch_size": 128,
    "dense": {"epochs": 26, "lr": 1e-3, "min_lr": 1e-5, "warmup_epochs": 1,
              "weight_decay": 0.05, "label_smoothing": 0.1},
    # one phase per selector stage; stage k trains selectors 0..k-1 together
    "stages": [{"epochs": 1}, {"epochs": 1}, {"epochs": 3}],
    "selector": {"lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 100,
                 "backbone_lr": 3e-4, "backbone_frozen_epochs": 0, "backbone_warmup_steps": 0,
                 "weight_decay": 0.05, "label_smoothing": 0.1,
                 "ratio_weight": 10.0, "distill_kl": 0.5, "distill_token": 0.5,
                 "gumbel_tau": 1.0,
                 # Gumbel noise scale 1 -> 0 linearly over this fraction of each stage's
                 # steps, then 0: training ends on the inference rule p >= 0.5 itself.
                 "noise_anneal_frac": 0.5,
                 # weight of the batch-quantile calibration loss (see the training loop)
                 "calib_weight": 1.0},
    "augment": {"crop_pad": 2, "hflip": True},
    # a dense checkpoint (state dict) the dense phase starts from (a second cosine cycle);
    # None = from scratch
    "init_from": None,
    # the distillation teacher of the selector phases (a dense state dict); None = this run's
    # own dense_final.pt (the model the selector phases start from)
    "teacher_from": None,
}


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def phases():
    ph = [("dense", RECIPE["dense"]["epochs"], 0)]
    for k, st in enumerate(RECIPE["stages"]):
        ph.append((f"stage{k + 1}", st["epochs"], k + 1))
    ext = RECIPE.get("extend")
    if ext:
        n = len(RECIPE["stages"])
        ph.append((f"stage{n}-extend", ext["epochs"], n))
    return ph


def build_model():
    return HeatViT(locations=RECIPE["locations"], selector_init=RECIPE["selector"].get("init", "vit"),
                   **RECIPE["geometry"])


def param_groups(model, phase_stages):
    def split(params_named):
        decay, no_decay = [], []
        for n, p in params_named:
            (decay if p.ndim >= 2 and n not in ("cls_token", "pos_embed") else no_decay).append(p)
        return decay, no_decay
    bb = [(n, p) for n, p in model.named_parameters() if not n.startswith("selectors.")]
    if phase_stages == 0:
        d, nd = split(bb)
        wd = RECIPE["dense"]["weight_decay"]
        return [{"params": d, "weight_decay": wd, "kind": "backbone"},
                {"params": nd, "weight_decay": 0.0, "kind": "backbone"}]
    sel = [(n, p) for n, p in model.named_parameters()
           if n.startswith("selectors.") and int(n.split(".")[1]) < phase_stages]
    wd = RECIPE["selector"]["weight_decay"]
    swd = RECIPE["selector"].get("selector_weight_decay", wd)
    bd, bnd = split(bb)
    sd, snd = split(sel)
    return [{"params": bd, "weight_decay": wd, "kind": "backbone"},
            {"params": bnd, "weight_decay": 0.0, "kind": "backbone"},
            {"params": sd, "weight_decay": swd, "kind": "selector"},
            {"params": snd, "weight_decay": 0.0, "kind": "selector"}]


def cosine(step, total, peak, floor, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, t)))


def set_lrs(opt, phase_stages, epoch, step_in_phase, steps_per_epoch, epochs, scale=1.0):
    """Learning rates of this step. `scale` multiplies the selector phases' peaks (the
    extension phase runs a fresh, lower cosine)."""
    total = epochs * steps_per_epoch
    if phase_stages == 0:
        c = RECIPE["dense"]
        lr = cosine(step_in_phase, total, c["lr"], c["min_lr"], c["warmup_epochs"] * steps_per_epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        return {"lr": lr}
    c = RECIPE["selector"]
    slr = cosine(step_in_phase, total, scale * c["lr"], scale * c["min_lr"], c["warmup_steps"])
    frozen = c["backbone_frozen_epochs"] * steps_per_epoch
    if step_in_phase < frozen:
        blr = 0.0
    else:
        blr = cosine(step_in_phase - frozen, total - frozen, scale * c["backbone_lr"], 0.0,
                     c.get("backbone_warmup_steps", 0))
    for g in opt.param_groups:
        g["lr"] = slr if g["kind"] == "selector" else blr
    return {"lr": slr, "backbone_lr": blr}


def backbone_from(sd, model, path):
    """`model`'s state dict with every backbone tensor from `sd` (a dense state dict, with
    selectors of any layout or none) and its own selector tensors; a clear error if the
    backbones differ."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("selectors.")}
    bad = sorted(set(sd) ^ {k for k in own if not k.startswith("selectors.")})
    if bad:
        raise SystemExit(f"{path}: backbone tensors differ: {bad[:5]}")
    return {**{k: v for k, v in own.items() if k.startswith("selectors.")}, **sd}


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_metrics(run_dir, history):
    tmp = os.path.join(run_dir, "metrics.jsonl.tmp")
    with open(tmp, "w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    os.replace(tmp, os.path.join(run_dir, "metrics.jsonl"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--export-dir", default=os.path.join(REPO, "models", "fmnist-heatvit"))
    ap.add_argument("--data-dir", default=data.DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest when the 2 cores are shared)")
    ap.add_argument("--ckpt-every", type=float, default=180.0, help="seconds between checkpoints")
    ap.add_argument("--stop-after-steps", type=int, default=0,
                    help="testing: exit (after a checkpoint) once this many steps ran in this process")
    ap.add_argument("--smoke", action="store_true",
                    help="testing: 6 steps per epoch, 1 epoch per phase, 300 test images")
    ap.add_argument("--init-from", metavar="DENSE_PT",
                    help="start the dense phase from this dense state dict (e.g. an earlier run's "
                         "dense_final.pt): a second cosine cycle of --dense-epochs at --dense-lr")
    ap.add_argument("--teacher", metavar="DENSE_PT",
                    help="distil the selector phases from this dense state dict instead of the "
                         "run's own dense model (e.g. a dense model trained as long as the pruned one)")
    ap.add_argument("--dense-epochs", type=int, help="override the recipe's dense epochs")
    ap.add_argument("--dense-lr", type=float, help="override the recipe's dense peak lr")
    ap.add_argument("--dense-only", action="store_true",
                    help="stop once the dense phase is done (dense_final.pt and export-dense/ "
                         "written): a dense cycle whose result other runs --init-from")
    ap.add_argument("--locations", help="override the selector locations (0-based block indices, "
                    "increasing), e.g. 2,4; give --keep-targets and --stage-epochs to match")
    ap.add_argument("--keep-targets", help="override the cumulative keep targets, e.g. 0.7,0.5,0.3")
    ap.add_argument("--stage-epochs", help="override the epochs of each selector stage, e.g. 2,2,4")
    ap.add_argument("--calib-weight", type=float, help="override the calibration-loss weight")
    ap.add_argument("--backbone-lr", type=float, help="override the backbone's peak lr in the selector stages")
    ap.add_argument("--detach-selector-input", action="store_true",
                    help="the selector losses (ratio, calibration) do not reach the backbone: "
                         "selectors score a detached copy of the tokens")
    ap.add_argument("--extend-last-stage", type=int, metavar="EPOCHS",
                    help="after the last selector stage has finished, train all selectors and the "
                         "backbone this many more epochs (a fresh AdamW and cosine, no Gumbel noise); "
                         "run it in a copy of a finished run directory without results.json")
    ap.add_argument("--extend-lr-scale", type=float, default=0.2,
                    help="peak learning rates of the extension as a fraction of the stage's (default 0.2)")
    ap.add_argument("--selector-weight-decay", type=float,
                    help="AdamW weight decay of the selectors' weight matrices (default: the "
                         "backbone's, 0.05); a remedy tried against dead selectors")
    ap.add_argument("--selector-init", choices=["vit", "fan-in"],
                    help="initialisation of the selectors' Linear layers: 'vit' (std 0.02, the default; "
                         "a selector head starts with a constant output) or 'fan-in' (He)")
    ap.add_argument("--distill-kl", type=float,
                    help="weight of the KL distillation of the class logits from the teacher in the "
                         "selector stages (recipe: 0.5)")
    ap.add_argument("--distill-token", type=float,
                    help="weight of the MSE distillation of the kept tokens from the teacher's in the "
                         "selector stages (recipe: 0.5)")
    ap.add_argument("--crop-pad", type=int, metavar="PIXELS",
                    help="zero padding of the random-crop augmentation (recipe: 2; 0 = no shift, "
                         "horizontal flips only); the selector stages use it too unless "
                         "--selector-crop-pad is given")
    ap.add_argument("--selector-crop-pad", type=int, metavar="PIXELS",
                    help="zero padding of the random-crop augmentation in the selector stages "
                         "(recipe: the dense phase's, 2; 0 = no shift, horizontal flips only)")
    ap.add_argument("--backbone-warmup-steps", type=int,
                    help="linear warm-up of the backbone lr in each selector stage (a fresh AdamW "
                         "state at full lr perturbs the converged backbone)")
    args = ap.parse_args()
    if args.backbone_lr is not None:
        RECIPE["selector"]["backbone_lr"] = args.backbone_lr
    if args.detach_selector_input:
        RECIPE["selector"]["detach_input"] = True
    if args.selector_init is not None:
        RECIPE["selector"]["init"] = args.selector_init
    if args.selector_weight_decay is not None:
        if not args.selector_weight_decay >= 0:
            raise SystemExit("--selector-weight-decay needs a value >= 0")
        RECIPE["selector"]["selector_weight_decay"] = args.selector_weight_decay
    for name, where in (("crop_pad", RECIPE["augment"]), ("selector_crop_pad", RECIPE["selector"])):
        v = getattr(args, name)
        if v is not None:
            if not 0 <= v <= 8:
                raise SystemExit(f"--{name.replace('_', '-')} needs 0..8 pixels")
            where["crop_pad"] = v
    if args.backbone_warmup_steps is not None:
        RECIPE["selector"]["backbone_warmup_steps"] = args.backbone_warmup_steps
    if args.locations:
        try:
            loc = [int(v) for v in args.locations.split(",")]
        except ValueError:
            raise SystemExit(f"--locations: not a list of integers: {args.locations!r}")
        depth = RECIPE["geometry"]["depth"]
        if not loc or any(not 0 <= a < depth for a in loc) or loc != sorted(set(loc)):
            raise SystemExit(f"--locations needs increasing block indices in 0..{depth - 1}")
        RECIPE["locations"] = loc
        RECIPE["keep_targets"] = RECIPE["keep_targets"][:len(loc)]
        RECIPE["stages"] = RECIPE["stages"][:len(loc)]
        if len(loc) > 3 and not (args.keep_targets and args.stage_epochs):
            raise SystemExit("more than 3 --locations need --keep-targets and --stage-epochs")
    if args.keep_targets:
        kt = [float(v) for v in args.keep_targets.split(",")]
        if len(kt) != len(RECIPE["locations"]) or any(not 0 < a <= 1 for a in kt):
            raise SystemExit(f"--keep-targets needs {len(RECIPE['locations'])} values in (0, 1]")
        RECIPE["keep_targets"] = kt
    if args.stage_epochs:
        se = [int(v) for v in args.stage_epochs.split(",")]
        if len(se) != len(RECIPE["locations"]) or any(v < 1 for v in se):
            raise SystemExit(f"--stage-epochs needs {len(RECIPE['locations'])} positive integers")
        RECIPE["stages"] = [{"epochs": v} for v in se]
    if args.calib_weight is not None:
        RECIPE["selector"]["calib_weight"] = args.calib_weight
    for name in ("distill_kl", "distill_token"):
        w = getattr(args, name)
        if w is not None:
            if not w >= 0:
                raise SystemExit(f"--{name.replace('_', '-')} needs a weight >= 0")
            RECIPE["selector"][name] = w
    if args.init_from:
        RECIPE["init_from"] = os.path.abspath(args.init_from)
    if args.teacher:
        RECIPE["teacher_from"] = os.path.abspath(args.teacher)
    if args.dense_epochs is not None:
        RECIPE["dense"]["epochs"] = args.dense_epochs
    if args.dense_lr is not None:
        RECIPE["dense"]["lr"] = args.dense_lr
    if args.extend_last_stage is not None:
        if args.extend_last_stage < 1 or not 0 < args.extend_lr_scale <= 1:
            raise SystemExit("--extend-last-stage needs a positive epoch count and --extend-lr-scale in (0, 1]")
        RECIPE["extend"] = {"epochs": args.extend_last_stage, "lr_scale": args.extend_lr_scale}
    torch.set_num_threads(args.threads)
    if args.smoke:
        RECIPE["dense"]["epochs"] = 1
        RECIPE["stages"] = [{"epochs": 2}] + [{"epochs": 1}] * (len(RECIPE["locations"]) - 1)
    os.makedirs(args.run_dir, exist_ok=True)
    ckpt_path = os.path.join(args.run_dir, "ckpt.pt")

    train_x, train_y = data.load_split("train", args.data_dir)
    test_x, test_y = data.load_split("t10k", args.data_dir)
    bs = RECIPE["batch_size"]
    steps_per_epoch = len(train_y) // bs   # drop_last
    if args.smoke:
        steps_per_epoch, test_x, test_y = 6, test_x[:300], test_y[:300]
        RECIPE["selector"]["warmup_steps"] = 2
    PH = phases()

    torch.manual_seed(args.seed)
    model = build_model()
    aug_gen = torch.Generator().manual_seed(args.seed + 1)
    state = {"phase": 0, "epoch": 0, "step": 0, "history": [], "train_seconds": 0.0,
             "recipe": RECIPE, "seed": args.seed, "opt": None}
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["seed"] != args.seed:
            raise SystemExit(f"{ckpt_path} was made with seed {ck['seed']}; use a new --run-dir")
        if ck["recipe"] != RECIPE and RECIPE.get("extend") and not ck["recipe"].get("extend"):
            # Extending a finished run: the recipe must be the run's own plus the extension,
            # and every one of its phases must be done.
            old_r = json.loads(json.dumps(ck["recipe"]))
            old_r["extend"] = RECIPE["extend"]
            if old_r != RECIPE or ck["phase"] != len(PH) - 1:
                raise SystemExit(f"{ckpt_path}: --extend-last-stage needs a finished run made "
                                 "with the same recipe (the same options as its command line)")
            note = f"after all stages: extension {json.dumps(RECIPE['extend'])}"
            ck.setdefault("recipe_changes", []).append(note)
            ck["recipe"] = json.loads(json.dumps(RECIPE))
            log("recipe change: " + note)
        if ck["recipe"] != RECIPE:
            # The changes allowed in place, while the dense phase is still running: the number
            # of dense epochs (the cosine schedule is then stretched from the current step on)
            # and the not-yet-started selector phases.
            old_r = json.loads(json.dumps(ck["recipe"]))
            for key in ("stages", "selector"):
                old_r[key] = RECIPE[key]
            old_r["dense"]["epochs"] = RECIPE["dense"]["epochs"]
            if old_r != RECIPE or ck["phase"] != 0 or ck["epoch"] > RECIPE["dense"]["epochs"]:
                raise SystemExit(f"{ckpt_path} was made with another recipe; use a new --run-dir")
            changed = [f"{k}: {json.dumps(ck['recipe'][k])} -> {json.dumps(RECIPE[k])}"
                       for k in ("dense", "stages", "selector") if ck["recipe"][k] != RECIPE[k]]
            note = (f"at dense epoch {ck['epoch'] + 1} step {ck['step']}: " + "; ".join(changed)
                    + " (cosine schedule stretched from there)")
            ck.setdefault("recipe_changes", []).append(note)
            ck["recipe"] = json.loads(json.dumps(RECIPE))
            log("recipe change: " + note)
        model.load_state_dict(ck["model"])
        aug_gen.set_state(ck["aug_gen"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck
        log(f"resumed from {ckpt_path}: phase {PH[min(ck['phase'], len(PH) - 1)][0] if ck['phase'] < len(PH) else 'done'}"
            f" epoch {ck['epoch']} step {ck['step']} ({ck['train_seconds'] / 60:.1f} min trained)")
    else:
        if RECIPE["init_from"]:
            sd = torch.load(RECIPE["init_from"])
            if set(sd) != set(model.state_dict()):
                # Another selector layout (--locations): the selectors keep this model's
                # seeded initialisation.
                sd = backbone_from(sd, model, RECIPE["init_from"])
                log("selector layout differs from the init file: selectors initialised here")
            model.load_state_dict(sd)
            log(f"dense phase starts from {RECIPE['init_from']}")
        log(f"new run in {args.run_dir}, seed {args.seed}, recipe {json.dumps(RECIPE)}")

    teacher = None
    proc_steps = 0
    last_ckpt = time.time()

    def checkpoint(opt):
        state["model"] = model.state_dict()
        state["opt"] = opt.state_dict() if opt is not None else None
        state["aug_gen"] = aug_gen.get_state()
        state["torch_rng"] = torch.get_rng_state()
        save_atomic(state, ckpt_path)

    while state["phase"] < len(PH):
        name, epochs, n_stages = PH[state["phase"]]
        if args.dense_only and n_stages > 0:
            # (a run stopped between the phase end and its export exports here)
            model.eval()
            post_dense(args, model_from=model, test=(test_x, test_y),
                       recipe_changes=state.get("recipe_changes"))
            log("--dense-only: the dense phase is done")
            return
        extending = name.endswith("-extend")
        if n_stages > 0 and teacher is None:
            with torch.random.fork_rng():   # must not consume the training RNG (exact resume)
                teacher = build_model()
            t_path = RECIPE.get("teacher_from") or os.path.join(args.run_dir, "dense_final.pt")
            # (the teacher runs forward_dense only: its selectors are never used)
            try:
                teacher.load_state_dict(backbone_from(torch.load(t_path), teacher, t_path))
            except RuntimeError as e:
                raise SystemExit(f"{t_path}: not a dense model of this geometry: {e}")
            teacher.eval()
            log(f"distillation teacher: {t_path}")
            for p in teacher.parameters():
                p.requires_grad_(False)
        if n_stages > 0:
            own_dense = teacher
            if RECIPE.get("teacher_from") and not os.path.exists(
                    os.path.join(args.run_dir, "export-dense", "config.json")):
                # export-dense/ is the run's own dense model, not the --teacher
                with torch.random.fork_rng():
                    own_dense = build_model()
                own_dense.load_state_dict(torch.load(os.path.join(args.run_dir, "dense_final.pt")))
                own_dense.eval()
            post_dense(args, model_from=own_dense, test=(test_x, test_y),
                       recipe_changes=state.get("recipe_changes"))
        crop_pad = RECIPE["augment"]["crop_pad"]
        if n_stages > 0:
            crop_pad = RECIPE["selector"].get("crop_pad", crop_pad)
        opt = torch.optim.AdamW(param_groups(model, n_stages), lr=0.0, betas=(0.9, 0.999))
        if state.get("opt") is not None:
            opt.load_state_dict(state["opt"])
        while state["epoch"] < epochs:
            ep = state["epoch"]
            perm_gen = torch.Generator().manual_seed(args.seed * 1000003 + state["phase"] * 1009 + ep)
            perm = torch.randperm(len(train_y), generator=perm_gen)
            model.train()
            if state["step"] == 0:
                state["ep_stats"] = {"loss": 0.0, "correct": 0, "seen": 0, "kept": [0.0] * n_stages,
                                     "t0": state["train_seconds"]}
            es = state["ep_stats"]
            while state["step"] < steps_per_epoch:
                k = state["step"]
                t_step = time.time()
                idx = perm[k * bs:(k + 1) * bs]
                xb = data.augment(train_x[idx], aug_gen, crop_pad)
                xb = data.to_input(xb)
                yb = train_y[idx]
                lrs = set_lrs(opt, n_stages, ep, ep * steps_per_epoch + k, steps_per_epoch, epochs,
                              scale=RECIPE["extend"]["lr_scale"] if extending else 1.0)
                if n_stages == 0:
                    logits, _ = model.forward_dense(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=RECIPE["dense"]["label_smoothing"])
                    parts = {}
                else:
                    c = RECIPE["selector"]
                    step_in = ep * steps_per_epoch + k
                    span = max(1, int(c["noise_anneal_frac"] * epochs * steps_per_epoch))
                    noise = 0.0 if extending else max(0.0, 1.0 - step_in / span)
                    lrs["noise"] = noise
                    logits, tok, mask, decs = model.forward_train(
                        xb, n_stages, noise=noise, tau=c["gumbel_tau"],
                        detach_selector_input=c.get("detach_input", False))
                    distill = c["distill_kl"] > 0 or c["distill_token"] > 0
                    if distill:
                        with torch.no_grad():
                            t_logits, t_tok = teacher.forward_dense(xb)
                    ce = F.cross_entropy(logits, yb, label_smoothing=c["label_smoothing"])
                    tg = RECIPE["keep_targets"]
                    ratio = sum((d.mean() - tg[s]) ** 2 for s, d in enumerate(decs)) / len(decs)
                    # Calibration of the threshold rule: over the whole batch, the live tokens
                    # whose p is in the top target_s fraction (of all patches) are labelled
                    # keep, the others drop, and p is pulled towards its label (BCE). The
                    # ranking still comes from the task loss through the decisions; this term
                    # makes "p >= 0.5" keep about target_s on average while the count per
                    # image stays free (the quantile is per batch, not per image).
                    cal = 0.0
                    for s, (lp, lq, live) in enumerate(model.last_soft_keeps):
                        with torch.no_grad():
                            sc = torch.where(live > 0.5, lp, torch.full_like(lp, -1e9))
                            kk = max(1, int(round(tg[s] * sc.numel())))
                            thr = sc.flatten().topk(kk).values[-1]
                            lab = ((sc >= thr) & (live > 0.5)).to(lp.dtype)
                        bce = -(lab * lp + (1 - lab) * lq)
                        cal = cal + (bce * live).sum() / live.sum().clamp_min(1.0)
                    cal = cal / len(decs)
                    ratio = ratio + c["calib_weight"] * cal
                    if distill:
                        kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t_logits, -1),
                                      reduction="batchmean", log_target=True)
                        n0 = model.num_patches
                        sel = mask.detach() > 0.5
                        err = ((tok[:, 1:1 + n0] - t_tok[:, 1:1 + n0]) ** 2).mean(-1)
                        tokl = err[sel].mean() if bool(sel.any()) else err.sum() * 0.0
                    else:  # no teacher forward at all (--distill-kl 0 --distill-token 0)
                        kl = tokl = ce * 0.0
                    loss = ce + c["ratio_weight"] * ratio + c["distill_kl"] * kl + c["distill_token"] * tokl
                    parts = {"ce": ce.item(), "ratio": ratio.item(), "kl": kl.item(), "tok": tokl.item()}
                    for s, d in enumerate(decs):
                        es["kept"][s] += d.mean().item() * len(yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                es["loss"] += loss.item() * len(yb)
                es["correct"] += int((logits.argmax(1) == yb).sum())
                es["seen"] += len(yb)
                state["step"] = k + 1
                state["train_seconds"] += time.time() - t_step
                proc_steps += 1
                if (k + 1) % 50 == 0:
                    msg = (f"{name} ep {ep + 1}/{epochs} step {k + 1}/{steps_per_epoch} "
                           f"loss {es['loss'] / es['seen']:.4f} acc {100 * es['correct'] / es['seen']:.2f} "
                           f"{' '.join(f'{a} {b:.4g}' for a, b in {**lrs, **parts}.items())} "
                           f"step {time.time() - t_step:.3f}s")
                    if n_stages:
                        msg += " kept " + "/".join(f"{v / es['seen']:.3f}" for v in es["kept"])
                    log(msg)
                if time.time() - last_ckpt > args.ckpt_every:
                    checkpoint(opt)
                    last_ckpt = time.time()
                    log(f"checkpoint {name} ep {ep + 1} step {k + 1}")
                if args.stop_after_steps and proc_steps >= args.stop_after_steps:
                    checkpoint(opt)
                    log(f"stop after {proc_steps} steps (testing): checkpoint at {name} ep {ep + 1} step {k + 1}")
                    return
            # ---- epoch end: evaluate (fast batched exact-mask eval) and checkpoint
            t_ev = time.time()
            if n_stages == 0:
                ev = evaluate.evaluate_masked(model, test_x, test_y, "none")
            else:
                ev = evaluate.evaluate_masked(model, test_x, test_y, "adaptive", 0.5, n_stages=n_stages)
            rec = {"phase": name, "epoch": ep + 1, "train_loss": round(es["loss"] / es["seen"], 4),
                   "train_acc": round(100 * es["correct"] / es["seen"], 2),
                   "test_top1": ev["top1"], "test_mean_macs": ev["mean_macs"],
                   "test_mac_reduction_pct": ev["mac_reduction_pct"],
                   "epoch_seconds": round(state["train_seconds"] - es["t0"], 1),
                   "train_seconds_total": round(state["train_seconds"], 1),
                   "eval_seconds": round(time.time() - t_ev, 1)}
            if n_stages:
                rec["train_gumbel_keep"] = [round(v / es["seen"], 4) for v in es["kept"]]
                rec["test_keep_ratio@0.5"] = ev.get("mean_keep_ratio")
            state["history"].append(rec)
            log(f"EPOCH {json.dumps(rec)}")
            state["epoch"] = ep + 1
            state["step"] = 0
            checkpoint(opt)
            last_ckpt = time.time()
            write_metrics(args.run_dir, state["history"])
        # ---- phase end
        if n_stages == 0:
            save_atomic(model.state_dict(), os.path.join(args.run_dir, "dense_final.pt"))
        state["phase"] += 1
        state["epoch"] = 0
        state["step"] = 0
        state["opt"] = None
        checkpoint(None)
        log(f"phase {name} done")
        if n_stages == 0:
            teacher = None  # (re)loaded from dense_final.pt at the next phase

    # ---- all phases done: exact evaluation + export
    finish(args, model, (test_x, test_y), state)


def post_dense(args, model_from, test, recipe_changes=None):
    """Export the dense model once (pruning mode "none", no selector tensors)."""
    out = os.path.join(args.run_dir, "export-dense")
    if os.path.exists(os.path.join(out, "config.json")):
        return
    log("exporting the dense model to " + out)
    ev = evaluate.evaluate_exact(model_from, test[0], test[1], "none")
    log(f"dense exact eval: {ev}")
    dense_hist = [h for h in load_history(args.run_dir) if h["phase"] == "dense"]
    export.export_model(model_from, out, RECIPE, mode="none", results={"dense": ev},
                        history=dense_hist, seed=args.seed, run_dir=args.run_dir,
                        recipe_changes=recipe_changes)


def load_history(run_dir):
    p = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [json.loads(line) for line in f if line.strip()]


def finish(args, model, test, state):
    res_path = os.path.join(args.run_dir, "results.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            results = json.load(f)
        log("results.json exists; re-exporting only")
    else:
        log("final evaluation (exact per-image spec inference, 10k test images)")
        model.eval()
        results = evaluate.full_report(model, test[0], test[1], exact=True, log=log)
        # topk at the training targets too
        results["topk@targets"] = evaluate.evaluate_exact(model, test[0], test[1], "topk",
                                                          keep_ratios=RECIPE["keep_targets"])
        results["topk@targets"]["keep_ratios"] = RECIPE["keep_targets"]
        log(f"topk@targets: {results['topk@targets']}")
        results["train_seconds_total"] = round(state["train_seconds"], 1)
        tmp = res_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, res_path)
    export.export_model(model, args.export_dir, RECIPE, mode="adaptive", results=results,
                        history=state["history"], seed=args.seed, run_dir=args.run_dir,
                       recipe_changes=state.get("recipe_changes"))
    log(f"exported to {args.export_dir}; all phases done")


if __name__ == "__main__":
    main()
