"""Reading counts from clients that weight their loss by class.

A client whose loss is PyTorch's CrossEntropyLoss(weight=w), sum_n w[y_n] CE_n / sum_n w[y_n], sends an update in
which class c counts as w_c k_c / sum_j w_j k_j of the batch instead of k_c / N. An attack that assumes the mean
loss (every attack here) then reads about N w_c k_c / sum_j w_j k_j windows of class c. An attacker who assumes
the weights can divide them out: `unweight_counts`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.attacks._common import INVALID_COUNT, as_float, check_num_samples
from jaxleak.head import check_class_weights
from jaxleak.types import NumSamples


def unweight_counts(counts: jax.Array, class_weights: jax.Array, num_samples: NumSamples) -> jax.Array:
  """Counts an attack read from a class-weighted client's update, turned back into counts of its windows.

  Each count is divided by its class's assumed weight, the result scaled to sum to N and rounded to integers by
  largest remainder (ties to the lower class index). With sklearn 'balanced' weights the client's w_c is
  proportional to 1 / (its share of class c), so an attacker who knows the label distribution of such clients
  (a public data set's, say) passes w = 1 / that distribution; the scale of w does not matter.

  Args:
    counts: i32[C], an attack's output for one update (a row of `INVALID_COUNT` is returned as it is).
    class_weights: f32[C] >= 0, the weights the attacker assumes; a class of weight 0 gets 0.
    num_samples: N (a Python int, or one traced N per update under vmap).

  Returns:
    i32[C] summing to N; a class with count 0 stays 0. Equal weights return `counts` unchanged. If no class keeps
    a positive count (every counted class has weight 0), `counts` is returned unchanged.

  >>> unweight_counts(jnp.array([4, 4, 4]), jnp.array([1.0, 1.5, 3.0]), 12).tolist()
  [6, 4, 2]
  """
  num_samples = check_num_samples(num_samples, "unweight_counts")
  if np.ndim(counts) != 1:
    raise ValueError(f"unweight_counts: counts must be [C], one update's (vmap for many updates); got "
                     f"{np.shape(counts)}.")
  w = check_class_weights(class_weights, np.shape(counts)[0], "unweight_counts").astype(jnp.float32)
  counts = jnp.asarray(counts).astype(jnp.int32)
  n = as_float(num_samples)
  raw = jnp.where((counts > 0) & (w > 0), counts / jnp.where(w > 0, w, 1.0), 0.0)
  total = jnp.sum(raw)
  # N first: with equal weights raw * N is exact (integers below 2**24) and the division is rounded once, so a share
  # of exactly x.5 stays x.5 and ties go to the lower class on every XLA version (raw / total * N rounded twice).
  share = raw * n / jnp.where(total > 0, total, 1.0)
  floor = jnp.floor(share)
  remainder = jnp.round(n - jnp.sum(floor)).astype(jnp.int32)
  frac = jnp.where(raw > 0, share - floor, -1.0)               # only counted classes take the remainder
  rank = jnp.argsort(jnp.argsort(-frac, stable=True), stable=True)
  out = (floor + (rank < remainder)).astype(jnp.int32)
  keep = jnp.any(counts == INVALID_COUNT) | (total <= 0)
  return jnp.where(keep, counts, out)
