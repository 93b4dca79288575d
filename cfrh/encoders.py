"""The open_clip image encoder that stage 1 runs once per dataset and search runs per query image.

Preprocessing is split where it is cheapest: the reader's workers decode files (Pillow) or slice
arrays (``IAll``, no JPEG decode) and resize/crop to uint8 tensors (``geometric``,
``pil_geometric``); the encoder converts to float and normalises on the device, so workers
ship uint8 rather than float32 and the GPU does the arithmetic.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cfrh.backbones import build_classic, is_classic, tag_of
from cfrh.devices import resolve_device
from cfrh.errors import ConfigError, WeightsUnavailable
from cfrh.fsio import sha256_file

log = logging.getLogger(__name__)
MODEL_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIGS)  # our tiny test/demo architectures, next to open_clip's own


@dataclass
class Encoder:
    model: torch.nn.Module
    name: str
    pretrained: str  # the tag, "none", or the local file's path
    tag: str  # array name in the cache: <model>__<pretrained tag | file stem-sha8 | none>
    size: tuple[int, int]
    interpolation: str
    resize_mode: str
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    dim: int
    attrs: dict = field(default_factory=dict)
    resize_to: int | None = None  # the short side before the centre crop (None: the crop's size)
    tokenizer: object = None  # open_clip's, for the text tower (None: an image-only backbone)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        """uint8 (B, 3, H, W) at the model's size → float16 (B, D) features."""
        x = pixels.to(self.device, non_blocking=True).float().div_(255)
        x = (x - self.mean) / self.std
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            features = self.model.encode_image(x)
        return features.float().cpu().numpy().astype(np.float16)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Raw texts → float16 (B, D) features of the model's text tower (CLIP text embeddings)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            features = self.model.encode_text(tokens)
        return features.float().cpu().numpy().astype(np.float16)


def encoder_tag(model: str, pretrained: str | None, weights_sha: str | None = None) -> str:
    model = tag_of(model)
    if pretrained in (None, "none"):
        return f"{model}__none"
    path = Path(pretrained)
    if weights_sha is not None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)
        return f"{model}__{stem}-{weights_sha[:8]}"
    return f"{model}__{pretrained}"


def load_encoder(model: str = "ViT-B-32", pretrained: str | None = "openai", device: str = "auto",
                 seed: int = 0) -> Encoder:
    """Build the frozen image encoder. ``model``: an open_clip architecture, or a classic backbone
    (``torchvision:vgg19``, ``timm:<name>``; see ``cfrh.backbones``). ``pretrained``: an open_clip
    tag (``imagenet`` for torchvision), a local weights file, or none.

    ``none`` gives a randomly initialised encoder (seeded, so a resumed run is identical); every
    cache written with it says so in its array name and attributes.
    """
    if is_classic(model):
        dev = resolve_device(device)
        net, attrs, weights_sha, cfg = build_classic(model, pretrained, seed)
        if pretrained in (None, "none"):
            attrs.update(random_init_seed=seed, warning="randomly initialised encoder: for demos and tests, "
                                                        "not for results")
        return _finish(net.to(dev).eval().requires_grad_(False), model, pretrained,
                       encoder_tag(model, pretrained, weights_sha if pretrained not in (None, "none") and
                                   Path(str(pretrained)).is_file() else None), cfg, dev, attrs, cfg["resize"])
    if model not in open_clip.list_models():
        raise ConfigError(f"--model {model!r}: unknown open_clip model {model!r}; see open_clip.list_models() "
                         f"(ours: {', '.join(p.stem for p in MODEL_CONFIGS.glob('*.json'))})")
    dev = resolve_device(device)
    kwargs: dict = {}
    weights_sha = None
    attrs: dict = {"model": model, "open_clip": open_clip.__version__}
    if pretrained in (None, "none"):
        weights = None
        attrs.update(pretrained="none", random_init_seed=seed,
                     warning="randomly initialised encoder: for demos and tests, not for results")
    elif Path(pretrained).is_file():
        weights = str(pretrained)
        weights_sha = sha256_file(Path(pretrained))
        attrs.update(pretrained="file", weights_file=Path(pretrained).name, weights_sha256=weights_sha)
    else:
        weights, kwargs = _weights_for_tag(model, pretrained)
        attrs.update(pretrained=pretrained, weights_file=Path(weights).name, weights_sha256=sha256_file(Path(weights)))
    torch.manual_seed(seed)
    net, _, _ = open_clip.create_model_and_transforms(model, pretrained=weights, **kwargs)
    net = net.to(dev).eval().requires_grad_(False)
    encoder = _finish(net, model, "none" if weights is None else str(pretrained),
                      encoder_tag(model, pretrained, weights_sha), open_clip.get_model_preprocess_cfg(net), dev, attrs)
    encoder.tokenizer = open_clip.get_tokenizer(model)
    return encoder


