"""Throughput of every attack vmapped over many gradients, against a per-gradient Python loop baseline.

  python benchmarks/attacks.py [--num_grads 10000] [--num_classes 19] [--num_samples 100] [--feature_dim 128]

For each attack: compile time of jit(vmap(attack)) over all gradients, then gradients per second (median of 3
timed runs after compilation). The baseline is the reference implementation style: a Python/NumPy greedy loop
per gradient (EBI), timed on a subset and compared in the same run.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, LastLayerParams
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_grads", 10_000, "gradients per vmapped call", lower_bound=1)
flags.DEFINE_integer("num_classes", 19, "C", lower_bound=2)
flags.DEFINE_integer("num_samples", 100, "N", lower_bound=1)
flags.DEFINE_integer("feature_dim", 128, "D", lower_bound=1)
flags.DEFINE_integer("baseline_grads", 300, "gradients timed for the Python-loop baseline", lower_bound=1)


def numpy_ebi(b, n):
  """The reference style: label list built by a Python loop."""
  b = b.astype(np.float64).copy()
  valid = np.where(b < 0)[0]
  labels = list(valid[np.argsort(b[valid], kind="stable")][:n])
  m = b[valid].sum() / n
  b[valid] -= m
  while len(labels) < n:
    i = int(np.argmin(b)); labels.append(i); b[i] -= m
  return np.bincount(labels, minlength=len(b))


def main(_):
  k, c, n, d = FLAGS.num_grads, FLAGS.num_classes, FLAGS.num_samples, FLAGS.feature_dim
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  # Realistic untrained-model gradients: near-uniform softmax over random labels.
  bias = 1.0 / c - jax.random.dirichlet(k1, jnp.ones(c) * 0.5, (k,))
  kernel = bias[:, None, :] * jnp.abs(jax.random.normal(k2, (k, d, 1))) + 1e-3 * jax.random.normal(k3, (k, d, c))
  grads = LastLayerGrads(kernel=kernel, bias=bias)
  head = LastLayerParams(kernel=0.01 * jnp.ones((d, c)), bias=jnp.zeros(c))
  star = A.LLGStarParams(impact=jnp.float32(-0.01), offsets=jnp.zeros(c))
  keys = jax.random.split(key, k)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}: {k} gradients, C={c}, N={n}, D={d}")
  print(f"{'attack':14s} {'compile_s':>10s} {'grads_per_s':>12s}")
  rates = {}
  for name in A.names():
    f = jax.jit(jax.vmap(lambda g, kk, name=name: A.run(name, g, n, A.AttackContext(key=kk, star_params=star,
                                                                                     head=head))))
    t0 = time.perf_counter(); f.lower(grads, keys).compile(); tc = time.perf_counter() - t0
    f(grads, keys).block_until_ready()
    times = []
    for _ in range(3):
      t0 = time.perf_counter(); f(grads, keys).block_until_ready(); times.append(time.perf_counter() - t0)
    rates[name] = k / float(np.median(times))
    print(f"{name:14s} {tc:10.2f} {rates[name]:12.0f}")
  b = np.asarray(bias[:FLAGS.baseline_grads])
  t0 = time.perf_counter()
  ref = np.stack([numpy_ebi(x, n) for x in b])
  rate_loop = len(b) / (time.perf_counter() - t0)
  ours = np.asarray(jax.vmap(lambda g: A.ebi(g, n))(jax.tree.map(lambda x: x[:len(b)], grads)))
  agree = float(np.mean(np.all(ref == ours, axis=1)))
  print(f"baseline: per-gradient Python loop EBI {rate_loop:.0f} grads/s; vmapped EBI is "
        f"{rates['ebi'] / rate_loop:.0f}x faster; identical counts on {agree:.1%} of {len(b)} gradients")


if __name__ == "__main__":
  _flags.run(main)
