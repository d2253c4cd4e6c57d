"""Decode attention (one query token per sequence against its cached keys and values) timed on this GPU by query heads
per KV head, batch and context, replayed from a captured CUDA graph: how much of the memory bandwidth a GQA decode
kernel reaches when it reads the KV cache, at the head counts of Llama-3.1-70B at TP 1, 4 and 8 and Llama-3.1-8B.

The kernel is PyTorch's ``scaled_dot_product_attention`` with grouped-query heads (``enable_gqa``), FlashAttention
backend (contiguous KV, BF16): not the paged kernels of a serving engine (FlashAttention-3 / FlashInfer with block
tables), but the same algorithm over the same bytes. Bytes counted: the K and V read (2 x batch x context x kv_heads x
head_dim x 2) plus the queries and outputs.

    python3 scripts/gpu_decode_attention.py OUT_DIR              # on a CUDA machine: OUT_DIR/decode_attention.csv + .json
    python3 scripts/gpu_decode_attention.py OUT_DIR --cpu-test   # tiny sizes on the CPU, plain timing: checks the plumbing
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.hardware import match_gpu  # noqa: E402
from scripts.gpu_gemm_kernels import CYCLE_BYTES, provenance, time_graph, time_plain  # noqa: E402

HEADS = (("llama-3.1-70b tp1", 64, 8), ("llama-3.1-70b tp4", 16, 2), ("llama-3.1-70b tp8", 8, 1), ("llama-3.1-8b tp1", 32, 8))
BATCHES = (1, 8, 32, 128)
CONTEXTS = (1024, 4096, 16384)
HEAD_DIM = 128


def build(b: int, heads: int, kv_heads: int, ctx: int, d: int, device: str) -> list:
    """Calls of one decode attention each, over KV caches cycled so that together they outgrow the L2 cache."""
    kv_bytes = 2 * b * ctx * kv_heads * d * 2
    copies = max(1, min(16, math.ceil(CYCLE_BYTES / kv_bytes)))
    q = torch.randn(b, heads, 1, d, device=device, dtype=torch.bfloat16)
    caches = [(torch.randn(b, kv_heads, ctx, d, device=device, dtype=torch.bfloat16),
               torch.randn(b, kv_heads, ctx, d, device=device, dtype=torch.bfloat16)) for _ in range(copies)]  # fmt: skip
    return [lambda k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True) for k, v in caches]


def main(out: Path, cpu_test: bool) -> int:
    device = "cpu" if cpu_test else "cuda"
    gpu = None if cpu_test else match_gpu(torch.cuda.get_device_name(0))
    heads, batches, contexts = ((HEADS[2],), (1, 2), (64,)) if cpu_test else (HEADS, BATCHES, CONTEXTS)
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    for label, h, kvh in heads:
        for b in batches:
            for ctx in contexts:
                rec = {"heads": label, "q_heads": h, "kv_heads": kvh, "batch": b, "context": ctx, "head_dim": HEAD_DIM}
                try:
                    calls = build(b, h, kvh, ctx, HEAD_DIM, device)
                    if cpu_test:
                        s = time_plain(calls)
                    else:
                        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.FLASH_ATTENTION]):
                            s = time_graph(calls)
                    del calls
                except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                    recs.append({**rec, "error": str(exc).splitlines()[0][:200]})
                    continue
                nbytes = 2 * b * ctx * kvh * HEAD_DIM * 2 + 2 * b * h * HEAD_DIM * 2
                flops = 4 * b * h * ctx * HEAD_DIM
                rec.update(us=round(s * 1e6, 3), gb_per_s=round(nbytes / s / 1e9, 1), tflops=round(flops / s / 1e12, 3))
                if gpu is not None:
                    rec["mbu"] = round(nbytes / s / 1e9 / gpu.bandwidth_gb_per_s, 4)
                recs.append(rec)
                print(json.dumps(rec), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
    cols = ["heads", "q_heads", "kv_heads", "batch", "context", "head_dim", "us", "gb_per_s", "tflops", "mbu", "error"]
    with open(out / "decode_attention.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(recs)
    run = provenance(device) | {"kernel": "torch.nn.functional.scaled_dot_product_attention(enable_gqa=True), FLASH_ATTENTION backend"}
    (out / "decode_attention.json").write_text(json.dumps({"run": run, "records": recs}, indent=1))
    print(f"decode_attention: {len(recs)} cases ({sum('error' in r for r in recs)} failed) -> {out}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: gpu_decode_attention.py OUT_DIR [--cpu-test]")
    sys.exit(main(Path(args[0]), "--cpu-test" in args))
