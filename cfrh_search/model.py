"""A run's hashing model, rebuilt from its run folder's ``model.safetensors`` and the record of
what it is: one record (``model_record``) for the index to keep, one way to load it back."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from cfrh.errors import CacheError
from cfrh_train.methods import build, register
from cfrh_train.results import MODEL


def model_record(result: dict) -> dict:
    """What rebuilds a run's model: method, config, input sizes, text kind, the model file's sha256
    and, for a user's method, its source (``FILE.py:Class`` to register again)."""
    model = result["model"]
    return {"method": result["method"], "config": result["config"], "dims": model["dims"],
            "text_kind": model["text_kind"], "sha256": model["sha256"], "source": result["inputs"].get("method_source")}


def load_model(folder: str | Path, record: dict, redo: str):
    """The method of ``record`` with the tensors of ``folder/model.safetensors``, in eval mode; a
    file that does not fit (shapes or names changed between versions) is a CacheError ending in ``redo``."""
    if record.get("source") and record["source"].get("spec"):
        register(record["source"]["spec"])  # a user's method from its file, as the run had it
    method = build(record["method"], record["config"], *record["dims"], record.get("text_kind", "bow"))
    try:
        method.load_index_state(load_file(Path(folder) / MODEL))
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise CacheError(f"{folder}/{MODEL} does not fit method {record['method']!r}: {detail}; {redo}") from None
    return method.eval()
