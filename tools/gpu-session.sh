#!/usr/bin/env bash
# A measuring session on a GPU machine lent through this workplace's device tool: no package
# registry there, at most 64 MiB carried and 10 minutes per command, everything lost ~30 s after a
# command ends (../shared/device/README.md). Stage here first: `bash ../shared/device/stage.sh`.
#
# Every command of the session is `SC_FAST_GIT_COMMIT=<git rev-parse HEAD, here> bash
# tools/gpu-session.sh STEP [ARGS]` (a tree that arrives without .git: env.json records this commit),
# carrying the next staged folder (.stage/data1, data2, data3, then whl + dali1, dali2, dali3, dali4).
# Each command
#   1. takes in what it carried: CIFAR-10 is unpacked once its last part has arrived, DALI installed
#      once its wheel is whole;
#   2. runs STEP under `timeout` (SC_TIMEOUT, default 530 s: SIGTERM, so bench keeps what finished);
#   3. packs every result so far into $OUT (results.tgz; traces.tgz.NN in 15 MiB pieces), so a lost
#      machine loses nothing already measured.
# Steps:
#   check        GPU, torch, C compiler; then three synthetic cases, profiled (no data needed)
#   sweep        compile default and cuda-graph at batch 256, 1024, 2048 (no data needed)
#   suite        `bench suite` into /tmp/sc-results/suite, or --resume of the one there
#   bench ARGS   any `python -m bench` command (give it --out /tmp/sc-results/NAME)
# An order that keeps the GPU busy while the parts arrive: data1 check, data2 sweep, data3 suite,
# whl+dali1..dali3 suite (until it completes), dali4 then `bench throughput --case dali-fed --case
# loader-dali --case torch-fed --case loader-torch --trace` and `bench run --pipeline dali`.
set -uo pipefail
cd "$(dirname "$0")/.."
RES=/tmp/sc-results DATA=/tmp/sc-data SITE=/tmp/site
mkdir -p "$RES" /tmp/parts /tmp/dali

take_in() {
  cp .stage/data*/part_* /tmp/parts/ 2>/dev/null
  cp .stage/dali*/part_* /tmp/dali/ 2>/dev/null
  cp -r .stage/whl /tmp/ 2>/dev/null
  # a gzip stream or a wheel checks whole only once every part is there
  if [[ ! -d $DATA/cifar-10-batches-py ]] && cat /tmp/parts/part_* 2>/dev/null | gzip -t 2>/dev/null; then
    mkdir -p "$DATA" && cat /tmp/parts/part_* | tar -xzf - -C "$DATA" && echo "data: unpacked into $DATA"
  fi
  if [[ ! -d $SITE/nvidia/dali && -f /tmp/whl/DALI_WHEEL_NAME ]]; then
    local whl=/tmp/$(cat /tmp/whl/DALI_WHEEL_NAME)
    cat /tmp/dali/part_* > "$whl"
    if python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$whl" 2>/dev/null; then
      python3 -m pip install -q --no-index --no-deps --target "$SITE" "$whl" /tmp/whl/*.whl && echo "dali: installed"
    fi
  fi
}

bench() {
  PYTHONPATH="$SITE:$PWD" SC_FAST_DATA=$DATA PYTHONUNBUFFERED=1 timeout "${SC_TIMEOUT:-530}" python3 -m bench "$@"
}

pack() {
  [[ -n ${OUT:-} ]] || return 0
  tar -czf "$OUT/results.tgz" --exclude='trace_*' -C "$RES" .
  if [[ -n $(find "$RES" -name 'trace_*') ]]; then  # 16 MiB at most per file comes back
    find "$RES" -name 'trace_*' -printf '%P\n' | tar -czf - -C "$RES" -T - | split -b 15M -d - "$OUT/traces.tgz."
  fi
  ls -la "$OUT"
}

[[ -n ${SC_FAST_GIT_COMMIT:-} ]] || echo "warning: SC_FAST_GIT_COMMIT unset: env.json will not know the commit"
take_in
step=${1:-check}; shift || true
case $step in
  check)
    nvidia-smi -L; cc --version | head -1
    python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
    bench throughput --out "$RES/check" --trace --repeats 2 --case bf16-cl-eager --case default --case cuda-graph ;;
  sweep)  # the batch that gives the most img/s (the suite measures batch 512)
    cp bench.toml /tmp/sweep.toml; cases=()
    for b in 256 1024 2048; do
      for mode in default cuda-graph; do
        printf '\n[throughput.cases.%s-b%s]\nbatch_size = %s\ncompile = "%s"\ndevice = "cuda"\n' \
          "$mode" "$b" "$b" "$mode" >> /tmp/sweep.toml
        cases+=(--case "$mode-b$b")
      done
    done
    bench throughput --config /tmp/sweep.toml --out "$RES/sweep" "${cases[@]}" ;;
  suite)
    if suite=$(ls -d "$RES"/suite/*/ 2>/dev/null | tail -1) && [[ -n $suite ]]; then
      bench suite --resume "$suite"
    else
      bench suite --out "$RES/suite"
    fi ;;
  bench) bench "$@" ;;
  *) echo "unknown step $step (check | suite | bench ARGS)"; exit 2 ;;
esac
rc=$?
pack
exit $rc
