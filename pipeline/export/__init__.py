"""Export: the trainer's layout — train/ validation/ test/ files and a dataset card a trainer loads in one line.

Reads split shard sets (splits/, or a stage after split that keeps its layout: decontaminate,
tokens) and writes, per input shard, `<split>/<shard>.parquet` and/or `.jsonl` (the split from
the `split` column; `val` becomes `validation`; rows without a split column go to train), in one
form:
- `text`: a `text` column (instruction and chat rows rendered as pipeline.tokens.record_text);
- `instruction`: `prompt`, `response` and `system` (text and chat rows are not exported in
  this form: they go to rejected/export with a reason);
- `messages`: `messages` = list of {role, content}; instruction rows become [system,] user,
  assistant turns; text rows go to rejected/export;
- `auto`: `messages` if any row is chat, else `instruction` if any row is an instruction, else `text`.
Only the form's columns and the ones named in `columns` are written.

With `pack = N`, records are tokenized (their rendering, see pipeline.tokens.record_text) and
packed first-fit decreasing into sequences of at most N tokens per input shard
(pipeline.export.packing): rows are `input_ids`, `seq_lengths`, `record_ids`, `n_tokens`.
Records longer than N go to rejected/export (`longer_than_pack`) or are cut into pieces of N
tokens (`overlong = "split"`).

Last, README.md: a dataset card with the YAML header `datasets.load_dataset(<folder>)` reads
(configs, features, split sizes), licence and languages from the options, token counts and
packing figures from the files written, and the job's report/metrics.json when present.
Example: pipeline export --input out/tokens --output out/export --form instruction --format parquet --format jsonl
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from pipeline.dataset import (
    Dataset,
    ShardInfo,
    StageOutput,
    TaskRecord,
    file_sha256,
    sum_counts,
    write_bytes_atomic,
)
from pipeline.engine import Engine
from pipeline.errors import require_columns
from pipeline.export.card import SPLIT_ORDER, card_header, card_markdown, read_metrics
from pipeline.export.packing import pack_sequences
from pipeline.stage import REASON, Stage, StageResult, StageRun
from pipeline.stage import Options as StageOptions
from pipeline.tokens import (
    ENCODE_BATCH_ROWS,
    N_TOKENS,
    describe_tokenizer,
    load_tokenizer,
    record_text,
    tokenizer_sha256,
)

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
FORM_COLUMNS = {"text": ["text"], "instruction": ["prompt", "response", "system"], "messages": ["messages"]}
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
CARD = "README.md"


class Options(StageOptions):
    form: Literal["auto", "text", "instruction", "messages"] = "auto"
    """Record form written: `text`, `instruction` (prompt/response/system), `messages` (chat
    turns), or `auto` (messages if any row is chat, else instruction if any row is one, else text)."""
    format: list[Literal["parquet", "jsonl"]] = ["parquet"]
    """File formats written side by side (the card points `datasets` at the first)."""
    columns: list[str] = ["id"]
    """Input columns written besides the form's (e.g. id, label, n_tokens; [] for none)."""
    pack: int | None = Field(None, ge=16)
    """Pack records into sequences of at most this many tokens (first-fit decreasing per
    shard); unset: one record per row."""
    tokenizer: str | None = "gpt2"
    """Tokenizer for packing: a tokenizer.json path (or a folder holding one), or `gpt2`
    (bundled)."""
    eos_token: str | None = None
    """A token appended to every record before packing (e.g. `<|endoftext|>` for gpt2); must be
    in the tokenizer's vocabulary."""
    overlong: Literal["drop", "split"] = "drop"
    """Records longer than `pack`: `drop` (to rejected/export, reason `longer_than_pack`) or
    `split` (cut into pieces of `pack` tokens, each its own segment)."""
    license: str | None = None
    """Licence identifier written to the card (e.g. `mit`, `cc-by-4.0`)."""
    languages: list[str] = []
    """Languages written to the card (ISO 639-1); unset: the values of a `language` column."""
    title: str | None = None
    """The card's title (`pretty_name`)."""
    metrics: str | None = None
    """The report's metrics.json the card quotes (unset: `../report/metrics.json` beside the
    output, when present)."""

    @model_validator(mode="after")
    def _pack_needs_tokenizer(self) -> Options:
        if self.pack is not None and self.tokenizer is None:
            raise ValueError("pack needs a tokenizer (a tokenizer.json path or `gpt2`)")
        if not self.format:
            raise ValueError("format: name at least one of parquet, jsonl")
        return self

    def fingerprint_dict(self) -> dict[str, Any]:
        values = self.model_dump(mode="json")
        values["tokenizer_sha256"] = tokenizer_sha256(self.tokenizer) if self.pack else None
        return values


