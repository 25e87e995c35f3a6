"""The stage registry: every built-in stage type, by name, loaded lazily.

One line per stage: its name (job-file section and command), the class ("module:Class", imported
on first use so `pipeline --help` stays fast), its default output folder in a job and a one-line
summary. The CLI's sub-commands, `run_stage`, the job-file model and the Python API functions
(`pipeline.stages.clean(...)`, ...) are all generated from it. A stage class is a
`pipeline.stage.Stage`; adding a stage is that class plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.stage import Stage, StageResult


@dataclass(frozen=True)
class StageSpec:
    name: str
    target: str  # "module:Class"
    folder: str  # default output folder inside a job's output directory
    summary: str

    def load(self) -> type[Stage]:
        """The stage class (its `Options`, `run`, ...), imported on first use."""
        return load_target(self.target)


def load_target(target: str) -> Any:
    """The object `module:attribute` names (a job file's `use = "mypkg.filters:no_code"`)."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        from pipeline.errors import JobError

        raise JobError(f"{target!r}: expected \"module:name\", e.g. \"mypkg.filters:no_code_blocks\"")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec("fetch", "pipeline.fetch:Fetch", "raw", "crawl sites, page through JSON APIs, query SQL, read local files → raw shards"),
        StageSpec("extract", "pipeline.extract:Extract", "docs", "HTML pages → documents (main text, title, metadata), boilerplate dropped"),
        StageSpec("clean", "pipeline.clean:Clean", "clean", "normalise text, mask PII, handle missing values, apply quality rules (drops → rejected/)"),
        StageSpec("chunk", "pipeline.chunk:Chunk", "chunks", "cut long documents into pieces of at most N tokens at headings, paragraphs, sentences"),
        StageSpec("dedup", "pipeline.dedup:Dedup", "unique", "exact and MinHash-LSH near-duplicate removal (audit → duplicates/)"),
        StageSpec("features", "pipeline.features:Features", "features", "hashing TF-IDF, Word2Vec document vectors, scaled numeric columns"),
        StageSpec("cluster", "pipeline.cluster:Cluster", "clusters", "K-means over the shards (k-means++ on a sample, Lloyd passes), cluster summaries and an editable labels.toml"),
        StageSpec("label", "pipeline.label:Label", "labelled", "apply labels.toml, propagate seed labels, or label with a calibrated model (and queue rows for a person)"),
        StageSpec("template", "pipeline.template:Template", "records", "documents or labelled rows → instruction or chat records through templates"),
        StageSpec("split", "pipeline.split:Split", "splits", "stratified / group / time / random splits into train, val and test shard sets"),
        StageSpec("augment", "pipeline.augment:Augment", "augmented", "new train rows for rare classes by EDA word operations (synonyms from Word2Vec, swap, delete, insert)"),
        StageSpec("decontaminate", "pipeline.decontaminate:Decontaminate", "decontaminated", "drop or flag train rows sharing an n-gram with eval sets or val/test (drops → rejected/)"),
        StageSpec("tokens", "pipeline.tokens:Tokens", "tokens", "token counts per record (`n_tokens`) with a real tokenizer, or an approximation"),
        StageSpec("report", "pipeline.report:Report", "report", "dataset quality as one HTML page with plots, and metrics.json"),
        StageSpec("export", "pipeline.export:Export", "export", "train/ validation/ test/ in Parquet or JSONL, optional packing, and a dataset card"),
    ]
}

ORDER = list(STAGES)


def _api_function(spec: StageSpec):
    def run_one(input: str | Path | list[str | Path] | None = None, output: str | Path | None = None, *,
                workers: int | None = None, memory_limit: str | None = None, fresh: bool = False,
                **options: Any) -> StageResult:
        from pipeline.api import run_registered

        return run_registered(spec.name, input, output, workers=workers, memory_limit=memory_limit,
                              fresh=fresh, **options)

    run_one.__name__ = run_one.__qualname__ = spec.name
    run_one.__doc__ = (f"Run `{spec.name}` ({spec.summary}) from INPUT (a dataset folder, or a list) "
                       f"into OUTPUT; keyword options as in the job file's [{spec.name}] section; "
                       "`workers`: local Dask workers (default: one per core; 0 = in this process). Returns the StageResult.")
    return run_one


for _spec in STAGES.values():
    globals()[_spec.name] = _api_function(_spec)
del _spec
