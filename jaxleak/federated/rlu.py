"""RLU's basis at an attacked model: the expected head gradient of one example of each label, averaged over a
simulated local training (the attacker cannot see the client's intermediate models, so it simulates them: Monte
Carlo over random auxiliary batches). See `jaxleak.attacks.rlu` for the linear model it feeds.

For a single-step update the basis is taken at the global model itself (averaged over `num_simulations` dropout
draws). For a multi-step update (LocalSteps: S steps of B at rate lr) each simulation runs S plain-SGD steps from
the global model on batches of B auxiliary examples with uniformly random labels and takes the basis before every
step; the result is the mean over steps and simulations, which matches the 'mean' gradient-equivalent (the
average of the S mini-batch gradients) when every window is used once (S B = N, the paper's settings); for the
'sum' equivalent it is S times that.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxleak.attacks.rlu import RLUBasis, average_bases, rlu_basis_from_features
from jaxleak.federated.apply import apply_train, split_variables, train_loss
from jaxleak.federated.multi_step import LocalSteps
from jaxleak.federated.single_step import _head, minmax_scale


def scale_like_batches(x: jax.Array, key: jax.Array, batch: int) -> jax.Array:
  """Min-max scales x f32[m, ...] as the clients' pipeline scales its batches: over random groups of `batch`
  examples (the last group wraps around), not over all m at once (a wider range would shrink every input)."""
  m = x.shape[0]
  groups = -(-m // batch)
  idx = jax.random.permutation(key, m)[jnp.arange(groups * batch) % m].reshape(groups, batch)
  scaled = jax.vmap(minmax_scale)(x[idx])
  return x.at[idx.reshape(-1)].set(scaled.reshape((groups * batch,) + x.shape[1:]))


def _basis_at(model, variables, aux_x, key, minmax_batch):
  c, n = aux_x.shape[:2]
  k_scale, k_drop = jax.random.split(key)
  flat = aux_x.reshape((c * n,) + aux_x.shape[2:])
  flat = flat if minmax_batch is None else scale_like_batches(flat, k_scale, minmax_batch)
  (_, features), _ = apply_train(model, variables, flat, k_drop, return_features=True)
  return rlu_basis_from_features(features.reshape(c, n, -1), _head(variables["params"]))


@functools.partial(jax.jit, static_argnames=("model", "local", "num_simulations", "minmax_batch"))
def simulate_rlu_basis(model: nn.Module, variables: dict, aux_x: jax.Array, key: jax.Array, *,
                       local: Optional[LocalSteps] = None, num_simulations: int = 4,
                       minmax_batch: Optional[int] = None) -> RLUBasis:
  """RLUBasis (kernel f32[C, D, C], bias f32[C, C] or None) for updates computed from `variables`.

  Args:
    model, variables: the attacked (global) model; train mode as the clients' updates.
    aux_x: f32[C, n, ...] the attacker's auxiliary examples, n of each label (row j: label j).
    key: PRNG key (dropout and the simulated batches).
    local: the clients' local training (None: single step).
    num_simulations: Monte Carlo draws averaged.
    minmax_batch: when the clients min-max scale each batch (the HAR pipeline), its size (N for single step,
      B for multi-step): the auxiliary inputs are scaled in random groups of that size. None: no scaling.
  """
  if isinstance(num_simulations, bool) or not isinstance(num_simulations, int) or num_simulations < 1:
    raise ValueError(f"simulate_rlu_basis: num_simulations must be a positive integer, got {num_simulations!r}.")
  if minmax_batch is not None and (isinstance(minmax_batch, bool) or not isinstance(minmax_batch, int)
                                   or minmax_batch < 1):
    raise ValueError(f"simulate_rlu_basis: minmax_batch must be None or a positive integer, got {minmax_batch!r}.")
  if aux_x.ndim < 3 or aux_x.shape[0] != getattr(model, "num_classes", aux_x.shape[0]):
    raise ValueError(f"simulate_rlu_basis: aux_x must be [C, n, ...] with one row per class of the model "
                     f"(C = {getattr(model, 'num_classes', '?')}); got {aux_x.shape}.")
  c, n = aux_x.shape[:2]
  steps = 1 if local is None else local.steps
  aux_y = jnp.broadcast_to(jnp.arange(c)[:, None], (c, n)).reshape(-1)
  flat_x = aux_x.reshape((c * n,) + aux_x.shape[2:])

  def one_simulation(k):
    params, state = split_variables(variables)
    bases = []
    for s in range(steps):                  # S is small and static (unrolled, as the clients' updates)
      k_basis, k_batch, k_drop = jax.random.split(jax.random.fold_in(k, s), 3)
      v = {**state, "params": params}
      bases.append(_basis_at(model, v, aux_x, k_basis, minmax_batch))
      if local is not None and s + 1 < steps:
        labels = jax.random.randint(k_batch, (local.batch_size,), 0, c)
        which = jax.random.randint(jax.random.fold_in(k_batch, 1), (local.batch_size,), 0, n)
        idx = labels * n + which
        xb = flat_x[idx] if minmax_batch is None else minmax_scale(flat_x[idx])
        grads, state = jax.grad(train_loss(model, state, xb, aux_y[idx], k_drop), has_aux=True)(params)
        params = jax.tree.map(lambda p, g: p - local.lr * g, params, grads)
    return average_bases(jax.tree.map(lambda *xs: jnp.stack(xs), *bases))

  basis = average_bases(jax.vmap(one_simulation)(jax.random.split(key, num_simulations)))
  if local is not None and local.equivalent == "sum":      # the attacks read sum_s g_s, S times the mean
    basis = jax.tree.map(lambda a: a * local.steps, basis)
  return basis