@dataclass
class ExportTask:
    key: str
    shard: Path
    relpath: str
    form: str
    options: Options
    output: StageOutput


# -- forms -------------------------------------------------------------------------------------
def choose_form(kinds: set[str], form: str) -> str:
    if form != "auto":
        return form
    return "messages" if "chat" in kinds else "instruction" if "instruction" in kinds else "text"


def _kind(schema: pl.Schema) -> pl.Expr:
    return pl.col("kind").fill_null("text") if "kind" in schema else pl.lit("text")


def form_frame(table: pl.DataFrame, form: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows in the form's columns plus every input column, rejected rows with `reason`)."""
    schema = table.schema
    kind = _kind(schema)
    if form == "text":
        out = table.with_columns(record_text(schema).alias("_text")).drop("text", strict=False).rename({"_text": "text"})
        return out, table.clear().with_columns(pl.lit(None, pl.String).alias(REASON))
    if form == "instruction":
        reason = (pl.when(kind == "chat").then(pl.lit("export_chat_as_instruction"))
                  .when(kind != "instruction").then(pl.lit(f"export_{'text'}_as_instruction")))
        staged = table.with_columns(reason.alias(REASON))
        kept = staged.filter(pl.col(REASON).is_null()).drop(REASON)
        if "system" not in kept.columns:
            kept = kept.with_columns(pl.lit(None, pl.String).alias("system"))
        return kept, staged.filter(pl.col(REASON).is_not_null())
    # messages
    turns = []
    if "prompt" in schema:
        turns = [pl.struct(role=pl.lit("user"), content=pl.col("prompt")),
                 pl.struct(role=pl.lit("assistant"), content=pl.col("response"))]
    system_turn = (pl.when(pl.col("system").is_not_null())
                   .then(pl.concat_list([pl.struct(role=pl.lit("system"), content=pl.col("system"))]))
                   .otherwise(pl.lit([], pl.List(MESSAGE)))) if "system" in schema else pl.lit([], pl.List(MESSAGE))
    from_instruction = pl.concat_list([system_turn, pl.concat_list(turns)]) if turns else pl.lit(None, pl.List(MESSAGE))
    existing = pl.col("messages") if "messages" in schema else pl.lit(None, pl.List(MESSAGE))
    reason = pl.when(~kind.is_in(["chat", "instruction"])).then(pl.lit("export_text_as_messages"))
    staged = table.with_columns(reason.alias(REASON))
    kept = (staged.filter(pl.col(REASON).is_null()).drop(REASON)
            .with_columns(pl.when(kind == "chat").then(existing).otherwise(from_instruction).alias("_messages"))
            .drop("messages", strict=False).rename({"_messages": "messages"}))
    return kept, staged.filter(pl.col(REASON).is_not_null())


# -- packing -----------------------------------------------------------------------------------
def token_lists(texts: pl.Series, options: Options) -> pa.ListArray:
    """Token ids of each text (list<uint32>), the eos token appended when set."""
    tokenizer = load_tokenizer(options.tokenizer)
    eos_id = None
    if options.eos_token is not None:
        eos_id = tokenizer.token_to_id(options.eos_token)
        if eos_id is None:
            raise ValueError(f"export: eos_token {options.eos_token!r} is not in tokenizer {options.tokenizer!r}")
    texts = texts.fill_null("").to_list()
    pieces, piece_lengths = [], []
    for start in range(0, len(texts), ENCODE_BATCH_ROWS):
        encodings = tokenizer.encode_batch_fast(texts[start:start + ENCODE_BATCH_ROWS], add_special_tokens=False)
        counts = np.fromiter((len(e) for e in encodings), np.int64, len(encodings))
        pieces.append(np.fromiter(chain.from_iterable(e.ids for e in encodings), np.uint32, int(counts.sum())))
        piece_lengths.append(counts)
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.uint32)
    lengths = np.concatenate(piece_lengths) if piece_lengths else np.zeros(0, np.int64)
    if eos_id is not None:
        flat = np.insert(flat, np.cumsum(lengths), np.uint32(eos_id))  # after each record's last token
        lengths = lengths + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint32()))


