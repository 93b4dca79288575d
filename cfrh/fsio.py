"""File writes that never leave a half-written file under the final name, and timestamps."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cfrh.errors import CacheError


def now() -> str:
    """UTC, to the second: what every record (cache, run, index) stamps."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` next to ``path``, then rename over it: a kill mid-write leaves the
    previous file intact. A full or read-only disk becomes a one-line error naming the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # two writers never share one
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, value) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=1))


DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EDQUOT: "the disk quota is exceeded"}


class disk_errors:
    """``with disk_errors(path):`` turns a full, read-only or forbidden disk into a CacheError that
    names the file it failed on; any other OSError stays what it is."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            where = exc.filename or self.path
            raise CacheError(f"{where}: cannot write ({DISK_ERRNOS[exc.errno]}); free space or choose another "
                             f"folder (what was complete before is unchanged)") from exc
        return False


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
