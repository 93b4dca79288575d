"""``result.json``, the record of one run: written here, read here, nowhere else.

A record says what the run was made from (``inputs``: the config, the cache's identity and the
checksums of every array it read, the code version), so a finished run is reused only while
all of that is unchanged (``same_inputs``), and a checkpoint resumes only under the same rule.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfrh.diffs import first_difference
from cfrh.errors import CacheError
from cfrh.fsio import atomic_write_json

SCHEMA_VERSION = 2  # 2: schema_version and inputs (cfrh 0.3)
RESULT = "result.json"


def inputs(config: dict, data_inputs: dict) -> dict:
    """Everything a run's outcome depends on; ``device`` aside (where it ran is not what was asked)."""
    from cfrh import __version__
    return {"config": {k: v for k, v in config.items() if k != "device"}, "data": data_inputs, "cfrh": __version__}


def write_result(folder: str | Path, result: dict) -> Path:
    return atomic_write_json(Path(folder) / RESULT, {"schema_version": SCHEMA_VERSION, **result})


def read_result(folder_or_file: str | Path) -> dict:
    """A run's record; a missing, truncated or foreign file is a CacheError naming it."""
    path = Path(folder_or_file)
    path = path / RESULT if path.is_dir() else path
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path}: no such run record (train the run first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: not a complete run record ({exc}; an interrupted write?); delete the run "
                         "folder to train it again") from None
    if not isinstance(result, dict) or result.get("schema_version") != SCHEMA_VERSION:
        found = result.get("schema_version", "none") if isinstance(result, dict) else type(result).__name__
        raise CacheError(f"{path}: run record schema {found}, this cfrh reads {SCHEMA_VERSION}; train the run again")
    return result


def same_inputs(folder: str | Path, wanted: dict) -> tuple[bool, str]:
    """Whether the run in ``folder`` was made from exactly ``wanted``; if not, why (for the log)."""
    try:
        result = read_result(folder)
    except CacheError as exc:
        return False, str(exc)
    if result.get("inputs") == wanted:
        return True, ""
    return False, f"{folder}: " + first_difference(result.get("inputs") or {}, wanted)
