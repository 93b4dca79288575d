"""The peers as their authors ran them (#17): what the official code does that a reading of the
papers missed, each pinned by a test that fails without it."""

import pytest
from conftest import exported_run, interrupt_after_checkpoints, topics

from cfrh_train.config import load
from cfrh_train.train import train

TINY = {"bits": 16, "device": "cpu", "img_hidden": [16], "txt_hidden": [16]}


def test_ucch_learning_rate_steps_down_at_epoch_30_and_resumes_on_schedule(synth_cache, tmp_path, monkeypatch):
    config = load("synth", overrides={"method": "ucch", **TINY, "epochs": 32, "eval_every": 15, "n_negatives": 16})
    assert config["lr_milestones"][:3] == [30, 60, 90] and config["lr_gamma"] == 0.1
    whole = train(config, synth_cache.parent, "synth", progress=False)
    lrs = [entry["lr"] for entry in whole["result"]["history"]]
    assert lrs[29] == pytest.approx(1e-4) and lrs[30] == pytest.approx(1e-5) and lrs[31] == pytest.approx(1e-5)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as patch:  # stopped at epoch 29's checkpoint, before the step
        interrupt_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    resumed = train(config, synth_cache.parent, "synth", progress=False, checkpoint=ckpt)
    assert [entry["lr"] for entry in resumed["result"]["history"]] == lrs
    assert resumed["result"]["metrics"] == whole["result"]["metrics"]


def test_ucch_takes_the_authors_mirflickr_feature_recipe():
    config = load("mirflickr", overrides={"method": "ucch"})
    assert (config["alpha"], config["shift"], config["epochs"], config["margin"]) == (0.7, 0.1, 20, 0.2)
    assert load("nuswide", overrides={"method": "ucch"})["alpha"] == 0.9  # no recipe given: the code's default


