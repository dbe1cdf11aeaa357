#!/usr/bin/env bash
# Set up the engine (in .venv) and enhance the bundled example half-maps, then evaluate the result.
# Outputs go to demo_output/ in the repository (DEMO_OUT to put them elsewhere).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_engine_env.sh "$ROOT/.venv" "plots,train"
OUT="${DEMO_OUT:-$ROOT/demo_output}"
mkdir -p "$OUT"
.venv/bin/deepemhancer -i examples/half1.mrc -i2 examples/half2.mrc -o "$OUT/enhanced.mrc" \
    --confidence "$OUT/confidence.mrc" --force
.venv/bin/deepemhancer evaluate --half1 examples/half1.mrc --half2 examples/half2.mrc \
    --enhanced "$OUT/enhanced.mrc" --confidence "$OUT/confidence.mrc" --model examples/1HPX.pdb.gz \
    --outdir "$OUT/evaluation"
echo
echo "Enhanced map: $OUT/enhanced.mrc (provenance: enhanced.json, half-map FSC: enhanced_fsc.tsv)"
echo "Confidence map: $OUT/confidence.mrc (0..1: how well the two halves reproduce the enhanced density)"
echo "Plots and metrics: $OUT/evaluation/ ($(cd "$OUT/evaluation" && ls *.png *.tsv 2>/dev/null | tr '\n' ' '))"
