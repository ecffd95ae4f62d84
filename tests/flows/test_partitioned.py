"""Partitioned selection as a mode of the pipeline (issue #13): --partitions K, embeddings kept as shards."""

import json

import numpy as np
import polars as pl
import pytest

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.flows.runners import RunnerParams

REPO_DATA = __import__("pathlib").Path(__file__).resolve().parents[2]
N_ROWS = 360
BUDGET = 30


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """360 bundled rows (one with an empty text, so excluded) and their bundled embeddings as 3 .npy shards."""
    root = tmp_path_factory.mktemp("partitioned")
    df = pl.read_parquet(REPO_DATA / "data" / "instructions.parquet").head(N_ROWS)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("")).otherwise(pl.col("prompt")).alias("prompt"),
                         pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("")).otherwise(pl.col("completion")).alias("completion"))
    df.write_parquet(root / "corpus.parquet")
    emb = np.load(REPO_DATA / "tests" / "data" / "bundled_embeddings.npy")[:N_ROWS]
    (root / "emb").mkdir()
    for i, (a, b) in enumerate([(0, 100), (100, 250), (250, N_ROWS)]):
        np.save(root / "emb" / f"part-{i}.npy", emb[a:b])
    return root


def _run(sharded, tmp, sampler, *, workers=1, partitions=3, name="out", cache=None):
    from selectflow.flows.pipeline import select_subset

    return select_subset(
        CorpusParams(path=str(sharded / "corpus.parquet"), id_column="id", embeddings=str(sharded / "emb")),
        EncoderParams(device="cpu"),
        SelectionParams(sampler=sampler, budget=BUDGET, seed=3, partitions=partitions),
        OutputParams(out_dir=str(tmp / name), cache_dir=str(cache or tmp / f"cache-{name}")),
        RunnerParams(kind="thread", workers=workers),
    )


@pytest.mark.parametrize("sampler", ["kmeans", "mig", "dpp"])
def test_partitioned_selection_is_exact_valid_deterministic_and_runner_independent(sharded, tmp_path, sampler):
    one = _run(sharded, tmp_path, sampler, workers=1, name="one")
    two = _run(sharded, tmp_path, sampler, workers=2, name="two")
    assert one["embedded"].shards and one["index"] is None
    usable = one["prepared"].n_usable
    assert usable == N_ROWS - 1  # the empty row is excluded: shards hold the usable rows only
    frames = [pl.read_parquet(tmp_path / name / "selected.parquet") for name in ("one", "two")]
    ids = pl.read_parquet(one["prepared"].prepared_path, columns=["id"])["id"].to_list()
    with np.load(one["selection"].arrays) as z:
        rows = z["rows"]
    assert len(rows) == BUDGET and len(np.unique(rows)) == BUDGET
    assert rows.min() >= 0 and rows.max() < usable
    assert frames[0].height == BUDGET and frames[0]["id"].to_list() == [ids[r] for r in rows]
    # Identical on 1 and 2 thread workers, from separate caches (nothing reused between the two runs).
    assert frames[0]["id"].to_list() == frames[1]["id"].to_list()
    assert frames[0]["sf_score"].to_list() == frames[1]["sf_score"].to_list() if "sf_score" in frames[0].columns else True
    diag = one["selection"].diagnostics["partitioned"]
    assert diag["k"] == 3 and sum(diag["quotas"]) == BUDGET and sum(diag["sizes"]) == usable
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["rows"]["selected"] == BUDGET and manifest["config"]["selection"]["partitions"] == 3
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert "partitioned" in report["diagnostics"]


