"""Record kinds for fine-tuning: `text` documents, `instruction` records and `chat` records.

Every kind keeps the document columns (pipeline.schema.DOC_SCHEMA); instruction and chat rows
add `kind`, `system`, `prompt`, `response` and `messages` (RECORD_SCHEMA: the columns of the
other kind are null), so instruction and chat records share one schema and one dataset. A
dataset without a `kind` column holds text documents.

`text` of an instruction or chat row is a rendering for the stages that read text (quality
rules, dedup, features, clustering): the record's turns, in order, joined by a blank line
(instruction: system when present, prompt, response; chat: each message's content). Roles are
not rendered, so an instruction and the equivalent two-turn chat render alike.

Readers map the layouts found in the wild onto the kinds (`read_instruction`, `read_chat`);
validation (`instruction_rejection`, `chat_rejection`) gives each invalid record one exact
reason, all as Polars expressions over whole columns. See docs/records.md.
"""

from __future__ import annotations

import polars as pl

from pipeline.schema import DOC_SCHEMA

KINDS = ("text", "instruction", "chat")
ROLES = ("system", "user", "assistant")
MESSAGE = pl.Struct({"role": pl.String(), "content": pl.String()})
MESSAGES = pl.List(MESSAGE)

# what an instruction or chat row carries besides the document columns
RECORD_COLUMNS: dict[str, pl.DataType] = {
    "kind": pl.String(),
    "system": pl.String(),
    "prompt": pl.String(),
    "response": pl.String(),
    "messages": MESSAGES,
}
RECORD_SCHEMA: dict[str, pl.DataType] = {**DOC_SCHEMA, **RECORD_COLUMNS}

# record layouts → the fields that identify them, in the order auto-detection tries them
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "openai": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "prompt_response": ("prompt", "response"),
    "question_answer": ("question", "answer"),
}
RECORD_FORMATS = tuple(FORMAT_FIELDS)
CHAT_FORMATS = ("openai", "sharegpt")
# ShareGPT speaker names → roles; other names are kept, so validation names them
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


class RecordFormatError(ValueError):
    """Records whose fields fit no known layout, or a layout that cannot give the asked kind."""


def detect_format(columns: list[str] | set[str] | pl.Schema) -> str:
    """The first layout of FORMAT_FIELDS whose identifying fields are all present (given a
    schema, a field that is null in every record does not count)."""
    if isinstance(columns, pl.Schema | dict):
        present = {name for name, dtype in columns.items() if dtype != pl.Null}
    else:
        present = set(columns)
    for name, fields in FORMAT_FIELDS.items():
        if present.issuperset(fields):
            return name
    layouts = "; ".join(f"{name}: {'/'.join(fields)}" for name, fields in FORMAT_FIELDS.items())
    raise RecordFormatError(f"cannot tell the record format from the fields {sorted(present)} "
                            f"(known layouts: {layouts}); name the fields' layout with --format")


def used_fields(fmt: str, columns: list[str] | set[str]) -> set[str]:
    """The source fields a layout reads (the others go to `meta`)."""
    fields = set(FORMAT_FIELDS[fmt])
    if fmt == "alpaca":
        fields.add("input")
    if fmt not in CHAT_FORMATS:
        fields.add("system")
    return fields & set(columns)


def with_record_columns(docs: pl.DataFrame) -> pl.DataFrame:
    """Documents with the record columns (kind "text", the others null) after the document
    columns, to share a dataset with instruction or chat records; other columns follow. A frame
    that has a `kind` column already is returned as it is."""
    if "kind" in docs.columns:
        return docs
    others = [c for c in docs.columns if c not in RECORD_SCHEMA]
    return docs.with_columns(pl.lit("text").alias("kind"), *[
        pl.lit(None, dtype).alias(name) for name, dtype in RECORD_COLUMNS.items() if name != "kind"
    ]).select([*RECORD_SCHEMA, *others]).cast(RECORD_SCHEMA)


def kind_of(schema: pl.Schema | dict) -> str:
    """"text" for a dataset without a `kind` column, else "records" (rows say their kind)."""
    return "records" if "kind" in schema else "text"


def _string(frame_columns: set[str], name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String) if name in frame_columns else pl.lit(None, pl.String)


