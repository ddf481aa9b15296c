#!/usr/bin/env python3
"""ONNX Runtime CPU baseline for DeiT-T: fp32 and int8 dynamic-quantized, measured in one run.

Builds timm's deit_tiny_patch16_224 with random weights (fixed seed, no model hub), exports
it to ONNX (opset 17, batch 1, input [1,3,224,224]), writes an int8 copy with
onnxruntime.quantization.quantize_dynamic, checks int8 against fp32 on a few random inputs,
and times both with onnxruntime on the CPU with 1 intra-op and 1 inter-op thread
(sequential execution) unless --threads says otherwise.

Quantization (see tools/README.md): quantize_dynamic with weight_type=QInt8 and
per_channel=True (per output column for MatMul/Gemm weights; --per-tensor to turn it off),
reduce_range=False (--reduce-range to turn it on), default op types. Result: the 48 block
Linear MatMuls and the head Gemm become MatMulInteger, the patch-embed Conv ConvInteger;
the 24 attention MatMuls (q@k^T, attn@v) stay fp32. Activations are quantized to uint8 at
run time (U8S8). No quant_pre_process step.

Usage:
  ~/hvenv/bin/python tools/ort_baseline.py [--cache DIR] [--warmup 5] [--runs 30]
                                           [--threads 1] [--json] [--rebuild]
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings

MODEL = "deit_tiny_patch16_224"
MACS = 1253683200  # DeiT-T dense MACs, spec counting: patch embed + 12 blocks + head
SEED = 0
OPSET = 17


def import_deps():
    missing, mods = [], {}
    for name in ("numpy", "torch", "timm", "onnx", "onnxruntime"):
        try:
            mods[name] = __import__(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        sys.exit("ort_baseline.py: missing Python packages: " + ", ".join(missing) + "\n"
                 "install them into the venv, e.g.\n"
                 "  ~/hvenv/bin/pip install torch timm onnx onnxruntime numpy")
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: F401
    except ImportError as e:
        sys.exit(f"ort_baseline.py: onnxruntime.quantization is unavailable ({e})")
    return mods


def export_fp32(m, path):
    torch, timm = m["torch"], m["timm"]
    torch.manual_seed(SEED)
    model = timm.create_model(MODEL, pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    tmp = path + ".tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
        # TorchScript exporter: the dynamo exporter needs onnxscript and gives no benefit here.
        torch.onnx.export(model, (x,), tmp, opset_version=OPSET, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          do_constant_folding=True)
    m["onnx"].checker.check_model(tmp)
    os.replace(tmp, path)


def quantize(m, src, dst, per_channel, reduce_range):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = dst + ".tmp.onnx"
    quantize_dynamic(src, tmp, weight_type=QuantType.QInt8,
                     per_channel=per_channel, reduce_range=reduce_range)
    os.replace(tmp, dst)


def session(m, path, threads):
    ort = m["onnxruntime"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads == 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def time_session(sess, x, warmup, runs):
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3)}


def compare(np, fp32, int8, n_inputs):
    rng = np.random.default_rng(SEED)
    name32, name8 = fp32.get_inputs()[0].name, int8.get_inputs()[0].name
    max_diff, agree, max_abs = 0.0, 0, 0.0
    for _ in range(n_inputs):
        x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
        a = fp32.run(None, {name32: x})[0]
        b = int8.run(None, {name8: x})[0]
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            sys.exit("ort_baseline.py: non-finite logits; the export or quantization is broken")
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        max_abs = max(max_abs, float(np.abs(a).max()))
        agree += int(a.argmax() == b.argmax())
    return max_diff, agree, max_abs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="/tmp/heatvit-ort/", help="dir for the .onnx files")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--check-inputs", type=int, default=4, help="random inputs for int8-vs-fp32")
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (reduce_range)")
    ap.add_argument("--rebuild", action="store_true", help="re-export even if cached")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")

    m = import_deps()
    np, ort = m["numpy"], m["onnxruntime"]
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    per_channel = not args.per_tensor
    os.makedirs(args.cache, exist_ok=True)
    fp32_path = os.path.join(args.cache, f"{MODEL}-seed{SEED}-op{OPSET}.onnx")
    tag = ("pc" if per_channel else "pt") + ("-rr" if args.reduce_range else "")
    int8_path = os.path.join(args.cache, f"{MODEL}-seed{SEED}-op{OPSET}-int8-dyn-{tag}.onnx")

    if args.rebuild or not os.path.exists(fp32_path):
        log(f"exporting {MODEL} (random weights, seed {SEED}, opset {OPSET}) -> {fp32_path}")
        export_fp32(m, fp32_path)
    if args.rebuild or not os.path.exists(int8_path):
        log(f"quantize_dynamic QInt8 per_channel={per_channel} "
            f"reduce_range={args.reduce_range} -> {int8_path}")
        quantize(m, fp32_path, int8_path, per_channel, args.reduce_range)

    s32 = session(m, fp32_path, args.threads)
    s8 = session(m, int8_path, args.threads)
    max_diff, agree, max_abs = compare(np, s32, s8, args.check_inputs)
    log(f"int8 vs fp32 on {args.check_inputs} random inputs: max |logit diff| {max_diff:.4g} "
        f"(max |fp32 logit| {max_abs:.4g}), top-1 agreement {agree}/{args.check_inputs}")

    x = np.random.default_rng(SEED + 1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    # Same input, warmup and runs for both; fp32 first, then int8.
    t32 = time_session(s32, x, args.warmup, args.runs)
    t8 = time_session(s8, x, args.warmup, args.runs)

    result = {
        "ort_version": ort.__version__,
        "model": MODEL,
        "threads": args.threads,
        "fp32": t32,
        "int8": t8,
        "max_logit_diff": round(max_diff, 6),
        "top1_agree": f"{agree}/{args.check_inputs}",
        "quantization": {"weight_type": "QInt8", "per_channel": per_channel,
                         "reduce_range": args.reduce_range, "activations": "uint8 dynamic"},
        "warmup": args.warmup,
        "runs": args.runs,
        "macs": MACS,
    }
    log(f"onnxruntime {ort.__version__} CPU, {MODEL}, {args.threads} thread(s), "
        f"{args.runs} runs after {args.warmup} warmup: "
        f"fp32 median {t32['median_ms']:.2f} ms (min {t32['min_ms']:.2f}), "
        f"int8 median {t8['median_ms']:.2f} ms (min {t8['min_ms']:.2f}), "
        f"speedup {t32['median_ms'] / t8['median_ms']:.2f}x, "
        f"int8 {MACS / (t8['min_ms'] * 1e6):.1f} GMAC/s at min")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
