"""Same input, options and seed give the same selection with 1 and with 2 threads (BLAS, OpenMP, torch)."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import hashlib, json
import numpy as np
from selectflow.tasks.samplers import SAMPLERS, SelectionInput, get_sampler
from tests.samplers.conftest import clustered_embeddings
x = clustered_embeddings(3000, 48, 12, seed=4)
rng = np.random.default_rng(1)
data = SelectionInput(embeddings=x, quality=rng.uniform(0.5, 2.0, 3000),
                      labels=[(f"t{i % 9}",) for i in range(3000)])
out = {}
for name in sorted(SAMPLERS):
    sel = get_sampler(name).select(data, 150, seed=3)
    out[name] = hashlib.sha256(sel.rows.tobytes() + sel.weights.tobytes()).hexdigest()
print(json.dumps(out))
"""


def selections(threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_and_two_threads_select_the_same_rows():
    one, two = selections(1), selections(2)
    assert one == two, {k: (one[k] == two[k]) for k in one}
