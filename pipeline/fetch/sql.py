"""A SQL query on PostgreSQL → documents, streamed: ADBC (libpq, COPY in binary) hands over
Arrow record batches, each batch is mapped onto the document columns and shards are rolled
by size, so memory holds about one shard whatever the result's size.

A query result cannot be resumed half-way, so one SQL source is one task: a killed run
re-runs the query (the partial shards of the killed attempt are removed first).
"""

from __future__ import annotations

import time

import polars as pl

from pipeline.dataset import StageOutput, TaskRecord
from pipeline.fetch.options import SqlSource
from pipeline.fetch.records import records_to_docs
from pipeline.fetch.writer import DOC_SCHEMA, ShardRoller, utc_now
from pipeline.secrets import resolve, scrub


class SqlError(RuntimeError):
    """The database refused the connection or the query; the message carries its reason."""


def _passwords(dsn: str) -> list[str]:
    """The password(s) a DSN carries, so an error message quoting them can be scrubbed."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(dsn)
    found = [unquote(parts.password)] if parts.password else []
    return found + parse_qs(parts.query).get("password", [])


def fetch_sql(options: SqlSource, output: StageOutput, task: str, source: str) -> tuple[list[TaskRecord], dict]:
    started = time.perf_counter()
    done = output.completed(task)
    if done is not None:
        return [done], {"resumed_finished": 1}
    root = output.outputs["main"]
    for stale in root.glob(f"source=*/date=*/{task}-*.parquet"):
        stale.unlink()
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as pg

    roller = ShardRoller(output, source, task, options.shard_bytes, DOC_SCHEMA)
    fetched_at = utc_now()
    rows = batches = 0
    dsn = resolve(options.dsn, "dsn")
    try:
        with pg.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.adbc_statement.set_options(**{
                "adbc.postgresql.batch_size_hint_bytes": str(int(options.batch_mb * (1 << 20))),
            })
            cursor.execute(options.query)
            reader = cursor.fetch_record_batch()
            for batch in reader:
                frame = pl.from_arrow(batch)
                docs = records_to_docs(frame, options, source, f"{source}:sql", rows, fetched_at)
                rows += frame.height
                batches += 1
                roller.add_frame(docs)
    except adbc_driver_manager.Error as error:
        # libpq may quote the connection string back: no password in the message
        raise SqlError(scrub(f"fetch sql: {type(error).__name__}: {error}", [dsn, *_passwords(dsn)])) from None
    roller.flush()
    record = TaskRecord(task=task, fingerprint="", outputs={"main": roller.written},
                        counts={"rows_out": rows})
    output.commit(record)
    return [record], {"records": rows, "batches": batches, "seconds": round(time.perf_counter() - started, 3)}
