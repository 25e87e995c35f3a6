"""An encrypted split killed mid-way leaves no plaintext copy of the rows (real kills of a real
`pipeline split` process)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


def start_split(docs: Path, out: Path, keys: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "split", "--input", str(docs), "--output", str(out),
                             "--workers", "0", "--stratify", "label", "--balance", "undersample",
                             "--shard-rows", "500", "--encrypt-key-file", str(keys)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_once_pieces_exist(process: subprocess.Popen, out: Path, signum: int) -> bool:
    """Send signum as soon as the split has written a piece; False if it finished first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any((out / "_work" / "pieces").rglob("*.parquet")):
            process.send_signal(signum)
            process.communicate(timeout=120)
            return True
        time.sleep(0.005)
    process.communicate(timeout=120)
    return False


def plaintext_files(root: Path) -> list[Path]:
    """Parquet files under root holding rows that read without the keys."""
    found = []
    for path in root.rglob("*.parquet"):
        if pq.read_metadata(path).num_rows == 0:
            continue
        try:
            pl.read_parquet(path)
        except Exception:  # noqa: BLE001 - encrypted: unreadable without the keys, as wanted
            continue
        found.append(path)
    return found


@pytest.fixture()
def keys(tmp_path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"footer": base64.b64encode(os.urandom(32)).decode(),
                                "columns": base64.b64encode(os.urandom(32)).decode()}))
    path.chmod(0o600)
    return path


def test_kill_and_kill_9_of_an_encrypted_split_leave_no_plaintext(rotten_docs, tmp_path, keys):
    out = tmp_path / "splits"
    terminated = start_split(rotten_docs, out, keys)
    assert kill_once_pieces_exist(terminated, out, signal.SIGTERM), "the split finished before the kill"
    assert terminated.returncode == 128 + signal.SIGTERM
    assert not (out / "_work").exists()  # `kill` unwinds: the pieces are removed
    assert plaintext_files(tmp_path) == []

    killed = start_split(rotten_docs, out, keys)
    assert kill_once_pieces_exist(killed, out, signal.SIGKILL), "the split finished before the kill"
    assert killed.returncode == -signal.SIGKILL
    assert any((out / "_work" / "pieces").rglob("*.parquet"))  # kill -9 leaves them: encrypted
    assert plaintext_files(tmp_path) == []

    again = start_split(rotten_docs, out, keys)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert not (out / "_work").exists() and (out / "_SUCCESS").exists()
    assert plaintext_files(tmp_path) == []
