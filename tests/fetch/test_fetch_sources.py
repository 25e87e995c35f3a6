"""The record sources against real servers and real files: SQL (PostgreSQL), a JSON API on
127.0.0.1, CSV/TSV/JSONL/Parquet, HTML files and WARC captures."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from aiohttp import web

from pipeline.config import ConfigError
from pipeline.dataset import Dataset
from pipeline.fetch import ApiSource, FilesSource, Options, SqlSource, run
from pipeline.fetch.files import iter_warc_rows
from pipeline.hashing import doc_id


def fetch(output: Path, engine, *sources) -> tuple[pl.DataFrame, object]:
    result = run([], output, Options(sources=list(sources)), engine)
    return Dataset(output).scan().collect(), result


# -- SQL ---------------------------------------------------------------------------------------
def test_sql_streams_a_real_table_into_document_shards(postgres_dsn, shared_data, tmp_path, local_engine):
    import adbc_driver_postgresql.dbapi as pg

    sms = pl.read_csv(shared_data / "labelled" / "sms_spam.tsv", separator="\t", quote_char=None)
    sms = sms.with_row_index("sms_id", offset=1).with_columns(pl.col("sms_id").cast(pl.Int64))
    with pg.connect(postgres_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS sms")
        connection.commit()
        cursor.adbc_ingest("sms", sms.to_arrow(), mode="create")
        connection.commit()
    source = SqlSource(dsn=postgres_dsn, query='SELECT sms_id, "Label" AS label, "SMS" AS text, '
                       "length(\"SMS\") AS chars FROM sms ORDER BY sms_id", id_field="sms_id",
                       shard_mb=0.25, batch_mb=0.1)
    frame, result = fetch(tmp_path / "docs", local_engine, source)
    assert frame.height == result.rows_out == 5574
    assert len(Dataset(tmp_path / "docs").manifest()["shards"]) > 1  # rolled by size
    assert Counter(frame["label"]) == {"ham": 4827, "spam": 747}
    first = frame.sort("fetched_at").filter(pl.col("id") == pl.select(doc_id(pl.lit("sql:1"))).item())
    assert first["text"][0].startswith("Go until jurong point")
    assert json.loads(first["meta"][0]) == {"chars": len(first["text"][0])}
    assert frame["id"].n_unique() == 5574 and set(frame["source"]) == {"sql"}


def test_sql_error_names_the_problem(postgres_dsn, tmp_path, local_engine):
    source = SqlSource(dsn=postgres_dsn, query="SELECT * FROM no_such_table")
    with pytest.raises(RuntimeError, match="no_such_table"):
        fetch(tmp_path / "docs", local_engine, source)


# -- JSON API ----------------------------------------------------------------------------------
RECORDS = [{"id": i, "body": {"text": f"record number {i}", "lang": "en"}, "tags": ["a", str(i % 3)],
            "label": "even" if i % 2 == 0 else "odd"} for i in range(53)]


class JsonApi:
    """A paged JSON API on 127.0.0.1: page, offset and cursor paging, one 429 with Retry-After."""

    def __init__(self):
        self.hits: Counter[str] = Counter()
        self._ready = threading.Event()

    async def page(self, request):
        self.hits["page"] += 1
        if self.hits["page"] == 2:
            return web.Response(status=429, headers={"Retry-After": "0.2"})
        page, size = int(request.query["page"]), int(request.query["per_page"])
        return web.json_response({"results": RECORDS[(page - 1) * size: page * size], "page": page})

    async def offset(self, request):
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return web.json_response(RECORDS[offset: offset + limit])

    async def cursor(self, request):
        start = int(request.query.get("cursor", "0"))
        nxt = start + 20 if start + 20 < len(RECORDS) else None
        return web.json_response({"meta": {"next": nxt}, "data": {"rows": RECORDS[start:start + 20]}})

    async def fragile(self, request):
        """Page 3 fails (500) until `healed`; pages of 10 records."""
        page = int(request.query["page"])
        self.hits[f"fragile:{page}"] += 1
        if page == 3 and not self.healed:
            return web.Response(status=500, text="database on fire")
        return web.json_response({"items": RECORDS[(page - 1) * 10: page * 10]})

    def _serve(self):
        self.healed = False
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/fragile", self.fragile)
        app.router.add_get("/page", self.page)
        app.router.add_get("/offset", self.offset)
        app.router.add_get("/cursor", self.cursor)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def json_api():
    with JsonApi() as api:
        yield api


@pytest.mark.parametrize("paging", ["page", "offset", "cursor"])
def test_api_pages_through_every_record(json_api, paging, tmp_path, local_engine):
    common = dict(allow_private=True, text_field="body.text", id_field="id", retries=2)
    source = {
        "page": ApiSource(url=json_api.url + "/page", paging="page", size_param="per_page", page_size=10, **common),
        "offset": ApiSource(url=json_api.url + "/offset", paging="offset", size_param="limit", page_size=25, **common),
        "cursor": ApiSource(url=json_api.url + "/cursor", paging="cursor", cursor_path="meta.next",
                            records_path="data.rows", **common),
    }[paging]
    frame, result = fetch(tmp_path / "docs", local_engine, source)
    assert frame.height == 53
    assert sorted(frame["text"]) == sorted(f"record number {i}" for i in range(53))
    row = frame.filter(pl.col("text") == "record number 7").row(0, named=True)
    assert row["label"] == "odd"
    assert json.loads(row["meta"]) == {"body.lang": "en", "tags": ["a", "1"]}
    assert row["id"] == pl.select(doc_id(pl.lit("127.0.0.1_" + json_api.url.rsplit(":", 1)[1] + ":7"))).item()
    if paging == "page":
        assert json_api.hits["page"] == 7  # 5 full pages, 1 short one (the end), 1 retry after 429


def test_api_failure_names_the_page_and_the_rerun_resumes_there(json_api, tmp_path, local_engine):
    source = ApiSource(url=json_api.url + "/fragile", allow_private=True, text_field="body.text",
                       retries=1, shard_mb=0.001)
    with pytest.raises(RuntimeError, match=r"fragile with \{'page': '3'\}: HTTP 500 \(gave up after 2 attempts\)"):
        fetch(tmp_path / "docs", local_engine, source)
    assert json_api.hits["fragile:3"] == 2
    json_api.healed = True
    frame, _ = fetch(tmp_path / "docs", local_engine, source)
    assert frame.height == 53 and frame["id"].n_unique() == 53
    assert json_api.hits["fragile:1"] == 1 and json_api.hits["fragile:2"] == 1  # not asked again
    assert json_api.hits["fragile:3"] == 3


# -- local files -------------------------------------------------------------------------------
def test_files_csv_tsv_jsonl_parquet_become_documents(shared_data, tmp_path, dask_engine, local_engine):
    csv = FilesSource(glob=[str(shared_data / "labelled" / "rotten_tomatoes.csv.bz2")],
                      label_field="category", name="rt")
    frame, result = fetch(tmp_path / "rt", dask_engine, csv)
    assert frame.height == 13905
    assert Counter(frame["label"]) == {"fresh": 7403, "rotten": 5405, "plot": 1097}
    assert set(json.loads(frame["meta"][0])) == {"movie_name", "has_plot_and_reviews"}
    assert frame["id"].n_unique() == 13905

    tsv = FilesSource(glob=[str(shared_data / "labelled" / "sms_spam.tsv")], text_field="SMS", label_field="Label")
    frame, _ = fetch(tmp_path / "sms", local_engine, tsv)
    assert frame.height == 5574 and Counter(frame["label"])["spam"] == 747

    jsonl = shared_data / "neardup" / "spdx_licenses.jsonl"
    gz = tmp_path / "spdx.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    pl.read_ndjson(jsonl).write_parquet(tmp_path / "spdx.parquet")
    both = FilesSource(glob=[str(gz), str(tmp_path / "*.parquet")], id_field="id", title_field="name", name="spdx")
    frame, result = fetch(tmp_path / "spdx", local_engine, both)
    assert frame.height == 2 * 728
    assert frame["id"].n_unique() == 728  # same record ids in both files → same document ids
    mit = frame.filter(pl.col("title") == "MIT License")
    assert mit.height == 2 and "Permission is hereby granted" in mit["text"][0]


def test_files_missing_text_field_names_the_fields(shared_data, tmp_path, local_engine):
    source = FilesSource(glob=[str(shared_data / "labelled" / "sms_spam.tsv")])
    with pytest.raises(Exception, match=r"text field 'text' not found.*'Label', 'SMS'"):
        fetch(tmp_path / "x", local_engine, source)


def test_files_html_become_raw_pages_and_resume(shared_data, tmp_path, local_engine):
    pattern = str(shared_data / "extraction" / "aeb" / "html" / "*.html.gz")
    source = FilesSource(glob=[pattern], html_files_per_task=50, name="aeb")
    frame, result = fetch(tmp_path / "raw", local_engine, source)
    assert frame.height == 181 and frame["error"].null_count() == 181
    assert all(u.endswith(".html.gz") for u in frame["url"])
    assert all(b"<" in body for body in frame["body"][:10])
    manifest = Dataset(tmp_path / "raw").manifest()
    assert len(manifest["shards"]) == 4  # 4 tasks of at most 50 files
    again, result = fetch(tmp_path / "raw", local_engine, source)
    assert result.details["sources"]["files00:aeb"]["files_resumed"] == 4
    assert Dataset(tmp_path / "raw").manifest()["content_sha256"] == manifest["content_sha256"]


def _warc_record(kind: str, uri: str, block: bytes, content_type: str) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-05-01T10:00:00Z\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(block)}\r\n\r\n").encode()
    return gzip.compress(head + block + b"\r\n\r\n")


def test_warc_responses_become_raw_pages(shared_data, tmp_path, local_engine):
    pages = sorted((shared_data / "extraction" / "aeb" / "html").glob("*.html.gz"))[:3]
    records = [_warc_record("warcinfo", "", b"software: test\r\n", "application/warc-fields")]
    for i, page in enumerate(pages):
        html = gzip.decompress(page.read_bytes())
        if i == 1:  # chunked and gzip-encoded on the wire, as many servers send it
            body = gzip.compress(html)
            chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[k:k + 4000]), body[k:k + 4000])
                               for k in range(0, len(body), 4000)) + b"0\r\n\r\n"
            http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                    b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked)
        else:
            http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html
        records.append(_warc_record("request", f"https://example.org/{i}", b"GET / HTTP/1.1\r\n\r\n",
                                    "application/http; msgtype=request"))
        records.append(_warc_record("response", f"https://example.org/{i}", http, "application/http; msgtype=response"))
    records.append(_warc_record("response", "https://example.org/logo.png",
                                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG", "application/http"))
    warc = tmp_path / "crawl.warc.gz"
    warc.write_bytes(b"".join(records))
    frame, _ = fetch(tmp_path / "raw", local_engine, FilesSource(glob=[str(warc)], name="warc"))
    assert frame["url"].to_list() == [f"https://example.org/{i}" for i in range(3)] + ["https://example.org/logo.png"]
    for i, page in enumerate(pages):
        assert frame["body"][i] == gzip.decompress(page.read_bytes())
    assert frame["error"].to_list() == [None, None, None, "skipped content type image/png"]
    assert frame["fetched_at"][0].isoformat() == "2024-05-01T10:00:00+00:00"
    assert iter_warc_rows  # the reader is public for other tools


def test_mixing_pages_and_records_is_refused(shared_data, tmp_path, local_engine):
    html = FilesSource(glob=[str(shared_data / "extraction" / "aeb" / "html" / "*.html.gz")])
    tsv = FilesSource(glob=[str(shared_data / "labelled" / "sms_spam.tsv")], text_field="SMS")
    with pytest.raises(ConfigError, match="either raw pages or documents"):
        fetch(tmp_path / "x", local_engine, html, tsv)


def test_sql_table_roundtrip_types_go_to_meta(postgres_dsn, tmp_path, local_engine):
    import adbc_driver_postgresql.dbapi as pg

    table = pa.table({"k": [1, 2], "body": ["first text", "second text"],
                      "score": [0.5, 1.5], "when": pa.array([0, 86_400_000_000], pa.timestamp("us", "UTC"))})
    with pg.connect(postgres_dsn) as connection, connection.cursor() as cursor:
        cursor.adbc_ingest("typed", table, mode="replace")
        connection.commit()
    source = SqlSource(dsn=postgres_dsn, query="SELECT * FROM typed ORDER BY k", text_field="body", name="typed")
    frame, _ = fetch(tmp_path / "docs", local_engine, source)
    assert frame["text"].to_list() == ["first text", "second text"]
    assert json.loads(frame["meta"][1]) == {"k": 2, "score": 1.5, "when": "1970-01-02 00:00:00.000000+00:00"}
