"""Options of each fetch source kind (`crawl`, `api`, `sql`, `files`): the job file's
`[[fetch.sources]]` tables and the flags of `pipeline fetch <kind>`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.fetch.urls import UrlError, canonical_url, compile_url_pattern
from pipeline.secrets import ENV_PREFIX
from pipeline.stage import Options

MIB = 1 << 20
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
DEFAULT_USER_AGENT = "pipeline-fetch/0.1 (dataset builder; +https://example.invalid/pipeline)"


class _SourceBase(Options):
    name: str = ""
    """Source name: the `source` column and the `source=` partition folder. Default: the host
    (crawl, api), "sql" or "files"."""
    shard_mb: float = 64.0
    """Roll output shards at about this many MiB of buffered rows."""

    @field_validator("shard_mb")
    @classmethod
    def _positive_shard(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @property
    def shard_bytes(self) -> int:
        return int(self.shard_mb * MIB)


class _HttpOptions(Options):
    concurrency: int = Field(32, ge=1, le=1024)
    """Requests in flight in total."""
    per_host: int = Field(8, ge=1, le=256)
    """Requests in flight to one host at a time."""
    delay: float = Field(0.0, ge=0)
    """Minimum seconds between request starts to one host (robots.txt Crawl-delay raises it)."""
    timeout: float = Field(20.0, gt=0)
    """Seconds for one request (connect, headers and body) before it counts as a timeout."""
    max_bytes: int = Field(10 * MIB, ge=1)
    """Largest body kept, decompressed; a larger page is recorded with an error, not stored."""
    retries: int = Field(3, ge=0, le=20)
    """Retries after a timeout, connection error, 429 or 5xx (exponential backoff with jitter;
    Retry-After is honoured)."""
    max_retry_after: float = Field(60.0, ge=0)
    """A Retry-After longer than this many seconds is not waited for: the row records the error."""
    user_agent: str = DEFAULT_USER_AGENT
    """User-Agent header, and the name matched against robots.txt groups."""
    allow_private: bool = False
    """Allow private, loopback and link-local addresses (refused by default, after DNS
    resolution and on every redirect)."""


class _RecordFields(Options):
    """How structured records map onto the document columns; other fields go to `meta`."""

    id_field: str | None = None
    """Field holding a record's id (the `id` is doc_id of "source:value"); default: the row number."""
    text_field: str = "text"
    """Field holding the document text (required to exist)."""
    title_field: str | None = "title"
    """Field holding the title (used when present)."""
    label_field: str | None = "label"
    """Field holding the label (used when present)."""
    url_field: str | None = "url"
    """Field holding the record's URL (used when present)."""


class _CrawlFields(Options):
    seeds: list[str] = Field(default_factory=list, json_schema_extra={"cli_aliases": ["--seed"]})
    """Start URLs (http or https); `--seed URL` on the command line, repeatable."""
    max_pages: int = Field(10_000, ge=1)
    """Stop after this many pages were fetched (errors count; robots.txt refusals do not)."""
    max_depth: int = Field(20, ge=0)
    """Links followed from a seed (0 = the seeds only)."""
    scope: Literal["same-host", "same-domain", "prefix"] = "same-host"
    """Links followed: the seeds' hosts, their domains and subdomains, or URLs under a seed's
    folder."""
    include: list[str] = []
    """URL patterns links must match to be followed (any of them; seeds are always fetched): a
    regular expression searched in the canonical URL (`/library/`), or `glob:` and a shell
    pattern matched against the whole URL (`glob:*/docs/*`)."""
    exclude: list[str] = []
    """URL patterns whose links are not followed (sitemap entries neither), same forms as
    include: e.g. `/_modules/`, `glob:*/releases/*`."""
    sitemaps: bool = False
    """Also seed from the sitemaps named in robots.txt (or /sitemap.xml)."""
    sort_query: bool = True
    """Canonical URLs sort query parameters (?b=1&a=2 is ?a=2&b=1), so a page is fetched once."""
    max_redirects: int = Field(5, ge=0, le=30)
    """Redirect hops followed per page; more is recorded as an error."""
    progress_seconds: float = Field(10.0, gt=0)
    """Where stderr is not a terminal, a progress line (pages, rate, errors, queue) at most this
    often; on a terminal a live bar instead."""
    checkpoint_pages: int = Field(500, ge=1)
    """Write a shard and checkpoint the frontier at least every this many pages (resume point)."""
    content_types: list[str] = ["text/html", "application/xhtml+xml", "text/plain"]
    """Media types whose bodies are stored; other types are recorded (status, headers) and skipped."""

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, seeds: list[str]) -> list[str]:
        out = []
        for seed in seeds:
            if PLACEHOLDER.search(seed):  # e.g. "{demo_site}/": the job runner fills it in later
                out.append(seed)
                continue
            try:
                out.append(canonical_url(seed, sort_query=False))
            except UrlError as error:
                raise ValueError(str(error)) from None
        return out

    @field_validator("include", "exclude")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compile_url_pattern(pattern)
            except re.error as error:
                raise ValueError(f"bad pattern {pattern!r}: {error}") from None
        return patterns

    @model_validator(mode="after")
    def _needs_seed(self) -> _CrawlFields:
        if not self.seeds:
            raise ValueError("crawl needs at least one seed URL (seeds = [...], --seeds URL)")
        return self