def test_partition_mode_never_assembles_the_matrix_nor_indexes_every_row(bundled_slice, tmp_path, monkeypatch):
    """Encoder path: the store's embeddings become shards; assemble_matrix, the full import and the index never run."""
    import selectflow.tasks.embed as embed
    import selectflow.tasks.embedding.encode_units as encode_units
    import selectflow.tasks.import_embeddings as import_embeddings
    import selectflow.tasks.index as index
    from selectflow.flows.pipeline import select_subset

    def forbidden(*_a, **_k):
        raise AssertionError("partition mode assembled or indexed the (N, D) matrix")

    monkeypatch.setattr(encode_units, "assemble_matrix", forbidden)
    monkeypatch.setattr(embed, "assemble_matrix", forbidden)
    monkeypatch.setattr(import_embeddings, "import_embeddings", forbidden)
    monkeypatch.setattr(index, "build_index", forbidden)
    result = select_subset(
        CorpusParams(path=str(bundled_slice), id_column="id"), EncoderParams(device="cpu"),
        SelectionParams(sampler="kmeans", budget=10, seed=0, partitions=2),
        OutputParams(out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache")),
        RunnerParams(kind="thread", workers=2, unit_rows=30),
    )
    assert result["selected"] == 10 and result["index"] is None
    assert len(result["embedded"].shards) == 3  # 80 rows, 30 per shard
    assert not list((tmp_path / "cache" / "matrix").glob("*.npy"))  # only the shard list, no matrix


def test_memory_limit_chooses_the_partitions(sharded, tmp_path):
    from selectflow.flows.pipeline import select_subset
    from selectflow.tasks.planning.partitions import partitions_for_memory

    # 384-d rows at 12 bytes per value: 0.0001 GiB holds 23 rows, so 359 rows make 16 partitions.
    assert partitions_for_memory(359, 384, 0.0001) == 16
    result = select_subset(
        CorpusParams(path=str(sharded / "corpus.parquet"), id_column="id", embeddings=str(sharded / "emb" / "part-*.npy")),
        EncoderParams(device="cpu"), SelectionParams(sampler="random", budget=BUDGET, seed=0, memory_limit=0.0001),
        OutputParams(out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache")),
    )
    assert result["selection"].diagnostics["partitioned"]["k"] == 16 and result["selected"] == BUDGET


def test_partitioned_refuses_what_it_does_not_do(sharded, tmp_path):
    from selectflow.flows.pipeline import select_subset
    from selectflow.tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="--dedup"):
        select_subset(CorpusParams(path=str(sharded / "corpus.parquet"), embeddings=str(sharded / "emb")),
                      EncoderParams(device="cpu"), SelectionParams(sampler="random", budget=5, partitions=2, dedup=0.9),
                      OutputParams(out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache")))


def test_partitioned_selection_on_an_s3_cache_gives_the_local_caches_selection(sharded, tmp_path):
    """The user's local .npy shards with the cache on S3 (a real moto_server): the shards are published to the cache
    (workers elsewhere read them there), the partition folder and the picks are objects, and the selection is the
    local cache's, byte for byte. Run twice: the second run reuses the cached selection."""
    pytest.importorskip("s3fs")
    from selectflow.flows.pipeline import select_subset
    from tests.s3_server import all_keys, make_bucket, moto_server, s3_environment

    def run(cache, name):
        return select_subset(
            CorpusParams(path=str(sharded / "corpus.parquet"), id_column="id", embeddings=str(sharded / "emb")),
            EncoderParams(device="cpu"), SelectionParams(sampler="random", budget=BUDGET, seed=3, partitions=3),
            OutputParams(out_dir=str(tmp_path / name), cache_dir=cache), RunnerParams(kind="thread", workers=2))

    local = run(str(tmp_path / "cache-local"), "local")
    with moto_server() as endpoint, s3_environment(endpoint):
        make_bucket(endpoint, "parts")
        remote = run("s3://parts/cache", "remote")
        again = run("s3://parts/cache", "again")
        keys = all_keys(endpoint, "parts")
    expected = (tmp_path / "local" / "selected.parquet").read_bytes()
    assert (tmp_path / "remote" / "selected.parquet").read_bytes() == expected
    assert (tmp_path / "again" / "selected.parquet").read_bytes() == expected
    assert not local["selection"].reused and again["selection"].reused
    assert all(s.startswith("s3://parts/cache/shards/") for s in remote["embedded"].shards)
    assert sum(k.startswith("cache/partitions/") and "/routing/" in k for k in keys) == 3
    assert any(k.startswith("cache/selection/") and k.endswith("selection.json") for k in keys)
    assert not [k for k in keys if ".tmp" in k]


def test_unchanged_shards_are_not_checked_again(sharded, tmp_path, monkeypatch):
    """The shard check (hash, finite, unit norm) is cached under the file's version: a second run on the same
    cache skips it; a rewritten shard is checked again."""
    import os
    import shutil

    import selectflow.tasks.partitioned as partitioned

    shards = tmp_path / "emb"
    shutil.copytree(sharded / "emb", shards)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sharded / "corpus.parquet", data / "corpus.parquet")
    (data / "emb").symlink_to(shards)
    cache = tmp_path / "cache"
    first = _run(data, tmp_path, "random", name="first", cache=cache)
    checked: list[str] = []
    original = partitioned.import_shard
    monkeypatch.setattr(partitioned, "import_shard", lambda path, **kw: checked.append(path) or original(path, **kw))
    second = _run(data, tmp_path, "random", name="second", cache=cache)
    assert checked == [] and second["embedded"].key == first["embedded"].key
    target = shards / "part-1.npy"
    np.save(target, np.load(target))  # same rows, a new file version
    os.utime(target, ns=(1, 1))
    third = _run(data, tmp_path, "random", name="third", cache=cache)
    assert [os.path.basename(p) for p in checked] == ["part-1.npy"] and third["embedded"].key == first["embedded"].key
