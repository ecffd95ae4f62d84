"""Reading a corpus (Parquet, JSONL, CSV, a folder or glob of shards, a saved Hugging Face dataset)
and normalising it for the pipeline.

`prepare_corpus` scans the input lazily with polars and writes two Parquet files:
  prepared.parquet  the usable rows: row (position in the input), id, text, text_hash, quality, labels, group, source_file
  excluded.parquet  rows left out and why (null or empty text), so nothing is dropped silently
Large inputs stream through in batches: the full text column is never held in memory at once.

Several files (a folder, or a glob such as `shards/*.parquet`) are read as one corpus in sorted path
order; row positions run across them. A folder written by `datasets.Dataset.save_to_disk` (Arrow
files plus dataset_info.json) is read with polars, without the `datasets` library or any network.
A chat-style text column (a list of {role, content} messages) becomes "role: content" lines, one per
message in order, joined with newlines.
"""

import glob as globlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .atomic import atomic_path
from .hashing import file_hash, files_hash, text_digest
from .results import PreparedFiles

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".arrow": "hf"}
FILE_COLUMN = "__sf_file"
DEFAULT_TEXT_CANDIDATES = (("text",), ("prompt", "completion"), ("instruction", "output"), ("content",))
PROVENANCE_PREFIX = "sf_"
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class CorpusSpec:
    """Which file and which columns make the corpus."""

    path: str
    text_columns: tuple[str, ...] = ()
    id_column: str | None = None
    quality_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    text_separator: str = "\n\n"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["text_columns"] = list(self.text_columns)
        return d

    @classmethod
    def from_params(cls, spec: dict) -> "CorpusSpec":
        """From CorpusParams.spec() (a dict, text columns as a list)."""
        return cls(**{**spec, "text_columns": tuple(spec.get("text_columns") or ())})


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type {path.suffix!r}; use Parquet (.parquet), JSONL (.jsonl), CSV (.csv), "
            "a folder of them, or a dataset folder saved with datasets' save_to_disk."
        )
    return fmt


def input_location(path: str) -> str:
    """How the input is recorded (corpus.json, manifest): a pattern or URL as given, a local file resolved."""
    from . import storage

    return path if storage.is_remote(path) or any(ch in path for ch in "*?[") else str(Path(path).resolve())


def _remote_files(text: str) -> list[Path]:
    """Local copies (storage.local_copy, in the scratch folder) of the objects an object-store URL names: one
    object, a glob, or a prefix of .parquet/.jsonl/.csv objects. They are read like local files."""
    from . import storage

    if any(ch in text for ch in "*?["):
        urls = storage.glob(text)
        if not urls:
            raise InputError(f"{text}: the pattern matches no object; check the URL and the pattern.")
    elif storage.isdir(text):
        urls = [storage.join(text, n) for n in storage.listdir(text)
                if Path(n).suffix.lower() in FORMATS and not n.startswith(".")]
        if not urls:
            raise InputError(f"{text}: the prefix holds no .parquet, .jsonl or .csv object.")
    elif storage.exists(text):
        urls = [text]
    else:
        raise InputError(f"{storage.redact(text)}: no such object. Check the URL and the credentials in the environment.")
    return [storage.local_copy(u) for u in urls]


def resolve_files(path: str | Path) -> tuple[list[Path], str]:
    """The input files (sorted) and their one format, from a file, a folder, a glob or a saved HF dataset
    (or an object-store URL naming an object, a glob or a prefix: read from local copies)."""
    from . import storage

    text = str(path)
    if storage.is_remote(text):
        files = _remote_files(text)
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"{text}: the pattern matches no file; check the path and the pattern.")
    else:
        p = Path(text).expanduser()
        if not p.exists():
            raise InputError(f"{p}: file not found. Check the path, or run without INPUT to use the bundled corpus.")
        if p.is_dir():
            if (p / "dataset_info.json").exists() or (p / "state.json").exists():
                files = sorted(p.glob("*.arrow"))
                if not files:
                    raise InputError(f"{p}: a saved dataset folder without .arrow files; save it with save_to_disk().")
                return files, "hf"
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in FORMATS and not f.name.startswith("."))
            if not files:
                raise InputError(f"{p}: the folder holds no .parquet, .jsonl or .csv file.")
        else:
            files = [p]
    formats = {detect_format(f) for f in files}
    if len(formats) > 1:
        raise InputError(f"{text}: mixes file types ({', '.join(sorted(formats))}); keep one format per corpus.")
    return files, formats.pop()


