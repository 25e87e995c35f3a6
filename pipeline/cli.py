"""The `pipeline` command: `run JOB.toml` and one sub-command per stage, options from the models.

Every stage's command-line options are generated from its options model, so the job file
keys, the `--help` text and the defaults can never disagree: `min_words` in `[clean]` is
`--min-words` on `pipeline clean`, with the same default and the same validation.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.errors import EXIT_INTERRUPTED, InputError, JobError, PipelineError
from pipeline.stages import ORDER, STAGES

ENGINE_HELP = "Engine: --workers N (0 = in-process), --memory-limit 4GiB, --scheduler tcp://HOST:PORT."


# -- options model → click options -----------------------------------------------------------
def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _click_type(annotation: Any) -> Any:
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    if annotation in (int, float, str):
        return annotation
    if annotation is Path:
        return click.Path(path_type=Path)
    return None


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def cli_flags(name: str, field: FieldInfo) -> list[str]:
    """The command-line flags of one options field; [] when it is set in a job file only
    (nested models, dicts). `pipeline.docgen` prints these in the stage pages."""
    annotation, _optional = _unwrap_optional(field.annotation)
    if annotation is bool:
        flag = name.replace("_", "-")
        return [f"--{flag}/--no-{flag}"]
    if get_origin(annotation) in (list, tuple):
        annotation = get_args(annotation)[0]
    if _click_type(annotation) is None:
        return []
    return [*(field.json_schema_extra or {}).get("cli_aliases", []), _option_name(name)]


def model_options(model: type[BaseModel], skip: set[str] = frozenset()):
    """A decorator adding one click option per scalar/list field of a pydantic model."""

    def decorate(command):
        for name, field in reversed(list(model.model_fields.items())):
            flags = cli_flags(name, field)
            if name in skip or not flags:
                continue  # nested models and dicts are set in the job file only
            annotation, _optional = _unwrap_optional(field.annotation)
            doc = (field.description or "").replace("\n", " ")
            default = field.default if not callable(field.default_factory) else field.default_factory()
            shown = f"[default: {default!r}]" if default not in (None, [], ()) else ""
            if annotation is bool:
                command = click.option(*flags, name, default=None,
                                       help=f"{doc} [default: {'on' if default else 'off'}]")(command)
                continue
            if get_origin(annotation) in (list, tuple):
                command = click.option(*flags, name, type=_click_type(get_args(annotation)[0]), multiple=True,
                                       default=None, help=f"{doc} (repeatable) {shown}")(command)
                continue
            kind = _click_type(annotation)
            command = click.option(*flags, name, type=kind, default=None,
                                   help=f"{doc} {shown}")(command)
        return command

    return decorate


def options_from_cli(model: type[BaseModel], values: dict[str, Any], source: str) -> BaseModel:
    """Build the model from the options the user actually gave (None/empty = the default)."""
    from pipeline.config import validate_options

    given = {}
    for key, value in values.items():
        if key not in model.model_fields or value is None or value == ():
            continue
        given[key] = list(value) if isinstance(value, tuple) else value
    return validate_options(model, given, source)


def engine_options(command):
    command = click.option("--scheduler", default=None, help="Address of a running Dask scheduler (tcp://HOST:PORT) instead of a local cluster.")(command)
    command = click.option("--memory-limit", default=None, help="Memory limit per local worker, e.g. 4GiB [default: auto].")(command)
    command = click.option("--workers", type=int, default=None, help="Local Dask worker processes (default: one per core; 0 = in-process, no Dask).")(command)
    command = click.option("--fresh", is_flag=True, help="Ignore finished shards of an earlier run and start over.")(command)
    command = click.option("--private", is_flag=True, help="Write every file 0600 and folder 0700 (umask 077); "
                           "default: the umask decides (docs/trust.md).")(command)
    return command


def make_engine(workers, memory_limit, scheduler, defaults=None):
    from pipeline.engine import Engine

    defaults = defaults or {}
    try:
        return Engine(
            workers=workers if workers is not None else defaults.get("workers"),
            memory_limit=memory_limit or defaults.get("memory_limit", "auto"),
            scheduler=scheduler or defaults.get("scheduler"),
            retries=defaults.get("retries", 1),
        )
    except ValueError as error:  # the engine's own checks name their key: "memory_limit: ..."
        key, _, reason = str(error).partition(":")
        fail(f"--{key.replace('_', '-')}:{reason}")


def fail(message: str, exit_code: int = JobError.exit_code) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(exit_code)


def run_guarded(fn, *args, **kwargs):
    """Call fn; kept for callers: errors are turned into exits once, in `main` (see pipeline.errors)."""
    return fn(*args, **kwargs)


# -- commands --------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="pipeline")
def cli():
    """Turn raw, messy sources into clean, deduplicated, labelled and split datasets.

    \b
    Stages (each reads datasets and writes one; any can be re-run or resumed):
      fetch → extract → clean → dedup → features → cluster → label → split → report
      fine-tuning: chunk (after clean), template (before split), decontaminate → tokens (after
      split), export (last)

    \b
    Start here:
      pipeline run jobs/demo.toml            run a whole job (the demo needs no network)
      pipeline run JOB.toml --out DIR        ... into another output folder
      pipeline clean --help                  one stage's options, with defaults

    A dataset is a folder of Parquet shards plus _manifest.json; read any of them with
    polars.scan_parquet("DIR/**/*.parquet", hive_partitioning=True).
    """


@cli.command("run")
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Output folder (overrides job.output).")
@click.option("--stages", default=None, help="Comma-separated subset of the job's stages to run, e.g. clean,dedup.")
@engine_options
def run_command(job_file, out, stages, fresh, private, workers, memory_limit, scheduler):
    """Run a job file: its stages in order, each one's counts printed as it finishes.

    Re-running the same job resumes: finished shards are skipped unless options or inputs
    changed (or --fresh is given).
    """
    from pipeline.runner import run_job

    only = [s.strip() for s in stages.split(",")] if stages else None
    run_guarded(run_job, job_file, out=out, only=only, fresh=fresh, private=private,
                engine_overrides={"workers": workers, "memory_limit": memory_limit, "scheduler": scheduler})


def _stage_help(stage: type) -> str:
    """A stage command's help: its module's docstring (the stage's reference), else its summary."""
    return (sys.modules[stage.__module__].__doc__ or stage.summary).strip()


def _stage_command(name: str) -> click.Command:
    spec = STAGES[name]
    stage = spec.load()
    model = stage.Options

    @click.pass_context
    def callback(ctx, input, output, fresh, private, workers, memory_limit, scheduler, **values):
        from pipeline.lock import private_outputs
        from pipeline.runner import run_stage

        options = run_guarded(options_from_cli, model, values, f"pipeline {name}")
        with private_outputs(private), make_engine(workers, memory_limit, scheduler) as engine:
            result = run_guarded(run_stage, name, list(input), output, options, engine, fresh=fresh)
        click.echo(result.summary_line())

    command = model_options(model)(callback)
    command = engine_options(command)
    command = click.option("--output", "output", required=True, type=click.Path(path_type=Path),
                           help=f"Output dataset folder (in a job: {spec.folder}/).")(command)
    command = click.option("--input", "input", multiple=True, required=name != "fetch",
                           type=click.Path(path_type=Path), help="Input dataset folder (repeatable).")(command)
    return click.command(name, help=_stage_help(stage) + "\n\n" + ENGINE_HELP)(command)


def _fetch_group() -> click.Group:
    stage = STAGES["fetch"].load()
    group = click.Group("fetch", help=_stage_help(stage))
    for kind, model in stage.source_kinds.items():

        def make(kind=kind, model=model):
            def callback(output, fresh, private, workers, memory_limit, scheduler, **values):
                from pipeline.lock import private_outputs
                from pipeline.runner import run_stage

                values["kind"] = kind
                source = run_guarded(options_from_cli, model, values, f"pipeline fetch {kind}")
                options = stage.Options(sources=[source])
                with private_outputs(private), make_engine(workers, memory_limit, scheduler) as engine:
                    result = run_guarded(run_stage, "fetch", [], output, options, engine, fresh=fresh)
                click.echo(result.summary_line())

            command = model_options(model, skip={"kind"})(callback)
            command = engine_options(command)
            command = click.option("--output", "output", required=True, type=click.Path(path_type=Path),
                                   help="Output dataset folder.")(command)
            return click.command(kind, help=(model.__doc__ or kind).strip())(command)

        group.add_command(make())
    return group


class LazyStages(click.Group):
    """Stage sub-commands are built on first use, so `pipeline --help` imports no stage."""

    def list_commands(self, ctx):
        return ["run", *ORDER]

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name == "fetch":
            return _fetch_group()
        if name in STAGES:
            return _stage_command(name)
        return None

    def invoke(self, ctx):
        """Every command's user errors end here, once: one paragraph on stderr, the kind's exit
        code (pipeline.errors), no traceback; Ctrl-C exits 130 and says how to resume."""
        try:
            return super().invoke(ctx)
        except PipelineError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (FileNotFoundError, PermissionError) as error:  # a path the user gave
            click.echo(f"error: {error}", err=True)
            ctx.exit(InputError.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: finished shards are kept; run the same command again to resume", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def format_commands(self, ctx, formatter):
        rows = [("run", "run a job file: every stage in order, resumable")]
        rows += [(name, STAGES[name].summary) for name in ORDER]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


cli.__class__ = LazyStages


def main() -> None:
    import signal

    def terminate(signum, frame):  # noqa: ARG001 - the signal handler's signature
        # `kill PID` unwinds like an error: a stage's cleanup runs (split removes its pieces),
        # the lock is released, finished shards stay for the resume
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    cli(prog_name="pipeline")
