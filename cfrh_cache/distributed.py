"""Spreading stage 1 over processes with torch.distributed (torchrun), not a home-made scheduler.

Under ``torchrun --nproc-per-node N -m cfrh_cache features …`` every rank reads the same source,
rank 0 writes the small arrays, all ranks encode disjoint chunk sets (chunk i → rank i mod N)
into the same Zarr store, and rank 0 marks the features complete after a barrier. The store must
be on a file system all ranks see (a shared mount, or an object store through zarr's fsspec).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist


@contextmanager
def distributed_context(device: str = "auto"):
    """Yield (rank, world size, barrier or None, device string); a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, None, device
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield rank, world, dist.barrier, device
    finally:
        dist.destroy_process_group()
