"""Encoder backends side by side: PyTorch against ONNX Runtime (fp32) and its int8-quantized export.

One process, the same texts of the bundled corpus (prompt + completion, long texts), alternating runs so
every backend sees the same machine state; the median of the repeats is reported. Each backend runs through
the pipeline's own encoding path (`encode_texts`: one tokenization, batches by exact token count under the
CPU token budget), so the ratio is like for like; one more row runs PyTorch the way the pipeline did before
token batching (SentenceTransformer.encode, batches of 64 by character length), for the end-to-end gain. Then agreement: the
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
from selectflow.tasks.embedding.encode_units import CPU_BATCH_TOKENS, encode_texts  # noqa: E402
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
    ap.add_argument("--batch-tokens", type=int, default=CPU_BATCH_TOKENS)
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
    before = "torch, before token batching"
    runs = {b: (lambda m=encoders[b][0]: encode_texts(m, texts, args.batch_size, args.batch_tokens)[0]) for b in BACKENDS}
    runs[before] = lambda m=encoders["torch"][0]: m.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                                           convert_to_numpy=True)
    for run in runs.values():
        run()  # warm-up
    seconds = {b: [] for b in runs}
    vectors = {}
    for _ in range(args.repeats):
        for backend, run in runs.items():
            t0 = time.perf_counter()
            vectors[backend] = run()
            seconds[backend].append(time.perf_counter() - t0)
    load_after = load_average()

    tps = {b: len(texts) / float(np.median(s)) for b, s in seconds.items()}
    budget = max(1, round(0.05 * len(texts)))
    lines = [
        "# Encoder backends: PyTorch against ONNX Runtime (fp32 and int8)",
        "",
        f"{len(texts)} texts of the bundled corpus (prompt + completion; the default encoder truncates at 256 tokens), "
        f"all-MiniLM-L6-v2 on the CPU, at most {args.batch_size} texts and {args.batch_tokens} padded tokens per batch, "
        f"{args.repeats} alternating repeats (median), "
        f"torch {__import__('torch').__version__} ({__import__('torch').get_num_threads()} threads), "
        f"onnxruntime {__import__('onnxruntime').__version__}; 1/5/15-minute load average {load_before} before, "
        f"{load_after} after. The ratios come from interleaved runs in one process.",
        "",
        "## Throughput",
        "",
        "| backend | texts/s | speed-up vs torch | all runs (s) | first load incl. export (s) | later load (s) |",
        "|---|---|---|---|---|---|",
    ]
    for b in runs:
        lines.append(f"| {b} | {tps[b]:.1f} | {'**%.2f×**' % (tps[b] / tps['torch']) if b != 'torch' else '1.00×'} | "
                     f"{', '.join('%.1f' % s for s in seconds[b])} | {'%.1f' % load_seconds[b] if b in load_seconds else '-'} | "
                     f"{'%.1f' % reload_seconds[b] if b in reload_seconds else '-'} |")
    lines += ["", f"End to end: onnx-int8 with token batching encodes {tps['onnx-int8'] / tps[before]:.2f}× as fast as "
              f"PyTorch did before token batching; token batching alone gives PyTorch {tps['torch'] / tps[before]:.2f}×."]
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
    sizes = {b: sum(f.stat().st_size for f in (export_root).glob(f"*-{b}-v*/model.onnx")) / 2**20 for b in BACKENDS[1:]}
    lines += ["", 'Reading: fp32 ONNX gives the PyTorch vectors (to float precision), hence the same selections. int8 moves each vector a little (cosine about 0.99). kMQ draws rows at random inside each cluster, so any change to the clusters reshuffles which ids are drawn: its id overlap with int8 is no higher than between two torch seeds, while deterministic greedy DPP keeps about half of its picks. Use `onnx` where selections must match a torch run; `onnx-int8` where speed matters more than reproducing one.']
    lines += ["", "What the export does and why the 2× goal is not reached here (onnxruntime's own profiler, same texts): "
              "the graph traced from PyTorch's scaled_dot_product_attention spent about a fifth of its time in a NaN "
              "guard (IsNaN + Where over every attention matrix); tracing eager attention removes it and lets "
              "onnxruntime fuse attention, bias+GELU and residual+LayerNorm, and the int8 export then quantizes the "
              "fused attention too (1.33× before, on the old batching). What is left in int8: the int8 matrix products "
              "about half the time, attention about 30%, LayerNorm and GELU about 20%. This CPU has AVX2 but no "
              "AVX-512 VNNI, where int8 products are at best about twice fp32's, so with the rest in fp32 the "
              "like-for-like ratio stays near 1.5×. Also tried and dropped: onnxruntime's MatMulNBits 8-bit and 4-bit "
              "weights (slower: 0.75-1.0×), reduced-range and uint8 weights (no faster), no thread spinning (within noise)."]
    lines += ["", f"Export sizes: onnx {sizes['onnx']:.0f} MiB, onnx-int8 {sizes['onnx-int8']:.0f} MiB "
              "(made once per model and backend, under `<cache>/onnx/`)."]
    path = write_results("onnx", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    shutil.rmtree(export_root)


if __name__ == "__main__":
    main()