def _scan_files(files: list[Path], fmt: str) -> pl.LazyFrame:
    names = [str(f) for f in files]
    if fmt == "parquet":
        return pl.scan_parquet(names, include_file_paths=FILE_COLUMN)
    if fmt == "jsonl":
        return pl.scan_ndjson(names, infer_schema_length=10_000, include_file_paths=FILE_COLUMN)
    if fmt == "csv":
        return pl.scan_csv(names, infer_schema_length=10_000, include_file_paths=FILE_COLUMN)
    # Saved HF datasets are Arrow IPC streams; read each (memory-mapped by pyarrow) and concatenate.
    frames = []
    for f in files:
        with pa.memory_map(str(f)) as source:
            table = pa.ipc.open_stream(source).read_all()
        frames.append(pl.from_arrow(table).with_columns(pl.lit(str(f)).alias(FILE_COLUMN)))
    return pl.concat(frames, how="vertical").lazy()


def scan(path: str | Path) -> tuple[pl.LazyFrame, str, list[str]]:
    """Open a corpus lazily and read its schema; errors name the file and the fix.

    The frame carries a FILE_COLUMN with each row's source file; `columns` lists the corpus's own columns.
    """
    files, fmt = resolve_files(path)
    try:
        lf = _scan_files(files, fmt)
        columns = [c for c in lf.collect_schema().names() if c != FILE_COLUMN]
    except InputError:
        raise
    except Exception as exc:  # polars raises several types for unreadable files
        raise InputError(_unreadable_message(_culprit(files, fmt), fmt, exc)) from None
    return lf, fmt, columns


def check_input_columns(path: str | Path, columns: list[str]) -> None:
    """Fail before any work when an input column named by an option does not exist."""
    _require_columns(path, columns, scan(path)[2])


def _require_columns(path: str | Path, columns: list[str], available: list[str]) -> None:
    for column in columns:
        if column not in available:
            raise InputError(f"{path}: column {column!r} does not exist; columns are: {', '.join(available)}.")


def read_input_columns(path: str | Path, columns: list[str], rows: pl.Series) -> dict[str, list]:
    """Values of input `columns` for the input rows `rows` (the prepared corpus's `row`), in that order.

    For columns the prepared corpus does not keep, e.g. a second label column for an evaluation.
    """
    lf, _, available = scan(path)
    _require_columns(path, columns, available)
    wanted = pl.DataFrame({"__row": rows.cast(pl.UInt32)})
    frame = (lf.with_row_index("__row").select(["__row", *dict.fromkeys(columns)]).collect()
             .join(wanted.with_row_index("__order"), on="__row", how="inner").sort("__order"))
    return {c: frame[c].to_list() for c in columns}


def _culprit(files: list[Path], fmt: str) -> Path:
    """The first file that cannot be read on its own (for the error message), else the first file."""
    if len(files) > 1:
        for f in files:
            try:
                _scan_files([f], fmt).collect_schema()
                if fmt == "jsonl" and _first_bad_json_line(f) is not None:
                    return f
            except Exception:
                return f
    return files[0]


def _unreadable_message(path: Path, fmt: str, exc: Exception) -> str:
    if fmt == "jsonl":
        line = _first_bad_json_line(path)
        if line is not None:
            return f"{path}: line {line} is not valid JSON; fix or remove that line."
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = {"parquet": "is it a complete Parquet file?", "csv": "check that every row has the same number of fields.",
            "jsonl": "each line must be one JSON object.", "hf": "is it a dataset folder written by save_to_disk()?"}[fmt]
    return f"{path}: cannot be read as {fmt.upper()} ({first[:200]}); {hint}"


