"""Baselines: random guessing and the label-existence attacks of breaching (spec 2.7)."""
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
