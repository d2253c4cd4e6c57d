"""scripts/kernel_db_impact.py: the validation rows predicted with the measured database's operator families switched on and
off in the wired serving model. With every family on it is `fleetcal validate` itself; with none the linear maps are the
model's own figures again; a GPU the database does not hold (H800) is predicted the same in every variant."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from estimator import validation as v
from estimator.validation import load_rows, validate

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kernel_db_impact.py"


@pytest.fixture(scope="module")
def impact():
    spec = importlib.util.spec_from_file_location("kernel_db_impact", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in load_rows()[0]}


def test_every_family_on_is_fleetcal_validate_itself(impact, rows):
    some = [rows[i] for i in ("trtllm-llama3.1-8b-h100-tp1-1000-1000", "trtllm017-llama3.1-70b-h200-tp4-2048-128")]
    assert impact.predict(some, None, set(impact.FAMILIES))["predicted"].tolist() == validate(some)["predicted"].tolist()


def test_with_no_family_the_linear_maps_are_the_models_own_figures_and_the_switch_is_undone(impact, rows):
    row = rows["trtllm-llama3.1-8b-h100-tp1-1000-1000"]
    with impact.families(frozenset()):
        off = validate([row])
        k = row.kernels(v.get_gpu(row.gpu), None, v.load_arch(row.model, row.weight_dtype))
        assert k.database.families == frozenset()
    assert v.kernels_for is impact.ORIGINAL
    assert off["predicted"].tolist() != validate([row])["predicted"].tolist()


def test_a_row_on_a_gpu_the_database_does_not_hold_is_predicted_the_same_in_every_variant(impact):
    h800 = [r for r in load_rows()[0] if r.gpu == "H800"]
    assert h800, "validation.toml holds H800 rows (DeepSeek's own figures)"
    assert impact.predict(h800, None, set())["predicted"].tolist() == validate(h800)["predicted"].tolist()
