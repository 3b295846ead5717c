"""Throughput of every attack vmapped over many gradients, against a per-gradient Python loop baseline.

  python benchmarks/attacks.py [--num_grads 10000] [--num_classes 19] [--num_samples 100] [--feature_dim 128]

For each attack: compile time of jit(vmap(attack)) over all gradients, then gradients per second (median of 3
timed runs after compilation). The baseline is the reference implementation style: a Python/NumPy greedy loop
per gradient (EBI), timed on a subset and compared in the same run.

Clients of different sizes (`--mixed_attacks`, N drawn uniformly from [1, --num_samples] per gradient): one
jit(vmap) with a traced N per gradient against one jitted call per distinct N (the only way before traced N:
a compilation per N), both timed from scratch (compilation included, as a user meets them), counts compared;
then the traced call's throughput once compiled.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, LastLayerParams, cli
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_grads", 10_000, "gradients per vmapped call", lower_bound=1)
flags.DEFINE_integer("num_classes", 19, "C", lower_bound=2)
flags.DEFINE_integer("num_samples", 100, "N", lower_bound=1)
flags.DEFINE_integer("feature_dim", 128, "D", lower_bound=1)
flags.DEFINE_integer("baseline_grads", 300, "gradients timed for the Python-loop baseline", lower_bound=1)
flags.DEFINE_list("mixed_attacks", ["llbg", "ilrg_uniform"], "attacks timed on gradients of mixed N ('' for none)")


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
  for a in FLAGS.mixed_attacks:
    if a not in A.names() or set(A.info(a).requires) - {"key"}:
      why = "is not an attack" if a not in A.names() else "needs model estimates (head, star_params, rlu_basis)"
      raise cli.FlagError(f"--mixed_attacks: {a!r} {why}; name attacks that read the gradient alone, e.g. "
                          "llg,ebi,llbg,ilrg_uniform,random.")
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  # Realistic untrained-model gradients: near-uniform softmax over random labels.
  bias = 1.0 / c - jax.random.dirichlet(k1, jnp.ones(c) * 0.5, (k,))
  kernel = bias[:, None, :] * jnp.abs(jax.random.normal(k2, (k, d, 1))) + 1e-3 * jax.random.normal(k3, (k, d, c))
  grads = LastLayerGrads(kernel=kernel, bias=bias)
  head = LastLayerParams(kernel=0.01 * jnp.ones((d, c)), bias=jnp.zeros(c))
  star = A.LLGStarParams(impact=jnp.float32(-0.01), offsets=jnp.zeros(c))
  basis = A.RLUBasis(kernel=0.1 * jax.random.normal(k1, (c, d, c)), bias=0.1 * jax.random.normal(k2, (c, c)))
  keys = jax.random.split(key, k)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}: {k} gradients, C={c}, N={n}, D={d}")
  print(f"{'attack':14s} {'compile_s':>10s} {'grads_per_s':>12s}")
  rates = {}
  for name in A.names():
    context = lambda kk: A.AttackContext(key=kk, star_params=star, head=head, rlu_basis=basis)
    f = jax.jit(jax.vmap(lambda g, kk, name=name: A.run(name, g, n, context(kk))))
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
  sizes = np.asarray(jax.random.randint(jax.random.key(1), (k,), 1, n + 1))
  for name in FLAGS.mixed_attacks:
    mixed_sizes(name, grads, sizes, keys, n, rates[name])


def mixed_sizes(name, grads, sizes, keys, n, static_rate):
  """One call with a traced N per gradient against one compiled call per distinct N; both from scratch."""
  ctx = lambda kk, bound=None: A.AttackContext(key=kk, max_samples=bound)
  t0 = time.perf_counter()
  f = jax.jit(jax.vmap(lambda g, m, kk: A.run(name, g, m, ctx(kk, n))))
  traced = np.asarray(f(grads, jnp.asarray(sizes, jnp.int32), keys))
  t_traced = time.perf_counter() - t0
  times = []
  for _ in range(3):
    t0 = time.perf_counter(); f(grads, jnp.asarray(sizes, jnp.int32), keys).block_until_ready()
    times.append(time.perf_counter() - t0)
  rate = len(sizes) / float(np.median(times))
  t0 = time.perf_counter()
  grouped = np.zeros_like(traced)
  for m in np.unique(sizes):
    idx = np.flatnonzero(sizes == m)
    g = jax.jit(jax.vmap(lambda gg, kk, m=int(m): A.run(name, gg, m, ctx(kk))))
    grouped[idx] = np.asarray(g(jax.tree.map(lambda x: x[idx], grads), keys[idx]))
  t_grouped = time.perf_counter() - t0
  same = float(np.mean(np.all(traced == grouped, axis=1)))
  print(f"mixed N in [1, {n}] ({len(np.unique(sizes))} distinct), {name}: one call with a traced N {t_traced:.2f} s; "
        f"one compiled call per N {t_grouped:.2f} s ({t_grouped / t_traced:.1f}x); identical counts on {same:.1%}; "
        f"compiled, {rate:.0f} grads/s (N = {n} for all, above: {static_rate:.0f})")


if __name__ == "__main__":
  _flags.run(main)
