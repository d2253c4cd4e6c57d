"""Measurement records as typed models: one frozen dataclass per mode, each field with its unit in its name, what
design.md's record table promises, and the quantities derived from them computed once.

Part of ``core`` (imports nothing above it). ``bench`` writes records through ``parse_record`` (an unknown or a
missing key is a SchemaError, so a writer that drifts from the model fails its tests); every reader parses them with
it, and every column list of a record table is derived from these fields (``core.schema.table_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from numbers import Integral, Real
from typing import Any, ClassVar


class Mode(StrEnum):
    THROUGHPUT = "throughput"
    PREFILL = "prefill"
    DECODE = "decode"
    SERVE = "serve"
    MICROBENCH = "microbench"
    OPS = "ops"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"  # with ``error``
    SUSPECT = "suspect"  # with ``reason``: kept with its raw figures, never used


class Operator(StrEnum):
    """The operators ``bench --mode ops`` times; a memory-bound one is rated in GB/s, the others in TFLOP/s."""

    GEMM = "gemm"
    GROUPED_GEMM = "grouped_gemm"
    ATTENTION_DECODE = "attention_decode"
    ATTENTION_PREFILL = "attention_prefill"
    RMSNORM = "rmsnorm"
    LAYER_ELEMENTWISE = "layer_elementwise"
    SAMPLING = "sampling"
    COPY = "copy"

    @property
    def memory_bound(self) -> bool:
        """Decode attention reads the KV cache once per token, norms, sampling and copies stream their tensors."""
        return self in (Operator.ATTENTION_DECODE, Operator.RMSNORM, Operator.SAMPLING, Operator.COPY)


MEMORY_BOUND = tuple(o.value for o in Operator if o.memory_bound)


@dataclass(frozen=True)
class Latency:
    """A latency's distribution over the requests of one serve configuration, ms (numpy's linear percentiles)."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


PERCENTILES = ("p50", "p90", "p99")  # what tables keep of a latency, as <key>_p50 ...


@dataclass(frozen=True)
class SloBound:
    """The SLO a search probe was measured against: bounds in ms (None: not bounded) at one percentile."""

    tpot_ms: float | None
    ttft_ms: float | None
    percentile: int


# How a field's value is checked; "num" is any real number (numpy's too, written as JSON numbers), never a bool.
KINDS: dict[str, tuple[type, ...]] = {"int": (Integral,), "num": (Real,), "str": (str,), "bool": (bool,), "dict": (dict,),
                                      "list": (list,), "rate": (Real, str)}  # fmt: skip


