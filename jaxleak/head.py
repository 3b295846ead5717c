"""Closed-form gradient of mean softmax cross-entropy w.r.t. a dense classifier head.

For logits z_n = h_n @ W + b and loss L = (1/N) sum_n CE(z_n, y_n):
  dL/db = (1/N) sum_n (softmax(z_n) - onehot(y_n))            f32[C]
  dL/dW = (1/N) sum_n h_n^T (softmax(z_n) - onehot(y_n))       f32[D, C]
Shared by the update functions (fast path) and by attacks that probe the model (LLG*): both need exactly this,
and it is the only model knowledge they share.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.types import LastLayerGrads, LastLayerParams, is_concrete, values_outside


def head_logits(features: jax.Array, head: LastLayerParams) -> jax.Array:
  """features f32[n, D] -> logits f32[n, C]."""
  logits = features @ head.kernel
  return logits if head.bias is None else logits + head.bias


def head_grad(features: jax.Array, labels: jax.Array, head: LastLayerParams,
              mask: Optional[jax.Array] = None) -> LastLayerGrads:
  """Gradient of the mean CE over the (masked) samples.

  Args:
    features: f32[n, D] penultimate activations.
    labels: i32[n] class ids in [0, C).
    head: the head's params (kernel f32[D, C], bias f32[C] or None).
    mask: optional bool/f32[n]; samples with mask 0 are excluded and the mean is over the rest. A mask of all
      zeros selects no sample: refused when concrete; traced (a padded client under vmap), the gradient is zero.
  Shapes are always checked; label values and the mask when concrete (under jit they cannot be inspected).
  """
  features, labels = jnp.asarray(features), jnp.asarray(labels)
  mask = None if mask is None else jnp.asarray(mask)
  c = head.kernel.shape[-1]
  n = features.shape[0] if features.ndim == 2 else None
  if (features.ndim != 2 or features.shape[1] != head.kernel.shape[0] or labels.shape != (n,)
      or (mask is not None and mask.shape != (n,)) or (head.bias is not None and jnp.shape(head.bias) != (c,))):
    raise ValueError(f"head_grad: expected features [n, D = {head.kernel.shape[0]}], labels [n] and mask [n] for a "
                     f"head kernel {head.kernel.shape} and bias [{c}]; got {features.shape}, {labels.shape}"
                     f"{'' if mask is None else ', ' + str(mask.shape)}"
                     f"{'' if head.bias is None else ', bias ' + str(jnp.shape(head.bias))}.")
  if n == 0:
    raise ValueError("head_grad: no samples (features [0, D]); the mean loss of an empty batch has no gradient.")
  if mask is not None and is_concrete(mask) and not np.any(np.asarray(mask)):
    raise ValueError("head_grad: the mask selects no sample (all zeros); the mean loss of no samples has no "
                     "gradient. Pass at least one nonzero mask entry, or leave this batch out.")
  outside = values_outside(labels, c)
  if outside:
    raise ValueError(f"head_grad: labels must be in [0, {c}); got values from {outside[0]} to {outside[1]}.")
  probs = jax.nn.softmax(head_logits(features, head).astype(jnp.float32), axis=-1)
  delta = probs - jax.nn.one_hot(labels, c, dtype=probs.dtype)          # [n, C]
  if mask is None:
    weights = jnp.full(labels.shape, 1.0 / labels.shape[0], probs.dtype)
  else:
    mask = mask.astype(probs.dtype)
    weights = mask / jnp.maximum(jnp.sum(mask), 1.0)
  delta = delta * weights[:, None]
  kernel = features.astype(jnp.float32).T @ delta
  bias = None if head.bias is None else jnp.sum(delta, axis=0)
  return LastLayerGrads(kernel=kernel, bias=bias)
