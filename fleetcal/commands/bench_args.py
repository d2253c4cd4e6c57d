"""``fleetcal bench``'s flags: what each measures and its default (validated into a BenchPlan by commands/bench.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.ops import OPERATORS
from bench.plan import MODES
from bench.precision import DTYPES
from core.args import int_list, rate_list, str_list
from core.paths import RUNS_DIR


def add_cli_args(p: argparse.ArgumentParser) -> None:
    """What runs, the sweep's sizes and precision; then the serving and the engine flags."""
    p.add_argument(
        "--model",
        default="bundled",
        help="'bundled' (SmolLM2-135M-Instruct, offline), a checkpoint directory, a Hugging Face id, or a catalogued model name with "
             "--load-format dummy",
    )
    p.add_argument("--engine", choices=("vllm", "transformers"), default="vllm", help="vLLM, or transformers' generate (offline)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: a GPU where one is visible, else the CPU")
    p.add_argument("--mode", type=str_list, default=["throughput"], help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32], help="sequences submitted together (offline modes)")
    p.add_argument("--input-lens", type=int_list, default=[32], help="prompt tokens")
    p.add_argument("--output-lens", type=int_list, default=[64], help="forced output tokens (EOS ignored)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="compute precision; auto: bf16 where the device runs it natively (GPUs, CPUs with AVX-512 BF16 or AMX), fp32 otherwise",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        help="prompts per configuration (at least the batch size; serve: at least 5 x concurrency); default: offline modes run waves for "
             "--budget-s, serve 5 x concurrency",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=6.0,
        help="seconds measured per offline configuration when --num-prompts is not given (at least one wave)",
    )
    _serve_args(p)
    _engine_args(p)


def _serve_args(p: argparse.ArgumentParser) -> None:
    """Serving: concurrencies, arrivals, the workload, the SLO search, a running server."""
    p.add_argument("--concurrencies", type=int_list, default=[1, 2, 4, 8], help="concurrent clients (serve mode)")
    p.add_argument(
        "--request-rates",
        type=rate_list,
        default=[],
        help="serve: requests/s sent with gamma (Poisson) arrivals, e.g. 1,4,inf; each a configuration beside the concurrencies",
    )
    p.add_argument(
        "--burstiness", type=float, default=1.0, help="gamma shape of the arrivals (1: Poisson; below 1 burstier), as vLLM's bench serve"
    )
    p.add_argument(
        "--slo-tpot-ms",
        type=float,
        help="serve: search the highest concurrency whose TPOT percentile meets this (replaces --concurrencies)",
    )
    p.add_argument("--slo-ttft-ms", type=float, help="serve: ... and whose TTFT percentile meets this")
    p.add_argument("--slo-percentile", type=int, default=90, help="percentile the SLO applies to: 50, 90 or 99")
    p.add_argument("--slo-max-concurrency", type=int, default=256, help="the search's ceiling")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every configuration this many times, in rounds (all once, then all again); tables give the mean and a 95%% interval",
    )
    p.add_argument(
        "--base-url",
        help="serve: measure an OpenAI-compatible server already running there (another vLLM, SGLang, TGI); --model gives the vocabulary "
             "of the prompts",
    )
    _workload_args(p)
    p.add_argument(
        "--serve-budget-s",
        type=float,
        default=120.0,
        help="serve: no request of a configuration is sent after this many seconds (those in flight finish and count)",
    )



