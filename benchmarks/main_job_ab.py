"""The README's main job, this checkout against another checkout (e.g. the commit before a change), side by side.

  git worktree add /tmp/before <commit>
  python benchmarks/main_job_ab.py --other=/tmp/before [--repeats=2]

Runs `experiments/single_step_leakage.py` (all 30 HAPT clients, DeepConvLSTM, five attacks) of each tree as a fresh
subprocess, alternating A B A B ..., and prints every wall time (start-up, data, compilation included), the
medians and the ratio. Each tree's run imports its own jaxleak (its experiments/ scripts are run with the tree on
PYTHONPATH).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("other", None, "the other checkout's root")
flags.DEFINE_integer("repeats", 2, "runs per tree", lower_bound=1)
flags.mark_flag_as_required("other")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(root: str) -> float:
  with tempfile.TemporaryDirectory() as out:
    # No persistent compilation cache: both trees compile (a tree from before the cache would not use it).
    env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "JAXLEAK_COMPILATION_CACHE": "off"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.join(root, "experiments", "single_step_leakage.py"),
                        f"--output_dir={out}"], capture_output=True, text=True, env=env, cwd=root)
    dt = time.perf_counter() - t0
  if p.returncode != 0:
    raise SystemExit(f"{root}: {p.stderr[-2000:]}")
  return dt


def main(_):
  times = {"this": [], "other": []}
  for _ in range(FLAGS.repeats):
    for name, root in (("other", FLAGS.other), ("this", HERE)):
      times[name].append(one(root))
      print(f"{name:5s} {times[name][-1]:.1f} s", flush=True)
  a, b = statistics.median(times["this"]), statistics.median(times["other"])
  print(f"median: this {a:.1f} s, other {b:.1f} s; this / other = {a / b:.2f}")


if __name__ == "__main__":
  _flags.run(main)
