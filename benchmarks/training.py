"""Seconds per training step: all folds vmapped in one step vs the same folds one after another (same run).

  python benchmarks/training.py [--model tinyhar] [--folds 8] [--steps 10]

Uses HAPT windows and the real step of jaxleak.runs.fold_training (Adam, class-weighted CE, dropout, BN).
Reports seconds per step for F folds both ways, the ratio, and the implied seconds per epoch for all 30 HAPT
folds (433 steps of 100 windows per fold and epoch).
"""
import time

import jax
import jax.numpy as jnp
from absl import flags

from jaxleak import data as D
from jaxleak import models
from jaxleak.runs import fold_training as T
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "tinyhar", "model")
flags.DEFINE_integer("folds", 8, "folds trained at once", lower_bound=1)
flags.DEFINE_integer("steps", 10, "timed steps", lower_bound=1)


def main(_):
  ds = D.load_hapt()
  clients = D.make_clients(ds)
  model = models.build(FLAGS.model, ds.num_classes)
  cfg = T.TrainConfig()
  f = FLAGS.folds
  folds = T.Folds(tuple(range(f)))
  tx = T.make_optimizer(cfg)
  steps = T.steps_per_epoch(clients, folds, cfg)
  idx, active = T.epoch_batches(clients, folds, cfg, 0, steps)
  weights = jnp.ones((f, ds.num_classes))
  keys = jax.random.split(jax.random.key(0), f)
  lr = jnp.float32(cfg.lr)
  step = jax.vmap(T.make_train_step(model, tx), in_axes=(0, 0, 0, 0, 0, 0, None))
  vstep = jax.jit(step)
  state = T.init_state(model, tx, jax.random.key(1), 50, ds.num_channels, f)
  x = lambda s: clients.windows[idx[s % steps]]
  y = lambda s: clients.labels[idx[s % steps]]
  state, _ = vstep(state, x(0), y(0), weights, active[0], keys, lr)        # compile
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for s in range(FLAGS.steps):
    state, loss = vstep(state, x(s), y(s), weights, active[s % steps], keys, lr)
  jax.block_until_ready(state)
  t_vmapped = (time.perf_counter() - t0) / FLAGS.steps

  one = T.init_state(model, tx, jax.random.key(1), 50, ds.num_channels, 1)
  states = [one] * f
  states[0], _ = vstep(states[0], x(0)[:1], y(0)[:1], weights[:1], active[0][:1], keys[:1], lr)   # compile F=1
  jax.block_until_ready(states[0])
  t0 = time.perf_counter()
  for s in range(FLAGS.steps):
    for k in range(f):
      states[k], _ = vstep(states[k], x(s)[k:k + 1], y(s)[k:k + 1], weights[k:k + 1], active[s % steps][k:k + 1],
                           keys[k:k + 1], lr)
  jax.block_until_ready(states)
  t_seq = (time.perf_counter() - t0) / FLAGS.steps
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {FLAGS.model}, {f} folds, batch 100")
  print(f"vmapped: {t_vmapped:.3f} s/step; one fold after another: {t_seq:.3f} s/step; ratio {t_seq / t_vmapped:.2f}x")
  print(f"implied seconds per epoch for 30 HAPT folds x 433 steps: vmapped {t_vmapped * 30 / f * 433:.0f} s, "
        f"sequential {t_seq * 30 / f * 433:.0f} s")


if __name__ == "__main__":
  _flags.run(main)
