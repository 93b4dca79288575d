"""The reader side of stage 1's image loop: DataLoader workers read a row range, decode and
resize it to uint8 at the encoder's size, so the main process only converts and encodes."""

from __future__ import annotations

import torch

from cfrh.encoders import Encoder, geometric, pil_geometric
from cfrh_cache.readers.base import ImageSource


class BatchReader(torch.utils.data.Dataset):
    """Item i = the uint8 pixels of row range ``ranges[i]``, resized and cropped (runs in workers)."""

    def __init__(self, images: ImageSource, ranges: list[tuple[int, int]], encoder: Encoder):
        self.images, self.ranges = images, ranges
        self.size, self.interpolation, self.resize_mode = encoder.size, encoder.interpolation, encoder.resize_mode
        self.resize_to = encoder.resize_to

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> torch.Tensor:
        start, stop = self.ranges[i]
        rows = self.images.read(start, stop)
        if self.images.kind == "array":
            return geometric(torch.from_numpy(rows), self.size, self.interpolation, self.resize_mode, self.resize_to)
        return torch.stack([pil_geometric(im, self.size, self.interpolation, self.resize_mode, self.resize_to)
                            for im in rows])


def batch_loader(images: ImageSource, ranges: list[tuple[int, int]], encoder: Encoder, workers: int):
    """Batches in order; workers read and resize ahead of the encoder."""
    return torch.utils.data.DataLoader(
        BatchReader(images, ranges, encoder), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=encoder.device.type == "cuda", prefetch_factor=4 if workers else None,
        persistent_workers=False)
