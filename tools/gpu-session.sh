#!/usr/bin/env bash
# One GPU lease, the headline numbers, in two calls (../shared/device/README.md has the lease's rules:
# 15 device-minutes in all, machine start, transfers and idle seconds included; the machine goes back
# 30 s after a command ends, and /tmp with it).
#
# Here, once:  bash ../shared/device/stage.sh        (.stage/data1, .stage/data2: CIFAR-10, lossless)
#              bash tools/gpu-session.sh commands    (prints the two device calls with this commit)
# Call 1 (carry .stage/data1):  SC_FAST_GIT_COMMIT=<sha> bash tools/gpu-session.sh first
# Call 2 (carry .stage/data2), at once:  SC_FAST_GIT_COMMIT=<sha> bash tools/gpu-session.sh tta
# Then here: tar -xzf <files_at>/results.tgz -C results/gpu (and the traces), commit with env.json.
#
# first  parks data1 in /tmp/parts; checks the machine (GPU, driver, torch, Triton, C compiler, Python.h);
#        the synthetic throughput matrix at batch 256 (every case traced) and at batch 2048.
# tta    joins data1 + data2 into CIFAR-10 (md5-checked); `bench run --profile full` with the torch
#        pipeline, seed by seed (every schedule of seed 0, then of seed 1, ...) until the budget
#        leaves BUDGET_TAIL_S; then the torch-fed throughput case.
# Each call runs every command under `timeout -k 20` against one deadline, packs what exists into
# $OUT after every command and from an EXIT trap (results.tgz, traces.tgz.NN under 16 MiB, log.txt:
# at most 8 files), and prints a short table last. A cut-off command still returns everything
# finished (a throughput case cut off has a timed_out row; a run keeps its finished trials).
#
# Budget (H200, stated rates, not yet measured: replace them with the first lease's numbers):
#   machine start ~90 s; each transfer ~15 s.
#   first  240 s: check 10 s; batch 256: 5 cases x (5 warm-up + 3x20 timed + 6 traced) = 355 steps
#          at <= 15 ms (eager fp32) = 5 s, + cuDNN autotuning 10 s + one torch.compile ~70 s +
#          capture 5 s + start-up 15 s = ~105 s; batch 2048: 5 x 65 = 325 steps at <= 100 ms (fp32)
#          = 33 s + compile ~70 s + start-up 15 s = ~120 s.
#   tta    330 s: unpack 25 s; load 5 s; compile ~70 s for the first trial (inductor's cache, left
#          in /tmp by `first`, cuts later ones); per trial <= 3,025 steps at ~10 ms (25k img/s,
#          bf16 compiled, batch 256) = 30 s + 23 evaluations x 0.3 s = ~40 s; so seed 0's three
#          schedules by ~220 s and part of seed 1; BUDGET_TAIL_S = 60 s for torch-fed at batch 256
#          (the run's compiled graph from inductor's cache; 65 steps ~1 s, start-up and FLOP count ~25 s).
#   sum: 90 + 15 + 240 + 15 + 15 + 330 + 15 = 720 s = 12 device-minutes, 3 to spare.
# Without CUDA (a dry run here) each step runs small stand-ins: two throughput cases at batch 32 and
# the smoke profile. GPU_SESSION_BUDGET_S overrides a step's budget.
set -uo pipefail
cd "$(dirname "$0")/.."
step=${1:-}
root=${SESSION_TMP:-/tmp}  # where parts, data and results live between the two calls
RES=$root/sc-results PARTS=$root/parts DATA=$root/sc-data
TAIL_S=${BUDGET_TAIL_S:-60}

if [[ $step == commands ]]; then
  sha=$(git rev-parse HEAD)
  [[ -z $(git status --porcelain --untracked-files=no) ]] || echo "warning: uncommitted changes travel too, unrecorded"
  echo "call 1: run(carry=[\".stage/data1\"], timeout_s=300, command=\"SC_FAST_GIT_COMMIT=$sha bash tools/gpu-session.sh first\")"
  echo "call 2: run(carry=[\".stage/data2\"], timeout_s=390, command=\"SC_FAST_GIT_COMMIT=$sha bash tools/gpu-session.sh tta\")"
  exit 0
fi
case $step in
  first) budget=${GPU_SESSION_BUDGET_S:-240} ;;
  tta) budget=${GPU_SESSION_BUDGET_S:-330} ;;
  *) echo "usage: bash tools/gpu-session.sh first | tta | commands" >&2; exit 2 ;;
