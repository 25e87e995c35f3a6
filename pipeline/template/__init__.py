"""Template: documents or labelled rows → instruction (or chat) records, through templates in the job.

    [template]
    prompt = "Classify this page:\\n\\n{text}"
    response = "{label}"
    system = "You sort documentation pages by topic."   # optional
    columns = ["id", "source", "label"]                    # optional: input columns kept

`{name}` is replaced by the row's value of column `name` (cast to text); `{{` and `}}` are literal
braces. Each template is one Polars `concat_str` over whole columns. A placeholder naming a column
the input does not have is an error before any work starts; a row where a placeholder's value is
null goes to rejected/ with reason `template_null:<column>`, and a row whose prompt or response
comes out empty or blank with `template_empty:<field>`.

Output: the record columns of pipeline.records (`kind`, `system`, `prompt`, `response`,
`messages`): `kind` = "instruction" with `prompt`, `response`, `system` (null without a system
template), or with `kind = "chat"` in the options, `messages` = [system,] user, assistant turns
(the other kind's columns null, as the records schema has it).
`text` becomes the record's rendering (system, prompt and response joined by a blank line; see
pipeline.tokens.record_text), so the stages that read text (dedup, decontaminate) see the record.
Example: pipeline template --input out/labelled --output out/records --prompt "Classify: {text}" --response "{label}"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import field_validator

from pipeline.errors import InputError
from pipeline.records import MESSAGES, RECORD_COLUMNS
from pipeline.stage import REASON, ShardOutput, Stage
from pipeline.stage import Options as StageOptions
from pipeline.tokens import TURN_SEPARATOR


class TemplateSyntaxError(ValueError):
    """A template that cannot be parsed (an option error)."""


class TemplateError(InputError):
    """A template names a column the input lacks; the message names the field and the column."""


def parse_template(template: str) -> list[tuple[str, str]]:
    """The parts of a template in order: ("text", literal) or ("column", name)."""
    parts: list[tuple[str, str]] = []
    for piece in re.split(r"(\{\{|\}\}|\{[^{}]*\}|[{}])", template):
        if not piece:
            continue
        if piece in ("{{", "}}"):
            parts.append(("text", piece[0]))
        elif piece.startswith("{") and piece.endswith("}") and len(piece) > 1:
            name = piece[1:-1].strip()
            if not name:
                raise TemplateSyntaxError(f"template {template!r}: empty placeholder {{}}; name a column, e.g. {{text}}")
            parts.append(("column", name))
        elif piece in ("{", "}"):
            raise TemplateSyntaxError(f"template {template!r}: unmatched {piece!r} (write {piece * 2} for a literal brace)")
        else:
            parts.append(("text", piece))
    return parts


def placeholders(template: str) -> list[str]:
    """Column names a template reads, in order of first use."""
    return list(dict.fromkeys(name for kind, name in parse_template(template) if kind == "column"))


def render(template: str) -> pl.Expr:
    """The template as one string expression; null where any placeholder's value is null."""
    exprs = [pl.lit(value) if kind == "text" else pl.col(value).cast(pl.String)
             for kind, value in parse_template(template)]
    return pl.concat_str(exprs or [pl.lit("")], ignore_nulls=False)


class Options(StageOptions):
    prompt: str = "{text}"
    """Template of the prompt (user turn): `{column}` placeholders, `{{`/`}}` for braces."""
    response: str = "{label}"
    """Template of the response (assistant turn)."""
    system: str | None = None
    """Template of the system message (unset: none)."""
    kind: Literal["instruction", "chat"] = "instruction"
    """Record kind written: `instruction` (prompt, response, system) or `chat` (messages)."""
    columns: list[str] | None = None
    """Input columns kept beside the record (unset: every input column)."""

    @field_validator("prompt", "response", "system")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_template(value)
            except TemplateSyntaxError as error:
                raise ValueError(str(error)) from None
        return value

    def templates(self) -> dict[str, str]:
        named = {"prompt": self.prompt, "response": self.response}
        return named if self.system is None else {"system": self.system, **named}


