"""Export: per-split shards of exactly `shard_rows` rows, JSONL copies, encryption, manifest.

Pass W left, per input shard, one piece per split (rows in input order). A pack task builds one
output shard from the slices of pieces that cover its row range, so every shard but the last of
a split has exactly `shard_rows` rows and memory is bounded by one shard. Inside a shard the rows
are in a seeded shuffled order (the `_ord` hash).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset import (
    ShardInfo,
    StageOutput,
    TaskRecord,
    file_sha256,
    write_failure,
    write_shard,
)
from pipeline.errors import JobError

EXPORT_MANIFEST = "manifest.json"


# -- encryption ------------------------------------------------------------------------------
def load_keys(key_file: Path) -> dict[str, bytes]:
    """Master keys from a JSON file {"footer": base64, "columns": base64} (16, 24 or 32 bytes).

    The file must not be readable by group or others (like an ssh key), else it is refused.
    """
    key_file = Path(key_file)
    if not key_file.is_file():
        raise FileNotFoundError(f"encryption key file {key_file} does not exist")
    if key_file.stat().st_mode & 0o077:
        raise PermissionError(f"encryption key file {key_file} is readable by other users; chmod 600 it")
    try:
        data = json.loads(key_file.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise JobError(f"encryption key file {key_file} cannot be read: {error}") from None
    except ValueError:
        raise JobError(f"encryption key file {key_file} is not JSON; expected "
                         '{"footer": BASE64, "columns": BASE64}') from None
    if not isinstance(data, dict):
        raise JobError(f"encryption key file {key_file}: expected a JSON object with footer and columns")
    keys = {}
    for name in ("footer", "columns"):
        if name not in data:
            raise JobError(f"encryption key file {key_file}: missing key {name!r} (base64 of 16, 24 or 32 bytes)")
        try:
            raw = base64.b64decode(str(data[name]), validate=True)
        except ValueError:
            raise JobError(f"encryption key file {key_file}: key {name!r} is not base64") from None
        if len(raw) not in (16, 24, 32):
            raise JobError(f"encryption key file {key_file}: key {name!r} is {len(raw)} bytes; need 16, 24 or 32")
        keys[name] = raw
    return keys


def _crypto(key_file: Path):
    import pyarrow.parquet.encryption as pe

    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - a dependency of the package
        raise JobError("encryption needs the `cryptography` package: pip install 'cryptography>=42'") from None

    keys = load_keys(key_file)

    class KeyFileKms(pe.KmsClient):
        """Wraps Parquet data keys with AES-GCM under the master keys of the key file."""

        def __init__(self, _config):
            pe.KmsClient.__init__(self)

        def wrap_key(self, key_bytes, master_key_identifier):
            nonce = os.urandom(12)
            sealed = AESGCM(keys[master_key_identifier]).encrypt(nonce, key_bytes, master_key_identifier.encode())
            return base64.b64encode(nonce + sealed).decode()

        def unwrap_key(self, wrapped_key, master_key_identifier):
            raw = base64.b64decode(wrapped_key)
            return AESGCM(keys[master_key_identifier]).decrypt(raw[:12], raw[12:], master_key_identifier.encode())

    return pe, pe.CryptoFactory(KeyFileKms), pe.KmsConnectionConfig()


def write_encrypted(frame: pl.DataFrame, root: Path, relpath: str, key_file: Path) -> ShardInfo:
    """Write one shard with Parquet modular encryption (AES-GCM, every column, plaintext footer).

    The footer stays readable (schema, row counts) so the dataset layer can list the shard; the
    column data needs the keys. Data keys are random, so the bytes differ run to run.
    """
    pe, factory, kms = _crypto(key_file)
    table = frame.to_arrow()
    config = pe.EncryptionConfiguration(
        footer_key="footer", column_keys={"columns": table.column_names},
        encryption_algorithm="AES_GCM_V1", plaintext_footer=True, double_wrapping=True,
    )
    properties = factory.file_encryption_properties(kms, config)
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        pq.write_table(table, tmp, compression="zstd", encryption_properties=properties)
        info = ShardInfo(relpath, table.num_rows, tmp.stat().st_size, file_sha256(tmp))
        os.replace(tmp, target)
    except (OSError, pa.ArrowException) as error:
        raise write_failure(target, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return info


def read_encrypted(path: Path, key_file: Path) -> pa.Table:
    """Read a shard written by `write_encrypted` with the same key file."""
    pe, factory, kms = _crypto(key_file)
    properties = factory.file_decryption_properties(kms, pe.DecryptionConfiguration())
    return pq.read_table(path, decryption_properties=properties)


# -- packing ---------------------------------------------------------------------------------
@dataclass
class PackTask:
    split: str
    relpath: str  # e.g. train/part-00000.parquet
    pieces: list[tuple[str, int, int]]  # (piece file, offset, rows)
    output: StageOutput
    jsonl: bool
    key_file: Path | None


def write_jsonl(frame: pl.DataFrame, root: Path, relpath: str) -> ShardInfo:
    target = root / relpath
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        frame.write_ndjson(tmp)
        info = ShardInfo(relpath, frame.height, tmp.stat().st_size, file_sha256(tmp))
        os.replace(tmp, target)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise write_failure(target, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return info


def pack_shard(task: PackTask) -> TaskRecord:
    """Build one output shard from its piece slices; write Parquet (+ JSONL); commit."""
    if task.key_file is None:
        parts = [pl.scan_parquet(path).slice(offset, rows) for path, offset, rows in task.pieces]
    else:  # the pieces are encrypted like the shards (a kill must not leave plaintext behind)
        parts = [pl.from_arrow(read_encrypted(Path(path), task.key_file).slice(offset, rows)).lazy()
                 for path, offset, rows in task.pieces]
    frame = pl.concat(parts, how="diagonal_relaxed").collect()
    frame = frame.sort("_ord", maintain_order=True).drop("_ord")
    root = task.output.outputs["main"]
    if task.key_file is not None:
        info = write_encrypted(frame, root, task.relpath, task.key_file)
    else:
        info = write_shard(frame, root, task.relpath)
    extra: dict[str, Any] = {}
    if task.jsonl:
        jinfo = write_jsonl(frame, root, task.relpath.removesuffix(".parquet") + ".jsonl")
        extra["jsonl"] = asdict(jinfo)
    record = TaskRecord(task=task.relpath, fingerprint="", outputs={"main": [info]},
                        counts={"rows_out": info.rows}, extra=extra)
    return task.output.commit(record)


def pack_plan(piece_rows: list[tuple[str, int]], shard_rows: int) -> list[list[tuple[str, int, int]]]:
    """Cut a split's pieces (path, rows, in input order) into output shards of `shard_rows`.

    An empty split still gets one (empty) shard, built from a zero-row piece for the schema.
    """
    total = sum(rows for _, rows in piece_rows)
    if total == 0:
        return [[(piece_rows[0][0], 0, 0)]] if piece_rows else []
    shards: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    room = shard_rows
    for path, rows in piece_rows:
        offset = 0
        while offset < rows:
            take = min(room, rows - offset)
            current.append((path, offset, take))
            offset += take
            room -= take
            if room == 0:
                shards.append(current)
                current, room = [], shard_rows
    if current:
        shards.append(current)
    return shards


# -- manifest --------------------------------------------------------------------------------
def verify(splits: Path) -> list[str]:
    """Check an export against its manifest.json: every file's SHA-256, rows and split column.

    Encrypted shards are checked by SHA-256 only (their rows need the keys).

    Returns the problems found (an empty list: the export is intact).
    """
    splits = Path(splits)
    manifest = json.loads((splits / EXPORT_MANIFEST).read_text())
    problems = []
    for shard in manifest["files"]:
        path = splits / shard["path"]
        if not path.exists():
            problems.append(f"{shard['path']}: missing")
            continue
        if file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['path']}: SHA-256 differs from the manifest")
            continue
        if shard["format"] == "parquet" and not shard.get("encrypted"):
            table = pq.read_table(path, columns=["split"])
            if table.num_rows != shard["rows"]:
                problems.append(f"{shard['path']}: {table.num_rows} rows, manifest says {shard['rows']}")
            elif table.num_rows and set(table.column("split").to_pylist()) != {shard["split"]}:
                problems.append(f"{shard['path']}: rows of another split inside")
    for split, counts in manifest["counts"].items():
        rows = sum(s["rows"] for s in manifest["files"] if s["split"] == split and s["format"] == "parquet")
        if rows != counts["rows"]:
            problems.append(f"{split}: shards hold {rows} rows, counts say {counts['rows']}")
    return problems
