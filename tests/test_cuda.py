"""The CUDA paths: AMP encoding, training, resuming and exporting on ``cuda``, searching on a
CPU. Marked ``cuda``: skipped where torch sees no GPU; ``bench/device.sh`` runs them on one.
``pytest -m cuda --cuda-device cpu`` runs the same tests on the CPU, to check the tests before
GPU time goes to them (there the AMP comparison is float32 against float32)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import features, interrupt_after_checkpoints
from PIL import Image

from cfrh.encoders import load_encoder
from cfrh_cache.readers.synth import make_synth
from cfrh_search.index import IndexSpec, export_index
from cfrh_train.config import load
from cfrh_train.train import run, train

pytestmark = pytest.mark.cuda
FAST = {"epochs": 6, "eval_every": 2, "hidden": 256, "bits": 16}
# AMP (float16 autocast) against float32, on random-weight ViT-B-32 features of real images:
COSINE_AT_LEAST = 0.999  # every row's cosine to its float32 feature
SPREAD_AT_MOST = 0.02  # ‖AMP − float32‖ per row, over the rows' typical distance from their mean
QUALITY_WITHIN = 0.03  # test mAP@50 of a run on cuda against the same seed's run on the CPU


def test_amp_encoding_equals_float32_within_tolerance(cuda_device, tmp_path):
    data = make_synth(tmp_path / "d", n=60, n_labels=6, seed=1, size=224)
    source = [np.asarray(Image.open(data / "images" / f"{i:06d}.jpg").convert("RGB")) for i in range(16)]
    pixels = torch.from_numpy(np.stack(source)).permute(0, 3, 1, 2).contiguous()
    amp = load_encoder("ViT-B-32", "none", cuda_device, seed=0)
    with torch.no_grad():  # the same weights (same seed), in float32 on the CPU, no autocast
        reference = load_encoder("ViT-B-32", "none", "cpu", seed=0)
        x = (pixels.float() / 255 - reference.mean) / reference.std
        want = reference.model.encode_image(x).numpy()
    got = amp(pixels).astype(np.float32)
    assert amp.device.type == torch.device(cuda_device).type and got.dtype == np.float32 and got.shape == want.shape
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    spread = np.linalg.norm(want - want.mean(0), axis=1).mean()
    error = np.linalg.norm(got - want, axis=1) / spread
    assert cosine.min() >= COSINE_AT_LEAST, cosine.min()
    assert error.max() <= SPREAD_AT_MOST, error.max()


def test_training_on_cuda_gives_codes_of_cpu_quality(cuda_device, quality_cache):
    runs = {}
    for device in ("cpu", cuda_device):
        config = load("synth", overrides={"bits": 32, "device": device, "seed": 0})
        runs[device] = train(config, quality_cache, "synth", progress=False)
    on_cuda = runs[cuda_device]
    assert on_cuda["result"]["config"]["device"] == cuda_device
    codes = on_cuda["codes"]["database_image"]
    assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 1} and codes.shape[1] == 32
    for d in ("i2t", "t2i"):
        cpu, gpu = (runs[k]["result"]["metrics"][d]["map@50"] for k in ("cpu", cuda_device))
        assert abs(gpu - cpu) <= QUALITY_WITHIN, (d, cpu, gpu)


def test_training_resumes_on_cuda(cuda_device, synth_cache, tmp_path, monkeypatch):
    """An interrupted run on cuda resumes from its checkpoint (the RNG states go back to the host)
    and ends as an uninterrupted one: exactly where two uninterrupted runs agree exactly (the GPU's
    kernels are deterministic here), else within the quality tolerance."""
    config = load("synth", overrides={**FAST, "device": cuda_device})
    whole = [train(config, synth_cache.parent, "synth", progress=False) for _ in range(2)]
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as patch:
        saves = interrupt_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert saves == [1, 3] and ckpt.is_file()
    resumed = train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert [e["epoch"] for e in resumed["result"]["history"]] == list(range(FAST["epochs"]))
    if whole[0]["result"]["metrics"] == whole[1]["result"]["metrics"]:
        assert resumed["result"]["history"] == whole[0]["result"]["history"]
        assert resumed["result"]["metrics"] == whole[0]["result"]["metrics"]
        assert resumed["result"]["selection"] == whole[0]["result"]["selection"]
    else:
        for d in ("i2t", "t2i"):
            assert abs(resumed["result"]["metrics"][d]["map@50"] - whole[0]["result"]["metrics"][d]["map@50"]) \
                   <= QUALITY_WITHIN


SEARCH_ON_CPU = """
import json, sys
import numpy as np, torch
from cfrh_cache.readers import read_dataset
from cfrh_search.index import Index
from cfrh_search.queries import Queries
from pathlib import Path
folder, data = Path(sys.argv[1]), Path(sys.argv[2])
index, codes = Index(folder / "index"), np.load(folder / "codes.npz")
queries, source = Queries(index), read_dataset("manifest", data)
rows = codes["database_index"][:20]
_, text = queries.hash(text=queries.text_vectors([source.texts[r] for r in rows]))
image, _ = queries.hash(image=queries.image_features([source.images.paths[r] for r in rows]))
hits = index.search(codes["database_text"][:3], "text", k=5)
print(json.dumps({"cuda_seen": torch.cuda.is_available(), "device": str(queries.device),
                  "text": np.where(text >= 0, 1, -1).tolist(), "image": np.where(image >= 0, 1, -1).tolist(),
                  "self_hits": [[h.row for h in hs if h.distance == 0] for hs in hits]}))
"""


def test_run_trained_on_cuda_exports_and_searches_on_a_cpu(cuda_device, synth_dir, tmp_path):
    cache = tmp_path / "cache"
    features("manifest", synth_dir, cache, chunk_rows=64, device=cuda_device)
    folder = run(load("manifest", overrides={**FAST, "bits": 24, "device": cuda_device}), cache, "manifest",
                 tmp_path / "runs", progress=False)
    export_index(folder, cache, IndexSpec())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # this process sees no GPU
    out = subprocess.run([sys.executable, "-c", SEARCH_ON_CPU, str(folder), str(synth_dir)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["cuda_seen"] and got["device"] == "cpu"
    codes = np.load(folder / "codes.npz")
    for modality in ("text", "image"):  # the codes the run stored (hashed on cuda), hashed again on the CPU
        stored = codes[f"database_{modality}"][:20]
        agree = (np.array(got[modality]) == stored).mean()
        assert agree >= 0.99, (modality, agree)  # a bit whose value is ~0 may take the other sign
    rows = codes["database_index"][:3]
    assert all(int(r) in hits for r, hits in zip(rows, got["self_hits"]))