esac
deadline=$((SECONDS + budget))
mkdir -p "$RES" "$PARTS"
OUT=${OUT:-}
[[ -n $OUT ]] && exec > >(tee -a "$OUT/log.txt") 2>&1
[[ -n ${SC_FAST_GIT_COMMIT:-} ]] || echo "warning: SC_FAST_GIT_COMMIT unset: env.json will not know the commit"
export SC_FAST_DATA=$DATA PYTHONUNBUFFERED=1 PYTHONPATH=$PWD

left() { echo $((deadline - SECONDS)); }

# Runs "$@" under timeout until the deadline less $1 seconds; rc 124 when it was cut off.
timed() {
  local keep=$1; shift
  local t=$(( $(left) - keep ))
  if (( t < 5 )); then echo "skipped (budget spent): $*"; return 124; fi
  timeout -k 20 "$t" "$@"
}

pack() {
  [[ -n $OUT ]] || return 0
  tar -czf "$OUT/results.tgz" --exclude='trace_*' -C "$RES" . 2>/dev/null
  rm -f "$OUT"/traces.tgz.*
  if [[ -n $(find "$RES" -name 'trace_*' -print -quit) ]]; then  # 16 MiB a file, 8 files, 64 MiB in all
    find "$RES" -name 'trace_*' -printf '%P\n' | tar -czf - -C "$RES" -T - | split -b 15M -d - "$OUT/traces.tgz."
    ls "$OUT"/traces.tgz.* | tail -n +6 | xargs -r rm -f  # at most 5 pieces (75 MiB): the rest is dropped
  fi
}

finish() {
  pack
  echo "---- $step: $((SECONDS)) s of $budget; \$OUT: $(ls "${OUT:-/nonexistent}" 2>/dev/null | tr '\n' ' ')"
  python3 tools/session_table.py "$RES"
}
trap finish EXIT

cuda=$(python3 -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
tp() { timed "$1" python3 -m bench throughput --out "$RES/$2" "${@:3}"; local rc=$?; pack; return $rc; }

check() {
  {
    date -u; nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit \
      --format=csv 2>&1; cc --version 2>&1 | head -1
    python3 -c 'import sysconfig, pathlib; p = pathlib.Path(sysconfig.get_paths()["include"], "Python.h"); print(p, p.is_file())'
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
    python3 -c 'import triton; print("triton", triton.__version__)' 2>&1 | tail -1  # torch.compile's GPU kernels
    nproc; free -g | head -2
  } > "$RES/check.txt" 2>&1
  cat "$RES/check.txt"
}

first() {
  rm -rf "${RES:?}"/* "${PARTS:?}"/*  # a fresh session (a dry run here may have left some)
  cp .stage/data1/* "$PARTS/" 2>/dev/null && echo "parked: $(ls "$PARTS")" || echo "no .stage/data1 carried"
  check
  local cases=(--case baseline --case tf32 --case bf16-cl-eager --case compile-default --case cuda-graph)
  if (( cuda )); then
    tp 115 b256 --batch-size 256 --trace 5 "${cases[@]}"  # b256, the headline: ~115 s, 10 over its estimate; b2048 ~110
    tp 5 b2048 --batch-size 2048 "${cases[@]}"
  else  # stand-ins: the code path, not a measurement
    tp 5 b32 --device cpu --batch-size 32 --steps ${GPU_SESSION_CPU_STEPS:-2} --warmup 1 --repeats 1 --trace 1 \
      --case baseline --case default
  fi
}

unpack() {
  [[ -d $DATA/cifar-10-batches-py ]] && return 0
  cp .stage/data2/* "$PARTS/" 2>/dev/null
  if [[ ! -f $PARTS/cifar_pack.py ]] || (( $(ls "$PARTS"/part_* 2>/dev/null | wc -l) < 2 )); then
    echo "data incomplete in $PARTS ($(ls "$PARTS" | tr '\n' ' ')): the machine of call 1 is gone; run 'first' again"
    return 1
  fi
  cat "$PARTS"/part_* | timed 0 python3 "$PARTS/cifar_pack.py" unpack - "$DATA"
}

tta() {
  unpack || return 1
  if (( cuda )); then
    timed "$TAIL_S" python3 -m bench run --profile full --pipeline torch --out "$RES/run"
    pack
    tp 0 torch-fed --case torch-fed --batch-size 256  # the trials' batch: inductor's cache from the run
  else
    timed "$TAIL_S" python3 -m bench run --profile smoke --device cpu --pipeline torch --out "$RES/run"
    pack
    tp 0 torch-fed --device cpu --case torch-fed --batch-size 32 --steps 2 --warmup 1 --repeats 1
  fi
}

"$step"
