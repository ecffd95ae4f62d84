"""reporting/dedup_folder.py: the output folder of `selectflow dedup`, from a dedup result's arrays (no Prefect)."""

import json

import numpy as np
import polars as pl

from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus
from selectflow.tasks.io.results import Embeddings, Manifest, PreparedCorpus
from selectflow.tasks.reporting.dedup_folder import write_dedup_folder


def test_kept_and_dropped_rows_report_and_manifest_last(tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"id": ["a", "b", "c", "d"], "text": ["one", "one!", "two", "three"], "extra": [1, 2, 3, 4]}).write_parquet(path)
    spec = CorpusSpec(str(path), id_column="id")
    prepared = PreparedCorpus(**prepare_corpus(spec, tmp_path / "work").to_dict(), key="k", reused=False)
    embedded = Embeddings(matrix_path="m.npy", n_rows=4, dim=2, store_dir=None, store_key=None, key="m", encoded=0, reused=4,
                          truncated=0, max_seq_length=None, encode_seconds=0.0, texts_per_second=None,
                          encoder={"name": "user", "weights_hash": "w"})
    arrays = tmp_path / "dedup.npz"
    np.savez(arrays, kept=np.array([0, 2, 3]), dedup_dropped=np.array([1]), dedup_kept_for=np.array([0]),
             dedup_similarity=np.array([0.97]), clusters=np.array([0, 0, 1, 2]))
    dedup = {"threshold": 0.9, "seed": 0, "arrays": str(arrays), "diagnostics": {"n_clusters": 3}}
    out = tmp_path / "out"
    out.mkdir()
    result = write_dedup_folder(spec=spec.to_dict(), prepared=prepared, embedded=embedded, dedup=dedup, out_dir=str(out),
                                run_key="r", config={"dedup": {"threshold": 0.9}}, timings={"dedup": 0.1})
    assert (result["rows"], result["kept"], result["dropped"]) == (4, 3, 1)
    kept = pl.read_parquet(out / "kept.parquet")
    assert kept["id"].to_list() == ["a", "c", "d"] and kept["extra"].to_list() == [1, 3, 4]
    assert kept["sf_duplicates_dropped"].to_list() == [1, 0, 0] and kept["sf_dedup_cluster"].to_list() == [0, 1, 2]
    assert pl.read_parquet(out / "dropped.parquet").to_dicts() == [{"dropped_id": "b", "kept_id": "a", "similarity": 0.97}]
    report = json.loads((out / "dedup_report.json").read_text())
    assert report["examples"]["rows"] == [["b", "one!", 0.97, "a", "one"]]
    manifest = Manifest.read(out)
    assert manifest.rows.kept == 3 and manifest.rows.dropped_by_dedup == 1 and manifest.dedup["threshold"] == 0.9
    assert manifest.seed is None and "seed" not in json.loads((out / "manifest.json").read_text())
    assert manifest.encoder.name == "user" and manifest.outputs == ["kept.parquet", "dropped.parquet", "dedup_report.json"]
