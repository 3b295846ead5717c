"""Trained folds: per-batch weights vmapped (every conv a grouped conv on XLA:CPU, what the leakage pipeline does
today) against one jitted call per fold with the fold's weights shared by its batches (what Eavesdrop rounds now do
for conv models on CPU, `federated.rounds.client_execution`). Side by side in one process; DeepConvLSTM features of
4 folds x 4 batches x 100 HAPT-shaped windows.

  python benchmarks/fold_execution.py

Prints both times, their ratio and the largest difference of the features (0: the same computation).
"""
import time, jax, jax.numpy as jnp
from jaxleak import models
m = models.build("deepconvlstm", 13); F, B, N = 4, 4, 100
vs = [models.init(m, jax.random.key(f), 128, 6) for f in range(F)]
stacked = jax.tree.map(lambda *a: jnp.stack(a), *vs)
x = jax.random.normal(jax.random.key(9), (F, B, N, 128, 6))
feat = lambda v, xb: m.apply(v, xb, return_features=True)[1]
per_batch = jax.jit(lambda sv, x: jax.vmap(feat)(jax.tree.map(lambda a: jnp.repeat(a, B, 0), sv), x.reshape((F * B,) + x.shape[2:])))
shared = jax.jit(lambda v, xf: jax.vmap(feat, in_axes=(None, 0))(v, xf))
def tm(f, n=3):
  jax.block_until_ready(f()); t = time.perf_counter()
  for _ in range(n): jax.block_until_ready(f())
  return (time.perf_counter() - t) / n
a = tm(lambda: per_batch(stacked, x))
b = tm(lambda: [shared(vs[f], x[f]) for f in range(F)])
r1 = per_batch(stacked, x).reshape(F, B, N, -1); r2 = jnp.stack([shared(vs[f], x[f]) for f in range(F)])
print(f"per-batch weights vmapped: {a:.2f} s; one call per fold (shared weights): {b:.2f} s; ratio {a / b:.2f}x; max diff {float(jnp.max(jnp.abs(r1 - r2))):.1e}")