def col(kind: str = "num", table: bool = True, role: str = "") -> Any:
    """An optional field of kind ``kind``; ``table``: a column of the run tables; ``role``: 'utilization' (a share of a
    peak, at most 1) or 'duration' (must be positive), what the sanity checks look at."""
    return field(default=None, metadata={"kind": kind, "table": table, "role": role})


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every record holds: the configuration (a measured one or an operator case) and its outcome."""

    mode: Mode = field(metadata={"kind": "mode", "table": True})
    status: Status = field(metadata={"kind": "status", "table": True})
    batch_size: int | None = col("int")  # sequences submitted together (offline)
    concurrency: int | None = col("int")  # concurrent clients (serve)
    input_len: int | None = col("int")
    output_len: int | None = col("int")
    num_prompts: int | None = col("int")
    error: str | None = col("str")
    reason: str | None = col("str")

    REQUIRED: ClassVar[tuple[str, ...]] = ("mode", "status", "input_len", "output_len", "num_prompts")
    REQUIRED_WHEN_OK: ClassVar[tuple[str, ...]] = ()

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def size(self) -> int | None:
        """Sequences in flight: the batch (offline) or the clients (serve)."""
        return self.batch_size or self.concurrency


UTILIZATION_OK = ("output_tokens_per_s", "total_tokens_per_s", "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak")


@dataclass(frozen=True, kw_only=True)
class MeasuredRecord(Record):
    """A configuration measured end to end (offline or serving): rates, utilization against both peaks, price."""

    repeat: int | None = col("int")  # round of --repeats
    engine: str | None = col("str", table=False)  # the record's engine name; tables name the run's (compiled or not)
    num_gpus: int | None = col("int")
    wall_s: float | None = col(table=False)
    output_tokens_per_s: float | None = col()
    total_tokens_per_s: float | None = col()
    model_tflops_per_s: float | None = col()
    model_gb_per_s: float | None = col()
    mfu: float | None = col(role="utilization")  # against the datasheet peak (catalogued devices), else null
    mbu: float | None = col(role="utilization")
    mfu_measured_peak: float | None = col(role="utilization")  # against this run's microbenchmark peaks
    mbu_measured_peak: float | None = col(role="utilization")
    output_tokens_per_s_per_gpu: float | None = col()  # where several GPUs ran
    usd_per_million_output_tokens: float | None = col()  # with --gpu-hour-usd
    gpu_hour_usd: float | None = col()

    REQUIRED_WHEN_OK = UTILIZATION_OK


@dataclass(frozen=True, kw_only=True)
class OfflineRecord(MeasuredRecord):
    """Throughput, prefill or decode: waves of prompts on an engine in this process, energy over the timed part."""

    elapsed_s: float | None = col(role="duration")
    joules_per_output_token: float | None = col()
    energy_note: str | None = col("str")
    energy_j: float | None = col()
    power_w_mean: float | None = col()
    energy_window: str | None = col("str")
    output_tokens_per_s_per_watt: float | None = col()


@dataclass(frozen=True, kw_only=True)
class ThroughputRecord(OfflineRecord):
    output_tokens: int | None = col("int")
    request_throughput_per_s: float | None = col()


@dataclass(frozen=True, kw_only=True)
class PrefillRecord(OfflineRecord):
    prefill_tokens_per_s: float | None = col()
    time_to_first_token_ms: float | None = col(role="duration")
    joules_per_prefill_token: float | None = col()

    REQUIRED_WHEN_OK = (*UTILIZATION_OK, "prefill_tokens_per_s", "time_to_first_token_ms")


@dataclass(frozen=True, kw_only=True)
class DecodeRecord(OfflineRecord):
    repeats: int | None = col("int")  # decode pairs timed; the median one counts
    prefill_s: float | None = col(role="duration")
    decode_s: float | None = col(role="duration")
    decode_step_ms: float | None = col(role="duration")
    decode_tokens_per_s: float | None = col()

    REQUIRED_WHEN_OK = (*UTILIZATION_OK, "decode_step_ms", "decode_tokens_per_s")


@dataclass(frozen=True, kw_only=True)
class ServeRecord(MeasuredRecord):
    """Requests against an OpenAI-compatible server, timed as the client sees them (bench/metrics.py)."""

    request_rate: float | str | None = col("rate")  # requests/s of open-loop arrivals; "inf": all at once
    burstiness: float | None = col()
    workload: str | None = col("str")
    sent: int | None = col("int")
    completed: int | None = col("int")
    failed: int | None = col("int")
    errors: list[str] | None = col("list", table=False)
    duration_s: float | None = col(role="duration")
    request_throughput_per_s: float | None = col()
    ttft_ms: Latency | None = col("latency", table=False)
    tpot_ms: Latency | None = col("latency", table=False)
    itl_ms: Latency | None = col("latency", table=False)
    e2el_ms: Latency | None = col("latency", table=False)
    mean_prompt_tokens: float | None = col()
    mean_output_tokens: float | None = col()
    output_tokens_per_s_per_user: float | None = col()  # tokens / E2E latency, for reference only
    interactivity_tokens_per_s: float | None = col()  # 1000 / mean TPOT: the per-user rate tables use
    window_s: float | None = col()
    steady_output_tokens_per_s: float | None = col()
    warmup_requests: int | None = col("int")
    unsent_over_budget: int | None = col("int")
    not_sent_over_context: int | None = col("int", table=False)  # a trace's requests longer than the engine's context
    prefix_cache_hit_rate: float | None = col()
    goodput_requests_per_s: float | None = col()
    slo: SloBound | None = col("slo", table=False)  # SLO search probes: the bound, their step, whether it was met
    search_step: int | None = col("int")
    slo_met: bool | None = col("bool")

    REQUIRED_WHEN_OK = (*UTILIZATION_OK, "ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")

    @property
    def request_rate_per_s(self) -> float | None:
        """The arrival rate as a number (``inf`` where every request was sent at once)."""
        return float(self.request_rate) if self.request_rate is not None else None


@dataclass(frozen=True, kw_only=True)
class OpsRecord(Record):
    """One operator at one shape and precision, timed alone (bench/ops_timing.py)."""

    operator: Operator = field(metadata={"kind": "operator", "table": True})
    shape: dict[str, Any] = field(metadata={"kind": "dict", "table": True})
    dtype: str = field(metadata={"kind": "str", "table": True})
    quick: bool | None = col("bool")
    impl: str | None = col("str")
    threads: int | None = col("int")
    flops: float | None = col()
    bytes: float | None = col()
    time_ms: float | None = col()
    repeats: int | None = col("int")
    tflops: float | None = col()
    gb_per_s: float | None = col()
    mfu: float | None = col(role="utilization")
    mbu: float | None = col(role="utilization")
    mfu_measured_peak: float | None = col()  # a small shape can beat the one-size microbenchmark (caches): not bounded
    mbu_measured_peak: float | None = col()

    REQUIRED = (*Record.REQUIRED, "operator", "shape", "dtype")
    REQUIRED_WHEN_OK = ("impl", "flops", "bytes", "time_ms", "tflops", "gb_per_s", "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak")

    @property
    def m(self) -> int | None:
        """Rows of the case: a GEMM's tokens M, a grouped GEMM's tokens per group, or the batch."""
        return self.shape.get("m", self.shape.get("tokens_per_group", self.shape.get("batch")))


@dataclass(frozen=True, kw_only=True)
class MicrobenchRecord(Record):
    """The device's achievable peaks: dense matmul TFLOP/s per precision and copy bandwidth (bench/microbench.py)."""

    peak_dtype: str | None = col("str")  # the run's precision, whose peak is ``matmul_tflops``
    matmul_sizes: dict[str, int] | None = col("dict", table=False)
    copy_bytes: int | None = col("int")
    matmul_tflops: float | None = col()  # absent in runs before peak_dtype was recorded: their bf16 figure counts
    matmul_bf16_tflops: float | None = col()
    matmul_fp16_tflops: float | None = col()
    matmul_fp32_tflops: float | None = col()
    memory_bandwidth_gb_per_s: float | None = col()

    @property
    def peak_tflops(self) -> float | None:
        """The matmul peak in the run's precision (older runs: bf16)."""
        return self.matmul_tflops if self.matmul_tflops is not None else self.matmul_bf16_tflops

    @property
    def peaks_by_dtype(self) -> dict[str, float]:
        """Matmul TFLOP/s per precision, in the order they were measured (that of ``matmul_sizes``)."""
        measured = self.matmul_sizes or {d: None for d in ("bf16", "fp16", "fp32")}
        return {d: v for d in measured if (v := getattr(self, f"matmul_{d}_tflops", None)) is not None}


MODELS: dict[Mode, type[Record]] = {Mode.THROUGHPUT: ThroughputRecord, Mode.PREFILL: PrefillRecord, Mode.DECODE: DecodeRecord,
                                    Mode.SERVE: ServeRecord, Mode.OPS: OpsRecord, Mode.MICROBENCH: MicrobenchRecord}  # fmt: skip
MEASURED_MODELS = (ThroughputRecord, PrefillRecord, DecodeRecord, ServeRecord)  # the run table's rows
