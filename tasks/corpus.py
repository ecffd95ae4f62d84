"""Prefect task: read and validate the corpus, or reuse the prepared copy of identical input."""

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from .io.atomic import write_json
from .io.corpus_reader import CorpusSpec, PreparedFiles, input_hash, prepare_corpus, scan
from .io.hashing import config_hash
from .io.results import PreparedCorpus
from .io.workspace import Workspace


def corpus_key(spec: CorpusSpec, content_hash: str) -> str:
    settings = {k: v for k, v in spec.to_dict().items() if k != "path"}
    return config_hash({"input": content_hash, "spec": settings, "version": 2})


@task(name="prepare-corpus", cache_policy=NONE)
def prepare_corpus_task(spec: dict, cache_dir: str) -> PreparedCorpus:
    """The prepared corpus (paths and counts) under its cache key: read from the cache, or prepared now."""
    corpus_spec = CorpusSpec.from_params(spec)
    scan(corpus_spec.path)  # clear errors for missing or unreadable files before hashing
    key = corpus_key(corpus_spec, input_hash(corpus_spec.path))
    folder = Workspace(cache_dir).corpus_dir(key)
    meta_path = folder / "corpus.json"
    reused = meta_path.exists()
    if reused:
        files = PreparedFiles.from_dict(json.loads(meta_path.read_text()))
        files.input_path = corpus_spec.path if any(c in corpus_spec.path for c in "*?[") else str(Path(corpus_spec.path).resolve())
    else:
        files = prepare_corpus(corpus_spec, folder)
        write_json(meta_path, files.to_dict())  # written last: marks the folder complete
    return PreparedCorpus(**files.to_dict(), key=key, reused=reused)
