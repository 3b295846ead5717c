"""Trained folds through the library: `compute_updates` with each update's fold variables gathered per update and
vmapped (execution 'vmap': every conv a grouped conv) against one fold per call with the fold's variables shared
('sequential', the default on XLA:CPU via `client_execution`). Side by side in one process, same prepared run.

  python benchmarks/fold_execution.py                                  # HAPT, DeepConvLSTM, 6 clients = 6 folds
  python benchmarks/fold_execution.py --model=tinyhar --num_clients=10
  python benchmarks/fold_execution.py --multi_step             # or --ldp_clip=1 (full backward)

The folds' models are the run's global model scaled per fold (trained weights are not needed to time this).
Prints each way's time (the better of --repeats runs after one compiling run), windows/s, the ratio, and the
largest difference of the updates (float round-off only).
"""
import dataclasses
import time

import jax
import numpy as np
from absl import flags

from jaxleak.federated import LocalSteps
from jaxleak.runs import leakage as L
from jaxleak.runs.leakage.prepare import prepare
from jaxleak.runs.leakage.updates import compute_updates
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "HAR dataset.")
flags.DEFINE_string("model", "deepconvlstm", "HAR model.")
flags.DEFINE_integer("num_clients", 6, "Clients (one fold each).", lower_bound=1)
flags.DEFINE_integer("num_samples", 100, "Windows per update.", lower_bound=1)
flags.DEFINE_bool("multi_step", False, "Local training (N = num_samples, B = 20, S = 5) instead of one step.")
flags.DEFINE_float("ldp_clip", 0.0, "Single step: whole-model batch clipping at this norm with noise 0.1 (the full "
                   "backward pass); 0 = no LDP.")
flags.DEFINE_integer("repeats", 2, "Timed runs per way (after one compiling run).", lower_bound=1)


def main(_):
  cfg = L.LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, num_clients=FLAGS.num_clients,
                        num_samples=FLAGS.num_samples,
                        local=LocalSteps(batch_size=20, steps=5) if FLAGS.multi_step else None,
                        ldp=L.ldp_setting(0.1, FLAGS.ldp_clip) if FLAGS.ldp_clip else L.LeakageConfig().ldp)
  prep = prepare(cfg, None, None, None)
  folds = prep.clients.num_clients
  scale = (1 + 0.05 * np.arange(folds)).astype(np.float32)
  stacked = jax.tree.map(lambda a: a[None] * scale.reshape((folds,) + (1,) * a.ndim), prep.variables)
  prep = dataclasses.replace(prep, variables=stacked, fold_of_batch=np.asarray(prep.batch_client, np.int32))
  k, n = prep.indices.shape
  print(f"{FLAGS.dataset} | {FLAGS.model} | {folds} folds | {k} updates of {n} windows | "
        f"{'multi step (B=20, S=5)' if FLAGS.multi_step else 'single step'}"
        f"{f' | LDP clip {FLAGS.ldp_clip} (whole model)' if FLAGS.ldp_clip else ''} | {jax.default_backend()}")
  times, out = {}, {}
  for execution in ("vmap", "sequential"):
    out[execution] = compute_updates(prep, cfg, cfg.ldp, None, execution=execution)      # compiles
    best = float("inf")
    for _ in range(FLAGS.repeats):
      t = time.perf_counter()
      jax.block_until_ready(compute_updates(prep, cfg, cfg.ldp, None, execution=execution))
      best = min(best, time.perf_counter() - t)
    times[execution] = best
    print(f"  {execution:10s} {best:7.2f} s  {k * n / best:9,.0f} windows/s")
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(out["vmap"]),
                                                          jax.tree.leaves(out["sequential"])))
  print(f"  one fold per call is {times['vmap'] / times['sequential']:.2f}x faster; max |difference| {diff:.1e}")


if __name__ == "__main__":
  _flags.run(main)
