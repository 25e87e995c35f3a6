"""The Python API: a whole job (`pipeline.run`) or one stage (`pipeline.stages.clean(...)`).

    import pipeline
    results = pipeline.run("jobs/demo.toml", out="out/demo")          # a job file, or a dict
    result = pipeline.stages.clean("out/demo/docs", "out/clean", min_words=20, workers=2)

Both run on the same engine as the command line (a local Dask cluster, `workers=0`: in this
process) and resume the same way; errors are `pipeline.errors.PipelineError` kinds. A script
needs no `if __name__ == "__main__":` guard: the engine's workers never re-run it (see
`pipeline.engine.spawned_without_main`). See docs/python-api.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.stage import Stage, StageResult

__all__ = ["run", "run_registered", "run_stage_object"]


def run(job: str | Path | dict[str, Any], out: str | Path | None = None, *, steps: list[str] | None = None,
        fresh: bool = False, workers: int | None = None, memory_limit: str | None = None,
        scheduler: str | None = None, quiet: bool = False) -> list[StageResult]:
    """Run a job (a job file's path, or the dict such a file holds) into OUT; the results of its
    steps in order. `steps`: a subset of the job's steps (as `pipeline run --stages`)."""
    from pipeline.runner import run_job

    echo = (lambda *_args, **_kwargs: None) if quiet else print
    return run_job(job, out=out, only=steps, fresh=fresh, echo=echo,
                   engine_overrides={"workers": workers, "memory_limit": memory_limit, "scheduler": scheduler})


def run_stage_object(stage: Stage, input: str | Path | list[str | Path] | None, output: str | Path, *,
                     workers: int | None = None, memory_limit: str | None = None, fresh: bool = False) -> StageResult:
    """Run a stage object (a built-in's class with options, a user's Stage, a FilterStage) once."""
    from pipeline.engine import Engine
    from pipeline.runner import run_stage_type

    inputs = [] if input is None else [input] if isinstance(input, (str, Path)) else list(input)
    with Engine(workers=workers, memory_limit=memory_limit or "auto") as engine:
        return run_stage_type(stage, inputs, output, engine, fresh=fresh)


def run_registered(name: str, input: str | Path | list[str | Path] | None, output: str | Path | None, *,
                   workers: int | None = None, memory_limit: str | None = None, fresh: bool = False,
                   **options: Any) -> StageResult:
    """`pipeline.stages.NAME(...)`: options checked like a job file's section, then one run."""
    from pipeline.config import validate_options
    from pipeline.errors import JobError
    from pipeline.stages import STAGES

    if output is None:
        raise JobError(f"pipeline.stages.{name}: give the output folder")
    cls = STAGES[name].load()
    stage = cls(validate_options(cls.Options, options, f"pipeline.stages.{name}"))
    return run_stage_object(stage, input, output, workers=workers, memory_limit=memory_limit, fresh=fresh)
