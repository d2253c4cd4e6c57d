"""Serving engines' rules as data (core/data/engines/, one file per engine and version): the token budget and sequences
per step by GPU memory, the share of memory the KV cache may take (of total or of free memory), the KV page size, the
CUDA-graph capture limit, the scheduler's CPU time and the kernels a step launches beyond its operators.

The one reader of those files; every figure in them names the engine source it is read from.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
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
    async_scheduling: bool
    scheduler_us_per_sequence: float
    extra_kernels_per_layer: int
    extra_kernels_per_step: int

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
        return tokens_per_step <= self.cuda_graph_max_tokens_by_gpu.get(gpu_name, self.cuda_graph_max_tokens)


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
            async_scheduling=bool(sched["async_scheduling"]), scheduler_us_per_sequence=float(sched["us_per_sequence"]),
            extra_kernels_per_layer=int(kernels["extra_per_layer"]), extra_kernels_per_step=int(kernels["extra_per_step"]),
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
