"""metrics.json: every number of the report, computed from per-shard profiles and manifests.

Sections: volume, balance, noise, diversity, completeness, lineage, baseline. Counts come from
the full datasets (per-shard aggregation on the workers, manifests for what stages recorded);
quantiles, vocabulary, n-gram ratios and the baseline come from the bounded sample and say so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.engine import Engine
from pipeline.report.baseline import NOT_APPLICABLE, run_baseline
from pipeline.report.inputs import DatasetInfo, discover, final_datasets, hive_values
from pipeline.report.profile import (
    NONE,
    SIMILARITY_BINS,
    Profile,
    ProfileTask,
    entropy_bits,
    merge_profiles,
    profile_shard,
    sample_shard,
    snippet,
    thresholds_from,
)
from pipeline.schema import DOC_SCHEMA

log = logging.getLogger(__name__)

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.get(split, 9), split)


def compute(inputs: list[Path], options: Any, engine: Engine) -> tuple[dict[str, Any], pl.DataFrame]:
    """(metrics, sample) for the given dataset folders; see the module docstring."""
    started = time.perf_counter()
    infos, skipped = _readable(discover(inputs, options.text_column), options)
    finals = final_datasets(infos)
    final_names = {i.name for i in finals}
    tasks = [
        ProfileTask(dataset=info.name, shard=shard, kind=info.kind, columns=info.columns,
                    constants=hive_values(info.path, shard), final=info.name in final_names,
                    text_column=options.text_column, label_column=options.label_column,
                    seed=options.seed, sample_rows=options.sample_rows, key_file=_key_file(info, options),
                    examples=options.examples)
        for info in infos for shard in info.shards
    ]
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    parts = engine.map(profile_shard, tasks, labels=[str(t.shard) for t in tasks], desc="report")
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    schemas_by_dataset: dict[str, list[tuple[Path, list]]] = defaultdict(list)
    for task, part in zip(tasks, parts, strict=True):
        by_dataset[task.dataset].append(part)
        schemas_by_dataset[task.dataset].append((task.shard, part["schema"]))
    profiles = {info.name: merge_profiles(by_dataset.get(info.name, [])) for info in infos}

    final_profile = merge_profiles([p for name in sorted(final_names) for p in by_dataset.get(name, [])])
    timings["profile"], mark = time.perf_counter() - mark, time.perf_counter()
    sample = _sample(finals, final_profile, options, engine)
    timings["sample"], mark = time.perf_counter() - mark, time.perf_counter()

    metrics: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": options.model_dump(mode="json"),
        "inputs": [
            {"name": i.name, "path": str(i.path), "stage": i.stage, "dataset": i.dataset, "kind": i.kind,
             "rows": i.rows, "bytes": i.bytes, "shards": len(i.shards)}
            for i in infos
        ],
        "final_datasets": sorted(final_names),
        "skipped": skipped,
        "sample": {"rows": sample.height, "max_rows_per_split": options.sample_rows, "seed": options.seed,
                   "by_split": dict(sorted(Counter(sample["split"].to_list()).items()))},
    }
    metrics["volume"] = volume(infos, final_profile, sample)
    metrics["volume"]["tokens"] = token_lengths(finals, final_profile)
    metrics["balance"] = balance(final_profile)
    metrics["lineage"] = lineage(infos)
    metrics["noise"] = noise(infos, profiles, final_profile)
    metrics["noise"]["class_drops"] = class_drops(infos, profiles, sorted(final_names), options.loss_warning)
    metrics["noise"]["examples_by_reason"] = reason_examples(infos, profiles, options.examples)
    metrics["diversity"] = diversity(infos, profiles, final_profile, sample)
    metrics["diversity"]["duplicate_group_examples"] = group_examples(infos, profiles, options)
    metrics["decontamination"] = decontamination(infos)
    metrics["completeness"] = completeness(infos, profiles, schemas_by_dataset)
    timings["sections"], mark = time.perf_counter() - mark, time.perf_counter()
    if sample.height:
        metrics["baseline"] = run_baseline(sample, options.seed, options.cv_folds, options.hash_features,
                                           options.noise_examples)
    else:
        metrics["baseline"] = {"status": f"{NOT_APPLICABLE}: no documents with text"}
    metrics["noise"]["label_noise"] = metrics["baseline"].get("label_noise") or {
        "status": metrics["baseline"]["status"] if metrics["baseline"]["status"] != "ok"
        else f"{NOT_APPLICABLE}: too few rows per class to cross-validate"}
    timings["baseline"] = time.perf_counter() - mark
    metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, sample


def _key_file(info: DatasetInfo, options: Any) -> str | None:
    return str(options.decrypt_key_file) if info.encrypted and options.decrypt_key_file else None


def _readable(infos: list[DatasetInfo], options: Any) -> tuple[list[DatasetInfo], list[dict[str, Any]]]:
    """The datasets the report can read, and the encrypted ones it skips without a key file
    (each with the reason, also logged)."""
    if options.decrypt_key_file is not None:
        from pipeline.split.export import load_keys

        load_keys(Path(options.decrypt_key_file))  # a missing or unsafe key file fails here, by name
        return infos, []
    readable, skipped = [], []
    for info in infos:
        if not info.encrypted:
            readable.append(info)
            continue
        reason = (f"{info.name}: {len(info.shards)} encrypted shards ({info.rows:,} rows) not read; pass "
                  "--decrypt-key-file with the key file split used to include them (the report then "
                  "shows examples of their text)")
        log.warning("report: %s", reason)
        skipped.append({"name": info.name, "path": str(info.path), "rows": info.rows,
                        "shards": len(info.shards), "reason": reason})
    return readable, skipped


def _sample(finals: list[DatasetInfo], profile: Profile, options: Any, engine: Engine) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"id": pl.String, "source": pl.String, "split": pl.String,
                                 "label": pl.String, "text": pl.String, "h": pl.UInt64})
    if not finals or not profile.has_text:
        return empty
    thresholds = thresholds_from(profile.bottom_hashes, options.sample_rows)
    tasks = [
        ProfileTask(dataset=info.name, shard=shard, kind=info.kind, columns=info.columns,
                    constants=hive_values(info.path, shard), final=True, text_column=options.text_column,
                    label_column=options.label_column, seed=options.seed,
                    sample_rows=options.sample_rows, thresholds=thresholds, key_file=_key_file(info, options))
        for info in finals for shard in info.shards
    ]
    frames = engine.map(sample_shard, tasks, labels=[str(t.shard) for t in tasks], desc="report-sample")
    frames = [f for f in frames if f is not None and f.height]
    if not frames:
        return empty
    # hash order is seed-determined and independent of shard layout
    return pl.concat(frames, how="vertical_relaxed").sort("split", "h")


# -- volume ---------------------------------------------------------------------------------------
def _sum_by(groups: dict[tuple[str, str, str], list[int]], index: int) -> dict[str, dict[str, int]]:
    out: dict[str, list[int]] = {}
    for key, values in groups.items():
        acc = out.setdefault(key[index], [0, 0, 0, 0])
        for i, v in enumerate(values):
            acc[i] += v
    return {k: dict(zip(("rows", "words", "chars", "bytes"), v, strict=True)) for k, v in sorted(out.items())}


def volume(infos: list[DatasetInfo], final: Profile, sample: pl.DataFrame) -> dict[str, Any]:
    totals = [0, 0, 0, 0]
    for values in final.groups.values():
        for i, v in enumerate(values):
            totals[i] += v
    rows, words, chars, nbytes = totals
    by_split = _sum_by(final.groups, 1)
    hist: dict[str, dict[int, int]] = defaultdict(dict)
    for (split, bucket), n in final.length_hist.items():
        hist[split][bucket] = n
    lengths: dict[str, Any] = {}
    if sample.height:
        measured = sample.select("split", pl.col("text").str.count_matches(r"\w+").alias("words"),
                                 pl.col("text").str.len_chars().alias("chars"))
        for split, part in sorted(measured.partition_by("split", as_dict=True).items(),
                                  key=lambda kv: _split_key(kv[0][0])):
            lengths[split[0]] = {
                column: {q: float(part[column].quantile(v, "nearest")) for q, v in
                         (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
                | {"max": int(part[column].max())}
                for column in ("words", "chars")
            }
    return {
        "rows": rows,
        "words": words,
        "chars": chars,
        "text_bytes": nbytes,
        "mean_words": words / rows if rows else 0.0,
        "mean_chars": chars / rows if rows else 0.0,
        "by_source": _sum_by(final.groups, 0),
        "by_split": dict(sorted(by_split.items(), key=lambda kv: _split_key(kv[0]))),
        "by_source_split": [
            {"source": s, "split": sp, **dict(zip(("rows", "words", "chars", "bytes"), v, strict=True))}
            for (s, sp), v in sorted(_pairs(final.groups).items())
        ],
        "length_quantiles_sample": lengths,
        "length_histogram_words": {
            split: {str(b): n for b, n in sorted(per.items())}
            for split, per in sorted(hist.items(), key=lambda kv: _split_key(kv[0]))
        },
        "length_histogram_note": "bucket b holds documents with 2^b - 1 <= words <= 2^(b+1) - 2",
        "datasets": {i.name: {"stage": i.stage, "kind": i.kind, "rows": i.rows, "disk_bytes": i.bytes,
                              "shards": len(i.shards)} for i in infos},
    }


def _pairs(groups: dict[tuple[str, str, str], list[int]]) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for (source, split, _), values in groups.items():
        acc = out.setdefault((source, split), [0, 0, 0, 0])
        for i, v in enumerate(values):
            acc[i] += v
    return out


# -- balance --------------------------------------------------------------------------------------
def class_stats(counts: dict[str, int]) -> dict[str, Any]:
    values = [n for n in counts.values() if n > 0]
    h = entropy_bits(values)
    return {
        "counts": dict(sorted(counts.items())),
        "classes": len(values),
        "rows": sum(values),
        "imbalance_ratio": (max(values) / min(values)) if values else None,
        "entropy_bits": h,
        "normalized_entropy": h / np.log2(len(values)) if len(values) > 1 else (1.0 if values else None),
        "majority_share": max(values) / sum(values) if values else None,
    }


def balance(final: Profile) -> dict[str, Any]:
    per_split: dict[str, Counter] = defaultdict(Counter)
    unlabelled: Counter = Counter()
    for (_, split, label), values in final.groups.items():
        if label == NONE or label.strip() == "":
            unlabelled[split] += values[0]
        else:
            per_split[split][label] += values[0]
    if not per_split:
        return {"status": f"{NOT_APPLICABLE}: no labels", "unlabelled_rows": dict(unlabelled)}
    overall: Counter = Counter()
    for counts in per_split.values():
        overall.update(counts)
    return {
        "status": "ok",
        "per_split": {s: class_stats(dict(c)) for s, c in sorted(per_split.items(), key=lambda kv: _split_key(kv[0]))},
        "overall": class_stats(dict(overall)),
        "unlabelled_rows": dict(sorted(unlabelled.items())),
    }


# -- lineage --------------------------------------------------------------------------------------
def lineage(infos: list[DatasetInfo]) -> list[dict[str, Any]]:
    """One entry per dataset written by a stage, pipeline order: options, counts, time."""
    out = []
    for info in infos:
        manifest = info.manifest or {}
        result = info.result or {}
        out.append({
            "name": info.name,
            "stage": info.stage,
            "dataset": info.dataset,
            "kind": info.kind,
            "path": str(info.path),
            "rows": info.rows,
            "bytes": info.bytes,
            "shards": len(info.shards),
            "created_at": manifest.get("created_at"),
            "options": manifest.get("options"),
            "inputs": manifest.get("inputs"),
            "rows_in": result.get("rows_in"),
            "rows_out": result.get("rows_out"),
            "dropped": result.get("dropped"),
            "seconds": result.get("seconds"),
            "details": result.get("details"),
            "has_manifest": info.manifest is not None,
        })
    return out


# -- noise ----------------------------------------------------------------------------------------
def _audit(infos: list[DatasetInfo]) -> DatasetInfo | None:
    audits = [i for i in infos if i.kind == "audit" and i.shards]
    return audits[0] if audits else None


def noise(infos: list[DatasetInfo], profiles: dict[str, Profile], final: Profile) -> dict[str, Any]:
    drops: list[dict[str, Any]] = []
    stages_with_result = set()
    for info in infos:
        if info.result and info.kind not in ("rejected", "audit"):
            stages_with_result.add(info.stage)
            for reason, n in sorted((info.result.get("dropped") or {}).items()):
                drops.append({"stage": info.stage, "reason": reason, "rows": int(n), "from": "manifest"})
    rejected = {}
    for info in infos:
        if info.kind == "rejected":
            reasons = dict(sorted(profiles[info.name].reasons.items()))
            rejected[info.name] = reasons
            if info.stage not in stages_with_result:
                drops += [{"stage": info.stage, "reason": r, "rows": n, "from": "rejected rows"}
                          for r, n in reasons.items()]
    by_stage: dict[str, int] = defaultdict(int)
    for d in drops:
        by_stage[d["stage"]] += d["rows"]
    return {
        "drops": drops,
        "dropped_by_stage": dict(by_stage),
        "rejected_rows_by_reason": rejected,
        "duplicates": duplicates(infos, profiles),
        "missing_values_final": {
            c: {"null": final.nulls.get(c, 0), "empty": final.empty.get(c, 0),
                "null_rate": final.nulls.get(c, 0) / final.rows if final.rows else 0.0}
            for c in sorted(set(final.nulls) | set(final.empty))
        },
    }


def duplicates(infos: list[DatasetInfo], profiles: dict[str, Profile]) -> dict[str, Any]:
    dedup = next((i for i in infos if i.stage == "dedup" and i.kind == "docs"), None)
    audit = _audit(infos)
    if dedup is None and audit is None:
        return {"status": f"{NOT_APPLICABLE}: no dedup output"}
    kinds: dict[str, int] = {}
    if audit is not None:
        kinds = dict(profiles[audit.name].dup_kinds)
    elif dedup is not None and dedup.result:
        kinds = {r: n for r, n in (dedup.result.get("dropped") or {}).items()}
    rows_in = None
    if dedup is not None and dedup.result:
        rows_in = dedup.result.get("rows_in")
    if rows_in is None:
        rows_in = (dedup.rows if dedup else 0) + sum(kinds.values())
    exact = sum(n for k, n in kinds.items() if "exact" in k.lower())
    near = sum(n for k, n in kinds.items() if "near" in k.lower())
    edges = [i / SIMILARITY_BINS for i in range(SIMILARITY_BINS + 1)]
    hist: dict[str, list[int]] = {}
    if audit is not None:
        for (kind, b), n in profiles[audit.name].similarity_bins.items():
            hist.setdefault(kind, [0] * SIMILARITY_BINS)[b] += n
    return {
        "status": "ok",
        "rows_in": rows_in,
        "by_kind": dict(sorted(kinds.items())),
        "exact": exact,
        "near": near,
        "exact_rate": exact / rows_in if rows_in else 0.0,
        "near_rate": near / rows_in if rows_in else 0.0,
        "similarity_edges": edges,
        "similarity_histogram": dict(sorted(hist.items())),
    }


# -- diversity ------------------------------------------------------------------------------------
def ngram_stats(texts: pl.Series, max_n: int = 3) -> dict[str, Any]:
    """Vocabulary and distinct-n ratios (distinct n-grams / all n-grams, within documents).

    Tokens are compared by 64-bit in-memory hashes and n-grams by combining their tokens'
    hashes, so no n-gram string is built: memory is 16 bytes per token of the sample."""
    tokens = (pl.DataFrame({"text": texts}).with_row_index("doc")
              .select("doc", pl.col("text").str.to_lowercase().str.extract_all(r"\w+")
                      .list.eval(pl.element().hash()).alias("h"))
              .explode("h").drop_nulls("h"))
    out: dict[str, Any] = {"tokens": tokens.height, "vocabulary_size": tokens["h"].n_unique()}
    out["type_token_ratio"] = out["vocabulary_size"] / tokens.height if tokens.height else 0.0
    for n in range(1, max_n + 1):
        if tokens.height == 0:
            out[f"distinct_{n}"] = 0.0
            continue
        gram, same_doc = pl.col("h"), pl.lit(True)
        for i in range(1, n):
            gram = (gram * 1_000_003) ^ pl.col("h").shift(-i)
            same_doc = same_doc & (pl.col("doc").shift(-i) == pl.col("doc"))
        grams = tokens.select(gram.filter(same_doc).alias("g"))
        out[f"ngrams_{n}"] = grams.height
        out[f"distinct_{n}"] = grams["g"].n_unique() / grams.height if grams.height else 0.0
    return out


def near_duplicate_groups(audit: DatasetInfo) -> dict[str, Any]:
    """Groups of the audit (a kept row and the rows dropped for it), by a streaming group-by."""
    frame = pl.scan_parquet([str(s) for s in audit.shards]).select("kept_id")
    sizes = (frame.group_by("kept_id").len()
             .select((pl.col("len") + 1).alias("size"))
             .group_by("size").len().sort("size").collect(engine="streaming"))
    histogram = {int(s): int(n) for s, n in sizes.iter_rows()}
    return {
        "groups": sum(histogram.values()),
        "rows_in_groups": sum(s * n for s, n in histogram.items()),
        "largest": max(histogram) if histogram else 0,
        "size_histogram": {str(s): n for s, n in histogram.items()},
    }


DIVERSITY_CHARS = 10_000
"""Diversity reads each sampled document's first 10,000 characters ..."""
DIVERSITY_BYTES = 16_000_000
"""... of the sampled documents in sampling-hash order (a uniform random order) up to 16 MB of
text: its n-gram hashes stay near 16 bytes x 3M tokens, however long the sampled documents are
(the whole sample, 50,734 rows and 133 MiB of text on the 16x scale corpus, took the driver
from 365 MiB to 1.3 GiB). Distinct-n ratios fall as the text grows, so a fixed budget also
keeps them comparable between datasets."""


