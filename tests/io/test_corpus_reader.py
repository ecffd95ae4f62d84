import json

import polars as pl
import pytest

from selectflow.tasks.errors import InputError
from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus, read_original_rows

ROWS = [
    {"id": "a", "prompt": "What is 2+2?", "completion": "4", "q": 1.0, "tags": ["math"], "src": "s1"},
    {"id": "b", "prompt": "Name a colour.", "completion": None, "q": 2.0, "tags": ["art", "easy"], "src": "s1"},
    {"id": "c", "prompt": None, "completion": None, "q": 3.0, "tags": [], "src": "s2"},
    {"id": "d", "prompt": "   ", "completion": "", "q": 4.0, "tags": ["x"], "src": "s2"},
    {"id": "e", "prompt": "Translate 'hi'.", "completion": "salut", "q": 0.5, "tags": ["lang"], "src": "s2"},
]


def write(tmp_path, rows, fmt):
    df = pl.DataFrame(rows)
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "parquet":
        df.write_parquet(path)
    elif fmt == "jsonl":
        df.write_ndjson(path)
    else:
        df.drop("tags").write_csv(path)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_reads_each_format_and_counts_exclusions(tmp_path, fmt):
    path = write(tmp_path, ROWS, fmt)
    spec = CorpusSpec(str(path), text_columns=("prompt", "completion"), id_column="id", quality_column="q", group_column="src")
    pc = prepare_corpus(spec, tmp_path / "work")
    assert pc.n_read == 5 and pc.n_usable == 3
    # CSV cannot tell null from empty: both excluded, the total is what matters there.
    assert sum(pc.excluded.values()) == 2
    if fmt != "csv":
        assert pc.excluded == {"null text": 1, "empty text": 1}
    prepared = pl.read_parquet(pc.prepared_path)
    assert prepared["id"].to_list() == ["a", "b", "e"]
    assert prepared["text"].to_list()[0] == "What is 2+2?\n\n4"
    assert prepared["text"].to_list()[1] == "Name a colour."  # a null part is skipped, not written as "null"
    assert prepared["quality"].to_list() == [1.0, 2.0, 0.5]
    excluded = pl.read_parquet(pc.excluded_path)
    assert sorted(excluded["id"].to_list()) == ["c", "d"]


def test_missing_column_lists_existing_columns(tmp_path):
    path = write(tmp_path, ROWS, "parquet")
    with pytest.raises(InputError, match=r"'nope'.*columns are: id, prompt, completion, q, tags, src"):
        prepare_corpus(CorpusSpec(str(path), text_columns=("nope",)), tmp_path / "w")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match="missing.parquet: file not found"):
        prepare_corpus(CorpusSpec(str(tmp_path / "missing.parquet")), tmp_path / "w")


def test_duplicate_ids_name_an_example(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[4]["id"] = "a"
    path = write(tmp_path, rows, "parquet")
    with pytest.raises(InputError, match=r"id 'a' appears 2 times .*rows 0 and 4"):
        prepare_corpus(CorpusSpec(str(path), text_columns=("prompt", "completion"), id_column="id"), tmp_path / "w")


def test_derived_ids_are_stable_and_unique_for_duplicate_texts(tmp_path):
    rows = [{"text": "same"}, {"text": "same"}, {"text": "other"}]
    path = write(tmp_path, rows, "parquet")
    a = pl.read_parquet(prepare_corpus(CorpusSpec(str(path)), tmp_path / "w1").prepared_path)["id"].to_list()
    b = pl.read_parquet(prepare_corpus(CorpusSpec(str(path)), tmp_path / "w2").prepared_path)["id"].to_list()
    assert a == b and len(set(a)) == 3 and a[1] == a[0] + "-2"


def test_text_column_that_is_not_text(tmp_path):
    path = write(tmp_path, ROWS, "parquet")
    with pytest.raises(InputError, match="text column 'q' holds Float64, not text"):
        prepare_corpus(CorpusSpec(str(path), text_columns=("q",)), tmp_path / "w")


def test_broken_jsonl_line_is_reported(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "fine"}) + "\n{\"text\": oops}\n")
    with pytest.raises(InputError, match="line 3 is not valid JSON"):
        prepare_corpus(CorpusSpec(str(path)), tmp_path / "w")


