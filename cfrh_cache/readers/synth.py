"""The offline demo dataset: real images drawn with Pillow, tag texts, multi-hot labels.

Each label is a visual concept (a shape in a colour of its own); an image shows one to three of
them at random places and sizes over a noisy, textured background. Its text draws a few words
from each present label's vocabulary plus noise words. The same pairs are written twice:

- ``mirflickr/mirflickr25k-{iall,yall,lall}.mat`` exactly as MIRFlickr ships (``IAll`` v7.3
  holding the decoded JPEG pixels, ``YAll`` BoW and ``LAll`` labels as v5), and
- ``manifest.csv`` with ``images/*.jpg``, the raw texts and the label names,

so both real readers run on it (and give the same image features: the pixels are the same).
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import math
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image, ImageDraw

from cfrh.errors import DataError
from cfrh.text import bag_of_words
from cfrh_cache.readers.base import Source, read_mat_trio

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "bar"]
HUES = ["red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue", "violet", "magenta", "rose"]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "pe", "da", "gi", "ho", "ju", "be", "fo"]
REFERENCE_N = 20015  # protocol sizes scale as on MIRFlickr, whose layout this mirrors


def label_concepts(n_labels: int) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(shape, colour name, RGB) per label: distinct hues, shapes cycling."""
    out, used = [], set()
    for k in range(n_labels):
        hue = k / n_labels
        rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 0.95))
        name = HUES[round(hue * len(HUES)) % len(HUES)]
        name = name if name not in used else f"{name}{k}"
        used.add(name)
        out.append((SHAPES[k % len(SHAPES)], name, rgb))
    return out


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES, size=3))


def make_synth(out: str | Path, n: int = 3000, n_labels: int = 12, seed: int = 0, size: int = 224) -> Path:
    """Write the demo dataset under ``out`` and return that folder."""
    if n < 50 or n_labels < 2:
        raise DataError(f"synth needs --n ≥ 50 and --labels ≥ 2 (got {n}, {n_labels})")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "mirflickr").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    concepts = label_concepts(n_labels)
    label_words = [[colour, shape] + [_word(rng) for _ in range(6)] for shape, colour, _ in concepts]
    noise_words = sorted({_word(rng) for _ in range(80)} - {w for ws in label_words for w in ws})
    names = [f"{colour}-{shape}" for shape, colour, _ in concepts]

    pixels = np.empty((n, size, size, 3), np.uint8)
    labels = np.zeros((n, n_labels), np.uint8)
    texts, rows = [], []
    for i in range(n):
        present = rng.choice(n_labels, size=rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]), replace=False)
        labels[i, present] = 1
        image = _draw(rng, [concepts[k] for k in present], size)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        (out / "images" / f"{i:06d}.jpg").write_bytes(buffer.getvalue())
        pixels[i] = np.asarray(Image.open(buffer).convert("RGB"))
        words = [w for k in present for w in rng.choice(label_words[k], size=rng.integers(1, 5), replace=False)]
        words += list(rng.choice(noise_words, size=rng.integers(1, 5), replace=False))
        rng.shuffle(words)
        texts.append(" ".join(words))
        rows.append((f"images/{i:06d}.jpg", texts[-1], ";".join(names[k] for k in sorted(present))))

    vocabulary = sorted({w for ws in label_words for w in ws} | set(noise_words))
    bow = bag_of_words(texts, vocabulary).toarray()
    # MATLAB order: IAll is H×W×3×N (h5py then sees N×3×W×H, as in the DJSRH files)
    write_mat73(out / "mirflickr" / "mirflickr25k-iall.mat", {"IAll": pixels.transpose(1, 2, 3, 0)})
    write_mat5(out / "mirflickr" / "mirflickr25k-yall.mat", {"YAll": bow})
    write_mat5(out / "mirflickr" / "mirflickr25k-lall.mat", {"LAll": labels})
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text", "labels"])
        writer.writerows(rows)
    meta = {"n": n, "labels": names, "vocabulary": vocabulary, "seed": seed, "size": size,
            "label_words": dict(zip(names, label_words))}
    (out / "synth.json").write_text(json.dumps(meta, indent=1))
    return out


