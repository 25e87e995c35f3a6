"""A user's own filters and stages, and the steps of a job that run them.

A filter is a function returning a Polars expression that is true for the rows to keep, marked
with its drop reason::

    @pipeline.filter(reason="code_block")
    def no_code_blocks(max_fences: int = 0) -> pl.Expr:
        return pl.col("text").str.count_matches("```") <= max_fences

`FilterStage` runs it like any stage: shard by shard on the engine, resumable, the dropped rows
in rejected/<folder>/ with `reason`, counted in the result and the report. A user's own stage is
a `pipeline.stage.Stage` subclass. A job file names either with `[[custom]] use =
"module:name"`; `use` may also name a built-in stage, to run it a second time with other options
(each step has its own output folder). See docs/python-api.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel

from pipeline.errors import InputError, JobError
from pipeline.records import KINDS
from pipeline.stage import REASON, ShardOutput, Stage, source_sha256
from pipeline.stage import Options as StageOptions
from pipeline.stages import STAGES, load_target

FILTER_REASON = "pipeline_filter_reason"  # the attribute @filter sets on a function


def filter(reason: str) -> Callable[[Callable[..., pl.Expr]], Callable[..., pl.Expr]]:  # noqa: A001 - pipeline.filter
    """Mark a function returning a keep-mask expression as a filter whose drops say `reason`.

    The function stays a plain function (a unit test calls it and applies the expression); its
    keyword arguments are the filter's options (a job's `[[custom]] options = {...}`).
    """
    if not reason or not isinstance(reason, str):
        raise JobError("pipeline.filter: give the drop reason, e.g. @pipeline.filter(reason=\"code_block\")")

    def mark(function: Callable[..., pl.Expr]) -> Callable[..., pl.Expr]:
        setattr(function, FILTER_REASON, reason)
        return function

    return mark


class FilterOptions(StageOptions):
    """A filter's options: the keyword arguments of its function."""

    params: dict[str, Any] = {}
    """Keyword arguments passed to the filter function (job file: `options = {...}`)."""


class FilterStage(Stage):
    """A keep-mask filter as a stage: rows where the expression is not true are dropped."""

    Options = FilterOptions
    secondary = ("rejected",)
    kinds = KINDS

    def __init__(self, function: Callable[..., pl.Expr], options: FilterOptions | None = None,
                 name: str | None = None):
        super().__init__(options)
        reason = getattr(function, FILTER_REASON, None)
        if not isinstance(reason, str):
            raise JobError(f"{function.__module__}.{function.__qualname__} is not a filter: decorate it with "
                           "@pipeline.filter(reason=...)")
        self.function = function
        self.reason = reason
        self.name = name or function.__name__
        self.folder = self.name

    def keep(self) -> pl.Expr:
        try:
            return self.function(**self.options.params)
        except TypeError as error:
            raise JobError(f"{self.name}: options {self.options.params} do not fit "
                           f"{self.function.__name__}{inspect.signature(self.function)}: {error}") from None

    def fingerprint(self, inputs: list[Path]) -> dict[str, Any]:
        """The options, the reason and the function's source: an edited filter runs again."""
        return {**self.options.fingerprint_dict(), "reason": self.reason,
                "function_sha256": source_sha256(self.function)}

    def check(self, schema: dict, dataset: Path) -> None:
        """The expression on an empty frame of the input's schema: a missing column fails here."""
        try:
            pl.DataFrame(schema=schema).lazy().select(self.keep()).collect()
        except pl.exceptions.ColumnNotFoundError as error:
            found = ", ".join(f"{k}: {v}" for k, v in schema.items())
            raise InputError(f"{self.name}: the filter reads a column input dataset {dataset} lacks "
                             f"({str(error).splitlines()[0]}; found {found})") from None
        except pl.exceptions.PolarsError as error:
            raise InputError(f"{self.name}: the filter does not apply to input dataset {dataset}: "
                             f"{str(error).splitlines()[0]}") from None

    def transform(self, frame: pl.LazyFrame, plan: Any) -> ShardOutput:
        df = frame.with_columns(self.keep().fill_null(False).alias("_keep")).collect()
        kept = df.filter(pl.col("_keep")).drop("_keep")
        dropped = df.filter(~pl.col("_keep")).drop("_keep").with_columns(pl.lit(self.reason).alias(REASON))
        return ShardOutput({"main": kept, "rejected": dropped})


class CustomStep(StageOptions):
    """One `[[custom]]` table of a job file: a user's filter or stage, or a built-in run again."""

    use: str
    """What runs: "module:function" (a @pipeline.filter), "module:Class" (a Stage subclass), or
    the name of a built-in stage (e.g. "clean", to clean a second time with other options)."""
    name: str | None = None
    """The step's name (in `job.steps`, the counts and the report) and, by default, its output
    folder. Default: the filter's function name or the stage's name (required for a built-in)."""
    after: str | None = None
    """The step it runs after, when `job.steps` does not list the order. Default: before
    report and export (at the end of the other steps)."""
    folder: str | None = None
    """Output folder inside the job's output (default: the step's name)."""
    options: dict[str, Any] = {}
    """The stage's options (a filter: its function's keyword arguments)."""


@dataclass
class Step:
    """One step of a job: a name, its output folder, and how to make its stage from options."""

    name: str
    folder: str
    options: BaseModel
    make: Callable[[BaseModel], Stage]

    def stage(self, options: BaseModel | None = None) -> Stage:
        stage = self.make(options if options is not None else self.options)
        stage.name = self.name
        return stage


def custom_step(custom: CustomStep, source: str) -> Step:
    """The Step a `[[custom]]` table describes; a bad `use` or option is a JobError."""
    from pipeline.config import validate_options

    where = f"{source}: [[custom]] use = {custom.use!r}"
    if custom.use in STAGES:
        if not custom.name or custom.name == custom.use:
            raise JobError(f"{where}: a built-in stage run again needs its own `name` (e.g. \"{custom.use}_2\")")
        cls = STAGES[custom.use].load()
        options = validate_options(cls.Options, custom.options, f"{where}, options")
        return Step(custom.name, custom.folder or custom.name, options, cls)
    try:
        target = load_target(custom.use)
    except (ImportError, AttributeError) as error:
        raise JobError(f"{where}: cannot load it ({error}); the module must be importable (on "
                       "PYTHONPATH, or beside the job file)") from None
    if isinstance(target, type) and issubclass(target, Stage):
        options = validate_options(target.Options, custom.options, f"{where}, options")
        name = custom.name or target.name
        if not name:
            raise JobError(f"{where}: the class sets no `name`; give the step a `name`")
        return Step(name, custom.folder or target.folder or name, options, target)
    if callable(target) and isinstance(getattr(target, FILTER_REASON, None), str):
        options = FilterOptions(params=custom.options)
        name = custom.name or target.__name__
        return Step(name, custom.folder or name, options,
                    lambda options, target=target, name=name: FilterStage(target, options, name))
    raise JobError(f"{where}: names neither a @pipeline.filter function nor a pipeline.stage.Stage subclass")
