"""The rules of one serving engine that the simulator schedules by, stated as a frozen value the caller fills.

For a GPU they are read from the engine-rules data (core/data/engines/, through planning.engine_budget and
memory.kv_room_sequences: vLLM 0.32's token budget, sequences, page size and memory fraction); for a measured CPU run
from the run's own engine settings (``run_engine_settings``), else vLLM's CPU server defaults stated below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.engines import engine_rules
from core.errors import UsageError
from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels
from estimator.memory import kv_room_sequences
from estimator.planning import engine_budget

# vLLM 0.32's server defaults on a CPU (vllm/engine/arg_utils.py, EngineArgs._set_default_max_num_seqs_and_batched_tokens_args:
# max_num_batched_tokens 2,048 and max_num_seqs 128 per CPU world size for the OpenAI server) and its CPU page size
# (vllm/platforms/cpu.py: block_size 128 unless given); the KV cache is the size fleetcal bench gives it (--kv-cache-gb).
CPU_SERVER_BUDGET, CPU_SERVER_MAX_SEQS, CPU_BLOCK_SIZE = 2048, 128, 128


@dataclass(frozen=True)
class EngineRules:
    """What bounds one engine's steps: tokens per step, sequences running, KV pages of ``block_size`` tokens, and MTP."""

    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    kv_blocks: int  # the engine's KV blocks (vLLM's num_gpu_blocks), one of them its null block
    prefix_caching: bool = True
    mtp_tokens: int = 0  # tokens drafted per step by multi-token prediction
    mtp_acceptance: float = 0.0  # acceptance of each drafted token
    source: str = ""

    def __post_init__(self) -> None:
        for name, least in (("max_num_batched_tokens", 1), ("max_num_seqs", 1), ("block_size", 1), ("kv_blocks", 2)):
            if getattr(self, name) < least:
                raise UsageError(f"engine rules: {name} must be at least {least}, got {getattr(self, name)}")
        if not 0 <= self.mtp_tokens <= 4 or not 0 <= self.mtp_acceptance <= 1:
            raise UsageError("engine rules: --mtp-tokens must be 0 to 4 and --mtp-acceptance in [0, 1]")
        if self.max_num_batched_tokens < self.max_num_seqs * (1 + self.mtp_tokens):
            raise UsageError(f"engine rules: a token budget of {self.max_num_batched_tokens} cannot carry {self.max_num_seqs} decoding "
                             f"sequences of {1 + self.mtp_tokens} tokens each; raise --max-num-batched-tokens")  # fmt: skip

    @property
    def tokens_per_step(self) -> float:
        """Output tokens a decoding sequence gains per step: 1 + drafted x acceptance (the serving model's MTP count)."""
        return 1.0 + self.mtp_tokens * self.mtp_acceptance

    @property
    def usable_blocks(self) -> int:
        """Pages requests can hold: vLLM's block pool keeps its first block as the null block (vllm/v1/core/block_pool.py)."""
        return self.kv_blocks - 1

    @property
    def kv_tokens(self) -> int:
        return self.usable_blocks * self.block_size


def gpu_engine_rules(a: Arch, gpu: Device, layout: Layout, k: Kernels, *, kv_dtype: str = "bf16", mtp_tokens: int = 0,
                     prefix_caching: bool = True, budget: int | None = None, max_seqs: int | None = None,
                     block_size: int | None = None) -> EngineRules:  # fmt: skip
    """vLLM's server defaults on ``gpu`` (token budget and sequences: planning.engine_budget; page size: the engine rules)
    and the KV pages one engine of ``layout`` holds beside its weights (memory.kv_room_sequences at one page, times the TP
    group)."""
    default_budget, default_seqs = engine_budget(gpu)
    vllm = engine_rules("vllm")
    budget, seqs, page = budget or default_budget, max_seqs or default_seqs, block_size or vllm.page_tokens
    pages = kv_room_sequences(a, gpu, layout, k, page, kv_dtype, mtp=a.mtp_served(mtp_tokens), step_tokens=budget) * layout.tp
    if pages < 1:
        raise UsageError(f"{a.shapes.name} leaves no KV room on {layout.num_gpus} {gpu.name}: use more GPUs per instance (--tp)")
    return EngineRules(budget, seqs, page, pages, prefix_caching, mtp_tokens, k.mtp_acceptance if mtp_tokens else 0.0,
                       f"vLLM {vllm.version} server defaults on {gpu.name} (core/data/engines/: token budget, sequences, "
                       f"{vllm.memory_fraction:g} of memory), {page}-token pages, KV room of the serving model")  # fmt: skip


def run_engine_settings(engine: dict) -> dict:
    """What a measured vLLM run's record says its engine ran with (``run.engine``; None where it left vLLM its default):
    the keyword arguments of ``cpu_engine_rules``."""
    if engine.get("name") != "vllm":
        raise UsageError(f"the run's engine is {engine.get('name')!r}, not vLLM: its scheduler is not the one simulated")
    return {"budget": engine.get("max_num_batched_tokens"), "max_seqs": engine.get("max_num_seqs"),
            "kv_cache_gb": engine.get("kv_cache_gb"), "prefix_caching": bool(engine.get("prefix_caching"))}  # fmt: skip


def cpu_engine_rules(kv_bytes_per_token: float, kv_cache_gb: float, *, budget: int | None = None, max_seqs: int | None = None,
                     block_size: int | None = None, prefix_caching: bool = False) -> EngineRules:  # fmt: skip
    """A vLLM server on a CPU: its KV cache of ``kv_cache_gb`` GiB in pages of ``block_size`` tokens, its defaults elsewhere."""
    page = block_size or CPU_BLOCK_SIZE
    pages = math.floor(kv_cache_gb * 2**30 / (kv_bytes_per_token * page))
    return EngineRules(budget or CPU_SERVER_BUDGET, max_seqs or CPU_SERVER_MAX_SEQS, page, max(pages, 2), prefix_caching,
                       source=f"vLLM 0.32 server on a CPU: {kv_cache_gb:g} GiB of KV in {page}-token pages")  # fmt: skip
