#!/usr/bin/env bash
# Train the four shipped models on one CUDA GPU, from atomic models of the train split:
#   1. simulate 64^3 training pairs on the CPUs (data version --variety, default sim2: varied noise, voxel sizes,
#      masks, scale and offset, inputs conditioned as inference conditions them); meanwhile the GPU runs the engine's `gpu` tests and a
#      speed check (benchmarks/speed.py with random paper-size weights), pinned to two cores so that
#      they do not slow the simulation;
#   2. train the paper's 32/64/128 U-Net (tightTarget) and the compact 16/32/64 one side by side on
#      64^3 cubes with bf16 autocast (the compact one is the default model; it starts from the shipped
#      tightTarget weights unless --init-compact none);
#   3. fine-tune wideTarget, highRes and maskNormalized from the paper-size tightTarget, side by side;
#   4. measure the null response of each exported model (deepemhancer null-response).
# The shipped weights come from this script on one NVIDIA H200 with 16 CPU cores and the default times
# (about 9 minutes: 2 minutes of simulation, then training), plus a 3-minute resumption of the
# paper-size run. Running it again with the same folders continues: existing shards are kept and
# every run resumes from its checkpoint. Times count in seconds from the start of the script.
#
# Needs a GPU and the engine with its training extras and pytest (pip install './packaging/engine[train]' pytest);
# the engine is imported from this checkout. Usage: scripts/gpu_session.sh [options]; --help lists them.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Folders (made if missing; relative paths are taken from the current folder):
  --workdir DIR        parent of the four folders below (default: /tmp/deepemhancer-training)
  --data DIR           training shards from 'deepemhancer simulate' (default: WORKDIR/data)
  --runs DIR           one run folder per model: checkpoints, history, loss curve (default: WORKDIR/runs)
  --weights DIR        exported weights + model cards + null responses (default: WORKDIR/weights);
                       the paper-size tightTarget, which does not ship, goes to DIR/paper-size/
  --logs DIR           logs and the speed report (default: WORKDIR/logs)
Data:
  --variety V          data version of 'deepemhancer simulate' (default: sim2; sim1 is the shipped weights')
  --noise-cubes K      pure-noise cubes of the training: spectra (default) or blur (the shipped weights')
  --structures FILE    list of atomic models, one per line, relative to its folder (default:
                       ../shared/structures/split_train.txt beside the repository; models whose box
                       holds no 64^3 cube are skipped; the shipped weights used a list of the 380 that do)
  --pairs N            simulated pairs per structure (default: 4)
  --sim-workers N      simulation processes (default: 14)
Times, in seconds from the start of the script:
  --sim-end S          stop simulating (default: 130)
  --paper-end S        stop the paper-size tightTarget run and start the fine-tunes (default: 420)
  --end S              stop every run (default: 530)
Training:
  --init-compact PT    weights the compact tightTarget starts from (default: the shipped
                       deepemhancer_engine/weights/tightTarget.pt; none: from scratch)
  --device DEV         cuda, cpu or auto (default: cuda)
  --epoch-steps N      steps per validation epoch (default: 150)
Steps to skip:
  --no-simulate        train on the shards already in --data
  --no-checks          skip the gpu tests and the speed check
  --no-null            skip the null responses
Other:
  --python PY          Python interpreter (default: python3)
  -h, --help           this text
EOF
}

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

WORK=/tmp/deepemhancer-training
DATA="" RUNS="" WEIGHTS="" LOGS=""
STRUCTURES="$ROOT/../shared/structures/split_train.txt"
VARIETY=sim2 NOISE_CUBES=spectra INIT_COMPACT="$ROOT/deepemhancer_engine/weights/tightTarget.pt"
PAIRS=4 SIM_WORKERS=14 SIM_END=130 PAPER_END=420 END=530
DEVICE=cuda EPOCH_STEPS=150 PY=python3
SIMULATE=1 CHECKS=1 NULL=1
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --no-simulate) SIMULATE=0; shift; continue ;;
        --no-checks) CHECKS=0; shift; continue ;;
        --no-null) NULL=0; shift; continue ;;
        --workdir|--data|--runs|--weights|--logs|--structures|--pairs|--sim-workers|--sim-end|--paper-end|--end) ;;
        --variety|--noise-cubes|--init-compact) ;;
        --device|--epoch-steps|--python) ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "$1 needs a value (see --help)" >&2; exit 2; }
    case "$1" in
        --workdir) WORK=$(abspath "$2") ;;
        --data) DATA=$(abspath "$2") ;;
        --runs) RUNS=$(abspath "$2") ;;
        --weights) WEIGHTS=$(abspath "$2") ;;
        --logs) LOGS=$(abspath "$2") ;;
        --structures) STRUCTURES=$(abspath "$2") ;;
        --pairs) PAIRS=$2 ;;
        --variety) VARIETY=$2 ;;
        --noise-cubes) NOISE_CUBES=$2 ;;
        --init-compact) INIT_COMPACT=$2 ;;
        --sim-workers) SIM_WORKERS=$2 ;;
        --sim-end) SIM_END=$2 ;;
        --paper-end) PAPER_END=$2 ;;
        --end) END=$2 ;;
        --device) DEVICE=$2 ;;
        --epoch-steps) EPOCH_STEPS=$2 ;;
        --python) PY=$2 ;;
    esac
    shift 2
