"""The Python API: docs/python-api.md's examples run as written, and a script without the
`if __name__ == "__main__":` guard runs once on a real local cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def project(make_licences, tmp_path) -> Path:
    """A folder laid out like the repository after `make run`: examples/ and out/demo/clean."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    make_licences(tmp_path / "out" / "demo" / "clean", shards=2)
    return tmp_path


def run_script(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    script = cwd / "script.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


def test_the_python_api_page_runs_as_written(project):
    page = (REPO / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 4
    done = run_script("\n".join(blocks), project)
    assert done.returncode == 0, done.stderr
    assert "no_code_blocks" in done.stdout and "long_line" in done.stdout
    assert (project / "out" / "api-longest" / "_manifest.json").exists()
    assert (project / "out" / "rejected" / "api-longest" / "_manifest.json").exists()


def test_a_script_without_the_main_guard_runs_once_on_a_local_cluster(project):
    code = '''
import sys
from pathlib import Path

import pipeline

with Path(sys.argv[1]).open("a") as log:   # every run of this script's body leaves a line
    log.write("ran\\n")
result = pipeline.stages.clean("out/demo/clean", "out/no-guard", min_words=20, workers=2, memory_limit="1GiB")
print("rows_out", result.rows_out)
'''
    log = project / "runs.log"
    done = run_script(code, project, str(log))
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "ran\n"  # the two workers did not run the script again
    assert "Nanny failed" not in done.stderr
    rows_out = int(re.search(r"rows_out (\d+)", done.stdout).group(1))
    assert 0 < rows_out <= 728
