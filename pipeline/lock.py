"""One run per output folder: an exclusive lock on OUT/.lock, and the job's permission policy.

A run takes ``fcntl.flock`` on ``OUT/.lock`` for as long as it works there and writes its pid,
start time and command into the file. A second run on the same folder is refused at once with
those details instead of failing later on files the first one is writing. The kernel drops the
lock when the holding process exits, even on ``kill -9``, so a lock is never stale; the file
itself stays (its content then describes the last holder). After taking the lock a run sweeps the
temporary files a killed run left behind, which is only safe because nobody else writes there.

Permissions: every file and folder a run creates follows the process umask (0644/0755 under the
usual 022), so a trainer running as another user can read the outputs. ``private_outputs`` sets
the umask to 077 for the run (files 0600, folders 0700, everything the job writes: raw text,
rejected rows, splits, reports); local Dask workers inherit it. See docs/trust.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.dataset import sweep_temp_files
from pipeline.errors import PipelineError

LOCK_NAME = ".lock"
PRIVATE_UMASK = 0o077


class OutputLocked(PipelineError, RuntimeError):
    """Another live process holds the output folder's lock; the message names it."""

    exit_code = 2  # the job's output is in use: run it elsewhere (--out) or wait
    kind = "output in use"


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        info = {}
    if not info:
        return "another process (it has not written its details yet)"
    return f"pid {info.get('pid')}, started {info.get('started')}, command: {info.get('command')}"


@contextlib.contextmanager
def output_lock(folder: str | Path, sweep: bool = True) -> Iterator[Path]:
    """Hold ``folder/.lock`` exclusively for the block (creating the folder); refuse if taken.

    Re-entrant inside one process (a job's stages lock their own folders under the job's). With
    ``sweep``, temporary files left under the folder by an earlier, killed run are deleted.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    handle = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(
                f"output folder {folder} is in use by another pipeline run ({_holder(handle)}); "
                "wait for it to finish or stop it, or choose another output folder "
                "(the lock is released when that process exits)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command_name(),
        }))
        handle.flush()
        _HELD.add(key)
        if sweep:
            sweep_temp_files(folder)
        try:
            yield path
        finally:
            _HELD.discard(key)
    finally:
        handle.close()  # closing the descriptor releases the flock


_HELD: set[str] = set()  # lock files this process holds (resolved paths)


def command_name() -> str:
    """`pipeline run jobs/x.toml` or `pipeline clean`: the words before the first option only,
    since an option's value may be a secret (`--header "Authorization: ..."`)."""
    words = ["pipeline"]
    for word in sys.argv[1:3]:
        if word.startswith("-"):
            break
        words.append(word)
    return " ".join(words)[:200]


@contextlib.contextmanager
def private_outputs(private: bool) -> Iterator[None]:
    """With ``private``, everything created in the block is 0600 (files) / 0700 (folders)."""
    if not private:
        yield
        return
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
