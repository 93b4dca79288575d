"""Classic image backbones, for like-with-like comparison with the published AlexNet / VGG-19
rows: ``--model torchvision:vgg19`` or ``torchvision:alexnet`` (fc7: the 4,096-d output of the
second fully connected layer after its ReLU, as the lineage extracted it), or ``timm:<name>``
(timm's pooled features, ``num_classes=0``). Weights come from a local file, from the torch hub
cache (torchvision) or the Hugging Face cache (timm), never from the network at run time; a
clear error says how to supply them. ``--pretrained none`` gives a seeded random network.

Preprocessing is torchvision's ImageNet evaluation transform: resize the short side to 256
(bilinear), centre-crop 224, ImageNet mean and standard deviation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from cfrh.errors import ConfigError, WeightsUnavailable
from cfrh.fsio import sha256_file

TORCHVISION_FC7 = {"vgg19": "VGG19_Weights", "vgg16": "VGG16_Weights", "alexnet": "AlexNet_Weights"}
IMAGENET = {"size": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear", "resize_mode": "shortest", "resize": 256}


class Fc7(nn.Module):
    """A torchvision VGG/AlexNet cut at fc7 (after its ReLU, before dropout and the classifier)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features, self.avgpool = net.features, net.avgpool
        self.head = nn.Sequential(*list(net.classifier.children())[:5])  # drop, fc6, relu, drop, fc7 …

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.head(x)


class Pooled(nn.Module):
    """A timm model's pooled features."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def is_classic(model: str) -> bool:
    return model.startswith(("torchvision:", "timm:"))


def tag_of(model: str) -> str:
    """``torchvision:vgg19`` → ``torchvision-vgg19`` (array names carry no colon)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", model)


def build_classic(model: str, pretrained: str | None, seed: int) -> tuple[nn.Module, dict, str | None, dict]:
    """(network with ``encode_image``, attributes, weights sha256 or None, preprocessing) of a
    classic backbone: torchvision's ImageNet evaluation transform, or timm's own data config."""
    family, name = model.split(":", 1)
    torch.manual_seed(seed)
    if family == "torchvision":
        import torchvision
        if name not in TORCHVISION_FC7:
            raise ConfigError(f"--model {model}: the torchvision backbones here are "
                              f"{', '.join('torchvision:' + k for k in TORCHVISION_FC7)}")
        net = getattr(torchvision.models, name)(weights=None)
        weights, attrs = _torchvision_weights(model, name, pretrained)
        wrapped: nn.Module = Fc7(net)
        cfg = dict(IMAGENET)
    else:
        try:
            import timm
        except ImportError:
            raise ConfigError(f"--model {model}: needs timm (pip install timm)") from None
        if name not in timm.list_models():
            raise ConfigError(f"--model {model}: not a timm model (timm.list_models())")
        net = timm.create_model(name, pretrained=False, num_classes=0)
        weights, attrs = _timm_weights(model, name, pretrained, net)
        wrapped = Pooled(net)
        data = timm.data.resolve_data_config({}, model=net)
        side = data["input_size"][1:]
        cfg = {"size": list(side), "mean": list(data["mean"]), "std": list(data["std"]),
               "interpolation": data["interpolation"], "resize_mode": "shortest",
               "resize": int(round(min(side) / data.get("crop_pct", 1.0)))}
    sha = None
    if weights is not None:
        sha = sha256_file(weights)
        state = _load_state(weights)
        target = net
        missing, unexpected = target.load_state_dict(state, strict=False)
        useful = [k for k in missing if not k.startswith(("classifier.6", "fc.", "head."))]
        if useful or [k for k in unexpected if not k.startswith(("classifier.6", "fc.", "head."))]:
            raise WeightsUnavailable(f"{weights}: does not fit {model} (missing {useful[:3]}, unexpected "
                                     f"{unexpected[:3]}); pass the weights of that architecture")
        attrs.update(weights_file=Path(weights).name, weights_sha256=sha)
    return wrapped, attrs, sha, cfg


def _load_state(path: str | Path) -> dict:
    if str(path).endswith(".safetensors"):
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _torchvision_weights(model: str, name: str, pretrained: str | None) -> tuple[str | None, dict]:
    import torchvision
    attrs = {"model": model, "torchvision": torchvision.__version__}
    if pretrained in (None, "none"):
        return None, {**attrs, "pretrained": "none"}
    if Path(pretrained).is_file():
        return str(pretrained), {**attrs, "pretrained": "file"}
    enum = getattr(torchvision.models, TORCHVISION_FC7[name])
    if pretrained not in ("imagenet", "DEFAULT", *enum.__members__):
        raise WeightsUnavailable(f"--pretrained {pretrained!r} for {model}: use imagenet (the torch hub cache), "
                                 f"one of {', '.join(enum.__members__)}, a weights file, or none")
    weights = enum.DEFAULT if pretrained in ("imagenet", "DEFAULT") else enum[pretrained]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise WeightsUnavailable(
            f"cannot load {model} weights {weights}: not in the torch hub cache ({cached}) and nothing is "
            f"downloaded at run time. Supply them offline: copy {Path(weights.url).name} (from "
            f"{weights.url} on a connected machine) to {cached.parent}, or pass --pretrained /path/to/file.pth, "
            "or --pretrained none (demos and tests only)")
    return str(cached), {**attrs, "pretrained": pretrained, "weights": str(weights)}


def _timm_weights(model: str, name: str, pretrained: str | None, net: nn.Module) -> tuple[str | None, dict]:
    import timm
    attrs = {"model": model, "timm": timm.__version__}
    if pretrained in (None, "none"):
        return None, {**attrs, "pretrained": "none"}
    if Path(pretrained).is_file():
        return str(pretrained), {**attrs, "pretrained": "file"}
    hub = (getattr(net, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub, filename)
            if isinstance(cached, str):
                return cached, {**attrs, "pretrained": hub}
    raise WeightsUnavailable(
        f"cannot load {model} weights: not in the Hugging Face cache ({hub or 'no hub id'}) and nothing is "
        "downloaded at run time. Supply them offline: fill the cache on a connected machine "
        f"(huggingface-cli download {hub or '<repo>'}) and copy ~/.cache/huggingface/hub here, or pass "
        "--pretrained /path/to/model.safetensors, or --pretrained none (demos and tests only)")

