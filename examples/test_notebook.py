"""The notebook example runs from start to end and prints what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_notebook_example_runs_the_whole_path(tmp_path):
    script = Path(__file__).with_name("notebook.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("features (300, ") and "mAP@50 I→T" in lines[1]
    assert lines[2] == "database codes (270, 16)" and len(lines) == 7
    assert (tmp_path / "runs" / "synth" / "cfrh" / "16bit" / "seed0" / "index" / "index.json").is_file()
