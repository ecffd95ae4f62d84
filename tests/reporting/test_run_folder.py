"""reporting/run_folder.py: manifest.json's content and semantic dedup's tables (plain code, no Prefect)."""

import json

import numpy as np
import polars as pl

from selectflow.tasks.io.results import Embeddings, IndexRef, Manifest, PreparedCorpus, Selection
from selectflow.tasks.reporting.run_folder import (dedup_examples, dropped_frame, library_versions, run_manifest,
                                                   texts_by_row)

PREPARED = PreparedCorpus(input_path="/in/c.parquet", input_hash="h", format="parquet", columns=["id", "text"],
                          text_columns=["text"], prepared_path="/c/corpus/k/prepared.parquet",
                          excluded_path="/c/corpus/k/excluded.parquet", n_read=10, n_usable=8,
                          excluded={"empty text": 2}, key="k", reused=False)
EMBEDDINGS = Embeddings(matrix_path="/c/matrix/m.npy", n_rows=8, dim=4, store_dir="/c/store/s", store_key="s", key="m",
                        encoded=5, reused=3, truncated=1, max_seq_length=256, encode_seconds=1.0, texts_per_second=5.0,
                        encoder={"name": "mini", "path": "/models/mini", "weights_hash": "w", "max_seq_length": 256,
                                 "dim": 4, "device": "cpu"})
INDEX = IndexRef(path="/c/index/i.faiss", params={"kind": "flat", "nlist": None}, key="i", reused=True, gpu=False,
                 build_seconds=0.0)
SELECTION = Selection(key="s", sampler="kmeans", options={"k": 2}, budget=3, budget_requested=0.25, seed=7,
                      arrays="/c/selection/s/selection.npz", has_clusters=True, diagnostics={}, seconds=0.5)


def test_the_manifest_names_input_rows_encoder_and_cache_files():
    m = run_manifest(run_key="r", prepared=PREPARED, embeddings=EMBEDDINGS, index=INDEX, selection=SELECTION,
                     config={"a": 1}, changes={"kept": 1, "examples": {}}, timings={"select": 0.5}, selected=3, dropped=None,
                     outputs=["selected.parquet"]).to_json()
    assert m["rows"] == {"read": 10, "usable": 8, "excluded": 2, "excluded_by_reason": {"empty text": 2}, "selected": 3}
    assert m["budget"] == {"requested": 0.25, "rows": 3} and m["seed"] == 7 and m["index"] == {"kind": "flat", "nlist": None}
    assert m["encoder"] == {"name": "mini", "path": "/models/mini", "weights_hash": "w", "max_seq_length": 256, "device": "cpu"}
    assert m["embeddings"] == {"store_key": "s", "encoded_this_run": 5, "reused_from_store": 3, "truncated": 1}
    assert m["cache_files"] == {"prepared_corpus": PREPARED.prepared_path, "embedding_matrix": EMBEDDINGS.matrix_path,
                                "selection_arrays": SELECTION.arrays}
    assert m["changes_since_previous"] == {"kept": 1} and "python" in m["library_versions"]
    with_dedup = run_manifest(run_key="r", prepared=PREPARED, embeddings=EMBEDDINGS, index=None, selection=SELECTION,
                              config={}, changes=None, timings={}, selected=3, dropped=2, outputs=[]).to_json()
    assert with_dedup["rows"]["dropped_by_dedup"] == 2 and with_dedup["index"] is None
    assert with_dedup["changes_since_previous"] is None and "dedup" not in with_dedup and "kept" not in with_dedup["rows"]


def test_the_manifest_round_trips_through_its_file(tmp_path):
    manifest = run_manifest(run_key="r", prepared=PREPARED, embeddings=EMBEDDINGS, index=None, selection=SELECTION,
                            config={"corpus": {"id_column": None}}, changes=None, timings={"select": 0.5, "n": 1},
                            selected=3, dropped=None, outputs=["selected.parquet"])
    manifest.write(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    again = Manifest.read(tmp_path)
    assert again == manifest and again.to_json() == json.loads(text)
    assert again.index is None and again.budget.requested == 0.25 and again.timings_seconds["n"] == 1
    again.write(tmp_path / "copy")
    assert (tmp_path / "copy" / "manifest.json").read_text() == text  # byte for byte


def test_dropped_rows_beside_the_row_kept_for_them():
    ids = ["a", "b", "c", "d"]
    assert dropped_frame({"rows": np.array([0])}, ids, np.array([0])) is None
    arrays = {"dedup_dropped": np.array([1, 3]), "dedup_kept_for": np.array([0, 2]), "dedup_similarity": np.array([0.99, 0.95])}
    frame = dropped_frame(arrays, ids, np.array([0]))
    assert frame.to_dicts() == [{"dropped_id": "b", "kept_id": "a", "similarity": 0.99, "kept_selected": True},
                                {"dropped_id": "d", "kept_id": "c", "similarity": 0.95, "kept_selected": False}]
    table = dedup_examples(arrays, ids, lambda rows: [f"t{r}" for r in rows], 0.9)
    assert table["rows"] == [["b", "t1", 0.99, "a", "t0"], ["d", "t3", 0.95, "c", "t2"]]
    assert "≥ 0.9" in table["title"]


def test_texts_are_fetched_in_the_order_asked(tmp_path):
    path = tmp_path / "prepared.parquet"
    pl.DataFrame({"text": ["zero", "one", "two"]}).write_parquet(path)
    assert texts_by_row(str(path))([2, 0, 2]) == ["two", "zero", "two"] and texts_by_row(str(path))([]) == []
    assert library_versions()["numpy"] == np.__version__
