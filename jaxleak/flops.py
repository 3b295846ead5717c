"""FLOPs of a JAX function, counted on its jaxpr with loop trip counts (XLA's cost analysis counts a loop body once).

`count_flops(f, *args)` walks the jaxpr of `f` and adds, for every equation:

* `dot_general`: 2 x (output elements) x (contracted size);
* `conv_general_dilated`: 2 x (output elements) x (input features per group) x (kernel window size);
* `scan`: `length` x the body's FLOPs; `while`: the body once (its trip count is not known before running) and
  the result flagged as a lower bound; `cond`: the most expensive branch; calls (`pjit`, custom_jvp/vjp, remat):
  their inner jaxpr;
* everything else: one FLOP per output element (additions, exponentials and comparisons alike).

  >>> import jax.numpy as jnp
  >>> count_flops(lambda a, b: a @ b, jnp.ones((4, 3)), jnp.ones((3, 5))).total    # 2 * 4 * 5 * 3
  120.0

Why not `jit(f).lower(...).compile().cost_analysis()["flops"]`: XLA's HloCostAnalysis counts a `while` body once,
so an LSTM over 18 time steps is counted as one step (shown in tests/test_flops.py). Where a function has no
loops the two agree on matmul and convolution FLOPs; XLA counts element-wise work slightly differently.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

MATMUL_PRIMITIVES = ("dot_general", "conv_general_dilated")


class FlopCount(NamedTuple):
  """total: all FLOPs; matmul: those of dot_general and conv (the work a matmul peak bounds); exact: False where a
  `while` loop's body was counted once."""
  total: float
  matmul: float
  exact: bool


def _size(aval) -> int:
  return int(math.prod(getattr(aval, "shape", ())))


def _eqn_matmul_flops(eqn) -> float:
  name = eqn.primitive.name
  out = _size(eqn.outvars[0].aval)
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return 2.0 * out * math.prod(lhs_shape[d] for d in lhs_contract)
  # conv_general_dilated: kernel layout from dimension_numbers (rhs_spec: out-feature dim, in-feature dim, spatial)
  rhs_shape = eqn.invars[1].aval.shape
  rhs_spec = eqn.params["dimension_numbers"].rhs_spec
  in_features = rhs_shape[rhs_spec[1]]
  window = math.prod(rhs_shape[d] for d in rhs_spec[2:])
  return 2.0 * out * in_features * window


def _sub_jaxprs(eqn):
  """(multiplier, jaxpr) pairs of the computations an equation calls, and whether the count stays exact."""
  p = eqn.params
  name = eqn.primitive.name
  if name == "scan":
    return [(p["length"], p["jaxpr"].jaxpr)], True
  if name == "while":
    return [(1, p["cond_jaxpr"].jaxpr), (1, p["body_jaxpr"].jaxpr)], False
  if name == "cond":
    return None, True                                      # handled by the caller: the dearest branch
  subs = []
  for v in p.values():
    if isinstance(v, jex_core.ClosedJaxpr):
      subs.append((1, v.jaxpr))
    elif isinstance(v, jex_core.Jaxpr):
      subs.append((1, v))
  return subs, True


def _count(jaxpr) -> FlopCount:
  total = matmul = 0.0
  exact = True
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in MATMUL_PRIMITIVES:
      f = _eqn_matmul_flops(eqn)
      total += f
      matmul += f
      continue
    if name == "cond":
      branches = [_count(b.jaxpr) for b in eqn.params["branches"]]
      dearest = max(branches, key=lambda c: c.total)
      total += dearest.total
      matmul += dearest.matmul
      exact &= all(b.exact for b in branches)
      continue
    subs, sub_exact = _sub_jaxprs(eqn)
    if subs:
      exact &= sub_exact
      for times, sub in subs:
        c = _count(sub)
        total += times * c.total
        matmul += times * c.matmul
        exact &= c.exact
      continue
    total += sum(_size(v.aval) for v in eqn.outvars)
  return FlopCount(total, matmul, exact)


def count_flops(f: Callable[..., Any], *args, **kwargs) -> FlopCount:
  """FLOPs of one call `f(*args, **kwargs)` (arrays or ShapeDtypeStructs; nothing is computed)."""
  closed = jax.make_jaxpr(f)(*args, **kwargs)
  return _count(closed.jaxpr)


def xla_flops(f: Callable[..., Any], *args) -> float:
  """XLA's own count for `jit(f)(*args)` (compiles it): loop bodies counted once; see the module docstring."""
  cost = jax.jit(f).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5) -> float:
  """This machine's f32 matmul rate in GFLOP/s on the default device: the best of `repeats` warm, jitted square
  matmuls of each size (about a second on a 2-core CPU; the peak drifts by ~10 % between readings there)."""
  mm = jax.jit(jnp.matmul)
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(n), (n, n))
    jax.block_until_ready(mm(a, a))
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(mm(a, a))
      best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
  return best
