#!/usr/bin/env bash
# Where does cpu-int8 disagree with cpu-f32? Builds heatvit with
# tools/experiments/fidelity-twins.patch in a scratch worktree and measures, on the first
# N Fashion-MNIST test images with pruning off:
#   base        cpu-int8 against cpu-f32 as shipped
#   probs-q0.7  the float path rounds attention probabilities to Q0.7 as the int8 path does
#   poly-gelu   the float path uses the int8 path's i-GELU polynomial instead of erf
#   both        both of the above
#   clip-P      the int8 model re-quantised with point P clipped to 0.7 of its calibrated max
# A float path that copies one approximation agrees better with int8 by what that
# approximation costs. The patch is an experiment only: it is never part of the runtime.
#
# usage: tools/experiments/fidelity_twins.sh [FLOAT_MODEL_DIR] [N]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
model=$(cd "${1:-$repo/models/fmnist-heatvit}" && pwd)
n=${2:-3000}
data=/usr/share/datasets/fashion-mnist
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/wt" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$repo" worktree add --detach "$work/wt" HEAD >/dev/null
git -C "$work/wt" apply "$repo/tools/experiments/fidelity-twins.patch"
cargo build --release --quiet --manifest-path "$work/wt/Cargo.toml" --target-dir "$repo/target/experiments"
bin=$repo/target/experiments/release/heatvit-run

quantize() { # out_dir, then env assignments
  local out=$1
  shift
  env "$@" "$bin" quantize --model "$model" --calib "$data" --calib-split train --calib-count 512 --out "$out" --force --json >/dev/null
}
measure() { # label, qmodel, then env assignments
  local label=$1 q=$2
  shift 2
  env "$@" "$bin" eval --model "$q" --backend cpu-int8 --compare-backend cpu-f32 --pruning none \
    --dataset "$data" --limit "$n" --json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); c=d['compare']; print('%-14s int8 %.2f%%  float %.2f%%  agreement %.2f%%  top-5 overlap %.3f  max|logit err| %.3f' % ('$label', 100*d['top1'], 100*c['other_top1'], 100*c['top1_agreement'], c['mean_top5_overlap'], c['max_abs_logit_diff']))"
}

quantize "$work/q" HV_NONE=1
measure base "$work/q" HV_NONE=1
measure probs-q0.7 "$work/q" HV_PBITS=7
measure poly-gelu "$work/q" HV_POLY_GELU=1
measure both "$work/q" HV_PBITS=7 HV_POLY_GELU=1
for p in norm1 .q .v ctx norm2 hidden; do
  quantize "$work/q-$p" HV_CLIP_POINT=$p HV_CLIP=0.7
  measure "clip-$p" "$work/q-$p" HV_NONE=1
done