def _finish(net: torch.nn.Module, model: str, pretrained: str | None, tag: str, cfg: dict, dev: torch.device,
            attrs: dict, resize_to: int | None = None) -> Encoder:
    """The Encoder of a built network: its preprocessing, its feature width, its attributes."""
    size = tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)
    with torch.no_grad():
        dim = int(net.encode_image(torch.zeros(1, 3, *size, device=dev)).shape[-1])
    attrs.update(preprocessing={"size": list(size), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                                "interpolation": cfg["interpolation"], "resize_mode": cfg["resize_mode"],
                                **({"resize": resize_to} if resize_to else {})},
                 dim=dim, dtype="float16")
    return Encoder(net, model, str(pretrained or "none"), tag, size, cfg["interpolation"], cfg["resize_mode"],
                   mean, std, dev, dim, attrs, resize_to)


def _weights_for_tag(model: str, tag: str) -> tuple[str, dict]:
    """A local file for an open_clip pretrained tag: the HF cache first, the hub only if reachable."""
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag not in tags:
        raise WeightsUnavailable(
            f"--pretrained {tag!r} is neither a local file nor a tag of {model} "
            f"(tags: {', '.join(tags) or 'none'}); pass a weights file path, a tag, or 'none'")
    cfg = open_clip.get_pretrained_cfg(model, tag)
    kwargs = {"force_quick_gelu": bool(cfg.get("quick_gelu", False)),
              "image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
              "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode")}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    hub = cfg.get("hf_hub", "").rstrip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(hub, filename)
            if isinstance(cached, str):
                log.info("weights %s/%s from the Hugging Face cache: %s", model, tag, cached)
                return cached, kwargs
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") or not _reachable(hub, cfg.get("url", "")):
        raise WeightsUnavailable(_offline_help(model, tag, hub))
    try:
        return open_clip.download_pretrained(cfg), kwargs
    except Exception as exc:  # network errors come in many types
        raise WeightsUnavailable(_offline_help(model, tag, hub) + f"\n(download failed: {exc})") from exc


def _reachable(hub: str, url: str) -> bool:
    host = "huggingface.co" if hub else urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _offline_help(model: str, tag: str, hub: str) -> str:
    return (
        f"cannot load pretrained weights {model}/{tag}: they are not in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and the hub is unreachable. Supply them offline:\n"
        f"  1. a local file: --pretrained /path/to/open_clip_pytorch_model.bin "
        f"(or .safetensors; for OpenAI's weights use --model {model}-quickgelu), or\n"
        f"  2. fill the cache on a connected machine (huggingface-cli download {hub or '<repo>'}) and copy "
        f"~/.cache/huggingface/hub here (HF_HOME if you moved it), or\n"
        f"  3. --pretrained none for a random encoder (demos and tests only).")


def geometric(image: torch.Tensor, size: tuple[int, int], interpolation: str, resize_mode: str,
              resize_to: int | None = None) -> torch.Tensor:
    """Resize (shortest side, to ``resize_to`` or the crop's size) and centre-crop uint8
    (…, 3, H, W) as open_clip's (or torchvision's) eval transform does."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    mode = TF.InterpolationMode(interpolation)
    if resize_mode == "squash":
        return TF.resize(image, list(size), interpolation=mode, antialias=True)
    if resize_mode == "longest":
        raise ConfigError("resize_mode 'longest' (letterboxing) is not supported for array images")
    h, w = image.shape[-2:]
    scale = max(size[0] / h, size[1] / w) if resize_to is None else resize_to / min(h, w)
    resized = TF.resize(image, [max(size[0], round(h * scale)), max(size[1], round(w * scale))],
                        interpolation=mode, antialias=True)
    return TF.center_crop(resized, list(size))


def pil_geometric(image: Image.Image, size: tuple[int, int], interpolation: str, resize_mode: str,
                  resize_to: int | None = None) -> torch.Tensor:
    """The same for a decoded file, with Pillow's resize (what open_clip's transform does on PIL images)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize
    mode = InterpolationMode(interpolation)
    if resize_mode == "squash":
        image = Resize(list(size), interpolation=mode)(image)
    else:
        image = CenterCrop(list(size))(Resize(resize_to or min(size), interpolation=mode)(image))
    return TF.pil_to_tensor(image)
