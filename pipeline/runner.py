"""Runs one stage or a whole job: inputs wired stage to stage, counts printed, lineage kept.

A job's output folder gets one folder per stage (raw/, docs/, clean/, ...) plus the secondary
datasets stages write beside them (rejected/, duplicates/), and `_job.json`, the list of stage
results in order. Each stage's main manifest also records its own result under "result".
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import click

from pipeline.config import EngineOptions, Job, validate_options
from pipeline.dataset import MANIFEST, write_json_atomic
from pipeline.engine import Engine
from pipeline.errors import EmptyResultError, InputError, JobError
from pipeline.lock import output_lock, private_outputs
from pipeline.stage import Options, Stage, StageResult
from pipeline.stages import STAGES


def run_stage(
    name: str,
    inputs: list[str | Path],
    output: str | Path,
    options: Options,
    engine: Engine,
    fresh: bool = False,
) -> StageResult:
    """Run one registered stage and record its result in its main output's manifest."""
    return run_stage_type(STAGES[name].load()(options), inputs, output, engine, fresh=fresh)


def run_stage_type(stage: Stage, inputs: list[str | Path], output: str | Path, engine: Engine,
                   fresh: bool = False) -> StageResult:
    """Run a stage object (built-in or a user's) and record its result in its main manifest."""
    output = Path(output)
    for path in inputs:
        if not Path(path).exists():
            raise InputError(f"{stage.name}: input folder {path} does not exist")
    with output_lock(output):
        result = stage.run([Path(p) for p in inputs], output, engine, fresh=fresh)
    manifest_path = Path(result.outputs.get("main", output)) / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest["result"] = result.model_dump(mode="json")
        write_json_atomic(manifest_path, manifest)
    return result


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    return value


def run_job(
    job_file: str | Path | dict[str, Any],
    out: str | Path | None = None,
    only: list[str] | None = None,
    fresh: bool = False,
    engine_overrides: dict[str, Any] | None = None,
    echo=click.echo,
    private: bool = False,
) -> list[StageResult]:
    """Run a job file's stages in order; return their results (also in OUT/_job.json).

    The job holds OUT/.lock while it runs (a second run there is refused), writes with the
    job's permission policy (``private``: umask 077) and stops at a stage that produces 0 rows
    unless ``[job] allow_empty`` (see docs/trust.md)."""
    job = Job.from_dict(job_file) if isinstance(job_file, dict) else Job.load(job_file)
    config = job.config
    out_dir = Path(out or config.job.output)
    with private_outputs(config.job.private or private), output_lock(out_dir):
        return _run_job(job, out_dir, only, fresh, engine_overrides, echo)