def diversity_texts(sample: pl.DataFrame, max_chars: int = DIVERSITY_CHARS,
                    max_bytes: int = DIVERSITY_BYTES) -> pl.Series:
    """The sample's texts diversity reads: in `h` order, each cut to `max_chars` characters,
    as many as fit in `max_bytes` (at least one)."""
    texts = sample.sort("h").select(pl.col("text").str.slice(0, max_chars))
    fits = (pl.col("text").str.len_bytes().cum_sum() <= max_bytes) | (pl.int_range(pl.len()) == 0)
    return texts.filter(fits)["text"]


def diversity(infos: list[DatasetInfo], profiles: dict[str, Profile], final: Profile,
              sample: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"sample_rows": sample.height}
    if sample.height:
        texts = diversity_texts(sample)
        out.update({"text_rows": texts.len(), "text_chars_per_row": DIVERSITY_CHARS,
                    "text_bytes": int(texts.str.len_bytes().sum())})
        out.update(ngram_stats(texts))
    else:
        out["status"] = f"{NOT_APPLICABLE}: no text"
    cluster_info = next((i for i in infos if i.stage == "cluster" and i.kind == "docs"), None)
    sizes = dict(profiles[cluster_info.name].clusters) if cluster_info else dict(final.clusters)
    if sizes:
        values = list(sizes.values())
        h = entropy_bits(values)
        out["clusters"] = {
            "dataset": cluster_info.name if cluster_info else "final",
            "count": len(sizes),
            "sizes": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
            "entropy_bits": h,
            "normalized_entropy": h / np.log2(len(values)) if len(values) > 1 else 1.0,
            "largest_share": max(values) / sum(values),
        }
    else:
        out["clusters"] = {"status": f"{NOT_APPLICABLE}: no cluster column"}
    audit = _audit(infos)
    if audit is not None and "kept_id" in audit.columns:
        out["duplicate_groups"] = near_duplicate_groups(audit)
    else:
        out["duplicate_groups"] = {"status": f"{NOT_APPLICABLE}: no dedup audit"}
    unique = next((i for i in infos if i.stage == "dedup" and i.kind == "docs" and "near_group" in i.columns), None)
    if unique is not None:
        out["near_groups"] = near_groups(unique, profiles[unique.name].near_group_rows)
    else:
        out["near_groups"] = {"status": f"{NOT_APPLICABLE}: no near_group column"}
    return out


