"""Reading the runs a comparison compares, and checking them and the output folder before any work.

A run directory is an output folder of `selectflow select`. Its manifest names the cache files behind the
run (prepared corpus, embedding matrix, selection arrays); `load_run` is the one place that reads it. Runs are
comparable only when they select from the same input file with the same text columns: then row positions
mean the same rows in every run.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ...errors import ConfigError, InputError
from ...io.hashing import config_hash
from ...io.outputs import OutputKind, check_output_dir
from ...io.results import Manifest

COMPARE_FILES = ("compare.html", "compare.json", "overlap.parquet")
# compare.json is written last and carries the comparison's key.
COMPARISON_OUTPUT = OutputKind(noun="comparison", record="compare.json", key_field="compare_key")


@dataclass(frozen=True)
class RunInfo:
    """What compare needs from one run's folder: small metadata and the paths of its cache files."""

    run_dir: str
    label: str
    run_key: str
    sampler: str
    seed: int
    budget_requested: float
    selected: int
    input_path: str
    input_hash: str
    text_columns: list[str]
    usable_rows: int
    encoder: str
    id_column: str | None
    group_column: str | None
    label_column: str | None
    prepared_corpus: str
    embedding_matrix: str
    selection_arrays: str


def load_run(run_dir: str | Path, number: int) -> RunInfo:
    """Read one run folder's manifest; a clear InputError when it is not a complete run or its cache is gone."""
    folder = Path(run_dir).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass output folders of `selectflow select` as RUN_DIRs.")
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise InputError(f"{folder}: has no manifest.json, so it is not a complete selectflow run; "
                         "pass an output folder of `selectflow select` (a run still being written has no manifest yet).")
    try:
        m = Manifest.read(manifest_path)
    except ValueError as exc:  # not JSON, or not a manifest selectflow writes (pydantic's ValidationError)
        raise InputError(f"{manifest_path}: not a selectflow manifest ({str(exc).splitlines()[0]}); "
                         "re-run `selectflow select` into that folder.") from None
    if m.cache_files is None:
        raise InputError(f"{manifest_path}: has no 'cache_files' entry (written by an older selectflow); "
                         "re-run the same `selectflow select` command to refresh the run.")
    if not (folder / "selected.parquet").exists():
        raise InputError(f"{folder}: selected.parquet is missing; re-run the same `selectflow select` command.")
    cache = m.cache_files
    for what, path in (("prepared corpus", cache.prepared_corpus), ("embedding matrix", cache.embedding_matrix),
                       ("selection arrays", cache.selection_arrays)):
        if not Path(path).exists():
            raise InputError(f"{folder}: its {what} {path} is missing (the cache was cleared or moved); "
                             "re-run the same `selectflow select` command (same --cache-dir) to rebuild it.")
    corpus = m.config["corpus"]
    sampler = m.config["selection"]["sampler"]
    return RunInfo(
        run_dir=str(folder), label=f"{number}: {sampler}", run_key=m.run_key, sampler=sampler, seed=int(m.seed),
        budget_requested=m.budget.requested, selected=int(m.rows.selected), input_path=m.input.path,
        input_hash=m.input.content_hash, text_columns=list(m.input.text_columns or corpus.get("text_columns") or []),
        usable_rows=m.rows.usable, encoder=m.encoder.name, id_column=corpus.get("id_column"),
        group_column=corpus.get("group_column"), label_column=corpus.get("label_column"),
        prepared_corpus=cache.prepared_corpus, embedding_matrix=cache.embedding_matrix,
        selection_arrays=cache.selection_arrays,
    )


def check_same_corpus(runs: list[RunInfo]) -> None:
    """Row positions mean the same rows only for the same input file and the same text columns."""
    ref = runs[0]
    for run in runs[1:]:
        if run.input_hash != ref.input_hash:
            raise InputError(
                f"{run.run_dir}: selects from a different corpus than {ref.run_dir} (input {run.input_path}, content hash "
                f"{run.input_hash[:12]}, against {ref.input_path}, {ref.input_hash[:12]}); compare only runs over the same input file."
            )
        if run.text_columns != ref.text_columns:
            raise InputError(
                f"{run.run_dir}: its text comes from columns {', '.join(run.text_columns)} but {ref.run_dir}'s from "
                f"{', '.join(ref.text_columns)}; rows are comparable only when the same --text columns make the text."
            )
        if run.usable_rows != ref.usable_rows:
            raise InputError(f"{run.run_dir}: has {run.usable_rows} usable rows but {ref.run_dir} has {ref.usable_rows}; "
                             "re-run both `selectflow select` commands with the same selectflow version.")