def test_dgcpn_takes_the_codes_three_steps_per_batch():
    """One batch of DGCPN against the official order written out with two SGD optimisers, one
    per side (as its code has them): joint step; image against sign(text); text against
    sign(image), the last two from one forward after the joint step."""
    import copy

    import torch
    import torch.nn.functional as F

    from cfrh_train.methods import build
    from cfrh_train.methods.base import descend

    config = load("synth", overrides={"method": "dgcpn", "bits": 8, "device": "cpu", "img_hidden": [12],
                                      "txt_hidden": [12], "dropout": 0.0, "knn": 0.5})
    torch.manual_seed(0)
    img, txt = torch.randn(10, 6), torch.rand(10, 9).round()
    method = build("dgcpn", config, 6, 9, "bow")
    method.fit(img, txt)
    reference, joint_only = copy.deepcopy(method), copy.deepcopy(method)
    batch = torch.tensor([1, 4, 7, 2])
    method.train_step(img[batch], txt[batch], batch, method.optimizer())

    def loss(bi, bt, s):  # the official loss, written out again
        bi, bt = F.normalize(bi, dim=1), F.normalize(bt, dim=1)
        ii, tt, it = bi @ bi.T, bt @ bt.T, bi @ bt.T
        off = 1 - torch.eye(4)
        dis = sum(F.mse_loss(x * off, s * off) for x in (tt, it, ii))
        cons = F.mse_loss(it, ii) + F.mse_loss(it, tt) + F.mse_loss(ii, tt) + F.mse_loss(it, it.T)
        return F.mse_loss(it.diagonal(), torch.full((4,), 1.5)) + dis + cons

    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    opt_i, opt_t = sgd(reference.image), sgd(reference.text)
    with torch.no_grad():
        s = reference.affinity(img[batch], txt[batch], batch)
    x_i, x_t = reference.prepare(img[batch], txt[batch])
    opt_i.zero_grad(), opt_t.zero_grad()
    loss(reference.image(x_i), reference.text(x_t), s).backward()
    opt_i.step(), opt_t.step()
    code_i, code_t = reference.image(x_i), reference.text(x_t)
    opt_i.zero_grad()
    loss(code_i, code_t.sign().detach(), s).backward(retain_graph=True)
    opt_i.step()
    opt_t.zero_grad()
    loss(code_i.sign().detach(), code_t, s).backward()
    opt_t.step()
    for (name, got), (_, want) in zip(method.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(got, want, msg=name)
    descend(joint_only.loss(img[batch], txt[batch], batch), joint_only.optimizer(), joint_only.parameters())
    for side in ("image", "text"):  # and the test can tell: one joint step lands elsewhere on both sides
        assert not torch.allclose(getattr(joint_only, side).net[-1].weight, getattr(method, side).net[-1].weight)


def two_tailed(n: int = 300, seed: int = 4):
    """A symmetric matrix of similarities whose values have a Gaussian left tail and a Laplace
    right tail around a mode at −0.5 (the shape JDSH found on AlexNet features)."""
    import numpy as np
    import torch
    rng = np.random.default_rng(seed)
    half = lambda draw: np.abs(draw)
    values = np.where(rng.random((n, n)) < 0.5, -0.5 - half(rng.normal(0, 0.02, (n, n))),
                      -0.5 + half(rng.laplace(0, 0.09, (n, n))))
    upper = np.triu(values, 1)
    return torch.tensor(upper + upper.T + np.diag(np.diag(values)))


def test_dsdw_reweights_a_stated_share_of_two_tailed_similarities():
    import numpy as np
    from scipy.stats import norm

    from cfrh_train.affinity import dsdw_share, dsdw_share_thresholds, dsdw_thresholds
    s = two_tailed()
    by_share = dsdw_share_thresholds(s, 0.05, 0.35)
    assert dsdw_share(s, by_share["left"], by_share["right"]).item() == pytest.approx(0.40, abs=0.005)
    moments = dsdw_thresholds(s, 2.0, 4.0)  # on a distribution with the two tails, the moment fit works too:
    expected = 0.5 * 2 * norm.sf(2) + 0.5 * np.exp(-4)  # half the pairs beyond 2σ left, half beyond 4b right
    assert dsdw_share(s, moments["left"], moments["right"]).item() == pytest.approx(expected, abs=0.006)


def test_jdsh_reweights_pairs_on_clip_like_features_and_logs_the_share(synth_cache):
    """On the synthetic cache the moment fit re-weighted 0 % of the pairs; the run's history now
    says how many were, epoch by epoch."""
    config = load("synth", overrides={"method": "jdsh", **TINY, "epochs": 2, "eval_every": 2})
    history = train(config, synth_cache.parent, "synth", progress=False)["result"]["history"]
    shares = [entry["terms"]["dsdw_share"] for entry in history]
    assert all(0.3 < share < 0.5 for share in shares), shares
    moments = train({**config, "dsdw_fit": "moments"}, synth_cache.parent, "synth", progress=False)["result"]
    assert moments["history"][0]["terms"]["dsdw_share"] < shares[0]


def djsrh_case():
    """A fixed tiny DJSRH case with no random draw in it: 8 items, explicit weights."""
    import torch

    from cfrh_train.methods import build
    config = load("synth", overrides={"method": "djsrh", "bits": 4, "device": "cpu", "img_hidden": [],
                                      "txt_hidden": [6], "center_features": False, "batch_size": 4})
    rows = torch.arange(8, dtype=torch.float64)[:, None]
    img = torch.cos(rows * torch.arange(1, 6) / 3).float() + 1.0  # non-negative, as AlexNet fc7 is
    txt = (torch.sin((rows + 1) * torch.arange(1, 8) / 2) > 0.3).float()
    assert (txt.sum(1) > 0).all()
    method = build("djsrh", config, 5, 7, "bow")
    with torch.no_grad():
        for i, p in enumerate(method.parameters()):
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) + i).view_as(p) / 4)
    return config, method, img, txt


def test_djsrh_loss_of_a_fixed_case_matches_the_official_formula():
    """The official S: S̃ = βS_I + (1−β)S_T with S = 2cos − 1, S = μ((1−η)S̃ + η S̃S̃/m); the loss
    λ1‖B_I B_Iᵀ − S‖² + ‖B_I B_Tᵀ − S‖² + λ2‖B_T B_Tᵀ − S‖², written out in NumPy."""
    import numpy as np
    config, method, img, txt = djsrh_case()
    method.set_epoch(0)
    got = method.loss(img[:4], txt[:4])["loss"].item()
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    f_i, f_t = img[:4].numpy().astype(np.float64), txt[:4].numpy().astype(np.float64)
    s_tilde = 0.9 * (2 * unit(f_i) @ unit(f_i).T - 1) + 0.1 * (2 * unit(f_t) @ unit(f_t).T - 1)
    s = 1.5 * (0.6 * s_tilde + 0.4 * s_tilde @ s_tilde / 4)
    w = {k: v.double().numpy() for k, v in method.state_dict().items()}
    b_i = np.tanh(f_i @ w["image.net.0.weight"].T + w["image.net.0.bias"])
    hidden = np.maximum(f_t @ w["text.net.0.weight"] + w["text.net.0.bias"], 0)  # BowLinear stores Wᵀ
    b_t = np.tanh(hidden @ w["text.net.2.weight"].T + w["text.net.2.bias"])
    b_i, b_t = unit(b_i), unit(b_t)
    mse = lambda a, b: np.mean((a - b) ** 2)
    want = 0.1 * mse(b_i @ b_i.T, s) + mse(b_i @ b_t.T, s) + 0.1 * mse(b_t @ b_t.T, s)
    assert got == pytest.approx(want, rel=1e-5)