class CrawlSource(_HttpOptions, _SourceBase, _CrawlFields):
    """Crawl websites from seed URLs into raw pages: polite (robots.txt, per-host limits,
    delay, Retry-After), bounded (pages, depth, body size, redirects) and resumable (a killed
    crawl re-run with the same output continues where its last checkpoint left it).

    Example: pipeline fetch crawl --seed https://docs.python.org/3/ --max-pages 500 --output raw
    """

    kind: Literal["crawl"] = "crawl"

class _ApiFields(Options):
    url: str = ""
    """The endpoint (http or https)."""
    params: dict[str, str] = {}
    """Fixed query parameters (job file only). A value "env:NAME" is read from the environment
    variable NAME; secret ones (api_key, token, ...) are shown as *** in manifests."""
    headers: dict[str, str] = {}
    """Extra request headers, e.g. {Authorization = "env:API_TOKEN"} (job file only): "env:NAME"
    is read from the environment; secret ones (Authorization, Cookie, X-Api-Key, ...) are shown
    as *** in manifests and messages."""
    paging: Literal["page", "offset", "cursor", "none"] = "page"
    """How the next page is asked for: a page number, an offset, the cursor from the last
    response, or a single request."""
    page_param: str = "page"
    """Query parameter for the page number (paging = page)."""
    first_page: int = 1
    """Number of the first page (paging = page)."""
    offset_param: str = "offset"
    """Query parameter for the offset (paging = offset)."""
    size_param: str | None = None
    """Query parameter for the page size (sent with page_size when set)."""
    page_size: int = Field(100, ge=1)
    """Records asked for per page (with size_param); a shorter page ends offset paging."""
    cursor_param: str = "cursor"
    """Query parameter that carries the cursor (paging = cursor)."""
    cursor_path: str = "next_cursor"
    """Dotted path of the next cursor in a response; missing or null ends the paging."""
    records_path: str = ""
    """Dotted path of the record list in a response ("" = the response if it is a list, else
    the first of data/results/items/records)."""
    max_requests: int = Field(10_000, ge=1)
    """Stop after this many pages."""

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        if not url or PLACEHOLDER.search(url):
            return url
        try:
            return canonical_url(url, sort_query=False)
        except UrlError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _needs_url(self) -> _ApiFields:
        if not self.url:
            raise ValueError("api needs a url (url = ..., --url URL)")
        return self


class ApiSource(_HttpOptions, _SourceBase, _RecordFields, _ApiFields):
    """Page through a JSON API into documents: each record flattened (nested keys joined with
    dots), mapped onto the document columns, the other fields kept in `meta`. Same retry and
    rate rules as the crawler.

    Example: pipeline fetch api --url https://api.example.com/items --paging cursor --output docs
    """

    kind: Literal["api"] = "api"

class _SqlFields(Options):
    dsn: str = ""
    """Connection URI, postgresql://user@host:port/database, or "env:NAME" to read it from the
    environment variable NAME. Keep the password out of the job file: libpq reads PGPASSWORD
    and ~/.pgpass (a password given here is shown as *** in manifests and messages)."""
    query: str = ""
    """The SELECT whose rows become documents."""
    batch_mb: float = Field(16.0, gt=0)
    """Size hint, in MiB, of each Arrow batch the driver streams from the server."""

    @model_validator(mode="after")
    def _needs_query(self) -> _SqlFields:
        if not self.dsn.startswith(("postgresql://", "postgres://", ENV_PREFIX)):
            raise ValueError("sql needs dsn = postgresql://user@host:port/db")
        if not self.query.strip():
            raise ValueError("sql needs a query")
        return self


