"""Fixtures of the report tests: the SMS job folder (see jobdata.py)."""

from __future__ import annotations

import pytest

from .jobdata import Job, build_job


@pytest.fixture(scope="session")
def sms_job(shared_data, tmp_path_factory) -> Job:
    return build_job(shared_data, tmp_path_factory.mktemp("report-job") / "job")
