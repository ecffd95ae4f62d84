"""Failure handling of the pipeline flows: mapped results collected in full, failed stages named, a resume artifact.

collect         the results of mapped task futures: waits for every one, then raises one error naming every
                failed unit (not only the first), so a run's report of what failed is complete
stage           tags an exception with the pipeline stage it left (corpus, embed, index, select, write-outputs, ...)
publish_failure an on_failure flow hook: a markdown artifact naming the failed stage, the error, and the command
                that resumes the run (the cache keeps every finished unit, selection and output, so a re-run
                does only what is left)
"""

import contextlib
import json
import shlex
from typing import Iterable, Iterator, Sequence

from selectflow.tasks.errors import SelectflowError

STAGES_ATTR = "selectflow_stages"
_resume_command: list[str] | None = None  # set by the CLI: the command line of this process's run


class UnitsFailed(RuntimeError):
    """Some mapped units of a stage failed (after their retries); the message names every one."""

    def __init__(self, task: str, failed: Sequence[tuple[str, BaseException | str]], total: int):
        self.task, self.failed, self.total = task, list(failed), total
        details = "; ".join(f"{label}: {_describe(error)}" for label, error in self.failed)
        super().__init__(f"{task} failed for {len(self.failed)} of {total}: {details}")


def _describe(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        text = str(error).splitlines()[0] if str(error) else ""
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return str(error)


def collect(futures: Sequence, task: str, labels: Iterable[str]) -> list:
    """The results of `futures` in order, once every one has finished; one UnitsFailed naming each failed unit.

    When every failure is a user error (SelectflowError: the same bad option fails each unit), the first is
    raised as it is, so the CLI still prints its one-line message.
    """
    from prefect.futures import wait

    wait(list(futures))
    failed, errors = [], []
    for label, future in zip(labels, futures):
        state = future.state
        if state.is_completed():
            continue
        try:
            error = future.result(raise_on_failure=False)
        except BaseException as exc:  # a crashed task may raise even so
            error = exc
        if not isinstance(error, BaseException):
            error = state.message or state.name
        failed.append((label, error))
        errors.append(error)
    if failed:
        if all(isinstance(e, SelectflowError) for e in errors):
            raise errors[0]
        raise UnitsFailed(task, failed, len(futures))
    return [future.result() for future in futures]


def mark_stage(exc: BaseException, stage: str) -> None:
    """Record that `exc` left `stage` (innermost stage first)."""
    try:
        stages = getattr(exc, STAGES_ATTR, None)
        if stages is None:
            stages = []
            setattr(exc, STAGES_ATTR, stages)
        if stage not in stages:
            stages.append(stage)
    except Exception:  # an exception type that refuses attributes: no stage, same error
        pass


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        mark_stage(exc, name)
        raise


def set_resume_command(argv: Sequence[str]) -> None:
    """The CLI records its command line: the command the failure artifact tells to run again."""
    global _resume_command
    _resume_command = ["selectflow", *argv]


def _error_of(state) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False, _sync=True)
    except BaseException as exc:
        return exc
    return result if isinstance(result, BaseException) else None


def _deployment_name(deployment_id) -> str:
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_deployment(deployment_id).name
    except Exception:
        return str(deployment_id)


def resume_instructions(flow, flow_run) -> str:
    """Markdown: how to resume this run."""
    if flow_run.deployment_id is not None:
        deployment = f"{flow.name}/{_deployment_name(flow_run.deployment_id)}"
        params = json.dumps(flow_run.parameters or {}, default=str, sort_keys=True)
        return ("Press **Retry** on this flow run in the UI (the same run and output folder), or start a new run "
                "of the deployment with the same parameters:\n\n"
                f"```\nprefect deployment run {shlex.quote(deployment)} --params {shlex.quote(params)}\n```\n")
    if _resume_command:
        return f"Run the same command again:\n\n```\n{shlex.join(_resume_command)}\n```\n"
    return f"Call `{flow.fn.__name__}` again with the same parameters.\n"


def failure_markdown(flow, flow_run, state) -> str:
    error = _error_of(state)
    stages = list(getattr(error, STAGES_ATTR, None) or [])
    where = f"`{stages[0]}`" + (f" (in {', '.join(f'`{s}`' for s in stages[1:])})" if len(stages) > 1 else "") \
        if stages else "before or between stages (see the logs)"
    message = _describe(error) if error is not None else (state.message or state.name)
    return (f"# {flow.name} failed\n\n"
            f"- flow run: `{flow_run.name}` (`{flow_run.id}`)\n"
            f"- failed stage: {where}\n"
            f"- error: {message}\n\n"
            "## Resume\n\n"
            "Finished work is cached (embedded units, selections, outputs), so a re-run does only what is left. "
            + resume_instructions(flow, flow_run))


def publish_failure(flow, flow_run, state) -> None:
    """on_failure hook of the pipeline flows: the `<flow>-failure` markdown artifact (see failure_markdown)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.logging import get_logger

    markdown = failure_markdown(flow, flow_run, state)
    get_logger("selectflow").info("%s", markdown)
    create_markdown_artifact(key=f"{flow.name}-failure", markdown=markdown,
                             description=f"Why {flow_run.name} failed, and how to resume it")
