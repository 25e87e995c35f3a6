"""The dataset card: README.md with the YAML header the `datasets` library reads, from what was written.

The header's `configs` point `datasets.load_dataset(<export folder>)` at each split's files;
`dataset_info` gives the features (from the Arrow schema of the files) and each split's
`num_examples` (the rows written; `datasets` checks them on load) and `num_bytes` (Arrow size of
the rows written). The body's figures come from the export's own counts, and, when the job ran a
report, from its metrics.json (drops by stage and reason, duplicates, decontamination).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

SPLIT_ORDER = ("train", "validation", "test")


def feature_yaml(arrow_type: pa.DataType) -> Any:
    """The `dataset_info.features` entry of an Arrow type, as `datasets` writes it."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        inner = feature_yaml(arrow_type.value_type)
        return {"list": inner["struct"] if "struct" in inner else inner["dtype"]}
    if pa.types.is_struct(arrow_type):
        return {"struct": [{"name": f.name, **feature_yaml(f.type)} for f in arrow_type]}
    if pa.types.is_large_string(arrow_type) or pa.types.is_string(arrow_type):
        return {"dtype": "string"}
    if pa.types.is_timestamp(arrow_type):
        tz = f", tz={arrow_type.tz}" if arrow_type.tz else ""
        return {"dtype": f"timestamp[{arrow_type.unit}{tz}]"}
    if pa.types.is_boolean(arrow_type):
        return {"dtype": "bool"}
    if pa.types.is_floating(arrow_type):
        return {"dtype": {16: "float16", 32: "float32", 64: "float64"}[arrow_type.bit_width]}
    if pa.types.is_large_binary(arrow_type) or pa.types.is_binary(arrow_type):
        return {"dtype": "binary"}
    return {"dtype": str(arrow_type)}  # int8..int64, uint8..uint64 are spelled alike


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, **feature_yaml(f.type)} for f in schema]


def _yaml_scalar(value: Any) -> str:
    # JSON scalars are valid YAML and quote anything a YAML reader might misread
    return json.dumps(value, ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for the card's header (dicts, lists and scalars; block style)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item) if not isinstance(item, dict | list) else ('{}' if isinstance(item, dict) else '[]')}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2).lstrip()
                lines.append(f"{pad}- {body}")
            elif isinstance(item, list) and item:
                lines.append(f"{pad}-")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(f"{pad}{_yaml_scalar(value)}")
    return "\n".join(lines)


def card_header(
    splits: dict[str, dict[str, Any]],
    schema: pa.Schema,
    data_format: str,
    license: str | None,
    languages: list[str],
    pretty_name: str | None,
) -> dict[str, Any]:
    """The YAML header as a dict. splits: name → {"rows", "arrow_bytes", "file_bytes"}."""
    names = [s for s in SPLIT_ORDER if s in splits]
    extension = {"parquet": "parquet", "jsonl": "jsonl"}[data_format]
    header: dict[str, Any] = {}
    if pretty_name:
        header["pretty_name"] = pretty_name
    if license:
        header["license"] = license
    if languages:
        header["language"] = languages
    header["configs"] = [{
        "config_name": "default",
        "data_files": [{"split": s, "path": f"{s}/*.{extension}"} for s in names],
    }]
    header["dataset_info"] = {
        "features": features_yaml(schema),
        "splits": [{"name": s, "num_bytes": int(splits[s]["arrow_bytes"]), "num_examples": int(splits[s]["rows"])}
                   for s in names],
        "download_size": int(sum(splits[s]["file_bytes"] for s in names)),
        "dataset_size": int(sum(splits[s]["arrow_bytes"] for s in names)),
    }
    return header


def _table(rows: list[list[Any]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def read_metrics(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


def card_markdown(header: dict[str, Any], summary: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """README.md: the YAML header, then what the export holds and how it was made."""
    splits = summary["splits"]
    names = [s for s in SPLIT_ORDER if s in splits]
    tokens = summary["tokens"]
    title = header.get("pretty_name") or "Fine-tuning dataset"
    parts = ["---", to_yaml(header), "---", "", f"# {title}", ""]
    parts.append(f"Written by `pipeline export` ({summary['form']} form, {', '.join(summary['formats'])}). "
                 "Load it with `datasets.load_dataset(\"<this folder>\")`.")
    parts.append("")
    token_head = "tokens (approximate)" if tokens.get("approximate") else "tokens"
    rows = []
    for s in names:
        info = splits[s]
        rows.append([s, f"{info['rows']:,}", f"{info['tokens']:,}" if info.get("tokens") is not None else "not counted",
                     f"{info['file_bytes']:,}"])
    parts += ["## Splits", "", _table(rows, ["split", "rows", token_head, "bytes on disk"]), ""]
    parts.append(f"Columns: {', '.join(f'`{c}`' for c in summary['columns'])}.")
    parts.append("")
    parts += ["## Tokens", ""]
    if tokens.get("tokenizer") is None and tokens.get("counted"):
        parts.append(f"Counted without a tokenizer: {tokens['method']} per record (an approximation).")
    elif tokens.get("tokenizer"):
        parts.append(f"Counted with tokenizer `{tokens['tokenizer']}` (sha256 {tokens['sha256'][:16]}…, "
                     f"{tokens['vocab_size']:,} tokens): {tokens['method']}.")
    else:
        parts.append("Not counted (no `n_tokens` column and no packing).")
    parts.append("")
    pack = summary.get("packing")
    if pack:
        parts += ["## Packing", "",
                  f"Records were packed first-fit decreasing into sequences of at most {pack['max_tokens']:,} tokens "
                  "per input shard; each row holds `input_ids`, `seq_lengths` (the tokens of each record, in order) "
                  "and `record_ids`, so a trainer can restart positions and mask attention at the boundaries.", ""]
        prow = [[s, f"{p['records']:,}", f"{p['sequences']:,}", f"{p['fill_rate']:.1%}",
                 f"{p['padding_unpacked']:,}", f"{p['padding_packed']:,}", f"{p['padding_saved_share']:.1%}"]
                for s, p in pack["splits"].items()]
        parts += [_table(prow, ["split", "records", "sequences", "fill", "padding one record per sequence",
                                "padding packed", "padding saved"]), ""]
        if pack.get("eos_token"):
            parts.append(f"`{pack['eos_token']}` ends every record (counted in its length).")
            parts.append("")
    dropped = summary.get("dropped") or {}
    if dropped:
        parts += ["## Rows not exported", "", _table([[k, f"{v:,}"] for k, v in sorted(dropped.items())], ["reason", "rows"]), ""]
    if metrics:
        parts += ["## How it was made", "", "From the job's report (report/metrics.json):", ""]
        noise = metrics.get("noise") or {}
        by_stage = noise.get("dropped_by_stage") or {}
        if by_stage:
            parts.append("Rows dropped by stage: " + ", ".join(f"{k} {v:,}" for k, v in by_stage.items()) + ".")
        duplicates = noise.get("duplicates") or {}
        if duplicates.get("status") == "ok":
            parts.append(f"Duplicates removed: {duplicates.get('exact', 0):,} exact, {duplicates.get('near', 0):,} near.")
        decontamination = metrics.get("decontamination")
        if isinstance(decontamination, dict) and decontamination:
            parts.append("Decontamination: `" + json.dumps(decontamination.get("by_benchmark", decontamination),
                                                          sort_keys=True)[:500] + "`.")
        volume = metrics.get("volume") or {}
        if volume.get("rows") is not None:
            parts.append(f"The report saw {volume['rows']:,} rows in the final splits before export.")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
