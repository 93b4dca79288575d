"""Backbones users ask for: each built with ``pretrained=None``, its weights saved to a file by
the test and loaded back through ``--pretrained FILE``, giving the same features; several
backbones side by side in one cache, compared by ``make table ENCODERS=…``."""

import json

import numpy as np
import pytest
import torch
from conftest import features

from cfrh.encoders import load_encoder
from cfrh_cache.store import Cache
from cfrh_train.missing_runs import ensure_runs
from cfrh_train.table import make_table

FAMILIES = [
    # (open_clip model, feature dim, how the checkpoint file is laid out)
    ("ViT-B-32", 512, "plain"),  # OpenAI / LAION ViT-B/32 (the default backbone)
    ("ViT-B-32", 512, "georsclip"),  # GeoRSCLIP-style: a ViT-B-32 training checkpoint {"state_dict": {"module.…"}}
    ("ViT-L-14", 768, "plain"),
    ("MobileCLIP-S1", 512, "plain"),
]


def save_checkpoint(model: torch.nn.Module, path, layout: str) -> None:
    state = model.state_dict()
    if layout == "georsclip":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 9}
    torch.save(state, path)


@pytest.mark.slow
@pytest.mark.parametrize("model,dim,layout", FAMILIES, ids=[f"{m}-{l}" for m, _, l in FAMILIES])
def test_backbone_from_a_local_file_gives_its_features(model, dim, layout, tmp_path):
    built = load_encoder(model, "none", "cpu", seed=7)
    assert built.dim == dim and built.attrs["pretrained"] == "none"
    weights = tmp_path / f"{model}-{layout}.pt"
    save_checkpoint(built.model, weights, layout)
    loaded = load_encoder(model, str(weights), "cpu", seed=123)  # another seed: only the file can make them equal
    assert loaded.tag.startswith(f"{model}__{model}-{layout}-") and loaded.attrs["weights_sha256"]
    pixels = torch.randint(0, 255, (2, 3, *built.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(loaded(pixels), built(pixels))
    assert loaded(pixels).shape == (2, dim)
    del built, loaded


@pytest.mark.slow
def test_make_table_compares_backbones_cached_side_by_side(synth_dir, tmp_path):
    other = load_encoder("cfrh-tiny-vit", "none", "cpu", seed=5)
    weights = tmp_path / "rs-tiny.pt"
    torch.save(other.model.state_dict(), weights)
    features("synth", synth_dir, tmp_path / "cache", chunk_rows=64)
    second = features("synth", synth_dir, tmp_path / "cache", chunk_rows=64, pretrained=str(weights))
    tags = sorted(Cache.open(tmp_path / "cache" / "synth").encoders())
    assert tags == sorted(["cfrh-tiny-vit__none", second.encoder_tag])
    runs = tmp_path / "runs"
    counts = ensure_runs(["synth"], ["lsh"], [16], [0], tmp_path / "cache", runs, "cpu", False, lambda m: None,
                         encoders=tags)
    assert counts == {"trained": 2, "reused": 0}
    for tag in tags:  # one run folder per backbone, neither overwriting the other
        result = json.loads((runs / "synth" / "lsh" / "16bit" / f"seed0-{tag}" / "result.json").read_text())
        assert result["encoder"]["tag"] == tag and result["config"]["encoder"] == tag
    md = make_table(runs, figures=False)["markdown"].read_text()
    for tag in tags:
        assert f"| lsh [{tag}] (1 seed) |" in md


@pytest.mark.slow
@pytest.mark.parametrize("model,dim", [("torchvision:alexnet", 4096), ("timm:test_vit", 64)])
def test_classic_backbone_from_a_local_file_equals_the_library_forward(model, dim, tmp_path):
    """fc7 of torchvision's AlexNet (after its ReLU) and timm's pooled features, loaded from a file
    that the library's own network saved: the same features as that network's direct forward."""
    import timm
    import torchvision
    family, name = model.split(":")
    torch.manual_seed(11)
    if family == "torchvision":
        net = getattr(torchvision.models, name)(weights=None).eval()
        direct = lambda x: net.classifier[:5](torch.flatten(net.avgpool(net.features(x)), 1))
    else:
        net = timm.create_model(name, pretrained=False, num_classes=0).eval()
        direct = net
    weights = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), weights)
    loaded = load_encoder(model, str(weights), "cpu", seed=99)
    assert loaded.dim == dim and loaded.tag.startswith(f"{family}-{name}__{name}-")
    assert loaded.attrs["weights_sha256"] and loaded.resize_to and loaded.resize_to > min(loaded.size)
    pixels = torch.randint(0, 255, (2, 3, *loaded.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = (pixels.float() / 255 - loaded.mean) / loaded.std
        np.testing.assert_allclose(loaded(pixels).astype(np.float32), direct(x).numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_vgg19_fc7_is_4096_wide_and_offline_weights_say_how(tmp_path, monkeypatch):
    from cfrh.errors import WeightsUnavailable
    vgg = load_encoder("torchvision:vgg19", "none", "cpu")
    assert vgg.dim == 4096 and vgg.tag == "torchvision-vgg19__none" and "random" in vgg.attrs["warning"]
    del vgg
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(WeightsUnavailable, match=r"not in the torch hub cache .*vgg19-dcbb9e9d.pth.*--pretrained /path"):
        load_encoder("torchvision:vgg19", "imagenet", "cpu")


def test_classic_backbone_through_stage1(tmp_path):
    from conftest import features as build
    from PIL import Image
    (tmp_path / "m").mkdir()
    rows = ["image,text,labels"] + [f"{i}.png,tag{i % 3} word,l{i % 2}" for i in range(6)]
    for i in range(6):
        Image.new("RGB", (300, 260), (40 * i, 90, 30)).save(tmp_path / "m" / f"{i}.png")
    (tmp_path / "m" / "manifest.csv").write_text("\n".join(rows) + "\n")
    report = build("manifest", tmp_path / "m", tmp_path / "c", model="timm:test_vit", min_df=1)
    cache = Cache.open(tmp_path / "c" / "manifest")
    assert cache.read(f"image/{report.encoder_tag}").shape == (6, 64)
    assert cache.attrs["encoders"][report.encoder_tag]["preprocessing"]["resize"] == 168