def pack_frame(table: pl.DataFrame, options: Options) -> tuple[pa.Table, pl.DataFrame, dict[str, int]]:
    """(packed sequences, rejected records, counts) of one shard's records."""
    capacity = int(options.pack)
    ids = table["id"] if "id" in table.columns else pl.Series("id", [str(i) for i in range(table.height)])
    rendered = table.select(record_text(table.schema).alias("t"))["t"]
    tokens = token_lists(rendered, options)
    lengths = np.diff(tokens.offsets.to_numpy())
    empty = lengths == 0
    too_long = lengths > capacity
    drop_long = too_long if options.overlong == "drop" else np.zeros_like(too_long)
    reasons = pl.Series(REASON, np.where(empty, "empty_record", np.where(drop_long, "longer_than_pack", "")))
    rejected = table.with_columns(reasons.replace("", None)).filter(pl.col(REASON).is_not_null())
    keep = np.flatnonzero(~empty & ~drop_long)
    offsets = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy(zero_copy_only=False)
    starts, item_lengths, item_rows = offsets[keep], lengths[keep], keep
    # overlong = "split": a record of L tokens becomes ceil(L / capacity) pieces, in order
    pieces = -(-item_lengths // capacity)
    item_rows = np.repeat(item_rows, pieces)
    piece_index = np.arange(item_rows.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    piece_starts = np.repeat(starts, pieces) + piece_index * capacity
    piece_lengths = np.minimum(np.repeat(item_lengths, pieces) - piece_index * capacity, capacity)
    gather_ends = np.cumsum(piece_lengths)
    gather = np.repeat(piece_starts - (gather_ends - piece_lengths), piece_lengths) + np.arange(int(gather_ends[-1]) if gather_ends.size else 0)
    items = pa.LargeListArray.from_arrays(pa.array(np.concatenate([[0], gather_ends]).astype(np.int64)),
                                          pa.array(values[gather], pa.uint32()))
    packed = pack_sequences(items, ids.to_arrow().take(pa.array(item_rows)), capacity)
    tokens_packed = int(piece_lengths.sum())
    sequences = packed.num_rows
    records = int(keep.size)
    counts = {"records": records, "pieces": int(item_rows.size), "sequences": sequences, "tokens": tokens_packed,
              "padding_unpacked": int(item_rows.size) * capacity - tokens_packed,
              "padding_packed": sequences * capacity - tokens_packed}
    return packed, rejected, counts


# -- files -------------------------------------------------------------------------------------
def plain_type(arrow_type: pa.DataType) -> pa.DataType:
    """Polars writes large_string and large_list; trainers and `datasets` expect the plain ones."""
    if pa.types.is_large_string(arrow_type):
        return pa.string()
    if pa.types.is_large_list(arrow_type) or pa.types.is_list(arrow_type):
        return pa.list_(plain_type(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, plain_type(f.type)) for f in arrow_type])
    return arrow_type


def plain_arrow(table: pa.Table) -> pa.Table:
    return table.cast(pa.schema([pa.field(f.name, plain_type(f.type)) for f in table.schema]))


def write_jsonl(frame: pl.DataFrame, root: Path, relpath: str) -> ShardInfo:
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        frame.write_ndjson(tmp)
        info = ShardInfo(relpath, frame.height, tmp.stat().st_size, file_sha256(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def output_relpath(split: str, relpath: str) -> str:
    """`val/part-00000.parquet` → `validation/part-00000`: the split folder, then the shard's name."""
    parts = Path(relpath).with_suffix("").parts
    if parts and parts[0] in SPLIT_NAMES:
        parts = parts[1:]
    return f"{split}/{'-'.join(parts) or 'part'}"


def export_task(task: ExportTask) -> TaskRecord:
    """Worker side: one input shard → its split's files (and rejected rows), committed."""
    options = task.options
    table = pl.read_parquet(task.shard, hive_partitioning=False)
    formed, rejected = form_frame(table, task.form)
    split_column = formed["split"] if "split" in formed.columns else pl.Series("split", ["train"] * formed.height)
    split_names = split_column.replace_strict(SPLIT_NAMES, default="train", return_dtype=pl.String)
    counts: dict[str, int] = {}
    outputs: dict[str, list[ShardInfo]] = {"main": []}
    jsonl: list[dict[str, Any]] = []
    rejected_parts = [rejected]
    keep_columns = FORM_COLUMNS[task.form] + [c for c in options.columns if c not in FORM_COLUMNS[task.form]]
    missing = [c for c in keep_columns if c not in formed.columns]
    if missing:
        raise ValueError(f"export: column `{missing[0]}` named in `columns` is not in input shard {task.shard} "
                         f"(columns: {', '.join(table.columns)})")
    for split in SPLIT_ORDER:
        rows = formed.filter(split_names == split)
        if rows.height == 0:
            continue
        if options.pack:
            data, dropped, pack_counts = pack_frame(rows, options)
            rejected_parts.append(dropped)
            for key, value in pack_counts.items():
                counts[f"pack_{key}:{split}"] = value
            counts[f"tokens:{split}"] = pack_counts["tokens"]
            frame = pl.from_arrow(data)
            data = plain_arrow(data)
        else:
            frame = rows.select(keep_columns)
            data = plain_arrow(frame.to_arrow())
            if N_TOKENS in rows.columns:
                counts[f"tokens:{split}"] = int(rows[N_TOKENS].cast(pl.UInt64).sum())
        relpath = output_relpath(split, task.relpath)
        counts[f"rows:{split}"] = data.num_rows
        counts[f"arrow_bytes:{split}"] = data.nbytes
        file_bytes = 0
        for data_format in options.format:
            if data_format == "parquet":
                info = task.output.write("main", data, relpath + ".parquet")
                outputs["main"].append(info)
            else:
                info = write_jsonl(frame, task.output.outputs["main"], relpath + ".jsonl")
                jsonl.append(asdict(info))
            counts[f"file_bytes:{split}:{data_format}"] = info.bytes
            file_bytes += info.bytes
    rejected = pl.concat([r for r in rejected_parts if r.height], how="diagonal_relaxed") if any(r.height for r in rejected_parts) else None
    if rejected is not None:
        outputs["rejected"] = [task.output.write("rejected", rejected, Path(task.relpath).with_suffix(".parquet").as_posix())]
        for reason, n in rejected.group_by(REASON).len().iter_rows():
            counts[f"dropped:{reason}"] = counts.get(f"dropped:{reason}", 0) + n
    # rows_out counts records, so that rows in = rows out + dropped holds with packing too (the
    # sequences they were packed into are counted apart: pack_sequences:<split>, rows:<split>)
    written = "pack_records:" if options.pack else "rows:"
    counts["rows_out"] = sum(v for k, v in counts.items() if k.startswith(written))
    record = TaskRecord(task=task.key, fingerprint="", outputs=outputs, counts=counts, extra={"jsonl": jsonl})
    return task.output.commit(record)


# -- the stage ---------------------------------------------------------------------------------
def input_kinds(shards: list[Path]) -> set[str]:
    """Record kinds present in the input (a small scan of one column per shard)."""
    kinds: set[str] = set()
    for shard in shards:
        if "kind" in pq.read_schema(shard).names:
            kinds |= set(pl.scan_parquet(shard).select(pl.col("kind").fill_null("text").unique()).collect()["kind"].to_list())
        else:
            kinds.add("text")
    return kinds


def upstream_manifest(root: Path, stage: str, depth: int = 12) -> dict[str, Any] | None:
    """The manifest of the nearest dataset upstream of `root` (itself included) written by `stage`."""
    frontier = [root]
    for _ in range(depth):
        nxt = []
        for folder in frontier:
            manifest = Dataset(folder).manifest()
            if manifest is None:
                continue
            if manifest.get("stage") == stage:
                return manifest
            nxt.extend(Path(p) for p in manifest.get("inputs", []))
        frontier = nxt
    return None


def token_summary(inputs: list[Path], options: Options, counted: bool) -> dict[str, Any]:
    if options.pack:
        return {**describe_tokenizer(options.tokenizer), "counted": True}
    manifest = next((m for m in (upstream_manifest(p, "tokens") for p in inputs) if m), None)
    if manifest is None or not counted:
        return {"tokenizer": None, "counted": False}
    spec = manifest.get("options", {}).get("tokenizer")
    return {**describe_tokenizer(spec), "counted": True}


def languages_of(shards: list[Path], options: Options) -> list[str]:
    if options.languages:
        return list(options.languages)
    if not any("language" in pq.read_schema(s).names for s in shards):
        return []
    scan = pl.scan_parquet([str(s) for s in shards], missing_columns="insert", extra_columns="ignore")
    return sorted(v for v in scan.select(pl.col("language").drop_nulls().unique()).collect()["language"].to_list() if v)


class Export(Stage):
    """See the module docstring."""

    name = "export"
    Options = Options
    secondary = ("rejected",)
    kinds = ("text", "instruction", "chat")

    def check(self, schema: dict, dataset: Path) -> None:
        require_columns(self.name, dataset, schema, [c for c in self.options.columns if c not in ("system",)],
                        hint="name only columns the input has in export.columns (--columns)")

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        """Export every input shard (see the module docstring), then write the dataset card."""
        options = self.options
        run = StageRun(self, inputs, output, engine, fresh=fresh)
        form = choose_form(input_kinds(run.shards), options.form)
        # the split folders of the output come from the rows, so export maps its own task
        tasks = [ExportTask(key=t.key, shard=t.shard, relpath=t.relpath, form=form, options=options, output=run.store)
                 for t in run.todo]
        records = list(run.done) + run.map(export_task, tasks, [str(t.shard) for t in tasks])
        totals = sum_counts(records)
        summary = summarize(totals, form, options, run.inputs, run.shards)
        details = {"form": form, "splits": summary["splits"], "tokens": summary["tokens"],
                   **({"packing": summary["packing"]} if summary.get("packing") else {})}
        result = run.finish(records, details, extra={
            "summary": summary, "jsonl": [j for r in sorted(records, key=lambda r: r.task) for j in r.extra.get("jsonl", [])]})
        write_card(run.output, summary, options)
        # per-split counters stay in the manifest's summary; the result keeps the totals
        result.details = {k: v for k, v in result.details.items() if ":" not in k}
        return result


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Export every input shard (see the module docstring), then write the dataset card."""
    return Export(options).run(inputs, output, engine, fresh=fresh)


def summarize(totals: dict[str, int], form: str, options: Options, inputs: list[Path], shards: list[Path]) -> dict[str, Any]:
    """What the card and the manifest say: per split rows, tokens, bytes; packing figures."""
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLIT_ORDER:
        if f"rows:{split}" not in totals:
            continue
        splits[split] = {
            "rows": totals[f"rows:{split}"],
            "arrow_bytes": totals[f"arrow_bytes:{split}"],
            "file_bytes": totals.get(f"file_bytes:{split}:{options.format[0]}", 0),
            "tokens": totals.get(f"tokens:{split}"),
        }
    counted = any(info["tokens"] is not None for info in splits.values())
    columns = (["input_ids", "seq_lengths", "record_ids", "n_tokens"] if options.pack
               else FORM_COLUMNS[form] + [c for c in options.columns if c not in FORM_COLUMNS[form]])
    summary: dict[str, Any] = {
        "form": form, "formats": list(options.format), "columns": columns, "splits": splits,
        "tokens": token_summary(inputs, options, counted),
        "languages": languages_of(shards, options),
        "dropped": {k.split(":", 1)[1]: v for k, v in totals.items() if k.startswith("dropped:")},
    }
    if options.pack:
        capacity = int(options.pack)
        pack_splits = {}
        for split in splits:
            sequences = totals.get(f"pack_sequences:{split}", 0)
            tokens = totals.get(f"pack_tokens:{split}", 0)
            unpacked = totals.get(f"pack_padding_unpacked:{split}", 0)
            packed = totals.get(f"pack_padding_packed:{split}", 0)
            pack_splits[split] = {
                "records": totals.get(f"pack_records:{split}", 0), "pieces": totals.get(f"pack_pieces:{split}", 0),
                "sequences": sequences, "tokens": tokens,
                "fill_rate": tokens / (sequences * capacity) if sequences else 0.0,
                "padding_unpacked": unpacked, "padding_packed": packed,
                "padding_saved": unpacked - packed,
                "padding_saved_share": (unpacked - packed) / unpacked if unpacked else 0.0,
            }
        summary["packing"] = {"max_tokens": capacity, "eos_token": options.eos_token, "overlong": options.overlong,
                              "splits": pack_splits}
    return summary


def write_card(output: Path, summary: dict[str, Any], options: Options) -> None:
    """README.md from the written files' schema and the summary (see pipeline.export.card)."""
    data_format = options.format[0]
    files = sorted(output.glob(f"*/*.{data_format}"))
    if not files:
        write_bytes_atomic(output / CARD, b"# Empty export\n\nNo rows were exported.\n")
        return
    if data_format == "parquet":
        schema = pq.read_schema(files[0])
    else:
        schema = pl.read_ndjson(files[0]).to_arrow().schema
    metrics_path = Path(options.metrics) if options.metrics else output.parent / "report" / "metrics.json"
    header = card_header(summary["splits"], schema, data_format, options.license, summary["languages"], options.title)
    text = card_markdown(header, summary, read_metrics(metrics_path))
    write_bytes_atomic(output / CARD, text.encode())


__all__ = ["Export", "Options", "run", "form_frame", "pack_frame", "export_task"]
