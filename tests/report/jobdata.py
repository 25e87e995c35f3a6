"""A small, real job folder for the report: the SMS spam collection taken through fake-but-real-
shaped stages (docs → clean + rejected/clean → unique + duplicates → clusters → labelled →
splits), written with the dataset layer, each main manifest carrying its StageResult.

`build_job` keeps plain-Python copies of what it wrote, so tests compute every expected number
independently of the report (and of Polars).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.dataset import MANIFEST, StageOutput, TaskRecord, write_json_atomic
from pipeline.stage import StageResult

WORD = re.compile(r"\w+")


@dataclass
class Job:
    root: Path
    docs: list[dict] = field(default_factory=list)
    clean: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    unique: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    final: list[dict] = field(default_factory=list)

    def inputs(self) -> list[Path]:
        return sorted(p.parent for p in self.root.rglob(MANIFEST) if "report" not in p.parts)


def read_sms(shared_data: Path) -> list[tuple[str, str]]:
    with open(shared_data / "labelled" / "sms_spam.tsv", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(label, text) for label, text in reader]


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


DOC = {"id": pl.String, "source": pl.String, "url": pl.String, "fetched_at": pl.Datetime("us", "UTC"),
       "title": pl.String, "text": pl.String, "label": pl.String, "meta": pl.String}


def write_dataset(stage: str, outputs: dict[str, Path], frames: dict[str, list[tuple[str, list[dict], dict]]],
                  result: StageResult | None, options: dict | None = None) -> None:
    """frames: output name → [(relpath, rows, schema)]; writes shards, manifests and the result."""
    out = StageOutput(stage, options or {"rule": stage}, [], outputs, fresh=True)
    records = []
    for name, shards in frames.items():
        for relpath, rows, schema in shards:
            info = out.write(name, _frame(rows, schema), relpath)
            records.append(TaskRecord(task=f"{name}/{relpath}", fingerprint="", outputs={name: [info]}))
    out.finalize(records)
    if result is not None:
        path = outputs["main"] / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["result"] = result.model_dump(mode="json")
        write_json_atomic(path, manifest)


def shards_of(rows: list[dict], n: int, prefix: str = "part") -> list[tuple[str, list[dict]]]:
    size = -(-len(rows) // n) if rows else 1
    return [(f"{prefix}-{i:05d}.parquet", rows[i * size:(i + 1) * size]) for i in range(n)]


def build_job(shared_data: Path, root: Path, limit: int | None = None, labels: bool = True) -> Job:
    sms = read_sms(shared_data)[:limit]
    job = Job(root)
    for i, (label, text) in enumerate(sms):
        job.docs.append({"id": f"sms{i:06d}", "source": "sms_a" if i % 3 == 0 else "sms_b", "url": None,
                         "fetched_at": None, "title": None if i % 4 else f"title {i}", "text": text,
                         "label": label if labels else None, "meta": "{}"})
    write_dataset("extract", {"main": root / "docs"},
                  {"main": [(p, r, DOC) for p, r in shards_of(job.docs, 3)]},
                  StageResult(stage="extract", rows_in=len(job.docs), rows_out=len(job.docs), seconds=0.5))

    # clean: two rules, first match wins
    for row in job.docs:
        words = len(WORD.findall(row["text"]))
        reason = "too_few_words" if words < 3 else ("has_url" if "http" in row["text"].lower() else None)
        if reason:
            job.rejected.append({**row, "reason": reason})
        else:
            job.clean.append(row)
    dropped = {r: sum(1 for x in job.rejected if x["reason"] == r) for r in ("too_few_words", "has_url")}
    write_dataset("clean", {"main": root / "clean", "rejected": root / "rejected" / "clean"},
                  {"main": [(p, r, DOC) for p, r in shards_of(job.clean, 3)],
                   "rejected": [(p, r, {**DOC, "reason": pl.String}) for p, r in shards_of(job.rejected, 2)]},
                  StageResult(stage="clean", rows_in=len(job.docs), rows_out=len(job.clean), dropped=dropped,
                              seconds=1.25), options={"min_words": 3, "drop_urls": True})

    # dedup: exact on lower-cased stripped text; near on the token set without digits
    kept_exact: dict[str, str] = {}
    kept_near: dict[frozenset, dict] = {}
    for row in job.clean:
        key = row["text"].strip().lower()
        tokens = frozenset(t for t in WORD.findall(key) if not t.isdigit())
        if key in kept_exact:
            job.audit.append({"id": row["id"], "kept_id": kept_exact[key], "kind": "exact", "similarity": 1.0})
        elif tokens in kept_near and len(tokens) >= 4:
            kept = kept_near[tokens]
            a, b = set(WORD.findall(key)), set(WORD.findall(kept["text"].strip().lower()))
            job.audit.append({"id": row["id"], "kept_id": kept["id"], "kind": "near",
                              "similarity": len(a & b) / len(a | b)})
        else:
            kept_exact[key] = row["id"]
            kept_near.setdefault(tokens, row)
            job.unique.append(dict(row))
    # near_group as dedup writes it: every kept row has one; here, rows sharing their first
    # three lower-cased words share the group of the first of them
    first_of: dict[tuple, str] = {}
    for row in job.unique:
        head = tuple(WORD.findall(row["text"].lower())[:3])
        row["near_group"] = first_of.setdefault(head, row["id"])
    by_kind = {k: sum(1 for a in job.audit if a["kind"] == k) for k in ("exact", "near")}
    unique_schema = {**DOC, "near_group": pl.String}
    write_dataset("dedup", {"main": root / "unique", "duplicates": root / "duplicates"},
                  {"main": [(p, r, unique_schema) for p, r in shards_of(job.unique, 3)],
                   "duplicates": [(p, r, {"id": pl.String, "kept_id": pl.String, "kind": pl.String,
                                          "similarity": pl.Float64}) for p, r in shards_of(job.audit, 2)]},
                  StageResult(stage="dedup", rows_in=len(job.clean), rows_out=len(job.unique),
                              dropped={f"{k}_duplicate": v for k, v in by_kind.items()}, seconds=2.0))

    # cluster: by length band; label: confidence (three impossible values to be caught)
    clustered = []
    for i, row in enumerate(job.unique):
        words = len(WORD.findall(row["text"]))
        clustered.append({**row, "cluster": min(words // 8, 5), "cluster_distance": 0.1 * (i % 7)})
    cluster_schema = {**unique_schema, "cluster": pl.Int32, "cluster_distance": pl.Float64}
    write_dataset("cluster", {"main": root / "clusters"},
                  {"main": [(p, r, cluster_schema) for p, r in shards_of(clustered, 3)]},
                  StageResult(stage="cluster", rows_in=len(job.unique), rows_out=len(clustered), seconds=3.0))
    labelled = [{**row, "label_confidence": 1.5 if i < 3 else 0.9} for i, row in enumerate(clustered)]
    label_schema = {**cluster_schema, "label_confidence": pl.Float64}
    write_dataset("label", {"main": root / "labelled"},
                  {"main": [(p, r, label_schema) for p, r in shards_of(labelled, 3)]},
                  StageResult(stage="label", rows_in=len(clustered), rows_out=len(labelled), seconds=0.2))

    # split: 80/10/10 by position, one folder per split, one dataset manifest for all
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, row in enumerate(labelled):
        name = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        splits[name].append({**row, "split": name})
    split_schema = {**label_schema, "split": pl.String}
    frames = []
    for name, rows in splits.items():
        frames += [(f"{name}/{p}", r, split_schema) for p, r in shards_of(rows, 2 if name == "train" else 1)]
    write_dataset("split", {"main": root / "splits"}, {"main": frames},
                  StageResult(stage="split", rows_in=len(labelled), rows_out=len(labelled), seconds=0.3,
                              details={"method": "random"}), options={"method": "random", "seed": 42})
    (root / "splits" / "manifest.json").write_text(json.dumps({n: len(r) for n, r in splits.items()}))
    job.final = [r for name in ("train", "val", "test") for r in splits[name]]
    return job
