"""Are two processes' records of one study byte for byte the same? With and without GPU determinism.

  python benchmarks/determinism.py [--preset=har_multistep] [--set field=value ...] [--runs=2] [--modes=on,off]

Runs the study `--runs` times for each mode (the study command's --gpu_determinism true or false), each in a
fresh process with its own empty study folder and no compilation cache (every run compiles, and on a GPU
autotunes, for itself), then compares the records of the runs of a mode byte for byte. A study resumed after
kill -9, or sharded over machines of one kind, is bitwise the unbroken run only if this says "identical". On a
CPU both modes are the same computation (XLA:CPU is deterministic; the flag is not even set without a GPU
plugin); on a GPU, "off" shows what XLA's default would give. The default study is small but has what XLA:GPU
may run nondeterministically: convolution and LSTM backward passes (multi-step local training) of both models.
"""
import filecmp
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import _flags
from jaxleak import gpu_numerics

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "har_multistep", "the study to run")
flags.DEFINE_multi_string("set", ["datasets=synthetic_wetlab", "synthetic_scale=0.05", "states=untrained",
                                  "samplings=shuffle", "multi_step=100:20:5", "attacks=ebi,llbg,ilrg"],
                          "study overrides (field=value), as `python -m jaxleak.study run --set`")
flags.DEFINE_integer("runs", 2, "runs per mode", lower_bound=2)
flags.DEFINE_list("modes", ["on", "off"], "GPU determinism modes to run: on, off")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_study(folder: str, mode: str) -> float:
  cmd = [sys.executable, "-m", "jaxleak.study", "run", FLAGS.preset, f"--study_dir={folder}",
         "--compilation_cache=off", f"--gpu_determinism={'true' if mode == 'on' else 'false'}",
         *[f"--set={s}" for s in FLAGS.set]]
  # The mode decides: not the determinism flag this process's own set-up put into XLA_FLAGS, nor the variable.
  xla = [w for w in os.environ.get("XLA_FLAGS", "").split() if not any(n in w for n in gpu_numerics.XLA_NAMES)]
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "XLA_FLAGS": " ".join(xla)}
  env.pop(gpu_numerics.ENV_VAR, None)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
  if proc.returncode != 0:
    raise SystemExit(f"the study failed ({mode}): {proc.stderr.strip()[-1500:]}")
  return time.perf_counter() - t0


def main(argv):
  del argv
  bad = sorted(set(FLAGS.modes) - {"on", "off"})
  if bad or not FLAGS.modes:
    raise app.UsageError(f"--modes: {','.join(bad) or 'nothing'}; give on, off or both.")
  from jaxleak.runs import study as S
  S.preset(FLAGS.preset)                          # an unknown study is one line here, not after a first run
  import jax
  print(f"{FLAGS.preset} {' '.join('--set ' + s for s in FLAGS.set)} | {FLAGS.runs} runs per mode | "
        f"{jax.default_backend()}")
  with tempfile.TemporaryDirectory() as tmp:
    for mode in FLAGS.modes:
      folders = [os.path.join(tmp, f"{mode}{r}") for r in range(FLAGS.runs)]
      seconds = [run_study(f, mode) for f in folders]
      names = sorted(os.listdir(os.path.join(folders[0], "records")))
      same = [n for n in names if all(filecmp.cmp(os.path.join(folders[0], "records", n),
                                                  os.path.join(f, "records", n), shallow=False) for f in folders[1:])]
      verdict = "identical" if len(same) == len(names) else f"DIFFERENT in {len(names) - len(same)}"
      print(f"gpu_determinism={mode}: {len(names)} records, {verdict} across the {FLAGS.runs} runs "
            f"({', '.join(f'{s:.1f}' for s in seconds)} s per run)")


if __name__ == "__main__":
  _flags.run(main)