def test_djsrh_training_of_a_fixed_case_does_not_drift():
    """Two epochs of the fixed case, batch order from seed 0. The losses were checked against the
    official training loop's lines run on the same weights and batches (two SGD optimisers, one
    per side; equal to 1e-7) and are pinned here: a change to the affinity, the loss, the α
    schedule or the optimiser moves them."""
    import torch
    config, method, img, txt = djsrh_case()
    optimizer = method.optimizer()
    generator, losses = torch.Generator().manual_seed(0), []
    for epoch in range(2):
        method.set_epoch(epoch)
        order = torch.randperm(8, generator=generator)
        for step in range(2):
            batch = order[step * 4:(step + 1) * 4]
            losses.append(method.train_step(img[batch], txt[batch], batch, optimizer)["loss"].item())
    assert losses == pytest.approx(PINNED_DJSRH_LOSSES, rel=1e-5)


PINNED_DJSRH_LOSSES = [2.2662301, 2.3371034, 1.8778002, 1.8946616]  # the official loop: the same values


# CCAH and UCMFH: the two CLIP-feature peers ------------------------------------------------

SMALL_CCAH = {"bits": 16, "device": "cpu", "img_hidden": [64], "gat_hidden": 32, "gat_heads": 2, "epochs": 20,
              "eval_every": 10}
SMALL_UCMFH = {"bits": 16, "device": "cpu", "head_width": 128, "fusion_ff": 128, "fusion_heads": 2, "epochs": 30,
               "eval_every": 10, "batch_size": 64}


@pytest.fixture(scope="module")
def clip_like_cache(tmp_path_factory):
    """Image features and signed dense text vectors (as CLIP text embeddings are), both from the
    labels: the input UCMFH is built for."""
    import numpy as np

    from cfrh_cache.importer import import_source
    from cfrh_cache.pipeline import FeatureOptions, build_source
    root = tmp_path_factory.mktemp("cliplike")
    image, text, labels = topics(n=900, classes=8, dim=48, words=16, signed=True, seed=5)
    for name, value in (("image.npy", image), ("text.npy", text), ("labels.npy", labels)):
        np.save(root / name, value)
    source = import_source("cliplike", str(root / "image.npy"), str(root / "text.npy"), str(root / "labels.npy"),
                           text_kind="dense", encoder_name="clip-like")
    build_source(source, "cliplike", root, root / "c", FeatureOptions(progress=False))
    return root / "c"


def beats_random(method, overrides, cache_dir, dataset):
    result = train(load(dataset, overrides={"method": method, **overrides}), cache_dir, dataset, progress=False)["result"]
    floor = train(load(dataset, overrides={"method": "random", "bits": overrides["bits"], "device": "cpu"}),
                  cache_dir, dataset, progress=False)["result"]
    for d in ("i2t", "t2i"):
        assert result["metrics"][d]["map@50"] > floor["metrics"][d]["map@50"] + 0.02, (d, result["metrics"], floor)


@pytest.mark.slow
def test_ccah_beats_random_codes(quality_cache):
    beats_random("ccah", SMALL_CCAH, quality_cache, "synth")


@pytest.mark.slow
def test_ucmfh_beats_random_codes(clip_like_cache):
    beats_random("ucmfh", SMALL_UCMFH, clip_like_cache, "cliplike")


def test_ucmfh_refuses_a_bag_of_words(synth_cache):
    from cfrh.errors import ConfigError
    with pytest.raises(ConfigError, match=r"ucmfh needs dense text features .*--text-encoder.*--text TAG"):
        train(load("synth", overrides={"method": "ucmfh", **SMALL_UCMFH}), synth_cache.parent, "synth", progress=False)


