"""How fast ``fleetcal simulate`` runs (a benchmark, not a test): the two speed targets of the simulator.

1. 100,000 requests through one instance (Llama-3.1-8B on one H100, Azure conversation lengths, Poisson arrivals at
   rates from light to near capacity): at most 10 s on one core.
2. 100 instances for a simulated hour (least-loaded router, the same requests at a total rate of RATE requests/s):
   at most a minute.

Prints the CPU seconds (time.process_time) of generating the requests, simulating and summarising; the step table is
built before timing. Usage: PYTHONPATH=. python scripts/bench_sim.py [fleet rate, default 300]
"""

from __future__ import annotations

import sys
import time

from core.hardware import get_gpu
from core.paths import RESULTS_DIR
from core.traces import load_trace
from estimator.arch import Layout, load_arch
from estimator.kernels import kernels_for
from estimator.operators import load_ops
from estimator.sim.engine import gpu_engine_rules
from estimator.sim.fleet import Fleet, Pool, simulate
from estimator.sim.gpu import GpuSteps
from estimator.sim.results import summarize
from estimator.sim.traffic import Lengths, generated


def timed(rules, steps, n: int, rate: float, instances: int) -> str:
    lengths = Lengths("trace", trace=load_trace("azure-conv"))
    t0 = time.process_time()
    reqs = generated(n, rate, 1.0, lengths, seed=0)
    t1 = time.process_time()
    run = simulate(Fleet(Pool(rules, steps, instances, "least-loaded" if instances > 1 else "round-robin")), reqs)
    t2 = time.process_time()
    s = summarize(run)
    t3 = time.process_time()
    state = "saturated" if s["saturated"] else f"TTFT p99 {s['ttft_ms']['p99']:,.0f} ms, TPOT p50 {s['tpot_ms']['p50']:.1f} ms"
    return (f"{n:>9,} requests at {rate:>5g}/s on {instances:>3} instance(s), {s['duration_s']:>7,.0f} s simulated: generate "
            f"{t1 - t0:5.2f} s, simulate {t2 - t1:6.2f} s, summarise {t3 - t2:4.2f} s ({state}, busy {s['gpu_busy_share']:.0%})")


def main() -> None:
    a, g = load_arch("llama-3.1-8b"), get_gpu("H100")
    k, _ = kernels_for(g, load_ops(RESULTS_DIR), a.fp8_block_scaled)
    lay = Layout(1)
    rules = gpu_engine_rules(a, g, lay, k)
    t = time.process_time()
    steps = GpuSteps(a, g, lay, k, budget=rules.max_num_batched_tokens, max_seqs=rules.max_num_seqs,
                     max_context=min(131072, rules.kv_tokens))
    print(f"step table built in {time.process_time() - t:.2f} s")
    for rate in (2.0, 5.0, 10.0, 15.0):
        print(timed(rules, steps, 100_000, rate, 1))
    fleet_rate = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    print(timed(rules, steps, int(fleet_rate * 3600), fleet_rate, 100))


if __name__ == "__main__":
    main()
