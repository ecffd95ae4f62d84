"""Regenerate tests/data/demo_embeddings.npz: the demo corpus's embeddings for the quality regression test.

    selectflow embed ../shared/data/instructions_demo.jsonl --text prompt completion --id id --export /tmp/demo_emb.parquet
    python tests/data/make_demo_fixture.py /tmp/demo_emb.parquet ../shared/data/instructions_demo.jsonl

Stores float16 embeddings (about 4 MiB compressed) with each row's id, source (task family) and template,
and the texts of the first rows, so a test can check the fixture still matches the default encoder.
Encoding the 8,800 texts takes minutes on 2 cores; the fixture keeps the test to seconds.
"""

import sys
from pathlib import Path

import numpy as np
import polars as pl

CHECK_ROWS = 8


def main(export: str, corpus: str) -> None:
    emb = pl.read_parquet(export)
    data = pl.read_ndjson(corpus)
    if len(emb) != len(data):
        raise SystemExit(f"{export}: {len(emb)} rows for the {len(data)} of {corpus}; every demo row is usable, so export all of them.")
    vectors = np.asarray(emb["embedding"].to_list(), dtype=np.float32)
    texts = [f"{p}\n\n{c}" for p, c in zip(data["prompt"][:CHECK_ROWS], data["completion"][:CHECK_ROWS])]
    out = Path(__file__).with_name("demo_embeddings.npz")
    np.savez_compressed(out, embeddings=vectors.astype(np.float16), ids=np.asarray(data["id"].to_list()),
                        source=np.asarray(data["source"].to_list()), template=np.asarray(data["template"].to_list()),
                        check_texts=np.asarray(texts))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(vectors)} rows)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
