"""``make table``: rendered from run folders made here, published rows read from the CSV."""

import csv
import json
import statistics

import pytest
from conftest import fake_run
from typer.testing import CliRunner

from cfrh.fsio import sha256_file
from cfrh_cli import app
from cfrh_train.missing_runs import ensure_runs
from cfrh_train.results import collect_runs
from cfrh_train.rows import PUBLISHED, build_blocks, read_published
from cfrh_train.table import make_table


@pytest.fixture
def fake_runs(tmp_path):
    runs = tmp_path / "runs"
    values = {("cfrh", 0): 0.80, ("cfrh", 1): 0.84, ("jdsh", 0): 0.83, ("jdsh", 1): 0.83}
    for (method, seed), v in values.items():
        for bits in (16, 32):
            fake_run(runs, "mirflickr", method, bits, seed, {"i2t": v + bits / 1000, "t2i": v - 0.1},
                     {"i2t": v / 2, "t2i": v / 3})
    return runs


def section(text: str, start: str, stop: str | None = None) -> str:
    part = text.split(start, 1)[1]
    return part.split(stop, 1)[0] if stop else part


def test_bundled_published_csv_is_the_recorded_copy():
    """The CSV is a copy of the team's reference: its sha256 is recorded beside it, so the copy
    changes only deliberately (with the record)."""
    recorded = next(line.split()[1] for line in (PUBLISHED.parent / "README.md").read_text().splitlines()
                    if line.strip().startswith("sha256 "))
    assert sha256_file(PUBLISHED) == recorded


def test_rows_are_mean_std_over_seeds_and_best_is_bold(fake_runs):
    out = make_table(fake_runs)
    md = out["markdown"].read_text()
    block = section(md, "### mAP@50 · mirflickr", "###")
    row = lambda name: next(line for line in block.splitlines() if line.startswith(f"| {name} ("))
    cfrh_i2t_32 = [0.80 + 0.032, 0.84 + 0.032]
    expected = f"{statistics.fmean(cfrh_i2t_32):.3f} ± {statistics.stdev(cfrh_i2t_32):.3f}"
    cells = row("cfrh").split("|")[2:-1]  # I→T 16, I→T 32, T→I 16, T→I 32
    assert cells[1].strip() == expected and not cells[1].strip().startswith("**")
    # jdsh: 0.83 (mean) beats cfrh's 0.82 in every column, so it is the bold one
    assert all(c.strip().startswith("**") for c in row("jdsh").split("|")[2:-1])
    assert row("cfrh").startswith("| cfrh (2 seeds)")


def test_published_rows_come_from_the_csv_with_their_backbone(fake_runs):
    md = make_table(fake_runs)["markdown"].read_text()
    with open(PUBLISHED, newline="") as f:
        djsrh = {(r["direction"], int(r["bits"])): float(r["map"]) for r in csv.DictReader(f)
                 if r["method"] == "DJSRH" and r["dataset"] == "mirflickr" and r["metric"] == "map@50"}
    block = section(md, "### mAP@50 · mirflickr", "##")
    line = next(x for x in block.splitlines() if x.startswith("| DJSRH · published · AlexNet"))
    assert [float(c) for c in line.split("|")[2:-1]] == [djsrh[("I2T", 16)], djsrh[("I2T", 32)],
                                                        djsrh[("T2I", 16)], djsrh[("T2I", 32)]]
    # mAP@all rows of the UCCH table sit only in the mAP@all block
    assert "UCCH · published" in section(md, "## mAP@all") and "UCCH · published" not in section(md, "## mAP@50", "## mAP@all")


def test_a_column_never_mixes_metrics(fake_runs, tmp_path):
    published = tmp_path / "pub.csv"
    published.write_text("method,dataset,direction,bits,map,metric,image_backbone,source\n"
                         "X,mirflickr,I2T,16,.777,map@50,VGG,paper A\n"
                         "X,mirflickr,I2T,16,.111,map@all,VGG,paper B\n")
    results = collect_runs(fake_runs)
    blocks = build_blocks(results, read_published(published))
    assert {b.metric for b in blocks} == {"map@50", "map@all"}
    for b in blocks:
        allowed = {round(r["metrics"][d][b.metric], 10) for r in results for d in ("i2t", "t2i")}
        for row in b.rows:
            for (d, bits), cell in row.cells.items():
                if row.published:
                    assert cell.mean == {"map@50": 0.777, "map@all": 0.111}[b.metric]
                elif cell.n == 1:
                    assert round(cell.mean, 10) in allowed
        assert b.sources == ["paper A" if b.metric == "map@50" else "paper B"]


