"""Job files (TOML): typed, validated models for the job, the engine and every stage's options.

A bad job file fails before any work starts, with a message that names the file, the key, the
value found and what is allowed. Stage options models live beside their stage
(`pipeline/<stage>/__init__.py: Options`); this module assembles them into one job model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

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
    """A validated job file: `.config` is the model, `.stages` the stage names to run in order."""

    def __init__(self, path: str | Path, config: BaseModel):
        self.path = Path(path)
        self.config = config

    @classmethod
    def load(cls, path: str | Path) -> Job:
        path = Path(path)
        raw = read_toml(path, str(path), "job file")
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
        chosen = self.config.job.stages
        if chosen is None:
            return [s for s in ORDER if getattr(self.config, s) is not None]
        # a stage named in job.stages without a section of its own runs with its defaults
        return [s for s in ORDER if s in chosen]

    def options(self, stage: str) -> Options:
        value = getattr(self.config, stage)
        if value is None:
            value = STAGES[stage].load().Options()
        if "seed" in type(value).model_fields and "seed" not in value.model_fields_set:
            value = value.model_copy(update={"seed": self.config.job.seed})
        return value
