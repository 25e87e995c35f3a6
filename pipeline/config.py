"""Job files (TOML): typed, validated models for the job, the engine and every stage's options.

A bad job file fails before any work starts, with a message that names the file, the key, the
value found and what is allowed. Stage options models live beside their stage
(`pipeline/<stage>/__init__.py: Options`); this module assembles them into one job model.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from pipeline.custom import CustomStep, Step, custom_step
from pipeline.dataset import read_toml
from pipeline.errors import JobError
from pipeline.secrets import redact
from pipeline.stage import Options
from pipeline.stages import ORDER, STAGES

StageName = Literal[tuple(ORDER)]  # generated from the registry


ConfigError = JobError  # the name this module used before pipeline.errors; kept for callers


class JobSection(Options):
    name: str = "job"
    """A name for the job, shown in the report."""
    output: str = "out"
    """Folder that receives one sub-folder per stage (relative paths are relative to the
    current directory; `pipeline run --out DIR` overrides it)."""
    stages: list[StageName] | None = None
    """Stages to run, in pipeline order. Default: every stage that has a section in the file."""
    steps: list[str] | None = None
    """The order of the steps, when it is not the pipeline's: built-in stages and `[[custom]]`
    step names, e.g. ["clean", "no_code_blocks", "clean_strict", "dedup"]. Default: the built-in
    stages in pipeline order, each custom step after its `after` (see docs/python-api.md)."""
    seed: int = 42
    """Seed for every random step whose stage section does not set its own."""
    input: str | None = None
    """Input dataset folder of the first stage, for jobs that do not start with `fetch`."""
    private: bool = False
    """Make every file the job writes 0600 and every folder 0700 (umask 077), in every stage;
    off: outputs follow the umask, so other users (a trainer) can read them. docs/trust.md."""
    allow_empty: bool = False
    """Run on when a stage produces 0 rows; off: the job stops there and says why (the
    reasons its rejected dataset records, e.g. the fetch errors). docs/trust.md."""


class EngineOptions(Options):
    workers: int | None = None
    """Worker processes of the local Dask cluster (default: one per core; 0 = in-process)."""
    memory_limit: str = "auto"
    """Memory limit per worker, e.g. "4GiB" ("auto": the machine's memory shared out)."""
    scheduler: str | None = None
    """Address of a running Dask scheduler, e.g. "tcp://10.0.0.5:8786"; then the cluster's own
    workers do the work and `workers`/`memory_limit` are ignored."""
    retries: int = 1
    """Times a failed shard is retried before the stage fails."""
    recycle_fraction: float = Field(0.7, ge=0, le=1)
    """Before each pass, restart the idle local workers holding more than this share of their
    memory limit (libraries and allocator caches a process never gives back); 0: never."""

    @field_validator("workers")
    @classmethod
    def _workers_valid(cls, value: int | None) -> int | None:
        from pipeline.engine import check_workers

        return check_workers(value)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit_valid(cls, value: str) -> str:
        from pipeline.engine import parse_memory

        parse_memory(value)
        return value


class DemoSiteOptions(Options):
    modules: int = 400
    """How many standard-library modules the local documentation site renders (pydoc)."""
    port: int = 8765
    """Port on 127.0.0.1 (0 = any free port; a taken port falls back to a free one). A fixed
    port keeps the seed URLs, and so the crawl's fingerprint, the same from run to run, so a
    re-run resumes. Seeds may say {demo_site} for the site's base URL."""


def _job_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "job": (JobSection, JobSection()),
        "engine": (EngineOptions, EngineOptions()),
        "demo_site": (DemoSiteOptions | None, None),
        "custom": (list[CustomStep], []),
    }
    for name in ORDER:
        fields[name] = (STAGES[name].load().Options | None, None)
    return create_model("JobConfig", __base__=Options, **fields)


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid job file"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        # a source's whole table is the input of its cross-field checks: no secret in it is echoed
        found = item.get("input")
        if key.startswith(("fetch", "sources")) or isinstance(found, dict):
            found = redact(found, key)  # elsewhere an option named `key` is no secret
        if item["type"] == "extra_forbidden":
            lines.append(f"  key `{key}`: unknown key (value {found!r}); check the spelling against `pipeline STAGE --help`")
        elif item["type"] == "missing":
            lines.append(f"  key `{key}`: required but missing")
        else:
            lines.append(f"  key `{key}`: {item['msg']} (found {found!r})")
    return "\n".join(lines)


