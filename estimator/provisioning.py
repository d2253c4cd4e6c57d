"""Provisioning a planned fleet: what it costs, spare instances for GPU failures, and the GPUs in service hour by hour."""

from __future__ import annotations

import math

from estimator.article import SECONDS_PER_DAY
from estimator.options import Option, gpus_at


def spare_gpus(o: Option, rate: float, failures_per_gpu_year: float, repair_hours: float) -> int:
    """Spare GPUs, whole instances of each pool, for ``o`` at ``rate`` (spares())."""
    return sum(spares(gpus_at(((cap, n),), rate) // n, n, failures_per_gpu_year, repair_hours) * n for cap, n in o.pools)


def spares(instances: int, gpus_per_instance: int, failures_per_gpu_year: float, repair_hours: float, quantile: float = 0.99) -> int:
    """Spare instances so that, with GPU failures a Poisson process and each failed GPU taking its instance down for
    ``repair_hours``, the instances down at once exceed the spares with probability under 1 - ``quantile``."""
    lam = instances * gpus_per_instance * failures_per_gpu_year * repair_hours / 8760
    k, term = 0, math.exp(-lam)
    cdf = term
    while cdf < quantile:
        k += 1
        term *= lam / k
        cdf += term
    return k


def hourly_fleet(pools: tuple[tuple[float, int], ...], rates: list[float], scale_up_hours: int = 0) -> list[int]:
    """GPUs in service each hour of a day of request ``rates`` (requests/s per hour), each hour provisioned for the
    busiest hour until a scale-up ``scale_up_hours`` later could land (the day taken as repeating)."""
    n = len(rates)
    need = [max(rates[(h + j) % n] for j in range(scale_up_hours + 1)) for h in range(n)]
    return [gpus_at(pools, r) for r in need]


def usd_per_day(gpus: float, usd_per_gpu_hour: float) -> float:
    """Dollars a day for ``gpus`` GPUs rented around the clock: GPUs x price per GPU-hour x 24."""
    return gpus * usd_per_gpu_hour * 24


def usd_per_million_output_tokens(usd_a_day: float, output_tokens_per_s: float) -> float:
    """A day's dollars over the millions of output tokens a day at ``output_tokens_per_s`` (daily mean)."""
    return usd_a_day / (output_tokens_per_s * SECONDS_PER_DAY / 1e6)
