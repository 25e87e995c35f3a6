"""The report on a real job folder (the SMS spam collection through every stage's output shape):
every number of metrics.json against values computed here in plain Python, the page's
sections and images, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser

import polars as pl
import pytest
import xxhash

from pipeline.dataset import write_shard
from pipeline.report import HTML_NAME, METRICS_NAME, Options
from pipeline.report import run as run_report
from pipeline.report.page import SECTIONS
from pipeline.runner import run_stage

from .browser import chromium_path, inspect_page
from .jobdata import WORD, build_job

PLOTS = ["plot-lengths", "plot-balance", "plot-drops", "plot-similarity", "plot-clusters", "plot-confusion"]


def entropy(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


@pytest.fixture(scope="module")
def full_report(sms_job, dask_engine, tmp_path_factory):
    """The report stage run as the runner runs it (run_stage) on the Dask cluster."""
    out = tmp_path_factory.mktemp("report") / "report"
    result = run_stage("report", sms_job.inputs(), out, Options(), dask_engine)
    return sms_job, result, out, json.loads((out / METRICS_NAME).read_text())


def test_volume_matches_plain_python(full_report):
    job, result, _, m = full_report
    v = m["volume"]
    final = job.final
    assert m["final_datasets"] == ["splits"]
    assert v["rows"] == len(final) == result.rows_in == result.rows_out
    assert v["words"] == sum(len(WORD.findall(r["text"])) for r in final)
    assert v["chars"] == sum(len(r["text"]) for r in final)
    assert v["text_bytes"] == sum(len(r["text"].encode()) for r in final)
    for split in ("train", "val", "test"):
        rows = [r for r in final if r["split"] == split]
        assert v["by_split"][split] == {
            "rows": len(rows), "words": sum(len(WORD.findall(r["text"])) for r in rows),
            "chars": sum(len(r["text"]) for r in rows), "bytes": sum(len(r["text"].encode()) for r in rows)}
    assert {s: x["rows"] for s, x in v["by_source"].items()} == dict(Counter(r["source"] for r in final))
    pairs = Counter((r["source"], r["split"]) for r in final)
    assert {(x["source"], x["split"]): x["rows"] for x in v["by_source_split"]} == dict(pairs)
    # length histogram: bucket b = floor(log2(words + 1))
    expected = Counter((r["split"], (len(WORD.findall(r["text"])) + 1).bit_length() - 1) for r in final)
    got = {(s, int(b)): n for s, per in v["length_histogram_words"].items() for b, n in per.items()}
    assert got == dict(expected)
    # the sample holds every row here (4,032 train rows < 20,000): quantiles are exact
    train_words = sorted(len(WORD.findall(r["text"])) for r in final if r["split"] == "train")
    assert v["length_quantiles_sample"]["train"]["words"]["max"] == train_words[-1]
    assert v["datasets"]["rejected/clean"]["rows"] == len(job.rejected)
    assert v["datasets"]["docs"]["rows"] == len(job.docs) == 5574


def test_balance_matches_plain_python(full_report):
    job, _, _, m = full_report
    b = m["balance"]
    assert b["status"] == "ok"
    for split in ("train", "val", "test"):
        counts = Counter(r["label"] for r in job.final if r["split"] == split)
        stats = b["per_split"][split]
        assert stats["counts"] == dict(counts)
        assert stats["imbalance_ratio"] == pytest.approx(max(counts.values()) / min(counts.values()))
        assert stats["entropy_bits"] == pytest.approx(entropy(counts.values()))
    overall = Counter(r["label"] for r in job.final)
    assert b["overall"]["counts"] == dict(overall) == {"ham": 4467, "spam": 573}
    assert b["overall"]["majority_share"] == pytest.approx(4467 / 5040)


def test_noise_matches_plain_python(full_report):
    job, _, _, m = full_report
    n = m["noise"]
    reasons = Counter(r["reason"] for r in job.rejected)
    assert n["rejected_rows_by_reason"] == {"rejected/clean": dict(reasons)}
    drops = {(d["stage"], d["reason"]): d["rows"] for d in n["drops"]}
    kinds = Counter(a["kind"] for a in job.audit)
    assert drops == {("clean", r): c for r, c in reasons.items()} | {
        ("dedup", f"{k}_duplicate"): c for k, c in kinds.items()}
    assert n["dropped_by_stage"] == {"clean": len(job.rejected), "dedup": len(job.audit)}
    dup = n["duplicates"]
    assert dup["rows_in"] == len(job.clean)
    assert dup["exact"] == kinds["exact"] and dup["near"] == kinds["near"] and kinds["near"] > 0
    assert dup["exact_rate"] == pytest.approx(kinds["exact"] / len(job.clean))
    assert dup["near_rate"] == pytest.approx(kinds["near"] / len(job.clean))
    for kind in ("exact", "near"):
        expected = [0] * 20
        for a in job.audit:
            if a["kind"] == kind:
                expected[min(int(a["similarity"] * 20), 19)] += 1
        assert dup["similarity_histogram"][kind] == expected
    missing = n["missing_values_final"]
    assert missing["title"]["null"] == sum(r["title"] is None for r in job.final)
    assert missing["near_group"]["null"] == 0 == sum(r["near_group"] is None for r in job.final)
    assert missing["fetched_at"]["null_rate"] == 1.0
    assert missing["text"]["empty"] == sum(r["text"].strip() == "" for r in job.final)
    noise = n["label_noise"]
    assert noise["rows_checked"] == sum(r["split"] == "train" for r in job.final)
    assert sum(noise["by_transition"].values()) == noise["candidates"] == len(noise["examples"])
    train_ids = {r["id"]: r["label"] for r in job.final if r["split"] == "train"}
    for example in noise["examples"]:
        assert train_ids[example["id"]] == example["given"] != example["suggested"]
        assert example["p_suggested"] > example["p_given"]


def test_diversity_matches_plain_python(full_report):
    job, _, _, m = full_report
    d = m["diversity"]
    docs = [WORD.findall(r["text"].lower()) for r in job.final]  # the sample is every row here
    tokens = [t for doc in docs for t in doc]
    assert d["sample_rows"] == len(job.final)
    assert d["tokens"] == len(tokens)
    assert d["vocabulary_size"] == len(set(tokens))
    for n in (1, 2, 3):
        grams = [tuple(doc[i:i + n]) for doc in docs for i in range(len(doc) - n + 1)]
        assert d[f"ngrams_{n}"] == len(grams)
        assert d[f"distinct_{n}"] == pytest.approx(len(set(grams)) / len(grams))
    sizes = Counter(str(min(len(WORD.findall(r["text"])) // 8, 5)) for r in job.unique)
    assert d["clusters"]["sizes"] == dict(sizes)
    assert d["clusters"]["entropy_bits"] == pytest.approx(entropy(sizes.values()))
    assert d["clusters"]["normalized_entropy"] == pytest.approx(entropy(sizes.values()) / math.log2(len(sizes)))
    groups = Counter(a["kept_id"] for a in job.audit)
    assert d["duplicate_groups"]["groups"] == len(groups)
    assert d["duplicate_groups"]["largest"] == max(groups.values()) + 1
    assert d["duplicate_groups"]["rows_in_groups"] == len(job.audit) + len(groups)
    near = Counter(r["near_group"] for r in job.unique)
    multi = [n for n in near.values() if n > 1]
    assert d["near_groups"] == {"dataset": "unique", "rows_with_group": len(job.unique), "groups": len(near),
                                "multi_row_groups": len(multi), "rows_in_multi_row_groups": sum(multi),
                                "largest": max(near.values())}
    assert len(multi) > 10


def test_completeness_and_lineage(full_report):
    job, _, _, m = full_report
    datasets = m["completeness"]["datasets"]
    assert set(datasets) == {"docs", "clean", "rejected/clean", "unique", "duplicates", "clusters", "labelled",
                             "splits"}
    for name, entry in datasets.items():
        assert entry["shard_schemas_consistent"], name
        assert entry["manifest_rows_match"], name
    assert datasets["labelled"]["out_of_range"]["label_confidence"] == 3
    assert datasets["splits"]["out_of_range"] == {"cluster_distance": 0, "fetched_at": 0,
                                                "label_confidence": 3, "split": 0}
    assert datasets["splits"]["missing_doc_columns"] == []
    assert datasets["splits"]["doc_type_mismatches"] == {}
    assert datasets["clean"]["accounting"] == {"rows_in": len(job.docs), "rows_out": len(job.clean),
                                               "dropped": len(job.rejected), "balanced": True}
    assert datasets["docs"]["nulls"]["title"] == sum(r["title"] is None for r in job.docs)
    lineage = m["lineage"]
    assert [x["stage"] for x in lineage] == ["extract", "clean", "clean", "dedup", "dedup", "cluster", "label", "split"]
    clean = next(x for x in lineage if x["name"] == "clean")
    assert clean["options"] == {"min_words": 3, "drop_urls": True}
    assert (clean["rows_in"], clean["rows_out"], clean["seconds"]) == (len(job.docs), len(job.clean), 1.25)
    assert clean["dropped"] == dict(Counter(r["reason"] for r in job.rejected))
    split = next(x for x in lineage if x["stage"] == "split")
    assert split["shards"] == 4 and split["details"] == {"method": "random"}


def test_baseline_learns_spam_and_its_scores_agree(full_report):
    job, result, _, m = full_report
    b = m["baseline"]
    assert b["status"] == "ok"
    val = [r for r in job.final if r["split"] == "val"]
    assert b["train_rows"] == sum(r["split"] == "train" for r in job.final)
    assert b["val_rows"] == len(val)
    v = b["validation"]
    labels, matrix = v["confusion_matrix"]["labels"], v["confusion_matrix"]["matrix"]
    assert labels == ["ham", "spam"]
    truth = Counter(r["label"] for r in val)
    assert [sum(row) for row in matrix] == [truth["ham"], truth["spam"]]
    assert v["accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / len(val))
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        precision = tp / sum(row[i] for row in matrix)
        recall = tp / sum(matrix[i])
        assert v["per_class"][label]["precision"] == pytest.approx(precision)
        assert v["per_class"][label]["recall"] == pytest.approx(recall)
        assert v["per_class"][label]["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert v["macro_f1"] == pytest.approx(sum(x["f1"] for x in v["per_class"].values()) / 2)
    # SMS spam is learnable: a linear model separates it well; the majority class alone gets 0.47
    assert v["macro_f1"] > 0.85 and b["cv"]["macro_f1"] > 0.85 and b["cv"]["folds"] == 5
    assert result.details["val_macro_f1"] == pytest.approx(v["macro_f1"], abs=1e-4)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.images, self.tags, self.refs = set(), {}, Counter(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images[attrs.get("id")] = attrs["src"]
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith(("#", "data:")):
                self.refs.append(attrs[key])


def test_html_holds_every_section_and_plot(full_report):
    _, _, out, _ = full_report
    page = _Page()
    page.feed((out / HTML_NAME).read_text(encoding="utf-8"))
    assert {anchor for anchor, _ in SECTIONS} <= page.ids
    assert set(page.images) == set(PLOTS)
    for plot, src in page.images.items():
        assert src.startswith("data:image/png;base64,"), plot
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n", plot
        width, height = struct.unpack(">II", png[16:24])
        assert width > 200 and height > 200, plot
    assert page.refs == [] and page.tags["script"] == 0 and page.tags["link"] == 0  # self-contained


def test_page_renders_in_headless_chromium(full_report):
    if chromium_path() is None:
        pytest.fail("Chromium is missing: `make system-deps` installs Debian's chromium package")
    _, _, out, _ = full_report
    seen = inspect_page(out / HTML_NAME)
    assert seen["errors"] == []
    page = seen["page"]
    assert page["sections"] == [anchor for anchor, _ in SECTIONS]
    assert [i["id"] for i in page["images"]] == PLOTS
    for image in page["images"]:
        assert image["complete"] and image["width"] > 200 and image["height"] > 200 and image["shown"] > 0, image
    assert seen["screenshot"][:8] == b"\x89PNG\r\n\x1a\n" and page["height"] > 2000


def test_sample_is_bounded_seeded_and_engine_independent(sms_job, local_engine, full_report, tmp_path):
    _, _, _, dask_metrics = full_report
    options = Options(sample_rows=100, seed=7)
    metrics = []
    for name in ("a", "b"):
        run_report([sms_job.root / "splits"], tmp_path / name, options, local_engine)
        metrics.append(json.loads((tmp_path / name / METRICS_NAME).read_text()))
    assert metrics[0]["sample"]["by_split"] == {"test": 100, "train": 100, "val": 100}
    for m in metrics:
        m.pop("generated_at"), m.pop("seconds"), m.pop("timings")
    assert metrics[0] == metrics[1]
    # the sample is the 100 smallest xxHash64("7:" + id) of each split: recompute the vocabulary
    picked = []
    for split in ("train", "val", "test"):
        rows = sorted((r for r in sms_job.final if r["split"] == split),
                      key=lambda r: xxhash.xxh64_intdigest(f"7:{r['id']}".encode()))
        picked += rows[:100]
    vocabulary = {t for r in picked for t in WORD.findall(r["text"].lower())}
    assert metrics[0]["diversity"]["vocabulary_size"] == len(vocabulary)
    # counts never depend on the sample
    assert metrics[0]["volume"]["by_split"] == dask_metrics["volume"]["by_split"]
    assert metrics[0]["baseline"]["train_rows"] == 100


def test_an_unfinished_stage_folder_is_named_not_dropped_silently(shared_data, tmp_path, local_engine, caplog):
    job = build_job(shared_data, tmp_path / "job", limit=50, labels=False)
    (job.root / "docs" / "_manifest.json").unlink()  # _progress/ stays: a stage that did not finish
    run_report([job.root / "docs"], tmp_path / "report", Options(), local_engine)
    assert json.loads((tmp_path / "report" / METRICS_NAME).read_text())["inputs"] == []
    assert f"report: {job.root / 'docs'} not read: input dataset" in caplog.text and "is incomplete" in caplog.text


def test_docs_only_without_labels_or_manifest(shared_data, tmp_path, local_engine):
    job = build_job(shared_data, tmp_path / "job", limit=300, labels=False)
    # a plain folder of Parquet files (a folder with _progress/ but no manifest is a stage that
    # did not finish: the report says so on stderr and leaves it out)
    (job.root / "docs" / "_manifest.json").unlink()
    for marker in [job.root / "docs" / "_SUCCESS", *(job.root / "docs" / "_progress").glob("*")]:
        marker.unlink()
    (job.root / "docs" / "_progress").rmdir()
    out = tmp_path / "report"
    run_report([job.root / "docs"], out, Options(), local_engine)
    m = json.loads((out / METRICS_NAME).read_text())
    assert m["inputs"][0]["stage"] == "extract"  # recognised by its folder name
    assert m["volume"]["rows"] == 300
    assert m["volume"]["by_split"] == {"all": {"rows": 300, "words": sum(len(WORD.findall(r["text"])) for r in job.docs),
                                               "chars": sum(len(r["text"]) for r in job.docs),
                                               "bytes": sum(len(r["text"].encode()) for r in job.docs)}}
    assert m["baseline"]["status"] == "not applicable: no labels"
    assert m["balance"]["status"] == "not applicable: no labels"
    assert m["noise"]["duplicates"]["status"].startswith("not applicable")
    assert m["diversity"]["clusters"]["status"].startswith("not applicable")
    assert m["noise"]["drops"] == [] and m["lineage"][0]["has_manifest"] is False
    page = _Page()
    page.feed((out / HTML_NAME).read_text(encoding="utf-8"))
    assert {anchor for anchor, _ in SECTIONS} <= page.ids
    assert set(page.images) == {"plot-lengths"}


def test_one_class_and_no_validation(shared_data, tmp_path, local_engine):
    job = build_job(shared_data, tmp_path / "job", limit=400)
    out = tmp_path / "report"
    # the unique/ dataset has labels but no split column: cross-validation only
    run_report([job.root / "unique"], out, Options(), local_engine)
    b = json.loads((out / METRICS_NAME).read_text())["baseline"]
    assert b["status"] == "ok" and b["validation"] is None and b["train_rows"] == len(job.unique)
    # one class only: no baseline, said plainly
    ham = pl.DataFrame([{**r, "split": "train" if i % 2 else "val"}
                        for i, r in enumerate(x for x in job.docs if x["label"] == "ham")])
    write_shard(ham, tmp_path / "ham", "part-00000.parquet")
    run_report([tmp_path / "ham"], tmp_path / "r2", Options(), local_engine)
    m = json.loads((tmp_path / "r2" / METRICS_NAME).read_text())
    assert m["baseline"]["status"] == "not applicable: fewer than 2 classes in train (['ham'])"
    assert m["balance"]["per_split"]["train"]["counts"] == {"ham": ham.height // 2}
    assert m["noise"]["label_noise"]["status"] == m["baseline"]["status"]
    # rejected rows are not training data: no final documents, every section still there
    run_report([job.root / "rejected" / "clean"], tmp_path / "r3", Options(), local_engine)
    m = json.loads((tmp_path / "r3" / METRICS_NAME).read_text())
    assert m["final_datasets"] == []
    assert m["baseline"]["status"] == "not applicable: no documents with text"
    assert m["noise"]["rejected_rows_by_reason"]["clean"] == dict(Counter(r["reason"] for r in job.rejected))


def test_unreadable_shard_is_reported_not_fatal(shared_data, tmp_path, local_engine):
    job = build_job(shared_data, tmp_path / "job", limit=300)
    broken = sorted((job.root / "labelled").glob("*.parquet"))[1]
    broken.write_bytes(b"not parquet at all")
    inputs = [job.root / name for name in ("clean", "labelled")]
    run_report(inputs, tmp_path / "report", Options(), local_engine)
    m = json.loads((tmp_path / "report" / METRICS_NAME).read_text())
    labelled = m["completeness"]["datasets"]["labelled"]
    assert labelled["unreadable_shards"] == 1 and broken.name in labelled["errors"][0]
    assert labelled["manifest_rows_match"] is False
    readable = [r for r in job.unique if r["id"] not in set(pl.read_parquet(
        sorted((job.root / "unique").glob("*.parquet"))[1])["id"])]
    assert m["volume"]["rows"] == len(readable)  # the other shards still count


def test_cli_and_option_validation(sms_job, tmp_path):
    out = tmp_path / "report"
    args = [sys.executable, "-m", "pipeline", "report", "--workers", "0", "--sample-rows", "300",
            "--output", str(out), "--input", str(sms_job.root / "splits"),
            "--input", str(sms_job.root / "rejected" / "clean")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"report\s+in=5040\s+out=5040", done.stdout)
    metrics = json.loads((out / METRICS_NAME).read_text())
    assert metrics["sample"]["by_split"]["train"] == 300
    assert metrics["noise"]["rejected_rows_by_reason"] == {
        "rejected/clean": dict(Counter(r["reason"] for r in sms_job.rejected))}
    bad = subprocess.run([sys.executable, "-m", "pipeline", "report", "--input", str(sms_job.root / "docs"),
                          "--output", str(tmp_path / "x"), "--hash-features", "1000"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "hash_features" in bad.stderr and "power of two" in bad.stderr


def test_sms_job_losses_and_examples_match_plain_python(full_report):
    job, _, out, m = full_report
    drops = m["noise"]["class_drops"]
    first, final = Counter(r["label"] for r in job.docs), Counter(r["label"] for r in job.final)
    assert drops["first_dataset"] == "docs" and drops["final_datasets"] == ["splits"]
    assert math.isclose(drops["overall_lost_share"], 1 - sum(final.values()) / sum(first.values()))
    rejected_by_label = Counter(r["label"] for r in job.rejected)
    for label, entry in drops["classes"].items():
        assert (entry["first"], entry["final"]) == (first[label], final[label])
        assert math.isclose(entry["lost_share"], 1 - final[label] / first[label])
        assert entry["removed_by_dataset"] == {"rejected/clean": rejected_by_label[label]}
    # examples: at most 3 per reason, each a real rejected row of that reason, text cut to 300
    by_id = {r["id"]: r for r in job.rejected}
    examples = m["noise"]["examples_by_reason"]["rejected/clean"]
    assert set(examples) == {r["reason"] for r in job.rejected}
    for reason, items in examples.items():
        assert len(items) == min(3, sum(r["reason"] == reason for r in job.rejected))
        for item in items:
            assert by_id[item["id"]]["reason"] == reason and item["text"] == by_id[item["id"]]["text"][:300]
    groups = m["diversity"]["duplicate_group_examples"]
    members = Counter(a["kept_id"] for a in job.audit)
    texts = {r["id"]: r["text"] for r in job.docs}
    assert len(groups) == 3
    for group in groups:
        assert group["removed"] == members[group["kept_id"]] and group["kept_text"] == texts[group["kept_id"]][:300]
        # the members are that group's audit rows (this audit has no text column: texts empty)
        assert {x["id"] for x in group["members"]} <= {a["id"] for a in job.audit if a["kept_id"] == group["kept_id"]}
        assert len(group["members"]) == min(5, group["removed"]) and {x["text"] for x in group["members"]} == {""}
    assert m["volume"]["tokens"]["status"].startswith("not applicable: no n_tokens")
    assert m["decontamination"]["status"].startswith("not applicable")
    html = (out / HTML_NAME).read_text()
    assert 'id="decontamination"' in html and "Examples per drop reason" in html
