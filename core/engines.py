"""Serving engines' rules as data (core/data/engines/, one file per engine and version): the token budget and sequences
per step by GPU memory, the share of memory the KV cache may take (of total or of free memory), the KV page size, the
CUDA-graph capture limit, the scheduler's CPU time and the kernels a step launches beyond its operators.

The one reader of those files; every figure in them names the engine source it is read from.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import CatalogError
from core.paths import DATA_DIR

ENGINES_DIR = DATA_DIR / "engines"
GiB = 2**30
DEFAULT_ENGINE = "vllm"  # what the project runs and plans for


@dataclass(frozen=True)
class BudgetTier:
    """One tier of an engine's default token budget: GPUs of at least ``min_memory_gib`` not named like ``excluded_names``."""

    min_memory_gib: float
    max_num_batched_tokens: int
    max_num_seqs: int
    excluded_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class CudaGraphs:
    """The steps an engine replays from captured CUDA graphs: the tokens per step it captured, and whether a smaller step is
    padded up to the next captured size (vLLM: vllm/v1/worker/gpu_model_runner.py ``_get_num_input_tokens`` pads every step
    up to the largest size; TensorRT-LLM pads only with ``CudaGraphConfig.enable_padding``)."""

    sizes: tuple[int, ...]
    padding: bool

    def run(self, tokens: float) -> tuple[float, bool]:
        """(tokens the step runs, whether it replays a graph) for a step of ``tokens`` tokens per engine: padded, the
        smallest captured size at or above it; unpadded, only a captured size itself replays one; past the largest, eager."""
        if not self.sizes or tokens > self.sizes[-1]:
            return tokens, False
        size = next(s for s in self.sizes if s >= tokens)
        if self.padding:
            return float(max(size, tokens)), True
        return tokens, math.isclose(size, tokens)


    def capped(self, max_seqs: float, max_tokens: float) -> CudaGraphs:
        """The sizes an engine of ``max_seqs`` sequences and ``max_tokens`` tokens per step keeps: those up to the smaller
        of the two, and with padding the first beyond it clamped to that bound (TensorRT-LLM
        tensorrt_llm/_torch/pyexecutor/model_engine.py ``_filter_cuda_graph_batch_sizes``: "padding to max_cuda_graph_bs is
        acceptable")."""
        top = int(min(max_seqs, max_tokens))
        kept = tuple(s for s in self.sizes if s <= top)
        beyond = self.padding and any(s > top for s in self.sizes) and (not kept or kept[-1] < top)
        return CudaGraphs(kept + ((top,) if beyond else ()), self.padding)


def capture_sizes(listed: list[int], strides: list[list[int]], max_tokens: int) -> tuple[int, ...]:
    """Captured sizes from data: ``listed`` sizes, and every ``step`` from ``start`` to the next stride's start (the last to
    ``max_tokens`` inclusive), as vLLM's ``[1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)``; none above ``max_tokens``."""
    sizes = set(listed)
    for i, (start, step) in enumerate(strides):
        stop = strides[i + 1][0] if i + 1 < len(strides) else max_tokens + 1
        sizes.update(range(start, min(stop, max_tokens + 1), step))
    return tuple(sorted(s for s in sizes if s <= max_tokens))