def near_groups(unique: DatasetInfo, rows_with_group: int) -> dict[str, Any]:
    """Kept rows sharing a `near_group` (dedup's looser similarity groups, kept together by split)."""
    frame = pl.scan_parquet([str(s) for s in unique.shards]).select("near_group").drop_nulls()
    sizes = (frame.group_by("near_group").len().group_by("len").len(name="groups")
             .sort("len").collect(engine="streaming"))
    histogram = {int(s): int(n) for s, n in sizes.iter_rows()}
    multi = {s: n for s, n in histogram.items() if s > 1}
    return {
        "dataset": unique.name,
        "rows_with_group": rows_with_group,
        "groups": sum(histogram.values()),
        "multi_row_groups": sum(multi.values()),
        "rows_in_multi_row_groups": sum(s * n for s, n in multi.items()),
        "largest": max(histogram) if histogram else 0,
    }


# -- completeness ---------------------------------------------------------------------------------
def _arrow_doc_schema() -> dict[str, str]:
    table = pl.DataFrame(schema=DOC_SCHEMA).to_arrow()
    return {f.name: str(f.type) for f in table.schema}


def _same_type(expected: str, found: str) -> bool:
    def norm(t: str) -> str:
        return t.replace("large_string", "string").replace("string_view", "string").replace("large_", "")
    return norm(expected) == norm(found)


