"""--repeats: each configuration measured N times, and the mean with its 95% interval in the tables."""

from __future__ import annotations

import math

import pytest

from core.schema import load_document
from estimator.runs import load_runs
from fleetcal.cli import build_parser, main
from fleetcal.commands.bench import validate_args
from fleetcal.report.repeats import ci95, repeats_table


def test_the_interval_is_students():
    mean, half = ci95([1.0, 2.0, 3.0])  # s = 1, t(0.975, 2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(ci95([5.0])[1])


def test_every_configuration_is_planned_n_times_in_rounds(tmp_path):
    plan = validate_args(
        build_parser().parse_args(["bench", "--batch-sizes", "1,2", "--repeats", "3", "--microbench", "off", "--out", str(tmp_path)])
    )
    assert [(c["batch_size"], c["repeat"]) for c in plan.configurations()] == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]


@pytest.mark.engine
def test_a_repeated_run_gives_n_records_and_one_row_of_the_table(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["bench", "--engine", "transformers", "--batch-sizes", "1", "--input-lens", "8", "--output-lens", "4", "--num-prompts", "1",
            "--repeats", "3", "--microbench", "off", "--out", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err[-2000:]  # in this process: torch and transformers are loaded already
    (path,) = out.glob("*.json")
    assert [(r["repeat"], r["status"]) for r in load_document(path)["records"]] == [(1, "ok"), (2, "ok"), (3, "ok")]
    table = repeats_table(load_runs(out))
    (row,) = table[table["rate"] == "output_tokens_per_s"].itertuples()
    assert row.repeats == 3 and row.ci95_low <= row.mean <= row.ci95_high
