"""Report: what a dataset looks like before you trust it, as one HTML page and metrics.json.

Reads any dataset folders (in a job: every folder the job wrote: raw, docs, clean,
rejected/*, unique, duplicates, features, clusters, labelled, splits), recognises each by its
manifest, and writes REPORT/index.html (self-contained: plots embedded, opens from disk) and
REPORT/metrics.json with volume (rows, words, bytes per source and split), balance (classes per
split, imbalance ratio, entropy), noise (drops per stage and rule, duplicate rates, missing
values, label-noise candidates), diversity (vocabulary, distinct n-grams, cluster sizes,
duplicate groups), completeness (schema, empty and out-of-range values), per-class drop rates
(first labelled dataset → final, rejected rows by label), examples per drop reason and
duplicate group, token-length histograms (`n_tokens`), decontamination counts, lineage (every
stage's options, counts and time) and a baseline: hashed TF-IDF + logistic regression,
cross-validated on train and scored on val. Counts cover every row; quantiles, vocabulary and
the baseline use a seeded sample of at most --sample-rows rows per split.

Example: pipeline report --input out/demo/clean --input out/demo/splits --output out/demo/report
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import Field, field_validator

from pipeline.dataset import write_bytes_atomic, write_json_atomic
from pipeline.engine import Engine
from pipeline.records import KINDS
from pipeline.stage import Options as StageOptions
from pipeline.stage import Stage, StageResult

HTML_NAME = "index.html"
METRICS_NAME = "metrics.json"


class Options(StageOptions):
    sample_rows: int = Field(20000, ge=10)
    """Rows per split sampled (seeded, uniform) for quantiles, vocabulary and the baseline."""
    seed: int = 42
    """Seed of the sample, the cross-validation folds and the classifier."""
    text_column: str = "text"
    """Column holding the document text."""
    label_column: str = "label"
    """Column holding the class label (rows with an empty label count as unlabelled)."""
    cv_folds: int = Field(5, ge=2, le=20)
    """Cross-validation folds on train (fewer when a class has fewer rows)."""
    hash_features: int = Field(2**18, ge=2**8, le=2**24)
    """Width of the hashed TF-IDF space of the baseline (a power of two)."""
    noise_examples: int = Field(20, ge=0, le=1000)
    """Label-noise candidates listed by example on the page (all are counted)."""
    examples: int = Field(3, ge=0, le=50)
    """Example rows shown per drop reason, and duplicate groups shown (texts cut to 300
    characters, with their ids); 0 shows none."""
    loss_warning: float = Field(0.5, gt=0, le=1)
    """A class is flagged when it lost at least this share of its rows between the first
    labelled dataset and the final one (or 0.2 more than the overall share lost)."""
    title: str = "Dataset report"
    """Heading of the HTML page."""
    decrypt_key_file: Path | None = None
    """The key file split's --encrypt-key-file used: encrypted split shards are then read with
    it (and the page shows examples of their text). Without it they are skipped, with a warning
    and a note on the page."""

    @field_validator("hash_features")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two, e.g. {1 << value.bit_length()}")
        return value


def run(inputs: list[Path], output: Path, options: Options, engine: Engine, fresh: bool = False) -> StageResult:
    """Profile every input folder, write metrics.json and index.html into OUTPUT."""
    return Report(options).run(inputs, output, engine, fresh=fresh)


class Report(Stage):
    """See the module docstring. Always starts over: it reads what every other step wrote."""

    name = "report"
    Options = Options
    kinds = KINDS

    def run(self, inputs: list[str | Path], output: str | Path, engine: Engine, fresh: bool = False) -> StageResult:
        """Profile every input folder, write metrics.json and index.html into OUTPUT."""
        from pipeline.report.metrics import compute
        from pipeline.report.page import render

        started = time.perf_counter()
        output = Path(output)
        metrics, sample = compute([Path(p) for p in inputs], self.options, engine)
        html = render(metrics, self.options.title)
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output / METRICS_NAME, metrics)
        write_bytes_atomic(output / HTML_NAME, html.encode("utf-8"))
        rows = metrics["volume"]["rows"]
        baseline = metrics["baseline"]
        details = {"html": str(output / HTML_NAME), "metrics": str(output / METRICS_NAME),
                   "datasets": len(metrics["inputs"]), "sample_rows": sample.height,
                   "baseline": baseline["status"]}
        if baseline.get("validation"):
            details["val_macro_f1"] = round(baseline["validation"]["macro_f1"], 4)
        return StageResult(stage=self.name, rows_in=rows, rows_out=rows, seconds=round(time.perf_counter() - started, 3),
                           outputs={"main": str(output)}, details=json.loads(json.dumps(details)))
