"""Where tensors go: ``--device auto|cpu|cuda|cuda:N|mps``, checked before any work starts."""

from __future__ import annotations

import re

from cfrh.errors import ConfigError

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """The option's spelling (no torch needed): for config files and CLIs."""
    if not isinstance(device, str) or not DEVICE.match(device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_device(device: str = "auto"):
    """A torch.device; ``auto`` takes CUDA when torch sees it. Asking for what is not there is a
    user error naming the option, not a traceback deep inside the first allocation."""
    import torch
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: torch {torch.__version__} sees no CUDA device; "
                              "use --device cpu or auto, or install a CUDA build of torch")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: torch sees no Apple MPS device; use --device cpu or auto")
    return torch.device(device)