def test_non_finite_quality_names_the_row(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["q"] = float("nan")
    path = write(tmp_path, rows, "parquet")
    with pytest.raises(InputError, match=r"row 1 \(id b\) has quality nan"):
        prepare_corpus(CorpusSpec(str(path), text_columns=("prompt", "completion"), id_column="id", quality_column="q"), tmp_path / "w")


def test_labels_from_string_or_list_columns(tmp_path):
    path = write(tmp_path, ROWS, "parquet")
    pc = prepare_corpus(CorpusSpec(str(path), text_columns=("prompt", "completion"), label_column="tags"), tmp_path / "w1")
    assert pl.read_parquet(pc.prepared_path)["labels"].to_list() == [["math"], ["art", "easy"], ["lang"]]
    pc = prepare_corpus(CorpusSpec(str(path), text_columns=("prompt", "completion"), label_column="src"), tmp_path / "w2")
    assert pl.read_parquet(pc.prepared_path)["labels"].to_list() == [["s1"], ["s1"], ["s2"]]


def test_all_texts_empty_is_an_error(tmp_path):
    path = write(tmp_path, [{"text": ""}, {"text": "  "}], "parquet")
    with pytest.raises(InputError, match="all 2 rows have null or empty text"):
        prepare_corpus(CorpusSpec(str(path)), tmp_path / "w")


def test_reserved_provenance_prefix_is_refused(tmp_path):
    path = write(tmp_path, [{"text": "a", "sf_rank": 1}], "parquet")
    with pytest.raises(InputError, match="reserved"):
        prepare_corpus(CorpusSpec(str(path)), tmp_path / "w")


def test_read_original_rows_keeps_the_order_given(tmp_path):
    path = write(tmp_path, ROWS, "parquet")
    df = read_original_rows(CorpusSpec(str(path)), [4, 0, 1])
    assert df["id"].to_list() == ["e", "a", "b"]
    assert df.columns == ["id", "prompt", "completion", "q", "tags", "src"]


def test_folder_and_glob_of_shards_read_as_one_corpus_with_source_files(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    pl.DataFrame({"id": ["a", "b"], "text": ["one", "two"]}).write_parquet(shards / "part-0.parquet")
    pl.DataFrame({"id": ["c"], "text": ["three"]}).write_parquet(shards / "part-1.parquet")
    for source in (str(shards), str(shards / "*.parquet")):
        pc = prepare_corpus(CorpusSpec(source, id_column="id"), tmp_path / f"w{len(source)}")
        prepared = pl.read_parquet(pc.prepared_path)
        assert prepared["id"].to_list() == ["a", "b", "c"] and prepared["row"].to_list() == [0, 1, 2]
        assert [p.rsplit("/", 1)[-1] for p in prepared["source_file"].to_list()] == ["part-0.parquet"] * 2 + ["part-1.parquet"]
        assert read_original_rows(CorpusSpec(source), [2, 0])["id"].to_list() == ["c", "a"]


def test_input_hash_changes_when_a_shard_is_added(tmp_path):
    from selectflow.tasks.io.corpus_reader import input_hash

    pl.DataFrame({"text": ["one"]}).write_parquet(tmp_path / "a.parquet")
    before = input_hash(tmp_path)
    pl.DataFrame({"text": ["two"]}).write_parquet(tmp_path / "b.parquet")
    assert input_hash(tmp_path) != before


def test_glob_matching_nothing_and_mixed_formats_are_errors(tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        prepare_corpus(CorpusSpec(str(tmp_path / "*.parquet")), tmp_path / "w")
    pl.DataFrame({"text": ["one"]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"text": ["two"]}).write_ndjson(tmp_path / "b.jsonl")
    with pytest.raises(InputError, match="mixes file types"):
        prepare_corpus(CorpusSpec(str(tmp_path)), tmp_path / "w")


def test_saved_hf_dataset_with_a_chat_column(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "hf"
    folder.mkdir()
    messages = pa.array([
        [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}],
        [],
    ])
    table = pa.table({"uid": ["x", "y", "z"], "messages": messages})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "dataset_info.json").write_text("{}")
    pc = prepare_corpus(CorpusSpec(str(folder), text_columns=("messages",), id_column="uid"), tmp_path / "w")
    prepared = pl.read_parquet(pc.prepared_path)
    assert prepared["text"].to_list() == ["user: Hi?\nassistant: Hello.", "system: Be brief.\nuser: 2+2\nassistant: 4"]
    assert pc.excluded == {"empty text": 1} and pc.format == "hf"  # an empty conversation has no text


def test_ragged_csv_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("id,text\n1,hello\n2,world,extra,fields\n3,ok\n")
    with pytest.raises(InputError, match=r"ragged.csv: cannot be read as CSV .*same number of fields"):
        prepare_corpus(CorpusSpec(str(path), id_column="id"), tmp_path / "w")


def test_corrupt_parquet_names_the_file(tmp_path):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"text": ["a"] * 100}).write_parquet(good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match=r"bad.parquet: cannot be read as PARQUET"):
        prepare_corpus(CorpusSpec(str(bad)), tmp_path / "w")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "corpus.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match="unsupported file type '.xlsx'"):
        prepare_corpus(CorpusSpec(str(path)), tmp_path / "w")
