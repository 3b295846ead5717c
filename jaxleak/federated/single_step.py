"""Single-step (FedSGD) client updates: the last-layer gradient of the mean CE for many batches at once.

Every batch is an independent update at the same global variables (spec 3.2): optional per-batch min-max scaling,
the model in train mode (dropout active, BatchNorm on batch statistics, whose updates are discarded), mean
cross-entropy, gradient w.r.t. the classifier head. Optionally each client weights its loss by class
(`class_weights`, PyTorch's CrossEntropyLoss(weight=)), e.g. from its own label counts: beyond the papers, whose
clients use the plain mean.

Two paths that agree to float tolerance (tested):
  'fast'      forward pass only; dL/dW, dL/db in closed form from the head's input features (jaxleak.head).
  'autodiff'  jax.grad of the loss w.r.t. ALL parameters, head slice taken afterwards (what a client sends).
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxleak import privacy
from jaxleak.federated.apply import (apply_train, check_batches, check_options, class_weighted_ce,
                                     explain_variable_mismatch, split_variables, train_loss)
from jaxleak.head import check_class_weights, head_grad
from jaxleak.privacy import LdpConfig
from jaxleak.types import LastLayerGrads, LastLayerParams, is_concrete, is_int

METHODS = ("fast", "autodiff")


class PerformanceWarning(UserWarning):
  """A call that is correct but will run far slower than an equivalent one (the message says which)."""


def minmax_scale(x: jax.Array) -> jax.Array:
  """Per-batch global min-max scaling (spec 3.2): (x - min) / (max - min) over the whole batch tensor."""
  lo, hi = jnp.min(x), jnp.max(x)
  return (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)


def _head(params) -> LastLayerParams:
  head = params["head"]
  return LastLayerParams(kernel=head["kernel"], bias=head.get("bias"))


def _full_grad(model, variables, x, y, key, class_weights=None):
  """jax.grad of the train-mode mean CE (or class-weighted mean) w.r.t. every parameter (the new BatchNorm
  statistics are discarded)."""
  params, state = split_variables(variables)
  reduce = None if class_weights is None else functools.partial(class_weighted_ce, class_weights=class_weights)
  return jax.grad(train_loss(model, state, x, y, key, reduce), has_aux=True)(params)[0]


def _head_grad_and_model_norm(model, variables, x, y, key, class_weights=None):
  tree = _full_grad(model, variables, x, y, key, class_weights)
  return LastLayerGrads(kernel=tree["head"]["kernel"], bias=tree["head"].get("bias")), privacy.global_norm(tree)


def apply_batch_ldp(grads: LastLayerGrads, model_norm: jax.Array, ldp: LdpConfig, noise_key: jax.Array
                    ) -> LastLayerGrads:
  """Batch-granularity LDP of one update, given its head gradient and its whole-model gradient norm.

  Clipping scales every leaf by one factor, so the head after whole-model clipping is head * factor(model norm);
  with scope 'last_layer' the factor comes from the head's own norm. Then noise (key = noise_key).
  """
  if ldp.per_example:
    raise ValueError("apply_batch_ldp handles batch-granularity clipping only.")
  norm = model_norm if ldp.clip_scope == "all" else privacy.global_norm(grads)
  factor = privacy.clip_factor(norm, ldp.clip_norm)
  clipped = jax.tree.map(lambda a: a * factor, grads)
  return privacy.privatize(clipped, privacy.gaussian_noise(ldp.noise_std, key=noise_key))


def head_grads_and_model_norms(model: nn.Module, variables: dict, windows: jax.Array, labels: jax.Array,
                               keys: jax.Array, *, minmax: bool = True, batched_variables: bool = False,
                               class_weights: Optional[jax.Array] = None):
  """(LastLayerGrads [K, ...], whole-model gradient norms f32[K]) of K batches, one plain vmap (full backward).

  With these, every batch-granularity LDP setting is `apply_batch_ldp` away: an LDP sweep pays the full
  backward pass once, not once per setting. `class_weights`: as in `last_layer_grads`.
  """
  check_batches(model, windows, labels, keys, what="head_grads_and_model_norms")
  check_options("head_grads_and_model_norms", variables, np.shape(windows)[0], minmax=minmax,
                batched_variables=batched_variables)
  class_weights = _check_per_batch_class_weights(class_weights, model, windows, "head_grads_and_model_norms")
  with explain_variable_mismatch(model, windows, "head_grads_and_model_norms"):
    return _head_grads_and_model_norms(model, variables, windows, labels, keys, class_weights, minmax=minmax,
                                       batched_variables=batched_variables)


@functools.partial(jax.jit, static_argnames=("model", "minmax", "batched_variables"))
def _head_grads_and_model_norms(model, variables, windows, labels, keys, class_weights, *, minmax,
                                batched_variables):
  def one(v, x, y, key, w):
    return _head_grad_and_model_norm(model, v, minmax_scale(x) if minmax else x, y, key, w)
  return jax.vmap(one, in_axes=(0 if batched_variables else None, 0, 0, 0, 0))(variables, windows, labels, keys,
                                                                             class_weights)


def _check_per_batch_class_weights(class_weights, model, windows, what: str):
  """None, or class weights f32[K, C] (one row per batch), checked row by row."""
  if class_weights is None:
    return None
  k, c = np.shape(windows)[0], model.num_classes
  if np.shape(class_weights) != (k, c):
    raise ValueError(f"{what}: class_weights must be [K, C] = ({k}, {c}), one row of class weights per batch; "
                     f"got {np.shape(class_weights)}.")
  if is_concrete(class_weights):
    w = np.asarray(class_weights)
    bad = ~(np.isfinite(w) & (w >= 0)).all(axis=1) if np.issubdtype(w.dtype, np.number) else np.ones(k, bool)
    if bad.any():
      first = int(np.argmax(bad))
      check_class_weights(w[first], c, f"{what}: batch {first}'s")      # raises, showing that row
  return jnp.asarray(class_weights, jnp.float32)


def _private_batch_grad_fn(model, minmax, ldp: LdpConfig):
  """The client's privatised update, computed as cheaply as the LDP setting allows.

  * clip scope 'last_layer' (or no clipping): forward pass + closed-form head gradient (per example when the
    granularity is per_example), then clip and noise.
  * clip scope 'all': jax.grad w.r.t. every parameter (per example: each example alone, its own dropout key;
    TinyHAR's BatchNorm then normalises with that example's statistics), clip by the whole-model norm, keep the
    head. Noise is drawn for the head only: the other layers' noise is independent and never reaches an attack.
  The noise key is fold_in(key, 1); the dropout key is `key`, as without LDP.
  """
  def transform(noise_key):
    return privacy.ldp(ldp.clip_norm, ldp.noise_std, key=noise_key, granularity=ldp.clip_granularity,
                       scope=ldp.clip_scope)

  def f(variables, x, y, key, class_weights=None):
    x = minmax_scale(x) if minmax else x
    noise_key = jax.random.fold_in(key, 1)
    if ldp.per_example and class_weights is not None:
      raise ValueError(_per_example_weights_refusal(ldp))
    if not ldp.needs_full_gradient:
      (_, feats), _ = apply_train(model, variables, x, key, return_features=True)
      head = _head(variables["params"])
      if ldp.per_example:
        tree = jax.vmap(lambda h, l: head_grad(h[None], l[None], head))(feats, y)
      else:
        tree = head_grad(feats, y, head, class_weights=class_weights)
      return privacy.privatize(tree, transform(noise_key))
    if ldp.per_example:
      one = lambda xn, yn, kn: _full_grad(model, variables, xn[None], yn[None], kn)
      tree = jax.vmap(one)(x, y, jax.vmap(lambda i: jax.random.fold_in(key, i + 2))(jnp.arange(len(y))))
      clipped = privacy.privatize(tree, privacy.clip(ldp.clip_norm, granularity="per_example"))["head"]
      g = LastLayerGrads(kernel=clipped["kernel"], bias=clipped.get("bias"))
      return privacy.privatize(g, privacy.gaussian_noise(ldp.noise_std, key=noise_key))
    g, norm = _head_grad_and_model_norm(model, variables, x, y, key, class_weights)
    return apply_batch_ldp(g, norm, ldp, noise_key)

  return f


def _per_example_weights_refusal(ldp: LdpConfig) -> str:
  return (f"class weights with per-example clipping ({ldp}) are not supported: a clipped example's share of a "
          "weighted loss is not defined here; use batch granularity (clip_granularity='batch') or the mean loss.")


def batch_grad_fn(model: nn.Module, *, method: str = "fast", minmax: bool = True, ldp: Optional[LdpConfig] = None
                  ) -> Callable[..., LastLayerGrads]:
  """Returns f(variables, x f32[N, T, ch], y i32[N], key, class_weights=None) -> LastLayerGrads for ONE batch
  (vmap it). `class_weights` f32[C]: the client's loss is the class-weighted mean (head.head_grad).

  With `ldp` (and not the identity) the result is what a client applying that LDP sends; `method` is then
  chosen by the LDP setting (see _private_batch_grad_fn).
  """
  if method not in METHODS:
    raise ValueError(f"unknown gradient method {method!r}; valid: {', '.join(METHODS)}.")
  if ldp is not None and not ldp.is_identity:
    return _private_batch_grad_fn(model, minmax, ldp)

  def fast(variables, x, y, key, class_weights=None):
    x = minmax_scale(x) if minmax else x
    (_, feats), _ = apply_train(model, variables, x, key, return_features=True)
    return head_grad(feats, y, _head(variables["params"]), class_weights=class_weights)

  def autodiff(variables, x, y, key, class_weights=None):
    x = minmax_scale(x) if minmax else x
    g = _full_grad(model, variables, x, y, key, class_weights)["head"]
    return LastLayerGrads(kernel=g["kernel"], bias=g.get("bias"))

  return fast if method == "fast" else autodiff


def last_layer_grads(model: nn.Module, variables: dict, windows: jax.Array, labels: jax.Array, keys: jax.Array,
                     *, method: str = "fast", minmax: bool = True, chunk_size: int = 16,
                     ldp: Optional[LdpConfig] = None, batched_variables: bool = False,
                     class_weights: Optional[jax.Array] = None) -> LastLayerGrads:
  """Last-layer gradients of K batches in one compiled call (the checks run first, outside it: label values
  are checked only when this is called outside jit).

  Args:
    model: a Flax module whose head is a Dense named "head" (jaxleak.models).
    variables: the global model's variables ({'params', ['batch_stats']}), shared by all batches.
    windows: f32[K, N, T, ch]; labels: i32[K, N]; keys: K PRNG keys (dropout), one per batch.
    method: 'fast' or 'autodiff' (see module docstring).
    minmax: per-batch min-max scaling (on for single step, as the reference).
    chunk_size: batches vmapped together; memory grows with chunk_size, not K (jax.lax.map). With
      chunk_size >= K it is one plain vmap: use that for full-model gradients (LDP with clip scope 'all',
      method 'autodiff'), which run 5-14x slower inside a lax.map on XLA:CPU (BUILD_NOTES.md; a
      PerformanceWarning says so when it happens).
    ldp: optional LdpConfig applied by every client before sending.
    batched_variables: variables carry a leading K axis (one global model per batch, e.g. trained LOSO folds).
    class_weights: optional f32[K, C] >= 0, one row per batch: that client's loss is the class-weighted mean
      (PyTorch's CrossEntropyLoss(weight=)); None: the plain mean, as in the papers. Not with per-example clipping.

  Returns:
    LastLayerGrads with kernel f32[K, D, C] and bias f32[K, C] (None without head bias).
  """
  check_batches(model, windows, labels, keys, what="last_layer_grads")
  check_options("last_layer_grads", variables, np.shape(windows)[0], minmax=minmax,
                batched_variables=batched_variables)
  if ldp is not None and not isinstance(ldp, LdpConfig):
    raise TypeError(f"last_layer_grads: ldp must be a jaxleak.privacy.LdpConfig (or None), got "
                    f"{type(ldp).__name__}.")
  if not is_int(chunk_size) or chunk_size < 1:
    raise ValueError(f"last_layer_grads: chunk_size must be a positive integer (batches vmapped together), got "
                     f"{chunk_size!r}.")
  class_weights = _check_per_batch_class_weights(class_weights, model, windows, "last_layer_grads")
  if class_weights is not None and ldp is not None and not ldp.is_identity and ldp.per_example:
    raise ValueError("last_layer_grads: " + _per_example_weights_refusal(ldp))
  with explain_variable_mismatch(model, windows, "last_layer_grads"):
    return _last_layer_grads(model, variables, windows, labels, keys, class_weights, method=method, minmax=minmax,
                             chunk_size=chunk_size, ldp=ldp, batched_variables=batched_variables)


@functools.partial(jax.jit, static_argnames=("model", "method", "minmax", "chunk_size", "ldp", "batched_variables"))
def _last_layer_grads(model, variables, windows, labels, keys, class_weights, *, method, minmax, chunk_size, ldp,
                      batched_variables):
  f = batch_grad_fn(model, method=method, minmax=minmax, ldp=ldp)
  if chunk_size >= windows.shape[0]:
    return jax.vmap(f, in_axes=(0 if batched_variables else None, 0, 0, 0, 0))(variables, windows, labels, keys,
                                                                             class_weights)
  full_backward = (ldp.needs_full_gradient if ldp is not None and not ldp.is_identity else method == "autodiff")
  if full_backward and jax.default_backend() == "cpu":
    warnings.warn(
        f"last_layer_grads: a full backward pass (method {method!r}, ldp {ldp}) over {windows.shape[0]} batches in "
        f"chunks of {chunk_size} runs inside a lax.map, which XLA:CPU executes 5-14x slower than the same work as "
        "one vmap per call; pass chunk_size >= the number of batches and split the batches over several calls "
        "(as jaxleak.runs.leakage.updates.in_calls does).", PerformanceWarning, stacklevel=3)
  if batched_variables:
    return jax.lax.map(lambda a: f(*a), (variables, windows, labels, keys, class_weights), batch_size=chunk_size)
  return jax.lax.map(lambda a: f(variables, *a), (windows, labels, keys, class_weights), batch_size=chunk_size)
