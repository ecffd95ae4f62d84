"""Prefect task: read and validate the corpus, or reuse the prepared copy of identical input."""

import json

from prefect import task
from prefect.cache_policies import NONE

from .io import storage
from .io.atomic import write_json
from .io.corpus_reader import CorpusSpec, PreparedFiles, input_hash, input_location, prepare_corpus, scan
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
    ws = Workspace(cache_dir)
    folder = ws.corpus_dir(key)
    meta_path = storage.join(folder, "corpus.json") if ws.remote else folder / "corpus.json"
    reused = storage.exists(meta_path)
    if reused:
        files = PreparedFiles.from_dict(json.loads(storage.read_text(meta_path)))
        files.input_path = input_location(corpus_spec.path)
    elif ws.remote:  # prepared in a local staging folder, then published with corpus.json last
        with storage.staged_folder(folder, last=("corpus.json",)) as staging:
            files = prepare_corpus(corpus_spec, staging)
            files.prepared_path = storage.join(folder, "prepared.parquet")
            files.excluded_path = storage.join(folder, "excluded.parquet")
            write_json(staging / "corpus.json", files.to_dict())
    else:
        files = prepare_corpus(corpus_spec, folder)
        write_json(meta_path, files.to_dict())  # written last: marks the folder complete
    return PreparedCorpus(**files.to_dict(), key=key, reused=reused)
