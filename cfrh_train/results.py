"""A run folder and ``result.json``, the record of one run: laid out, written and read here,
nowhere else (training writes them, the table, tuning and the codes package read them).

    runs/<dataset>/<method>/<bits>bit/seed<seed>[-<encoder>][-tuned<N>]/
      result.json       the record (written last: a folder without it is not finished)
      codes.npz         ±1 codes of the queries and the database, and their cache rows
      per_query.npz     per-query AP of the test queries (the table's paired tests)
      pr_curve.json/png precision–recall curves
      model.safetensors the hashing side of the selected model (what ``cfrh_search`` exports)
      index/            the search index, once exported (``cfrh_search.index``)

A record says what the run was made from (``inputs``: the config, the cache's identity and the
checksums of every array it read, the code version), so a finished run is reused only while
all of that is unchanged (``same_inputs``), and a checkpoint resumes only under the same rule.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfrh import __version__
from cfrh.diffs import first_difference
from cfrh.errors import CacheError
from cfrh.fsio import atomic_write_json
from cfrh_train.methods import METHODS, is_plugin, plugin

SCHEMA_VERSION = 2  # 2: schema_version and inputs (cfrh 0.3)
RESULT = "result.json"
MODEL = "model.safetensors"  # tensors only: loading a model never unpickles anything
INDEX = "index"  # the search index's folder inside a run folder
UNIFIED = "(unified database codes)"  # marks rows whose database pairs were hashed from both modalities
DIRECTIONS = ("i2t", "t2i")  # image → text and text → image: the keys of ``metrics``


def arrow(direction: str) -> str:
    """``i2t`` → ``I→T``, as tables and figures print a direction."""
    return direction.upper().replace("2", "→")


def inputs(config: dict, data_inputs: dict) -> dict:
    """Everything a run's outcome depends on; ``device`` aside (where it ran is not what was asked).
    A user's method adds its file's sha256 (``method_source``): an edited file is a new run."""
    out = {"config": {k: v for k, v in config.items() if k != "device"}, "data": data_inputs, "cfrh": __version__}
    if is_plugin(config["method"]):
        out["method_source"] = plugin(config["method"]).record
    return out


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


def run_dir(runs_dir: str | Path, dataset: str, config: dict, variant: dict | None = None) -> Path:
    """``runs/<dataset>/<method>/<bits>bit/seed<seed>/``; a run on a named encoder (a cache with
    several backbones) gets ``seed<seed>-<encoder>`` so that backbones never overwrite each other,
    a tuned run ``…-tuned<N>`` beside the default one."""
    seed = f"seed{config['seed']}" + (f"-{config['encoder']}" if config.get("encoder") else "")
    seed += f"-tuned{variant['tuned']['trials']}" if variant and "tuned" in variant else ""
    return Path(runs_dir) / dataset / config["method"] / f"{config['bits']}bit" / seed


def index_folder(path: str | Path) -> Path:
    """The index folder of a run folder (``RUN/index``), or ``path`` itself if it is one."""
    path = Path(path)
    return path / INDEX if (path / INDEX / "index.json").is_file() else path


def has_index(run_folder: str | Path) -> bool:
    """Whether a run folder holds a finished search index (its index.json is written last)."""
    return (Path(run_folder) / INDEX / "index.json").is_file()


def collect_runs(runs_dir: str | Path) -> list[dict]:
    """Every finished run (a run folder with result.json) under ``runs_dir``, with its folder.

    A run trained with the encoder named (``seed0-<encoder>``) and one with the cache's only
    encoder left implicit (``seed0``) are the same experiment: the newer one counts, once.
    """
    latest: dict[tuple, dict] = {}
    for path in sorted(Path(runs_dir).glob("*/*/*bit/seed*/result.json"), key=lambda p: p.stat().st_mtime):
        result = read_result(path)
        result["_folder"] = str(path.parent)
        p = result["protocol"]
        key = (result["dataset"], result["method"], result["bits"], result["seed"], result["encoder"]["tag"],
               p["name"], p["seed"], json.dumps(result.get("variant")))
        latest[key] = result
    return list(latest.values())


def select_runs(results: list[dict], strict: bool = True, **wanted: list) -> list[dict]:
    """The runs whose ``dataset``, ``method``, ``bits`` and ``seed`` are among those ``wanted``
    (an empty list: any); with ``strict``, a named value that no run has is an error listing what
    there is (a typo must not render everything else and exit 0)."""
    for key, values in wanted.items() if strict else ():
        have = sorted({r[key] for r in results}, key=str)
        missing = [v for v in values if v not in have]
        if missing:
            option = {"dataset": "--datasets", "method": "--methods", "bits": "--bits", "seed": "--seeds"}[key]
            raise CacheError(f"{option} {' '.join(map(str, missing))}: no finished run has it (the runs have: "
                             f"{' '.join(map(str, have)) or 'none'})")
    return [r for r in results if all(not values or r[key] in values for key, values in wanted.items())]


def group_runs(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Runs by (dataset, split): one table block, one figure set each; methods in registry order."""
    rank = {name: i for i, name in enumerate(METHODS)}  # CFRH first, then the peers, then the floors
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(results, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["bits"], r["seed"])):
        p = r["protocol"]
        groups.setdefault((r["dataset"], f"{p['name']} (seed {p['seed']})"), []).append(r)
    return groups


def row_name(run: dict, runs: list[dict]) -> str:
    """A row's name: the method, with its backbone where the runs use several, and "default" or
    "tuned (N trials)" where tuned runs stand beside default ones."""
    several = len({r["encoder"]["tag"] for r in runs}) > 1
    name = f"{run['method']} [{run['encoder']['tag']}]" if several else run["method"]
    if run.get("config", {}).get("database_codes") == "unified":
        name += f" {UNIFIED}"
    made_by = run.get("versions", {}).get("cfrh", __version__)
    if made_by != __version__:  # an older cfrh's figures are never pooled with this one's unmarked
        name += f" (cfrh {made_by})"
    if any("tuned" in (r.get("variant") or {}) for r in runs):
        tuned = (run.get("variant") or {}).get("tuned")
        name += f" · tuned ({tuned['trials']} trials)" if tuned else " · default"
    return name
