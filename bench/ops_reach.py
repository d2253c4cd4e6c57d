"""A short operator sweep: only the cases a plan's own configurations reach (``fleetcal bench --ops-range sweep``).

Each operator is swept along the axis the CPU step model reads it on (estimator/cpu_steps.py): GEMM rows M, decode
attention's KV tokens (batch x context), prefill attention's prompt length, sampling's batch, a layer's elementwise
tokens. A case is kept when its axis value is at most the first grid point at or beyond what the configurations reach,
so every step of the sweep is read between measured points, never extrapolated past the last one. Where vLLM's own
CPU kernels are timed, the torch cases of the same operators are left out: the step model reads vLLM's only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def reach(seqs: int, prompt: int, output: int) -> dict[str, int]:
    """How far each axis reaches when at most ``seqs`` sequences run at once with prompts of up to ``prompt`` tokens and
    replies of up to ``output``: a step's rows are its sequences (decode) or its prompts' tokens (prefill, at most
    seqs x prompt, which is at least seqs: chunking only lowers it); decode attention reads up to seqs x (prompt + output)
    KV tokens."""
    tokens = seqs * prompt
    return {"m": tokens, "tokens": tokens, "kv_tokens": seqs * (prompt + output), "context": prompt, "batch": seqs}


def axis(operator: str, shape: dict[str, Any]) -> tuple[str, float] | None:
    """(the reach key, the case's value on it), or None for an operator without one (copy, grouped GEMM)."""
    if operator == "gemm":
        return "m", shape["m"]
    if operator == "attention_decode":
        return "kv_tokens", shape["batch"] * shape["context"]
    if operator == "attention_prefill":
        return "context", shape["context"]
    if operator in ("layer_elementwise", "rmsnorm"):
        return "tokens", shape["tokens"]
    if operator == "sampling":
        return "batch", shape["batch"]
    return None


def within(cases: Sequence[Any], limits: dict[str, int]) -> list[Any]:
    """The ``cases`` (bench.ops.Case) the limits reach: on each operator's axis, up to the first grid point at or beyond
    the limit (the grid is that operator's values among the cases of the same implementation and precision)."""
    vllm_ops = {c.operator for c in cases if c.impl.startswith("vllm")}
    cases = [c for c in cases if c.impl.startswith("vllm") or c.operator not in vllm_ops]
    grids: dict[tuple[str, str, str], list[float]] = {}
    for c in cases:
        a = axis(c.operator, c.shape)
        if a is not None:
            grids.setdefault((c.operator, c.impl, c.dtype), []).append(a[1])
    out = []
    for c in cases:
        a = axis(c.operator, c.shape)
        if a is None:
            out.append(c)
            continue
        grid = sorted(grids[(c.operator, c.impl, c.dtype)])
        edge = next((g for g in grid if g >= limits[a[0]]), grid[-1])
        if a[1] <= edge:
            out.append(c)
    return out
