"""The `selectflow` command: one-off selections from a shell, running the same Prefect flows (no server needed)."""

import argparse
import os
import sys
import textwrap

from selectflow.flows.cli_options import (add_model_flags, add_params_flags, budget_type, model_values,
                                          sampler_option as _option)
from selectflow.flows.params import OutputParams

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    # The temporary local API can take longer than Prefect's 20 s default to start on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def _name_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r} names no sampler; pass e.g. kmeans,mig,dpp")
    return names


def _baseline_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _budget_list(value: str) -> list:
    return [budget_type(v.strip()) for v in value.split(",") if v.strip()] or [budget_type(value)]


def _seed_list(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds {value!r} must be whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds {value!r} must be non-negative whole numbers, e.g. 0,1,2")
    return seeds


def _sampler_help() -> str:
    from selectflow.tasks.samplers import SAMPLERS

    lines = ["samplers and their options (pass with -o NAME=VALUE):"]
    for name, cls in SAMPLERS.items():
        lines.append(f"  {name}: {cls.description}")
        for field_name, field in cls.Options.model_fields.items():
            default = field.get_default(call_default_factory=True)
            desc = textwrap.shorten(field.description or "", 110)
            lines.append(f"      {field_name} (default {default!r}): {desc}")
    return "\n".join(lines)


def _add_logging_args(p) -> None:
    p.add_argument("--verbose", action="store_true", help="show Prefect's logs")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors (implies --verbose)")


def _add_corpus_args(p: argparse.ArgumentParser) -> None:
    """embed, dedup and evaluate: the corpus, encoder and runner flags, and --cache-dir, from the parameter models."""
    add_params_flags(p, ["corpus", "encoder"])
    add_model_flags(p, OutputParams, title="cache", only=["cache_dir"])
    add_params_flags(p, ["runner"])
    _add_logging_args(p.add_argument_group("logging"))


def _add_select_args(p: argparse.ArgumentParser, sampler_help: str = "") -> None:
    """`select` and `serve`: one flag per field of every parameter model (serve's become deployment defaults)."""
    add_params_flags(p, extra_help={"sampler": sampler_help})
    _add_logging_args(p.add_argument_group("logging"))


def build_parser() -> argparse.ArgumentParser:
    from selectflow.tasks.samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="selectflow", description="Select the subset of a text corpus worth training on, with an audit report.")
    sub = parser.add_subparsers(dest="command", required=True)

    sel = sub.add_parser("select", help="embed, index and select; write selected.parquet, manifest.json and report.html",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_sampler_help())
    _add_select_args(sel, sampler_help="Several, comma-separated (e.g. kmeans,mig,dpp), run on one embedding pass "
                                       f"into OUT/<name>/ plus OUT/compare/. One of: {', '.join(SAMPLERS)}.")
    sel.add_argument_group("plan").add_argument(
        "--dry-run", action="store_true",
        help="print the plan (stages, what the embedding store already holds, estimated time and memory) and exit")

    emb = sub.add_parser("embed", help="embed and index a corpus into the cache (no selection)")
    _add_corpus_args(emb)
    emb.add_argument("--export", default=None, metavar="PATH.parquet", help="also write each usable row's id and embedding (a fixed-size float32 list column 'embedding') to this Parquet file")

    ev = sub.add_parser("evaluate", help="compare samplers with random selection and coverage baselines on a labelled corpus (macro-F1, label and fine-label coverage, test distance, near-duplicates)",
                        description="Hold out a test split stratified by --labels, select from the rest with each sampler at each "
                                    "budget and seed, run exactly as `selectflow select` runs it (samplers never see the labels they are graded on), "
                                    "train a logistic regression on each selection's embeddings and report macro-F1 on the test split, label "
                                    "and fine-label coverage, the mean distance from test rows to the selection and the near-duplicate rate, "
                                    "against random selection and coverage baselines (mean ± std over seeds). Writes evaluation.json and evaluation.md.")
    _add_corpus_args(ev)
    ev.add_argument("--out", default="selectflow-evaluation", metavar="DIR", help="output folder (default: ./selectflow-evaluation)")
    ev.add_argument("--samplers", type=_name_list, default=None, metavar="A,B,...", help="samplers to compare with random (default: every registered sampler except random)")
    ev.add_argument("--budgets", type=_budget_list, default=[0.01, 0.02, 0.05, 0.1], metavar="B,B,...", help="fractions below 1 of the pool or row counts (default: 0.01,0.02,0.05,0.1)")
    ev.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], metavar="S,S,...", help="seeds; every sampler runs once per seed and budget (default: 0,1,2)")
    ev.add_argument("--fine-labels", default=None, metavar="COL", help="a finer label column (e.g. template): its coverage is reported and the test split is stratified by it")
    ev.add_argument("--sampler-labels", default=None, metavar="COL", help="also run the samplers that use labels with this column as their labels (as select --labels COL would), as separate rows; by default samplers never see labels")
    ev.add_argument("--baselines", type=_baseline_list, default=["kmeans-medoids", "facility-location"], metavar="A,B", help="coverage baselines beside random: kmeans-medoids, facility-location (default: both; '' for none)")
    ev.add_argument("--random-draws", type=int, default=10, metavar="N", help="random selections per budget (the given seeds, then 0, 1, ...): random's mean is the reference every selection is held to (default: 10)")
    ev.add_argument("--test-fraction", type=float, default=0.2, help="share of each label (or fine label) held out as the test split (default: 0.2)")
    ev.add_argument("--split-seed", type=int, default=0, help="seed of the stratified split (default: 0)")
    ev.add_argument("-o", "--option", type=_option, action="append", default=[], metavar="SAMPLER.NAME=VALUE", help="a sampler option, e.g. kmeans.k=16 (repeatable)")
    ev.add_argument("--readme", default=None, metavar="PATH", help="also replace the block between <!-- eval-table:start --> and <!-- eval-table:end --> in this file with the tables")
    ev.add_argument("--overwrite", action="store_true", help="replace an output folder that holds another evaluation")

    dd = sub.add_parser("dedup", help="drop semantic near-duplicates; write kept.parquet and dropped.parquet",
                        description="Semantic dedup (SemDeDup inside FAISS k-means clusters): of every group of rows at cosine "
                                    "similarity >= --threshold, keep the highest-quality row (ties: a seeded key of the id). "
                                    "Writes kept.parquet (the kept rows), dropped.parquet (dropped_id, kept_id, similarity), "
                                    "dedup_report.json and manifest.json.")
    _add_corpus_args(dd)
    dd.add_argument("--threshold", required=True, metavar="T", help="cosine similarity in (0, 1] at which two rows are near-duplicates, e.g. 0.95 (1.0: exact duplicates only)")
    dd.add_argument("--out", default="selectflow-dedup", metavar="DIR", help="output folder (default: ./selectflow-dedup)")
    dd.add_argument("--seed", type=int, default=0, help="seed of the clustering and the tie-breaks (default: 0)")
    dd.add_argument("--overwrite", action="store_true", help="replace an output folder that holds another run")

    sub.add_parser("info", help="show the device, GPU FAISS and the default encoder")

    cmp = sub.add_parser("compare", help="compare several selections of one corpus in one report (compare.html)")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folders of `selectflow select` over the same input file (two or more)")
    cmp.add_argument("--out", default="selectflow-compare", metavar="DIR", help="output folder (default: ./selectflow-compare)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the random baselines, pool samples and analysis clusters (default: 0)")
    cmp.add_argument("--overwrite", action="store_true", help="replace an output folder that holds something else")
    cmp.add_argument("--verbose", action="store_true", help="show Prefect's logs")
    cmp.add_argument("--debug", action="store_true", help="show tracebacks on errors (implies --verbose)")

    srv = sub.add_parser("serve", help="serve the flows with cron schedules from this process (needs a Prefect server)",
                         description="Register the select-subset and embed-corpus deployments with the Prefect server at "
                                     "PREFECT_API_URL and run their scheduled and UI-triggered runs until Ctrl-C. The options "
                                     "below become the deployments' default parameters; the UI's Run form can change them.")
    _add_select_args(srv, sampler_help=f"One of: {', '.join(SAMPLERS)}.")
    srv = srv.add_argument_group("serve")
    srv.add_argument("--name", default="selectflow", help="deployment name (default: selectflow)")
    srv.add_argument("--cron", default="0 3 * * *", metavar="EXPR", help="select-subset schedule, five cron fields (default: '0 3 * * *'); '' for none")
    srv.add_argument("--embed-cron", default="", metavar="EXPR", help="embed-corpus schedule (default: none)")
    srv.add_argument("--timezone", default="UTC", metavar="TZ", help="time zone of the schedules (default: UTC)")
    srv.add_argument("--limit", type=int, default=1, metavar="N", help="runs at once (default: 1)")
    return parser


