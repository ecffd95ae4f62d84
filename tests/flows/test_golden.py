"""Golden selections: every sampler's selection on the bundled corpus, ids in order, pinned.

A refactor must not change what any sampler selects. The embeddings come from a stored file
(tests/data/bundled_embeddings.npy, the default encoder's vectors for data/instructions.parquet), so the
test runs the whole select path through the CLI, as a user runs it, without encoding.

A change of selection on purpose: regenerate with
    SELECTFLOW_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/flows/test_golden.py
and say why in the commit message.
"""

import json
import os
from pathlib import Path

import polars as pl
import pytest

from selectflow.flows.cli import main
from selectflow.tasks.samplers import SAMPLERS

pytestmark = pytest.mark.usefixtures("prefect_harness")

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bundled_selections.json"
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "instructions.parquet"

# Beside each sampler's defaults: the pipeline modes that change which rows are chosen.
VARIANTS = {
    "coverage per-group": ["--sampler", "coverage", "--per-group"],
    "coverage dedup 0.9": ["--sampler", "coverage", "--dedup", "0.9"],
    "random min-per-group 20": ["--sampler", "random", "--min-per-group", "20"],
    "mig labels template": ["--sampler", "mig", "--labels", "template"],
    "kmeans budget 37 seed 3": ["--sampler", "kmeans", "--budget", "37", "--seed", "3"],
}


def _select(out: Path, extra: list[str]) -> list[str]:
    args = ["select", str(BUNDLED), "--embeddings", str(DATA / "bundled_embeddings.npy"), "--normalize-embeddings",
            "--budget", "0.05", "--out", str(out), *extra]
    assert main(args) == 0
    return pl.read_parquet(out / "selected.parquet")["id"].to_list()


@pytest.fixture(scope="module")
def selections(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("golden")
    names = ",".join(SAMPLERS)
    assert main(["select", str(BUNDLED), "--embeddings", str(DATA / "bundled_embeddings.npy"), "--normalize-embeddings",
                 "--budget", "0.05", "--sampler", names, "--out", str(root / "all")]) == 0
    found = {name: pl.read_parquet(root / "all" / name / "selected.parquet")["id"].to_list() for name in SAMPLERS}
    for i, (label, extra) in enumerate(VARIANTS.items()):
        found[label] = _select(root / f"variant{i}", extra)
    if os.environ.get("SELECTFLOW_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(found, indent=1) + "\n")
    return found


@pytest.mark.parametrize("label", [*SAMPLERS, *VARIANTS])
def test_selection_matches_the_golden_ids_in_order(selections, label):
    golden = json.loads(GOLDEN.read_text())
    assert label in golden, f"{label} has no golden selection: regenerate {GOLDEN.name} (see the module docstring)"
    assert selections[label] == golden[label], f"{label}: the selection changed ({len(set(selections[label]) ^ set(golden[label]))} ids differ)"