def check_compare_output(out_dir: str | Path, compare_key: str, overwrite: bool, run_dirs: list[str]) -> Path:
    """Like `selectflow select`: a folder holding something else is only written into with overwrite=True."""
    out = Path(out_dir).expanduser().resolve()
    if str(out) in run_dirs:
        raise ConfigError(f"--out {out} is one of the RUN_DIRs; choose another folder for the comparison.")
    return check_output_dir(out, compare_key, overwrite, COMPARISON_OUTPUT)


def prepare_comparison(run_dirs: list[str], out_dir: str, seed: int = 0, overwrite: bool = False) -> dict:
    """Check the runs and the output folder before any work; returns the plan (small and JSON-able)."""
    if len(run_dirs) < 2:
        raise ConfigError(f"compare needs at least two RUN_DIRs; got {len(run_dirs)}.")
    if int(seed) < 0:
        raise ConfigError(f"--seed {seed} must be a whole number ≥ 0.")
    resolved = [str(Path(d).expanduser().resolve()) for d in run_dirs]
    for i, d in enumerate(resolved):
        if d in resolved[:i]:
            raise ConfigError(f"RUN_DIR {d} is given twice; pass each run once.")
    runs = [load_run(d, i + 1) for i, d in enumerate(resolved)]
    check_same_corpus(runs)
    for run in runs:
        selected_positions(run)  # fail here, before any measuring, when a run's files disagree with its cache
    key = config_hash({"runs": [(r.run_dir, r.run_key) for r in runs], "seed": int(seed), "version": 1})
    out = check_compare_output(out_dir, key, overwrite, resolved)
    return {"runs": [asdict(r) for r in runs], "out_dir": str(out), "seed": int(seed), "compare_key": key}


def selected_positions(run: RunInfo) -> np.ndarray:
    """A run's selected rows (positions in the usable rows), in rank order, checked against its selected.parquet."""
    with np.load(run.selection_arrays, allow_pickle=False) as z:
        rows = np.asarray(z["rows"], dtype=np.int64)
    if len(rows) != run.selected or (len(rows) and not 0 <= rows.min() <= rows.max() < run.usable_rows):
        raise InputError(f"{run.run_dir}: the selection arrays {run.selection_arrays} do not match its manifest "
                         f"({len(rows)} rows against {run.selected}); re-run the same `selectflow select` command.")
    # The ids in selected.parquet (sf_id, else the id column) must be the ids the cache gives those rows.
    columns = pl.read_parquet_schema(Path(run.run_dir) / "selected.parquet")
    id_column = "sf_id" if "sf_id" in columns else run.id_column if run.id_column in columns else None
    if id_column:
        own_ids = pl.read_parquet(run.prepared_corpus, columns=["id"])["id"]
        picked = pl.read_parquet(Path(run.run_dir) / "selected.parquet", columns=[id_column])[id_column].cast(pl.String)
        if picked.to_list() != own_ids.gather(rows).to_list():
            raise InputError(f"{run.run_dir}: selected.parquet's {id_column!r} column does not match the cached selection "
                             f"{run.selection_arrays}; re-run the same `selectflow select` command.")
    return rows


def texts_at(prepared_path: str, positions: list[int]) -> list[str]:
    """The prepared texts at these row positions, in the order given."""
    if not positions:
        return []
    wanted = pl.DataFrame({"pos": np.asarray(positions, dtype=np.uint32), "order": np.arange(len(positions))})
    found = (pl.scan_parquet(prepared_path).select("text").with_row_index("pos")
             .join(wanted.lazy(), on="pos", how="inner").sort("order").collect())
    return found["text"].to_list()