@pytest.mark.parametrize("method", ["ccah", "ucmfh"])
def test_a_code_depends_on_its_own_item_only(method, quality_cache, clip_like_cache):
    """CCAH's official code builds the text graph over the evaluation batch, and UCMFH's hashes a
    query from both its modalities; here a code is the same whatever it is hashed with, and
    each modality is hashed alone."""
    import torch

    from cfrh_train.data import load_cache
    from cfrh_train.methods import build
    dataset, cache_dir, small = (("synth", quality_cache, SMALL_CCAH) if method == "ccah"
                                 else ("cliplike", clip_like_cache, SMALL_UCMFH))
    data = load_cache(cache_dir, dataset, None, None)
    img, txt = (torch.from_numpy(x) for x in data.rows(data.split["train"][:40]))
    model = build(method, load(dataset, overrides={"method": method, **small}), img.shape[1], txt.shape[1],
                  data.text_kind)
    model.fit(img, txt)
    model.eval()
    whole_i, whole_t = model.encode(img, txt)
    part_i, part_t = model.encode(img[5:9], txt[5:9])
    torch.testing.assert_close(part_i, whole_i[5:9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part_t, whole_t[5:9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode(img=img[5:9])[0], part_i)  # the image alone, no text needed
    torch.testing.assert_close(model.encode(txt=txt[5:9])[1], part_t)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ccah", "ucmfh"])
def test_new_peers_resume_identically_and_export_to_the_search_index(method, quality_cache, clip_like_cache, tmp_path,
                                                                     monkeypatch):
    import numpy as np

    from cfrh_search.index import Index
    from cfrh_search.queries import Queries
    dataset, cache_dir, small = (("synth", quality_cache, SMALL_CCAH) if method == "ccah"
                                 else ("cliplike", clip_like_cache, SMALL_UCMFH))
    config = load(dataset, overrides={"method": method, **small, "epochs": 4, "eval_every": 2})
    whole = train(config, cache_dir, dataset, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoints(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(config, cache_dir, dataset, progress=False, checkpoint=ckpt)
    resumed = train(config, cache_dir, dataset, progress=False, checkpoint=ckpt)
    assert resumed["result"]["metrics"] == whole["result"]["metrics"]
    np.testing.assert_array_equal(resumed["codes"]["database_text"], whole["codes"]["database_text"])
    folder = exported_run(config, cache_dir, dataset, tmp_path / "runs")
    index = Index(folder / "index")
    codes = np.load(folder / "codes.npz")
    data_rows = codes["query_index"][:3]
    from cfrh_train.data import load_cache
    data = load_cache(cache_dir, dataset, None, None)
    img, txt = data.rows(data_rows)
    from cfrh.codes import binarize
    got_i, got_t = (binarize(c) for c in Queries(index).hash(image=img, text=txt))
    np.testing.assert_array_equal(got_i, codes["query_image"][:3])  # the index hashes as the run did
    np.testing.assert_array_equal(got_t, codes["query_text"][:3])
    assert len(index.search(got_t[:1], "image", 5)[0]) == 5


def test_ucmfh_takes_the_caches_text_embeddings_and_the_table_skips_it_without(synth_dir, synth_cache, tmp_path):
    """`cfrh-train --method ucmfh` and `make table METHODS=… ucmfh` find the cache's CLIP text
    embeddings by themselves; a cache without them gives no UCMFH row and says how to make them."""
    import shutil

    from conftest import features

    from cfrh_train.missing_runs import ensure_runs
    notes = []
    shutil.copytree(synth_cache, tmp_path / "bow" / "synth")
    counts = ensure_runs(["synth"], ["ucmfh"], [16], [0], tmp_path / "bow", tmp_path / "runs", device="cpu",
                         progress=False, log=notes.append)
    assert counts == {"reused": 0, "trained": 0} and "--text-encoder" in notes[0], notes
    report = features("synth", synth_dir, tmp_path / "c", chunk_rows=64, text_encoder=True)
    config = load("synth", overrides={"method": "ucmfh", **SMALL_UCMFH, "epochs": 1, "eval_every": 1,
                                      "fusion_heads": 1})
    result = train(config, tmp_path / "c", "synth", progress=False)["result"]
    assert result["text"] == {"input": report.encoder_tag, "kind": "dense"}