def validate_options(model: type[BaseModel], values: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


class Job:
    """A validated job file: `.config` is the model, `.steps` what runs in order, `.stages` their names."""

    def __init__(self, path: str | Path, config: BaseModel):
        self.path = Path(path)
        self.config = config
        self.steps = self._steps()

    @classmethod
    def load(cls, path: str | Path) -> Job:
        path = Path(path)
        raw = read_toml(path, str(path), "job file")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str | Path = "<job>") -> Job:
        """A job from the dict a job file holds (the Python API's `pipeline.run({...})`)."""
        path = Path(path)
        if path.parent.is_dir() and str(path.parent.resolve()) not in sys.path:
            # a job's own modules ([[custom]] use = "filters:...") sit beside it
            sys.path.append(str(path.parent.resolve()))
        config = validate_options(_job_model(), raw, str(path))
        job = cls(path, config)
        first = job.stages[0] if job.stages else None
        if first is None:
            raise ConfigError(f"{path}: no stage to run: add a stage section or set `job.stages`")
        if first != "fetch":
            if config.job.input is None:
                raise ConfigError(f"{path}: key `job.input`: required when the first stage is `{first}`, not `fetch`")
            if not Path(config.job.input).exists():
                raise ConfigError(f"{path}: key `job.input`: input folder {config.job.input!r} does not exist")
        return job

    @property
    def stages(self) -> list[str]:
        """The names of the steps, in the order they run."""
        return [step.name for step in self.steps]

    def _builtin(self) -> list[str]:
        chosen = self.config.job.stages
        if chosen is None:
            return [s for s in ORDER if getattr(self.config, s) is not None]
        # a stage named in job.stages without a section of its own runs with its defaults
        return [s for s in ORDER if s in chosen]

    def _steps(self) -> list[Step]:
        """Built-in stages in pipeline order, custom steps placed by `after` or `job.steps`."""
        source = str(self.path)
        builtin = {name: Step(name, STAGES[name].folder, self.options(name), STAGES[name].load())
                   for name in (ORDER if self.config.job.steps else self._builtin())}
        # a built-in run again, or a user's stage with a `seed` option, gets job.seed too
        custom = [replace(step, options=self.seeded(step.options))
                  for step in (custom_step(c, source) for c in self.config.custom)]
        named = {**builtin}
        for step in custom:
            if step.name in named:
                raise ConfigError(f"{source}: [[custom]] name {step.name!r} is taken; give the step another `name`")
            named[step.name] = step
        if self.config.job.steps:
            unknown = [s for s in self.config.job.steps if s not in named]
            if unknown:
                raise ConfigError(f"{source}: key `job.steps`: unknown step(s) {unknown}; allowed: built-in stages "
                                  f"({', '.join(ORDER)}) and [[custom]] names ({', '.join(s.name for s in custom) or 'none'})")
            steps = [named[s] for s in self.config.job.steps]
        else:
            steps = list(builtin.values())
            for step, table in zip(custom, self.config.custom, strict=True):
                if table.after is not None:
                    names = [s.name for s in steps]
                    if table.after not in names:
                        raise ConfigError(f"{source}: [[custom]] {step.name}: key `after`: {table.after!r} is not a "
                                          f"step of the job ({', '.join(names)})")
                    steps.insert(names.index(table.after) + 1, step)
                else:  # before the steps that read everything (report) or pack it (export)
                    tail = [i for i, s in enumerate(steps) if s.name in ("report", "export")]
                    steps.insert(tail[0] if tail else len(steps), step)
        folders = [s.folder for s in steps]
        taken = sorted({f for f in folders if folders.count(f) > 1})
        if taken:
            raise ConfigError(f"{source}: two steps write to the same folder {taken}; give one a `folder`")
        return steps

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def options(self, stage: str) -> Options:
        value = getattr(self.config, stage)
        if value is None:
            value = STAGES[stage].load().Options()
        return self.seeded(value)

    def seeded(self, value: BaseModel) -> BaseModel:
        """Options with a `seed` the job file does not set get `job.seed`."""
        if "seed" in type(value).model_fields and "seed" not in value.model_fields_set:
            value = value.model_copy(update={"seed": self.config.job.seed})
        return value
