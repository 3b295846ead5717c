"""Single-step (FedSGD) client updates: the last-layer gradient of the mean CE for many batches at once.

Every batch is an independent update at the same global variables (spec 3.2): optional per-batch min-max scaling,
the model in train mode (dropout active, BatchNorm on batch statistics, whose updates are discarded), mean
cross-entropy, gradient w.r.t. the classifier head.

Two paths that agree to float tolerance (tested):
  'fast'      forward pass only; dL/dW, dL/db in closed form from the head's input features (jaxleak.head).
  'autodiff'  jax.grad of the loss w.r.t. ALL parameters, head slice taken afterwards (what a client sends).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from jaxleak.head import head_grad
from jaxleak.types import LastLayerGrads, LastLayerParams

METHODS = ("fast", "autodiff")


def minmax_scale(x: jax.Array) -> jax.Array:
  """Per-batch global min-max scaling (spec 3.2): (x - min) / (max - min) over the whole batch tensor."""
  lo, hi = jnp.min(x), jnp.max(x)
  return (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)


def _head(params) -> LastLayerParams:
  head = params["head"]
  return LastLayerParams(kernel=head["kernel"], bias=head.get("bias"))


def _apply_train(model, variables, x, key, **kwargs):
  mutable = [k for k in variables if k != "params"]
  if not mutable:
    return model.apply(variables, x, train=True, rngs={"dropout": key}, **kwargs)
  return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=mutable, **kwargs)[0]


def batch_grad_fn(model: nn.Module, *, method: str = "fast", minmax: bool = True
                  ) -> Callable[[dict, jax.Array, jax.Array, jax.Array], LastLayerGrads]:
  """Returns f(variables, x f32[N, T, ch], y i32[N], key) -> LastLayerGrads for ONE batch (vmap it)."""
  if method not in METHODS:
    raise ValueError(f"unknown gradient method {method!r}; valid: {', '.join(METHODS)}.")

  def fast(variables, x, y, key):
    x = minmax_scale(x) if minmax else x
    _, feats = _apply_train(model, variables, x, key, return_features=True)
    return head_grad(feats, y, _head(variables["params"]))

  def autodiff(variables, x, y, key):
    x = minmax_scale(x) if minmax else x

    def loss(params):
      logits = _apply_train(model, {**variables, "params": params}, x, key)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    g = jax.grad(loss)(variables["params"])["head"]
    return LastLayerGrads(kernel=g["kernel"], bias=g.get("bias"))

  return fast if method == "fast" else autodiff


@functools.partial(jax.jit, static_argnames=("model", "method", "minmax", "chunk_size"))
def last_layer_grads(model: nn.Module, variables: dict, windows: jax.Array, labels: jax.Array, keys: jax.Array,
                     *, method: str = "fast", minmax: bool = True, chunk_size: int = 16) -> LastLayerGrads:
  """Last-layer gradients of K batches in one compiled call.

  Args:
    model: a Flax module whose head is a Dense named "head" (jaxleak.models).
    variables: the global model's variables ({'params', ['batch_stats']}), shared by all batches.
    windows: f32[K, N, T, ch]; labels: i32[K, N]; keys: K PRNG keys (dropout), one per batch.
    method: 'fast' or 'autodiff' (see module docstring).
    minmax: per-batch min-max scaling (on for single step, as the reference).
    chunk_size: batches vmapped together; memory grows with chunk_size, not K (jax.lax.map).

  Returns:
    LastLayerGrads with kernel f32[K, D, C] and bias f32[K, C] (None without head bias).
  """
  if windows.ndim != 4 or labels.shape != windows.shape[:2] or keys.shape[:1] != windows.shape[:1]:
    raise ValueError(f"expected windows [K, N, T, ch], labels [K, N] and K keys; got {windows.shape}, "
                     f"{labels.shape}, {keys.shape}.")
  f = batch_grad_fn(model, method=method, minmax=minmax)
  return jax.lax.map(lambda a: f(variables, *a), (windows, labels, keys), batch_size=chunk_size)
