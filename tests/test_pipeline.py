import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import features

from cfrh.encoders import load_encoder
from cfrh.errors import CacheError, WeightsUnavailable
from cfrh_cache.readers import read_dataset
from cfrh_cache.store import Cache
from cfrh_cache.verify import verify


def test_end_to_end_cache(synth_cache, synth_dir):
    cache = Cache.open(synth_cache)
    assert cache.attrs["dataset"] == "synth" and cache.attrs["n"] == 240
    features = cache.read("image/cfrh-tiny-vit__none")
    assert features.shape == (240, 32) and features.dtype == np.float16
    assert cache.group["image/cfrh-tiny-vit__none"].chunks == (64, 32)
    source = read_dataset("synth", synth_dir)
    np.testing.assert_array_equal(cache.read("labels"), source.labels)
    np.testing.assert_array_equal(cache.read_text(), source.bow)
    enc = cache.attrs["encoders"]["cfrh-tiny-vit__none"]
    assert enc["pretrained"] == "none" and "random" in enc["warning"]
    assert [f["name"] for f in cache.attrs["source_files"]][:3] == [
        "mirflickr25k-iall.mat", "mirflickr25k-yall.mat", "mirflickr25k-lall.mat"]
    assert cache.attrs["split"]["protocol"] == "djsrh" and cache.attrs["split"]["seed"] == 0
    assert verify(synth_cache) == []


def test_features_equal_a_direct_forward(synth_cache, synth_dir):
    """The pipeline's batching, resizing and fp16 storage match one open_clip forward of the same rows."""
    import open_clip
    from torchvision.transforms.functional import to_pil_image
    encoder = load_encoder("cfrh-tiny-vit", "none", "cpu", seed=0)
    _, _, preprocess = open_clip.create_model_and_transforms("cfrh-tiny-vit", pretrained=None)
    pixels = read_dataset("synth", synth_dir).images.read(100, 104)
    x = torch.stack([preprocess(to_pil_image(torch.from_numpy(p))) for p in pixels])
    with torch.no_grad():
        expected = encoder.model.encode_image(x).numpy()
    got = Cache.open(synth_cache).read("image/cfrh-tiny-vit__none")[100:104].astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)


def test_manifest_layout_gives_same_features(synth_dir, synth_cache, tmp_path):
    features("manifest", synth_dir, tmp_path)
    a = Cache.open(synth_cache).read("image/cfrh-tiny-vit__none")
    b = Cache.open(tmp_path / "manifest").read("image/cfrh-tiny-vit__none")
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
    vocab = Cache.open(tmp_path / "manifest").attrs["vocabulary"]
    assert vocab["source"] == "built" and vocab["size"] == Cache.open(tmp_path / "manifest").read_text().shape[1]


def test_resume_after_interruption_is_identical(synth_dir, synth_cache, tmp_path):
    features("synth", synth_dir, tmp_path, chunk_rows=64, max_chunks=2)
    cache = Cache.open(tmp_path / "synth")
    with pytest.raises(CacheError, match="incomplete"):
        cache.read("image/cfrh-tiny-vit__none")
    assert any("incomplete" in p for p in verify(tmp_path / "synth"))
    report = features("synth", synth_dir, tmp_path, chunk_rows=64)
    assert report.stats.images == 240 - 128  # only the two missing chunks were encoded
    for name in ("image/cfrh-tiny-vit__none", "labels", "text/bow", "split/query", "split/train"):
        np.testing.assert_array_equal(Cache.open(tmp_path / "synth").read(name), Cache.open(synth_cache).read(name))
    again = features("synth", synth_dir, tmp_path, chunk_rows=64)
    assert again.stats.skipped and again.written == []