def test_bad_published_csv_names_file_and_line(tmp_path):
    bad = tmp_path / "pub.csv"
    bad.write_text("method,dataset,direction,bits,map,metric,image_backbone,source\nX,mir,I2T,sixteen,.5,map@50,V,S\n")
    with pytest.raises(ValueError, match=r"pub\.csv, line 2: .*sixteen"):
        read_published(bad)
    bad.write_text("method,dataset,bits\nX,mir,16\n")
    with pytest.raises(ValueError, match=r"pub\.csv: missing columns"):
        read_published(bad)


def test_figures_latex_and_protocol_line(fake_runs):
    out = make_table(fake_runs)
    names = sorted(p.name for p in out["figures"])
    assert names == ["mirflickr-djsrh-s0_16bit_pr.png", "mirflickr-djsrh-s0_32bit_pr.png",
                     "mirflickr-djsrh-s0_map50_vs_bits.png"]
    assert all(p.stat().st_size > 5000 for p in out["figures"])
    md = out["markdown"].read_text()
    last = md.strip().splitlines()[-1]
    assert last.startswith("- mirflickr: split djsrh (seed 0); image features ViT-B-32__openai; text dataset (bow); "
                           "2,000 queries, 18,015 database")
    assert "never on the queries" in last
    tex = out["latex"].read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\textbf{" in tex and "$\\pm$" in tex


@pytest.mark.slow
def test_trains_what_is_missing_then_reuses(synth_cache, tmp_path):
    """Real run folders on the demo cache: the second call trains nothing; a changed config retrains."""
    runs = tmp_path / "runs"
    kw = dict(cache_dir=synth_cache.parent, runs_dir=runs, device="cpu", progress=False, log=lambda m: None)
    first = ensure_runs(["synth"], ["lsh", "random"], [8, 16], [0, 1], **kw)
    assert first == {"trained": 8, "reused": 0}
    assert ensure_runs(["synth"], ["lsh", "random"], [8, 16], [0, 1], **kw) == {"trained": 0, "reused": 8}
    stale = runs / "synth" / "lsh" / "8bit" / "seed0" / "result.json"
    result = json.loads(stale.read_text())
    result["inputs"]["config"]["topk"] = 10  # as if trained with another config
    stale.write_text(json.dumps(result))
    assert ensure_runs(["synth"], ["lsh"], [8], [0], **kw) == {"trained": 1, "reused": 0}
    out = make_table(runs)
    md = out["markdown"].read_text()
    lsh = [json.loads((runs / "synth" / "lsh" / "16bit" / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
    values = [r["metrics"]["t2i"]["map@all"] for r in lsh]
    block = section(md, "### mAP@all · synth", "##")
    row = next(line for line in block.splitlines() if line.startswith("| lsh (2 seeds)"))
    cell = row.split("|")[-2].strip().removesuffix(" †").strip("*")  # † where its gap to the best is not significant
    assert cell == f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
    assert "randomly initialised encoder" in md


def test_rerank_rows_are_exported_and_scored_on_request(synth_cache, tmp_path):
    runs = tmp_path / "runs"
    kw = dict(cache_dir=synth_cache.parent, runs_dir=runs, device="cpu", progress=False, log=lambda m: None)
    assert ensure_runs(["synth"], ["lsh"], [16], [0], **kw) == {"trained": 1, "reused": 0}
    folder = runs / "synth" / "lsh" / "16bit" / "seed0"
    assert not (folder / "index").exists()
    args = ["table", "--datasets", "synth", "--methods", "lsh", "--bits", "16", "--seeds", "0", "--rerank", "40",
            "--device", "cpu", "--cache-dir", str(synth_cache.parent), "--runs-dir", str(runs), "--no-progress"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "0 trained, 1 reused" in out.output  # the run's model is exported: nothing is trained again
    rr = json.loads((folder / "result.json").read_text())["rerank"]
    assert rr["candidates"] == 40 and (folder / "index" / "index.json").is_file()
    md = make_table(runs, figures=False)["markdown"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| lsh + re-rank top-40 (1 seed)"))
    assert row.split("|")[2].strip().strip("*") == f"{rr['i2t']['map@50_reranked']:.3f}"