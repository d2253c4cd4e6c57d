"""--resume rebuilds the plan saved in the results file, refuses flags that would change it, and can write elsewhere."""

from __future__ import annotations

import json

import pytest

from bench.plan import BenchPlan
from bench.provenance import new_run
from core.errors import UsageError
from core.models import get_model
from fleetcal.cli import build_parser, main
from fleetcal.commands.bench import validate_args

ARGV = ["bench", "--batch-sizes", "1,4", "--input-lens", "8", "--output-lens", "8", "--microbench", "off", "--budget-s", "2"]


@pytest.fixture()
def saved_run(tmp_path):
    """A results file as ``fleetcal bench`` starts it (header and plan, no record yet)."""
    plan = validate_args(build_parser().parse_args([*ARGV, "--out", str(tmp_path / "runs")]))
    runfile = new_run(plan, get_model(plan.model_path))
    runfile.save()
    return plan, runfile.path


def test_the_saved_plan_is_the_plan(saved_run):
    plan, path = saved_run
    again = validate_args(build_parser().parse_args(["bench", "--resume", str(path)]))
    assert again.saved() == plan.saved()
    assert again.configurations() == plan.configurations()
    assert again.resume == path and again.out_dir == path.parent


def test_a_flag_that_would_change_the_plan_is_refused(saved_run, capsys):
    _, path = saved_run
    before = path.read_bytes()
    assert main(["bench", "--resume", str(path), "--batch-sizes", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "--batch-sizes" in err
    assert path.read_bytes() == before
    # the same value as saved is no conflict
    assert validate_args(build_parser().parse_args(["bench", "--resume", str(path), "--batch-sizes", "1,4"])).batch_sizes == (1, 4)


def test_resume_into_another_directory_leaves_the_original_alone(saved_run, tmp_path):
    _, path = saved_run
    before = path.read_bytes()
    plan = validate_args(build_parser().parse_args(["bench", "--resume", str(path), "--out", str(tmp_path / "elsewhere")]))
    assert plan.resume == tmp_path / "elsewhere" / path.name and plan.resume.read_bytes() == before
    assert path.read_bytes() == before
    with pytest.raises(UsageError, match="already exists"):  # a second time would overwrite the copy
        validate_args(build_parser().parse_args(["bench", "--resume", str(path), "--out", str(tmp_path / "elsewhere")]))


def test_a_file_without_a_saved_plan_names_the_file(saved_run, capsys):
    _, path = saved_run
    doc = json.loads(path.read_text())
    del doc["run"]["plan"]
    path.write_text(json.dumps(doc))
    assert main(["bench", "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "no saved plan" in err


def test_a_saved_plan_is_validated_again(saved_run):
    plan, path = saved_run
    saved = {**plan.saved(), "budget_s": -1}
    with pytest.raises(UsageError, match="--budget-s"):
        BenchPlan.from_saved(saved, plan.model_path, path.parent, path, {})
    with pytest.raises(UsageError, match="does not know: warp"):
        BenchPlan.from_saved({**plan.saved(), "warp": 1}, plan.model_path, path.parent, path, {})



def test_request_rates_and_slo_survive_the_saved_plan(tmp_path):
    """An infinite rate is saved as "inf" (JSON has no infinity) and read back as one."""
    plan = validate_args(build_parser().parse_args([*ARGV, "--mode", "serve", "--request-rates", "2,inf", "--slo-ttft-ms", "500",
                                                    "--out", str(tmp_path)]))  # fmt: skip
    saved = json.loads(json.dumps(plan.saved(), allow_nan=False))
    assert saved["request_rates"] == [2.0, "inf"]
    again = BenchPlan.from_saved(saved, plan.model_path, tmp_path, tmp_path / "x.json", {})
    assert again.request_rates == (2.0, float("inf")) and again.slo_ttft_ms == 500
    assert [c.get("request_rate") for c in again.configurations()] == [2.0, "inf"], "the search replaces the fixed concurrencies"
