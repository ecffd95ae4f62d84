"""planning/sampler_run.py: one sampler run over a corpus or one group of it (plain code, no Prefect)."""

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError
from selectflow.tasks.io.results import Embeddings
from selectflow.tasks.planning.sampler_run import (Rounds, SamplerRun, restrict, run_sampler, selection_arrays,
                                                   selection_key)
from selectflow.tasks.samplers import SelectionInput, get_sampler


def _input(n=40, dim=8, seed=0, previous=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return SelectionInput(embeddings=x, groups=np.array(["a", "b"] * (n // 2)), ids=np.array([f"r{i}" for i in range(n)]),
                          previous_rows=previous)


def test_a_whole_corpus_run_is_the_samplers_own_selection():
    data = _input()
    sampler = get_sampler("random", {})
    selection, extra = run_sampler(sampler, data, 5, seed=3)
    assert selection.rows.tolist() == sampler.select(data, 5, 3).rows.tolist() and extra == {}


def test_a_group_run_selects_inside_the_group_and_maps_rows_back():
    data = _input(previous=np.array([1, 3]))
    selection, _ = run_sampler(get_sampler("random", {}), data, 6, seed=0, group="b")
    assert set(data.groups[selection.rows]) == {"b"} and len(selection.rows) == 6
    assert not {1, 3} & set(selection.rows.tolist())  # earlier rounds' rows stay out inside the group too


def test_restrict_renumbers_earlier_rounds_rows():
    small = restrict(_input(previous=np.array([2, 5, 9])), np.array([0, 2, 4, 9]))
    assert small.n_rows == 4 and small.previous_rows.tolist() == [1, 3]


def test_dedup_runs_first_and_its_arrays_name_corpus_rows():
    data = _input()
    twins = data.embeddings.copy()
    twins[1] = twins[0]  # an exact near-duplicate pair
    data = SelectionInput(embeddings=twins, groups=data.groups, ids=data.ids)
    selection, extra = run_sampler(get_sampler("random", {}), data, 5, seed=0, dedup=0.99)
    assert set(extra) == {"dedup_dropped", "dedup_kept_for", "dedup_similarity"}
    assert sorted([int(extra["dedup_dropped"][0]), int(extra["dedup_kept_for"][0])]) == [0, 1]
    assert int(extra["dedup_dropped"][0]) not in selection.rows.tolist()
    assert "dedup" in selection.diagnostics
    with pytest.raises(ConfigError, match="rows left after --dedup"):
        run_sampler(get_sampler("random", {}), data, 40, seed=0, dedup=0.99)


def test_selection_arrays_fill_missing_clusters():
    selection, extra = run_sampler(get_sampler("random", {}), _input(), 4, seed=0)
    arrays = selection_arrays(selection, extra)
    assert sorted(arrays) == ["clusters", "rows", "scores", "weights"] and arrays["clusters"].tolist() == [-1] * 4


def _embeddings(key):
    return Embeddings(matrix_path=f"/c/matrix/{key}.npy", n_rows=4, dim=2, store_dir=None, store_key=None, key=key,
                      encoded=0, reused=4, truncated=0, max_seq_length=None, encode_seconds=0.0, texts_per_second=None,
                      encoder={"name": "x"})


def test_the_key_changes_with_what_decides_the_rows():
    run = SamplerRun(sampler="random", options={}, budget=0.5, seed=0)
    base = dict(embeddings=_embeddings("m"), index=None, run=run, options={}, n_budget=2, rounds=Rounds())
    key = selection_key(**base)
    assert key == selection_key(**base)
    assert key != selection_key(**{**base, "n_budget": 3})
    assert key != selection_key(**{**base, "group": "a"})
    assert key != selection_key(**{**base, "dedup": 0.9})
    assert key != selection_key(**{**base, "rounds": Rounds(target=_embeddings("t"))})
    assert key != selection_key(**{**base, "run": run.model_copy(update={"seed": 1})})


def test_parameter_objects_are_frozen():
    run = SamplerRun(sampler="random", budget=10)
    with pytest.raises(Exception):
        run.seed = 2  # type: ignore[misc]
    assert Rounds().key() == {"target": None, "feedback": None, "previous": []}
