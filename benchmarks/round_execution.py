"""How an Eavesdrop round runs its participants, side by side in one process: all vmapped in one program
(per-participant conv weights become grouped convolutions), lax.map in one program, or one jitted program per
participant in turn (`run_fedavg_round(execution='sequential')`, what 'auto' picks for conv models on CPU).

  python benchmarks/round_execution.py --dataset=mnist --model=cnn
  python benchmarks/round_execution.py --dataset=digits --model=mlp

Prints seconds per round (after one warm-up round, mean of --repeats) and each one's ratio to 'sequential', and
the largest difference of the mean update from the vmapped one (float round-off).
"""
import functools
import time

import jax
import jax.numpy as jnp
from absl import flags

from jaxleak.federated import rounds as R
from jaxleak.runs import eavesdrop as E
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "mnist or digits")
flags.DEFINE_string("model", "cnn", "cnn or mlp")
flags.DEFINE_integer("repeats", 3, "timed rounds per way", lower_bound=1)


@functools.partial(jax.jit, static_argnames=("model", "local"))
def _lax_map_round(model, variables, pool_x, pool_y, index, mask, keys, *, local):
  train = R.local_train_fn(model, local)
  trained = jax.lax.map(lambda a: train(variables, pool_x[a[0]], pool_y[a[0]], a[1], a[2]), (index, mask, keys))
  return jax.tree.map(lambda t, v: jnp.mean(t - v, axis=0), trained, variables)


def main(_):
  cfg = E.EavesdropConfig(dataset=FLAGS.dataset, model=FLAGS.model)
  fed = E.setup(cfg)
  r = E.round_inputs(fed, 0)
  args = (fed.model, fed.variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index), jnp.asarray(r.mask),
          r.client_keys)
  ways = {"vmap": lambda: R.run_fedavg_round(*args, local=cfg.local, execution="vmap")[1],
          "lax.map": lambda: _lax_map_round(*args, local=cfg.local),
          "sequential": lambda: R.run_fedavg_round(*args, local=cfg.local, execution="sequential")[1]}
  print(f"{cfg.dataset} {cfg.model}: {r.index.shape[0]} participants x {r.index.shape[1]} examples (padded), "
        f"{cfg.local}; backend {jax.default_backend()}, auto = {R.client_execution(fed.variables)}")
  seconds, updates = {}, {}
  for name, f in ways.items():
    updates[name] = jax.block_until_ready(f())
    t0 = time.perf_counter()
    for _ in range(FLAGS.repeats):
      jax.block_until_ready(f())
    seconds[name] = (time.perf_counter() - t0) / FLAGS.repeats
  for name in ways:
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(updates[name]), jax.tree.leaves(updates["vmap"])))
    print(f"{name:>10}: {seconds[name]:7.3f} s per round, {seconds[name] / seconds['sequential']:5.2f}x sequential, "
          f"max |update - vmap| {diff:.1e}")


if __name__ == "__main__":
  _flags.run(main)
