"""The one traffic and service description: a day's volume, its ratios, and the per-user targets it is served at."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from core.deployments import Deployment, reference_deployment
from core.hardware import CatalogError, check_numbers
from estimator.article import ArticleInputs, tokens_per_s

_REF = reference_deployment()

KV_DTYPES = ("bf16", "fp8")  # KV-cache precisions the serving model knows


@dataclass(frozen=True)
class Traffic:
    """A day's traffic and the service it gets: what estimate, backtest, sizing and the report all size a fleet for.

    Defaults: the article's volume (visits × questions × reply tokens) with the ratios and targets of the reference
    deployment (core/data/deployments.toml, DeepSeek's day 6): input per output token, KV-cache hits, peak over
    average nodes, output tokens/s per user, average KV length per output token.
    """

    daily_visits: float = 1e8
    questions_per_visit: float = 10
    tokens_per_reply: float = 1_000
    input_tokens_per_output_token: float = _REF.input_tokens_per_output_token
    cache_hit_rate: float = _REF.cache_hit_rate
    peak_to_average: float = _REF.peak_to_average
    tokens_per_s_per_user: float = _REF.tokens_per_s_per_user
    decode_context_len: float = _REF.average_kv_len
    memory_headroom: float = 0.9  # fraction of GPU memory usable for weights + KV cache
    ttft_ms: float = 0.0  # time-to-first-token target bounding prefill steps; 0: none (DeepSeek published none)
    kv_dtype: str = "bf16"

    def __post_init__(self) -> None:
        check_numbers(self, tuple(f.name for f in fields(self) if f.name != "kv_dtype"))
        if self.kv_dtype not in KV_DTYPES:
            raise CatalogError(f"kv-dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        for f in ("daily_visits", "questions_per_visit", "tokens_per_reply", "tokens_per_s_per_user", "decode_context_len"):
            if not getattr(self, f) > 0:
                raise CatalogError(f"{f.replace('_', '-')} must be positive, got {getattr(self, f)}")
        if self.input_tokens_per_output_token < 0:
            raise CatalogError("input-tokens-per-output-token must be >= 0")
        if not 0 <= self.cache_hit_rate < 1:
            raise CatalogError(f"cache-hit-rate must be in [0, 1), got {self.cache_hit_rate}")
        if self.peak_to_average < 1:
            raise CatalogError(f"peak-to-average must be >= 1, got {self.peak_to_average}")
        if self.ttft_ms < 0:
            raise CatalogError(f"ttft-ms must be >= 0 (0: no target), got {self.ttft_ms}")
        if not 0 < self.memory_headroom <= 1:
            raise CatalogError(f"memory-headroom must be in (0, 1], got {self.memory_headroom}")

    @classmethod
    def of_deployment(cls, d: Deployment) -> Traffic:
        """A published deployment's traffic as the projections take it: its daily mean, its own ratios and targets."""
        tokens_per_reply = 1000.0  # one question per visit: only the product of visits and tokens matters
        return cls(daily_visits=d.output_tokens_per_day / tokens_per_reply, questions_per_visit=1, tokens_per_reply=tokens_per_reply,
                   input_tokens_per_output_token=d.input_tokens_per_output_token, cache_hit_rate=d.cache_hit_rate, peak_to_average=1.0,
                   tokens_per_s_per_user=d.tokens_per_s_per_user, decode_context_len=d.average_kv_len)  # fmt: skip

    @property
    def output_tokens_per_s(self) -> float:
        """Daily-mean output tokens per second."""
        return tokens_per_s(self)

    def article_inputs(self, **assumptions: Any) -> ArticleInputs:
        """The article's inputs for this traffic, with the article's own ``assumptions`` (parameters, utilization, precision)."""
        return ArticleInputs(
            daily_visits=self.daily_visits,
            questions_per_visit=self.questions_per_visit,
            tokens_per_reply=self.tokens_per_reply,
            **assumptions,
        )

    @property
    def prompt_len(self) -> float:
        """Prompt length as a prompt token sees it (token-weighted, E[P²]/E[P]), from the published KV length.

        Prefill attention grows with the length of the prompt a token sits in, so what it needs is the
        token-weighted length, not the mean per request (``tokens_per_reply`` × the ratio: they differ as soon
        as lengths vary). Taking each request's prompt P as r times its reply O (r the input/output ratio), the
        KV length a decoded token sees, P + O/2 averaged over output tokens, is (r + ½)·E[O²]/E[O], and the
        token-weighted prompt length r·E[O²]/E[O]: r / (r + ½) of the KV length, whatever the spread.
        """
        r = self.input_tokens_per_output_token
        return r / (r + 0.5) * self.decode_context_len