def check_columns(schema: pl.Schema | dict[str, Any], options: Options, dataset: str = "the input") -> None:
    """Raise TemplateError naming the first placeholder (or kept column) the input lacks."""
    for field, template in options.templates().items():
        for name in placeholders(template):
            if name not in schema:
                raise TemplateError(f"template: {field} placeholder {{{name}}}: {dataset} has no column "
                                    f"`{name}` (columns: {', '.join(schema)})")
    for name in options.columns or []:
        if name not in schema:
            raise TemplateError(f"template: columns: {dataset} has no column `{name}` (columns: {', '.join(schema)})")


def template_frame(frame: pl.LazyFrame, options: Options) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(records, rejected) of a frame: see the module docstring."""
    schema = frame.collect_schema()
    check_columns(schema, options)
    templates = options.templates()
    null_reasons = [pl.when(pl.col(name).is_null()).then(pl.lit(f"template_null:{name}"))
                    for template in templates.values() for name in placeholders(template)]
    rendered = {field: render(template).alias(f"_{field}") for field, template in templates.items()}
    empty_reasons = [pl.when(pl.col(f"_{field}").str.strip_chars() == "").then(pl.lit(f"template_empty:{field}"))
                     for field in ("prompt", "response")]
    staged = frame.with_columns(*rendered.values()).with_columns(
        pl.coalesce([*null_reasons, *empty_reasons, pl.lit(None, pl.String)]).alias(REASON))
    system = pl.col("_system") if "system" in templates else pl.lit(None, pl.String)
    text = pl.concat_str([system, pl.col("_prompt"), pl.col("_response")], separator=TURN_SEPARATOR, ignore_nulls=True)
    null_messages = pl.lit(None, MESSAGES)
    if options.kind == "instruction":
        record = [pl.lit("instruction").alias("kind"), system.alias("system"), pl.col("_prompt").alias("prompt"),
                  pl.col("_response").alias("response"), null_messages.alias("messages")]
    else:
        turns = [pl.struct(role=pl.lit("user"), content=pl.col("_prompt")),
                 pl.struct(role=pl.lit("assistant"), content=pl.col("_response"))]
        if "system" in templates:
            turns.insert(0, pl.struct(role=pl.lit("system"), content=system))
        nothing = pl.lit(None, pl.String)
        record = [pl.lit("chat").alias("kind"), nothing.alias("system"), nothing.alias("prompt"),
                  nothing.alias("response"), pl.concat_list(turns).cast(MESSAGES).alias("messages")]
    kept = [c for c in (options.columns if options.columns is not None else schema.names())
            if c not in RECORD_COLUMNS and c != "text"]
    records = staged.filter(pl.col(REASON).is_null()).select(*[pl.col(c) for c in kept], text.alias("text"), *record)
    rejected = staged.filter(pl.col(REASON).is_not_null()).select(*schema.names(), REASON)
    return records, rejected


def template_shard(frame: pl.LazyFrame, options: Options) -> ShardOutput:
    """Per-shard transform: records → "main", rows a template could not fill → "rejected"."""
    records, rejected = template_frame(frame, options)
    return ShardOutput(frames={"main": records.collect(), "rejected": rejected.collect()})


class Template(Stage):
    """See the module docstring."""

    name = "template"
    Options = Options
    secondary = ("rejected",)
    kinds = ("text", "instruction", "chat")
    transform = staticmethod(template_shard)

    def check(self, schema: dict, dataset: Path) -> None:
        check_columns(schema, self.options, f"input dataset {dataset}")


def run(inputs: list[Path], output: Path, options: Options, engine, fresh: bool = False):
    """Apply the templates to every input shard; a missing placeholder column fails first."""
    return Template(options).run(inputs, output, engine, fresh=fresh)
