"""Configuration as plain values (nanoGPT style), layered:

``default.json`` (keys every method has) ← ``methods/<method>.json`` (the method's own keys and
its paper's defaults) ← ``<dataset>.json`` (top-level keys for every method, a ``"<method>"``
section for one) ← ``--config FILE`` (same layout) ← ``--set key=value``.

Every key is declared once in ``keys.json`` with its type and its range or choices; a key that
is not in the first two layers, a value of another type or outside its range is an error that
names where it came from and what was expected: a typo never silently falls back to a default,
and ``batch_size=-5`` never trains zero steps.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from cfrh.errors import ConfigError
from cfrh_train.methods import PLUGINS, is_plugin, method_names, plugin

CONFIGS = Path(__file__).parent / "configs"
TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list[int]": list}
STUDY = "_study"  # the key of a best.json that records its study (dataset, method, bits, seed, trials)
log = logging.getLogger(__name__)


def keys() -> dict[str, dict]:
    """The declarations of ``keys.json`` (type, range or choices, and a help text per key), and
    those of every registered user method; a user key may not redeclare another's differently."""
    declared = {k: v for k, v in json.loads((CONFIGS / "keys.json").read_text()).items() if not k.startswith("_")}
    for user in PLUGINS.values():
        for key, spec in user.keys.items():
            if key in declared and declared[key] != spec:
                raise ConfigError(f"{user.source}: key {key!r} is declared already ({declared[key]['help']}); "
                                  "give yours another name")
            declared[key] = spec
    return declared


def strict_json(text: str, where: str):
    """JSON as a config takes it: no NaN or Infinity (nor a number that overflows to it, 1e400),
    no key given twice (JSON would keep the last one without a word)."""
    def no_constant(name: str):
        raise ConfigError(f"{where}: {name} is not a number a config takes")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {text} overflows to infinity; give a finite number")
        return value

    def pairs(items: list) -> dict:
        seen = {}
        for key, value in items:
            if key in seen:
                raise ConfigError(f"{where}: key {key!r} is given twice")
            seen[key] = value
        return seen
    return json.loads(text, parse_constant=no_constant, parse_float=finite, object_pairs_hook=pairs)


def _read(path: str | Path) -> dict:
    try:
        values = strict_json(Path(path).read_text(), str(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object of key: value, got {type(values).__name__}")
    return values


def defaults(method: str = "cfrh") -> dict:
    """default.json plus the method's own defaults: the complete set of keys for that method."""
    if is_plugin(method):
        found = plugin(method)  # an unknown name is refused here, with the choices
        path, own = found.source, found.defaults
    else:
        path = CONFIGS / "methods" / f"{method}.json"
        own = _read(path)
    base = _read(CONFIGS / "default.json")
    base.update(own)
    base["method"] = method
    declared = keys()
    for key, value in base.items():
        if key not in declared:
            where = "its keys or " if is_plugin(method) else ""
            raise ConfigError(f"{path}: key {key!r} is not declared (in {where}{CONFIGS / 'keys.json'})")
        base[key] = _check(key, value, str(path))
    return base


def _check(key: str, value, where: str):
    """``value`` as key's declared type, inside its range or choices; else a ConfigError."""
    spec = keys()[key]
    expected = TYPES[spec["type"]]
    if value is None and spec.get("nullable"):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key!r} must be {spec['type']}, got {type(value).__name__} {value!r}")
    items = value if expected is list else [value]
    if expected is list and not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{where}: {key!r} must be a list of int (layer widths), got {value!r}")
    for v in items:
        low, high = spec.get("min"), spec.get("max")
        if low is not None and (v < low or (spec.get("min_exclusive") and v == low)) or \
                high is not None and (v > high or (spec.get("max_exclusive") and v == high)):
            lo = "" if low is None else f"{'>' if spec.get('min_exclusive') else '≥'} {low}"
            hi = "" if high is None else f"{'<' if spec.get('max_exclusive') else '≤'} {high}"
            raise ConfigError(f"{where}: {key!r} = {value!r} is out of range; expected {' and '.join(x for x in (lo, hi) if x)}")
    choices = method_names() if spec.get("choices") == "methods" else spec.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {key!r} = {value!r}; expected one of {', '.join(choices)}")
    if "pattern" in spec and not re.match(spec["pattern"], value):
        raise ConfigError(f"{where}: {key!r} = {value!r}; expected {spec['help']}")
    return value


def merge(base: dict, update: dict, where: str) -> dict:
    """``base`` with ``update`` applied; every key must exist in base and keep its type."""
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"{where}: unknown key {key!r} for method {base.get('method')!r}; "
                              f"known keys: {', '.join(sorted(base))}")
        out[key] = _check(key, value, where)
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
            value = strict_json(raw, f"--set {item}")
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
    made_for = user.pop(STUDY, None)  # a best.json records the study it came from
    dataset_file = CONFIGS / f"{dataset}.json"
    from_dataset = _read(dataset_file) if dataset_file.is_file() else {}
    method = overrides.pop("method", None) or user.get("method") or from_dataset.get("method") or "cfrh"
    if not isinstance(method, str):
        raise ConfigError(f"'method' must be a name, got {method!r}")
    if made_for and made_for.get("method") != method:
        raise ConfigError(f"{config_file}: tuned for method {made_for.get('method')!r}, not {method!r}; "
                          "use that method's best.json")
    config = defaults(method)
    if from_dataset:
        config = _layer(config, from_dataset, str(dataset_file))
    if user:
        config = _layer(config, user, str(config_file))
    config = merge(config, overrides, "command line")
    if made_for:
        _check_study(made_for, config, dataset, config_file)
    return config


def _check_study(made_for: dict, config: dict, dataset: str, config_file) -> None:
    """A tuned config (``best.json``) used on another dataset or code length than its study's is
    allowed, with a warning (a config tuned elsewhere is a choice, not a mistake); another method
    is refused before (its keys would not fit)."""
    for key, now in (("dataset", dataset), ("bits", config["bits"])):
        if made_for.get(key) is not None and made_for[key] != now:
            log.warning("%s: tuned on %s %s, used here for %s %s", config_file, key, made_for[key], key, now)
