"""Wall time of the README's main job on a machine's first run and on every later run, in one benchmark.

  python benchmarks/main_job.py [--repeats 1]

Runs `experiments/single_step_leakage.py` with default flags (all 30 HAPT clients, DeepConvLSTM, shuffle, the
five attacks) as a subprocess with an empty persistent compilation cache (what a first run on a machine pays),
then again with the cache it filled (what every later run pays). Wall time of the whole process: Python
start-up, imports, data loading, compilation (or loading it from the cache), the gradient stage, the attacks,
writing. For the comparison with the PyTorch reference way, see benchmarks/reference_way.py.
"""
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import flags
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 1, "first/later pairs to run", lower_bound=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main_job(cache: str, args: Sequence[str] = ()) -> tuple[float, str]:
  """(seconds, what it printed) of one `single_step_leakage.py` process with `--compilation_cache=cache` and
  `args`."""
  with tempfile.TemporaryDirectory() as out:
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "single_step_leakage.py"), f"--output_dir={out}",
           f"--compilation_cache={cache}", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise SystemExit(proc.stderr[-3000:])
  return wall, proc.stdout


def main(_):
  for _ in range(FLAGS.repeats):
    with tempfile.TemporaryDirectory() as cache:
      first, _ = run_main_job(cache)
      later, table = run_main_job(cache)
    print(f"main job, whole process: first run {first:.1f} s (empty compilation cache), later run {later:.1f} s "
          f"(cache filled): {first - later:.1f} s of compilation saved")
  # The table, to set beside the README's (made on an x86 CPU; elsewhere a count may move: see the README).
  print("the later run printed:\n" + "\n".join(line for line in table.splitlines() if not line.startswith("wall")))


if __name__ == "__main__":
  _flags.run(main)
