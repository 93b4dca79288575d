"""Methods by name (open_clip-style registry): each maps cached features to hash codes.

Their defaults live in ``configs/methods/<name>.json``; every method shares the data path, the
training loop, the validation-based selection and the evaluation (``cfrh_train.train``).
"""

from __future__ import annotations

from cfrh_train.methods.baselines import LSH, RandomCodes
from cfrh_train.methods.cfrh import CFRH
from cfrh_train.methods.dgcpn import DGCPN
from cfrh_train.methods.djsrh import DJSRH
from cfrh_train.methods.jdsh import JDSH
from cfrh_train.methods.ucch import UCCH

METHODS = {"cfrh": CFRH, "jdsh": JDSH, "djsrh": DJSRH, "dgcpn": DGCPN, "ucch": UCCH, "lsh": LSH, "random": RandomCodes}


def build(name: str, config: dict, dim_img: int, dim_txt: int):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](config, dim_img, dim_txt)
