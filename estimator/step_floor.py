"""What a serving step costs beyond its operators' own time: launching its kernels and the engine's scheduler, and the
rows a CUDA graph's padding adds to a decode step.

No step is faster than launching its kernels: each dependent kernel waits a gap for its launch (kernels.toml [launch]
graph_gap_us, what a captured CUDA graph's nodes cost), and launched one by one (past the engine's largest captured
batch, or eager) the host's launches (eager_launch_us) bind where they outlast the kernels they launch. The kernels
are one per operator cost and layer (estimator/layer_ops.py), the engine's own beyond them (core/data/engines/:
vLLM's Llama layer runs 10 kernels where the cost list has 7) and the tensor-parallel all-reduces. The engine's
scheduler spends CPU time per running sequence each step; with asynchronous scheduling (vLLM 0.32's default) it
overlaps the GPU's step, so only what outlasts the GPU is added. Units: seconds, per micro-batch and GPU unless named.
"""

from __future__ import annotations

from dataclasses import replace

from core.engines import EngineRules, engine_rules
from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels


def kernels_per_step(cost_kernels: float, a: Arch, layout: Layout, rules: EngineRules) -> float:
    """Kernels one micro-batch's step launches on a GPU: ``cost_kernels`` (one per operator cost and layer), the engine's
    kernels beyond them (``extra_kernels_per_layer`` x layers + ``extra_kernels_per_step``), and two all-reduces a layer
    under tensor parallelism."""
    layers = a.shapes.num_layers
    allreduces = 2 * layers if layout.tp > 1 else 0
    return cost_kernels + rules.extra_kernels_per_layer * layers + rules.extra_kernels_per_step + allreduces


def launch_overhead_s(kernels: float, kernel_seconds: float, captured: bool, k: Kernels) -> float:
    """Seconds launching adds to ``kernels`` kernels that run ``kernel_seconds`` in all: the gap each dependent kernel
    waits for its launch (a graph's, the least any launch costs), and, launched one by one, whatever launching them
    outlasts their run where it is longer (the host enqueues ahead while kernels run)."""
    gaps = kernels * k.graph_gap_s
    return gaps if captured else max(gaps, kernels * k.eager_launch_s - kernel_seconds)


def padded(k: Kernels, gpu: Device, layout: Layout, tokens_per_gpu: float) -> Kernels:
    """``k`` for a decode step of ``tokens_per_gpu`` tokens per GPU replayed from a CUDA graph padded up to the next
    captured size (vLLM pads every step up to its largest; TensorRT-LLM with ``enable_padding``; core/data/engines/): its
    linear maps and elementwise kernels run the padding's rows too (``Kernels.padding``)."""
    engine_tokens = engine_tokens_per_step(tokens_per_gpu, layout)
    run = k.graph_run(gpu.name, engine_tokens)[0]
    return replace(k, padding=run / engine_tokens) if run > engine_tokens else k


def engine_tokens_per_step(tokens_per_gpu: float, layout: Layout) -> float:
    """Tokens one engine carries per step: a TP group is one engine (its GPUs' tokens together), a GPU of data-parallel
    attention its own."""
    return tokens_per_gpu * layout.tp


def scheduler_s(sequences_per_gpu: float, layout: Layout, rules: EngineRules) -> float:
    """The engine scheduler's CPU seconds per step: its time per running sequence (core/data/engines/) times the
    sequences of one engine."""
    return rules.scheduler_us_per_sequence * 1e-6 * sequences_per_gpu * layout.tp


def exposed_scheduler_s(cpu_s: float, gpu_s: float, k: Kernels) -> float:
    """The scheduler's time a step waits for: what outlasts the GPU's step under asynchronous scheduling, all of it without."""
    return max(0.0, cpu_s - gpu_s) if engine_rules(k.engine).async_scheduling else cpu_s
