"""The real vLLM OpenAI-compatible server under concurrent load (no mock), and what SIGTERM leaves behind: nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TICKS, assert_nothing_left, sigterm_after_records, uptime_ticks

from core.schema import load_document

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent
def test_serve_sweep_measures_and_sigterm_leaves_no_process(tmp_path):
    """Two concurrencies measured on the real server; SIGTERM during the third stops everything the sweep started."""
    t0 = uptime_ticks() - TICKS  # a second of slack for the clock's granularity
    out = tmp_path / "runs"
    args = ["bench", "--mode", "serve", "--concurrencies", "1,4,8", "--input-lens", "32", "--output-lens", "12", "--num-prompts", "1",
            "--microbench", "off", "--out", str(out)]  # fmt: skip
    returncode, err, at_signal = sigterm_after_records(args, out, records=2)
    assert returncode == 128 + signal.SIGTERM, err[-2000:]
    assert_nothing_left(t0, wait_s=45)  # the server's group gets SIGTERM, then SIGKILL after 30 s

    (path,) = out.glob("*.json")
    records = load_document(path)["records"]
    done = [r for r in records if r["status"] == "ok"]
    assert [r["concurrency"] for r in done][:2] == [1, 4] and at_signal <= len(records) <= 3
    for m in done:
        c = m["concurrency"]
        assert m["sent"] == max(1, 5 * c), "at least 5 x concurrency requests are measured"
        assert m["completed"] + m["failed"] == m["sent"], "no request is lost"
        assert m["failed"] == 0, m["errors"]
        assert m["output_tokens_per_s"] > 0 and m["total_tokens_per_s"] > m["output_tokens_per_s"]
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
            s = m[key]
            assert all(v > 0 for v in s.values()), (key, s)
            assert s["p50"] <= s["p90"] <= s["p99"], (key, s)
        assert m["ttft_ms"]["p99"] <= m["e2el_ms"]["p99"] and m["ttft_ms"]["mean"] <= m["e2el_ms"]["mean"]
        assert m["interactivity_tokens_per_s"] == pytest.approx(1000 / m["tpot_ms"]["mean"], rel=1e-3)


def test_request_rates_and_an_slo_search_against_a_separately_started_server(tmp_path, bundled_model_dir, cpu_dtype):
    """A vLLM server started apart (as another team's would be), measured through --base-url: Poisson arrivals at
    8 requests/s, then an SLO search that doubles up to its ceiling; every probe recorded, the server left running."""
    from bench.engines import EngineConfig
    from bench.serve import Server

    cfg = EngineConfig(model=str(bundled_model_dir), device="cpu", dtype=cpu_dtype, max_model_len=256, max_num_seqs=8, kv_cache_gb=1.0)
    out = tmp_path / "runs"
    with Server(cfg, tmp_path / "server.log") as server:
        t0 = uptime_ticks() - TICKS
        args = [
            "bench",
            "--mode",
            "serve",
            "--base-url",
            server.base_url,
            "--request-rates",
            "8",
            "--input-lens",
            "16",
            "--output-lens",
            "8",
            "--num-prompts",
            "1",
            "--slo-tpot-ms",
            "5000",
            "--slo-max-concurrency",
            "4",
            "--microbench",
            "off",
            "--out",
            str(out),
        ]
        proc = subprocess.run([sys.executable, "-m", "fleetcal.cli", *args], cwd=ROOT, env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert_nothing_left(t0)  # the bench started no server of its own, and left nothing
        assert server.proc.poll() is None, "the server it measured is not its to stop"
    (path,) = out.glob("*.json")
    doc = load_document(path)
    assert doc["run"]["server"]["base_url"] == server.base_url and doc["run"]["server"]["models"][0]["id"] == "bench"
    assert doc["run"]["server"]["models"][0]["max_model_len"] == 256
    assert doc["run"]["engine"]["name"] == "external" and path.name.endswith("-external-SmolLM2-135M-Instruct.json")
    rate, *probes = doc["records"]
    assert rate["request_rate"] == 8.0 and rate["concurrency"] is None and rate["burstiness"] == 1.0
    assert rate["status"] == "ok" and rate["sent"] == 20 and rate["failed"] == 0
    assert 0 < rate["window_s"] < rate["duration_s"] and rate["steady_output_tokens_per_s"] > 0
    assert [(p["concurrency"], p["search_step"], p["slo_met"]) for p in probes] == [(1, 1, True), (2, 2, True), (4, 3, True)]
    assert all(p["slo"] == {"tpot_ms": 5000.0, "ttft_ms": None, "percentile": 90} and p["goodput_requests_per_s"] > 0 for p in probes)
    (search,) = doc["run"]["slo_search"]
    assert search["max_concurrency"] == 4 and [p["concurrency"] for p in search["probes"]] == [1, 2, 4]
    assert "highest concurrency meeting it 4" in proc.stdout
