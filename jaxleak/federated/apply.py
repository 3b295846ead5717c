"""The one place a model is applied in train mode and turned into a loss (every update function uses it).

Train mode means: dropout active with the given key (rng name 'dropout'), BatchNorm normalising with the batch's
statistics and returning updated running statistics. Non-param collections ('batch_stats') are the model's
*state*: they are passed in and returned, never silently dropped.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import errors as flax_errors
from flax import linen as nn

from jaxleak.head import check_class_weights
from jaxleak.types import values_outside


#: How a client turns its examples into one loss. "mean": the papers' mean CE. "class_weighted": PyTorch's
#: CrossEntropyLoss(weight=w) with w the sklearn 'balanced' weights of the client's own examples (n / (k n_c) for its
#: k present classes), the weighted loss the HAR paper's discussion warns may leak rare classes more.
CLIENT_LOSSES = ("mean", "class_weighted")


def split_variables(variables: dict) -> tuple[dict, dict]:
  """{'params': ..., others} -> (params, state) where state holds the non-param collections ({} if none)."""
  return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def apply_train(model: nn.Module, variables: dict, x: jax.Array, key: jax.Array, **kwargs):
  """The model in train mode on x. Returns (output, new_state): output as the model returns it (logits, or
  (logits, features) with return_features=True); new_state = the non-param collections after the batch ({} when
  the model has none)."""
  state = {k: v for k, v in variables.items() if k != "params"}
  if not state:
    return model.apply(variables, x, train=True, rngs={"dropout": key}, **kwargs), {}
  out, updated = model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=list(state), **kwargs)
  return out, {**state, **updated}


def _check_ce(logits, labels, what: str, **per_example) -> None:
  """Static shapes of a loss: labels [n] for logits [n, C] (and each of `per_example` [n] too)."""
  n = np.shape(logits)[:-1]
  if np.ndim(logits) < 2 or np.shape(labels) != n:
    raise ValueError(f"{what}: logits must be [n, C] and labels [n]; got {np.shape(logits)} and {np.shape(labels)}.")
  for name, value in per_example.items():
    if np.shape(value) != n:
      raise ValueError(f"{what}: {name} must be [n] = {n}, one per example; got {np.shape(value)}.")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"{what}: labels must be integer class ids, got dtype {jnp.result_type(labels)}.")
  outside = values_outside(labels, np.shape(logits)[-1], per_example.get("mask"))   # masked slots: padding
  if outside is not None:
    raise ValueError(f"{what}: labels must be class ids in [0, C = {np.shape(logits)[-1]}), got values from "
                     f"{outside[0]} to {outside[1]} (an id outside would be scored as no class: a NaN or wrong loss).")


def integer_label_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy, logits f32[n, C], labels i32[n] -> f32[n], as
  `optax.softmax_cross_entropy_with_integer_labels` (log-normaliser minus the label's logit).

  On XLA:CPU it is optax's. Elsewhere the label's logit is read through a one-hot product instead of a gather, so
  that its gradient is an elementwise product where the gather's is a float scatter-add, which XLA:GPU runs with
  atomics, or, asked for determinism (`jaxleak.gpu_numerics`), as a loop of one index at a time (every backward
  pass would then loop over the batch, and a vmapped Eavesdrop round over every participant's batch). The same
  values up to float32 round-off (a different program, so not bitwise; on the CPU the results stay those of
  earlier versions, bit for bit)."""
  if jax.default_backend() == "cpu":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(logits * onehot, axis=-1)


def mean_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch: logits f32[n, C], labels i32[n] -> f32[]."""
  _check_ce(logits, labels, "mean_ce")
  return jnp.mean(integer_label_ce(logits, labels))


def masked_mean_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean CE over the examples with mask 1 (f32[n]); 0 when none is valid."""
  _check_ce(logits, labels, "masked_mean_ce", mask=mask)
  ce = integer_label_ce(logits, labels)
  ce = jnp.where(mask != 0, ce, 0.0)            # a masked slot's label may be anything (its CE NaN): it adds 0
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def class_weighted_ce(logits: jax.Array, labels: jax.Array, class_weights: jax.Array) -> jax.Array:
  """PyTorch CrossEntropyLoss(weight=w): sum_n w[y_n] CE_n / sum_n w[y_n] (class_weights f32[C])."""
  _check_ce(logits, labels, "class_weighted_ce")
  class_weights = check_class_weights(class_weights, np.shape(logits)[-1], "class_weighted_ce")
  ce = integer_label_ce(logits, labels)
  w = class_weights[labels]
  return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)


def masked_class_weighted_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                             class_weights: jax.Array) -> jax.Array:
  """`class_weighted_ce` over the examples with mask 1 (f32[n]): sum_n m_n w[y_n] CE_n / sum_n m_n w[y_n]; 0 when
  no example is valid. A masked slot's label may be anything (padding): it adds 0."""
  _check_ce(logits, labels, "masked_class_weighted_ce", mask=mask)
  class_weights = check_class_weights(class_weights, np.shape(logits)[-1], "masked_class_weighted_ce")
  ce = integer_label_ce(logits, labels)
  w = jnp.where(mask != 0, class_weights[jnp.clip(labels, 0, np.shape(logits)[-1] - 1)] * mask, 0.0)
  return jnp.sum(jnp.where(w != 0, w * ce, 0.0)) / jnp.maximum(jnp.sum(w), 1e-12)


