#!/usr/bin/env bash
# On a lent GPU machine, from the repository root, in one call: the tests marked cuda, then the
# GPU set of the benchmark (make bench-gpu's sections). There, python3 holds torch with CUDA; the
# rest comes as the wheels of bench/device-wheels.sh, carried in .whl/. Files go to $OUT (the
# device tool's folder that comes back), else bench/device-out.
# Each step has its own time limit (140 s, 430 s: with the install, the whole script stays under
# the device tool's 600 s a call), so a slow step cannot eat the others' time; the results JSON is
# rewritten after every row, so a step stopped at its limit keeps what it measured.
# Dry run on a CPU machine (its own packages, no wheels):
#   WHEELS= PY=.venv/bin/python TEST_ARGS="--cuda-device cpu" BENCH_ARGS=--dry-run bash bench/device.sh
set -uo pipefail
PY=${PY:-python3}
WHEELS=${WHEELS-.whl}
out=${OUT:-bench/device-out}
mkdir -p "$out"
if [ -n "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "device.sh: the carried wheels did not install (make them with bench/device-wheels.sh)"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "device.sh: WHEELS is empty: using $PY's own packages"
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 CFRH_COMMIT=${CFRH_COMMIT:-unknown}
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } \
  | tee "$out/gpu.txt"
"$PY" -c "import cfrh_cache.pipeline, cfrh_train.tune, cfrh_search.index, open_clip, zarr, optuna; print('imports: ok')" \
  || exit 1
timeout "${TESTS_S:-140}" "$PY" -m pytest -q -p no:cacheprovider -rs -m cuda tests/test_cuda.py ${TEST_ARGS:-} 2>&1 \
  | tee "$out/cuda-tests.log"
timeout "${BENCH_S:-430}" "$PY" bench/run.py --set gpu --out "$out/results-gpu.json" ${BENCH_ARGS:-} 2>&1 \
  | grep -v "^\[I " | tee "$out/bench-gpu.log"
echo "device.sh: done; files in $out: $(ls "$out" | tr '\n' ' ')"
