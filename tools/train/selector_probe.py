"""Is a trained selector alive?  For each selector of a run's final model, on the first
--images test images (noise-free decisions, the inference rule):

  - the fused keep probability p over the live patch tokens: mean, quantiles, and the
    fraction at p >= 0.5 (what the runtime keeps at threshold 0.5);
  - per head, the largest pre-activation of fc2 and fc3 (a selector whose hidden layers
    have shrunk to ~0 outputs the constant softmax of fc4's bias for every token).

    ~/hvenv/bin/python tools/train/selector_probe.py /work/runs/fmnist14 /work/runs/fmnist15

Used for the collapse analysis in docs/results.md ("What we found").
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
import run  # noqa: E402


def probe(run_dir, n_images):
    ck = torch.load(os.path.join(run_dir, "ckpt.pt"), weights_only=False)
    run.RECIPE.clear()
    run.RECIPE.update(ck["recipe"])
    model = run.build_model()
    model.load_state_dict(ck["model"])
    model.eval()
    acts = {}
    for s, sel in enumerate(model.selectors):
        for h, hd in enumerate(sel.heads):
            for name in ("fc2", "fc3"):
                getattr(hd, name).register_forward_hook(
                    lambda mod, i, o, key=(s, h, name): acts.__setitem__(key, float(o.max())))
    x, _ = data.load_split("t10k")
    with torch.no_grad():
        model.forward_train(data.to_input(x[:n_images]), len(ck["recipe"]["locations"]), noise=0.0)
    for s, (lp, _, live) in enumerate(model.last_soft_keeps):
        p = lp.exp()[live > 0.5]
        q = torch.quantile(p, torch.tensor([0.5, 0.9, 0.99])).tolist()
        print(f"{run_dir} selector {s + 1} (before block {ck['recipe']['locations'][s]}): "
              f"{p.numel()} live tokens, p mean {p.mean():.3f}, median/90%/99% "
              f"{q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}, p>=0.5 on {100 * (p >= 0.5).float().mean():.1f}%")
        heads = [f"{acts[(s, h, 'fc2')]:.2f}/{acts[(s, h, 'fc3')]:.2f}"
                 for h in range(len(model.selectors[s].heads))]
        print(f"    largest fc2/fc3 pre-activation per head: {' '.join(heads)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--images", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for rd in a.run_dirs:
        probe(rd, a.images)


if __name__ == "__main__":
    main()
