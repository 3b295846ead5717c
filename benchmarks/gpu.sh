#!/usr/bin/env bash
# The GPU figures of BUILD_NOTES.md in one prepared run (issues "Speed" and "Study engine"): main job, FLOPs,
# the LDP sweep's 10 vs 1,000 settings, whole HAR grid, Eavesdrop at 1,000 participants. For the device machine
# (its image has jax[cuda], flax, optax, chex, absl-py, scikit-learn; nothing can be installed there), run from the
# repository root:
#
#   bash benchmarks/gpu.sh "$OUT"          # logs to $OUT/gpu.log; about 7-9 minutes
#
# HAPT's data package is not on that image: the main job runs where it can be imported, and is skipped otherwise
# (carry its wheel to run it). Each step has its own time limit so one slow step cannot take the others down.
set -uo pipefail
out="${1:-/tmp}"
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAXLEAK_COMPILATION_CACHE="$out/jax-cache"
py=python3

step() {                     # step <seconds> <title> <command...>
  local limit=$1 title=$2; shift 2
  echo "=== $title" | tee -a "$log"
  local t0=$(date +%s.%N)
  timeout "$limit" "$@" 2>&1 | grep -v "^[IW][0-9]\{4\} " | tee -a "$log"
  echo "=== $title: exit ${PIPESTATUS[0]}, $(echo "$(date +%s.%N) - $t0" | bc) s" | tee -a "$log"
}

step 60 "devices" $py -c "import jax; print(jax.__version__, jax.devices())"
if $py -c "from jaxleak.data import hapt; hapt.hapt_path()" 2>/dev/null; then
  step 240 "main job: first run and later run" $py benchmarks/main_job.py
else
  echo "=== main job skipped: the HAPT data package is not installed here" | tee -a "$log"
fi
step 120 "gradient stage FLOPs and fraction of peak" $py benchmarks/flops.py --num_batches=64
step 180 "LDP sweep: 10 against 1,000 (sigma, tau) settings after the shared gradient pass" \
  $py benchmarks/study.py sweep --dataset=synthetic_wetlab --model=deepconvlstm
step 300 "whole HAR grid (untrained, synthetic WEAR + Wetlab at full size)" \
  $py benchmarks/study.py grid --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained
step 180 "Eavesdrop rounds, 1,000 participants" $py benchmarks/eavesdrop.py --participants=1000 --rounds=5