def _corpus(args):
    from selectflow.flows.params import CorpusParams

    return CorpusParams(**model_values(args, CorpusParams))


def _encoder(args):
    from selectflow.flows.params import EncoderParams

    return EncoderParams(**model_values(args, EncoderParams))


def _runner(args):
    from selectflow.flows.runners import RunnerParams

    return RunnerParams(**model_values(args, RunnerParams))


def _output(args) -> OutputParams:
    values = model_values(args, OutputParams)
    return OutputParams(**{**values, "formats": sorted({"parquet", *values["formats"]})})


def _sampler_names(args) -> list[str]:
    from selectflow.tasks.errors import ConfigError
    from selectflow.tasks.samplers import SAMPLERS

    names = [n.strip() for n in args.sampler.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--sampler {args.sampler!r} names no sampler; choose from: {', '.join(SAMPLERS)}.")
    for name in names:
        if name not in SAMPLERS:
            raise ConfigError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    return names


def _sampler_options(args, names: list[str]) -> dict[str, dict]:
    """The -o options of each sampler. One sampler gets them all (its Options model rejects unknown ones);
    several get the ones they have, and an option none of them has is an error."""
    from selectflow.tasks.errors import ConfigError
    from selectflow.tasks.samplers import SAMPLERS

    options = dict(args.option)
    if len(names) == 1:
        return {names[0]: options}
    unknown = [k for k in options if not any(k in SAMPLERS[n].Options.model_fields for n in names)]
    if unknown:
        raise ConfigError(f"Option {unknown[0]!r} belongs to none of the samplers {', '.join(names)}.")
    return {n: {k: v for k, v in options.items() if k in SAMPLERS[n].Options.model_fields} for n in names}


def _selection(args, names: list[str], options: dict[str, dict]):
    """SelectionParams from every selection flag: the same for select (one sampler or several) and serve."""
    from selectflow.flows.params import SelectionParams

    return SelectionParams(**{**model_values(args, SelectionParams), "sampler": names[0], "options": options,
                              "dedup": _dedup(args.dedup)})


def cmd_select(args) -> int:
    from selectflow.flows.pipeline import select_subset

    names = _sampler_names(args)
    options = _sampler_options(args, names)
    if args.dry_run:  # before the multi-sampler path, which would run the pipeline
        for name in names:
            _print_plan(args, options[name], name)
        return 0
    selection = _selection(args, names, options)
    if len(names) > 1:
        return _select_many(args, names, selection)
    result = select_subset(_corpus(args), _encoder(args), selection, _output(args), _runner(args))
    dc = result["diversity"]
    print(f"selected {result['selected']} of {result['prepared'].n_usable} usable rows with {selection.sampler_name} "
          f"(encoded {result['embedded'].encoded}, reused {result['embedded'].reused} from the cache)")
    print(f"  coverage distance {dc['selected']['coverage_distance']:.4f} vs random "
          f"{dc['random']['coverage_distance']['mean']:.4f} ± {dc['random']['coverage_distance']['std']:.4f} (lower is better)")
    print(f"  selected rows: {result['parquet']}")
    if result["selection"].dedup:
        d = result["selection"].dedup
        print(f"  dropped rows:  {result['out_dir']}/dropped.parquet ({d.rows_dropped} near-duplicates at "
              f"cosine similarity >= {d.threshold:g}, each beside the row kept for it)")
    print(f"  report:        {result['report']}")
    print(f"  manifest:      {result['manifest']}")
    return 0


def _select_many(args, names: list[str], selection) -> int:
    """Several samplers on one embedding pass, then one comparison report. -o options go to every sampler that has them."""
    from selectflow.flows.params import sampler_choice
    from selectflow.flows.pipeline import select_many

    options = _sampler_options(args, names)
    choices = [sampler_choice({**options[name], "name": name}) for name in names]
    result = select_many(choices, _corpus(args), _encoder(args), selection, _output(args), _runner(args))
    for run in result["runs"]:
        dc = run["diversity"]
        print(f"{run['selection'].sampler:>12}: {run['selected']} rows, coverage distance "
              f"{dc['selected']['coverage_distance']:.4f} (random {dc['random']['coverage_distance']['mean']:.4f}) -> {run['out_dir']}")
    if result["comparison"]:
        print(f"  comparison: {result['comparison'].get('report', result['comparison'])}")
    return 0


def _print_plan(args, options: dict, sampler: str) -> int:
    from selectflow.tasks.planning.dry_run import dry_run

    corpus = _corpus(args)
    plan, facts = dry_run(corpus.spec(), own_embeddings=corpus.embeddings, model=args.model, device=args.device,
                          index_kind=args.index, sampler=sampler, options=options, budget=args.budget,
                          cache_dir=args.cache_dir)
    excluded = ", ".join(f"{n} {reason}" for reason, n in facts["excluded"].items()) or "none"
    print(f"plan for {corpus.path}: {facts['rows_read']:,} rows read, {facts['usable_rows']:,} usable "
          f"(excluded: {excluded}), select {facts['budget_rows']:,} with {sampler}")
    print(plan.render())
    print("nothing was run (dry run)")
    return 0


def _dedup(value, flag: str = "--dedup"):
    """A --dedup/--threshold value as a float in (0, 1] (None stays None), or a one-line ConfigError."""
    from selectflow.tasks.samplers.semantic_dedup import check_threshold

    return None if value is None else check_threshold(value, flag)


def cmd_dedup(args) -> int:
    from selectflow.flows.dedup_flow import run_dedup_corpus

    threshold = _dedup(args.threshold, "--threshold")  # before any work
    result = run_dedup_corpus(threshold, corpus=_corpus(args), encoder=_encoder(args), seed=args.seed, out_dir=args.out,
                              overwrite=args.overwrite, cache_dir=args.cache_dir, runner=_runner(args))
    print(f"kept {result['kept']} of {result['rows']} usable rows; dropped {result['dropped']} near-duplicates "
          f"(cosine similarity >= {threshold:g}, {result['diagnostics']['n_clusters']} clusters)")
    print(f"  kept rows:    {result['kept_parquet']}")
    print(f"  dropped rows: {result['dropped_parquet']}")
    print(f"  manifest:     {result['manifest']}")
    return 0


def cmd_embed(args) -> int:
    from selectflow.flows.pipeline import run_embed_corpus
    from selectflow.tasks.errors import ConfigError

    if args.export and not args.export.lower().endswith(".parquet"):
        raise ConfigError(f"--export {args.export}: the embeddings file must end in .parquet.")
    corpus = _corpus(args)
    result = run_embed_corpus(corpus, _encoder(args), args.cache_dir, _runner(args))
    e = result.embeddings
    print(f"embedded {e.n_rows} rows ({e.encoded} encoded, {e.reused} reused, {e.truncated} truncated at "
          f"{e.max_seq_length} tokens) -> {e.matrix_path}")
    print(f"index ({result.index.kind}): {result.index.path}")
    if args.export:
        from selectflow.tasks.embedding.encode_units import export_embeddings

        n = export_embeddings(result.prepared.prepared_path, e.matrix_path, args.export,
                              id_column=corpus.id_column or "id",
                              metadata={"encoder": e.encoder, "input": result.prepared.input_path})
        print(f"exported {n} ids and embeddings -> {args.export}")
    return 0


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from selectflow.flows.evaluate_flow import evaluate_samplers
    from selectflow.tasks.errors import ConfigError
    from selectflow.tasks.evaluation import EvaluationConfig, check_readme, check_request, update_readme

    if args.kind != "thread":
        raise ConfigError("selectflow evaluate embeds with the thread runner; run `selectflow embed --runner ...` "
                          "first (the evaluation then reuses the cached embeddings), without --runner here.")
    options: dict[str, dict] = {}
    for key, value in args.option:
        sampler, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"evaluate option {key!r} must name its sampler, e.g. -o kmeans.k=16.")
        options.setdefault(sampler, {})[name] = value
    from selectflow.tasks.evaluation import BASELINES

    for name in args.baselines:
        if name not in BASELINES:
            raise ConfigError(f"Unknown baseline {name!r} in --baselines; choose from: {', '.join(BASELINES)} ('' for none).")
    fields = {"budgets": args.budgets, "seeds": args.seeds, "test_fraction": args.test_fraction,
              "split_seed": args.split_seed, "sampler_options": options, "baselines": args.baselines,
              "fine_label_column": args.fine_labels, "sampler_label_column": args.sampler_labels,
              "random_draws": args.random_draws}
    if args.samplers:
        fields["samplers"] = args.samplers
    evaluation = EvaluationConfig(**fields)
    corpus = _corpus(args)
    # Fail before any embedding or selection work when the request or the README cannot work.
    check_request(evaluation, corpus.label_column)
    if args.readme:
        check_readme(args.readme)
    result = evaluate_samplers(corpus, _encoder(args), evaluation, out_dir=args.out, overwrite=args.overwrite,
                               cache_dir=args.cache_dir)
    markdown = Path(result["markdown"]).read_text(encoding="utf-8")
    print(markdown)
    e = result["embedded"]
    print(f"{result['runs']} runs in {result['seconds']:.0f}s on {e.n_rows} embedded rows "
          f"(encoded {e.encoded}, reused {e.reused} from the cache)"
          + (f", {result['failed_runs']} failed (see the footnote)" if result["failed_runs"] else ""))
    print(f"  tables:  {result['markdown']}")
    print(f"  details: {result['json']}")
    if args.readme:
        print(f"  updated: {update_readme(args.readme, markdown)}")
    return 0