def completeness(infos: list[DatasetInfo], profiles: dict[str, Profile],
                 schemas: dict[str, list[tuple[Path, list]]]) -> dict[str, Any]:
    doc_schema = _arrow_doc_schema()
    out: dict[str, Any] = {}
    for info in infos:
        profile = profiles[info.name]
        shard_schemas = [(p, s) for p, s in schemas.get(info.name, []) if s is not None]
        distinct = {tuple(s) for _, s in shard_schemas}
        first = shard_schemas[0][1] if shard_schemas else []
        inconsistent = [str(path) for path, s in shard_schemas if s != first]
        entry: dict[str, Any] = {
            "stage": info.stage,
            "kind": info.kind,
            "rows": profile.rows,
            "columns": {name: dtype for name, dtype in first},
            "shard_schemas_consistent": len(distinct) <= 1,
            "inconsistent_shards": inconsistent[:20],
            "nulls": dict(sorted(profile.nulls.items())),
            "empty": dict(sorted(profile.empty.items())),
            "out_of_range": dict(sorted(profile.out_of_range.items())),
            "manifest_rows_match": info.manifest is None or int(info.manifest.get("rows", -1)) == profile.rows,
            "unreadable_shards": len(profile.errors),
            "errors": profile.errors[:10],
        }
        if info.kind in ("docs", "rejected") and first:
            found = dict(first)
            entry["missing_doc_columns"] = [c for c in doc_schema if c not in found]
            entry["doc_type_mismatches"] = {
                c: {"expected": t, "found": found[c]}
                for c, t in doc_schema.items() if c in found and not _same_type(t, found[c])
            }
        result = info.result
        if result and info.kind == "docs":
            dropped = sum((result.get("dropped") or {}).values())
            entry["accounting"] = {
                "rows_in": result.get("rows_in"), "rows_out": result.get("rows_out"), "dropped": dropped,
                "balanced": result.get("rows_in") == result.get("rows_out", 0) + dropped,
            }
        out[info.name] = entry
    return {"datasets": out}