def _first_bad_json_line(path: Path) -> int | None:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                return number
            if not isinstance(value, dict):
                return number
    return None


def resolve_text_columns(spec: CorpusSpec, columns: list[str]) -> tuple[str, ...]:
    if spec.text_columns:
        return tuple(spec.text_columns)
    for candidate in DEFAULT_TEXT_CANDIDATES:
        if all(c in columns for c in candidate):
            return candidate
    raise InputError(
        f"{spec.path}: no text column given and none of the usual ones found; "
        f"pass --text with one or more of the columns: {', '.join(columns)}."
    )


def _check_columns(spec: CorpusSpec, text_columns: tuple[str, ...], schema: dict) -> None:
    schema = {k: v for k, v in schema.items() if k != FILE_COLUMN}
    columns = list(schema)
    wanted = [("--text", c) for c in text_columns] + [
        (flag, c)
        for flag, c in (("--id", spec.id_column), ("--quality", spec.quality_column),
                        ("--labels", spec.label_column), ("--group", spec.group_column))
        if c is not None
    ]
    for flag, column in wanted:
        if column not in schema:
            raise InputError(
                f"{spec.path}: column {column!r} (from {flag}) does not exist; columns are: {', '.join(columns)}."
            )
    for column in text_columns:
        if schema[column] not in (pl.String, pl.Null) and not is_chat_column(schema[column]):
            raise InputError(
                f"{spec.path}: text column {column!r} holds {schema[column]}, not text; "
                f"choose a text column with --text (columns: {', '.join(columns)})."
            )
    if spec.quality_column is not None and not (schema[spec.quality_column].is_numeric()):
        raise InputError(
            f"{spec.path}: quality column {spec.quality_column!r} holds {schema[spec.quality_column]}, not numbers."
        )
    if spec.label_column is not None:
        dtype = schema[spec.label_column]
        ok = dtype == pl.String or (isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Null))
        if not ok:
            raise InputError(
                f"{spec.path}: label column {spec.label_column!r} holds {dtype}; it must be a string or a list of strings."
            )
    clash = [c for c in columns if c.startswith(PROVENANCE_PREFIX)]
    if clash:
        raise InputError(
            f"{spec.path}: column {clash[0]!r} uses the prefix {PROVENANCE_PREFIX!r} reserved for selectflow's "
            "provenance columns; rename it."
        )


def is_chat_column(dtype) -> bool:
    """A list of structs with `role` and `content` string fields, as chat corpora store conversations."""
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return False
    fields = {f.name: f.dtype for f in dtype.inner.fields}
    return fields.get("role") == pl.String and fields.get("content") == pl.String


def text_part(column: str, dtype) -> pl.Expr:
    """A text column as is; a chat column as 'role: content' lines in message order."""
    if not is_chat_column(dtype):
        return pl.col(column)
    lines = pl.col(column).list.eval(
        pl.concat_str([pl.element().struct.field("role"), pl.lit(": "), pl.element().struct.field("content")])
    )
    joined = lines.list.join("\n")
    return pl.when(pl.col(column).list.len() > 0).then(joined).otherwise(None)


