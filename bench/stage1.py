"""Stage 1 against the bare encoder forward on the same batches, on any device (both sets run it):
the whole pipeline (read → resize → encode, under AMP on a GPU → Zarr) from JPEG files (DataLoader
workers decoding) and from an ``IAll`` array, with the shares of reading, encoding and writing."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from baselines import tiled_synth

from cfrh.encoders import Encoder, load_encoder
from cfrh_cache.loader import batch_loader
from cfrh_cache.pipeline import FeatureOptions, build_features
from cfrh_cache.readers import Source, read_dataset

FORMS = (("manifest", "JPEG files"), ("synth", "IAll array (HDF5, uncompressed)"))


def stage1(models, n: int, base: int, size: int, batch: int, workers: int, device: str):
    """Per model and image form: pipeline images/s against the bare forward on the same batches."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        data = tiled_synth(Path(tmp), n, base, size)
        made_s = time.perf_counter() - t
        for model in models:
            encoder = load_encoder(model, "none", device, 0)  # the bare forward's; the pipeline loads its own
            for reader, form in FORMS:
                bare = bare_forward(encoder, read_dataset(reader, data), batch, workers)
                options = FeatureOptions(model=model, pretrained="none", batch_size=batch, workers=workers,
                                         device=device, progress=False)
                t = time.perf_counter()
                stats = build_features(reader, data, Path(tmp) / f"cache-{model}-{reader}", options).stats.as_dict()
                whole_s = time.perf_counter() - t
                yield {"model": model, "images_from": form, "data_made_s": round(made_s, 1),
                       "device": str(encoder.device), "amp": encoder.device.type == "cuda", "images": stats["images"],
                       "batch": batch, "workers": workers, **bare, "pipeline_img_s": stats["images_per_s"],
                       "pipeline_steady_img_s": stats["steady_images_per_s"],
                       "ratio": round(stats["images_per_s"] / bare["bare_forward_img_s"], 3),
                       "ratio_steady": round(stats["steady_images_per_s"] / bare["bare_forward_img_s"], 3),
                       "first_batch_s": stats["first_batch_s"], "share": stats["share"],
                       "whole_stage1_s": round(whole_s, 2),
                       "target": ">= 0.9 of the bare forward on a GPU; on a CPU the encoder is the bottleneck"}
            del encoder


def bare_forward(encoder: Encoder, source: Source, batch: int, workers: int) -> dict:
    """The encoder alone over the batches the pipeline will encode, decoded and resized beforehand."""
    ranges = [(s, min(s + batch, source.n)) for s in range(0, source.n, batch)]
    batches = list(batch_loader(source.images, ranges, encoder, workers))
    encoder(batches[0])  # kernels chosen and compiled out of the timing
    if encoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(encoder.device)
    t = time.perf_counter()
    for pixels in batches:
        encoder(pixels)  # returns host features: the device is synchronised
    return {"bare_forward_img_s": round(source.n / (time.perf_counter() - t), 1), "peak_gpu_gb": peak_gpu_gb(encoder.device)}


def peak_gpu_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
