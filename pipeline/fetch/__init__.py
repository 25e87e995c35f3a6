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

from pathlib import Path

from pipeline.dataset import TaskRecord, input_fingerprint
from pipeline.engine import Engine
from pipeline.errors import JobError
from pipeline.fetch.options import ApiSource, CrawlSource, FilesSource, Source, SqlSource
from pipeline.fetch.urls import host_of
from pipeline.fetch.writer import partition_value
from pipeline.schema import rejected_folder
from pipeline.secrets import fingerprint_with_secrets
from pipeline.stage import Options as StageOptions
from pipeline.stage import Stage, StageResult, StageRun

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
    return Fetch(options).run(inputs, output, engine, fresh=fresh)


class Fetch(Stage):
    """See the module docstring."""

    name = "fetch"
    Options = Options
    source_kinds = SOURCE_KINDS

    def __init__(self, options: Options | None = None):
        super().__init__(options)
        if not self.options.sources:
            raise JobError("fetch: no sources; add [[fetch.sources]] tables (kind = crawl | api | sql | files)")
        # instruction/chat records and text documents share one schema when one run reads both
        self.record_columns = any(isinstance(s, FilesSource) and s.record_kind != "text" for s in self.options.sources)
        if self.record_columns and any(not isinstance(s, FilesSource) for s in self.options.sources):
            raise JobError("fetch: instruction/chat records come from files sources only; fetch the "
                           "api/sql sources in another run")
        self.kind, self.files = _output_kind(self.options)

    def fingerprint(self, inputs: list[Path]) -> dict:
        """The options and, for files sources, the size and mtime of every file they match."""
        fingerprint = self.options.fingerprint_dict()
        if self.files:
            fingerprint["files"] = input_fingerprint([p for found in self.files.values() for p, _ in found])
        return fingerprint

    def outputs(self, output: Path) -> dict[str, Path]:
        """Malformed lines and invalid records of structured files go to rejected/<output>/."""
        structured = any(fmt not in ("html", "warc") for found in self.files.values() for _, fmt in found)
        return {"main": output, **({"rejected": rejected_folder(output)} if structured else {})}

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        """Each source in turn (a crawl, an API, SQL, files), each resumable on its own tasks."""
        run = StageRun(self, [], output, engine, fresh=fresh)
        records: list[TaskRecord] = []
        details: dict[str, dict] = {}
        for index, source in enumerate(self.options.sources):
            name = source_name(source)
            task = f"{source.kind}{index:02d}"
            if isinstance(source, CrawlSource):
                from pipeline.fetch.crawl import crawl_source

                done, counts = crawl_source(source, run.store, task, name)
            elif isinstance(source, FilesSource):
                from pipeline.fetch.files import read_files

                done, counts = read_files(source, self.files[index], run.store, task, name, engine, self.record_columns)
            elif isinstance(source, ApiSource):
                from pipeline.fetch.api import fetch_api

                done, counts = fetch_api(source, run.store, task, name)
            else:
                from pipeline.fetch.sql import fetch_sql

                done, counts = fetch_sql(source, run.store, task, name)
            records.extend(done)
            details[f"{task}:{name}"] = counts
        rows_in = sum(v for r in records for k, v in r.counts.items() if k == "rows_out" or k.startswith("dropped:"))
        return run.finish(records, {"kind": self.kind, "sources": details}, extra={"kind": self.kind},
                          rows_in=rows_in, skipped=0)


__all__ = ["Fetch", "SOURCE_KINDS", "ApiSource", "CrawlSource", "FilesSource", "Options", "SqlSource", "run"]
