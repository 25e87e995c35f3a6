"""pipeline: raw, messy sources → clean, deduplicated, labelled and split fine-tuning datasets.

Datasets live on disk as Parquet shards; stages are per-shard frame transforms; Dask maps them
over shards. See README.md for the commands and docs/design.md for the architecture.
"""

__version__ = "0.1.0"
