"""Published production deployments (core/data/deployments.toml): their traffic, service and fleet, with sources.

The backtest's targets, and the one place DeepSeek's day-6 figures stand: the default request's lengths, cache hits
and service targets (estimator/traffic.py) are read from the first entry, and its published layouts from there too.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.hardware import CatalogError
from core.paths import DATA_DIR

DEPLOYMENTS_FILE = DATA_DIR / "deployments.toml"


@dataclass(frozen=True)
class Deployment:
    """One published deployment: tokens a day, the per-user speed, the KV length, the nodes (average and peak)."""

    name: str
    model: str
    gpu: str
    gpus_per_node: int
    nodes_average: float
    nodes_peak: float
    input_tokens_per_day: float
    cached_input_tokens_per_day: float
    output_tokens_per_day: float
    tokens_per_s_per_user: float
    average_kv_len: float
    per_node_prefill_tokens_per_s: float
    per_node_decode_tokens_per_s: float
    source: str
    mtp_tokens: int = 0  # tokens drafted per decode step by multi-token prediction, as served
    decode_layout: dict[str, Any] | None = None  # the published layouts: estimator.arch.Layout's fields
    prefill_layout: dict[str, Any] | None = None

    @property
    def gpus_average(self) -> float:
        return self.nodes_average * self.gpus_per_node

    @property
    def input_tokens_per_output_token(self) -> float:
        return self.input_tokens_per_day / self.output_tokens_per_day

    @property
    def cache_hit_rate(self) -> float:
        """Share of input tokens served from the KV cache."""
        return self.cached_input_tokens_per_day / self.input_tokens_per_day

    @property
    def peak_to_average(self) -> float:
        """Peak over average nodes."""
        return self.nodes_peak / self.nodes_average

    @property
    def input_len(self) -> float:
        """Prompt length as a prompt token sees it (token-weighted, E[P²]/E[P]), from the published KV length.

        Prefill attention grows with the length of the prompt a token sits in, so what it needs is the token-weighted
        length, not the mean per request. Taking each request's prompt P as r times its reply O (r the input/output ratio),
        the KV length a decoded token sees, P + O/2 averaged over output tokens, is (r + ½)·E[O²]/E[O], and the
        token-weighted prompt length r·E[O²]/E[O]: r / (r + ½) of the KV length, whatever the spread.
        """
        r = self.input_tokens_per_output_token
        return r / (r + 0.5) * self.average_kv_len

    @property
    def output_len(self) -> float:
        """Reply length as a decoded token sees it (token-weighted, E[O²]/E[O]): the KV length over r + ½."""
        return self.average_kv_len / (self.input_tokens_per_output_token + 0.5)


def load_deployments(path: Path = DEPLOYMENTS_FILE) -> list[Deployment]:
    try:
        data = tomllib.loads(path.read_text())
        return [Deployment(name=k, **dict(d)) for k, d in data.items()]
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise CatalogError(f"{path.name} is malformed: {exc}") from exc


@cache
def reference_deployment() -> Deployment:
    """The first catalogued deployment (DeepSeek-V3/R1, open-source week day 6): the default traffic's source."""
    return load_deployments()[0]
