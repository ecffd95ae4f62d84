"""io/selection_input.py and io/results.py: the sampler's input from the cache, selection.npz, the typed results."""

import json

import numpy as np
import polars as pl
import pytest

from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus
from selectflow.tasks.io.results import DedupSummary, Embeddings, PreparedCorpus, Selection
from selectflow.tasks.io.selection_input import load_arrays, load_selection_input, save_arrays


@pytest.fixture
def cached(tmp_path):
    rows = [{"id": f"r{i}", "text": f"text {i}", "q": float(i), "tags": ["x"] if i % 2 else ["y", "z"], "src": f"s{i % 3}"}
            for i in range(6)]
    path = tmp_path / "corpus.parquet"
    pl.DataFrame(rows).write_parquet(path)
    spec = CorpusSpec(str(path), id_column="id", quality_column="q", label_column="tags", group_column="src")
    files = prepare_corpus(spec, tmp_path / "work")
    prepared = PreparedCorpus(**files.to_dict(), key="k", reused=False)
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.eye(6, 4, dtype=np.float32))
    embeddings = Embeddings(matrix_path=str(matrix), n_rows=6, dim=4, store_dir=None, store_key=None, key="m", encoded=0,
                            reused=6, truncated=0, max_seq_length=None, encode_seconds=0.0, texts_per_second=None,
                            encoder={"name": "user"})
    return prepared, embeddings


def test_the_input_holds_the_corpus_columns_it_has(cached):
    prepared, embeddings = cached
    data, facts = load_selection_input(prepared, embeddings, None)
    assert data.n_rows == 6 and data.ids.tolist() == [f"r{i}" for i in range(6)]
    assert data.quality.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert data.labels[0] == ("y", "z") and data.groups.tolist()[:3] == ["s0", "s1", "s2"]
    assert data.knn is None and data.target_embeddings is None and data.previous_rows is None and facts == {}
    without = prepared.model_copy(update={"has_quality": False, "has_labels": False, "has_groups": False})
    bare, _ = load_selection_input(without, embeddings, None, mmap=True)
    assert bare.quality is None and bare.labels is None and bare.groups is None
    assert isinstance(bare.embeddings, np.memmap)


def test_rounds_inputs_are_matched_by_id_and_counted(cached, tmp_path):
    prepared, embeddings = cached
    earlier = tmp_path / "round1"
    earlier.mkdir()
    pl.DataFrame({"sf_id": ["r1", "r4", "gone"]}).write_parquet(earlier / "selected.parquet")
    feedback = tmp_path / "fb.parquet"
    pl.DataFrame({"id": ["r0", "r5", "nope"], "feedback": [1.0, 2.0, 3.0]}).write_parquet(feedback)
    data, facts = load_selection_input(prepared, embeddings, None, target=embeddings, feedback=str(feedback),
                                       previous=[str(earlier)])
    assert data.previous_rows.tolist() == [1, 4] and data.target_embeddings.shape == (6, 4)
    assert np.isfinite(data.feedback).tolist() == [True, False, False, False, False, True]
    assert facts == {"previous_ids_not_in_corpus": 1, "previous_rows": 2, "feedback_ids_not_in_corpus": 1, "feedback_rows": 2}


def test_arrays_round_trip(tmp_path):
    arrays = {"rows": np.array([3, 1]), "scores": np.array([0.5, 0.25]), "weights": np.ones(2), "clusters": np.array([-1, -1])}
    path = save_arrays(tmp_path / "sel" / "selection.npz", arrays)
    selection = Selection(key="k", sampler="random", options={}, budget=2, budget_requested=2, seed=0, arrays=str(path),
                          has_clusters=False, diagnostics={}, seconds=0.0)
    loaded = load_arrays(selection)
    assert sorted(loaded) == sorted(arrays) and loaded["rows"].tolist() == [3, 1]


def test_selection_json_round_trips_and_keeps_the_budget_as_asked(tmp_path):
    for requested in (10, 0.25):
        selection = Selection(key="k", sampler="kmeans", options={"k": 4}, budget=10, budget_requested=requested, seed=1,
                              arrays="a.npz", has_clusters=True, diagnostics={"inertia": 1.5}, seconds=0.1,
                              dedup=DedupSummary(threshold=0.9, rows_dropped=2))
        path = tmp_path / "selection.json"
        path.write_text(json.dumps(selection.record()))
        record = json.loads(path.read_text())
        assert "reused" not in record and record["budget_requested"] == requested
        assert type(record["budget_requested"]) is type(requested)
        again = Selection.read(path)
        assert again.reused and again.model_copy(update={"reused": False}) == selection
    with pytest.raises(Exception):
        selection.seed = 2  # frozen
