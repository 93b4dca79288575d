"""Configuration as plain values (nanoGPT style): defaults ← dataset file ← --config ← --set."""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
NULLABLE = {"encoder": str}


class ConfigError(ValueError):
    pass


def defaults() -> dict:
    return json.loads((CONFIGS / "default.json").read_text())


def merge(base: dict, update: dict, where: str) -> dict:
    """``base`` with ``update`` applied; every key must exist in base and keep its type."""
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(base))}")
        expected = NULLABLE.get(key) or type(base[key])
        if value is None and key in NULLABLE:
            pass
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
        out[key] = value
    return out


def parse_set(items: list[str]) -> dict:
    """``key=value`` strings, values read as JSON where they parse (numbers, true, null) else text."""
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
    config = defaults()
    dataset_file = CONFIGS / f"{dataset}.json"
    for path in [p for p in (dataset_file, config_file) if p and Path(p).is_file()]:
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        config = merge(config, values, str(path))
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{config_file}: config file not found")
    return merge(config, overrides or {}, "command line")
