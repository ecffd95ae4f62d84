"""What an evaluation shows and where: evaluation.md's tables, the README block, and the output folder.

`render_markdown` turns the result of `protocol.evaluate` into markdown; `update_readme` writes its tables
between two marker lines of a README (the only file written here); `check_evaluation_dir` checks the output
folder before any work, with the output-folder guard every command shares.
"""

import math
import re
from pathlib import Path

from ..errors import ConfigError
from ..io.atomic import write_text
from ..io.outputs import OutputKind, check_output_dir
from ..reporting.metrics import NEAR_DUPLICATE_SIMILARITY
from .config import BASELINE
from .protocol import HIGHER_IS_BETTER, METRICS, verdicts

SHORT_NAMES = {"macro_f1": "F1 ↑", "label_coverage": "labels ↑", "fine_label_coverage": "fine labels ↑",
               "test_distance": "cover ↓", "near_duplicates": "dup ↓"}
README_START = "<!-- eval-table:start -->"
README_END = "<!-- eval-table:end -->"

# --- evaluation.md ---------------------------------------------------------------------------------


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "n/a"
    return f"{stats['mean']:.3f}" if stats["std"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def render_markdown(result: dict, context: dict | None = None) -> str:
    """evaluation.md: a title, the conditions, then one table per budget (rows: selections; columns: metrics).

    In each column the best mean is bold; the last column says whether the selection beats random on every
    metric, or names the metrics where it does not. `context` may name the input, label columns and encoder.
    """
    context = context or {}
    cfg, rows = result["config"], result["rows"]
    metrics = result.get("metrics", [m for m in METRICS if m != "fine_label_coverage"])
    title = f"# Sampler evaluation: {context.get('input_name', 'corpus')}"
    labels_from = f"labels from `{context['label_column']}`" if context.get("label_column") else "labels"
    n_labels = len(result["labels"]["pool"])
    fine = ""
    if result.get("fine_labels") and cfg.get("fine_label_column"):
        fine = f" and {result['fine_labels']['pool']} fine labels from `{cfg['fine_label_column']}`"
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    sees = (f"Samplers run as `selectflow select` runs them and never see the labels they are graded on; rows named "
            f"'+ labels `{cfg['sampler_label_column']}`' give label-using samplers that column."
            if cfg.get("sampler_label_column") else
            "Samplers run as `selectflow select` runs them (no labels column), so they never see the labels they are graded on.")
    conditions = (
        f"{rows['labelled']:,} labelled rows, {labels_from} ({n_labels} labels){fine}; a test split of "
        f"{rows['test']:,} rows ({100 * cfg['test_fraction']:g}% of each {'fine ' if fine else ''}label, split seed {cfg['split_seed']}) "
        f"is held out and samplers select from the other {rows['pool']:,}. {sees} F1: macro-F1 of a logistic regression "
        f"(C = {cfg['classifier_c']:g}) on {context.get('encoder', 'the')} embeddings of the selected rows. cover: mean cosine "
        f"distance from each test row to its nearest selected row. dup: share of selected rows with a near-duplicate "
        f"(cosine > {NEAR_DUPLICATE_SIMILARITY}) in the selection. Each cell is the mean ± std over seeds {seeds} "
        f"(random: {max(cfg.get('random_draws', 1), len(set(cfg['seeds'])))} draws). "
        f"`random` is the baseline; `kmeans-medoids` and `facility-location` are coverage baselines. "
        f"\"vs random\" names the metrics where a selection's mean does not beat random's (✓: beats it on all)."
    )
    if rows["unlabelled_excluded"]:
        conditions += f" {rows['unlabelled_excluded']:,} rows without a label were left out."
    lines = [title, "", conditions]
    reference = result["reference_all_pool"]
    lost = verdicts(result)
    errors: list[str] = []
    header = "| selection | " + " | ".join(SHORT_NAMES[m] for m in metrics) + " | vs random |"
    rule = "|---|" + "---:|" * len(metrics) + "---|"
    for b in result["budgets"]:
        key = str(b["requested"])
        lines += ["", f"**{b['label']}**", "", header, rule]
        best = {}
        for metric in metrics:
            means = [result["summary"][s][key][metric] for s in result["samplers"]]
            means = [m["mean"] for m in means if m is not None]
            if means:
                best[metric] = max(means) if HIGHER_IS_BETTER[metric] else min(means)
        for name in result["samplers"]:
            cell = result["summary"][name][key]
            cells = []
            for metric in metrics:
                text = _cell(cell[metric])
                if cell[metric] is not None and math.isclose(cell[metric]["mean"], best[metric], rel_tol=0, abs_tol=5e-4):
                    text = f"**{text}**"
                cells.append(text)
            if name == BASELINE:
                verdict = "baseline"
            else:
                verdict = "✓" if not lost[name][key] else "✗ " + ", ".join(SHORT_NAMES[m].split()[0] for m in lost[name][key])
            if cell["errors"]:
                verdict += " ¹"
                errors += [f"{name} at {b['label']}: {e}" for e in cell["errors"]]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
        lines.append(f"| *whole pool ({rows['pool']:,} rows)* | " + " | ".join(f"*{reference[m]:.3f}*" for m in metrics) + " | |")
    if errors:
        lines += ["", "¹ some seeds failed: " + "; ".join(sorted(set(errors)))]
    return "\n".join(lines) + "\n"


# --- outputs and the README block -------------------------------------------------------------------

OUTPUT_FILES = ("evaluation.json", "evaluation.md")
# evaluation.json is written last and carries the run key; a folder holding any other file is refused.
EVALUATION_OUTPUT = OutputKind(noun="evaluation", record="evaluation.json", key_field="run_key", files=OUTPUT_FILES)


def check_evaluation_dir(out_dir: str | Path, run_key: str, overwrite: bool) -> Path:
    """Refuse to mix runs: a folder holding other files or another evaluation is only replaced with overwrite=True.

    A folder holding the evaluation of the same configuration (same run key) is refreshed in place.
    """
    return check_output_dir(out_dir, run_key, overwrite, EVALUATION_OUTPUT)


def readme_block(markdown: str) -> str:
    """The part of evaluation.md that goes into a README: everything after its title line."""
    lines = markdown.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def _marker_span(text: str, path: Path) -> tuple[int, int]:
    starts = [m.start() for m in re.finditer(re.escape(README_START), text)]
    ends = [m.start() for m in re.finditer(re.escape(README_END), text)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ConfigError(
            f"{path}: expected one line {README_START} followed by one line {README_END} marking where the "
            f"evaluation table goes; found {len(starts)} start and {len(ends)} end marker(s). Add or fix them."
        )
    return starts[0] + len(README_START), ends[0]


def check_readme(path: str | Path) -> Path:
    """Fail before any work when the README cannot take the table (missing file or markers)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: README file not found; pass an existing file with --readme.")
    _marker_span(path.read_text(encoding="utf-8"), path)
    return path


def update_readme(path: str | Path, markdown: str) -> Path:
    """Replace what lies between the eval-table markers of `path` with `markdown`'s table block (atomic write)."""
    path = check_readme(path)
    text = path.read_text(encoding="utf-8")
    start, end = _marker_span(text, path)
    return write_text(path, text[:start] + "\n" + readme_block(markdown) + "\n" + text[end:])
