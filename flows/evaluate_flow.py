"""The evaluate-samplers flow: embed the labelled corpus, then compare samplers with random selection.

evaluate_samplers: embed_corpus -> evaluate task -> evaluation.json + evaluation.md + a markdown artifact
"""

from typing import Optional

from prefect import flow

from selectflow.flows.params import CorpusParams, EncoderParams
from selectflow.flows.pipeline import embed_corpus
from selectflow.tasks.evaluate import evaluate_task
from selectflow.tasks.evaluation import EvaluationConfig, check_evaluation_dir, check_request
from selectflow.tasks.io.corpus_reader import check_input_columns
from selectflow.tasks.io.hashing import config_hash


@flow(name="evaluate-samplers", log_prints=True)
def evaluate_samplers(
    corpus: CorpusParams = CorpusParams(),
    encoder: EncoderParams = EncoderParams(),
    evaluation: EvaluationConfig = EvaluationConfig(),
    *,
    out_dir: str = "selectflow-evaluation",
    overwrite: bool = False,
    cache_dir: Optional[str] = None,
) -> dict:
    """Hold out a stratified test split, select from the rest with each sampler, budget and seed, and score each selection."""
    check_request(evaluation, corpus.label_column)
    extra = [c for c in (evaluation.fine_label_column, evaluation.sampler_label_column) if c]
    if extra:
        check_input_columns(corpus.path, extra)
    run_key = config_hash({"corpus": corpus.model_dump(), "encoder": encoder.model_dump(),
                           "evaluation": evaluation.model_dump()})
    out = check_evaluation_dir(out_dir, run_key, overwrite)
    embedded = embed_corpus(corpus, encoder, cache_dir)
    result = evaluate_task(embedded.prepared, embedded.embeddings, config=evaluation.model_dump(), out_dir=str(out),
                           run_key=run_key, label_column=corpus.label_column)
    return {**result, "run_key": run_key, "prepared": embedded.prepared, "embedded": embedded.embeddings}
