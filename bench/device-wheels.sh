#!/usr/bin/env bash
# Here, on a machine that reaches the package index: the wheels that the lent GPU machine lacks
# (bench/device-wheels.txt), built for its Python 3.12, into .whl/ (git-ignored; the device call
# carries it). Then, in one device call: bash bench/device.sh (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  platforms+=(--platform "$p")
done
rm -rf .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl -r bench/device-wheels.txt
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/ (carry it: carry=[\".whl\"])"