class SqlSource(_SourceBase, _RecordFields, _SqlFields):
    """Run a SQL query on PostgreSQL and stream the result in Arrow batches (ADBC) straight
    into document shards; never holds more than one shard in memory.

    Example: pipeline fetch sql --dsn postgresql://user@host/db --query "SELECT id, body AS text FROM posts" --output docs
    """

    kind: Literal["sql"] = "sql"

FILE_FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "html", "warc")


class _FilesFields(Options):
    glob: list[str] = []
    """File patterns (`**` recurses); repeatable."""
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "html", "warc",
                    "alpaca", "prompt_completion", "prompt_response", "question_answer", "openai",
                    "sharegpt"] = "auto"
    """File format; auto = from the extension (.csv .tsv .jsonl .ndjson .json .parquet .html .htm
    .warc). A record layout (alpaca, prompt_completion, prompt_response, question_answer, openai,
    sharegpt) names `record_format` instead and leaves the file format to the extension."""
    record_kind: Literal["text", "instruction", "chat"] = Field("text", json_schema_extra={"cli_aliases": ["--kind"]})
    """Record kind to read (CSV/JSONL/JSON/Parquet): text documents, instruction records
    (prompt, response, optional system) or chat records (messages); see docs/records.md."""
    record_format: Literal["auto", "alpaca", "prompt_completion", "prompt_response", "question_answer",
                           "openai", "sharegpt"] = "auto"
    """Layout of instruction/chat records; auto = from the fields (messages → openai,
    conversations → sharegpt, instruction+output → alpaca, prompt+completion, prompt+response,
    question+answer)."""
    strict: bool = False
    """Fail on the first malformed line or invalid record, naming file and line (default:
    permissive, such records go to the rejected dataset with file, line and reason)."""
    max_bytes: int = Field(10 * MIB, ge=1)
    """Largest HTML page or WARC record body kept, decompressed; larger ones get an error row."""
    html_files_per_task: int = Field(200, ge=1)
    """HTML files read per task (one task per structured file)."""

    @model_validator(mode="after")
    def _needs_glob(self) -> _FilesFields:
        if not self.glob:
            raise ValueError("files needs at least one glob pattern (glob = [...], --glob PATTERN)")
        if self.format not in ("auto", *FILE_FORMATS):  # a record layout given as --format
            if self.record_format not in ("auto", self.format):
                raise ValueError(f"format = {self.format!r} and record_format = {self.record_format!r} disagree")
            layout = self.format
            object.__setattr__(self, "format", "auto")
            object.__setattr__(self, "record_format", layout)
        if self.record_kind == "text" and self.record_format != "auto":
            raise ValueError(f"record_format = {self.record_format!r} needs record_kind = instruction or chat (--kind)")
        if self.record_kind == "instruction" and self.record_format in ("openai", "sharegpt"):
            raise ValueError(f"{self.record_format} records are conversations: use record_kind = chat (--kind chat)")
        return self


class FilesSource(_SourceBase, _RecordFields, _FilesFields):
    """Read local files: CSV/TSV, JSONL, Parquet become documents (structured records); HTML
    files and WARC captures become raw pages for `extract` (url = the file's path, or the
    WARC target URI). Any of them may be gzip- or bzip2-compressed (.gz, .bz2).

    Instruction and chat records (`--kind instruction|chat`) are read from JSONL, JSON arrays
    and Parquet in the layouts of docs/records.md and validated; a malformed line or an invalid
    record goes to rejected/<output>/ with file, line and reason (`--strict` fails instead).

    Example: pipeline fetch files --glob 'data/*.jsonl.gz' --text-field body --output docs

    Example: pipeline fetch files --glob gsm8k.jsonl --kind instruction --output docs
    """

    kind: Literal["files"] = "files"

Source = Annotated[CrawlSource | ApiSource | SqlSource | FilesSource, Field(discriminator="kind")]

PAGE_KINDS = {"crawl"}  # always raw pages; `files` depends on the formats it finds
RECORD_KINDS = {"api", "sql"}