def _run_job(job: Job, out_dir: Path, only: list[str] | None, fresh: bool,
             engine_overrides: dict[str, Any] | None, echo) -> list[StageResult]:
    config = job.config
    engine_settings = config.engine.model_dump()
    for key, value in (engine_overrides or {}).items():
        if value is not None:
            engine_settings[key] = value
    # the command line's --workers/--memory-limit get the job file's checks
    validate_options(EngineOptions, engine_settings, f"{job.path} with the command line's engine flags")
    unknown = [s for s in only or [] if s not in job.stages]
    if unknown:
        raise JobError(f"--stages: unknown step(s) {unknown}; this job's steps: {', '.join(job.stages)}")
    stages = [s for s in job.stages if only is None or s in only]

    with contextlib.ExitStack() as stack:
        mapping: dict[str, str] = {}
        if config.demo_site is not None and "fetch" in stages:
            from pipeline.demo_site import DemoSite

            site = stack.enter_context(DemoSite(config.demo_site.modules, config.demo_site.port))
            mapping["demo_site"] = site.url
            echo(f"demo site: {site.url} (Python {site.python_version} standard-library docs, rendered by pydoc)")
        engine = stack.enter_context(Engine(**engine_settings))
        echo(f"job {config.job.name}: stages {' → '.join(stages)}; engine: {engine.describe()}; output: {out_dir}")

        results: list[StageResult] = []
        produced: list[Path] = []  # every dataset folder written so far, for the report
        previous: Path | None = Path(config.job.input) if config.job.input else None
        # a partial run (--stages) picks up the folders an earlier run left: the first stage run
        # reads the output of the nearest stage before it in the job, never of one after it
        first = min((job.stages.index(name) for name in stages if name in job.stages), default=len(job.stages))
        for index, step in enumerate(job.steps):
            folder = out_dir / step.folder
            if step.name not in stages and (folder / MANIFEST).exists():
                if index < first:
                    previous = folder
                produced.append(folder)
        for name in stages:
            step = job.step(name)
            options = step.options
            if mapping:
                options = type(options).model_validate(_substitute(options.model_dump(), mapping))
            output = out_dir / step.folder
            if name == "fetch":
                inputs: list[Path] = []
            elif name == "report":
                inputs = _report_inputs(out_dir, [s.folder for s in job.steps])
            else:
                if previous is None:
                    raise InputError(f"stage {name}: no input (run the stages before it, or set job.input)")
                inputs = [previous]
            result = run_stage_type(step.stage(options), inputs, output, engine, fresh=fresh)
            echo(result.summary_line())
            results.append(result)
            if result.rows_out == 0 and name != "report" and not config.job.allow_empty:
                raise EmptyResultError(empty_result_message(result))
            if name != "report":
                previous = Path(result.outputs.get("main", output))
                produced.extend(Path(p) for p in result.outputs.values())

    write_json_atomic(out_dir / "_job.json", {
        "job": str(job.path),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [r.model_dump(mode="json") for r in results],
        "engine": {"describe": engine.describe(), "workers_recycled": engine.recycled},
    })
    splits = out_dir / STAGES["split"].folder
    report = out_dir / STAGES["report"].folder
    if splits.exists():
        echo(f"splits: {splits}/{{train,val,test}}/  (manifest: {splits / 'manifest.json'})")
    if report.exists():
        echo(f"report: {report / 'index.html'}  (metrics: {report / 'metrics.json'})")
    export = out_dir / STAGES["export"].folder
    if (export / "README.md").exists():
        echo(f"export: {export}/  (for a trainer: datasets.load_dataset({str(export)!r}); card: {export / 'README.md'})")
    return results


def _report_inputs(out_dir: Path, step_folders: list[str]) -> list[Path]:
    """Every dataset folder of the job (main and secondary, e.g. rejected/clean), step order."""
    report = out_dir / STAGES["report"].folder
    folders = [m.parent for m in out_dir.rglob(MANIFEST) if report not in m.parents]
    order = {folder: i for i, folder in enumerate(step_folders)}
    return sorted(folders, key=lambda p: (order.get(p.relative_to(out_dir).parts[0], 99), str(p)))


def empty_result_message(result: StageResult, top: int = 5) -> str:
    """Why a stage produced 0 rows: its drop counts and the most frequent reasons (and errors,
    e.g. the fetch errors) its rejected dataset records; a small aggregate, never the rows."""

    from pipeline.dataset import Dataset

    dropped = ", ".join(f"{k}={v}" for k, v in sorted(result.dropped.items(), key=lambda kv: -kv[1]))
    lines = [f"{result.stage} produced 0 rows from {result.rows_in}" + (f" (dropped: {dropped})" if dropped else "")]
    for name, folder in sorted(result.outputs.items()):
        if name == "main" or not Dataset(folder).complete() or Dataset(folder).rows() == 0:
            continue
        frame = Dataset(folder).scan()
        keys = [c for c in ("reason", "error") if c in frame.collect_schema()]
        if not keys:
            continue
        why = (frame.group_by(keys).len().sort(["len", *keys], descending=[True, *[False] * len(keys)])
               .head(top).collect())
        lines[0] += f"; why, from {folder}:"
        for row in why.iter_rows(named=True):
            text = ": ".join(str(row[k]) for k in keys if row[k] is not None)
            lines.append(f"  {text} ({row['len']} row{'s' if row['len'] != 1 else ''})")
    lines.append("the job stops here; set `allow_empty = true` in [job] to run the later stages anyway")
    return "\n".join(lines)
