"""Test-wide setup: Prefect, the caches and the encoder stay inside a temporary folder, offline."""

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="selectflow-tests-"))
# Before anything imports prefect: a bare `import prefect` creates ~/.prefect otherwise.
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ["SELECTFLOW_CACHE"] = str(_TMP / "cache")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import polars as pl  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "instructions.parquet"


@pytest.fixture(scope="session")
def bundled_slice(tmp_path_factory) -> Path:
    """A small real slice of the bundled corpus (10 rows from each of the 8 task families)."""
    df = pl.read_parquet(BUNDLED)
    parts = [g.sort("id").head(10) for _, g in df.group_by("source", maintain_order=True)]
    path = tmp_path_factory.mktemp("corpus") / "slice.parquet"
    pl.concat(parts).write_parquet(path)
    return path


@pytest.fixture(scope="session")
def encoder():
    from selectflow.tasks.embedding.encoder import load_encoder

    return load_encoder(None, "cpu")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(autouse=True)
def _log_handlers_outlive_captured_streams():
    """Prefect may (re)configure its console handlers while a test captures stderr (capsys); once that capture
    closes, a later in-process CLI run would log into a closed stream and fail. Point such handlers back at the
    live stderr after each test."""
    import logging
    import sys

    yield
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it would flush the closed stream
            console = getattr(handler, "console", None)  # Prefect's console handler writes through a rich Console
            if console is not None and getattr(getattr(console, "file", None), "closed", False):
                console.file = sys.stderr
