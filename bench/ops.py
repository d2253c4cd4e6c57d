"""Operator microbenchmarks at a model's own shapes: the pieces a serving step is made of.

Each case is one operator at one shape and precision: dense GEMM (tokens M × the model's K×N of
each linear layer), grouped MoE GEMM (experts × tokens per expert), attention for decode (batch ×
context; GQA, or MLA absorbed: 128 query heads over one 576-wide latent) and prefill (causal; MLA
not absorbed), RMS norm, sampling over the vocabulary, and memory copy. FLOPs and bytes are the
operator's own (weights, activations in and out, KV read), so TFLOP/s and GB/s compare with the
datasheet. Weights, and decode's KV cache, are cycled over enough copies to exceed the GPU's L2
cache, so a small GEMM or a short decode reads them from memory as it does in serving.

Precisions: fp32 and bf16 on a CPU; bf16 and fp8 (``torch._scaled_mm``, e4m3, row-wise scales,
bf16 out) on a GPU that has fp8 (compute capability 8.9 and above). fp8 GEMMs pad M to a
multiple of 16 where the kernel needs it; FLOPs count the M asked for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import ops_reach, ops_vllm
from bench.ops_vllm_cases import case_specs
from core.dtypes import BYTES_PER_DTYPE
from core.records import Operator
from core.shapes import Shapes

L2_BYTES = 256 * 2**20  # cycle weights over at least this many bytes (H100/H200 L2: 50 MB)


@dataclass(frozen=True)
class Case:
    operator: str
    shape: dict[str, Any]
    dtype: str
    flops: float
    nbytes: float
    build: Callable[[], Callable[[], object]]  # allocates, returns the call to time
    impl: str = "torch"
    threads: int | None = None  # CPU threads to time it with (the engine's); None: the process's


def _copies(nbytes: float) -> int:
    return max(1, min(64, math.ceil(L2_BYTES / max(nbytes, 1))))


def _rand(shape: tuple[int, ...], dtype: Any, device: str) -> Any:
    import torch

    return (torch.randn(shape, device=device, dtype=torch.float32) * 0.1).to(dtype)


def _weights(shape: tuple[int, ...], dtype: Any, device: str, copies: int) -> list[Any]:
    """``copies`` distinct tensors holding the same random values: one draw, then clones (a copy is memory
    traffic; a fresh draw of 256 MiB took about a second on two cores, most of a CPU ops run)."""
    w = _rand(shape, dtype, device)
    return [w, *(w.clone() for _ in range(copies - 1))]


def _gemm(m: int, k: int, n: int, dtype: str, device: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import torch

        w_bytes = k * n * BYTES_PER_DTYPE[dtype]
        copies = _copies(w_bytes)
        if dtype == "fp8":
            mp = max(16, -(-m // 16) * 16)
            a = _rand((mp, k), torch.bfloat16, device).to(torch.float8_e4m3fn)
            ws = [w.t() for w in _weights((n, k), torch.float8_e4m3fn, device, copies)]  # column-major K×N
            sa = torch.ones((mp, 1), device=device, dtype=torch.float32)
            sb = torch.ones((1, n), device=device, dtype=torch.float32)
            try:  # row-wise scales (closest to the block-scaled kernels of FP8 serving); per-tensor where unsupported
                torch._scaled_mm(a, ws[0], scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
            except RuntimeError:
                sa = sb = torch.ones((), device=device, dtype=torch.float32)
            nxt = itertools.cycle(ws).__next__
            return lambda: torch._scaled_mm(a, nxt(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        tdt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        a = _rand((m, k), tdt, device)
        nxt = itertools.cycle(_weights((k, n), tdt, device, copies)).__next__
        return lambda: torch.matmul(a, nxt())

    return build


def _grouped(groups: int, t: int, k: int, n: int, dtype: str, device: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import torch

        copies = _copies(groups * k * n * BYTES_PER_DTYPE[dtype])
        if dtype == "fp8":
            calls = [_gemm(t, k, n, "fp8", device)() for _ in range(groups)]  # one kernel per expert
            return lambda: [c() for c in calls]
        tdt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        a = _rand((groups, t, k), tdt, device)
        nxt = itertools.cycle(_weights((groups, k, n), tdt, device, copies)).__next__
        return lambda: torch.bmm(a, nxt())

    return build


def _attention(
    b: int, heads: int, kv_heads: int, q_len: int, ctx: int, dqk: int, dv: int, causal: bool, dtype: str, device: str, copies: int = 1
) -> Callable[[], Callable[[], object]]:
    """SDPA; keys and values cycled over ``copies`` (decode reads its cache from memory; a prefill's are just written)."""

    def build() -> Callable[[], object]:
        import torch
        import torch.nn.functional as F

        tdt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        q = _rand((b, heads, q_len, dqk), tdt, device)
        ks = _weights((b, kv_heads, ctx, dqk), tdt, device, copies)
        share = dv < dqk and kv_heads == 1
        vs = [k[..., :dv] for k in ks] if share else _weights((b, kv_heads, ctx, dv), tdt, device, copies)
        gqa = kv_heads != heads
        nxt = itertools.cycle(zip(ks, vs)).__next__

        def attend() -> object:
            k, v = nxt()
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

        return attend

    return build


def _mla_decode(
    b: int, heads: int, ctx: int, dqk: int, dv: int, dtype: str, device: str, copies: int = 1
) -> Callable[[], Callable[[], object]]:
    """MLA decode, absorbed: every query head attends to one shared latent (K = latent + rope, V = latent), as two bmm;
    the latent cache cycled over ``copies``."""

    def build() -> Callable[[], object]:
        import torch

        tdt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        q = _rand((b, heads, dqk), tdt, device)
        nxt = itertools.cycle(_weights((b, ctx, dqk), tdt, device, copies)).__next__
        scale = dqk**-0.5

        def attend() -> object:
            kv = nxt()
            p = torch.softmax(torch.bmm(q, kv.transpose(1, 2)) * scale, dim=-1)
            return torch.bmm(p, kv[..., :dv])

        return attend

    return build


def _rmsnorm(t: int, h: int, dtype: str, device: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import torch
        import torch.nn.functional as F

        tdt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp8": torch.bfloat16}[dtype]
        x = _rand((t, h), tdt, device)
        w = torch.ones(h, device=device, dtype=tdt)
        return lambda: F.rms_norm(x, (h,), w, 1e-6)

    return build


def _sampling(b: int, vocab: int, device: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import torch

        logits = _rand((b, vocab), torch.float32, device)
        gen = torch.Generator(device=device).manual_seed(0)

        def sample() -> object:  # softmax, then the exponential-race draw vLLM's sampler uses
            probs = torch.softmax(logits, dim=-1)
            q = torch.empty_like(probs).exponential_(generator=gen)
            return (probs / q).argmax(dim=-1)

        return sample

    return build


def _copy(nbytes: int, device: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import torch

        src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)

    return build


OPERATORS = tuple(o.value for o in Operator)  # what records may name (core/records.py)


def plan_cases(s: Shapes, device: str, dtypes: tuple[str, ...], quick: bool, operators: tuple[str, ...] = OPERATORS,
               limits: dict[str, int] | None = None) -> list[Case]:  # fmt: skip
    """The cases of a sweep over ``operators``, in order; ``quick`` is the small subset run with every bench invocation.

    A full sweep on a CPU where vLLM runs adds vLLM's own kernels in the run's precision (``bench.ops_vllm``).
    ``limits`` (``bench.ops_reach.reach``): only the cases a plan's configurations reach (``bench.ops_reach.within``).
    """
    cases = _all_cases(s, device, dtypes, quick)
    if not quick and ops_vllm.available(device):
        cases += [Case(**spec) for spec in case_specs(s, dtypes[0], _copies)]
    cases = [c for c in cases if c.operator in operators]
    return cases if limits is None else ops_reach.within(cases, limits)


def _all_cases(s: Shapes, device: str, dtypes: tuple[str, ...], quick: bool) -> list[Case]:
    adt = "bf16" if "bf16" in dtypes else dtypes[0]  # attention runs in bf16 (fp32 on CPUs without bf16)
    return _matmul_cases(s, device, dtypes, quick) + _attention_cases(s, device, adt, quick) + _other_cases(s, device, adt, quick)


def _matmul_cases(s: Shapes, device: str, dtypes: tuple[str, ...], quick: bool) -> list[Case]:
    """Every linear layer's GEMM against rows M, and the routed experts' grouped GEMM against tokens per expert."""
    cases: list[Case] = []
    ms = (1, 64) if quick else ((1, 4, 16, 64, 256, 1024, 4096, 16384) if device == "cuda" else (1, 4, 16, 64, 256, 1024))
    groups, tpe = 8, (1, 16) if quick else (1, 4, 16, 64, 256, 1024)
    for dtype in dtypes:
        b = BYTES_PER_DTYPE[dtype]
        out_b = 2 if dtype == "fp8" else b
        cases += [Case("gemm", {"layer": lname, "m": m, "k": k, "n": n}, dtype, 2.0 * m * k * n,
                       k * n * b + m * k * b + m * n * out_b, _gemm(m, k, n, dtype, device))
                  for lname, (k, n) in s.linears.items() for m in ms]  # fmt: skip
        cases += [Case("grouped_gemm", {"groups": groups, "tokens_per_group": t, "k": k, "n": n}, dtype, 2.0 * groups * t * k * n,
                       groups * (k * n * b + t * k * b + t * n * out_b), _grouped(groups, t, k, n, dtype, device),
                       "loop of _scaled_mm" if dtype == "fp8" else "torch.bmm")
                  for k, n in (s.expert_k_n[:1] if quick else s.expert_k_n) for t in tpe]  # fmt: skip
    return cases


def _attention_cases(s: Shapes, device: str, adt: str, quick: bool) -> list[Case]:
    """Decode attention against batch and context (MLA absorbed, or GQA), prefill attention against prompt length."""
    ab = BYTES_PER_DTYPE[adt]
    if s.mla:
        dqk_dec, dv_dec = s.mla["kv_lora_rank"] + s.mla["rope"], s.mla["kv_lora_rank"]
        kv_heads_dec, dqk_pre, dv_pre, layout = 1, s.mla["nope"] + s.mla["rope"], s.mla["v"], "MLA absorbed"
    else:
        dqk_dec = dv_dec = dqk_pre = dv_pre = s.head_dim
        kv_heads_dec, layout = s.kv_heads, "GQA"
    batches, ctxs = ((1, 16), (512,)) if quick else ((1, 8, 32, 128), (512, 2048, 8192))
    if device == "cpu" and not quick:
        batches, ctxs = (1, 8, 32), (256, 1024)
    cases: list[Case] = []
    for bsz in batches:
        for ctx in ctxs:
            kv_bytes = bsz * ctx * kv_heads_dec * (dqk_dec + (0 if s.mla else dv_dec)) * ab
            build = (_mla_decode(bsz, s.heads, ctx, dqk_dec, dv_dec, adt, device, _copies(kv_bytes)) if s.mla else
                     _attention(bsz, s.heads, kv_heads_dec, 1, ctx, dqk_dec, dv_dec, False, adt, device, _copies(kv_bytes)))  # fmt: skip
            shape = {"layout": layout, "batch": bsz, "context": ctx, "heads": s.heads, "kv_heads": kv_heads_dec, "qk_dim": dqk_dec,
                     "v_dim": dv_dec}  # fmt: skip
            cases.append(Case("attention_decode", shape, adt, 2.0 * bsz * s.heads * ctx * (dqk_dec + dv_dec),
                              kv_bytes + 2 * bsz * s.heads * (dqk_dec + dv_dec) * ab, build,
                              "torch.bmm, scores materialized, KV cycled" if s.mla else "sdpa, KV cycled"))  # fmt: skip
    pre_kv = s.heads if s.mla else s.kv_heads
    for ctx in (256,) if quick else ((512, 2048, 8192) if device == "cuda" else (256, 1024)):
        flops = 2.0 * s.heads * ctx * ctx * (dqk_pre + dv_pre) / 2  # causal: half the square
        nbytes = ctx * (s.heads * dqk_pre + pre_kv * (dqk_pre + dv_pre) + s.heads * dv_pre) * ab
        cases.append(Case("attention_prefill", {"layout": "MLA not absorbed" if s.mla else "GQA", "context": ctx, "heads": s.heads,
                                                "kv_heads": pre_kv, "qk_dim": dqk_pre, "v_dim": dv_pre}, adt, flops, nbytes,
                          _attention(1, s.heads, pre_kv, ctx, ctx, dqk_pre, dv_pre, True, adt, device), "sdpa"))  # fmt: skip
    return cases


def _other_cases(s: Shapes, device: str, adt: str, quick: bool) -> list[Case]:
    """RMS norm against tokens, sampling against batch, one memory copy."""
    ab = BYTES_PER_DTYPE[adt]
    cases = [Case("rmsnorm", {"tokens": t, "hidden": s.hidden}, adt, 4.0 * t * s.hidden, 2 * t * s.hidden * ab + s.hidden * ab,
                  _rmsnorm(t, s.hidden, adt, device)) for t in ((1, 4096) if not quick else (64,))]  # fmt: skip
    cases += [Case("sampling", {"batch": bsz, "vocab": s.vocab}, "fp32", 5.0 * bsz * s.vocab, 3 * bsz * s.vocab * 4,
                   _sampling(bsz, s.vocab, device)) for bsz in ((1, 64, 256) if not quick else (16,))]  # fmt: skip
    nbytes = (1 << 30) if device == "cuda" and not quick else (1 << 28)
    return cases + [Case("copy", {"bytes": nbytes}, "fp32", 0.0, 2.0 * nbytes, _copy(nbytes, device))]
