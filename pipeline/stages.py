"""The stage registry: name, options model, run function and default folder of each stage.

Stage modules are imported lazily so `pipeline --help` stays fast. Every stage module exposes
`Options` (a pydantic model, see `pipeline.stage.Options`) and
`run(inputs, output, options, engine, fresh=False) -> StageResult`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    folder: str  # default output folder inside a job's output directory
    summary: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec("fetch", "pipeline.fetch", "raw", "crawl sites, page through JSON APIs, query SQL, read local files → raw shards"),
        StageSpec("extract", "pipeline.extract", "docs", "HTML pages → documents (main text, title, metadata), boilerplate dropped"),
        StageSpec("clean", "pipeline.clean", "clean", "normalise text, mask PII, handle missing values, apply quality rules (drops → rejected/)"),
        StageSpec("chunk", "pipeline.chunk", "chunks", "cut long documents into pieces of at most N tokens at headings, paragraphs, sentences"),
        StageSpec("dedup", "pipeline.dedup", "unique", "exact and MinHash-LSH near-duplicate removal (audit → duplicates/)"),
        StageSpec("features", "pipeline.features", "features", "hashing TF-IDF, Word2Vec document vectors, scaled numeric columns"),
        StageSpec("cluster", "pipeline.cluster", "clusters", "MiniBatch K-means, cluster summaries and an editable labels.toml"),
        StageSpec("label", "pipeline.label", "labelled", "apply labels.toml, or propagate labels from a few seed rows"),
        StageSpec("template", "pipeline.template", "records", "documents or labelled rows → instruction or chat records through templates"),
        StageSpec("split", "pipeline.split", "splits", "stratified / group / time / random splits into train, val and test shard sets"),
        StageSpec("decontaminate", "pipeline.decontaminate", "decontaminated", "drop or flag train rows sharing an n-gram with eval sets or val/test (drops → rejected/)"),
        StageSpec("tokens", "pipeline.tokens", "tokens", "token counts per record (`n_tokens`) with a real tokenizer, or an approximation"),
        StageSpec("report", "pipeline.report", "report", "dataset quality as one HTML page with plots, and metrics.json"),
        StageSpec("export", "pipeline.export", "export", "train/ validation/ test/ in Parquet or JSONL, optional packing, and a dataset card"),
    ]
}

ORDER = list(STAGES)
