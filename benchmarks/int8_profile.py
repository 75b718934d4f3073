"""Why int8 stops gaining on narrow layers: per-operator time of a model in fp32 eager and in each
int8 backend at one batch size (torch.profiler for torch runtimes; ONNX Runtime's own profiler).

    .venv/bin/python benchmarks/int8_profile.py runs/fashion-mnist-prune/stages/structured --data fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import frugalml
from frugalml.compress.quantize import QuantizeStage, quantize
from frugalml.data import load_data


def torch_ops(fn, x, iters: int = 30) -> dict[str, float]:
    for _ in range(10):
        fn(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            fn(x)
    out: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        out[e.key] += e.self_cpu_time_total / iters / 1000  # ms per call, own time
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])


def ort_ops(q, x, iters: int = 30) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(q.onnx_bytes, opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(10 + iters):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node":
            out[e["args"]["op_name"]] += e["dur"] / (10 + iters) / 1000
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("artifact")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    model = frugalml.load(args.artifact).eval()
    x = data.sample_input(args.batch)
    with torch.inference_mode():
        print("fp32 eager:", torch_ops(model, x))
        for backend in ("torch", "onnxruntime"):
            q = quantize(model, QuantizeStage(mode="static", backend=backend, references=[]), data)
            ops = ort_ops(q, x) if backend == "onnxruntime" else torch_ops(q, x)
            print(f"int8 {backend}:", {k: round(v, 4) for k, v in ops.items()})


if __name__ == "__main__":
    main()
