"""The dense GEMMs of a decode or prefill step, timed on this GPU the way a serving engine runs them: replayed from a
captured CUDA graph (no host launch in the timing), weights cycled over copies larger than the L2 cache, at the linear
maps of catalogued models (config.json shapes, split by tensor parallelism as vLLM splits them: the fused QKV and
gate/up projections by columns, o_proj and down_proj by rows) and at the rows M a decode batch or a prefill chunk gives.

Three kernels per shape: FP8 with per-tensor scales (``torch._scaled_mm`` with scalar scales: cuBLASLt, the kernel
family TensorRT-LLM's FP8 linear layers call), FP8 with row-wise scales (``torch._scaled_mm`` with per-row and
per-column scales, the kernel ``fleetcal bench --mode ops`` times), and BF16 (``torch.matmul``: cuBLAS). The question it
answers: is the low bandwidth the committed H200 FP8 GEMM curve shows at small M (0.30-0.38 of the datasheet at M <= 64)
the GPU's or the kernel's?

    python3 scripts/gpu_gemm_kernels.py OUT_DIR              # on a CUDA machine: OUT_DIR/gemm_kernels.csv + .json
    python3 scripts/gpu_gemm_kernels.py OUT_DIR --cpu-test   # BF16 only, tiny sizes, no graphs: checks the plumbing
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.hardware import match_gpu  # noqa: E402
from core.models import get_model  # noqa: E402

MODELS = (("llama-3.1-70b", 1), ("llama-3.1-70b", 4), ("llama-3.1-8b", 1))
ROWS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
CYCLE_BYTES = 256 * 2**20  # weights cycled over at least this many bytes (H200 L2: 60 MB)
CALLS_PER_GRAPH = 20
REPLAYS = 10


def shapes(model: str, tp: int) -> list[tuple[str, int, int]]:
    """(linear, K, N) of one layer's linear maps on one GPU of a TP group."""
    lin = get_model(model).shapes.linears
    out = []
    for name in ("qkv_proj", "o_proj", "gate_up", "down"):
        k, n = lin[name]
        out.append((name, k // tp, n) if name in ("o_proj", "down") else (name, k, n // tp))
    return out


def build(variant: str, m: int, k: int, n: int, device: str):
    """The call to time and the rows it actually runs (FP8 pads M to 16, as serving kernels tile it)."""
    if variant == "bf16":
        mr = m
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        copies = max(1, min(64, math.ceil(CYCLE_BYTES / (k * n * 2))))
        ws = [torch.randn(k, n, device=device, dtype=torch.bfloat16) for _ in range(copies)]
        return [lambda w=w: torch.matmul(a, w) for w in ws], mr
    mr = max(16, -(-m // 16) * 16)
    a = (torch.randn(mr, k, device=device) * 0.1).to(torch.float8_e4m3fn)
    copies = max(1, min(64, math.ceil(CYCLE_BYTES / (k * n))))
    ws = [(torch.randn(n, k, device=device) * 0.1).to(torch.float8_e4m3fn).t() for _ in range(copies)]
    if variant == "fp8_tensor":
        sa = sb = torch.ones((), device=device, dtype=torch.float32)
    else:
        sa, sb = torch.ones((mr, 1), device=device), torch.ones((1, n), device=device)
    return [lambda w=w: torch._scaled_mm(a, w, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16) for w in ws], mr


def time_graph(calls: list) -> float:
    """Seconds per call: CALLS_PER_GRAPH calls (cycling the weights) captured in one CUDA graph, replayed REPLAYS times
    between CUDA events after one warm-up replay."""
    for c in calls[:2]:
        c()  # warm-up outside the graph (cuBLAS picks its algorithm and workspace)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(CALLS_PER_GRAPH):
            calls[i % len(calls)]()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / (REPLAYS * CALLS_PER_GRAPH)


def time_plain(calls: list) -> float:
    """Seconds per call on the CPU (the --cpu-test plumbing check): back-to-back calls after a warm-up."""
    calls[0]()
    t0, n = time.perf_counter(), 3 * len(calls)
    for i in range(n):
        calls[i % len(calls)]()
    return (time.perf_counter() - t0) / n


def provenance(device: str) -> dict:
    info = {"utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "timing": f"CUDA graph of {CALLS_PER_GRAPH} calls, {REPLAYS} replays, CUDA events",
            "cycle_bytes": CYCLE_BYTES}  # fmt: skip
    if device == "cuda":
        info.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda, capability=list(torch.cuda.get_device_capability(0)))
        q = "name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,power.limit"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = smi.stdout.strip()
    return info


def main(out: Path, cpu_test: bool) -> int:
    device = "cpu" if cpu_test else "cuda"
    gpu = None if cpu_test else match_gpu(torch.cuda.get_device_name(0))
    variants = ("bf16",) if cpu_test else ("fp8_tensor", "fp8_row", "bf16")
    rows, models = ((1, 16), MODELS[2:]) if cpu_test else (ROWS, MODELS)
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    for model, tp in models:
        for name, k, n in shapes(model, tp):
            kk, nn = (k // 32, n // 32) if cpu_test else (k, n)
            for variant in variants:
                for m in rows:
                    rec = {"model": model, "tp": tp, "linear": name, "m": m, "k": kk, "n": nn, "variant": variant}
                    try:
                        calls, mr = build(variant, m, kk, nn, device)
                        s = time_plain(calls) if cpu_test else time_graph(calls)
                        del calls
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                        recs.append({**rec, "error": str(exc).splitlines()[0][:200]})
                        continue
                    wb = 2.0 if variant == "bf16" else 1.0
                    nbytes = kk * nn * wb + mr * kk * wb + mr * nn * 2
                    prec = "bf16" if variant == "bf16" else "fp8"
                    tflops, gbs = 2 * mr * kk * nn / s / 1e12, nbytes / s / 1e9
                    rec.update(m_run=mr, us=round(s * 1e6, 3), tflops=round(tflops, 2), gb_per_s=round(gbs, 1))
                    if gpu is not None:
                        rec.update(mfu=round(tflops / gpu.peak_tflops[prec], 4), mbu=round(gbs / gpu.bandwidth_gb_per_s, 4))
                    recs.append(rec)
                    print(json.dumps(rec), flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    cols = ["model", "tp", "linear", "m", "m_run", "k", "n", "variant", "us", "tflops", "gb_per_s", "mfu", "mbu", "error"]
    with open(out / "gemm_kernels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(recs)
    (out / "gemm_kernels.json").write_text(json.dumps({"run": provenance(device), "records": recs}, indent=1))
    print(f"gemm_kernels: {len(recs)} cases ({sum('error' in r for r in recs)} failed) -> {out}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: gpu_gemm_kernels.py OUT_DIR [--cpu-test]")
    sys.exit(main(Path(args[0]), "--cpu-test" in args))
