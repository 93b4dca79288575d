"""Methods by name (open_clip-style registry): each maps cached features to hash codes."""

from __future__ import annotations

from cfrh_train.methods.baselines import LSH, RandomCodes
from cfrh_train.methods.cfrh import CFRH

METHODS = {"cfrh": CFRH, "lsh": LSH, "random": RandomCodes}


def build(name: str, config: dict, dim_img: int, dim_txt: int):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](config, dim_img, dim_txt)