def _non_empty(expr: pl.Expr) -> pl.Expr:
    """Null for null or whitespace-only strings: an empty optional field means "absent"."""
    return pl.when(expr.str.strip_chars() != "").then(expr)


def read_instruction(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """`system`, `prompt`, `response` (String) of each record of an instruction layout.

    alpaca: prompt = instruction, plus a blank line and the input when the input holds more
    than whitespace; response = output. prompt_completion / prompt_response / question_answer:
    the two fields as they are. A `system` field is used when the records have one.
    """
    if fmt in CHAT_FORMATS:
        raise RecordFormatError(f"{fmt} records are conversations: read them with --kind chat")
    columns = set(frame.columns)
    prompt_field, response_field = {
        "alpaca": ("instruction", "output"),
        "prompt_completion": ("prompt", "completion"),
        "prompt_response": ("prompt", "response"),
        "question_answer": ("question", "answer"),
    }[fmt]
    for name in (prompt_field, response_field):
        if name not in columns:
            raise RecordFormatError(f"{fmt} records need a {name!r} field; the records have {sorted(columns)}")
    prompt = _string(columns, prompt_field)
    if fmt == "alpaca":
        extra = _non_empty(_string(columns, "input"))
        prompt = pl.when(extra.is_not_null()).then(pl.concat_str([prompt, extra], separator="\n\n")).otherwise(prompt)
    return frame.select(
        _non_empty(_string(columns, "system")).alias("system"),
        prompt.alias("prompt"),
        _string(columns, response_field).alias("response"),
    )


def _message_field(dtype: pl.DataType, field: str, layout: str, column: str) -> pl.Expr:
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    names = {f.name: f.dtype for f in inner.fields} if isinstance(inner, pl.Struct) else None
    if names is None:
        raise RecordFormatError(f"{layout} field {column!r} is {dtype}, not a list of objects")
    if field not in names:
        raise RecordFormatError(f"{layout} messages in {column!r} have no {field!r} key (they have {sorted(names)})")
    if names[field] not in (pl.String, pl.Null):
        raise RecordFormatError(f"{layout} message key {field!r} in {column!r} is {names[field]}, not text "
                                "(only text content is supported)")
    return pl.element().struct.field(field).cast(pl.String)


def read_chat(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """`messages` (list of {role, content}) of each record.

    openai: `messages` [{role, content}] (other message keys such as `name` are not kept);
    sharegpt: `conversations` [{from, value}], from human → user, gpt → assistant, system →
    system. Instruction layouts become [system?, user: prompt, assistant: response].
    """
    if fmt not in CHAT_FORMATS:
        fields = read_instruction(frame, fmt)
        turns = pl.concat_list([
            pl.struct(pl.lit("system").alias("role"), pl.col("system").alias("content")),
            pl.struct(pl.lit("user").alias("role"), pl.col("prompt").fill_null("").alias("content")),
            pl.struct(pl.lit("assistant").alias("role"), pl.col("response").fill_null("").alias("content")),
        ])
        absent_system = (pl.element().struct.field("role") == "system") & pl.element().struct.field("content").is_null()
        return fields.select(turns.list.eval(pl.element().filter(~absent_system)).cast(MESSAGES).alias("messages"))
    column, role_key, content_key = ("messages", "role", "content") if fmt == "openai" else ("conversations", "from", "value")
    if column not in frame.columns:
        raise RecordFormatError(f"{fmt} records need a {column!r} field; the records have {sorted(frame.columns)}")
    dtype = frame.schema[column]
    if dtype == pl.Null:  # every record of the batch lacks it
        return frame.with_columns(pl.lit(None, MESSAGES).alias("messages")).select("messages")
    role = _message_field(dtype, role_key, fmt, column)
    if fmt == "sharegpt":
        role = role.replace(SHAREGPT_ROLES)
    content = _message_field(dtype, content_key, fmt, column)
    message = pl.struct(role.alias("role"), content.alias("content"))
    return frame.select(pl.col(column).list.eval(message).cast(MESSAGES).alias("messages"))


# -- validation: one exact reason per invalid record, null for a valid one ---------------------
def _as_expr(column: str | pl.Expr) -> pl.Expr:
    return pl.col(column) if isinstance(column, str) else column


def instruction_rejection(prompt: str | pl.Expr = "prompt", response: str | pl.Expr = "response") -> pl.Expr:
    """"instruction: empty prompt" / "instruction: empty response" (null or whitespace only)."""
    prompt, response = _as_expr(prompt), _as_expr(response)
    empty = lambda expr: expr.is_null() | (expr.str.strip_chars() == "")  # noqa: E731
    return (pl.when(empty(prompt)).then(pl.lit("instruction: empty prompt"))
            .when(empty(response)).then(pl.lit("instruction: empty response")))


def chat_rejection(messages: str | pl.Expr = "messages") -> pl.Expr:
    """The first rule a conversation breaks, in turn order (turns numbered from 1):

    unknown role, empty turn, a system message after the first turn, an assistant turn before
    any user turn, a role following itself (user and assistant alternate), and last, a
    conversation that does not end with the assistant, or has no messages at all.
    """
    messages = _as_expr(messages)
    role = pl.element().struct.field("role")
    content = pl.element().struct.field("content")
    turn = pl.int_range(1, pl.len() + 1)
    previous = role.shift(1)
    per_turn = (
        pl.when(role.is_null() | ~role.is_in(ROLES))
        .then(pl.format("chat: turn {} has unknown role '{}'", turn, role.fill_null("null")))
        .when(content.is_null() | (content.str.strip_chars() == ""))
        .then(pl.format("chat: turn {} ({}) is empty", turn, role))
        .when((role == "system") & (turn > 1))
        .then(pl.format("chat: turn {} is a system message after the first turn", turn))
        .when((role == "assistant") & (previous.is_null() | (previous == "system")))
        .then(pl.format("chat: turn {} role 'assistant' comes before any 'user' turn", turn))
        .when(role == previous)
        .then(pl.format("chat: turn {} role '{}' follows '{}'", turn, role, previous))
    )
    first = messages.list.eval(per_turn).list.drop_nulls().list.first()
    count = messages.list.len()
    last = messages.list.last().struct.field("role")
    return (
        pl.when(messages.is_null() | (count == 0)).then(pl.lit("chat: no messages"))
        .when(first.is_not_null()).then(first)
        .when(last != "assistant")
        .then(pl.format("chat: last turn {} is '{}', not 'assistant'", count, last))
    )


def record_rejection() -> pl.Expr:
    """Validation of a RECORD_SCHEMA frame, by each row's kind (text rows are never rejected here)."""
    return (pl.when(pl.col("kind") == "instruction").then(instruction_rejection())
            .when(pl.col("kind") == "chat").then(chat_rejection()))


# -- rendering: the `text` of a record --------------------------------------------------------
def instruction_text(system: str | pl.Expr = "system", prompt: str | pl.Expr = "prompt",
                     response: str | pl.Expr = "response") -> pl.Expr:
    """system (when present), prompt and response joined by a blank line."""
    return pl.concat_str([_as_expr(system), _as_expr(prompt), _as_expr(response)], separator="\n\n",
                         ignore_nulls=True)


def chat_text(messages: str | pl.Expr = "messages") -> pl.Expr:
    """Each message's content, in order, joined by a blank line."""
    return _as_expr(messages).list.eval(pl.element().struct.field("content").fill_null("")).list.join("\n\n")


def record_text() -> pl.Expr:
    """The rendering of each row of a RECORD_SCHEMA frame; text rows keep their `text`."""
    return (pl.when(pl.col("kind") == "instruction").then(instruction_text())
            .when(pl.col("kind") == "chat").then(chat_text())
            .otherwise(pl.col("text")))


def prompt_text() -> pl.Expr:
    """The part of each row that asks: an instruction's system and prompt, a chat's non-assistant
    turns joined by a blank line; a text row's whole `text` (dedup's `key = "prompt"`)."""
    asking = pl.element().filter(pl.element().struct.field("role") != "assistant").struct.field("content")
    return (pl.when(pl.col("kind") == "instruction").then(instruction_text(response=pl.lit(None, pl.String)))
            .when(pl.col("kind") == "chat").then(pl.col("messages").list.eval(asking.fill_null("")).list.join("\n\n"))
            .otherwise(pl.col("text")))
