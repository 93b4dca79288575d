"""The whole path from Python, as a notebook runs it: data → cache → train → load → search.

    python examples/notebook.py [WORKDIR]

It writes a small demo dataset (no download) and uses a tiny random image encoder, so it runs
anywhere in a minute; give your own dataset and ``model="ViT-B-32", pretrained="openai"`` for
real figures.
"""

import sys
from pathlib import Path

import cfrh_api as cfrh
from cfrh_cache.readers.synth import make_synth

work = Path(sys.argv[1] if len(sys.argv) > 1 else "notebook-demo")
data = make_synth(work / "data", n=300, n_labels=5, seed=0, size=64)      # 300 image–tag pairs
cfrh.build_cache("synth", data, work / "cache", model="cfrh-tiny-vit", pretrained="none", workers=0, progress=False)

cache = cfrh.open_cache("synth", work / "cache")                          # the arrays a method trains on
print("features", cache.image.shape, "labels", cache.labels.shape, "train rows", cache.split["train"].size)

run = cfrh.train("synth", work / "cache", work / "runs", bits=16, device="cpu")   # CFRH, selected on validation
print("mAP@50 I→T", round(run.metrics["i2t"]["map@50"], 3), "T→I", round(run.metrics["t2i"]["map@50"], 3))
print("database codes", run.codes["database_image"].shape)

again = cfrh.load_run(run.folder)                                         # a run folder, read back
search = cfrh.open_search(again.folder, work / "cache", device="cpu")      # its index, exported on first use
word = search.index.meta["vocabulary"][0]
for hit in search.text(word, k=3):                                        # a text query → images
    print(hit["row"], hit["distance"], hit["labels"])
print(search.row(7, k=3, modality="image")[0]["row"])                     # a cache row's image → texts
