"""Methods by name, in the one list the config, the CLIs and the table read: each maps cached
features to hash codes and follows ``cfrh_train.methods.base.Method``.

Classes are named as ``module:Class`` and imported on first use, so reading the list (the
config, ``--help``) does not import torch. Their defaults live in ``configs/methods/<name>.json``.
"""

from __future__ import annotations

from importlib import import_module

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


def method_class(name: str):
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(import_module(module), cls)


def build(name: str, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
    """``text_kind``: "bow" (non-negative counts: gathering input layer) or "dense" (features)."""
    return method_class(name)(config, dim_img, dim_txt, text_kind)