def _workload_args(p: argparse.ArgumentParser) -> None:
    """Serving's requests: random lengths, a shared prefix, a dataset, a replayed trace, the prompts' tokenizer."""
    p.add_argument(
        "--range-ratio",
        type=float,
        default=0.0,
        help="serve: input and output lengths uniform in [L(1-r), L(1+r)], vLLM's --random-range-ratio",
    )
    p.add_argument(
        "--prefix-fraction",
        type=float,
        default=0.0,
        help="serve: this share of every prompt is the same for all (the target prefix-cache hit rate; needs --enable-prefix-caching)",
    )
    p.add_argument(
        "--dataset", type=Path, help='serve: prompts from a JSONL file ({"prompt": ..., "output_tokens": n} per line) or a ShareGPT file'
    )
    p.add_argument(
        "--trace",
        help="serve: replay a trace's lengths (random-token prompts, replies forced to its lengths) and arrival times, time-scaled to "
             "each --request-rates value: azure-conv, mooncake-conv or a file (Azure CSV, Mooncake JSONL)",
    )
    p.add_argument(
        "--trace-arrivals",
        choices=("recorded", "gamma"),
        default="recorded",
        help="serve, with --trace: its recorded arrival times scaled to the rate, or gamma arrivals of --burstiness (1: Poisson) at "
             "the rate with the trace's lengths",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="serve: a local tokenizer directory for the prompts (default: --model's); for a --base-url server whose model is not here",
    )


def _engine_args(p: argparse.ArgumentParser) -> None:
    """Model loading, output, resuming, engine and parallel settings, operators, price."""
    p.add_argument("--load-format", choices=("auto", "dummy"), default="auto", help="dummy: random weights built from config.json")
    p.add_argument("--out", type=Path, default=RUNS_DIR, help="directory for the results file")
    p.add_argument("--resume", type=Path, help="a results file of an interrupted run: measure only what it lacks")
    p.add_argument("--max-model-len", type=int, help="engine context length (default: the longest input + output of the sweep)")
    p.add_argument("--kv-cache-gb", type=float, help="vLLM KV-cache size in GiB (default: 2 on the CPU, vLLM's own on a GPU)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="passed to vLLM and recorded with the run")
    p.add_argument("--pipeline-parallel-size", type=int, default=1, help="passed to vLLM and recorded with the run")
    p.add_argument("--data-parallel-size", type=int, default=1, help="passed to vLLM and recorded with the run")
    p.add_argument("--distributed-executor-backend", choices=("mp", "ray"), help="vLLM executor; ray for more than one node")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts, the arrivals and the engine's sampling")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature of measured outputs (vLLM's benchmark convention: 1.0, top_p 1.0); 0 for greedy",
    )
    p.add_argument(
        "--microbench",
        choices=("full", "quick", "off"),
        default="full",
        help="device peak microbenchmarks (full also times a quick subset of operators at the model's shapes)",
    )
    p.add_argument(
        "--enforce-eager",
        choices=("auto", "true", "false"),
        default="auto",
        help="auto: eager on the CPU (shorter engine start) and for transformers, CUDA graphs for vLLM on a GPU; false with "
             "transformers: static cache + torch.compile",
    )
    p.add_argument("--quantization", help="vLLM weight quantization, e.g. fp8")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto", help="vLLM KV-cache precision (auto: the model's)")
    p.add_argument("--enable-prefix-caching", action="store_true", help="off by default: repeated prompts must not hit a cache")
    p.add_argument("--enable-expert-parallel", action="store_true", help="vLLM: experts of a MoE model spread over the GPUs")
    p.add_argument("--max-num-seqs", type=int, help="vLLM scheduler limit (default: the largest batch or concurrency)")
    p.add_argument("--max-num-batched-tokens", type=int, help="vLLM scheduler limit on tokens per step (default: vLLM's own)")
    p.add_argument("--operators", type=str_list, default=list(OPERATORS), help=f"ops mode: which operators, of {', '.join(OPERATORS)}")
    p.add_argument(
        "--ops-range",
        choices=("full", "sweep"),
        default="full",
        help="ops mode: full, every case of the model's shapes; sweep, only the cases this invocation's batch sizes, concurrencies and "
             "lengths reach (one grid point beyond), vLLM's own kernels only where they run on the CPU",
    )
    p.add_argument("--gpu-hour-usd", type=float, help="price of one GPU-hour: records then carry dollars per million output tokens")
