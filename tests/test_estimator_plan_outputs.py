"""What ``fleetcal plan`` gives a planner: files only where asked, capacity beside demand and what limited it, an
interval explained where it is one-sided, prices per GPU type or "no price", one row per GPU however it is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from estimator.kernels import one_sided_ranges, published_kernels
from fleetcal.cli import main
from fleetcal.report.plan import text

ROOT = Path(__file__).resolve().parent.parent
PLAN = ["plan", "--model", "llama-3.1-8b", "--input-len", "1000", "--output-len", "300", "--requests-per-s", "20", "--ttft-ms",
        "2000", "--tpot-ms", "40", "--samples", "0"]  # fmt: skip


def _run(argv, capsys):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_plan_writes_files_only_where_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run([*PLAN, "--gpu", "H100"], capsys)
    _run([*PLAN, "--gpu", "H100", "--json"], capsys)
    assert not any(tmp_path.iterdir()), "plan_frontier.png/.csv used to land in the current directory on every call"
    out = tmp_path / "out"
    out.mkdir()
    _run([*PLAN, "--gpu", "H100", "--plot", str(out), "--csv", str(tmp_path / "plan.csv")], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["plan_frontier.csv", "plan_frontier.png"]
    (row,) = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert row["gpu"] == "H100" and int(row["gpus"]) > 0


def test_the_table_shows_capacity_beside_demand_and_what_limited_it(capsys):
    doc = json.loads(_run([*PLAN, "--gpu", "H100", "--json"], capsys))
    (r,) = doc["rows"]
    # demand per GPU is the peak rate over the GPUs; whole instances carry at least that: capacity >= demand
    assert r["requests_per_s_per_gpu"] == pytest.approx(20 / r["gpus"])
    assert r["output_tokens_per_s_per_gpu"] == pytest.approx(20 * 300 / r["gpus"])
    assert r["capacity_requests_per_s_per_gpu"] >= r["requests_per_s_per_gpu"]
    assert r["capacity_output_tokens_per_s_per_gpu"] >= r["output_tokens_per_s_per_gpu"] * 0.999
    assert r["limited_by"] in ("SLO: TTFT", "SLO: TPOT", "memory: KV room", "engine: max_num_seqs", "engine: token budget")
    printed = _run([*PLAN, "--gpu", "H100"], capsys)
    assert "capacity_output_tokens_per_s_per_gpu" in printed and "limited_by" in printed and r["limited_by"] in printed


def test_prices_per_gpu_type_override_the_catalog_and_a_missing_price_says_so(tmp_path, capsys):
    # every catalogued GPU has a dated price: an H100 of the user's own, its file without one, has none
    h100 = (ROOT / "core" / "data" / "gpus" / "h100-sxm.toml").read_text()
    own = tmp_path / "lab-h100.toml"
    own.write_text(h100[: h100.index("[price]")].replace('name = "H100"', 'name = "LAB-H100"')
                   .replace('full_name = "NVIDIA H100 SXM5 80GB"', 'full_name = "a lab H100"').replace('["H100-SXM", "H100 SXM5"]', "[]"))
    gpus = ["--gpu", "H100", "--gpu", "LAB-H100", "--gpu-file", str(own)]
    doc = json.loads(_run([*PLAN, *gpus, "--gpu-hour-usd", "H100=2.5", "--json"], capsys))
    by = {r["gpu"]: r for r in doc["rows"]}
    assert by["H100"]["usd_per_gpu_hour"] == 2.5 and by["H100"]["usd_per_day"] == pytest.approx(by["H100"]["gpus"] * 2.5 * 24)
    assert by["LAB-H100"]["usd_per_gpu_hour"] is None and by["LAB-H100"]["usd_per_day"] is None
    printed = _run([*PLAN, *gpus], capsys)
    assert "no price" in printed and "NaN" not in printed and "None" not in printed
    one = json.loads(_run([*PLAN, "--gpu", "B200", "--gpu-hour-usd", "4", "--json"], capsys))["rows"][0]
    assert one["usd_per_gpu_hour"] == 4.0 and one["gpu"] == "B200"  # one price for every GPU overrides the catalog's


def test_one_gpu_named_twice_is_one_row(capsys):
    doc = json.loads(_run([*PLAN, "--gpu", "H100", "--gpu", "h100-sxm", "--json"], capsys))
    assert [r["gpu"] for r in doc["rows"]] == ["H100"]


def test_a_one_sided_interval_names_the_ranges_that_end_at_their_central_value():
    # kernels.toml: overlap [0.5, 1.0] runs at 1.0, the MTP acceptance [0.85, 0.90] at 0.85, the graph gap [0.58, 1.3] us at
    # 0.58: drawn, each can move a count only one way
    names = one_sided_ranges(published_kernels())
    assert {"overlap", "mtp_acceptance", "graph_gap_s"} <= set(names) and "gemm.compute" not in names
    row = {"gpu": "H100", "gpus": 32, "gpus_p5": 32.0, "gpus_p95": 128.0, "one_sided_assumptions": ["overlap"], "mode": "aggregated",
           "weight_dtype": "fp8", "layout": "", "batch_per_gpu": 1, "requests_per_s_per_gpu": 1.0, "capacity_requests_per_s_per_gpu": 1.0,
           "output_tokens_per_s_per_gpu": 1.0, "capacity_output_tokens_per_s_per_gpu": 1.0, "tokens_per_s_per_user": 1.0, "ttft_ms": 1.0,
           "tpot_ms": 1.0, "limited_by": "SLO: TPOT", "usd_per_day": None, "usd_per_million_output_tokens": None}  # fmt: skip
    request = {"model": "m", "input_len": 1, "output_len": 1, "peak_requests_per_s": 1, "ttft_ms": 1, "tpot_ms": 1}
    lines = text({"request": request, "rows": [row], "failed": {}, "cheapest_mix": None}, samples=200, seed=0)
    assert any("H100: 32 GPUs is the interval's 5th percentile: the ranges of overlap end at their central value" in ln for ln in lines)
