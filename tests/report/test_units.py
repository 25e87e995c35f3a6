"""The report's pieces called directly, without Dask: one shard's profile, the bottom-k sample
thresholds, confident-learning candidates and class statistics."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import polars as pl
import pytest
import xxhash

from pipeline.dataset import write_shard
from pipeline.report.baseline import confident_learning_candidates
from pipeline.report.inputs import hive_values
from pipeline.report.metrics import class_stats, diversity_texts, ngram_stats
from pipeline.report.profile import ProfileTask, profile_shard, sample_shard, thresholds_from

from .jobdata import WORD, read_sms


@pytest.fixture(scope="module")
def sms_shard(shared_data, tmp_path_factory):
    sms = read_sms(shared_data)[:600]
    rows = [{"id": f"m{i}", "source": "sms", "text": text if i % 50 else "   ", "label": label if i % 7 else None,
             "label_confidence": 2.0 if i < 4 else 0.5}
            for i, (label, text) in enumerate(sms)]
    root = tmp_path_factory.mktemp("shard") / "labelled"
    write_shard(pl.DataFrame(rows), root, "split=train/part-00000.parquet")
    return rows, root, root / "split=train" / "part-00000.parquet"


def task_for(root, shard, **kw):
    columns = {"id": "large_string", "source": "large_string", "text": "large_string",
               "label": "large_string", "label_confidence": "double"}
    return ProfileTask(dataset="labelled", shard=shard, kind="docs", columns=columns,
                       constants=hive_values(root, shard), final=True, text_column="text",
                       label_column="label", seed=3, sample_rows=kw.pop("sample_rows", 50), **kw)


def test_profile_of_one_shard(sms_shard):
    rows, root, shard = sms_shard
    out = profile_shard(task_for(root, shard))
    assert out["rows"] == len(rows)
    assert out["nulls"]["label"] == sum(r["label"] is None for r in rows)
    assert out["empty"]["text"] == sum(r["text"].strip() == "" for r in rows) == 12
    assert out["out_of_range"]["label_confidence"] == 4
    assert out["out_of_range"]["split"] == 0  # the Hive partition value is checked too
    groups = {(src, split, label): (n, w) for src, split, label, n, w, _, _ in out["groups"]}
    labels = Counter(r["label"] or "(none)" for r in rows)
    assert {k[2]: v[0] for k, v in groups.items()} == dict(labels)
    assert {k[1] for k in groups} == {"train"}
    assert sum(w for _, w in groups.values()) == sum(len(WORD.findall(r["text"])) for r in rows)
    expected = sorted(xxhash.xxh64_intdigest(f"3:{r['id']}".encode()) for r in rows)[:50]
    assert sorted(out["bottom_hashes"]["train"].tolist()) == expected


def test_sample_takes_the_k_smallest_hashes(sms_shard):
    rows, root, shard = sms_shard
    part = profile_shard(task_for(root, shard, sample_rows=50))
    thresholds = thresholds_from([part["bottom_hashes"]], 50)
    sample = sample_shard(task_for(root, shard, sample_rows=50, thresholds=thresholds))
    by_hash = sorted(rows, key=lambda r: xxhash.xxh64_intdigest(f"3:{r['id']}".encode()))
    assert set(sample["id"]) == {r["id"] for r in by_hash[:50]}
    # more rows asked than exist: every row
    assert thresholds_from([part["bottom_hashes"]], 10_000)["train"] == max(part["bottom_hashes"]["train"])


def test_confident_learning_flags_the_obvious_flip():
    classes = ["a", "b"]
    given = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9],  # row 2: labelled a, looks like b
                      [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])  # row 5: labelled b, looks like a
    suggested = confident_learning_candidates(given, probs, classes)
    # thresholds: a = mean(0.9, 0.8, 0.1) = 0.6, b = mean(0.8, 0.6, 0.3) = 0.5667; row 4 (b at
    # 0.6) stays: a's 0.4 is under a's threshold
    assert suggested.tolist() == [-1, -1, 1, -1, -1, 0]


def test_class_stats_and_ngrams():
    stats = class_stats({"x": 30, "y": 10})
    assert stats["imbalance_ratio"] == 3.0
    assert stats["entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert stats["normalized_entropy"] == pytest.approx(stats["entropy_bits"])
    grams = ngram_stats(pl.Series(["The cat sat", "the cat", ""]))
    assert (grams["tokens"], grams["vocabulary_size"]) == (5, 3)
    assert grams["distinct_2"] == pytest.approx(2 / 3)  # the-cat, cat-sat, the-cat
    assert grams["ngrams_3"] == 1 and grams["distinct_3"] == 1.0


def test_diversity_reads_a_bounded_prefix_of_the_sample_in_hash_order():
    sample = pl.DataFrame({"text": ["dddd", "aaaaaa", "bb", "ccc"], "h": [4, 1, 2, 3]},
                          schema={"text": pl.String, "h": pl.UInt64})
    # h order: aaaaaa, bb, ccc, dddd; cut to 5 chars: aaaaa (5), bb (7), ccc (10), dddd (14)
    assert diversity_texts(sample, max_chars=5, max_bytes=10).to_list() == ["aaaaa", "bb", "ccc"]
    assert diversity_texts(sample, max_chars=5, max_bytes=3).to_list() == ["aaaaa"]  # at least one
    assert diversity_texts(sample).to_list() == ["aaaaaa", "bb", "ccc", "dddd"]
