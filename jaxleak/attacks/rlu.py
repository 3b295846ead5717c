"""RLU (Chen and Vikalo, "Recovering Labels from Local Updates in Federated Learning", ICML 2024): label counts
as the least-squares solution of a linear model of the output layer's update.

The update of the head over local training is, to first order, a sum of per-example head gradients, and the
expected head gradient of one example of label j at parameters theta is

  M_theta[j] = E_{x ~ label j} [ h(x) (softmax(z(x)) - e_j)^T ]        (kernel f32[D, C]; bias: p - e_j)

where the off-diagonal softmax mass is what the paper calls the model's "erroneous confidence". With n_j examples
of label j among the update's N, the gradient-equivalent g (the mean gradient) is approximately

  g = (1/N) sum_j n_j Mbar[j],      Mbar = M averaged over the local training trajectory,

a linear system in n with (D + 1) C equations and C unknowns. The attacker estimates M from auxiliary labelled
data pushed through the model; for multi-step updates it cannot see the client's intermediate models, so it
simulates local training (Monte Carlo over random auxiliary batches) and averages M over the simulated steps
(`jaxleak.federated.rlu.simulate_rlu_basis`). This module holds the pure parts: the basis from model outputs and
the solve.

The least squares are solved subject to sum_j n_j = N (a KKT system, as iLRG adds the same equation): the system
alone is nearly singular along the model's mean prediction (an untrained model's per-label gradients are nearly
dependent). Negatives are clipped to 0 and the counts rounded by largest remainder. Like iLRG, RLU reads the
gradient's scale: norm clipping (LDP) biases it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxleak.attacks import _common
from jaxleak.attacks.registry import register
from jaxleak.head import head_logits
from jaxleak.types import LastLayerGrads, LastLayerParams, NumSamples


class RLUBasis(NamedTuple):
  """The expected head gradient of ONE example of each label: kernel f32[C, D, C] (row j: an example of label j),
  bias f32[C, C] or None (a head without bias); and the spread of one example's gradient around it, pooled over
  labels (kernel_std f32[D, C], bias_std f32[C] or None), which weights the equations. Leading batch axes allowed
  (one basis per attacked model). Without stds (None) the equations are weighted equally."""
  kernel: jax.Array
  bias: Optional[jax.Array]
  kernel_std: Optional[jax.Array] = None
  bias_std: Optional[jax.Array] = None


def rlu_basis_from_features(features: jax.Array, head: LastLayerParams,
                            mask: Optional[jax.Array] = None) -> RLUBasis:
  """The basis at one model: features f32[C, n, D] of n auxiliary examples of each label j (row j), pushed
  through the model as the clients' updates are (train mode, if that is how updates are computed), and the
  head's params at that model. `mask` bool[C, n] excludes padded examples."""
  c = features.shape[0]
  if features.ndim != 3 or features.shape[-1] != head.kernel.shape[0]:
    raise ValueError(f"rlu: features must be [C, n, D] with D = {head.kernel.shape[0]}, the head's input width "
                     f"(kernel {head.kernel.shape}); got {features.shape}. Take them at the head's input "
                     "(return_features=True) of the same model.")
  if head.kernel.shape[-1] != c:
    raise ValueError(f"rlu: features hold {c} labels but the head has {head.kernel.shape[-1]} classes; give "
                     "auxiliary examples of every class, [C, n, D].")
  features = features.astype(jnp.float32)
  w = jnp.ones(features.shape[:2], jnp.float32) if mask is None else mask.astype(jnp.float32)
  w = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)                    # [C, n] mean weights per label
  probs = jax.nn.softmax(jax.vmap(lambda f: head_logits(f, head))(features).astype(jnp.float32), axis=-1)
  delta = probs - jnp.eye(c, dtype=jnp.float32)[:, None, :]                       # [C(j), n, C(i)]
  kernel = jnp.einsum("jn,jnd,jni->jdi", w, features, delta)
  second = jnp.einsum("jn,jnd,jni->jdi", w, features ** 2, delta ** 2)
  kernel_std = jnp.sqrt(jnp.mean(jnp.maximum(second - kernel ** 2, 0.0), axis=0))
  if head.bias is None:
    return RLUBasis(kernel=kernel, bias=None, kernel_std=kernel_std, bias_std=None)
  bias = jnp.einsum("jn,jni->ji", w, delta)
  bias_std = jnp.sqrt(jnp.mean(jnp.maximum(jnp.einsum("jn,jni->ji", w, delta ** 2) - bias ** 2, 0.0), axis=0))
  return RLUBasis(kernel=kernel, bias=bias, kernel_std=kernel_std, bias_std=bias_std)


def average_bases(bases: RLUBasis) -> RLUBasis:
  """The mean over a leading axis (simulated steps or Monte Carlo draws)."""
  if not isinstance(bases, RLUBasis):
    raise TypeError(f"average_bases: bases must be an RLUBasis with a leading axis of draws (e.g. jax.vmap of "
                    f"rlu_basis_from_features), got {type(bases).__name__}.")
  if jnp.ndim(bases.kernel) < 4:
    raise ValueError(f"average_bases: bases.kernel must be [draws, C, D, C] (one basis per draw), got shape "
                     f"{jnp.shape(bases.kernel)}: a single basis has nothing to average.")
  return jax.tree.map(lambda a: jnp.mean(a, axis=0), bases)