def cmd_serve(args) -> int:
    from prefect.settings import PREFECT_API_URL

    from selectflow.flows.serve import serve_flows
    from selectflow.tasks.errors import ConfigError

    if not PREFECT_API_URL.value():
        # Without a server, Prefect would start a temporary one that dies with this process and has no UI.
        raise ConfigError("selectflow serve needs a Prefect server: run `prefect server start` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (see infra/server.md).")
    names = _sampler_names(args)
    if len(names) > 1:
        raise ConfigError(f"--sampler {args.sampler}: a served deployment runs one sampler; serve one per name (--name).")
    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be at least 1.")
    selection = _selection(args, names, _sampler_options(args, names))
    serve_flows(name=args.name, select_cron=args.cron or None, embed_cron=args.embed_cron or None,
                timezone=args.timezone, corpus=_corpus(args), encoder=_encoder(args), selection=selection,
                output=_output(args), runner=_runner(args), limit=args.limit)
    return 0


def cmd_compare(args) -> int:
    from selectflow.flows.compare_flow import compare_runs

    result = compare_runs(args.run_dirs, out_dir=args.out, seed=args.seed, overwrite=args.overwrite)
    names = result["names"]
    print(f"compared {len(names)} selections; Jaccard similarity of their rows:")
    for i, name in enumerate(names):
        print(f"  {name:<20} " + " ".join(f"{v:6.3f}" for v in result["jaccard"][i]))
    for name, only, cov in zip(names, result["only_this_run"], result["coverage_distance"]):
        print(f"  {name}: {only} rows no other run picked, coverage distance {cov:.4f}")
    print(f"  report:  {result['report']}")
    print(f"  overlap: {result['overlap_parquet']}")
    return 0


