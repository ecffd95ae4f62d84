"""Encoder backends side by side: PyTorch against ONNX Runtime (fp32) and its int8-quantized export.

One process, the same texts of the bundled corpus (prompt + completion, long texts), alternating runs so
every backend sees the same machine state; the median of the repeats is reported. Then agreement: the
mean cosine between the two embeddings of each row, and the overlap of the rows that kMQ (kmeans, the
default sampler) and greedy DPP select at 5% from each backend's embeddings, with the same seed.
Goal (issue #7): ONNX throughput >= 2x PyTorch on CPU.

    python bench/bench_onnx.py [--rows 800] [--repeats 2] [--batch-size 64]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from bench.common import write_results  # noqa: E402
from selectflow.tasks.embedding.encoder import load_encoder  # noqa: E402
from selectflow.tasks.samplers import SAMPLERS, SelectionInput  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("torch", "onnx", "onnx-int8")


def selected_ids(embeddings: np.ndarray, ids: np.ndarray, sampler: str, budget: int, seed: int) -> set:
    sel = SAMPLERS[sampler]().select(SelectionInput(embeddings=embeddings, ids=ids), budget, seed)
    return set(ids[sel.rows].tolist())


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    df = pl.read_parquet(REPO / "data" / "instructions.parquet").head(args.rows)
    texts = (df["prompt"] + "\n\n" + df["completion"]).to_list()
    ids = df["id"].to_numpy().astype(str)
    export_root = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    load_before = load_average()

    encoders, load_seconds = {}, {}
    for backend in BACKENDS:  # the first load of an ONNX backend includes its one-off export
        t0 = time.perf_counter()
        encoders[backend] = load_encoder(None, "cpu", backend, export_root)
        load_seconds[backend] = time.perf_counter() - t0
    reload_seconds = {}
    for backend in BACKENDS[1:]:
        t0 = time.perf_counter()
        load_encoder(None, "cpu", backend, export_root)
        reload_seconds[backend] = time.perf_counter() - t0
    for model, _ in encoders.values():
        model.encode(texts[:32], batch_size=args.batch_size)  # warm-up

    seconds = {b: [] for b in BACKENDS}
    vectors = {}
    for _ in range(args.repeats):
        for backend in BACKENDS:
            model, _ = encoders[backend]
            t0 = time.perf_counter()
            vectors[backend] = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            seconds[backend].append(time.perf_counter() - t0)
    load_after = load_average()

    tps = {b: len(texts) / float(np.median(s)) for b, s in seconds.items()}
    budget = max(1, round(0.05 * len(texts)))
    lines = [
        "# Encoder backends: PyTorch against ONNX Runtime (fp32 and int8)",
        "",
        f"{len(texts)} texts of the bundled corpus (prompt + completion; the default encoder truncates at 256 tokens), "
        f"all-MiniLM-L6-v2 on the CPU, batch size {args.batch_size}, {args.repeats} alternating repeats (median), "
        f"torch {__import__('torch').__version__} ({__import__('torch').get_num_threads()} threads), "
        f"onnxruntime {__import__('onnxruntime').__version__}. **Taken on a 2-core machine shared with other "
        f"engineers' jobs** (1/5/15-minute load average {load_before} before, {load_after} after), so absolute "
        "figures are pessimistic and noisy; the ratios come from interleaved runs.",
        "",
        "## Throughput",
        "",
        "| backend | texts/s | speed-up vs torch | all runs (s) | first load incl. export (s) | later load (s) |",
        "|---|---|---|---|---|---|",
    ]
    for b in BACKENDS:
        lines.append(f"| {b} | {tps[b]:.1f} | {'**%.2f×**' % (tps[b] / tps['torch']) if b != 'torch' else '1.00×'} | "
                     f"{', '.join('%.1f' % s for s in seconds[b])} | {load_seconds[b]:.1f} | "
                     f"{'%.1f' % reload_seconds[b] if b in reload_seconds else '-'} |")
    lines += [
        "",
        "## Agreement with PyTorch",
        "",
        f"Selections at 5% ({budget} of {len(texts)} rows), seed 0; overlap = shared selected ids / budget. "
        "The last row is the sampler's own seed sensitivity (torch, seed 0 against seed 1) for scale.",
        "",
        "| backend | mean cosine per row | min cosine | kmeans (kMQ) overlap | dpp (greedy) overlap |",
        "|---|---|---|---|---|",
    ]
    reference = {s: selected_ids(vectors["torch"], ids, s, budget, 0) for s in ("kmeans", "dpp")}
    for b in BACKENDS[1:]:
        cos = (vectors[b] * vectors["torch"]).sum(axis=1)
        overlaps = [len(selected_ids(vectors[b], ids, s, budget, 0) & reference[s]) / budget for s in ("kmeans", "dpp")]
        lines.append(f"| {b} | {cos.mean():.4f} | {cos.min():.4f} | {overlaps[0]:.0%} | {overlaps[1]:.0%} |")
    seed_overlap = [len(selected_ids(vectors["torch"], ids, s, budget, 1) & reference[s]) / budget for s in ("kmeans", "dpp")]
    lines.append(f"| torch, seed 1 vs seed 0 | 1 | 1 | {seed_overlap[0]:.0%} | {seed_overlap[1]:.0%} |")
    sizes = {b: sum(f.stat().st_size for f in (export_root).glob(f"*-{b}/model.onnx")) / 2**20 for b in BACKENDS[1:]}
    lines += ["", 'Reading: fp32 ONNX gives the PyTorch vectors (to float precision), hence the same selections. int8 moves each vector a little (cosine about 0.99). kMQ draws rows at random inside each cluster, so any change to the clusters reshuffles which ids are drawn: its id overlap with int8 is no higher than between two torch seeds, while deterministic greedy DPP keeps about half of its picks. Use `onnx` where selections must match a torch run; `onnx-int8` where speed matters more than reproducing one.']
    lines += ["", f"Export sizes: onnx {sizes['onnx']:.0f} MiB, onnx-int8 {sizes['onnx-int8']:.0f} MiB "
              "(made once per model and backend, under `<cache>/onnx/`)."]
    path = write_results("onnx", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    shutil.rmtree(export_root)


if __name__ == "__main__":
    main()
