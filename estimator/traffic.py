"""The one request description: what is served (model), how much (requests/s, daily mean, and the peak over it), how long
(prompt and reply lengths), within which limits (TTFT, TPOT) and with which cache hits, KV precision and drafted tokens.

Built once at the command edge (``fleetcal estimate``, ``predict``, ``plan``, ``backtest``) from the flags and passed
down; each quantity has one name, with its unit in the name, in the flags, the JSON and the docs:
``input_len``/``output_len`` (tokens), ``requests_per_s`` (the daily mean), ``peak_to_average``, ``ttft_ms``, ``tpot_ms``
(its inverse, ``tokens_per_s_per_user``, is a property), ``cached_fraction``, ``kv_dtype``, ``mtp_tokens``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.deployments import Deployment
from core.errors import UsageError
from estimator.article import SECONDS_PER_DAY

KV_DTYPES = ("bf16", "fp8")  # KV-cache precisions the serving model knows
MAX_TOKENS = 10_000_000  # prompt or reply tokens of one request: past any model's context
MAX_REQUESTS_PER_S = 1e9  # far beyond any fleet (the article's traffic is 11,574 requests/s)
MAX_MS = 3_600_000.0  # an hour: no latency limit is longer


def bounded(flag: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` when it lies in [lo, hi] (lo excluded when ``lo_open``); else a UsageError naming the flag and the bound."""
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "above" if lo_open else "at least"
        raise UsageError(f"{flag} must be {left} {lo:,g} and at most {hi:,g}, got {value:g}")
    return value


def mean_kv_len(input_len: float, output_len: float) -> float:
    """Mean KV length of a decoding sequence over its reply: the prompt plus half the reply (tokens)."""
    return input_len + output_len / 2


@dataclass(frozen=True)
class Request:
    """Requests as they are planned: lengths (token-weighted where they vary), the daily-mean rate and its peak, the
    latency limits (None: none), the share of each prompt served from the prefix cache, the KV precision and the tokens
    drafted per decode step by multi-token prediction."""

    model: str
    input_len: float
    output_len: float
    requests_per_s: float = 0.0  # daily mean; 0: one instance, no rate (predict)
    peak_to_average: float = 1.0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    cached_fraction: float = 0.0
    kv_dtype: str = "bf16"
    mtp_tokens: int = 0

    def __post_init__(self) -> None:
        bounded("--input-len", self.input_len, 1, MAX_TOKENS)
        bounded("--output-len", self.output_len, 1, MAX_TOKENS)
        bounded("--requests-per-s", self.requests_per_s, 0, MAX_REQUESTS_PER_S)
        bounded("--peak-to-average", self.peak_to_average, 1, 1000)
        for flag, v in (("--ttft-ms", self.ttft_ms), ("--tpot-ms", self.tpot_ms)):
            if v is not None:
                bounded(flag, v, 0, MAX_MS, lo_open=True)
        if not 0 <= self.cached_fraction < 1:
            raise UsageError(f"--cached-fraction must be at least 0 and below 1, got {self.cached_fraction:g}")
        if self.kv_dtype not in KV_DTYPES:
            raise UsageError(f"--kv-dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        bounded("--mtp-tokens", self.mtp_tokens, 0, 4)

    @classmethod
    def of_deployment(cls, d: Deployment) -> Request:
        """A published deployment's requests at its daily mean: token-weighted lengths from its KV length and input/output
        ratio, its cache hits, per-user speed, peak over average and the tokens it drafted per step."""
        return cls(d.model, d.input_len, d.output_len, d.output_tokens_per_day / SECONDS_PER_DAY / d.output_len, d.peak_to_average,
                   None, 1000 / d.tokens_per_s_per_user, d.cache_hit_rate, "bf16", d.mtp_tokens)  # fmt: skip

    @property
    def peak_requests_per_s(self) -> float:
        """Requests/s at the peak: the daily mean times ``peak_to_average``."""
        return self.requests_per_s * self.peak_to_average

    @property
    def output_tokens_per_s(self) -> float:
        """Daily-mean output tokens per second."""
        return self.requests_per_s * self.output_len

    @property
    def uncached_len(self) -> float:
        """Prompt tokens of one request not served from the prefix cache."""
        return self.input_len * (1 - self.cached_fraction)

    @property
    def full_len(self) -> float:
        """Tokens a request holds in KV at its end, prompt and reply: what an engine must find room for (vLLM preempts otherwise)."""
        return self.input_len + self.output_len

    @property
    def mean_kv_len(self) -> float:
        """Mean KV length of a decoding sequence (mean_kv_len)."""
        return mean_kv_len(self.input_len, self.output_len)

    @property
    def tokens_per_s_per_user(self) -> float | None:
        """The per-user speed the TPOT limit asks for: 1000 / tpot_ms (None without a limit)."""
        return 1000 / self.tpot_ms if self.tpot_ms else None

    def as_dict(self) -> dict[str, float | str | None]:
        """The request as JSON gives it: every field and the derived rates, each under its one name."""
        return {**self.__dict__, "peak_requests_per_s": self.peak_requests_per_s, "output_tokens_per_s": self.output_tokens_per_s,
                "tokens_per_s_per_user": self.tokens_per_s_per_user, "mean_kv_len": self.mean_kv_len}  # fmt: skip
