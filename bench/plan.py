"""The plan of one ``fleetcal bench`` invocation: what to measure, validated when it is built.

A plan is built from the command line (``fleetcal.commands.bench``) or from the plan saved in a results file
(``--resume``); either way the same checks run, in ``BenchPlan.__post_init__``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from bench import ops_reach
from bench.engines import EngineConfig
from bench.load import OPEN_LOOP_REQUESTS
from bench.ops import OPERATORS
from bench.workload import Workload, load_dataset
from core.errors import UsageError
from core.paths import ROOT
from core.traces import BUNDLED, load_trace

MODES = ("throughput", "prefill", "decode", "serve", "ops")
MAX_SEQUENCES = 1 << 16  # sequences submitted at once (a batch or a concurrency)
MAX_PROMPTS = 100_000  # prompts of one configuration, built in memory before it runs
SLO_PERCENTILES = (50, 90, 99)
MAX_REPEATS = 30
OPEN_LOOP_MAX_NUM_SEQS = 64  # with request rates the number in flight is not bounded by the client; the engine's limit
NOT_SAVED = ("model_path", "out_dir", "resume", "args")  # resolved again, or chosen anew, on --resume


def rate_label(rate: float) -> float | str:
    """A request rate as records keep it: requests/s, or "inf" for every request at once (JSON has no infinity)."""
    return rate if math.isfinite(rate) else "inf"


def _local(path: str) -> str:
    """A path as plans keep it (relative to the project when inside it) made usable from any working directory."""
    return path if Path(path).is_absolute() else str(ROOT / path)


@dataclass(frozen=True)
class BenchPlan:
    """A validated benchmark invocation."""

    model: str  # what the user asked for (kept in the record)
    model_path: str  # checkpoint directory or Hugging Face id handed to the engine
    engine: str
    device: str  # resolved: "cpu" or "cuda"
    modes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    num_prompts: int | None  # None: each offline configuration runs for budget_s seconds
    concurrencies: tuple[int, ...]
    load_format: str
    out_dir: Path
    max_model_len: int
    kv_cache_gb: float | None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    seed: int = 0
    temperature: float = 1.0
    microbench: str = "full"  # full, quick or off
    dtype: str = "bfloat16"
    dtype_reason: str = ""
    budget_s: float = 6.0
    enforce_eager: bool = True
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool = False
    enable_expert_parallel: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_hour_usd: float | None = None
    operators: tuple[str, ...] = OPERATORS
    ops_range: str = "full"  # full: every case of the model's shapes; sweep: those this plan's configurations reach (bench/ops_reach.py)
    request_rates: tuple[float, ...] = ()  # serve: Poisson (gamma) arrivals at these requests/s, beside the concurrencies
    burstiness: float = 1.0  # gamma shape of the inter-arrival times (1: Poisson; lower: burstier), vLLM's convention
    slo_tpot_ms: float | None = None  # serve: with a TTFT or TPOT bound, search the highest concurrency meeting it
    slo_ttft_ms: float | None = None
    slo_percentile: int = 90
    slo_max_concurrency: int = 256
    base_url: str | None = None  # serve: measure this running OpenAI-compatible server instead of starting one
    range_ratio: float = 0.0  # serve: lengths uniform in [L(1 - r), L(1 + r)] (vLLM's --random-range-ratio)
    prefix_fraction: float = 0.0  # serve: this share of every prompt shared by all (target prefix-cache hit rate)
    dataset: str | None = None  # serve: prompts from this JSONL or ShareGPT file
    trace: str | None = None  # serve: replay this trace's lengths and arrivals (a bundled name or a file)
    trace_arrivals: str = "recorded"  # serve, with a trace: its arrival times scaled to each rate, or gamma arrivals
    tokenizer: str | None = None  # serve: local tokenizer directory for prompts and counts (default: the model's)
    serve_budget_s: float = 120.0  # serve: no request of a configuration is sent after this many seconds
    repeats: int = 1
    resume: Path | None = None
    args: dict[str, Any] = field(default_factory=dict)  # the command line as given (recorded for provenance)

    def __post_init__(self) -> None:
        """Every check that needs nothing but the plan: one UsageError naming the flag to fix."""
        self._check_what_runs()
        self._check_sizes()
        self._check_serving()
        _ = self.workload  # built now, for its own checks: ratios in range, a dataset that parses
        shortest = min((c["input_len"] + c["output_len"] for c in self.configurations()), default=0)
        if self.max_model_len < shortest:  # configurations longer than it alone fail, recorded
            raise UsageError(
                f"--max-model-len {self.max_model_len} is below the shortest input + output ({shortest} tokens): no configuration can run"
            )

    def _check_what_runs(self) -> None:
        """Modes, engine, prompts, budget, parallelism, temperature."""
        bad_modes = [m for m in self.modes if m not in MODES]
        if bad_modes:
            raise UsageError(f"--mode {','.join(bad_modes)}: unknown; use any of {', '.join(MODES)}")
        if "serve" in self.modes and self.engine != "vllm":
            raise UsageError("--mode serve needs --engine vllm (the server is vLLM's)")
        if self.num_prompts is not None and self.num_prompts <= 0:
            raise UsageError("--num-prompts must be a positive integer")
        if self.num_prompts is not None and self.num_prompts > MAX_PROMPTS:
            raise UsageError(f"--num-prompts {self.num_prompts:,}: at most {MAX_PROMPTS:,} (prompts are built in memory)")
        if not 0 < self.budget_s <= 3600:
            raise UsageError("--budget-s must be a number of seconds in (0, 3600]")
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.engine == "transformers" and self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size > 1:
            raise UsageError("parallel sizes above 1 need --engine vllm")
        if not 0 <= self.temperature <= 100:
            raise UsageError("--temperature must be a number in [0, 100]")

    def _check_sizes(self) -> None:
        """Batch sizes, concurrencies, KV cache, scheduler limits, operators, price, engine-only options."""
        for name, values in (("batch-sizes", self.batch_sizes), ("concurrencies", self.concurrencies)):
            if max(values) > MAX_SEQUENCES:
                raise UsageError(f"--{name} {max(values):,}: at most {MAX_SEQUENCES:,} sequences at once (prompts are built in memory)")
        if self.kv_cache_gb is not None and not 0 < self.kv_cache_gb < 1e5:
            raise UsageError("--kv-cache-gb must be a positive number of GiB")
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.ops_range not in ("full", "sweep"):
            raise UsageError(f"--ops-range {self.ops_range}: use full or sweep")
        bad_ops = [o for o in self.operators if o not in OPERATORS]
        if bad_ops:
            raise UsageError(f"--operators {','.join(bad_ops)}: unknown; use any of {', '.join(OPERATORS)}")
        if self.gpu_hour_usd is not None and not 0 < self.gpu_hour_usd < 1e4:
            raise UsageError("--gpu-hour-usd must be a positive price in dollars")
        if self.engine != "vllm" and (self.quantization or self.kv_cache_dtype != "auto" or self.enable_expert_parallel):
            raise UsageError("--quantization, --kv-cache-dtype and --enable-expert-parallel need --engine vllm")

    def _check_serving(self) -> None:
        """The serving flags: what needs --mode serve, budgets, the server address, arrivals, the SLO search."""
        serve_only = {
            "--request-rates": bool(self.request_rates),
            "--slo-tpot-ms / --slo-ttft-ms": self.searches_slo,
            "--range-ratio": bool(self.range_ratio),
            "--prefix-fraction": bool(self.prefix_fraction),
            "--dataset": self.dataset is not None,
            "--trace": self.trace is not None,
            "--tokenizer": self.tokenizer is not None,
        }
        if "serve" not in self.modes and any(serve_only.values()):
            given = [k for k, v in serve_only.items() if v]
            raise UsageError(f"{', '.join(given)} {'need' if len(given) > 1 else 'needs'} --mode serve")
        if not 0 < self.serve_budget_s <= 86_400:
            raise UsageError("--serve-budget-s must be a number of seconds in (0, 86400]")
        if self.prefix_fraction and not self.enable_prefix_caching and self.base_url is None:
            raise UsageError("--prefix-fraction needs --enable-prefix-caching (without it no prefix is reused)")
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise UsageError(f"--repeats must be a whole number in [1, {MAX_REPEATS}]")
        if self.base_url is not None and set(self.modes) != {"serve"}:
            raise UsageError("--base-url measures a running server: use it with --mode serve alone")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url {self.base_url}: give an http:// or https:// address, e.g. http://127.0.0.1:8000")
        if not (math.isfinite(self.burstiness) and 0 < self.burstiness <= 100):
            raise UsageError("--burstiness must be a number in (0, 100] (1: Poisson arrivals)")
        for name in ("slo_tpot_ms", "slo_ttft_ms"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 < v <= 3.6e6):
                raise UsageError(f"--{name.replace('_', '-')} must be a positive number of milliseconds")
        if self.trace is not None and (not self.request_rates or not all(math.isfinite(r) for r in self.request_rates)
                                       or self.searches_slo):  # fmt: skip
            raise UsageError("--trace replays arrivals at --request-rates: give finite rates (requests/s), and no SLO search")
        if self.slo_percentile not in SLO_PERCENTILES:
            raise UsageError(f"--slo-percentile must be one of {', '.join(map(str, SLO_PERCENTILES))}")
        if not 1 <= self.slo_max_concurrency <= MAX_SEQUENCES:
            raise UsageError(f"--slo-max-concurrency must be in [1, {MAX_SEQUENCES:,}]")

    def serve_lengths(self) -> list[tuple[int, int]]:
        """The (input, output) lengths serve configurations are labelled with: the flags', a dataset's mean lengths, or
        the mean lengths of the trace's requests a configuration replays (bench.load.measure_serve's count)."""
        if self.workload.trace is not None:
            return [self.workload.trace_mean_lengths(max(self.num_prompts or 0, OPEN_LOOP_REQUESTS))]
        ds = self.workload.dataset
        if ds is not None:
            return [(round(ds.mean_prompt_len), round(ds.mean_output_len))]
        return [(i, o) for i in self.input_lens for o in self.output_lens]

    def ops_limits(self) -> dict[str, int] | None:
        """How far the operator cases go: None for the full sweep, else what the configurations reach (``ops_reach.reach``)."""
        if self.ops_range == "full":
            return None
        return ops_reach.reach(max([*self.batch_sizes, *self.concurrencies]), max(self.input_lens), max(self.output_lens))

    def tokenizer_path(self) -> str:
        """Where the tokenizer of serve prompts is: ``--tokenizer``, else the model's directory."""
        return _local(self.tokenizer) if self.tokenizer else self.model_path

    @cached_property
    def workload(self) -> Workload:
        """How serve requests are made; a dataset or a trace file is read (once per file) and checked here."""
        dataset = None
        if self.dataset is not None:
            dataset = load_dataset(_local(self.dataset), self.tokenizer_path(), self.max_model_len, self.output_lens[0])
        trace = load_trace(self.trace if self.trace in BUNDLED else _local(self.trace)) if self.trace is not None else None
        return Workload(self.range_ratio, self.prefix_fraction, dataset, trace, self.trace_arrivals, self.max_model_len)

    @property
    def searches_slo(self) -> bool:
        return self.slo_tpot_ms is not None or self.slo_ttft_ms is not None

    def engine_config(self) -> EngineConfig:
        """The engine every configuration of this plan runs on (one engine per plan)."""
        return EngineConfig(
            model=self.model_path, device=self.device, engine=self.engine, load_format=self.load_format, dtype=self.dtype,
            max_model_len=self.max_model_len, kv_cache_gb=self.kv_cache_gb,
            max_num_seqs=self.max_num_seqs or self.default_max_num_seqs(),
            enforce_eager=self.enforce_eager, quantization=self.quantization, kv_cache_dtype=self.kv_cache_dtype,
            enable_prefix_caching=self.enable_prefix_caching, enable_expert_parallel=self.enable_expert_parallel,
            max_num_batched_tokens=self.max_num_batched_tokens,
            tensor_parallel_size=self.tensor_parallel_size, pipeline_parallel_size=self.pipeline_parallel_size,
            data_parallel_size=self.data_parallel_size, distributed_executor_backend=self.distributed_executor_backend,
            seed=self.seed, temperature=self.temperature,
        )  # fmt: skip

    def default_max_num_seqs(self) -> int:
        """Sequences the engine may batch: the largest batch or concurrency, the search's ceiling, room for arrivals."""
        return max([*self.batch_sizes, *self.concurrencies, 1, *([self.slo_max_concurrency] if self.searches_slo else []),
                    *([OPEN_LOOP_MAX_NUM_SEQS] if self.request_rates else [])])  # fmt: skip

    def configurations(self) -> list[dict[str, Any]]:
        """Every planned configuration, in order; offline modes first, serving last (the SLO search probes are chosen as it runs).

        With an SLO, the search replaces the fixed concurrencies."""
        out = []
        for mode in self.modes:
            if mode == "serve":
                for in_len, out_len in self.serve_lengths():
                    fixed = () if self.searches_slo or self.trace is not None else self.concurrencies
                    out += [dict(mode=mode, batch_size=None, concurrency=c, input_len=in_len, output_len=out_len) for c in fixed]
                    out += [
                        dict(mode=mode, batch_size=None, concurrency=None, request_rate=r, input_len=in_len, output_len=out_len)
                        for r in map(rate_label, self.request_rates)
                    ]
            elif mode != "ops":  # operator cases are planned from the model's shapes, not from lengths
                for in_len in self.input_lens:
                    for out_len in (1,) if mode == "prefill" else self.output_lens:
                        out += [
                            dict(mode=mode, batch_size=b, concurrency=None, input_len=in_len, output_len=out_len) for b in self.batch_sizes
                        ]
        if self.repeats > 1:  # in rounds: every configuration once, then again, so a drift of the machine's speed falls on all alike
            out = [{**c, "repeat": k} for k in range(1, self.repeats + 1) for c in out]
        return out

    def saved(self) -> dict[str, Any]:
        """The plan as the results file keeps it (JSON types), from which ``--resume`` rebuilds it."""
        saved = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k not in NOT_SAVED}
        saved["request_rates"] = [rate_label(r) for r in self.request_rates]  # JSON has no infinity
        return saved

    @classmethod
    def from_saved(cls, saved: dict[str, Any], model_path: str, out_dir: Path, resume: Path, args: dict[str, Any]) -> BenchPlan:
        """The plan saved by ``saved()``, validated again; a key it does not know or lacks is a UsageError."""
        known = {f.name for f in fields(cls)} - set(NOT_SAVED)
        unknown = sorted(set(saved) - known)
        if unknown:
            raise UsageError(f"--resume {resume}: the saved plan has settings this version does not know: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        values["request_rates"] = tuple(float(r) for r in values.get("request_rates", ()))
        try:
            return cls(**values, model_path=model_path, out_dir=out_dir, resume=resume, args=args)
        except TypeError as exc:
            raise UsageError(f"--resume {resume}: the saved plan is incomplete ({exc})") from exc
        except UsageError as exc:
            raise UsageError(f"--resume {resume}: the saved plan is invalid: {exc}") from exc
