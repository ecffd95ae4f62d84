"""Data for the partitioned-selection benchmark of issue #13: synthetic clustered embeddings as .npy shards.

Writes, under OUT:
  embeddings/emb-00000.npy, ...   (rows, 384) float16 unit-norm rows, SHARD_ROWS each (the last may be short)
  corpus.parquet                  one row per embedding row, in order: id ("r" + 10 digits), text, cluster
  manifest.json                   the settings, the shard list and row counts; written last (marks the data complete)

Rows scatter around `n_clusters` random unit centres (bench/common.py's recipe: centre + spread/sqrt(D)·noise,
renormalised, then rounded to float16). Shard i is drawn from SeedSequence([seed, i]), so shards can be
generated, or regenerated, one at a time; the data depends on (rows, shard_rows, seed, clusters, spread).
Every file is written to a temporary name and renamed; memory is one generation chunk (100k rows,
150 MB as float32) plus the ids of one shard, whatever N.

Disk: 768 bytes per row of embeddings (384 × float16) plus about 10 bytes per row of corpus.parquet
(zstd). 10M rows need about 7.7 GB: check `df -h` on OUT first (the script refuses when free space is
short). 1M rows (the single-process baseline) need 0.77 GB.

  .venv/bin/python bench/bench_partitions.py --rows 10000000 --shard-rows 500000 --out /tmp/scale-10m
  .venv/bin/python bench/bench_partitions.py --rows 20000 --shard-rows 5000 --out /tmp/scale-small
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 384
BYTES_PER_ROW = DIM * 2 + 10
GENERATION_CHUNK = 100_000


def centres(n_clusters: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2**32 - 1])  # apart from every shard's stream
    c = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def write_shard(path: Path, n: int, shard: int, *, seed: int, cents: np.ndarray, spread: float) -> np.ndarray:
    """One float16 shard of `n` clustered unit rows at `path` (atomic); returns the rows' clusters (int32)."""
    from selectflow.tasks.io.atomic import atomic_path

    rng = np.random.default_rng([seed, shard])
    dim = cents.shape[1]
    clusters = np.empty(n, dtype=np.int32)
    with atomic_path(path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        for start in range(0, n, GENERATION_CHUNK):
            m = min(GENERATION_CHUNK, n - start)
            c = rng.integers(0, len(cents), size=m)
            block = cents[c] + (spread / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + m] = block
            clusters[start : start + m] = c
        out.flush()
        del out
    return clusters


def generate(out_dir: str, *, rows: int, shard_rows: int, seed: int = 0, n_clusters: int = 1000,
             spread: float = 0.6, dim: int = DIM) -> dict:
    """Write the shards, corpus.parquet and manifest.json under `out_dir`; return the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selectflow.tasks.io.atomic import atomic_path, write_json

    if rows < 1 or shard_rows < 1:
        raise SystemExit("--rows and --shard-rows must be positive.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    need = rows * (dim * 2 + 10)
    free = shutil.disk_usage(out).free
    if need > 0.95 * free:
        raise SystemExit(f"{out}: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free; choose another --out or fewer --rows.")
    cents = centres(n_clusters, dim, seed)
    shards = []
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("cluster", pa.int32())])
    with atomic_path(out / "corpus.parquet", suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for i, start in enumerate(range(0, rows, shard_rows)):
                n = min(shard_rows, rows - start)
                name = f"embeddings/emb-{i:05d}.npy"
                clusters = write_shard(out / name, n, i, seed=seed, cents=cents, spread=spread)
                ids = [f"r{j:010d}" for j in range(start, start + n)]
                text = [f"synthetic row {j} of cluster {c}" for j, c in zip(range(start, start + n), clusters.tolist())]
                writer.write_table(pa.table({"id": ids, "text": text, "cluster": clusters}, schema=schema))
                shards.append({"path": name, "rows": n})
    manifest = {"rows": rows, "dim": dim, "dtype": "float16", "shard_rows": shard_rows, "seed": seed,
                "n_clusters": n_clusters, "spread": spread, "shards": shards, "corpus": "corpus.parquet",
                "bytes": int(sum((out / s["path"]).stat().st_size for s in shards) + (out / "corpus.parquet").stat().st_size)}
    write_json(out / "manifest.json", manifest)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (needs about 778 bytes per row free)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=0.6)
    args = ap.parse_args()
    m = generate(args.out, rows=args.rows, shard_rows=args.shard_rows, seed=args.seed, n_clusters=args.clusters,
                 spread=args.spread)
    print(f"{m['rows']} rows in {len(m['shards'])} shards, {m['bytes'] / 1e9:.2f} GB under {args.out}")


if __name__ == "__main__":
    main()
