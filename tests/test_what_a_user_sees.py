"""What a user sees while it works and when it is done (issue #27): progress on stderr and
results on stdout, a LaTeX table that compiles as it is, notes that say numbers."""

import re

import pytest
from conftest import fake_run
from typer.testing import CliRunner

from cfrh_cli import app
from cfrh_train.table import _tex, make_table


def test_latex_uses_booktabs_labels_escapes_and_keeps_its_legend_inside(tmp_path):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate(((0.80, 0.81), (0.82, 0.79))):
        fake_run(runs, "mirflickr", "cfrh", 16, seed, {"i2t": a, "t2i": b}, {"i2t": a - 0.1, "t2i": b - 0.1})
    tex = make_table(runs, figures=False)["latex"].read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\hline" not in tex
    assert re.search(r"\\label\{tab:map-50-mirflickr-djsrh-seed-0\}", tex)
    for block in tex.split(r"\begin{table}")[1:]:
        assert block.count(r"\end{table}") == 1  # every note sits inside its table
    assert _tex("a_b & 50% #1 $x$ {y} ~z ^w \\") == (r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}z "
                                                     r"\textasciicircum{}w \textbackslash{}")


def test_markdown_notes_say_numbers_and_only_what_applies(synth_cache, tmp_path):
    from cfrh_train.missing_runs import ensure_runs
    runs = tmp_path / "runs"
    ensure_runs(["synth"], ["cfrh"], [8], [0], synth_cache.parent, runs, "cpu", False, log=lambda m: None)
    md = make_table(runs, figures=False)["markdown"].read_text()
    assert "Published rows:" not in md  # the demo dataset has no published figures
    assert "eval_every" not in md and re.search(r"evaluated every \d+ epochs", md)


def test_progress_goes_to_stderr_and_results_to_stdout(synth_cache, tmp_path):
    out = CliRunner().invoke(app, ["table", "--datasets", "synth", "--methods", "lsh", "--bits", "8", "--seeds", "0",
                                   "--device", "cpu", "--cache-dir", str(synth_cache.parent), "--runs-dir",
                                   str(tmp_path / "runs"), "--no-progress"])
    assert out.exit_code == 0
    assert "run 1 of 1: training lsh on synth" in out.stderr and "run 1 of 1" not in out.stdout
    assert "mAP@50 · synth" in out.stdout


def test_cache_info_prints_the_vocabulary_as_words(synth_cache):
    out = CliRunner().invoke(app, ["cache", "info", str(synth_cache)])
    line = next(line for line in out.stdout.splitlines() if line.startswith("vocabulary:"))
    assert "{" not in line and "first words:" in line and "size" in line


@pytest.mark.slow
def test_a_study_shows_its_trials_on_stderr(synth_cache, tmp_path):
    pytest.importorskip("optuna")
    out = CliRunner().invoke(app, ["tune", "--dataset", "synth", "--method", "cvh", "--bits", "8", "--trials", "2",
                                   "--device", "cpu", "--cache-dir", str(synth_cache.parent), "--runs-dir",
                                   str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    assert "trial 2/2" in out.stderr and "pruned" in out.stderr and "best val" in out.stderr
    assert "trial 2/2" not in out.stdout and "2 trials" in out.stdout
