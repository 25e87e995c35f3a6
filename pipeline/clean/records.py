"""Clean instruction and chat records turn by turn.

Every turn of a record (an instruction's system, prompt and response; each message of a chat)
is normalised and PII-masked on its own, as one row of a "turns" frame that goes through the
same plan as documents (`clean_text`), and the cleaned turns are put back in place; the
record's `text` is then rendered again from them (pipeline.records). The quality rules judge
either the joined rendering (`record_rules = "joined"`, the document rules as they are) or each
turn (`"per_turn"`: a record is dropped with the reason of its first failing turn). A turn that
cleaning leaves empty drops its record in both modes (reason `empty turn`).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pipeline.records import MESSAGES, record_text
from pipeline.stage import REASON

INSTRUCTION_FIELDS = ("system", "prompt", "response")
TURN_REASON = "_turn_reason"  # the reason of a record's first failing turn (per_turn mode)
EMPTY_TURN = "_empty_turn"  # "empty turn" when cleaning emptied one of a record's turns


def _turns(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per turn of the frame's instruction and chat rows: `_row` (row in the frame),
    `_field`, `_order` (turn order in its record), `_role` (chat) and `text`."""
    rows = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "kind", *INSTRUCTION_FIELDS, "messages")
    parts = [
        rows.filter(pl.col("kind") == "instruction", pl.col(field).is_not_null())
        .select("_row", pl.lit(field).alias("_field"), pl.lit(order, pl.Int64).alias("_order"),
                pl.lit(None, pl.String).alias("_role"), pl.col(field).alias("text"))
        for order, field in enumerate(INSTRUCTION_FIELDS)
    ]
    chats = (rows.filter(pl.col("kind") == "chat", pl.col("messages").list.len() > 0)
             .select("_row", "messages").explode("messages")
             .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("_row").alias("_order")))
    parts.append(chats.select("_row", pl.lit("messages").alias("_field"), "_order",
                              pl.col("messages").struct.field("role").alias("_role"),
                              pl.col("messages").struct.field("content").alias("text")))
    return pl.concat(parts, how="vertical")


def clean_record_batch(batch: pl.DataFrame, clean_text: Callable[[pl.LazyFrame], pl.LazyFrame],
                       pii_columns: list[str], per_turn: bool) -> pl.DataFrame:
    """`clean_text` (the document plan) over a batch holding instruction/chat rows: the turns
    are cleaned first (see the module docstring), the rows' `text` rendered from them, then the
    plan runs over the whole batch; PII counts add up over both passes."""
    turns = _turns(batch)
    if not turns.height:
        return clean_text(batch.lazy()).collect(engine="streaming")
    cleaned = clean_text(turns.with_columns(pl.lit(None, pl.String).alias("_reject")).lazy()).collect(engine="streaming")
    cleaned = cleaned.sort("_row", "_order")
    updates = batch.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))
    for field in INSTRUCTION_FIELDS:
        part = cleaned.filter(pl.col("_field") == field).select("_row", pl.col("text").alias(field))
        updates = updates.join(part, on="_row", how="left")
    messages = (cleaned.filter(pl.col("_field") == "messages")
                .group_by("_row", maintain_order=True)
                .agg(pl.struct(pl.col("_role").alias("role"), pl.col("text").alias("content")).alias("messages")))
    updates = updates.join(messages.with_columns(pl.col("messages").cast(MESSAGES)), on="_row", how="left")
    empty = pl.col("text").is_null() | (pl.col("text") == "")
    per_row = cleaned.group_by("_row", maintain_order=True).agg(
        *[pl.col(c).sum().alias(f"_turn_{c}") for c in pii_columns],
        pl.col(REASON).drop_nulls().first().alias(TURN_REASON),
        pl.when(empty.any()).then(pl.lit("empty turn")).alias(EMPTY_TURN),
    )
    updates = updates.join(per_row, on="_row", how="left")
    is_record = pl.col("kind").is_in(["instruction", "chat"])
    merged = batch.with_columns(
        *[pl.when(is_record).then(updates[name]).otherwise(pl.col(name)).alias(name)
          for name in (*INSTRUCTION_FIELDS, "messages")],
        *[updates[c] for c in updates.columns if c.startswith("_turn_") or c in (TURN_REASON, EMPTY_TURN)],
        pl.col("_reject").alias("_policy_reject"),
    ).with_columns(record_text().alias("text"))
    result = clean_text(merged.lazy()).collect(engine="streaming")
    turn_reason = pl.col(TURN_REASON) if per_turn else pl.lit(None, pl.String)
    # the document rules judged the rendering (joined) or not at all (per_turn); a policy's
    # reject (missing values) comes first either way
    joined = pl.col(REASON) if not per_turn else pl.when(pl.col(REASON) == "empty").then(pl.col(REASON))
    record_reason = pl.coalesce(pl.col("_policy_reject"), pl.col(EMPTY_TURN), turn_reason, joined)
    return result.with_columns(
        pl.when(is_record).then(record_reason).otherwise(pl.col(REASON)).alias(REASON),
        *[(pl.col(c) + pl.col(f"_turn_{c}").fill_null(0)).alias(c) for c in pii_columns],
        pl.when(is_record).then(record_text()).otherwise(pl.col("text")).alias("text"),
    ).drop([f"_turn_{c}" for c in pii_columns] + [TURN_REASON, EMPTY_TURN, "_policy_reject"])
