"""The pipeline flows: they wire tasks together and do nothing else.

embed_corpus:  corpus -> prepared rows -> embeddings (through the store) -> FAISS index
select_subset: embed_corpus, then sampler -> selected.parquet + manifest.json + report.json/html + artifacts
"""

import time

from prefect import flow, unmapped

from selectflow.flows.params import CorpusParams, EncoderParams, OutputParams, SelectionParams
from selectflow.tasks.corpus import prepare_corpus_task
from selectflow.flows.runners import RunnerParams, make_task_runner
from selectflow.tasks.embed import assemble_task, encode_unit_task, plan_embedding_task
from selectflow.tasks.import_embeddings import import_embeddings_task
from selectflow.tasks.index import build_index_task
from selectflow.tasks.io.hashing import config_hash
from selectflow.tasks.io.outputs import check_output_dir
from selectflow.tasks.io.workspace import Workspace
from selectflow.tasks.report import publish_artifacts_task, write_outputs_task
from selectflow.tasks.select import select_task


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[stage] = round(time.perf_counter() - t0, 3)


@flow(name="embed-corpus", log_prints=True)
def embed_corpus(
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    cache_dir: str | None = None,
    runner: RunnerParams = RunnerParams(),
) -> dict:
    """Read and validate the corpus, embed what the store does not have yet, and build the FAISS index."""
    cache = str(Workspace(cache_dir).root)
    timer = _Timer()
    prepared = timer.run("corpus", prepare_corpus_task, corpus.spec(), cache)
    if corpus.embeddings:
        embedded = timer.run("embed", import_embeddings_task, prepared, corpus.embeddings, corpus.normalize_embeddings, cache)
    else:
        embedded = timer.run("embed", _embed, prepared, encoder, cache, runner)
    index = timer.run("index", build_index_task, embedded, encoder.index, cache)
    return {"prepared": prepared, "embedded": embedded, "index": index, "timings": timer.seconds, "cache_dir": cache}


def _embed(prepared: dict, encoder: EncoderParams, cache: str, runner: RunnerParams) -> dict:
    plan = plan_embedding_task(prepared, encoder.model, encoder.device, cache, runner.unit_rows, encoder.backend)
    t0 = time.perf_counter()
    futures = encode_unit_task.map(unmapped(prepared), unmapped(plan), list(range(len(plan["units"]))),
                                   unmapped(encoder.model), unmapped(encoder.batch_size), unmapped(cache),
                                   unmapped(runner.shard_rows), unmapped(encoder.backend))
    encoded = [f.result() for f in futures]
    return assemble_task(prepared, plan, encoded, cache, time.perf_counter() - t0)


def run_embed_corpus(corpus: CorpusParams, encoder: EncoderParams, cache_dir: str | None, runner: RunnerParams) -> dict:
    """embed_corpus on the chosen task runner."""
    return embed_corpus.with_options(task_runner=make_task_runner(runner))(corpus, encoder, cache_dir, runner)


@flow(name="select-subset", log_prints=True)
def select_subset(
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    selection: SelectionParams = SelectionParams(),
    output: OutputParams = OutputParams(),
    runner: RunnerParams = RunnerParams(),
) -> dict:
    """The whole pipeline: embed the corpus, select a subset, write the Parquet, manifest and audit report."""
    config = {"corpus": corpus.model_dump(), "encoder": encoder.model_dump(),
              "selection": {"sampler": selection.sampler, "budget": selection.budget, "seed": selection.seed,
                            "options": selection.sampler_options()}}
    run_key = config_hash(config)
    out_dir = check_output_dir(output.out_dir, run_key, output.overwrite)
    embedded = run_embed_corpus(corpus, encoder, output.cache_dir, runner)
    cache, timer = embedded["cache_dir"], _Timer()
    timer.seconds.update(embedded["timings"])
    target = None
    if selection.target:
        target_corpus = CorpusParams(path=selection.target, text_columns=selection.target_text_columns or corpus.text_columns)
        target = timer.run("target", run_embed_corpus, target_corpus, encoder, output.cache_dir, runner)["embedded"]
    chosen = timer.run("select", select_task, embedded["prepared"], embedded["embedded"], embedded["index"],
                       selection.sampler, selection.sampler_options(), selection.budget, selection.seed, cache,
                       target, selection.feedback, selection.previous_runs)
    outputs = write_outputs_task(corpus.spec(), embedded["prepared"], embedded["embedded"], embedded["index"],
                                 chosen, str(out_dir), run_key, config, timer.seconds)
    publish_artifacts_task(outputs, embedded["prepared"], chosen)
    return {**outputs, "run_key": run_key, "prepared": embedded["prepared"], "embedded": embedded["embedded"],
            "index": embedded["index"], "selection": chosen}
