#!/usr/bin/env bash
# GPU checks behind benchmarks/results/speed_gpu.md, on one CUDA GPU (at most 6.5 minutes):
#   1. the engine's `gpu` tests;
#   2. benchmarks/speed.py on CUDA with the shipped weights and every CPU core (128^3, 256^3 with the
#      legacy setting beside it, 384^3, the resampled map).
# The fp16 null response is measured by the first run and cached (DEEPEMHANCER_CACHE) for the others,
# as it is for a user after the first run.
#
# Usage: scripts/gpu_check.sh [OUTDIR]   (default OUTDIR: /tmp/deepemhancer-gpu-check)
# Writes OUTDIR/check.log and OUTDIR/speed_gpu.md (with its JSONL and PNG). Needs the engine's
# dependencies and pytest (pip install './packaging/engine[plots]' pytest); the engine is imported from this
# checkout. TESTS_S (default 120) and SPEED_S (default 270) limit the two steps, in seconds.
set -u
case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | cut -c3-; exit 0 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${1:-/tmp/deepemhancer-gpu-check}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
PY=${PY:-python3}
mkdir -p "$OUT" || exit 1
cd "$ROOT" || exit 1
exec > >(tee -a "$OUT/check.log") 2>&1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DEEPEMHANCER_CACHE=${DEEPEMHANCER_CACHE:-/tmp/deepemhancer-cache}
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
echo "== gpu tests"
timeout "${TESTS_S:-120}" $PY -m pytest deepemhancer_engine -m gpu -q -p no:cacheprovider -rA 2>&1 | tail -25
echo "== speed"
timeout "${SPEED_S:-270}" $PY benchmarks/speed.py --device cuda --sizes 128 256 384 --legacy-max 256 \
    --fp32-sizes --sweep --out "$OUT/speed_gpu.md"
echo "rc $?"