done
DATA=${DATA:-$WORK/data} RUNS=${RUNS:-$WORK/runs} WEIGHTS=${WEIGHTS:-$WORK/weights} LOGS=${LOGS:-$WORK/logs}

T0=$(date +%s)
mkdir -p "$DATA" "$RUNS" "$WEIGHTS/paper-size" "$LOGS" || exit 1
cd "$ROOT" || exit 1
exec > >(tee -a "$LOGS/gpu_training.log") 2>&1
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(el) s] $*"; }
alive() { for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
hours_until() { $PY -c "print(max(0.001, (${1} - ($(date +%s) - $T0)) / 3600))"; }
last_epoch() { grep -h 'epoch' "$1" 2>/dev/null | tail -1 | cut -c1-150; }

export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 DEEPEMHANCER_CACHE=${DEEPEMHANCER_CACHE:-$WORK/cache}
say "data $DATA, runs $RUNS, weights $WEIGHTS, logs $LOGS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import os, torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__,
'scipy', scipy.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0),
'cpus', os.cpu_count())" \
    || { say "the engine's dependencies are missing (pip install './packaging/engine[train]')"; exit 1; }

# 1. data on the CPUs (cores 2..); gpu tests and speed check on the GPU (cores 0-1)
CPUS=$($PY -c "import os; print(os.cpu_count())")
PIN_SIM="" PIN_GPU=""
if command -v taskset >/dev/null && [ "$CPUS" -ge 4 ]; then
    PIN_SIM="taskset -c 2-$((CPUS - 1))" PIN_GPU="taskset -c 0,1"
fi
SIM=""
if [ "$SIMULATE" = 1 ]; then
    DEADLINE=$(date -u -d @$((T0 + SIM_END)) +%Y-%m-%dT%H:%M:%S+00:00)
    SEED=500000; [ "$VARIETY" = sim1 ] || SEED=600000  # sim1: the shipped weights' seeds
    say "simulating $VARIETY ($PAIRS pairs per structure, $SIM_WORKERS workers) until $DEADLINE"
    $PIN_SIM $PY -m deepemhancer_engine simulate --out "$DATA" --structures "$STRUCTURES" \
        --pairs-per-structure "$PAIRS" --crop 64 --seed "$SEED" --variety "$VARIETY" --workers "$SIM_WORKERS" \
        --until "$DEADLINE" \
        > "$LOGS/simulate.log" 2>&1 &
    SIM=$!
fi
if [ "$CHECKS" = 1 ]; then
    say "gpu tests"
    timeout 90 $PIN_GPU $PY -m pytest deepemhancer_engine -m gpu -q -p no:cacheprovider > "$LOGS/gpu_tests.log" 2>&1
    say "gpu tests rc $?: $(tail -1 "$LOGS/gpu_tests.log")"
    $PY -c "from deepemhancer_engine.testing import make_random_weights as m
