"""Closed-form gradient of mean softmax cross-entropy w.r.t. a dense classifier head.

For logits z_n = h_n @ W + b and loss L = (1/N) sum_n CE(z_n, y_n):
  dL/db = (1/N) sum_n (softmax(z_n) - onehot(y_n))            f32[C]
  dL/dW = (1/N) sum_n h_n^T (softmax(z_n) - onehot(y_n))       f32[D, C]
With class weights w (PyTorch's CrossEntropyLoss(weight=w)), L = sum_n w[y_n] CE_n / sum_n w[y_n], and 1/N becomes
w[y_n] / sum_m w[y_m].
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
              mask: Optional[jax.Array] = None, class_weights: Optional[jax.Array] = None) -> LastLayerGrads:
  """Gradient of the mean CE over the (masked) samples, or of the class-weighted mean with `class_weights`.

  Args:
    features: f32[n, D] penultimate activations.
    labels: i32[n] class ids in [0, C).
    head: the head's params (kernel f32[D, C], bias f32[C] or None).
    mask: optional bool/f32[n]; samples with mask 0 are excluded and the mean is over the rest. A mask of all
      zeros selects no sample: refused when concrete; traced (a padded client under vmap), the gradient is zero.
    class_weights: optional f32[C] >= 0, the loss weight of each class (PyTorch's CrossEntropyLoss(weight=));
      the loss is sum_n w[y_n] CE_n / sum_n w[y_n] over the (masked) samples. Samples of weight 0 drop out as
      masked ones do; if every sample has weight 0 the gradient is zero (refused when concrete).
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
  if class_weights is not None:
    class_weights = check_class_weights(class_weights, c, "head_grad")
    per_sample = class_weights.astype(probs.dtype)[labels] * (1.0 if mask is None else mask.astype(probs.dtype))
    if is_concrete(per_sample) and not np.any(np.asarray(per_sample)):
      raise ValueError("head_grad: every (selected) sample has class weight 0, so the weighted loss has no "
                       "gradient; give the batch's classes a positive weight.")
    total = jnp.sum(per_sample)
    weights = per_sample / jnp.where(total > 0, total, 1.0)
  elif mask is None:
    weights = jnp.full(labels.shape, 1.0 / labels.shape[0], probs.dtype)
  else:
    mask = mask.astype(probs.dtype)
    weights = mask / jnp.maximum(jnp.sum(mask), 1.0)
  delta = delta * weights[:, None]
  kernel = features.astype(jnp.float32).T @ delta
  bias = None if head.bias is None else jnp.sum(delta, axis=0)
  return LastLayerGrads(kernel=kernel, bias=bias)


def check_class_weights(class_weights, num_classes: int, what: str) -> jax.Array:
  """class_weights as an array f32[C]; a wrong shape is refused, and (when concrete) a negative or non-finite
  weight (PyTorch's CrossEntropyLoss(weight=) takes finite weights >= 0)."""
  if np.shape(class_weights) != (num_classes,):
    raise ValueError(f"{what}: class_weights must be [C] = ({num_classes},), one weight per class; got "
                     f"{np.shape(class_weights)}.")
  if is_concrete(class_weights):
    w = np.asarray(class_weights)
    if not np.issubdtype(w.dtype, np.number) or not np.all(np.isfinite(w) & (w >= 0)):
      raise ValueError(f"{what}: class_weights must be finite numbers >= 0, got {w.tolist()}.")
  return jnp.asarray(class_weights)
