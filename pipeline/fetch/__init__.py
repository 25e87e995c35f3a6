"""Fetch: crawl websites, page through JSON APIs, query PostgreSQL and read local files into shards.

Pages (crawl, HTML files, WARC captures) become raw rows (url, final_url, status,
content_type, headers, body, fetched_at, source, error) for `extract`; structured records
(CSV, TSV, JSONL, Parquet, API, SQL) become documents (id, source, url, fetched_at, title,
text, label, meta), or instruction/chat records (pipeline.records) with `fetch files --kind`;
a malformed line or invalid record of a file goes to rejected/<output>/ with file, line and
reason. Output is Hive-partitioned `source=<name>/date=<day>/`, rolled by size. A
failed fetch is a row with its error, never a silent gap. A killed run re-run with the same
output resumes (crawls from their last checkpoint, files by finished file). Each source kind
is a sub-command: `pipeline fetch crawl --seed https://example.org/ --output out/raw`,
`pipeline fetch files --glob 'data/*.csv' --output out/docs`, `pipeline fetch api ...`,
`pipeline fetch sql ...`.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.dataset import StageOutput, TaskRecord, input_fingerprint
from pipeline.engine import Engine
from pipeline.errors import JobError
from pipeline.fetch.options import ApiSource, CrawlSource, FilesSource, Source, SqlSource
from pipeline.fetch.urls import host_of
from pipeline.fetch.writer import partition_value
from pipeline.schema import rejected_folder
from pipeline.secrets import fingerprint_with_secrets
from pipeline.stage import Options as StageOptions
from pipeline.stage import Stage, StageResult

SOURCE_KINDS: dict[str, type[StageOptions]] = {
    "crawl": CrawlSource,
    "api": ApiSource,
    "sql": SqlSource,
    "files": FilesSource,
}

# options that change how fast, not what: a resumed crawl may change them
_SPEED_ONLY = {"concurrency", "per_host", "timeout", "checkpoint_pages", "progress_seconds", "html_files_per_task", "batch_mb"}


class Options(StageOptions):
    """`[fetch]` in a job file: a list of sources, each a `[[fetch.sources]]` table with `kind`."""

    sources: list[Source] = []
    """Sources to fetch, each with `kind` = "crawl" | "api" | "sql" | "files" and that kind's
    options (see `pipeline fetch <kind> --help`). One fetch writes one dataset: page sources
    (crawl, HTML, WARC) and record sources (CSV, JSONL, Parquet, API, SQL) cannot be mixed."""

    def fingerprint_dict(self) -> dict:
        data = self.model_dump(mode="json")
        for source in data["sources"]:
            for key in _SPEED_ONLY:
                source.pop(key, None)
        # the manifest shows *** for tokens and passwords; their hash keeps the fingerprint honest
        return fingerprint_with_secrets(data)


def source_name(source) -> str:
    if source.name:
        return partition_value(source.name)
    if isinstance(source, CrawlSource):
        return partition_value(host_of(source.seeds[0]))
    if isinstance(source, ApiSource):
        return partition_value(host_of(source.url))
    return source.kind


def _output_kind(options: Options) -> tuple[str, dict[int, list]]:
    """"pages" or "records" for the whole run (mixing is refused), and each files source's files."""
    from pipeline.fetch.files import expand_files

    kinds: dict[str, str] = {}
    files: dict[int, list] = {}
    for index, source in enumerate(options.sources):
        if isinstance(source, CrawlSource):
            kinds.setdefault("pages", f"crawl source #{index}")
        elif isinstance(source, ApiSource | SqlSource):
            kinds.setdefault("records", f"{source.kind} source #{index}")
        else:
            found = expand_files(source)
            files[index] = found
            for path, fmt in found:
                kinds.setdefault("pages" if fmt in ("html", "warc") else "records", str(path))
    if len(kinds) > 1:
        raise JobError(
            f"fetch: one run writes either raw pages or documents, not both: {kinds['pages']} gives "
            f"raw pages and {kinds['records']} gives documents; use two fetch runs with two outputs")
    return next(iter(kinds), "pages"), files


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Run every source into OUTPUT (one dataset), resumably; see the module docstring."""

    started = time.perf_counter()
    if not options.sources:
        raise JobError("fetch: no sources; add [[fetch.sources]] tables (kind = crawl | api | sql | files)")
    kind, files = _output_kind(options)
    fingerprint = options.fingerprint_dict()
    if files:
        fingerprint["files"] = input_fingerprint([p for found in files.values() for p, _ in found])
    output = Path(output)
    outputs = {"main": output}
    structured = any(fmt not in ("html", "warc") for found in files.values() for _, fmt in found)
    if structured:  # malformed lines and invalid records of files go to rejected/<output>/
        outputs["rejected"] = rejected_folder(output)
    # instruction/chat records and text documents share one schema when one run reads both
    record_columns = any(isinstance(s, FilesSource) and s.record_kind != "text" for s in options.sources)
    if record_columns and any(not isinstance(s, FilesSource) for s in options.sources):
        raise JobError("fetch: instruction/chat records come from files sources only; fetch the "
                       "api/sql sources in another run")
    stage_output = StageOutput("fetch", fingerprint, [], outputs, fresh=fresh)
    records: list[TaskRecord] = []
    details: dict[str, dict] = {}
    for index, source in enumerate(options.sources):
        name = source_name(source)
        task = f"{source.kind}{index:02d}"
        if isinstance(source, CrawlSource):
            from pipeline.fetch.crawl import crawl_source

            done, counts = crawl_source(source, stage_output, task, name)
        elif isinstance(source, FilesSource):
            from pipeline.fetch.files import read_files

            done, counts = read_files(source, files[index], stage_output, task, name, engine, record_columns)
        elif isinstance(source, ApiSource):
            from pipeline.fetch.api import fetch_api

            done, counts = fetch_api(source, stage_output, task, name)
        else:
            from pipeline.fetch.sql import fetch_sql

            done, counts = fetch_sql(source, stage_output, task, name)
        records.extend(done)
        details[f"{task}:{name}"] = counts
    stage_output.finalize(records, extra={"kind": kind})
    rows = sum(r.counts.get("rows_out", 0) for r in records)
    dropped: dict[str, int] = {}
    for record in records:
        for key, value in record.counts.items():
            if key.startswith("dropped:"):
                dropped[key.removeprefix("dropped:")] = dropped.get(key.removeprefix("dropped:"), 0) + value
    return StageResult(
        stage="fetch",
        rows_in=rows + sum(dropped.values()),
        rows_out=rows,
        dropped=dropped,
        seconds=round(time.perf_counter() - started, 3),
        outputs={k: str(v) for k, v in outputs.items()},
        details={"kind": kind, "sources": details},
    )


class Fetch(Stage):
    """See the module docstring."""

    name = "fetch"
    Options = Options
    source_kinds = SOURCE_KINDS

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        return run([Path(p) for p in inputs], Path(output), self.options, engine, fresh=fresh)


__all__ = ["Fetch", "SOURCE_KINDS", "ApiSource", "CrawlSource", "FilesSource", "Options", "SqlSource", "run"]