m('$WORK/speed/w', 'tightTarget', (32, 64, 128), note='RANDOM WEIGHTS, paper-size, for speed figures only')" > /dev/null
    # the speed check only fills the GPU while the CPUs simulate: it stops shortly after the simulation
    timeout $(( SIM_END - $(el) > 40 ? SIM_END - $(el) + 20 : 60 )) $PIN_GPU $PY benchmarks/speed.py --device cuda \
        --weights "$WORK/speed/w/tightTarget.pt" --sizes 256 384 --legacy-max 256 --fp32-sizes --sweep \
        --no-resampled --out "$LOGS/speed_gpu.md" --workdir "$WORK/speed/work" > "$LOGS/speed.log" 2>&1
    say "speed check rc $?"
    cp "$WORK/speed/work/children.log" "$LOGS/speed_children.log" 2>/dev/null; rm -rf "$WORK/speed/work"
fi
if [ -n "$SIM" ]; then
    wait "$SIM"
    say "simulation done: $(tail -1 "$LOGS/simulate.log")"
fi
say "shards: $(ls "$DATA" | wc -l)"

# 2. tightTarget: paper-size and compact side by side
common=(--data "$DATA" --crop 64 --p-small 0 --batch 8 --amp --epoch-steps "$EPOCH_STEPS"
        --val-cubes 32 --noise-fraction 0.3 --noise-cubes "$NOISE_CUBES" --export-every 1 --half-weights
        --device "$DEVICE")
INIT=(); [ "$INIT_COMPACT" = none ] || INIT=(--init "$INIT_COMPACT" --lr 5e-4)
$PY -m deepemhancer_engine train "${common[@]}" --filters 32,64,128 --workers 7 --run-dir "$RUNS/paper" \
    --hours "$(hours_until "$PAPER_END")" --export "$WEIGHTS/paper-size/tightTarget.pt" \
    > "$LOGS/train_paper.log" 2>&1 &
PA=$!
$PY -m deepemhancer_engine train "${common[@]}" "${INIT[@]}" --filters 16,32,64 --workers 5 --run-dir "$RUNS/compact" \
    --hours "$(hours_until "$END")" --export "$WEIGHTS/tightTarget.pt" \
    > "$LOGS/train_compact.log" 2>&1 &
PB=$!
while alive $PA; do sleep 30; say "paper: $(last_epoch "$LOGS/train_paper.log")"; done
wait $PA; say "paper-size tightTarget done (exit $?)"
[ -e "$RUNS/paper/best.pt" ] || { say "no paper-size best.pt: no fine-tunes"; wait $PB; exit 1; }

# 3. the other three models, fine-tuned from the paper-size tightTarget side by side
ft=(--lr 5e-4 --filters 32,64,128 --workers 3 --init "$RUNS/paper/best.pt")
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name wideTarget --target wideTarget \
    --run-dir "$RUNS/wide" --hours "$(hours_until "$END")" --export "$WEIGHTS/wideTarget.pt" \
    > "$LOGS/train_wide.log" 2>&1 &
PW=$!
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name highRes --max-resolution 4 \
    --run-dir "$RUNS/highres" --hours "$(hours_until "$END")" --export "$WEIGHTS/highRes.pt" \
    > "$LOGS/train_highres.log" 2>&1 &
PH=$!
$PY -m deepemhancer_engine train "${common[@]}" "${ft[@]}" --name maskNormalized --normalization mask \
    --run-dir "$RUNS/mask" --hours "$(hours_until "$END")" --export "$WEIGHTS/maskNormalized.pt" \
    > "$LOGS/train_mask.log" 2>&1 &
PM=$!
while alive $PB $PW $PH $PM; do
    sleep 20
    for f in "$LOGS"/train_*.log; do say "$(basename "$f" .log): $(last_epoch "$f")"; done
done
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null
RC=0
for p in $PB $PW $PH $PM; do wait "$p"; r=$?; say "pid $p exit $r"; [ "$r" = 0 ] || RC=1; done

# 4. null responses of the exported models (measured on the CPU, as the engine uses them)
if [ "$NULL" = 1 ]; then
    for pt in "$WEIGHTS"/*.pt; do
        [ -e "$pt" ] || continue
        $PY -m deepemhancer_engine null-response "$pt" >> "$LOGS/nullresponse.log" 2>&1
        say "null response $(basename "$pt"): rc $?"
    done
fi
say "done"
ls -la "$WEIGHTS"
exit $RC
