"""The report's fine-tuning parts on a job built here: a class losing most of its rows,
token-length histograms and decontamination counts, each against plain Python (the same parts
on the SMS job: test_report.py)."""

from __future__ import annotations

import json
import math
from collections import Counter

import polars as pl

from pipeline.report import HTML_NAME, METRICS_NAME, Options
from pipeline.report import run as run_report
from pipeline.stage import StageResult

from .jobdata import DOC, write_dataset


def test_class_that_lost_most_rows_tokens_and_decontamination(tmp_path, local_engine):
    """A class losing 60% of its rows while the corpus loses 25% is flagged; token histograms per
    split come from n_tokens; decontamination counts come from the stage's manifest."""
    docs = [{"id": f"d{i:03d}", "source": "s", "url": None, "fetched_at": None, "title": None,
             "text": f"row {i} " + "word " * (i % 40), "label": "rare" if i < 50 else "common", "meta": "{}"}
            for i in range(200)]
    rejected = [{**r, "reason": "too_short"} for r in docs if r["label"] == "rare" and int(r["id"][1:]) < 30]
    kept = [r for r in docs if r not in [{k: v for k, v in x.items() if k != "reason"} for x in rejected]]
    contaminated = [{**r, "reason": "contaminated:gsm8k_test"} for r in kept if r["label"] == "common"][:20]
    kept = [r for r in kept if r["id"] not in {c["id"] for c in contaminated}]
    write_dataset("clean", {"main": tmp_path / "clean", "rejected": tmp_path / "rejected" / "clean"},
                  {"main": [("part-00000.parquet", docs, DOC)],
                   "rejected": [("part-00000.parquet", rejected, {**DOC, "reason": pl.String})]},
                  StageResult(stage="clean", rows_in=200, rows_out=200 - len(rejected), dropped={"too_short": 30}))
    schema = {**DOC, "split": pl.String, "n_tokens": pl.UInt32}
    final = [{**r, "split": "train" if i % 4 else "test", "n_tokens": 2 + (i % 40)} for i, r in enumerate(kept)]
    benchmarks = {"gsm8k_test": {"files": 1, "rows": 1319, "texts": 1319, "ngrams": 46283,
                                 "contaminated_train_rows": 20}}
    out = tmp_path / "decontaminated"
    write_dataset("decontaminate", {"main": out, "rejected": tmp_path / "rejected" / "decontaminated"},
                  {"main": [(f"{s}/part-00000.parquet", [r for r in final if r["split"] == s], schema)
                            for s in ("train", "test")],
                   "rejected": [("train/part-00000.parquet", contaminated, {**DOC, "reason": pl.String})]},
                  StageResult(stage="decontaminate", rows_in=len(kept) + 20, rows_out=len(kept),
                              dropped={"contaminated:gsm8k_test": 20},
                              details={"train_rows_checked": 130, "contaminated_rows": 20}))
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["extra"] = {"mode": "drop", "ngram": 13, "benchmarks": benchmarks}
    (out / "_manifest.json").write_text(json.dumps(manifest))

    report = tmp_path / "report"
    run_report([tmp_path / "clean", tmp_path / "rejected" / "clean", out, tmp_path / "rejected" / "decontaminated"],
               report, Options(), local_engine)
    m = json.loads((report / METRICS_NAME).read_text())
    drops = m["noise"]["class_drops"]
    assert drops["flagged"] == ["rare"]
    rare = drops["classes"]["rare"]
    assert (rare["first"], rare["final"], rare["lost_share"]) == (50, 20, 0.6)
    assert rare["removed_by_dataset"] == {"rejected/clean": 30}
    assert drops["classes"]["common"]["removed_by_dataset"] == {"rejected/decontaminated": 20}
    assert not drops["classes"]["common"]["flagged"]
    tokens = m["volume"]["tokens"]
    assert tokens["status"] == "ok"
    for split in ("train", "test"):
        rows = [r for r in final if r["split"] == split]
        assert tokens["by_split"][split]["rows"] == len(rows)
        assert tokens["by_split"][split]["tokens"] == sum(r["n_tokens"] for r in rows)
        assert tokens["by_split"][split]["max"] == max(r["n_tokens"] for r in rows)
        expected = Counter(str(int(math.log2(r["n_tokens"] + 1))) for r in rows)
        assert tokens["histogram"][split] == dict(expected)
    deco = m["decontamination"]
    assert deco["benchmarks"] == benchmarks and deco["contaminated_rows"] == 20 and deco["mode"] == "drop"
    reasons = m["noise"]["examples_by_reason"]
    shown = reasons["rejected/decontaminated"]["contaminated:gsm8k_test"]
    assert len(shown) == 3 and {e["id"] for e in shown} <= {c["id"] for c in contaminated}
    assert len(reasons["rejected/clean"]["too_short"]) == 3
    html = (report / HTML_NAME).read_text()
    assert 'id="class-loss-warning"' in html and "rare" in html and 'id="plot-tokens"' in html
    assert "gsm8k_test" in html and "46,283" in html
