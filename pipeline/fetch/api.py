"""A paged JSON API → documents: page, offset or cursor paging, the crawler's retry and rate rules.

Each response's record list (`records_path`, or found automatically) is flattened (nested keys
joined with dots, `{"a": {"b": 1}}` → column `a.b`) and mapped onto the document columns.
Pages are asked for one after another (the next cursor is in the last response). After every
shard the position (next page, offset or cursor) is checkpointed, so a killed run resumes there.
A page that still fails after the retries stops the run with an error naming the page; the
shards written so far stay and the next run resumes from the last checkpoint.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import polars as pl

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.fetch.crawl import _run_coroutine
from pipeline.fetch.http import HttpClient
from pipeline.fetch.options import ApiSource
from pipeline.fetch.records import records_to_docs
from pipeline.fetch.writer import DOC_SCHEMA, ShardRoller, utc_now
from pipeline.progress import Progress
from pipeline.secrets import resolve_mapping, scrub, secret_values

AUTO_RECORD_KEYS = ("data", "results", "items", "records")


class ApiError(RuntimeError):
    """A page of the API failed after its retries, or its JSON has no record list."""


def dotted(value: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def find_records(payload: Any, path: str) -> list[dict]:
    if path:
        records = dotted(payload, path)
    elif isinstance(payload, list):
        records = payload
    else:
        records = next((payload[k] for k in AUTO_RECORD_KEYS if isinstance(payload, dict)
                        and isinstance(payload.get(k), list)), None)
    if not isinstance(records, list):
        raise ApiError(f"no record list in the response (records_path={path!r}; "
                       f"top-level keys: {sorted(payload)[:20] if isinstance(payload, dict) else type(payload).__name__})")
    return [r if isinstance(r, dict) else {"value": r} for r in records]


class ApiFetcher:
    def __init__(self, options: ApiSource, output: StageOutput, task: str, source: str):
        self.options = options
        self.output = output
        self.task = task
        self.source = source
        self.state_path = output.outputs["main"] / "_crawl" / f"{task}.json.gz"

    def _load(self) -> dict:
        if self.state_path.exists():
            state = json.loads(gzip.decompress(self.state_path.read_bytes()))
        else:
            opts = self.options
            start = opts.first_page if opts.paging == "page" else 0
            state = {"position": start, "cursor": None, "rows": 0, "requests": 0, "tasks": [],
                     "sequence": 0, "finished": False}
        known = set(state["tasks"])
        for record_path in self.output.progress_dir.glob("*.json"):
            data = json.loads(record_path.read_text())
            if data.get("task", "").startswith(f"{self.task}-") and data["task"] not in known:
                for shard in data["outputs"].get("main", []):
                    (self.output.outputs["main"] / shard["path"]).unlink(missing_ok=True)
                record_path.unlink()
        return state

    def _save(self, state: dict) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_bytes(gzip.compress(json.dumps(state).encode()))
        tmp.replace(self.state_path)

    def _checkpoint(self, state: dict, infos: list, finished: bool = False) -> None:
        for info in infos:
            key = f"{self.task}-{info.path.rsplit('-', 1)[-1].removesuffix('.parquet')}"
            self.output.commit(TaskRecord(task=key, fingerprint="", outputs={"main": [info]},
                                          counts={"rows_out": info.rows}))
            state["tasks"].append(key)
        state["finished"] = finished
        self._save(state)

    def params(self, state: dict) -> dict[str, str]:
        opts = self.options
        params = resolve_mapping(opts.params, "params")
        if opts.size_param:
            params[opts.size_param] = str(opts.page_size)
        if opts.paging == "page":
            params[opts.page_param] = str(state["position"])
        elif opts.paging == "offset":
            params[opts.offset_param] = str(state["position"])
        elif opts.paging == "cursor" and state["cursor"] is not None:
            params[opts.cursor_param] = str(state["cursor"])
        return params

    async def fetch(self, state: dict) -> dict[str, int]:
        opts = self.options
        secrets = secret_values(opts.headers, "headers") + secret_values(opts.params, "params")
        roller = ShardRoller(self.output, self.source, self.task, opts.shard_bytes, DOC_SCHEMA,
                             start=state["sequence"])
        async with HttpClient(
            concurrency=1, per_host=1, delay=opts.delay, timeout=opts.timeout,
            max_bytes=opts.max_bytes, user_agent=opts.user_agent, allow_private=opts.allow_private,
            retries=opts.retries, max_retry_after=opts.max_retry_after,
            headers={"Accept": "application/json", **resolve_mapping(opts.headers, "headers")},
        ) as http:
            with Progress(f"api {self.source}", unit="page", stats=lambda: {"records": state["rows"]}) as progress:
                await self._pages(http, state, roller, secrets, progress)
        return {"requests": state["requests"], "records": state["rows"]}

    async def _pages(self, http: HttpClient, state: dict, roller: ShardRoller, secrets: list[str],
                     progress: Progress) -> None:
        """Ask for pages until the last one, max_requests or a failure (see the module docstring)."""
        opts = self.options
        while not state["finished"] and state["requests"] < opts.max_requests:
            params = self.params(state)
            response = await http.get(opts.url, accept=lambda t: True, params=params)
            state["requests"] += 1
            progress.update()
            # never echo a token: the secret values and anything named like one become ***
            where = scrub(f"{opts.url} with {params}", secrets)
            if response.error is not None or response.body is None:
                # keep what was fetched: the next run resumes at this page
                state["sequence"] = roller.sequence
                self._checkpoint(state, roller.flush())
                raise ApiError(f"api page {where}: {scrub(response.error or 'empty response', secrets)}")
            try:
                payload = json.loads(response.body)
            except ValueError as error:
                raise ApiError(f"api page {where}: not JSON: {error}") from None
            records = find_records(payload, opts.records_path)
            if records:
                frame = pl.json_normalize(records, separator=".", infer_schema_length=None)
                docs = records_to_docs(frame, opts, self.source, f"{self.source}:{opts.url}",
                                       state["rows"], utc_now())
                state["rows"] += len(records)
                infos = roller.add_frame(docs)
            else:
                infos = []
            done = self._advance(state, payload, records)
            if infos or done:
                state["sequence"] = roller.sequence
                self._checkpoint(state, infos + roller.flush() if done else infos, finished=done)
        if not state["finished"]:  # stopped by max_requests
            state["sequence"] = roller.sequence
            self._checkpoint(state, roller.flush(), finished=True)

    def _advance(self, state: dict, payload: Any, records: list) -> bool:
        """Move to the next page; True when there is none."""
        opts = self.options
        if opts.paging == "none":
            return True
        if opts.paging == "cursor":
            cursor = dotted(payload, opts.cursor_path)
            if cursor in (None, "") or cursor == state["cursor"] or not records:
                return True
            state["cursor"] = cursor
            return False
        if not records or (opts.size_param and len(records) < opts.page_size):
            return True
        state["position"] += 1 if opts.paging == "page" else len(records)
        return False

    def records(self) -> list[TaskRecord]:
        state = json.loads(gzip.decompress(self.state_path.read_bytes()))
        return [r for r in (self.output.completed(t) for t in state["tasks"]) if r is not None]


def fetch_api(options: ApiSource, output: StageOutput, task: str, source: str) -> tuple[list[TaskRecord], dict]:
    started = time.perf_counter()
    fetcher = ApiFetcher(options, output, task, source)
    state = fetcher._load()
    counts = {"resumed_finished": 1} if state["finished"] else _run_coroutine(fetcher.fetch(state))
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return fetcher.records(), counts
