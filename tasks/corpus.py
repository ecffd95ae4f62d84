"""Prefect task: read and validate the corpus, or reuse the prepared copy of identical input."""

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from .io.atomic import write_json
from .io.corpus_reader import CorpusSpec, PreparedCorpus, input_hash, prepare_corpus, scan
from .io.hashing import config_hash
from .io.workspace import Workspace


def corpus_key(spec: CorpusSpec, content_hash: str) -> str:
    settings = {k: v for k, v in spec.to_dict().items() if k != "path"}
    return config_hash({"input": content_hash, "spec": settings, "version": 2})


@task(name="prepare-corpus", cache_policy=NONE)
def prepare_corpus_task(spec: dict, cache_dir: str) -> dict:
    """Returns the PreparedCorpus as a dict (paths and counts), plus its cache key."""
    corpus_spec = CorpusSpec(**{**spec, "text_columns": tuple(spec.get("text_columns") or ())})
    scan(corpus_spec.path)  # clear errors for missing or unreadable files before hashing
    key = corpus_key(corpus_spec, input_hash(corpus_spec.path))
    folder = Workspace(cache_dir).corpus_dir(key)
    meta_path = folder / "corpus.json"
    if meta_path.exists():
        prepared = PreparedCorpus.from_dict(json.loads(meta_path.read_text()))
        prepared.input_path = corpus_spec.path if any(c in corpus_spec.path for c in "*?[") else str(Path(corpus_spec.path).resolve())
        reused = True
    else:
        prepared = prepare_corpus(corpus_spec, folder)
        write_json(meta_path, prepared.to_dict())  # written last: marks the folder complete
        reused = False
    return {**prepared.to_dict(), "key": key, "reused": reused}
