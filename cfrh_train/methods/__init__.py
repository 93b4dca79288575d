"""Methods by name, in the one list the config, the CLIs and the table read: each maps cached
features to hash codes and follows ``cfrh_train.methods.base.Method``.

Built-in classes are named as ``module:Class`` and imported on first use, so reading the list
(the config, ``--help``) does not import torch. Their defaults live in
``configs/methods/<name>.json``.

A user's method joins the list from one file (``register("path/mine.py:MyMethod")``, what
``cfrh-train --method path/mine.py:MyMethod`` does) or from an installed package's entry point
in the group ``cfrh.methods``. Its class carries what a built-in keeps in the configs: ``name``,
``keys`` (declarations in the form of ``keys.json``), ``defaults`` and, for ``cfrh-tune``,
``search_space``. It is checked when it registers; a problem is one line naming its file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

from cfrh.errors import ConfigError

METHODS = {  # CFRH first, then the deep peers, the shallow ones, then the floors: the table's row order
    "cfrh": "cfrh_train.methods.cfrh:CFRH",
    "jdsh": "cfrh_train.methods.jdsh:JDSH",
    "djsrh": "cfrh_train.methods.djsrh:DJSRH",
    "dgcpn": "cfrh_train.methods.dgcpn:DGCPN",
    "ucch": "cfrh_train.methods.ucch:UCCH",
    "ccah": "cfrh_train.methods.ccah:CCAH",
    "ucmfh": "cfrh_train.methods.ucmfh:UCMFH",
    "cvh": "cfrh_train.methods.cvh:CVH",
    "imh": "cfrh_train.methods.imh:IMH",
    "cmfh": "cfrh_train.methods.cmfh:CMFH",
    "lssh": "cfrh_train.methods.lssh:LSSH",
    "lsh": "cfrh_train.methods.baselines:LSH",
    "random": "cfrh_train.methods.baselines:RandomCodes",
}
TABLE_METHODS = [m for m in METHODS if m != "random"]  # a table's methods unless named: all but the chance floor


ENTRY_POINTS = "cfrh.methods"  # an installed package's methods: [project.entry-points."cfrh.methods"] name = "pkg.mod:Class"
KEY_TYPES = ("int", "float", "str", "bool", "list[int]")


@dataclass
class Plugin:
    """A user's method: its class, where it came from (a file, by sha256, or an entry point),
    and what a built-in keeps in the configs."""

    name: str
    cls: type
    source: str
    sha256: str | None = None
    keys: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    space: dict | None = None

    @property
    def record(self) -> dict:
        """What a run's provenance and an index record of it: ``spec`` registers it again (a file's
        ``FILE.py:Class``; None for an installed one, found by its name)."""
        spec = f"{self.source}:{self.cls.__name__}" if self.sha256 else None
        return {"name": self.name, "source": self.source, "sha256": self.sha256, "spec": spec}


PLUGINS: dict[str, Plugin] = {}


def method_names() -> list[str]:
    """Built-ins, then installed methods (by entry point), then methods registered from files."""
    installed = [n for n in _entry_point_names() if n not in METHODS]  # read once: the metadata scan is not free
    return [*METHODS, *installed, *(n for n in PLUGINS if n not in METHODS and n not in installed)]


def method_class(name: str):
    if name in METHODS:
        module, cls = METHODS[name].split(":")
        return getattr(import_module(module), cls)
    return plugin(name).cls


def plugin(name: str) -> Plugin:
    """A user's method by name: registered from a file, or loaded from its entry point now."""
    if name not in PLUGINS:
        found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
        if not found:
            raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(method_names())}, or give "
                              "your own as FILE.py:Class")
        PLUGINS[name] = checked(found[0].load(), f"entry point {found[0].value}", found[0].value, None, name)
    return PLUGINS[name]


def is_plugin(name: str) -> bool:
    return name not in METHODS


def _entry_point_names() -> list[str]:
    return [ep.name for ep in entry_points(group=ENTRY_POINTS)]


def register(spec: str) -> str:
    """Register ``FILE.py:Class`` (or ``FILE.py`` holding one method class) and return its name;
    a built-in's or an already registered name comes back as it is."""
    if spec in METHODS or (spec in PLUGINS and ".py" not in spec):
        return spec
    file, _, cls_name = spec.partition(":") if ".py:" in spec else (spec, "", "")
    path = Path(file)
    if path.suffix != ".py":
        return plugin(spec).name  # an installed method's name
    if not path.is_file():
        raise ConfigError(f"--method {spec}: {path} is not a file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    module_name = f"cfrh_user_method_{digest[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"{path}: could not be imported ({type(exc).__name__}: {exc})") from None
    classes = [v for v in vars(module).values() if isinstance(v, type) and _is_method(v) and v.__module__ == module_name]
    if cls_name:
        chosen = getattr(module, cls_name, None)
        if chosen is None:
            raise ConfigError(f"{path}: no class {cls_name!r} (it has: {', '.join(c.__name__ for c in classes) or 'none'})")
    elif len(classes) == 1:
        chosen = classes[0]
    else:
        raise ConfigError(f"{path}: holds {len(classes)} method classes; name one as {path.name}:Class")
    found = checked(chosen, str(path), str(path.resolve()), digest, None)
    known = PLUGINS.get(found.name)
    if known is not None and known.sha256 != digest:
        raise ConfigError(f"{path}: method name {found.name!r} is already taken by {known.source}")
    PLUGINS[found.name] = found
    return found.name


def _is_method(cls: type) -> bool:
    return any(c.__module__ == "cfrh_train.methods.base" and c.__name__ == "Method" for c in cls.__mro__[1:])


def checked(cls, where: str, source: str, sha256: str | None, name: str | None) -> Plugin:
    """The checks a method class passes before it runs; each failure is one line naming ``where``."""
    if not isinstance(cls, type) or not _is_method(cls):
        raise ConfigError(f"{where}: {getattr(cls, '__name__', cls)!r} is not a subclass of "
                          "cfrh_train.methods.base.Method")
    name = name or getattr(cls, "name", None) or cls.__name__.lower()
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: method name {name!r} must be an identifier")
    if name in METHODS:
        raise ConfigError(f"{where}: method name {name!r} clashes with the built-in {METHODS[name]}; rename it")
    base = next(c for c in cls.__mro__ if c.__module__ == "cfrh_train.methods.base" and c.__name__ == "Method")
    own = lambda member: getattr(cls, member, None) is not getattr(base, member, None)
    missing = [m for m in ("encode",) if not own(m)]
    if getattr(cls, "trainable", True) and not own("train_step"):
        missing += [m for m in ("optimizer", "loss") if not own(m)]
    if missing:
        raise ConfigError(f"{where}: {cls.__name__} lacks {', '.join(missing)} of the Method interface")
    keys, defaults = dict(getattr(cls, "keys", {}) or {}), dict(getattr(cls, "defaults", {}) or {})
    for key, spec in keys.items():
        if not isinstance(spec, dict) or spec.get("type") not in KEY_TYPES or not spec.get("help"):
            raise ConfigError(f"{where}: key {key!r} needs a declaration like keys.json's: "
                              f"{{\"type\": one of {', '.join(KEY_TYPES)}, \"help\": …}}")
    return Plugin(name, cls, source, sha256, keys, defaults, getattr(cls, "search_space", None))


def build(name: str, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
    """``text_kind``: "bow" (non-negative counts: gathering input layer) or "dense" (features)."""
    return method_class(name)(config, dim_img, dim_txt, text_kind)
