"""Cross-check fleetcal's serving client against vLLM's own `vllm.benchmarks.serve`, on one server and workload.

Starts one vLLM server on the bundled model, then alternates, round after round, vLLM's benchmark
(through its own add_cli_args and main: random dataset, --max-concurrency, every prompt sent at
once, --ignore-eos) and fleetcal's client (bench.load.measure_serve, the same concurrency, lengths
and sampling), so that the machine's drift falls on both alike. Prints output tokens/s, TPOT p50
and TTFT p50 of each, and fleetcal's figures over vLLM's, per round, their geometric mean; writes them with
their provenance to results/crosscheck_serve.json, which `fleetcal report --write-docs` puts into docs/crosscheck.md.

    .venv/bin/python scripts/crosscheck_serve.py [--rounds 12 --concurrency 8 --num-prompts 48 --input-len 128 --output-len 64]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def vllm_serve(base_url: str, model: str, a: argparse.Namespace, seed: int) -> dict:
    """vLLM's own serving benchmark against ``base_url``, through its argparse interface; its returned result."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url, "--model", model, "--served-model-name", "bench",
        "--dataset-name", "random", "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
        "--random-range-ratio", "0", "--num-prompts", str(a.num_prompts), "--max-concurrency", str(a.concurrency),
        "--request-rate", "inf", "--ignore-eos", "--temperature", "1.0", "--top-p", "1.0", "--seed", str(seed),
        "--num-warmups", str(a.concurrency), "--disable-tqdm",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        r = main(args)
    return {
        "output_tokens_per_s": r["output_throughput"],
        "tpot_ms_p50": r["median_tpot_ms"],
        "ttft_ms_p50": r["median_ttft_ms"],
        "completed": r["completed"],
    }


def fleetcal_serve(base_url: str, vocab: int, a: argparse.Namespace, seed: int) -> dict:
    from bench.load import measure_serve
    from bench.workload import Workload

    m, _ = measure_serve(base_url, Workload(), vocab, a.concurrency, a.input_len, a.output_len, a.num_prompts, seed, temperature=1.0)
    return {
        "output_tokens_per_s": m["output_tokens_per_s"],
        "tpot_ms_p50": m["tpot_ms"]["p50"],
        "ttft_ms_p50": m["ttft_ms"]["p50"],
        "completed": m["completed"],
    }


def summarize(rounds: list[dict]) -> dict:
    """fleetcal's figure over vLLM's in the same round, as a geometric mean over rounds with its 95% interval.

    Each round runs both clients back to back, in alternating order, so a drift of the machine's speed, or an
    advantage of going first, cancels between rounds. The interval is Student's over the logs of the per-round
    ratios: how finely this machine lets the check resolve.
    """
    from fleetcal.report.repeats import paired_ratio

    summary: dict = {"method": "geometric mean of per-round ratios (both clients back to back in each round, order alternating), "
                               "with the 95% interval over rounds"}  # fmt: skip
    for key, name in (("output_tokens_per_s", "output_tokens_per_s"), ("tpot_ms_p50", "tpot_p50"), ("ttft_ms_p50", "ttft_p50")):
        mean, low, high = paired_ratio(rounds, "client", "fleetcal", "vllm", key)
        summary[f"{name}_ratio"] = round(mean, 3)
        summary[f"{name}_ratio_ci95"] = [round(low, 3), round(high, 3)]
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=12, help="6 resolved nothing finer than about ±20%% in TTFT on a 2-core machine")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--num-prompts", type=int, default=48)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "crosscheck_serve.json", help="where the result is written")
    p.add_argument(
        "--summarize", type=Path, metavar="FILE", help="recompute the summary of a written result from its rounds, measuring nothing"
    )
    a = p.parse_args()
    if a.summarize:
        doc = json.loads(a.summarize.read_text())
        doc["summary"] = summarize(doc["rounds"])
        a.summarize.write_text(json.dumps(doc, indent=1) + "\n")
        print(doc["summary"])
        return 0
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from bench.bundled import ensure_bundled_model
    from bench.device import describe_cpu, git_commit, versions
    from bench.engines import EngineConfig
    from bench.precision import choose_dtype
    from bench.serve import Server
    from core.models import get_model

    model = str(ensure_bundled_model())
    dtype = choose_dtype("auto", describe_cpu())[0]
    cfg = EngineConfig(
        model=model, device="cpu", dtype=dtype, max_model_len=a.input_len + a.output_len + 64, max_num_seqs=a.concurrency, kv_cache_gb=2.0
    )
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, Server(cfg, Path(tmp) / "server.log") as server:
        vocab = get_model(model).shapes.vocab
        for k in range(a.rounds):
            order = (
                (("vllm", vllm_serve), ("fleetcal", fleetcal_serve)) if k % 2 == 0 else (("fleetcal", fleetcal_serve), ("vllm", vllm_serve))
            )
            for name, fn in order:
                r = fn(server.base_url, model if name == "vllm" else vocab, a, seed=k)
                rounds.append({"round": k + 1, "client": name, **r})
                print(
                    f"round {k + 1} {name:9} {r['output_tokens_per_s']:8.1f} output tok/s  TPOT p50 {r['tpot_ms_p50']:7.2f} ms  TTFT p50 "
                    f"{r['ttft_ms_p50']:8.1f} ms"
                )

    doc = {
        "started_utc": started,
        "git_commit": git_commit(),
        "versions": versions(),
        "device": describe_cpu(),
        "workload": {
            "model": "SmolLM2-135M-Instruct (bundled)",
            "concurrency": a.concurrency,
            "num_prompts": a.num_prompts,
            "input_len": a.input_len,
            "output_len": a.output_len,
            "sampling": "temperature 1.0, top_p 1.0, EOS ignored",
            "dtype": dtype,
            "rounds": a.rounds,
        },
        "rounds": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rounds],
    }
    summary = doc["summary"] = summarize(doc["rounds"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"fleetcal / vLLM (geometric mean of {a.rounds} paired rounds): output tok/s {summary['output_tokens_per_s_ratio']:.3f}, "
          f"TPOT p50 {summary['tpot_p50_ratio']:.3f}, TTFT p50 {summary['ttft_p50_ratio']:.3f}; written: {a.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
