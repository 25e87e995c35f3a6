"""The clustered SMS Spam Collection both label test modules start from (built once per module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from features.corpora import as_docs, sms_frame, write_docs

import pipeline.cluster as cluster
import pipeline.features as features


@pytest.fixture(scope="module")
def sms_clusters(shared_data, tmp_path_factory) -> Path:
    from pipeline.engine import Engine

    engine = Engine(workers=0, progress=False)
    root = tmp_path_factory.mktemp("clusters")
    docs = write_docs(as_docs(sms_frame(shared_data), "sms"), root / "docs", 4)
    features.run([docs], root / "feat", features.Options(svd_components=50), engine)
    cluster.run([root / "feat"], root / "clusters", cluster.Options(k=5, passes=1), engine)
    return root / "clusters"
