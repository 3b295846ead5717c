"""Weight-gradient attacks: LLG and LLG* (Wainakh et al., PETS 2022) and the HAR code's variants.

Signal: r[c] = sum_j dL/dW[j, c] (the row sums of the PyTorch weight gradient, i.e. sums over axis 0 of the Flax
kernel gradient). A class present in the batch tends to have r[c] < 0, and r[c] is roughly proportional to its
count.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxleak.attacks import _common
from jaxleak.attacks.registry import register
from jaxleak.head import head_grad
from jaxleak.types import (LastLayerGrads, LastLayerParams, NumSamples, check_prng_key, is_concrete,
                           is_int)


def _row_sums(grads: LastLayerGrads) -> jax.Array:
  return jnp.sum(grads.kernel.astype(jnp.float32), axis=0)


def _llg_counts(g, impact, num_samples, stale_index):
  c = g.shape[0]
  present = g < 0
  stage1 = _common.keep_first(present.astype(jnp.int32), num_samples)
  return _common.two_stage(g, present, impact, num_samples, stage1_counts=stage1,
                           decrement_index=(c - 1) if stale_index else None)


@register("llg", signal="weight", summary="LLG (Wainakh et al.), stage 2 raises the selected class")
def llg(grads: LastLayerGrads, num_samples: NumSamples, *, stale_index: bool = False) -> jax.Array:
  """LLG: label counts from the weight-gradient row sums.

  impact m = (sum of the negative row sums) * (1 + 1/C) / N. Stage 1 takes every class with a negative row sum
  (index order; the first N if there are more) and raises it by |m|; stage 2 repeatedly takes argmin and raises
  the selected class by |m| until there are N labels.

  Args:
    grads: one LastLayerGrads (kernel f32[D, C]; bias unused).
    num_samples: N, the number of samples behind the gradient (a static int, or a traced integer scalar under
      vmap: one N per update).
    stale_index: reproduce the HAR/breaching code (spec 2.1): stage 2 raises class C-1 instead of the
      selected class, so all remaining slots go to one class. Registered as `llg_har`.

  Returns:
    i32[C] predicted counts summing to N.

  Example (two classes present; K gradients at once with vmap):
    >>> import jax.numpy as jnp
    >>> g = LastLayerGrads(kernel=jnp.array([[-0.3, -0.1, 0.4]]), bias=None)
    >>> llg(g, 4).tolist()
    [3, 1, 0]
    >>> many = LastLayerGrads(kernel=jnp.stack([g.kernel] * 5), bias=None)
    >>> jax.jit(jax.vmap(lambda x: llg(x, 4)))(many).shape
    (5, 3)
  """
  n = _common.validate(grads, num_samples, "llg_har" if stale_index else "llg")
  g = _row_sums(grads)
  c = g.shape[0]
  impact = jnp.sum(jnp.where(g < 0, g, 0.0)) * (1.0 + 1.0 / c) / n
  return _common.guard_nonfinite(_llg_counts(g, impact, n, stale_index), grads, num_samples=num_samples)


@register("llg_har", signal="weight", summary="LLG as the HAR code runs it (stale-index stage 2)")
def llg_har(grads: LastLayerGrads, num_samples: NumSamples) -> jax.Array:
  """LLG as the HAR reference code runs it (`wainakh-simple`, stale-index stage 2; spec 2.1)."""
  return llg(grads, num_samples, stale_index=True)


class LLGStarParams(NamedTuple):
  """Model-based estimates for LLG*: `impact` (scalar, negative) and per-class `offsets` f32[C]."""
  impact: jax.Array
  offsets: jax.Array


def _dummy_inputs(key, shape, distribution):
  if distribution == "normal":
    return jax.random.normal(key, shape)
  if distribution == "uniform":
    return jax.random.uniform(key, shape)
  raise ValueError(f"unknown dummy distribution {distribution!r}; use 'normal' or 'uniform'.")


def estimate_llg_star_params(penultimate_fn: Callable[[jax.Array], jax.Array], head: LastLayerParams,
                             input_shape: Sequence[int], num_samples: int, key: jax.Array, *,
                             method: str = "wainakh", dummy: str = "normal") -> LLGStarParams:
  """Estimates LLG*'s impact and offsets by pushing dummy batches through the real model.

  Args:
    penultimate_fn: maps inputs f32[n, *input_shape] to penultimate features f32[n, D] (the model in eval mode,
      at the global params being attacked).
    head: the classifier head's params at those global params.
    input_shape: shape of one input, e.g. (50, 6).
    num_samples: N of the attacked updates.
    key: PRNG key for the dummy inputs.
    method:
      'wainakh' (default; Wainakh et al.'s LLG* with dummy inputs): for every class k a batch of N dummies all
        labelled k gives row sums rho_k = sum_j dL/dW[j, :]. offsets[c] = mean over k != c of rho_k[c] (the row
        sum of class c when it is absent); impact = mean over c of (rho_c[c] - offsets[c]) / N (one instance).
      'har' (spec 2.2, the HAR code's `wainakh-whitebox`): impact = mean over k of (sum of ALL entries of the
        class-k dummy gradient) * (1 + 1/C) / N; offsets[k] = sum of all entries of the gradient of C-1 dummies
        labelled with every class but k, / (C-1). Both are ~0 because softmax-CE weight gradients sum to 0 over
        classes; the variant exists to reproduce the paper's numbers.
    dummy: 'normal' (standard normal, as both references) or 'uniform' ([0, 1), the range of min-max scaled
      inputs).
  """
  n = _common.check_num_samples(num_samples, "estimate_llg_star_params", traced_ok=False)
  if method not in ("wainakh", "har"):
    raise ValueError(f"unknown LLG* estimation method {method!r}; use 'wainakh' or 'har'.")
  if dummy not in ("normal", "uniform"):
    raise ValueError(f"unknown dummy distribution {dummy!r}; use 'normal' or 'uniform'.")
  if not isinstance(head, LastLayerParams):
    raise TypeError(f"estimate_llg_star_params: head must be a jaxleak.LastLayerParams (e.g. "
                    f"jaxleak.models.head_params(params)), got {type(head).__name__}.")
  if (not isinstance(input_shape, (tuple, list)) or not input_shape
      or any(not is_int(d) or d < 1 for d in input_shape)):
    raise ValueError(f"estimate_llg_star_params: input_shape must be one input's shape, positive integers such as "
                     f"(50, 6); got {input_shape!r}.")
  check_prng_key(key, "estimate_llg_star_params")
  c = head.kernel.shape[-1]
  input_shape = tuple(int(d) for d in input_shape)
  k_imp, k_off = jax.random.split(key)
  classes = jnp.arange(c)

  def class_grad(x, labels):
    return head_grad(penultimate_fn(x), labels, head).kernel       # [D, C]

  x_imp = _dummy_inputs(k_imp, (c, n) + input_shape, dummy)
  same_labels = jnp.broadcast_to(classes[:, None], (c, n))
  g_imp = jax.vmap(class_grad)(x_imp, same_labels)                  # [C(k), D, C]

  if method == "wainakh":
    rho = jnp.sum(g_imp, axis=1)                                     # [k, c]
    own = jnp.diagonal(rho)
    offsets = (jnp.sum(rho, axis=0) - own) / (c - 1)
    impact = jnp.mean(own - offsets) / n
  else:                                                              # "har"
    impact = jnp.mean(jnp.sum(g_imp, axis=(1, 2))) * (1.0 + 1.0 / c) / n
    # Row k: the C-1 classes other than k in ascending order.
    others = jnp.stack([jnp.concatenate([classes[:k], classes[k + 1:]]) for k in range(c)])
    x_off = _dummy_inputs(k_off, (c, c - 1) + input_shape, dummy)
    g_off = jax.vmap(class_grad)(x_off, others)
    offsets = jnp.sum(g_off, axis=(1, 2)) / (c - 1)
  params = LLGStarParams(impact=impact, offsets=offsets)
  if is_concrete(impact) and not all(bool(jnp.all(jnp.isfinite(x))) for x in params):
    raise ValueError("estimate_llg_star_params: the estimates are not finite (NaN or Inf): penultimate_fn or the "
                     "head gave non-finite values on the dummy inputs. Check the model's parameters (and, for "
                     "dummy='normal', that the model accepts unscaled inputs).")
  return params


def rescale_llg_star_params(params: LLGStarParams, from_num_samples: NumSamples, to_num_samples) -> LLGStarParams:
  """LLG*'s estimates made at N0 = `from_num_samples`, for updates of N = `to_num_samples` samples.

  Both estimators ('wainakh' and 'har') divide a mean over dummy inputs by N to get one instance's impact, and
  their offsets do not depend on N; so estimates made at N0 serve any N as impact * N0 / N with the same offsets
  (the same estimator, averaged over N0 dummies per class instead of N). `to_num_samples` may be traced (one N per
  update, under vmap): estimate once, at the largest N, and rescale per update. Equal to a fresh estimate at N
  where the dummies do not matter (tested on a model of constant features).

  >>> import jax.numpy as jnp
  >>> p = LLGStarParams(impact=jnp.float32(-0.5), offsets=jnp.ones(3))
  >>> rescale_llg_star_params(p, 100, 50).impact.item(), rescale_llg_star_params(p, 100, 50).offsets.tolist()
  (-1.0, [1.0, 1.0, 1.0])
  """
  if not isinstance(params, LLGStarParams):
    raise TypeError(f"rescale_llg_star_params: params must be an LLGStarParams from estimate_llg_star_params(), got "
                    f"{type(params).__name__}.")
  n0 = _common.check_num_samples(from_num_samples, "rescale_llg_star_params (from_num_samples)", traced_ok=False)
  n = _common.check_num_samples(to_num_samples, "rescale_llg_star_params (to_num_samples)")
  ratio = _common.as_float(n0) / _common.as_float(n)         # exactly 1.0 when N = N0: the estimate unchanged
  return LLGStarParams(impact=params.impact * ratio, offsets=params.offsets)


def _check_star_params(params, c, attack):
  if not isinstance(params, LLGStarParams):
    raise TypeError(f"{attack}: star_params must be an LLGStarParams from estimate_llg_star_params(), got "
                    f"{type(params).__name__}.")
  if jnp.shape(params.offsets) != (c,) or jnp.ndim(params.impact) != 0:
    raise ValueError(f"{attack}: star_params has offsets {jnp.shape(params.offsets)} and impact "
                     f"{jnp.shape(params.impact)}; expected offsets [{c}] and a scalar impact (estimate them "
                     "for this model's head).")


@register("llg_star", signal="weight", requires=("star_params",), star_method="wainakh",
          summary="LLG* (Wainakh et al.): impact and offsets from dummy batches through the model")
def llg_star(grads: LastLayerGrads, num_samples: NumSamples, *, star_params: LLGStarParams) -> jax.Array:
  """LLG* (Wainakh et al.): LLG on offset-corrected row sums with a model-estimated impact.

  g = r - offsets; stage 1 takes classes with g < 0 and raises them by |impact|; stage 2 greedy as in LLG.
  `star_params` comes from `estimate_llg_star_params(..., method='wainakh')`; estimate once per global model
  and reuse it for every gradient computed at that model (for updates of other N: `rescale_llg_star_params`).
  """
  n = _common.validate(grads, num_samples, "llg_star", extra={"star_params": star_params})
  _check_star_params(star_params, grads.kernel.shape[-1], "llg_star")
  g = _row_sums(grads) - star_params.offsets
  # LLG's premise is a negative impact (non-negative penultimate features). A positive estimate means the features
  # sum to a negative value on average (e.g. DeepConvLSTM's tanh LSTM outputs), which reverses every sign: run on
  # the negated signal, so that the estimated direction decides, as the estimate is meant to (BUILD_NOTES.md).
  flip = star_params.impact > 0
  g = jnp.where(flip, -g, g)
  impact = jnp.where(flip, -star_params.impact, star_params.impact)
  return _common.guard_nonfinite(_llg_counts(g, impact, n, stale_index=False), grads, star_params,
                                 num_samples=num_samples)


@register("llg_star_har", signal="weight", requires=("star_params",), star_method="har",
          summary="LLG* as the HAR code runs it (whole-matrix sums, stale index)")
def llg_star_har(grads: LastLayerGrads, num_samples: NumSamples, *, star_params: LLGStarParams) -> jax.Array:
  """LLG* exactly as the HAR code runs it (spec 2.2): stage 1 on the raw row sums, then subtract offsets,
  then the stale-index stage 2. Use `estimate_llg_star_params(..., method='har')`."""
  n = _common.validate(grads, num_samples, "llg_star_har", extra={"star_params": star_params})
  g = _row_sums(grads)
  c = g.shape[0]
  _check_star_params(star_params, c, "llg_star_har")
  m = star_params.impact
  present = g < 0
  stage1 = _common.keep_first(present.astype(jnp.int32), n)
  g = jnp.where(present, g - m, g) - star_params.offsets
  counts = _common.greedy_fill(g, stage1, m, n, decrement_index=c - 1)
  return _common.guard_nonfinite(counts, grads, star_params, num_samples=num_samples)
