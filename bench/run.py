"""``make bench`` and ``make bench-gpu``: one driver, two sets of sections.

- ``--set cpu`` (``cpu.py``, the default): speed and memory on a CPU machine, as ratios against
  baselines measured in the same run; writes ``bench/results.json``.
- ``--set gpu`` (``gpu.py``): every GPU path (AMP encoding, training and evaluation on ``cuda``,
  faiss on the GPU where installed); writes ``bench/results-gpu.json`` with the device named.
  It refuses to run without a CUDA device, except with ``--dry-run``.

``--quick`` runs every section at toy sizes (a few minutes on 2 cores); ``--dry-run`` is the same
for the GPU set on whatever device there is, so a GPU's minutes go to measuring, not debugging.
The JSON is rewritten after every row: a run stopped at a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cpu
import gpu
import torch
from report import print_table

from cfrh import __version__
from cfrh.devices import resolve_device
from cfrh.errors import ConfigError

SETS = {"cpu": cpu.sections, "gpu": gpu.sections}
OUT = {"cpu": "bench/results.json", "gpu": "bench/results-gpu.json"}


def machine(dev: torch.device) -> dict:
    """What the figures were measured on, and with which code."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    commit = commit or os.environ.get("CFRH_COMMIT")  # a copy of the tree without its .git (a lent GPU machine)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "torch": torch.__version__, "cfrh": __version__, "commit": commit, "cpu_cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"}


class Results:
    """The results file, rewritten whole (temp file, rename) after every row."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data = path, head
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def put(self, section: str, value) -> None:
        """A section's whole result (its rows, or its one record)."""
        self.data[section] = value
        self.save()

    def append(self, section: str, row: dict) -> None:
        """One row of a section that yields its rows as it measures them."""
        self.data.setdefault(section, []).append(row)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=list(SETS), default="cpu", help="which sections: cpu (default) or gpu")
    parser.add_argument("--out", default=None, help="the JSON file (default: bench/results.json, or "
                                                    "bench/results-gpu.json for --set gpu)")
    parser.add_argument("--quick", action="store_true", help="every section at toy sizes: a smoke run")
    parser.add_argument("--dry-run", action="store_true", help="--quick on whatever device there is (for --set gpu "
                                                               "on a CPU: checks the script before a GPU runs it)")
    parser.add_argument("--only", default="", help="run only these sections (space-separated), e.g. 'search ann'")
    parser.add_argument("--device", default="auto", help="the GPU set's device (default auto)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="the GPU set's time budget: stage 2 predicts the whole runs that would end past it "
                             "instead of running them (default 400 s, unlimited at toy sizes)")
    parser.add_argument("--bits", default="16 32 64 128")
    parser.add_argument("--train-bits", default="16 32 64 128")
    parser.add_argument("--model", default="ViT-B-32", help="the CPU set's stage 1 model")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    args.toy = args.quick or args.dry_run
    budget = args.budget_s if args.budget_s is not None else (float("inf") if args.toy else 400.0)
    args.deadline = time.monotonic() + budget
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.set == "gpu" and not args.dry_run and device.type != "cuda":
        parser.error(f"--set gpu measures a CUDA device and torch {torch.__version__} sees none here; "
                     "run `bench/run.py --set gpu --dry-run` to check the script on this machine")
    sections = SETS[args.set](args)
    only = args.only.split() if args.only else list(sections)
    unknown = sorted(set(only) - set(sections))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; the {args.set} sections are "
                     f"{' '.join(sections)}")
    head = {"set": args.set, "sizes": "toy" if args.toy else "full", "machine": machine(device)}
    results = Results(Path(args.out or OUT[args.set]), head)
    for name in only:
        t = time.perf_counter()
        made = sections[name]()
        if inspect.isgenerator(made):
            for row in made:
                results.append(name, row)
                print(json.dumps({name: row}), file=sys.stderr, flush=True)
        else:
            results.put(name, made)
        results.data.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        results.save()
    print_table(results.data)
    print(f"written: {results.path}")


if __name__ == "__main__":
    main()
