"""The cache layout by URL (io/workspace.py): a remote cache gives URL strings, a local one Paths as before."""

from pathlib import Path

import pytest

from selectflow.tasks.io import storage
from selectflow.tasks.io.workspace import Workspace


def test_a_remote_cache_lays_out_urls(monkeypatch):
    pytest.importorskip("s3fs")
    ws = Workspace("s3://bucket/cache/")
    assert ws.remote and ws.root == "s3://bucket/cache"
    assert ws.corpus_dir("k") == "s3://bucket/cache/corpus/k"
    assert ws.store_root == "s3://bucket/cache/store"
    assert ws.matrix_path("k") == "s3://bucket/cache/matrix/k.npy"
    assert ws.index_path("k") == "s3://bucket/cache/index/k.faiss"
    assert ws.selection_dir("k") == "s3://bucket/cache/selection/k"
    assert ws.local_root.is_relative_to(storage.default_scratch())  # ONNX exports stay on this machine
    monkeypatch.setenv("SELECTFLOW_CACHE", "s3://bucket/env-cache")
    assert Workspace().root == "s3://bucket/env-cache"


@pytest.mark.parametrize("form", ["bare", "file"])
def test_a_local_cache_is_a_path_as_before(tmp_path, form):
    root = tmp_path / "cache"
    ws = Workspace(str(root) if form == "bare" else f"file://{root}")
    assert not ws.remote and ws.root == root and root.is_dir() and ws.local_root == root
    assert ws.matrix_path("k") == root / "matrix" / "k.npy"
    assert ws.corpus_dir("k") == root / "corpus" / "k" and ws.store_root == root / "store"