# -- fine-tuning: tokens, per-class losses, examples, decontamination ----------------------------
def token_lengths(finals: list[DatasetInfo], final: Profile) -> dict[str, Any]:
    """Token-length histogram per split from the tokens stage's `n_tokens` (absent: said so)."""
    if not final.token_totals:
        where = ", ".join(i.name for i in finals) or "no final dataset"
        return {"status": f"{NOT_APPLICABLE}: no n_tokens column in the final documents ({where}); "
                          "run the tokens stage for token counts"}
    hist: dict[str, dict[str, int]] = defaultdict(dict)
    for (split, bucket), n in sorted(final.token_hist.items()):
        hist[split][str(bucket)] = n
    return {
        "status": "ok",
        "histogram": dict(sorted(hist.items(), key=lambda kv: _split_key(kv[0]))),
        "histogram_note": "bucket b holds rows with 2^b - 1 <= n_tokens <= 2^(b+1) - 2",
        "by_split": {s: {"rows": r, "tokens": t, "mean": t / r if r else 0.0, "max": m}
                     for s, (r, t, m) in sorted(final.token_totals.items(), key=lambda kv: _split_key(kv[0]))},
    }


def class_drops(infos: list[DatasetInfo], profiles: dict[str, Profile], finals: list[str],
                warn_share: float) -> dict[str, Any]:
    """Rows per class in the first labelled dataset and in the final one, the share lost, and the
    rejected (and duplicate) rows of each class by dataset: a class that lost most of its rows
    is flagged even when the corpus as a whole lost few."""
    def labelled(counts: Counter) -> dict[str, int]:
        return {k: n for k, n in counts.items() if k != NONE and k.strip()}

    docs = [i for i in infos if i.kind == "docs" and labelled(profiles[i.name].labels)]
    final: Counter = Counter()
    for name in finals:
        final.update(labelled(profiles[name].labels))
    if not docs or not final:
        return {"status": f"{NOT_APPLICABLE}: no labelled documents"}
    first = docs[0]
    start = labelled(profiles[first.name].labels)
    removed = {i.name: labelled(profiles[i.name].labels) for i in infos
               if i.kind in ("rejected", "audit") and labelled(profiles[i.name].labels)}
    overall = 1 - sum(final.values()) / sum(start.values())
    classes = {}
    for label in sorted(set(start) | set(final)):
        before, after = start.get(label, 0), final.get(label, 0)
        lost = (before - after) / before if before else None
        classes[label] = {
            "first": before, "final": after, "lost_share": lost,
            "removed_by_dataset": {d: c[label] for d, c in removed.items() if c.get(label)},
            "flagged": lost is not None and (lost >= warn_share or lost >= overall + 0.2),
        }
    return {"status": "ok", "first_dataset": first.name, "final_datasets": finals,
            "overall_lost_share": overall, "warn_share": warn_share, "classes": classes,
            "flagged": [k for k, v in classes.items() if v["flagged"]]}