def cmd_info(args) -> int:
    import faiss
    import torch

    from selectflow.tasks.embedding.encoder import default_model_path, resolve_device, weights_hash

    path = default_model_path()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    print(f"device:          {resolve_device('auto')} (torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})")
    print(f"faiss:           {faiss.__version__}, GPU FAISS: {'yes, ' + str(gpus) + ' GPU(s)' if gpus else 'no'}")
    print(f"default encoder: all-MiniLM-L6-v2 at {path} (weights {weights_hash(path)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    verbose = getattr(args, "verbose", False) or getattr(args, "debug", False)
    if not verbose and args.command != "serve":  # served runs send their logs to the server's UI
        # Prefect logs task failures with tracebacks; the CLI reports errors as one line instead.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        # Prefect's background services log under their class names, outside the `prefect` logger: a run that
        # fails (its failure artifact still sending events at exit) would otherwise add a second line to the error.
        import logging

        for service in ("EventsWorker", "APILogWorker"):
            logging.getLogger(service).setLevel(logging.CRITICAL)
        # A local Dask cluster logs its start, every worker and its shutdown at INFO (and a closed-comm traceback
        # at exit); its worker processes read the level from the environment.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    from selectflow.flows.failures import set_resume_command
    from selectflow.tasks.errors import SelectflowError

    set_resume_command(sys.argv[1:] if argv is None else argv)  # a failed run's artifact tells to run it again
    handler = {"select": cmd_select, "embed": cmd_embed, "info": cmd_info, "serve": cmd_serve,
               "evaluate": cmd_evaluate, "compare": cmd_compare, "dedup": cmd_dedup}[args.command]
    try:
        return handler(args)
    except SelectflowError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"selectflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selectflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # pydantic validation and anything unexpected: one line unless --debug
        if getattr(args, "debug", False):
            raise
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            print(f"selectflow: error: invalid value for {where}: {first['msg']}", file=sys.stderr)
            return 2
        print(f"selectflow: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
