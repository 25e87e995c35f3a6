"""Rows → Parquet shards: buffered, rolled by size, Hive-partitioned `source=<name>/date=<day>/`.

Every source writes through a `ShardRoller`: it keeps rows in memory until about `shard_bytes`
are buffered, then writes one shard per fetch date through the stage's `StageOutput` (atomic
rename), so memory stays bounded by the shard size whatever the source's size.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from pipeline.dataset import ShardInfo, StageOutput
from pipeline.schema import DOC_SCHEMA, FETCHED_AT, RAW_SCHEMA


def partition_value(name: str) -> str:
    """A source name made safe for a Hive folder name (`source=<value>`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


def utc_now() -> datetime:
    return datetime.now(UTC)


def raw_row(
    url: str,
    source: str,
    *,
    final_url: str | None = None,
    status: int | None = None,
    content_type: str | None = None,
    headers: str = "{}",
    body: bytes | None = None,
    error: str | None = None,
    fetched_at: datetime | None = None,
) -> dict[str, Any]:
    """One RAW_SCHEMA row; `error` is null exactly when `body` holds a page worth extracting."""
    return {
        "url": url,
        "final_url": final_url or url,
        "status": status,
        "content_type": content_type,
        "headers": headers,
        "body": body,
        "fetched_at": fetched_at or utc_now(),
        "source": source,
        "error": error,
    }


class ShardRoller:
    """Buffer rows of one schema and write them as shards of about `shard_bytes` each.

    `prefix` names the shards (`<prefix>-00000.parquet`), unique per task so resumed and
    parallel tasks never collide. `flush()` returns the shards it wrote.
    """

    def __init__(self, output: StageOutput, source: str, prefix: str, shard_bytes: int,
                 schema: dict[str, pl.DataType] = RAW_SCHEMA, start: int = 0, name: str = "main"):
        self.output = output
        self.name = name  # which of the stage's outputs the shards go to
        self.source = partition_value(source)
        self.prefix = prefix
        self.shard_bytes = shard_bytes
        self.schema = schema
        self.sequence = start
        self._rows: list[dict[str, Any]] = []
        self._frames: list[pl.DataFrame] = []
        self.buffered_bytes = 0
        self.written: list[ShardInfo] = []

    def add_row(self, row: dict[str, Any]) -> list[ShardInfo]:
        self._rows.append(row)
        self.buffered_bytes += 256 + len(row.get("body") or b"") + len(row.get("headers") or "")
        return self.flush() if self.buffered_bytes >= self.shard_bytes else []

    def add_frame(self, frame: pl.DataFrame, cut: bool = False) -> list[ShardInfo]:
        """Buffer a frame's rows; flush when `shard_bytes` are buffered. With `cut`, a frame
        larger than the room left is cut, so every shard holds about `shard_bytes` (by the rows'
        string and binary bytes) whatever the batch size; without it a frame stays whole in one
        shard (the API source checkpoints after whole pages)."""
        written: list[ShardInfo] = []
        if not frame.height:
            return written
        if not cut:
            self._frames.append(frame)
            self.buffered_bytes += frame.estimated_size()
            return self.flush() if self.buffered_bytes >= self.shard_bytes else []
        ends = np.cumsum(row_bytes(frame))
        start, consumed = 0, 0
        while start < frame.height:
            room = self.shard_bytes - self.buffered_bytes
            stop = int(np.searchsorted(ends, consumed + room, side="right"))
            if stop <= start:  # one row larger than the room: alone in a shard if need be
                if self.buffered_bytes:
                    written += self.flush()
                    continue
                stop = start + 1
            self._frames.append(frame.slice(start, stop - start))
            self.buffered_bytes += int(ends[stop - 1]) - consumed
            consumed, start = int(ends[stop - 1]), stop
            if self.buffered_bytes >= self.shard_bytes or start < frame.height:
                written += self.flush()
        return written

    @property
    def pending_rows(self) -> int:
        return len(self._rows) + sum(f.height for f in self._frames)

    def flush(self) -> list[ShardInfo]:
        frames = list(self._frames)
        if self._rows:
            frames.append(pl.DataFrame(self._rows, schema=self.schema))
        self._rows, self._frames, self.buffered_bytes = [], [], 0
        if not frames:
            return []
        frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
        frame = frame.with_columns(pl.lit(self.source).alias("source"))
        day = pl.col("fetched_at").cast(FETCHED_AT).dt.date().cast(pl.String).fill_null("unknown")
        infos = []
        for (date,), part in frame.with_columns(_day=day).group_by("_day", maintain_order=True):
            relpath = f"source={self.source}/date={date}/{self.prefix}-{self.sequence:05d}.parquet"
            infos.append(self.output.write(self.name, part.drop("_day"), relpath))
            self.sequence += 1
        self.written.extend(infos)
        return infos


def row_bytes(frame: pl.DataFrame) -> np.ndarray:
    """Per-row size estimate: bytes of the string and binary columns plus 64 for the rest."""
    sizes = [pl.col(c).str.len_bytes() if d == pl.String else pl.col(c).bin.size()
             for c, d in frame.schema.items() if d in (pl.String, pl.Binary)]
    if not sizes:
        return np.full(frame.height, 64, np.int64)
    total = pl.sum_horizontal([s.fill_null(0).cast(pl.Int64) for s in sizes]) + 64
    return frame.select(total).to_series().to_numpy()


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


__all__ = ["DOC_SCHEMA", "RAW_SCHEMA", "ShardRoller", "partition_value", "raw_row", "utc_now"]