def _draw(rng: np.random.Generator, concepts, size: int) -> Image.Image:
    base = rng.integers(150, 235, size=3)
    background = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    period = int(rng.integers(8, 24))  # a label-free texture: stripes in a random grey
    grey = tuple(int(v) for v in base - rng.integers(20, 50))
    for x in range(-size, size, period):
        if rng.random() < 0.5:
            draw.line([(x, 0), (x + size, size)], fill=grey, width=2)
    for shape, _, rgb in concepts:
        r = int(rng.integers(size // 10, size // 5))
        cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
        colour = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in rgb)
        _shape(draw, shape, cx, cy, r, colour, float(rng.uniform(0, math.pi)))
    return image


def _shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, colour, angle: float) -> None:
    def polygon(k: int, radii: list[float]):
        points = [(cx + radii[j % len(radii)] * math.cos(angle + 2 * math.pi * j / k),
                   cy + radii[j % len(radii)] * math.sin(angle + 2 * math.pi * j / k)) for j in range(k)]
        draw.polygon(points, fill=colour)

    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(3, r // 3))
    elif shape == "square":
        polygon(4, [r * 1.2])
    elif shape == "diamond":
        polygon(4, [r * 1.3, r * 0.7])
    elif shape == "triangle":
        polygon(3, [r * 1.2])
    elif shape == "star":
        polygon(10, [r * 1.2, r * 0.5])
    elif shape == "cross":
        w = max(3, r // 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    else:  # bar
        draw.rectangle([cx - r, cy - r // 4, cx + r, cy + r // 4], fill=colour)


def read(root: Path, image_layout: str | None = None) -> Source:
    """Read a folder written by ``make_synth`` through the MIRFlickr ``.mat`` reader."""
    root = Path(root)
    meta_path = root / "synth.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: file not found; write the demo data first: cfrh-cache synth --out {root}")
    meta = json.loads(meta_path.read_text())
    source = read_mat_trio(root / "mirflickr", "synth", "mirflickr25k", n=meta["n"], vocab=len(meta["vocabulary"]),
                           classes=len(meta["labels"]), reference_n=REFERENCE_N, image_layout=image_layout)
    source.files.append(meta_path)
    source.roles["texts"].append(meta_path)  # the vocabulary's words
    source.roles["labels"].append(meta_path)  # the label names
    source.label_names = meta["labels"]
    source.vocabulary = meta["vocabulary"]
    source.image_paths = [str((root / "images" / f"{i:06d}.jpg").resolve()) for i in range(meta["n"])]
    with open(root / "manifest.csv", encoding="utf-8", newline="") as f:  # the same pairs' raw texts
        source.texts = [row["text"] for row in csv.DictReader(f)]
    source.files.append(root / "manifest.csv")
    source.roles["raw"] = [root / "manifest.csv"]
    source.notes.append("synthetic demo data made by `cfrh-cache synth` (not a benchmark)")
    return source


# -- the MATLAB writers the demo needs (the tests use them too) ---------------------------------
MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 HDF5 schema 1.00 ."


def write_mat73(path: str | Path, variables: dict[str, np.ndarray], compression: str | None = "gzip") -> None:
    """Write variables as MATLAB does with ``save -v7.3``: HDF5 behind a 512-byte header, dims reversed.

    The demo data is written this way so that the real v7.3 reading path is exercised.
    A variable named "a/b" is written as field b of struct a.
    """
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in variables.items():
            value = np.asarray(value)
            data = value.transpose()
            # images (H×W×3×N in MATLAB) get one sample per chunk, as MATLAB's own v7.3 writer does
            chunks = (1, *data.shape[1:]) if value.ndim > 2 else (True if value.ndim == 2 else None)
            f.create_dataset(key, data=data, compression=compression if chunks else None, chunks=chunks)
            f[key].attrs["MATLAB_class"] = np.bytes_(_matlab_class(value.dtype))
    header = MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\x00"))


def _matlab_class(dtype: np.dtype) -> str:
    return {"f": "double" if dtype.itemsize == 8 else "single", "u": f"uint{dtype.itemsize * 8}",
            "i": f"int{dtype.itemsize * 8}", "b": "logical"}.get(dtype.kind, "double")


def write_mat5(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    """Write a MATLAB v5 file (``save -v7`` without compression), for demos and tests."""
    scipy.io.savemat(path, variables, do_compression=True)