def prepare_corpus(spec: CorpusSpec, workdir: str | Path) -> PreparedFiles:
    """Validate the input and write the normalised corpus under `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lf, fmt, columns = scan(spec.path)
    schema = dict(lf.collect_schema())
    text_columns = resolve_text_columns(spec, columns)
    _check_columns(spec, text_columns, schema)

    text_expr = pl.concat_str([text_part(c, schema[c]) for c in text_columns], separator=spec.text_separator, ignore_nulls=True)
    all_null = pl.all_horizontal([pl.col(c).is_null() for c in text_columns])
    exprs = [
        pl.col("__row").alias("row"),
        pl.when(all_null).then(None).otherwise(text_expr).alias("text"),
        (pl.col(spec.id_column).cast(pl.String) if spec.id_column else pl.lit(None, pl.String)).alias("id"),
        (pl.col(spec.quality_column).cast(pl.Float64) if spec.quality_column else pl.lit(None, pl.Float64)).alias("quality"),
    ]
    if spec.label_column:
        col = pl.col(spec.label_column)
        labels = col.cast(pl.List(pl.String)) if isinstance(schema[spec.label_column], pl.List) else pl.concat_list(col).list.drop_nulls()
        exprs.append(labels.alias("labels"))
    else:
        exprs.append(pl.lit(None, pl.List(pl.String)).alias("labels"))
    exprs.append((pl.col(spec.group_column).cast(pl.String) if spec.group_column else pl.lit(None, pl.String)).alias("group"))
    exprs.append(pl.col(FILE_COLUMN).alias("source_file"))

    staged = workdir / "staged.parquet"
    try:
        lf.with_row_index("__row").select(exprs).sink_parquet(staged)
    except Exception as exc:
        raise InputError(_unreadable_message(_culprit(resolve_files(spec.path)[0], fmt), fmt, exc)) from None

    prepared_path = workdir / "prepared.parquet"
    excluded_path = workdir / "excluded.parquet"
    stats = _normalise(spec, staged, prepared_path, excluded_path)
    staged.unlink()
    if stats["n_read"] == 0:
        raise InputError(f"{spec.path}: the corpus has no rows.")
    if stats["n_usable"] == 0:
        raise InputError(
            f"{spec.path}: all {stats['n_read']} rows have null or empty text in {', '.join(text_columns)}; "
            "choose other --text columns."
        )
    _check_unique_ids(spec, prepared_path)
    return PreparedFiles(
        input_path=input_location(spec.path),
        input_hash=input_hash(spec.path),
        format=fmt,
        columns=columns,
        text_columns=list(text_columns),
        prepared_path=str(prepared_path),
        excluded_path=str(excluded_path),
        has_quality=spec.quality_column is not None,
        has_labels=spec.label_column is not None,
        has_groups=spec.group_column is not None,
        **stats,
    )


PREPARED_SCHEMA = pa.schema([
    ("row", pa.uint32()), ("id", pa.string()), ("text", pa.large_string()), ("text_hash", pa.binary(16)),
    ("quality", pa.float64()), ("labels", pa.list_(pa.string())), ("group", pa.string()), ("source_file", pa.string()),
])


def input_hash(path: str | Path) -> str:
    """Content hash of the whole input (every file's name and bytes)."""
    files, _ = resolve_files(path)
    return file_hash(files[0]) if len(files) == 1 else files_hash(files)
EXCLUDED_SCHEMA = pa.schema([("row", pa.uint32()), ("id", pa.string()), ("reason", pa.string())])


def _normalise(spec: CorpusSpec, staged: Path, prepared_path: Path, excluded_path: Path) -> dict:
    """Second pass, in batches: text hashes, derived ids, exclusions and quality checks."""
    seen_derived: dict[bytes, int] = {}
    n_read = n_usable = empty_labels = 0
    excluded: dict[str, int] = {}
    source = pq.ParquetFile(staged)
    with atomic_path(prepared_path) as tmp_prep, atomic_path(excluded_path) as tmp_excl:
        with pq.ParquetWriter(tmp_prep, PREPARED_SCHEMA) as prep_writer, pq.ParquetWriter(tmp_excl, EXCLUDED_SCHEMA) as excl_writer:
            for batch in source.iter_batches(batch_size=BATCH_ROWS):
                b = batch.to_pydict()
                rows, texts, ids = b["row"], b["text"], b["id"]
                n_read += len(rows)
                keep = {k: [] for k in PREPARED_SCHEMA.names}
                ex_rows, ex_ids, ex_reasons = [], [], []
                for i, text in enumerate(texts):
                    digest = text_digest(text or "")
                    row_id = ids[i]
                    if spec.id_column and row_id is None:
                        raise InputError(
                            f"{spec.path}: row {rows[i]} has no value in id column {spec.id_column!r}; fill it or drop the row."
                        )
                    if row_id is None:
                        # A stable id from the content; exact duplicates get an occurrence suffix.
                        count = seen_derived.get(digest, 0)
                        seen_derived[digest] = count + 1
                        row_id = digest.hex()[:16] + (f"-{count + 1}" if count else "")
                    reason = "null text" if text is None else ("empty text" if not text.strip() else None)
                    if reason:
                        ex_rows.append(rows[i]); ex_ids.append(row_id); ex_reasons.append(reason)
                        excluded[reason] = excluded.get(reason, 0) + 1
                        continue
                    quality = b["quality"][i]
                    if spec.quality_column is not None and (quality is None or not np.isfinite(quality)):
                        raise InputError(
                            f"{spec.path}: row {rows[i]} (id {row_id}) has quality {quality!r} in column "
                            f"{spec.quality_column!r}; quality scores must be finite numbers: fill or drop that row."
                        )
                    labels = b["labels"][i]
                    if spec.label_column is not None and not labels:
                        empty_labels += 1
                    keep["row"].append(rows[i]); keep["id"].append(row_id); keep["text"].append(text)
                    keep["text_hash"].append(digest); keep["quality"].append(quality)
                    keep["labels"].append(labels or []); keep["group"].append(b["group"][i])
                    keep["source_file"].append(b["source_file"][i])
                n_usable += len(keep["row"])
                if keep["row"]:
                    prep_writer.write_table(pa.table(keep, schema=PREPARED_SCHEMA))
                if ex_rows:
                    excl_writer.write_table(pa.table({"row": ex_rows, "id": ex_ids, "reason": ex_reasons}, schema=EXCLUDED_SCHEMA))
    return {"n_read": n_read, "n_usable": n_usable, "excluded": excluded, "empty_label_rows": empty_labels}


def _check_unique_ids(spec: CorpusSpec, prepared_path: Path) -> None:
    dup = (
        pl.scan_parquet(prepared_path)
        .group_by("id")
        .agg(pl.col("row").sort().head(2).alias("rows"), pl.len().alias("n"))
        .filter(pl.col("n") > 1)
        .sort("id")
        .head(1)
        .collect()
    )
    if dup.height:
        r = dup.row(0, named=True)
        where = f"column {spec.id_column!r}" if spec.id_column else "the derived ids"
        raise InputError(
            f"{spec.path}: id {r['id']!r} appears {r['n']} times in {where} (rows {r['rows'][0]} and {r['rows'][1]}); "
            "ids must be unique: fix the id column or omit --id to derive ids from the content."
        )


def load_columns(prepared_path: str | Path, columns: list[str]) -> pl.DataFrame:
    """Read some columns of the prepared corpus (never the text unless asked)."""
    return pl.read_parquet(prepared_path, columns=columns)


def iter_texts(prepared_path: str | Path, batch_rows: int = BATCH_ROWS):
    """Yield (text_hash list, text list) batches from the prepared corpus."""
    pf = pq.ParquetFile(prepared_path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["text_hash", "text"]):
        yield batch.column("text_hash").to_pylist(), batch.column("text").to_pylist()


def read_original_rows(spec: CorpusSpec, rows: np.ndarray) -> pl.DataFrame:
    """The input's own columns for the given input row positions, in the order given."""
    lf, _, _ = scan(spec.path)
    order = pl.DataFrame({"__row": np.asarray(rows, dtype=np.uint32), "__order": np.arange(len(rows), dtype=np.int64)})
    out = lf.with_row_index("__row").join(order.lazy(), on="__row", how="inner").sort("__order").collect()
    return out.drop("__row", "__order", FILE_COLUMN)
