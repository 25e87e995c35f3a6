"""index.html: one self-contained page (inline CSS, base64 PNG plots, no script, no network)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from pipeline.report import plots

SECTIONS = [
    ("overview", "Overview"),
    ("volume", "Volume"),
    ("balance", "Balance"),
    ("noise", "Noise"),
    ("diversity", "Diversity"),
    ("decontamination", "Decontamination"),
    ("completeness", "Completeness and consistency"),
    ("lineage", "Lineage"),
    ("baseline", "Baseline"),
]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
nav{background:#37474f;padding:6px 24px;position:sticky;top:0}nav a{color:#cfd8dc;margin-right:14px;text-decoration:none}
nav a:hover{color:#fff}main{max-width:1100px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 18px 14px;margin:16px 0}
h2{border-bottom:1px solid #eee;padding-bottom:4px}h3{margin:14px 0 6px;font-size:15px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#888;font-style:italic}.warn{color:#b71c1c}.ok{color:#1b5e20}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px;min-width:120px;background:#fcfcfc}
.card b{display:block;font-size:20px}pre{white-space:pre-wrap;font-size:12px;margin:0;max-width:520px}
details summary{cursor:pointer;color:#37474f}
"""


def in_split_order(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    """train, val, test first (metrics.json sorts its keys; the page should not)."""
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(mapping.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return escape(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return escape(str(value))


def table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    if not rows:
        return '<p class="na">nothing to show</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{fmt(v)}</td>' if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image(plot_id: str, data: str | None, alt: str, missing: str) -> str:
    if data is None:
        return f'<p class="na" id="{plot_id}-missing">{escape(alt)}: not available ({escape(missing)})</p>'
    return f'<img class="plot" id="{plot_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def na(status: str) -> str:
    return f'<p class="na">{escape(status)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def render(metrics: dict[str, Any], title: str) -> str:
    bodies = {
        "overview": overview(metrics),
        "volume": volume(metrics["volume"]),
        "balance": balance(metrics["balance"]),
        "noise": noise(metrics["noise"]),
        "diversity": diversity(metrics["diversity"]),
        "decontamination": decontamination(metrics["decontamination"]),
        "completeness": completeness(metrics["completeness"]),
        "lineage": lineage(metrics["lineage"]),
        "baseline": baseline(metrics["baseline"]),
    }
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in SECTIONS)
    content = "".join(section(a, t, bodies[a]) for a, t in SECTIONS)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div>generated {escape(metrics['generated_at'])} · "
        f"metrics.json beside this page holds every number</div></header>"
        f"<nav>{nav}</nav><main>{content}</main></body></html>\n"
    )


def overview(m: dict[str, Any]) -> str:
    v, b = m["volume"], m["baseline"]
    dup = m["noise"]["duplicates"]
    cards = [
        ("documents", fmt(v["rows"])), ("words", fmt(v["words"])), ("text bytes", fmt(v["text_bytes"])),
        ("classes", fmt(m["balance"]["overall"]["classes"]) if m["balance"]["status"] == "ok" else "–"),
        ("dropped rows", fmt(sum(d["rows"] for d in m["noise"]["drops"]))),
        ("duplicate rate", f"{dup['exact_rate'] + dup['near_rate']:.1%}" if dup.get("status") == "ok" else "–"),
        ("baseline val macro-F1", f"{b['validation']['macro_f1']:.3f}" if b.get("validation") else "–"),
    ]
    html = '<div class="cards">' + "".join(f"<div class=card><b>{v}</b>{escape(k)}</div>" for k, v in cards) + "</div>"
    html += "<h3>Datasets read</h3>" + table(
        ["folder", "stage", "dataset", "kind", "rows", "bytes on disk", "shards"],
        [[i["name"], i["stage"], i["dataset"], i["kind"], i["rows"], i["bytes"], i["shards"]] for i in m["inputs"]])
    for skipped in m.get("skipped", []):
        html += f'<p class="warn">{escape(skipped["reason"])}</p>'
    final = ", ".join(m["final_datasets"]) or "none"
    s = m["sample"]
    html += (f"<p>Text metrics describe the final documents: <b>{escape(final)}</b>. Sample: {s['rows']:,} rows "
             f"(at most {s['max_rows_per_split']:,} per split, seed {s['seed']}).</p>")
    return html


def volume(v: dict[str, Any]) -> str:
    cols = ["rows", "words", "chars", "bytes"]
    html = "<h3>Per split</h3>" + table(["split", *cols], [[k, *(x[c] for c in cols)] for k, x in in_split_order(v["by_split"])])
    html += "<h3>Per source</h3>" + table(["source", *cols], [[k, *(x[c] for c in cols)] for k, x in v["by_source"].items()])
    if len(v["by_source_split"]) > 1:
        html += "<h3>Per source and split</h3>" + table(
            ["source", "split", *cols], [[r["source"], r["split"], *(r[c] for c in cols)] for r in v["by_source_split"]])
    html += "<h3>Length (sample quantiles)</h3>" + table(
        ["split", "unit", "p10", "p50", "p90", "p99", "max"],
        [[s, unit, *(q[unit][k] for k in ("p10", "p50", "p90", "p99", "max"))]
         for s, q in in_split_order(v["length_quantiles_sample"]) for unit in ("words", "chars")])
    hist = {s: {int(b): n for b, n in per.items()} for s, per in in_split_order(v["length_histogram_words"])}
    html += image("plot-lengths", plots.length_distribution(hist), "Length distribution", "no text")
    t = v["tokens"]
    html += "<h3>Tokens (n_tokens)</h3>"
    if t["status"] != "ok":
        return html + na(t["status"]) + image("plot-tokens", None, "Token-length distribution", "no n_tokens")
    html += table(["split", "rows", "tokens", "mean", "max"],
                  [[s, x["rows"], x["tokens"], x["mean"], x["max"]] for s, x in in_split_order(t["by_split"])])
    token_hist = {s: {int(b): n for b, n in per.items()} for s, per in in_split_order(t["histogram"])}
    html += image("plot-tokens", plots.length_distribution(token_hist, "tokens", "Token-length distribution"),
                  "Token-length distribution", "no n_tokens")
    return html


def examples_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    return table(columns, [[r.get(c) for c in columns] for r in rows])


def balance(b: dict[str, Any]) -> str:
    if b["status"] != "ok":
        return na(b["status"]) + image("plot-balance", None, "Class balance", "no labels")
    splits = [*in_split_order(b["per_split"]), ("all", b["overall"])]
    classes = sorted(b["overall"]["counts"], key=lambda c: (-b["overall"]["counts"][c], c))
    html = table(["class", *(s for s, _ in splits)],
                 [[c, *(st["counts"].get(c, 0) for _, st in splits)] for c in classes])
    html += table(["split", "classes", "rows", "imbalance (max/min)", "entropy (bits)", "normalised entropy",
                   "majority share"],
                  [[s, st["classes"], st["rows"], st["imbalance_ratio"], st["entropy_bits"], st["normalized_entropy"],
                    st["majority_share"]] for s, st in splits])
    if any(b["unlabelled_rows"].values()):
        html += f"<p>Unlabelled rows: {fmt(b['unlabelled_rows'])}</p>"
    html += image("plot-balance", plots.class_balance({s: st["counts"] for s, st in in_split_order(b["per_split"])}),
                  "Class balance per split", "no labels")
    return html


def noise(n: dict[str, Any]) -> str:
    html = "<h3>Rows dropped per stage and rule</h3>" + table(
        ["stage", "rule", "rows", "counted from"], [[d["stage"], d["reason"], d["rows"], d["from"]] for d in n["drops"]])
    html += image("plot-drops", plots.drops_per_rule(n["drops"]), "Drops per rule", "no rows were dropped")
    if n["rejected_rows_by_reason"]:
        html += "<h3>Rejected datasets (reason column)</h3>" + table(
            ["dataset", "reason", "rows"],
            [[d, r, c] for d, reasons in n["rejected_rows_by_reason"].items() for r, c in reasons.items()])
    cd = n["class_drops"]
    html += "<h3>Rows lost per class</h3>"
    if cd["status"] != "ok":
        html += na(cd["status"])
    else:
        if cd["flagged"]:
            html += (f'<p class="warn" id="class-loss-warning">Classes that lost a large share of their rows: '
                     f'{escape(", ".join(cd["flagged"]))} (overall {cd["overall_lost_share"]:.1%}).</p>')
        html += (f"<p>From {escape(cd['first_dataset'])} (the first labelled dataset) to "
                 f"{escape(', '.join(cd['final_datasets']))}.</p>")
        rows = []
        for label, c in cd["classes"].items():
            lost = "–" if c["lost_share"] is None else f"{c['lost_share']:.1%}"
            mark = f'<b class="warn">{escape(lost)}</b>' if c["flagged"] else escape(lost)
            removed = "; ".join(f"{escape(d)}: {k:,}" for d, k in c["removed_by_dataset"].items()) or "–"
            rows.append(f'<tr><td>{escape(label)}</td><td class="n">{c["first"]:,}</td><td class="n">{c["final"]:,}</td>'
                        f"<td>{mark}</td><td>{removed}</td></tr>")
        html += ("<table><thead><tr><th>class</th><th>first</th><th>final</th><th>lost</th>"
                 "<th>removed rows by dataset</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    if n["examples_by_reason"]:
        html += "<h3>Examples per drop reason</h3>"
        for dataset, reasons in n["examples_by_reason"].items():
            html += (f"<details><summary>{escape(dataset)}</summary>" + table(
                ["reason", "id", "text (cut)"],
                [[r, e["id"], e["text"]] for r, items in reasons.items() for e in items]) + "</details>")
    dup = n["duplicates"]
    html += "<h3>Duplicates</h3>"
    if dup.get("status") != "ok":
        html += na(dup["status"]) + image("plot-similarity", None, "Duplicate similarity", "no dedup audit")
    else:
        html += table(["rows into dedup", "exact", "exact rate", "near", "near rate", "by kind"],
                      [[dup["rows_in"], dup["exact"], dup["exact_rate"], dup["near"], dup["near_rate"], dup["by_kind"]]])
        html += image("plot-similarity", plots.similarity_histogram(dup["similarity_histogram"], dup["similarity_edges"]),
                      "Duplicate similarity histogram", "no similarities in the audit")
    html += "<h3>Missing values (final documents)</h3>" + table(
        ["column", "null", "null rate", "empty/blank"],
        [[c, x["null"], x["null_rate"], x["empty"]] for c, x in n["missing_values_final"].items()])
    html += "<h3>Label-noise candidates</h3>"
    ln = n["label_noise"]
    if not ln or "candidates" not in ln:
        html += na((ln or {}).get("status", "not applicable"))
    else:
        html += (f"<p>{ln['candidates']:,} of {ln['rows_checked']:,} train rows ({ln['rate']:.2%}) look mislabelled "
                 f"({escape(ln['method'])}).</p>")
        html += table(["given → suggested", "rows"], [[k, v] for k, v in ln["by_transition"].items()])
        if ln["examples"]:
            html += "<details><summary>Examples (most confident first)</summary>" + table(
                ["id", "given", "suggested", "p(given)", "p(suggested)", "text"],
                [[e["id"], e["given"], e["suggested"], e["p_given"], e["p_suggested"], e["text"]] for e in ln["examples"]],
            ) + "</details>"
    return html


def diversity(d: dict[str, Any]) -> str:
    if "vocabulary_size" in d:
        html = table(["sample rows", "tokens", "vocabulary", "type/token", "distinct-1", "distinct-2", "distinct-3"],
                     [[d["sample_rows"], d["tokens"], d["vocabulary_size"], d["type_token_ratio"],
                       d["distinct_1"], d["distinct_2"], d["distinct_3"]]])
    else:
        html = na(d.get("status", "no text"))
    c = d["clusters"]
    html += "<h3>Clusters</h3>"
    if "count" in c:
        html += table(["clusters", "entropy (bits)", "normalised entropy", "largest share"],
                      [[c["count"], c["entropy_bits"], c["normalized_entropy"], c["largest_share"]]])
        html += image("plot-clusters", plots.cluster_sizes(c["sizes"]), "Cluster sizes", "no clusters")
    else:
        html += na(c["status"]) + image("plot-clusters", None, "Cluster sizes", "no cluster column")
    g = d["duplicate_groups"]
    html += "<h3>Duplicate groups</h3>"
    if "groups" in g:
        html += table(["groups", "rows in groups", "largest group"], [[g["groups"], g["rows_in_groups"], g["largest"]]])
        html += table(["group size", "groups"], [[int(k), v] for k, v in g["size_histogram"].items()])
    else:
        html += na(g["status"])
    if d.get("duplicate_group_examples"):
        html += "<details><summary>Example duplicate groups</summary>"
        for group in d["duplicate_group_examples"]:
            html += (f"<h3>kept {escape(str(group['kept_id']))} ({group['removed']:,} removed)</h3>"
                     f"<pre>{escape(group['kept_text'] or '')}</pre>"
                     + examples_table(group["members"], ["id", "kind", "similarity", "text"]))
        html += "</details>"
    ng = d["near_groups"]
    html += "<h3>Near groups of kept rows (dedup's near_group)</h3>"
    if "groups" in ng:
        html += table(["rows with a group", "groups", "groups of 2+ rows", "rows in them", "largest"],
                      [[ng["rows_with_group"], ng["groups"], ng["multi_row_groups"],
                        ng["rows_in_multi_row_groups"], ng["largest"]]])
    else:
        html += na(ng["status"])
    return html


def decontamination(d: dict[str, Any]) -> str:
    if d["status"] != "ok":
        return na(d["status"])
    html = (f"<p>{fmt(d['train_rows_checked'])} train rows checked for shared {fmt(d['ngram'])}-grams; "
            f"{fmt(d['contaminated_rows'])} contaminated "
            f"({'dropped to rejected/' if d['mode'] == 'drop' else 'flagged and kept'}).</p>")
    return html + table(
        ["eval set", "eval rows", "texts", "distinct n-grams", "train rows matching"],
        [[name, b.get("rows"), b.get("texts"), b.get("ngrams"), b.get("contaminated_train_rows")]
         for name, b in d["benchmarks"].items()])


def completeness(c: dict[str, Any]) -> str:
    html = table(
        ["dataset", "rows", "shard schemas agree", "manifest rows match", "missing doc columns",
         "type mismatches", "out-of-range", "rows accounted (in = out + dropped)", "unreadable shards"],
        [[k, e["rows"], e["shard_schemas_consistent"], e["manifest_rows_match"],
          ", ".join(e.get("missing_doc_columns", [])) or "–", e.get("doc_type_mismatches") or "–",
          {a: b for a, b in e["out_of_range"].items() if b} or "none",
          e["accounting"]["balanced"] if "accounting" in e else "–", e["unreadable_shards"]]
         for k, e in c["datasets"].items()])
    for name, e in c["datasets"].items():
        if e["errors"]:
            html += f'<p class="warn">{escape(name)}: ' + "; ".join(escape(x) for x in e["errors"]) + "</p>"
    for name, e in c["datasets"].items():
        rows = [[col, dtype, e["nulls"].get(col, "–"), e["empty"].get(col, "–")] for col, dtype in e["columns"].items()]
        html += f"<details><summary>{escape(name)}: columns, nulls and empty values</summary>" + table(
            ["column", "type", "null", "empty/blank"], rows) + "</details>"
    return html


def lineage(items: list[dict[str, Any]]) -> str:
    rows = [[i["stage"], i["name"], i["kind"], i["rows_in"], i["rows_out"] if i["rows_out"] is not None else i["rows"],
             i["dropped"] or "–", i["seconds"], i["created_at"], i["shards"]] for i in items]
    html = table(["stage", "dataset", "kind", "rows in", "rows out", "dropped", "seconds", "created", "shards"], rows)
    for i in items:
        if i["options"] is not None:
            html += (f"<details><summary>{escape(i['name'])}: options and inputs</summary><pre>"
                     f"{escape(json.dumps({'options': i['options'], 'inputs': i['inputs'], 'details': i['details']}, indent=2, sort_keys=True, default=str))}"
                     "</pre></details>")
    return html


def baseline(b: dict[str, Any]) -> str:
    if b["status"] != "ok":
        return na(b["status"]) + image("plot-confusion", None, "Confusion matrix", "no baseline")
    html = f"<p>{escape(b['model'])}; train sample {b['train_rows']:,} rows, validation {b['val_rows']:,} rows.</p>"
    if b.get("note"):
        html += f"<p class=na>{escape(b['note'])}</p>"
    if b.get("cv"):
        cv = b["cv"]
        html += "<h3>Cross-validation on train</h3>" + table(
            ["folds", "accuracy (mean)", "accuracy (std)", "macro F1 (out-of-fold)"],
            [[cv["folds"], cv["accuracy_mean"], cv["accuracy_std"], cv["macro_f1"]]])
    v = b.get("validation")
    if v:
        html += "<h3>Validation</h3>" + table(
            ["accuracy", "macro precision", "macro recall", "macro F1"],
            [[v["accuracy"], v["macro_precision"], v["macro_recall"], v["macro_f1"]]])
        html += table(["class", "precision", "recall", "F1", "support"],
                      [[k, x["precision"], x["recall"], x["f1"], x["support"]] for k, x in v["per_class"].items()])
        cm = v["confusion_matrix"]
        html += image("plot-confusion", plots.confusion_matrix(cm["labels"], cm["matrix"]), "Confusion matrix", "")
    else:
        html += image("plot-confusion", None, "Confusion matrix", "no validation split")
    return html
