"""The serving table's frontier: per device, engine, model, workload and lengths, never across them."""

from __future__ import annotations

import pandas as pd

from fleetcal.report.serving import serving_table


def _point(workload: str | None, conc: int, tps: float, tpot_ms: float, input_len: int = 128) -> dict:
    return {
        "status": "ok",
        "mode": "serve",
        "device_name": "cpu [x]",
        "engine": "vllm",
        "model": "m",
        "workload": workload,
        "input_len": input_len,
        "output_len": 64,
        "concurrency": conc,
        "request_rate": None,
        "num_gpus": 1,
        "output_tokens_per_s": tps,
        "interactivity_tokens_per_s": 1000 / tpot_ms,
        "run_file": "r.json",
    }


def test_the_frontier_is_drawn_per_workload_and_lengths():
    runs = pd.DataFrame([
        _point(None, 1, 20, 40), _point(None, 4, 60, 50), _point(None, 8, 50, 60),  # c=8 is beaten by c=4 on both axes
        _point("prefix 50%", 1, 10, 80), _point("prefix 50%", 4, 30, 90),  # slower, yet the frontier of its own workload
        _point(None, 1, 5, 200, input_len=1024),  # other lengths: its own frontier
    ])  # fmt: skip
    t = serving_table(runs)
    on = {(w, i, c): f for w, i, c, f in zip(t["workload"], t["input_len"], t["concurrency"], t["on_frontier"])}
    assert on == {("random", 128, 1): True, ("random", 128, 4): True, ("random", 128, 8): False,
                  ("prefix 50%", 128, 1): True, ("prefix 50%", 128, 4): True, ("random", 1024, 1): True}  # fmt: skip
    assert t.loc[t["concurrency"] == 4, "tokens_per_s_per_user"].tolist() == [1000 / 90, 1000 / 50]
