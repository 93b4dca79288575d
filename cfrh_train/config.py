"""Configuration as plain values (nanoGPT style), layered:

``default.json`` (keys every method has) ← ``methods/<method>.json`` (the method's own keys and
its paper's defaults) ← ``<dataset>.json`` (top-level keys for every method, a ``"<method>"``
section for one) ← ``--config FILE`` (same layout) ← ``--set key=value``.

A key that is not in the first two layers, or a value of another type, is an error that names
where it came from: a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfrh.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
NULLABLE = {"encoder": str}


def method_names() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "methods").glob("*.json"))


def _read(path: str | Path) -> dict:
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object of key: value, got {type(values).__name__}")
    return values


def defaults(method: str = "cfrh") -> dict:
    """default.json plus the method's own defaults: the complete set of keys for that method."""
    path = CONFIGS / "methods" / f"{method}.json"
    if not path.is_file():
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(method_names())}")
    base = _read(CONFIGS / "default.json")
    base.update(_read(path))
    base["method"] = method
    return base


def _check(key: str, value, expected: type, where: str):
    if value is None and key in NULLABLE:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is list and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of int (layer widths), got {value!r}")
    return value


def merge(base: dict, update: dict, where: str) -> dict:
    """``base`` with ``update`` applied; every key must exist in base and keep its type."""
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"{where}: unknown key {key!r} for method {base.get('method')!r}; "
                              f"known keys: {', '.join(sorted(base))}")
        out[key] = _check(key, value, NULLABLE.get(key) or type(base[key]), where)
    return out


def _layer(config: dict, values: dict, where: str) -> dict:
    """A dataset or --config file: top-level keys for every method, ``{"<method>": {...}}`` for one."""
    methods = set(method_names())
    common = {k: v for k, v in values.items() if k not in methods}
    config = merge(config, {k: v for k, v in common.items() if k != "method"}, where)
    section = values.get(config["method"], {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: section {config['method']!r} must be an object of key: value")
    return merge(config, section, f"{where} [{config['method']}]")


def parse_set(items: list[str]) -> dict:
    """``key=value`` strings, values read as JSON where they parse (numbers, true, null, [..]) else text."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def load(dataset: str, config_file: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The full config of one run: every key of its method, each value from the latest layer."""
    overrides = dict(overrides or {})
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{config_file}: config file not found")
    user = _read(config_file) if config_file else {}
    dataset_file = CONFIGS / f"{dataset}.json"
    from_dataset = _read(dataset_file) if dataset_file.is_file() else {}
    method = overrides.pop("method", None) or user.get("method") or from_dataset.get("method") or "cfrh"
    if not isinstance(method, str):
        raise ConfigError(f"'method' must be a name, got {method!r}")
    config = defaults(method)
    if from_dataset:
        config = _layer(config, from_dataset, str(dataset_file))
    if user:
        config = _layer(config, user, str(config_file))
    return merge(config, overrides, "command line")
