"""The real vLLM OpenAI-compatible server under concurrent load (no mock)."""

from __future__ import annotations

import os

import pytest

from bench.engines import EngineConfig
from bench.serve import Server, live_group_members, measure_serve
from estimator.models import load_config

pytestmark = pytest.mark.engine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_server_under_two_concurrencies(bundled_model_dir, cpu_dtype, tmp_path):
    cfg = EngineConfig(model=str(bundled_model_dir), device="cpu", dtype=cpu_dtype, max_model_len=256, max_num_seqs=8, kv_cache_gb=1.0)
    vocab = int(load_config(str(bundled_model_dir))[0].vocab_size)
    with Server(cfg, tmp_path / "server.log") as server:
        pid = server.proc.pid
        results = {c: measure_serve(server.base_url, vocab, c, input_len=32, output_len=12, num_prompts=1, seed=0) for c in (1, 4)}
    for c, m in results.items():
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
    # the server and its workers are gone once the context closes
    assert not _alive(pid)
    assert live_group_members(pid) == [], "no process of the server's group is left running"