@dataclass(frozen=True)
class EngineRules:
    """One engine version's rules, with its source."""

    engine: str
    version: str
    source: str
    memory_fraction: float
    memory_fraction_of: str  # "total": fraction x total memory less what is taken; "free": fraction x what is left
    page_tokens: int
    budgets: tuple[BudgetTier, ...]
    cuda_graph_max_tokens: int
    cuda_graph_max_tokens_by_gpu: dict[str, int]
    cuda_graph_listed: tuple[int, ...]  # captured sizes listed one by one
    cuda_graph_strides: tuple[tuple[int, int], ...]  # (start, step) runs of captured sizes up to the largest
    cuda_graph_padding: bool
    async_scheduling: bool
    scheduler_us_per_sequence: float
    extra_kernels_per_layer: int
    extra_kernels_per_step: int
    kernel_backends: tuple[str, ...] = ()  # the measured database's engines (core/data/kernels) to read: its own, then stand-ins
    bench: dict[str, Any] = field(default_factory=dict)  # the engine's benchmark tool's own limits, where a source ran it

    def budget(self, gpu_name: str, memory_bytes: float) -> BudgetTier:
        """The tier of the engine's defaults a GPU of ``memory_bytes`` named ``gpu_name`` gets."""
        name = gpu_name.lower()
        for tier in self.budgets:
            if memory_bytes >= tier.min_memory_gib * GiB and not any(x in name for x in tier.excluded_names):
                return tier
        return self.budgets[-1]

    def kv_room_bytes(self, memory_bytes: float, taken_bytes: float, fraction: float | None = None) -> float:
        """Bytes the KV cache gets on a GPU of ``memory_bytes`` with ``taken_bytes`` held by weights, activations and
        reserves: fraction x total - taken (vLLM), or fraction x (total - taken) (TensorRT-LLM)."""
        f = self.memory_fraction if fraction is None else fraction
        return f * memory_bytes - taken_bytes if self.memory_fraction_of == "total" else f * (memory_bytes - taken_bytes)

    def captured(self, gpu_name: str, tokens_per_step: float) -> bool:
        """Whether a step of ``tokens_per_step`` tokens (per engine) replays a captured CUDA graph."""
        return self.graphs(gpu_name).run(tokens_per_step)[1]

    def graphs(self, gpu_name: str) -> CudaGraphs:
        """The CUDA graphs the engine captures on a GPU named ``gpu_name`` (its largest size may depend on the GPU)."""
        top = self.cuda_graph_max_tokens_by_gpu.get(gpu_name, self.cuda_graph_max_tokens)
        strides = [list(s) for s in self.cuda_graph_strides]
        return CudaGraphs(capture_sizes(list(self.cuda_graph_listed), strides, top), self.cuda_graph_padding)


def _rules(path: Path) -> EngineRules:
    try:
        d: dict[str, Any] = tomllib.loads(path.read_text())
        mem, graphs, sched, kernels = d["memory"], d["cuda_graphs"], d["scheduler"], d["kernels"]
        rules = EngineRules(
            engine=d["engine"], version=d["version"], source=d["source"], memory_fraction=float(mem["fraction"]),
            memory_fraction_of=mem["of"], page_tokens=int(d["kv_cache"]["page_tokens"]),
            budgets=tuple(BudgetTier(float(b["min_memory_gib"]), int(b["max_num_batched_tokens"]), int(b["max_num_seqs"]),
                                     tuple(b.get("excluded_names", ()))) for b in d["budget"]),
            cuda_graph_max_tokens=int(graphs["max_tokens"]), cuda_graph_max_tokens_by_gpu=dict(graphs.get("max_tokens_by_gpu", {})),
            cuda_graph_listed=tuple(int(x) for x in graphs["sizes"]),
            cuda_graph_strides=tuple((int(a), int(b)) for a, b in graphs.get("strides", ())), cuda_graph_padding=bool(graphs["padding"]),
            async_scheduling=bool(sched["async_scheduling"]), scheduler_us_per_sequence=float(sched["us_per_sequence"]),
            extra_kernels_per_layer=int(kernels["extra_per_layer"]), extra_kernels_per_step=int(kernels["extra_per_step"]),
            kernel_backends=tuple(d.get("kernel_database", {}).get("backends", ())), bench=dict(d.get("bench", {})),
        )  # fmt: skip
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"engine rules {path.name} are malformed: {exc}") from exc
    if rules.memory_fraction_of not in ("total", "free") or not 0 < rules.memory_fraction <= 1 or not rules.budgets:
        raise CatalogError(f"engine rules {path.name}: memory.of must be total or free, memory.fraction in (0, 1], budgets given")
    return rules


@cache
def engine_catalog() -> dict[str, EngineRules]:
    """Every engine's rules by its name (vllm, trtllm)."""
    return {r.engine: r for r in map(_rules, sorted(ENGINES_DIR.glob("*.toml")))}


def engine_rules(name: str = DEFAULT_ENGINE) -> EngineRules:
    """The rules of engine ``name``; an unknown name is a CatalogError listing the known ones."""
    catalog = engine_catalog()
    if name not in catalog:
        raise CatalogError(f"unknown engine {name!r}; engines with rules: {', '.join(sorted(catalog))}")
    return catalog[name]