def balanced_class_weights(labels: jax.Array, mask: jax.Array, num_classes: int) -> jax.Array:
  """sklearn's 'balanced' weights of the examples with mask 1, traceable: f32[C] with n / (k n_c) for each of the k
  classes present among the n valid examples (n_c of class c), 0 for absent classes; all 0 when none is valid.

  Under PyTorch's CrossEntropyLoss(weight=w) every present class then carries the same total weight n / k.
  labels i32[M], mask bool or f32[M].
  """
  m = jnp.asarray(mask).astype(jnp.float32)
  counts = jnp.sum(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * m[:, None], axis=0)
  present = counts > 0
  k = jnp.sum(present.astype(jnp.float32))
  return jnp.where(present, jnp.sum(m) / jnp.maximum(k * counts, 1.0), 0.0)


def train_loss(model: nn.Module, state: dict, x: jax.Array, y: jax.Array, key: jax.Array,
               reduce: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None
               ) -> Callable[[dict], tuple[jax.Array, dict]]:
  """params -> (loss, new_state): the train-mode loss of one batch, for jax.grad(..., has_aux=True).

  `reduce(logits, labels)` turns logits into the scalar loss (default: mean_ce); pass a closure for masked or
  class-weighted losses.
  """
  reduce = reduce or mean_ce

  def loss(params):
    logits, new_state = apply_train(model, {**state, "params": params}, x, key)
    return reduce(logits, y), new_state

  return loss


def check_batches(model: nn.Module, windows, labels, keys=None, *, what: str) -> None:
  """K batches for an update function: windows [K, N, ...], labels integer [K, N] in [0, model.num_classes), and
  (if given) K keys. Label values are checked when concrete (under jit they cannot be inspected); an out-of-range
  label would one-hot to zeros and give a gradient of no real batch."""
  k = np.shape(windows)[:1]
  if (np.ndim(windows) < 3 or np.shape(labels) != np.shape(windows)[:2]
      or (keys is not None and np.shape(keys)[:1] != k)):
    raise ValueError(f"{what}: expected windows [K, N, T, ch], labels [K, N]" + (" and K keys" if keys is not None
                     else "") + f"; got {np.shape(windows)}, {np.shape(labels)}"
                     + (f", {np.shape(keys)}" if keys is not None else "") + ".")
  if np.shape(windows)[1] == 0:
    raise ValueError(f"{what}: batches of no windows (N = 0, windows {np.shape(windows)}): the mean loss of no "
                     "samples has no gradient; give each update at least one window.")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"{what}: labels must be integer class ids, got dtype {jnp.result_type(labels)}.")
  check_class_ids(model, labels, "labels", what)


def check_options(what: str, variables, num_batches: int, *, minmax, batched_variables) -> None:
  """The switches of an update function are bools (a string such as "no" would read as on), and variables given as
  batched carry a leading axis of one model per batch on every leaf."""
  for name, value in (("minmax", minmax), ("batched_variables", batched_variables)):
    if not isinstance(value, (bool, np.bool_)):
      raise TypeError(f"{what}: {name} must be True or False, got {value!r}.")
  if batched_variables:
    leading = {np.shape(leaf)[:1] for leaf in jax.tree.leaves(variables)}
    if leading != {(num_batches,)}:
      raise ValueError(f"{what}: batched_variables=True needs one model per batch, a leading axis of {num_batches} "
                       f"on every variable; got leading sizes {sorted(leading)}. Stack the models (jax.tree.map("
                       "lambda *a: jnp.stack(a), *models)) or pass batched_variables=False for one shared model.")


def check_class_ids(model: nn.Module, values, name: str, what: str) -> None:
  """Concrete class ids `values` lie in [0, model.num_classes) (a label past C would one-hot to zeros)."""
  c = getattr(model, "num_classes", None)
  outside = None if c is None else values_outside(values, c)
  if outside:
    raise ValueError(f"{what}: {name} must be in [0, {c}) for a model of {c} classes; got values from {outside[0]} "
                     f"to {outside[1]}.")


@contextlib.contextmanager
def explain_variable_mismatch(model: nn.Module, windows, what: str):
  """Turns Flax's scope errors (variables made for another model or input shape) into one ValueError that says
  so; raised while tracing, before any work."""
  try:
    yield
  except (flax_errors.ScopeParamShapeError, flax_errors.ScopeCollectionNotFound,
          flax_errors.ScopeParamNotFoundError) as e:
    detail = str(e).split(" (https://")[0]
    raise ValueError(f"{what}: the variables do not fit {type(model).__name__} on windows of shape "
                     f"{tuple(np.shape(windows)[2:])} ({detail}). Were they made for another model, number of "
                     "classes or channels? Make them with jaxleak.models.init(model, key, window, channels) for "
                     "these windows.") from None