def reason_examples(infos: list[DatasetInfo], profiles: dict[str, Profile], k: int) -> dict[str, Any]:
    """A few rows per drop reason of every rejected dataset: id and text (cut)."""
    out: dict[str, Any] = {}
    for info in infos:
        rows = profiles[info.name].reason_examples if info.kind == "rejected" else []
        per: dict[str, list] = defaultdict(list)
        for reason, _h, row_id, text in sorted(rows, key=lambda r: (r[0], r[1], str(r[2]))):
            if len(per[reason]) < k:
                per[reason].append({"id": row_id, "text": text})
        if per:
            out[info.name] = dict(sorted(per.items()))
    return out


def group_examples(infos: list[DatasetInfo], profiles: dict[str, Profile], options: Any) -> list[dict[str, Any]]:
    """A few duplicate groups of the audit: the kept row (id, text from the dedup output) and the
    rows removed for it (id, kind, similarity, text), at most 5 members shown per group."""
    audit = _audit(infos)
    if audit is None or not options.examples:
        return []
    rows = sorted(profiles[audit.name].group_examples, key=lambda r: (r[0], str(r[2])))
    chosen = sorted({r[0] for r in rows})[:options.examples]
    groups: dict[int, dict[str, Any]] = {}
    for g, kept_id, row_id, kind, similarity, text in rows:
        if g not in chosen:
            continue
        group = groups.setdefault(g, {"kept_id": kept_id, "kept_text": None, "removed": 0, "members": []})
        group["removed"] += 1
        if len(group["members"]) < 5:
            group["members"].append({"id": row_id, "kind": kind, "similarity": similarity, "text": text})
    kept = next((i for i in infos if i.stage == "dedup" and i.kind == "docs" and i.shards), None)
    if kept is not None and groups:
        ids = [g["kept_id"] for g in groups.values()]
        present = set(kept.columns)
        found = (pl.scan_parquet([str(s) for s in kept.shards], missing_columns="insert", extra_columns="ignore")
                 .filter(pl.col("id").is_in(ids))
                 .select("id", snippet(present, options.text_column).alias("text")).collect())
        texts = dict(found.iter_rows())
        for group in groups.values():
            group["kept_text"] = texts.get(group["kept_id"])
    return [groups[g] for g in chosen]


def decontamination(infos: list[DatasetInfo]) -> dict[str, Any]:
    """Per eval set: its size and the train rows that matched it (the decontaminate stage's counts)."""
    stage = next((i for i in infos if i.stage == "decontaminate" and i.kind == "docs"), None)
    if stage is None:
        return {"status": f"{NOT_APPLICABLE}: the decontaminate stage did not run"}
    extra = (stage.manifest or {}).get("extra") or {}
    result = stage.result or {}
    return {"status": "ok", "dataset": stage.name, "mode": extra.get("mode"), "ngram": extra.get("ngram"),
            "train_rows_checked": (result.get("details") or {}).get("train_rows_checked"),
            "contaminated_rows": (result.get("details") or {}).get("contaminated_rows"),
            "dropped": result.get("dropped") or {}, "benchmarks": extra.get("benchmarks") or {}}
