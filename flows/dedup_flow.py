"""The dedup-corpus flow: read the corpus, embed it (through the store), drop semantic near-duplicates, write
kept.parquet and dropped.parquet. It wires tasks together and does nothing else."""

from prefect import flow

from selectflow.flows.params import CorpusParams, EncoderParams
from selectflow.flows.runners import RunnerParams, run_on
from selectflow.tasks.dedup import dedup_task, write_dedup_outputs_task
from selectflow.tasks.io.hashing import config_hash
from selectflow.tasks.io.outputs import check_output_dir
from selectflow.tasks.io.workspace import Workspace
from selectflow.tasks.samplers.semantic_dedup import check_threshold


@flow(name="dedup-corpus", log_prints=True)
def dedup_corpus(
    threshold: float,
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    seed: int = 0,
    out_dir: str = "selectflow-dedup",
    overwrite: bool = False,
    cache_dir: str | None = None,
    runner: RunnerParams = RunnerParams(),
) -> dict:
    """Semantic dedup of a whole corpus: the highest-quality row of each near-duplicate group is kept."""
    from selectflow.flows.pipeline import _Timer, prepare_and_embed

    threshold = check_threshold(threshold, "--threshold")
    config = {"corpus": corpus.model_dump(), "encoder": encoder.model_dump(), "dedup": {"threshold": threshold, "seed": seed}}
    run_key = config_hash(config)
    out = check_output_dir(out_dir, run_key, overwrite)
    cache = str(Workspace(cache_dir).root)
    timer = _Timer()
    prepared, embedded = prepare_and_embed(corpus, encoder, cache=cache, runner=runner, timer=timer)
    result = timer.run("dedup", dedup_task, prepared, embedded, threshold=threshold, seed=seed, cache_dir=cache)
    outputs = write_dedup_outputs_task(spec=corpus.spec(), prepared=prepared, embedded=embedded, dedup=result,
                                       out_dir=str(out), run_key=run_key, config=config, timings=timer.seconds)
    return {**outputs, "prepared": prepared, "embedded": embedded}


def run_dedup_corpus(threshold: float, *, corpus: CorpusParams, encoder: EncoderParams, seed: int, out_dir: str,
                     overwrite: bool, cache_dir: str | None, runner: RunnerParams) -> dict:
    """dedup_corpus on the chosen task runner."""
    return run_on(runner, dedup_corpus, threshold, corpus, encoder, seed, out_dir, overwrite, cache_dir, runner)
