"""Shared benchmark helpers: synthetic clustered embeddings and wall-time / peak-memory measurement.

Each measured call runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def clustered_embeddings(n: int, d: int = 384, n_clusters: int = 200, seed: int = 0, spread: float = 0.6) -> np.ndarray:
    """Unit-norm float32 points scattered around random unit centres, built in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = centres[rng.integers(0, n_clusters, size=m)]
        block += (spread / np.sqrt(d)) * rng.standard_normal((m, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def measure(module: str, function: str, kwargs: dict, timeout: int = 1200) -> dict:
    """Run `module.function(**kwargs)` in a fresh Python and return its result plus wall seconds and peak RSS.

    The function must return a JSON-serialisable dict; `wall_s` is measured inside the child around the
    call only (imports and data generation excluded when the function reports its own `wall_s`).
    """
    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(BENCH_DIR.parent)!r})\n"
        f"import importlib; fn = getattr(importlib.import_module({module!r}), {function!r})\n"
        f"kwargs = json.loads({json.dumps(json.dumps(kwargs))})\n"
        "t = time.perf_counter(); out = fn(**kwargs) or {}; out.setdefault('wall_s', time.perf_counter() - t)\n"
        "out['peak_rss_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print('__RESULT__' + json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env={**os.environ}
    )
    for line in proc.stdout.splitlines():
        if line.startswith("__RESULT__"):
            return json.loads(line[len("__RESULT__") :])
    raise RuntimeError(f"benchmark {module}.{function} failed:\n{proc.stderr[-3000:]}")


def write_results(name: str, markdown: str) -> Path:
    """Write a results file under bench/results/ (atomically) and return its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(markdown + f"\n\n_Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores._\n")
    tmp.replace(path)
    return path


def quality_section(specs: list[str], intro: list[str], demo_embeddings: str, bundled_embeddings: str) -> list[str]:
    """bench/tune_quality.py tables of `specs` against random on the demo and bundled corpora whose embeddings are cached."""
    corpora = [
        ("demo data (../shared/data/instructions_demo.jsonl, 8 families, 44 templates)", demo_embeddings, "../shared/data/instructions_demo.jsonl"),
        ("bundled corpus (data/instructions.parquet)", bundled_embeddings, "data/instructions.parquet"),
    ]
    lines = ["## Quality against random (bench/tune_quality.py)", "", *intro, ""]
    for title, emb, data in corpora:
        if not os.path.exists(emb):
            lines += [f"_{title}: embeddings {emb} not found, skipped._", ""]
            continue
        out = subprocess.run(
            [sys.executable, "bench/tune_quality.py", "--embeddings", emb, "--data", data, *specs],
            cwd=BENCH_DIR.parent, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
        ).stdout
        print(out, flush=True)
        lines += [f"### {title}", "", out.strip().replace("## budget", "#### budget"), ""]
    return lines
