#!/usr/bin/env bash
# One short call on a lent GPU machine, for the GPU figures of benchmarks/results/speed_gpu.md:
#   1. the engine's `gpu` tests;
#   2. benchmarks/speed.py on CUDA with the shipped weights and every CPU core (128^3, 256^3 with the
#      legacy setting beside it, 384^3, the resampled map).
# The fp16 null response is measured by the first run and cached (DEEPEMHANCER_CACHE) for the others,
# as it is for a user after the first run. Needs .whl/ (an mrcfile wheel for the machine's Python)
# carried: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=420). Results under $OUT.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
PY=${PY:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/check.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export DEEPEMHANCER_CACHE=${DEEPEMHANCER_CACHE:-/tmp/deepemhancer-cache}
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
echo "== gpu tests"
timeout "${TESTS_S:-120}" $PY -m pytest deepemhancer_engine -m gpu -q -p no:cacheprovider -rA 2>&1 | tail -25
echo "== speed"
timeout "${SPEED_S:-270}" $PY benchmarks/speed.py --device cuda --sizes 128 256 384 --legacy-max 256 \
    --fp32-sizes --sweep --out "$OUT/speed_gpu.md"
echo "rc $?"
