"""Baselines: random guessing and the label-existence attacks of breaching (spec 2.7): iDLG, analytic, Yin."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxleak.attacks import _common
from jaxleak.attacks.registry import register
from jaxleak.types import LastLayerGrads, NumSamples


@register("random", signal="none", requires=("key",), summary="uniformly random labels")
def random_guess(grads: LastLayerGrads, num_samples: NumSamples, *, key: Optional[jax.Array] = None,
                 max_samples: Optional[int] = None) -> jax.Array:
  """N i.i.d. uniform labels in [0, C); the gradient is used only for C. Registered as `random`. A traced
  `num_samples` needs `max_samples` (the draw's static length)."""
  n = _common.validate(grads, num_samples, "random", needs_kernel=False, max_samples=max_samples)
  _common.require_max_samples(num_samples, max_samples, "random")
  key = _common.require_key(key, "random")
  c = grads.num_classes if grads.kernel is not None else grads.bias.shape[0]
  # The gradient's values are not used, but a non-finite update is invalid for every attack alike.
  counts = _common.random_fill(jnp.zeros((c,), jnp.int32), n, c, key, max_samples)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples, max_samples=max_samples)


@register("idlg", signal="weight", requires=("key",), summary="one label from iDLG, the rest random")
def idlg(grads: LastLayerGrads, num_samples: NumSamples, *, key: Optional[jax.Array] = None,
         max_samples: Optional[int] = None) -> jax.Array:
  """iDLG extended to batches (breaching `iDLG`): one label, argmin of the weight row sums; N-1 random labels."""
  n = _common.validate(grads, num_samples, "idlg", max_samples=max_samples)
  _common.require_max_samples(num_samples, max_samples, "idlg")
  key = _common.require_key(key, "idlg")
  r = jnp.sum(grads.kernel.astype(jnp.float32), axis=0)
  c = r.shape[0]
  counts = jax.nn.one_hot(jnp.argmin(r), c, dtype=jnp.int32)
  counts = _common.random_fill(counts, n, c, key, max_samples)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples, max_samples=max_samples)


@register("analytic", signal="bias", requires=("key",),
          summary="classes with negative bias once, rest random")
def analytic(grads: LastLayerGrads, num_samples: NumSamples, *, key: Optional[jax.Array] = None,
             max_samples: Optional[int] = None) -> jax.Array:
  """breaching `analytic`: every class with a negative bias gradient once (index order, first N); rest random."""
  n = _common.validate(grads, num_samples, "analytic", needs_bias=True, needs_kernel=False, max_samples=max_samples)
  _common.require_max_samples(num_samples, max_samples, "analytic")
  key = _common.require_key(key, "analytic")
  b = grads.bias
  counts = _common.keep_first((b < 0).astype(jnp.int32), n)
  counts = _common.random_fill(counts, n, b.shape[0], key, max_samples)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples, max_samples=max_samples)


@register("yin", signal="weight", requires=("key",),
          summary="Yin et al.: classes by their weight gradient's minimum, once each, rest random")
def yin(grads: LastLayerGrads, num_samples: NumSamples, *, key: Optional[jax.Array] = None,
        max_samples: Optional[int] = None) -> jax.Array:
  """GradInversion's label restoration (Yin et al., CVPR 2021; breaching `yin`, spec 2.7): each class's smallest
  entry of its weight-gradient column (kernel[:, c]); the classes in ascending order of it (ties to the lower
  index), one label each, the first min(N, C); the rest uniformly random (`key`).

  With non-negative features (after a ReLU) the column of a class absent from the batch has no negative entry, so
  for a batch of N <= C distinct labels the attack finds them all whenever each present class's column has one
  (tested). A traced `num_samples` needs `max_samples` (the padding's draw).

  >>> kernel = jnp.array([[0.5, 0.0, -0.4, -0.1], [-0.3, 0.1, 0.2, -0.1], [0.5, 0.1, 0.0, -0.1]])
  >>> yin(LastLayerGrads(kernel=kernel, bias=None), 3, key=jax.random.key(0)).tolist()    # minima -.3 0 -.4 -.1
  [1, 0, 1, 1]
  """
  n = _common.validate(grads, num_samples, "yin", max_samples=max_samples)
  _common.require_max_samples(num_samples, max_samples, "yin")
  key = _common.require_key(key, "yin")
  lowest = jnp.min(grads.kernel.astype(jnp.float32), axis=0)
  c = lowest.shape[0]
  rank = jnp.argsort(jnp.argsort(lowest, stable=True), stable=True)   # 0 = the smallest minimum
  counts = (rank < n).astype(jnp.int32)
  counts = _common.random_fill(counts, n, c, key, max_samples)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples, max_samples=max_samples)
