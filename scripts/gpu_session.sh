#!/usr/bin/env bash
# One prepared call on a lent GPU machine (see the device notes in docs/design.md):
#   1. simulate 64^3 training pairs on the machine's CPUs (train split only, carried in .devdata/),
#      while the GPU runs the engine's gpu tests and the speed benchmark (pinned to 2 CPU cores);
#   2. train the paper's 32/64/128 U-Net (tightTarget) and, beside it, the compact 16/32/64 one on
#      64^3 cubes with bf16 autocast;
#   3. fine-tune wideTarget, highRes and maskNormalized from the paper-size tightTarget.
# Everything is written under $OUT (at most 8 files come back): one .pt per paper-size model and
# misc.tar (cards, compact weights, logs, histories, loss curves, speed report), refreshed every 30 s
# so that a run cut short still returns its latest exports.
#
# Times are seconds after the start; override with SIM_END, A_END, END. Needs .whl/ (gemmi, mrcfile
# wheels for the machine's Python) and .devdata/structures/ (list.txt + models) carried.
set -u
T0=$(date +%s)
SIM_END=${SIM_END:-130}
A_END=${A_END:-420}
END=${END:-530}
PAIRS=${PAIRS:-4}
SIM_WORKERS=${SIM_WORKERS:-14}
OUT=${OUT:-/tmp/gpu_session_out}
W=${WORK:-/tmp/gpu_session}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EPOCH_STEPS=${EPOCH_STEPS:-150}
LIST=${LIST:-.devdata/structures/list.txt}
mkdir -p "$OUT" "$W/exports" "$W/logs" "$W/compact" "$W/runs" "$W/speed"
exec > >(tee -a "$OUT/session.log") 2>&1
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(el) s] $*"; }
alive() { for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
hours_until() { $PY -c "import sys; print(max(0.001, (${1} - ($(date +%s) - $T0)) / 3600))"; }

if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { say "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 DEEPEMHANCER_CACHE=$W/cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0)); import os; print('cpus', os.cpu_count())"

pack() {  # atomic copies into $OUT: paper-size weights one file each, the rest in misc.tar
    for f in "$W"/exports/*.pt; do
        [ -e "$f" ] || continue
        cp "$f" "$OUT/.tmp" && mv "$OUT/.tmp" "$OUT/$(basename "$f")"
    done
    (cd "$W" && find compact logs speed exports runs -type f \( -name '*.json' -o -name '*.png' -o -name '*.log' \
        -o -name '*.md' -o -name '*.jsonl' -o -path 'compact/*' \) 2>/dev/null | tar -cf "$OUT/.misc.tmp" -T -)
    mv "$OUT/.misc.tmp" "$OUT/misc.tar"
}

# 1. data on the CPUs (cores 2..), gpu tests and speed on the GPU (cores 0-1)
DEADLINE=$(date -u -d @$((T0 + SIM_END)) +%Y-%m-%dT%H:%M:%S+00:00)
CPUS=$($PY -c "import os; print(os.cpu_count())")
PIN_SIM=""; PIN_GPU=""
if command -v taskset >/dev/null && [ "$CPUS" -ge 4 ]; then PIN_SIM="taskset -c 2-$((CPUS - 1))"; PIN_GPU="taskset -c 0,1"; fi
say "simulating ($PAIRS pairs per structure, $SIM_WORKERS workers) until $DEADLINE"
$PIN_SIM $PY -m deepemhancer_engine simulate --out "$W/data" --structures "$LIST" \
    --pairs-per-structure "$PAIRS" --crop 64 --seed 500000 --workers "$SIM_WORKERS" --until "$DEADLINE" \
    > "$W/logs/simulate.log" 2>&1 &
SIM=$!
say "gpu tests"
timeout 90 $PIN_GPU $PY -m pytest deepemhancer_engine -m gpu -q -p no:cacheprovider > "$W/logs/gpu_tests.log" 2>&1
say "gpu tests rc $?: $(tail -1 "$W/logs/gpu_tests.log")"
mkdir -p "$W/speed"
$PY -c "from deepemhancer_engine.testing import make_random_weights as m
m('$W/speed/w', 'tightTarget', (32, 64, 128), note='RANDOM WEIGHTS, paper-size, for speed figures only')" > /dev/null
timeout $((SIM_END - $(el) + 20)) $PIN_GPU $PY benchmarks/speed.py --device cuda --weights "$W/speed/w/tightTarget.pt" \
    --sizes 256 384 --legacy-max 256 --fp32-sizes --sweep --no-resampled \
    --out "$W/speed/speed_gpu.md" --workdir "$W/speed/work" > "$W/logs/speed.log" 2>&1
say "speed rc $?"
cp "$W/speed/work/children.log" "$W/logs/speed_children.log" 2>/dev/null; rm -rf "$W/speed/work"
pack
wait $SIM
say "simulation done: $(tail -1 "$W/logs/simulate.log")"
say "shards: $(ls "$W/data" | wc -l)"

# 2. train (paper-size and compact, side by side)
common=(--data "$W/data" --crop 64 --p-small 0 --batch 8 --amp --epoch-steps "$EPOCH_STEPS"
        --val-cubes 32 --noise-fraction 0.3 --export-every 1 --half-weights --device "$DEVICE")
$PY -m deepemhancer_engine train "${common[@]}" --filters 32,64,128 --workers 7 --run-dir "$W/runs/paper" \
    --hours "$(hours_until "$A_END")" --export "$W/exports/tightTarget.pt" \
    > "$W/logs/train_paper.log" 2>&1 &
PA=$!
$PY -m deepemhancer_engine train "${common[@]}" --filters 16,32,64 --workers 5 --run-dir "$W/runs/compact" \
    --hours "$(hours_until "$END")" --export "$W/compact/tightTarget.pt" \
    > "$W/logs/train_compact.log" 2>&1 &
PB=$!
while alive $PA; do sleep 30; pack; say "paper: $(grep -h 'epoch' "$W/logs/train_paper.log" | tail -1)"; done
say "paper-size tightTarget done"

# 3. fine-tune the other three from it
ft=(--lr 5e-4 --filters 32,64,128 --workers 3 --init "$W/runs/paper/best.pt")
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name wideTarget --target wideTarget \
    --run-dir "$W/runs/wide" --hours "$(hours_until "$END")" --export "$W/exports/wideTarget.pt" \
    > "$W/logs/train_wide.log" 2>&1 &
PW=$!
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name highRes --max-resolution 4 \
    --run-dir "$W/runs/highres" --hours "$(hours_until "$END")" --export "$W/exports/highRes.pt" \
    > "$W/logs/train_highres.log" 2>&1 &
PH=$!
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name maskNormalized --normalization mask \
    --run-dir "$W/runs/mask" --hours "$(hours_until "$END")" --export "$W/exports/maskNormalized.pt" \
    > "$W/logs/train_mask.log" 2>&1 &
PM=$!
while alive $PB $PW $PH $PM; do sleep 20; pack; say "$(for f in "$W"/logs/train_*.log; do echo "$(basename "$f"): $(grep -h 'epoch' "$f" | tail -1 | cut -c1-150)"; done)"; done
pack
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null
for p in $PB $PW $PH $PM; do wait "$p"; say "pid $p exit $?"; done
pack
say "done"
ls -la "$OUT"