def _design(grads: LastLayerGrads, basis: RLUBasis):
  """(A f32[E, C], y f32[E]): the stacked kernel (and bias) equations, columns = labels, each equation divided
  by the spread of one example's gradient in it (a weighted least squares: an equation whose per-example
  gradient varies little, such as the bias of an untrained model, is trusted more)."""
  c = basis.kernel.shape[0]
  use_bias = grads.bias is not None and basis.bias is not None
  cols = [basis.kernel.reshape(c, -1)] + ([basis.bias] if use_bias else [])
  rows = [grads.kernel.reshape(-1)] + ([grads.bias] if use_bias else [])
  a = jnp.concatenate(cols, axis=1).T.astype(jnp.float32)
  y = jnp.concatenate(rows).astype(jnp.float32)
  if basis.kernel_std is not None and (basis.bias_std is not None or not use_bias):
    std = jnp.concatenate([basis.kernel_std.reshape(-1)] + ([basis.bias_std] if use_bias else []))
    std = std + 1e-3 * jnp.max(std) + 1e-30
    a, y = a / std[:, None], y / std
  return a, y


def rlu_solution(grads: LastLayerGrads, num_samples: NumSamples, *, rlu_basis: RLUBasis) -> jax.Array:
  """The real-valued weighted least-squares estimate f32[C] of N g = sum_j n_j Mbar[j] subject to sum_j n_j = N,
  before clipping and rounding."""
  n = _common.validate(grads, num_samples, "rlu", extra={"rlu_basis": rlu_basis})
  _check_basis(rlu_basis, grads)
  a, y = _design(grads, rlu_basis)
  # sum_j n_j = N is an exact constraint (KKT system), not one more equation: the bias equations alone are
  # singular along it (softmax outputs sum to 1), as in iLRG. Columns are scaled to unit norm first: the labels'
  # columns differ by orders of magnitude for trained models.
  c = a.shape[1]
  scale = jnp.linalg.norm(a, axis=0)
  safe = jnp.where(scale > 0, scale, 1.0)
  an = a / safe
  # a label whose basis is all zero (no auxiliary example of it) stays out of the constraint: its count is 0
  inv = jnp.where(scale > 0, 1.0 / safe, 0.0)
  kkt = jnp.block([[an.T @ an, inv[:, None]], [inv[None, :], jnp.zeros((1, 1), jnp.float32)]])
  rhs = jnp.concatenate([an.T @ (n * y), jnp.reshape(_common.as_float(n), (1,)).astype(jnp.float32)])
  z = jnp.linalg.lstsq(kkt, rhs)[0][:c]
  return jnp.where(scale > 0, z / safe, 0.0)


def counts_from_solution(x: jax.Array, num_samples: NumSamples) -> jax.Array:
  """Real-valued estimates f32[C] -> i32[C] summing to N: negatives (and NaN) to 0, rescaled to sum N, floored,
  the remainder given one by one to the largest fractional parts (ties: lower class index). All-zero estimates
  give N/C each (the same rule on a flat vector)."""
  x = jnp.clip(jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
  total = jnp.sum(x)
  x = jnp.where(total > 0, x / jnp.where(total > 0, total, 1.0), 1.0 / x.shape[0]) * num_samples
  base = jnp.floor(x)
  left = num_samples - jnp.sum(base)
  frac = x - base
  # rank of each class by fractional part (descending, stable): the first `left` get one more
  order = jnp.argsort(-frac, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(x.shape[0]))
  return (base + (rank < left)).astype(jnp.int32)


def _check_basis(basis, grads: LastLayerGrads):
  if not isinstance(basis, RLUBasis):
    raise TypeError(f"rlu: rlu_basis must be an RLUBasis (from rlu_basis_from_features or "
                    f"jaxleak.federated.rlu.simulate_rlu_basis), got {type(basis).__name__}.")
  d, c = grads.kernel.shape
  if basis.kernel.shape != (c, d, c):
    raise ValueError(f"rlu: rlu_basis.kernel has shape {basis.kernel.shape}; for a head gradient [{d}, {c}] it "
                     f"must be [{c}, {d}, {c}] (estimate it at the attacked model).")
  if basis.bias is not None and basis.bias.shape != (c, c):
    raise ValueError(f"rlu: rlu_basis.bias has shape {basis.bias.shape}; expected [{c}, {c}].")
  if basis.kernel_std is not None and basis.kernel_std.shape != (d, c):
    raise ValueError(f"rlu: rlu_basis.kernel_std has shape {basis.kernel_std.shape}; expected [{d}, {c}].")


@register("rlu", signal="weight", requires=("rlu_basis",),
          summary="RLU (Chen & Vikalo 2024): least squares over the head update, basis from auxiliary data")
def rlu(grads: LastLayerGrads, num_samples: NumSamples, *, rlu_basis: RLUBasis) -> jax.Array:
  """RLU: counts i32[C] summing to N from the head's gradient(-equivalent) and the expected per-label head
  gradients `rlu_basis` (estimate once per attacked model; see the module docstring).

  >>> import jax.numpy as jnp
  >>> from jaxleak import LastLayerGrads
  >>> kernel = jnp.eye(3)[:, None, :] * jnp.array([1.0, 2.0])[None, :, None]      # [C=3, D=2, C=3]
  >>> basis = RLUBasis(kernel=kernel, bias=None)
  >>> g = LastLayerGrads(kernel=(3 * basis.kernel[0] + 1 * basis.kernel[2]) / 4, bias=None)
  >>> rlu(g, 4, rlu_basis=basis).tolist()
  [3, 0, 1]
  """
  n = _common.check_num_samples(num_samples, "rlu")
  counts = counts_from_solution(rlu_solution(grads, n, rlu_basis=rlu_basis), n)
  return _common.guard_nonfinite(counts, grads, rlu_basis, num_samples=num_samples)
