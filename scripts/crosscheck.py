"""Cross-check fleetcal's throughput against vLLM's own throughput benchmark, on one workload.

Round after round, on the same model and workload (every prompt submitted at once), runs
vllm.benchmarks.throughput (through its own add_cli_args and main, random dataset) and
fleetcal bench --engine vllm --mode throughput back to back, the order alternating, so that a
drift of the machine's speed, or an advantage of going first, falls on both alike; fleetcal bench
--engine transformers runs once, after the first round, for comparison. Each run is its own
process, so no engine's memory or threads carry over. Prints each run and fleetcal's figure over
vLLM's as the geometric mean of the per-round ratios with its 95% interval; writes them with their
provenance to results/crosscheck.json, which `fleetcal report --write-docs` puts into docs/crosscheck.md.

    .venv/bin/python scripts/crosscheck.py [--rounds 6 --num-prompts 64 --input-len 32 --output-len 128]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def vllm_throughput(model: str, n: int, input_len: int, output_len: int, kv_cache_gb: float | None) -> dict:
    """vLLM's own benchmark, called through its argparse interface; parses its printed result."""
    from vllm.benchmarks.throughput import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = [
        "--backend", "vllm", "--model", model, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--random-range-ratio", "0",
        "--num-prompts", str(n), "--dtype", _dtype(), "--max-model-len", str(input_len + output_len + 16),
        "--max-num-seqs", str(n), "--enforce-eager", "--no-enable-prefix-caching", "--seed", "0",
        "--num-warmups", str(n),
    ]  # fmt: skip
    if kv_cache_gb:
        argv += ["--kv-cache-memory-bytes", str(int(kv_cache_gb * 2**30))]
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(args)
    text = buf.getvalue()
    m = re.search(r"([\d.]+) total tokens/s, ([\d.]+) output tokens/s", text)
    if not m:
        raise RuntimeError(f"could not read vLLM's result from: {text[-500:]}")
    return {"total_tokens_per_s": float(m.group(1)), "output_tokens_per_s": float(m.group(2))}


def _dtype() -> str:
    """The precision this CPU runs natively, used by all three runs alike (fleetcal's --dtype auto)."""
    from bench.precision import choose_dtype
    from core.identity import describe_cpu

    return choose_dtype("auto", describe_cpu())[0]


def fleetcal_throughput(engine: str, n: int, input_len: int, output_len: int, out_dir: Path) -> dict:
    cmd = [
        sys.executable, "-m", "fleetcal.cli", "bench", "--engine", engine, "--mode", "throughput",
        "--batch-sizes", str(n), "--num-prompts", str(n), "--input-lens", str(input_len),
        "--output-lens", str(output_len), "--max-model-len", str(input_len + output_len + 16),
        "--microbench", "off", "--dtype", _dtype(), "--out", str(out_dir / engine),
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    (path,) = sorted((out_dir / engine).glob("*.json"))
    rec = json.loads(path.read_text())["records"][-1]
    if rec["status"] != "ok":
        raise RuntimeError(f"fleetcal {engine} failed: {rec['error']}")
    return {"output_tokens_per_s": rec["output_tokens_per_s"], "total_tokens_per_s": rec["total_tokens_per_s"]}


VLLM, FLEETCAL, HF = "vllm.benchmarks.throughput", "fleetcal bench --engine vllm", "fleetcal bench --engine transformers"


def summarize(rounds: list[dict]) -> list[dict]:
    """One row per run: median rates over rounds and the ratio to vLLM's benchmark (paired per round for fleetcal's vLLM run)."""
    from fleetcal.report.repeats import paired_ratio

    def median(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds if r["run"] == name), 3)

    mean, low, high = paired_ratio(rounds, "run", FLEETCAL, VLLM, "output_tokens_per_s")
    ratios = {VLLM: (1.0, ""), FLEETCAL: (round(mean, 3), f"{low:.3f}-{high:.3f}" if not math.isnan(low) else ""),
              HF: (round(median(HF, "output_tokens_per_s") / median(VLLM, "output_tokens_per_s"), 3), "")}  # fmt: skip
    return [
        {
            "run": name,
            "output_tokens_per_s": median(name, "output_tokens_per_s"),
            "total_tokens_per_s": median(name, "total_tokens_per_s"),
            "ratio_to_vllm": ratios[name][0],
            "ratio_ci95": ratios[name][1],
        }
        for name in (VLLM, FLEETCAL, HF)
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--kv-cache-gb", type=float, default=2.0, help="vLLM's KV cache on the CPU (GiB)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "crosscheck.json", help="where the result is written")
    p.add_argument("--vllm-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    from bench.bundled import ensure_bundled_model

    model = str(ensure_bundled_model())
    if a.vllm_child:
        print(json.dumps(vllm_throughput(model, a.num_prompts, a.input_len, a.output_len, a.kv_cache_gb)))
        return 0
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    child_argv = [sys.executable, __file__, "--vllm-child", "--num-prompts", str(a.num_prompts), "--input-len", str(a.input_len),
                  "--output-len", str(a.output_len), "--kv-cache-gb", str(a.kv_cache_gb)]  # fmt: skip

    def reference(_: Path) -> dict:
        child = subprocess.run(child_argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        return json.loads(child.stdout.strip().splitlines()[-1])

    def ours(engine: str) -> Callable[[Path], dict]:
        return lambda tmp: fleetcal_throughput(engine, a.num_prompts, a.input_len, a.output_len, tmp)

    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.rounds):
            order = [(VLLM, reference), (FLEETCAL, ours("vllm"))]
            order = order if k % 2 == 0 else order[::-1]
            if k == 0:
                order.append((HF, ours("transformers")))
            for name, fn in order:
                r = fn(Path(tmp) / f"{k}-{name.split()[-1]}")
                rounds.append(
                    {
                        "round": k + 1,
                        "run": name,
                        "output_tokens_per_s": r["output_tokens_per_s"],
                        "total_tokens_per_s": r["total_tokens_per_s"],
                    }
                )
                print(f"round {k + 1} {name:38}{r['output_tokens_per_s']:>10.1f} output tok/s")
    rows = summarize(rounds)
    from bench.device import describe_cpu, git_commit, versions

    doc = {
        "started_utc": started, "git_commit": git_commit(), "versions": versions(), "device": describe_cpu(),
        "workload": {"model": "SmolLM2-135M-Instruct (bundled)", "num_prompts": a.num_prompts, "input_len": a.input_len,
                     "output_len": a.output_len, "submitted": "all at once", "sampling": "temperature 1.0, top_p 1.0", "dtype": _dtype(),
                     "rounds": a.rounds},
        "method": "medians over rounds; fleetcal's ratio to vLLM is the geometric mean of per-round ratios (the two back to back, "
                  "order alternating) with its 95% interval; transformers' ratio is to vLLM's median",
        "rows": rows,
        "rounds": rounds,
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"workload: {a.num_prompts} prompts, {a.input_len} in / {a.output_len} out, all submitted at once, bundled model")
    print(f"{'':38}{'output tok/s':>14}{'total tok/s':>14}{'ratio to vLLM':>15}  95% interval")
    for r in rows:
        print(
            f"{r['run']:38}{r['output_tokens_per_s']:>14.1f}{r['total_tokens_per_s']:>14.1f}{r['ratio_to_vllm']:>15.3f}  {r['ratio_ci95']}"
        )
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
