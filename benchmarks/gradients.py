"""Windows per second of the single-step gradient stage, per model and path, measured side by side.

  python benchmarks/gradients.py [--num_batches 32] [--batch_size 100] [--channels 6] [--classes 13]

Paths:
  fast           forward pass + closed-form head gradient (jaxleak's default)
  autodiff       jax.grad w.r.t. all params, head slice returned (XLA prunes the unused parameter gradients)
  autodiff_full  jax.grad w.r.t. all params, ALL returned: the full backward a client (and the reference) runs
  loop_eager     reference style: one batch per call, un-vmapped (jit per batch shape, called in a Python loop)
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from jaxleak import models
from jaxleak.federated import batch_grad_fn, last_layer_grads, minmax_scale
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_batches", 16, "batches per timed call", lower_bound=1)
flags.DEFINE_integer("batch_size", 100, "N", lower_bound=1)
flags.DEFINE_integer("channels", 6, "sensor channels (HAPT: 6)", lower_bound=1)
flags.DEFINE_integer("classes", 13, "classes (HAPT: 13)", lower_bound=2)
flags.DEFINE_integer("chunk_size", 8, "batches vmapped together", lower_bound=1)


def _time(f, repeats=3):
  jax.block_until_ready(f())
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter(); jax.block_until_ready(f()); ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def main(_):
  k, n, ch, c = FLAGS.num_batches, FLAGS.batch_size, FLAGS.channels, FLAGS.classes
  x = jax.random.normal(jax.random.key(0), (k, n, 50, ch))
  y = jax.random.randint(jax.random.key(1), (k, n), 0, c)
  keys = jax.random.split(jax.random.key(2), k)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device(s)); "
        f"{k} batches x {n} windows x 50 x {ch}, C={c}")
  print(f"{'model':14s} {'path':14s} {'windows/s':>10s} {'vs fast':>8s}")
  for name in ("deepconvlstm", "tinyhar"):
    model = models.build(name, c)
    v = models.init(model, jax.random.key(3), 50, ch)
    rates = {}
    for method in ("fast", "autodiff"):
      t = _time(lambda: last_layer_grads(model, v, x, y, keys, method=method, chunk_size=FLAGS.chunk_size))
      rates[method] = k * n / t

    def full_grad(variables, xb, yb, kb):
      mutable = [m for m in variables if m != "params"]
      def loss(p):
        out = model.apply({**variables, "params": p}, minmax_scale(xb), train=True, rngs={"dropout": kb},
                          **({"mutable": mutable} if mutable else {}))
        logits = out[0] if mutable else out
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))
      return jax.grad(loss)(variables["params"])

    # vmap, not lax.map: on XLA:CPU a scan around the full backward pass runs ~16x slower (BUILD_NOTES.md).
    # Arrays are arguments: closed over, jit would bake them in as XLA constants.
    full = jax.jit(jax.vmap(full_grad, in_axes=(None, 0, 0, 0)))
    rates["autodiff_full"] = k * n / _time(lambda: full(v, x, y, keys))
    one = jax.jit(batch_grad_fn(model, method="autodiff"))
    loop = lambda: [one(v, x[i], y[i], keys[i]) for i in range(k)]
    rates["loop_eager"] = k * n / _time(loop)
    for path, r in rates.items():
      print(f"{name:14s} {path:14s} {r:10.0f} {r / rates['fast']:8.2f}")


if __name__ == "__main__":
  _flags.run(main)
