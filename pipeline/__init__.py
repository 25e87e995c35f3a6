"""pipeline: raw, messy sources → clean, deduplicated, labelled and split fine-tuning datasets.

Datasets live on disk as Parquet shards; stages are per-shard frame transforms; Dask maps them
over shards. See README.md for the commands, docs/design.md for the architecture and
docs/python-api.md for this API: `pipeline.run(job)`, `pipeline.stages.clean(input, output,
**options)`, `@pipeline.filter(reason=...)`, `pipeline.Stage`, and the pure per-shard functions
(`pipeline.clean_frame`, `pipeline.clean_shard`, ...), which a test calls without Dask.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# imported on first use: `import pipeline` (and `pipeline --help`) stays fast
_EXPORTS = {
    "run": "pipeline.api:run",
    "run_stage": "pipeline.api:run_stage_object",
    "filter": "pipeline.custom:filter",
    "FilterStage": "pipeline.custom:FilterStage",
    "Stage": "pipeline.stage:Stage",
    "Options": "pipeline.stage:Options",
    "ShardOutput": "pipeline.stage:ShardOutput",
    "StageResult": "pipeline.stage:StageResult",
    "REASON": "pipeline.stage:REASON",
    "PipelineError": "pipeline.errors:PipelineError",
    # the pure per-shard functions (LazyFrame → frame or ShardOutput; no Dask, no files)
    "clean_frame": "pipeline.clean:clean_frame",
    "clean_shard": "pipeline.clean:clean_shard",
    "extract_shard": "pipeline.extract:extract_shard",
    "extract_html": "pipeline.extract:extract_html",
    "features_shard": "pipeline.features:transform_shard",
    "assign_clusters_shard": "pipeline.cluster:assign_shard",
    "label_map_shard": "pipeline.label:map_shard",
    "chunk_shard": "pipeline.chunk:chunk_shard",
    "template_shard": "pipeline.template:template_shard",
    "tokens_shard": "pipeline.tokens:tokens_shard",
}

__all__ = ["__version__", "stages", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "stages":
        return importlib.import_module("pipeline.stages")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
