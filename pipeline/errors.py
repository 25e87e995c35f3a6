"""The errors a user can cause, one kind per exit code; the CLI catches `PipelineError` once.

Every kind carries a one-paragraph message that says what is wrong and where (the job key, the
dataset folder and column, the shard), and the process exit code the CLI uses for it:

| kind               | exit | raised when                                                          |
|--------------------|------|----------------------------------------------------------------------|
| `JobError`         | 2    | a job file or an option is invalid (names the key, what is allowed)  |
| `InputError`       | 3    | an input dataset is missing, empty, or lacks a column a stage needs  |
| `ShardError`       | 4    | one shard's task still failed after the engine's retries             |
| `EngineError`      | 4    | a pass cannot go on: no worker alive, every worker paused            |
| `EmptyResultError` | 5    | a stage got or produced 0 rows where the job cannot go on            |

This module imports nothing of the pipeline, so stages, the engine and the dataset layer all
raise these without import loops.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C (128 + SIGINT)


class PipelineError(Exception):
    """Base of every error a user can cause; `exit_code` is what the CLI exits with."""

    exit_code = 1
    kind = "error"


class JobError(PipelineError, ValueError):
    """A job file or option value is invalid; the message names the key and what is allowed."""

    exit_code = 2
    kind = "bad job or options"


class InputError(PipelineError):
    """An input dataset is missing or unusable; the message names the folder (and column)."""

    exit_code = 3
    kind = "bad input"


class DatasetError(InputError):
    """A dataset folder is missing, empty or inconsistent; the message names the path."""


class ShardError(PipelineError, RuntimeError):
    """A per-shard task failed after its retries; ``label`` names the shard, ``detail`` is the
    original error (with the worker's traceback: the stage's own code failed, not the user)."""

    exit_code = 4
    kind = "shard failed"

    def __init__(self, label: str, detail: str):
        super().__init__(f"shard {label} failed:\n{detail}")
        self.label = label
        self.detail = detail

    def __reduce__(self):
        return (ShardError, (self.label, self.detail))


class EngineError(PipelineError, RuntimeError):
    """A pass could not go on: no worker alive, or every worker paused over its memory limit."""

    exit_code = 4
    kind = "shard failed"


class EmptyResultError(PipelineError):
    """A stage got or produced no rows where the rest of the job would be meaningless."""

    exit_code = 5
    kind = "empty result"


def describe_schema(schema: Mapping[str, Any]) -> str:
    """`name: dtype, ...` of a schema, for messages that say what was found."""
    return ", ".join(f"{name}: {dtype}" for name, dtype in schema.items())


def missing_column(stage: str, column: str, dataset: str | Path, schema: Mapping[str, Any],
                   hint: str = "") -> InputError:
    """The InputError for a column a stage needs that its input lacks."""
    found = describe_schema(schema) or "no columns"
    return InputError(f"{stage}: input dataset {dataset} has no column `{column}` (found {found})"
                      + (f"; {hint}" if hint else ""))


def require_columns(stage: str, dataset: str | Path, schema: Mapping[str, Any], columns: list[str],
                    hint: str = "") -> None:
    """Raise the InputError of the first of `columns` missing from `schema`."""
    for column in columns:
        if column not in schema:
            raise missing_column(stage, column, dataset, schema, hint)


def wrong_type(stage: str, column: str, dataset: str | Path, found: Any, expected: str) -> InputError:
    """The InputError for a column of the wrong type (`expected`: e.g. "a numeric type")."""
    return InputError(f"{stage}: column `{column}` of input dataset {dataset} is {found}, expected {expected}")
