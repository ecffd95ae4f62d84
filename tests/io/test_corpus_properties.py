"""Property-based tests of the loader: any small table of texts keeps its promises."""

import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings, strategies as st

from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus

texts = st.one_of(st.none(), st.just(""), st.just("  \n"), st.text(min_size=1, max_size=40))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(texts, texts), min_size=1, max_size=25), fmt=st.sampled_from(["parquet", "jsonl"]))
def test_every_row_is_either_usable_or_excluded_with_a_reason(rows, fmt):
    df = pl.DataFrame({"prompt": [a for a, _ in rows], "completion": [b for _, b in rows]},
                      schema={"prompt": pl.String, "completion": pl.String})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c.{fmt}"
        df.write_parquet(path) if fmt == "parquet" else df.write_ndjson(path)
        usable_expected = [i for i, (a, b) in enumerate(rows) if any(t is not None and t.strip() for t in (a, b))]
        if not usable_expected:
            return  # an all-empty corpus is an error, tested elsewhere
        pc = prepare_corpus(CorpusSpec(str(path)), Path(tmp) / "w1")
        prepared = pl.read_parquet(pc.prepared_path)
        excluded = pl.read_parquet(pc.excluded_path)
        assert pc.n_read == len(rows) == pc.n_usable + sum(pc.excluded.values())
        assert prepared["row"].to_list() == usable_expected
        assert all(t.strip() for t in prepared["text"].to_list())
        assert sorted(prepared["row"].to_list() + excluded["row"].to_list()) == list(range(len(rows)))
        ids = prepared["id"].to_list() + excluded["id"].to_list()
        assert len(set(ids)) == len(ids)  # derived ids are unique, duplicates of a text included
        for row, reason in zip(excluded["row"].to_list(), excluded["reason"].to_list()):
            a, b = rows[row]
            assert reason == ("null text" if a is None and b is None else "empty text")
        again = pl.read_parquet(prepare_corpus(CorpusSpec(str(path)), Path(tmp) / "w2").prepared_path)
        assert again.equals(prepared)  # deterministic
