"""Embedding throughput of the pipeline against a bare SentenceTransformer.encode, and the cached re-run.

Same texts, same encoder, same process, alternating runs so both see the same machine state:
  bare:      model.encode(texts, batch_size, normalize_embeddings=True)
  pipeline:  embed_prepared() into an empty store (token counting, global length sort, shards, matrix)
  re-run:    prepare + embed + index again on unchanged input (everything comes from the cache)
Goals (issue #2): pipeline/bare throughput >= 0.95; re-run >= 20x faster than the first run.

    python bench/bench_embed.py [--rows 2400] [--repeats 2]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from bench.common import write_results  # noqa: E402
from selectflow.tasks.embedding.encode_units import embed_prepared  # noqa: E402
from selectflow.tasks.embedding.encoder import load_encoder  # noqa: E402
from selectflow.tasks.embedding.faiss_index import build_index, choose_params, save_index  # noqa: E402
from selectflow.tasks.io.corpus_reader import CorpusSpec, prepare_corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def stage_run(corpus: Path, work: Path, model, info, batch_size: int) -> tuple[float, int]:
    """prepare + embed + index, the embedding half of the pipeline; returns seconds and rows encoded."""
    t0 = time.perf_counter()
    prepared = prepare_corpus(CorpusSpec(str(corpus), id_column="id"), work / "corpus")
    result = embed_prepared(prepared.prepared_path, model, info, store_root=work / "store", matrix_path=work / "matrix.npy", batch_size=batch_size)
    emb = np.load(work / "matrix.npy", mmap_mode="r")
    params = choose_params(len(emb))
    save_index(build_index(emb, params), params, work / "index.faiss")
    return time.perf_counter() - t0, result.encoded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    df = pl.read_parquet(REPO / "data" / "instructions.parquet").head(args.rows)
    corpus = tmp / "corpus.parquet"
    df.write_parquet(corpus)
    texts = (df["prompt"] + "\n\n" + df["completion"]).to_list()
    model, info = load_encoder(None, "auto")
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up

    bare, pipe, first_runs, reruns = [], [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        bare.append(time.perf_counter() - t0)

        work = tmp / f"run{r}"
        t0 = time.perf_counter()
        prepared = prepare_corpus(CorpusSpec(str(corpus), id_column="id"), work / "prep")
        embed_prepared(prepared.prepared_path, model, info, store_root=work / "store-embed-only", matrix_path=work / "m.npy", batch_size=args.batch_size)
        pipe.append(time.perf_counter() - t0)

        seconds, encoded = stage_run(corpus, work / "full", model, info, args.batch_size)
        assert encoded == len(texts)
        first_runs.append(seconds)
        seconds, encoded = stage_run(corpus, work / "full", model, info, args.batch_size)
        assert encoded == 0
        reruns.append(seconds)
        shutil.rmtree(work)

    bare_tps = len(texts) / np.median(bare)
    pipe_tps = len(texts) / np.median(pipe)
    speedup = np.median(first_runs) / np.median(reruns)
    lines = [
        "# Embedding throughput: pipeline against bare `SentenceTransformer.encode`",
        "",
        f"{len(texts)} texts of the bundled corpus (prompt + completion), encoder {info.name} on {info.device}, "
        f"batch size {args.batch_size}, {args.repeats} alternating repeats (median).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| bare encode | {np.median(bare):.1f} s ({bare_tps:.1f} texts/s) |",
        f"| pipeline embed (prepare + token counts + sorted shards + matrix) | {np.median(pipe):.1f} s ({pipe_tps:.1f} texts/s) |",
        f"| **throughput ratio pipeline / bare** (goal ≥ 0.95) | **{pipe_tps / bare_tps:.3f}** |",
        f"| first run: prepare + embed + index | {np.median(first_runs):.1f} s |",
        f"| re-run on unchanged input: prepare + embed + index | {np.median(reruns):.2f} s |",
        f"| **re-run speed-up** (goal ≥ 20×) | **{speedup:.0f}×** |",
        "",
        f"All runs: bare {['%.1f' % b for b in bare]}, pipeline {['%.1f' % p for p in pipe]}, "
        f"first {['%.1f' % f for f in first_runs]}, re-run {['%.2f' % r for r in reruns]} seconds.",
    ]
    path = write_results("embed", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