@pytest.mark.slow
def test_kill_9_then_resume(synth_dir, synth_cache, tmp_path):
    """A real SIGKILL in the middle of encoding; the rerun finishes with identical arrays."""
    script = (
        "import os, signal, sys\n"
        "from cfrh_cache import store\n"
        "count = 0\n"
        "original = store.ChunkedArray.write_chunk\n"
        "def write_chunk(self, chunk, data):\n"
        "    global count\n"
        "    original(self, chunk, data)\n"
        "    count += 1\n"
        "    if count == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "store.ChunkedArray.write_chunk = write_chunk\n"
        "from cfrh_cache.pipeline import FeatureOptions, build_features\n"
        f"build_features('synth', {str(synth_dir)!r}, {str(tmp_path)!r}, FeatureOptions(chunk_rows=64, model='cfrh-tiny-vit',"
        " pretrained='none', workers=0, batch_size=16, progress=False))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == -9
    progress = Cache.open(tmp_path / "synth").group["_progress/image/cfrh-tiny-vit__none"][...]
    assert progress.sum() == 2
    features("synth", synth_dir, tmp_path, chunk_rows=64)
    np.testing.assert_array_equal(Cache.open(tmp_path / "synth").read("image/cfrh-tiny-vit__none"),
                                  Cache.open(synth_cache).read("image/cfrh-tiny-vit__none"))


KILL_AFTER = (
    "import os, signal, sys, threading, time\n"
    "from cfrh_cache.pipeline import FeatureOptions, build_features\n"
    "delay = float(sys.argv[1])\n"
    "if delay > 0:\n"
    "    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))\n"
    "    timer.daemon = True\n"
    "    timer.start()\n"
    "start = time.perf_counter()\n"
    "build_features('synth', sys.argv[2], sys.argv[3], FeatureOptions(chunk_rows=32, model='cfrh-tiny-vit', pretrained='none',"
    " workers=0, batch_size=16, progress=False))\n"
    "print(time.perf_counter() - start)\n")


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(synth_dir, synth_cache, tmp_path):
    """SIGKILL at seeded random moments of a whole stage-1 run (source reading, texts, split, chunk
    and metadata writes), then again during the rerun, then a rerun to the end: the cache equals
    an uninterrupted one, array by array, and verifies. Four rounds, each from an empty folder."""
    def run(delay: float, out):
        return subprocess.run([sys.executable, "-c", KILL_AFTER, str(delay), str(synth_dir), str(out)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    timed = run(0, tmp_path / "timed")  # how long the work takes after the imports
    assert timed.returncode == 0, timed.stderr
    duration = float(timed.stdout.split()[-1])
    reference = Cache.open(tmp_path / "timed" / "synth")
    names = reference.names(complete_only=True)
    assert "image/cfrh-tiny-vit__none" in names
    rng = np.random.default_rng(7)
    first_kills = []
    for round_ in range(4):
        out = tmp_path / f"round{round_}"
        first_kills.append(run(rng.uniform(0.02, 0.9) * duration, out).returncode)
        assert run(rng.uniform(0.02, 0.9) * duration, out).returncode in (0, -9)  # the rerun may finish first
        assert run(0, out).returncode == 0
        killed = Cache.open(out / "synth")
        assert killed.names(complete_only=True) == names
        for name in names:
            np.testing.assert_array_equal(killed.read(name), reference.read(name), err_msg=f"round {round_}: {name}")
        assert verify(out / "synth") == []
    assert first_kills.count(-9) >= 3, first_kills  # the signal did land mid-run
    np.testing.assert_array_equal(reference.read("image/cfrh-tiny-vit__none"),
                                  Cache.open(synth_cache).read("image/cfrh-tiny-vit__none"))


def test_split_change_needs_resplit(synth_dir, synth_cache, tmp_path):
    features("synth", synth_dir, tmp_path, chunk_rows=64)
    with pytest.raises(CacheError, match="pass --resplit"):
        features("synth", synth_dir, tmp_path, protocol="ucch")
    features("synth", synth_dir, tmp_path, protocol="ucch", resplit=True)
    assert Cache.open(tmp_path / "synth").attrs["split"]["protocol"] == "ucch"


def test_verify_detects_tampering(synth_dir, tmp_path):
    features("synth", synth_dir, tmp_path, chunk_rows=64)
    cache = Cache.open(tmp_path / "synth", mode="a")
    cache.group["labels"][0] = 1 - cache.group["labels"][0]
    assert any("labels: checksum mismatch" in p for p in verify(tmp_path / "synth"))


def test_cache_of_another_dataset_or_version_is_refused(synth_cache, tmp_path):
    with pytest.raises(CacheError, match="holds dataset 'synth' with n=240, not 'manifest'"):
        Cache.create(synth_cache, "manifest", 240)
    build_dir = tmp_path / "old"
    cache = Cache.create(build_dir, "synth", 10)
    cache.group.attrs["format_version"] = 0
    with pytest.raises(CacheError, match="format version 0"):
        Cache.open(build_dir)


def test_second_encoder_lives_beside_the_first(synth_dir, synth_cache, tmp_path):
    """A local weights file: its own array, named by file and hash, with the features of those weights."""
    encoder = load_encoder("cfrh-tiny-vit", "none", "cpu", seed=5)
    weights = tmp_path / "georsclip-tiny.pt"
    torch.save(encoder.model.state_dict(), weights)
    features("synth", synth_dir, tmp_path, chunk_rows=64)
    report = features("synth", synth_dir, tmp_path, chunk_rows=64, pretrained=str(weights))
    assert report.encoder_tag.startswith("cfrh-tiny-vit__georsclip-tiny-")
    cache = Cache.open(tmp_path / "synth")
    assert sorted(cache.encoders()) == sorted(["cfrh-tiny-vit__none", report.encoder_tag])
    assert cache.attrs["encoders"][report.encoder_tag]["weights_sha256"]
    from_file = cache.read(f"image/{report.encoder_tag}").astype(np.float32)
    seed5 = features("synth", synth_dir, tmp_path / "s5", chunk_rows=64, seed=5)
    np.testing.assert_allclose(from_file, Cache.open(tmp_path / "s5" / "synth").read(f"image/{seed5.encoder_tag}")
                               .astype(np.float32), atol=1e-3)


def test_offline_weights_error_says_how(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(WeightsUnavailable) as err:
        load_encoder("ViT-B-32", "openai", "cpu")
    message = str(err.value)
    assert "--pretrained /path/to/" in message and "Hugging Face cache" in message and "--pretrained none" in message


def test_unknown_tag_and_model():
    with pytest.raises(WeightsUnavailable, match="neither a local file nor a tag of ViT-B-32"):
        load_encoder("ViT-B-32", "no-such-tag", "cpu")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_encoder("ViT-Nope", "none", "cpu")


def test_cli_synth_features_info_verify(tmp_path):
    from typer.testing import CliRunner

    from cfrh_cli.cache import app
    runner = CliRunner()
    assert runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--n", "60", "--labels", "4", "--size", "64"]).exit_code == 0
    result = runner.invoke(app, ["features", "synth", "--root", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c"),
                                 "--model", "cfrh-tiny-vit", "--pretrained", "none", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(runner.invoke(app, ["info", str(tmp_path / "c" / "synth"), "--json"]).output)
    assert summary["n"] == 60 and "cfrh-tiny-vit__none" in summary["encoders"]
    assert runner.invoke(app, ["verify", str(tmp_path / "c" / "synth")]).exit_code == 0
    bad = runner.invoke(app, ["features", "mirflickr", "--root", str(tmp_path / "nothing"), "--cache-dir", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "mirflickr25k-yall.mat: file not found" in bad.output  # a user error
    usage = runner.invoke(app, ["features", "synth", "--root", str(tmp_path / "d"), "--batch-size", "-1"])
    assert usage.exit_code == 2 and "batch-size" in usage.output  # a usage error, before any work


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(synth_dir, synth_cache, tmp_path):
    """torch.distributed (gloo, CPU): two ranks write disjoint chunks of one store; same arrays."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "cfrh_cache", "features", "synth", "--root", str(synth_dir), "--cache-dir", str(tmp_path),
               "--model", "cfrh-tiny-vit", "--pretrained", "none", "--workers", "0", "--batch-size", "16",
               "--chunk-rows", "64", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, single = Cache.open(tmp_path / "synth"), Cache.open(synth_cache)
    for name in ("image/cfrh-tiny-vit__none", "labels", "text/bow", "split/val"):
        np.testing.assert_array_equal(ours.read(name), single.read(name))
    assert ours.attrs["encoders"]["cfrh-tiny-vit__none"]["ranks"] == 2
    assert ours.group["image/cfrh-tiny-vit__none"].chunks[0] == 64  # 4 chunks: 0, 2 on rank 0; 1, 3 on rank 1
    assert verify(tmp_path / "synth") == []
