"""The dry run behind `selectflow select --dry-run`: read the corpus into a temporary folder, count what
the embedding store already holds, and estimate each stage. Nothing is written to the cache or the output."""

import shutil
import tempfile

import numpy as np
import polars as pl

from ..embedding.encode_units import encoding_settings, read_digests
from ..embedding.encoder import resolve_device, resolve_model_path, weights_hash
from ..embedding.faiss_index import choose_params
from ..embedding.store import EmbeddingStore, store_key
from ..io.corpus_reader import CorpusSpec, prepare_corpus
from ..io.workspace import Workspace
from .estimate import Plan, make_plan
from ..samplers import get_sampler, resolve_budget


def dry_run(spec: dict, *, own_embeddings: str | None, model: str | None, device: str, index_kind: str,
            sampler: str, options: dict, budget: float, cache_dir: str | None) -> tuple[Plan, dict]:
    chosen = get_sampler(sampler, options)
    tmp = tempfile.mkdtemp(prefix="selectflow-plan-")
    try:
        prepared = prepare_corpus(CorpusSpec(**{**spec, "text_columns": tuple(spec.get("text_columns") or ())}), tmp)
        n = prepared.n_usable
        rows = resolve_budget(budget, n)
        mean_chars = float(pl.scan_parquet(prepared.prepared_path).select(pl.col("text").str.len_chars().mean()).collect().item())
        dim, to_encode = 384, n
        if not own_embeddings:
            import json

            path = resolve_model_path(model)
            config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
            dim = int(config.get("hidden_size", 384))
            max_len = 256
            sbert = path / "sentence_bert_config.json"
            if sbert.exists():
                max_len = int(json.loads(sbert.read_text()).get("max_seq_length", 256))
            from ..embedding.encoder import EncoderInfo

            info = EncoderInfo(name="", path=str(path), weights_hash=weights_hash(path), max_seq_length=max_len, dim=dim,
                               device=device)
            key = store_key(info.weights_hash, encoding_settings(info))
            store_root = Workspace(cache_dir).store_root
            digests = np.unique(read_digests(prepared.prepared_path))
            to_encode = len(digests)
            if (store_root / key).exists():
                to_encode = int(len(EmbeddingStore(store_root, key, dim).missing(digests)))
        plan = make_plan(n_rows=n, n_to_encode=to_encode, mean_chars=mean_chars, dim=dim, budget=rows, sampler=sampler,
                         options=chosen.options.model_dump(), device=resolve_device(device) if not own_embeddings else "cpu",
                         own_embeddings=bool(own_embeddings), index_kind=choose_params(n, index_kind).kind)
        facts = {"rows_read": prepared.n_read, "usable_rows": n, "excluded": prepared.excluded, "budget_rows": rows,
                 "texts_to_encode": to_encode, "mean_text_chars": round(mean_chars, 1)}
        return plan, facts
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
