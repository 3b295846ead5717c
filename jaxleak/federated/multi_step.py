"""Multi-step (FedAvg) client updates and the gradient-equivalent the attacks consume (spec 2.9, 3.3).

A query = the N windows of one client update. The client runs S plain-SGD steps (learning rate eta, no momentum)
from the global params; step s uses windows [s*B, (s+1)*B) mod N (disjoint slices covering the N windows once for
the paper's (N, B, S) settings); model in train mode; inputs NOT min-max scaled (as the reference); optional LDP
per local step on the whole-model gradient (clip, then noise, changing the trajectory). Optionally every step's
loss is class-weighted (`class_weights` f32[C] per update, PyTorch's CrossEntropyLoss(weight=)), beyond the papers.

The server sees theta_S - theta_0 = -eta * sum_s g_s. What the attacks get (`equivalent`):
  'mean' (default)  (theta_0 - theta_S) / (eta * S) = the average of the S mini-batch-mean gradients. It has the
                    scale of a single-step mean gradient over the N windows: for an untrained model
                    g_b ~ p - n/N, so the attacks' N-sample assumptions hold (iLRG stays exact).
  'sum'             (theta_0 - theta_S) / eta = sum_s g_s, what the HAR code hands its attacks (spec 2.9 step 5);
                    S times the mean's scale (iLRG then estimates S*n_i - (S-1)*N/C).
By default the sum of gradients is accumulated directly (equal to the parameter difference divided by eta in exact
arithmetic). `via_parameter_delta=True` instead forms theta_S - theta_0 in float32 and divides by eta, as the
reference does, including its quantisation error (spec 2.9 precision caveat).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxleak import privacy
from jaxleak.federated.apply import (check_batches, check_options, class_weighted_ce, explain_variable_mismatch,
                                     split_variables, train_loss)
from jaxleak.federated.single_step import _check_per_batch_class_weights, _head, minmax_scale
from jaxleak.privacy import LdpConfig
from jaxleak.types import LastLayerGrads, check_local_training

EQUIVALENTS = ("mean", "sum")


#: Step s's window indices sB + i are computed in int32 inside the compiled program: S x B must stay below this.
MAX_WINDOW_INDEX = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class LocalSteps:
  """A client's local training in the HAR paper's multi-step setting: S plain-SGD steps of B of its N samples
  at learning rate lr; LDP per step; how the parameter delta becomes the gradient-equivalent the attacks read."""
  steps: int = 5
  batch_size: int = 100
  lr: float = 1e-4
  equivalent: str = "mean"
  via_parameter_delta: bool = False
  ldp: LdpConfig = LdpConfig()

  def __post_init__(self):
    check_local_training(self, ("steps", "batch_size"))
    if self.steps * self.batch_size > MAX_WINDOW_INDEX:
      raise ValueError(f"local steps x batch size = {self.steps:,} x {self.batch_size:,}: at most "
                       f"{MAX_WINDOW_INDEX:,} (step s trains on windows [sB, (s+1)B) mod N, indices in int32); "
                       "lower the local steps.")
    if not isinstance(self.via_parameter_delta, bool):
      raise ValueError(f"via_parameter_delta must be True or False, got {self.via_parameter_delta!r}.")
    if not isinstance(self.ldp, LdpConfig):
      raise ValueError(f"ldp must be a jaxleak.privacy.LdpConfig, got {self.ldp!r}.")
    if self.equivalent not in EQUIVALENTS:
      raise ValueError(f"unknown gradient equivalent {self.equivalent!r}; valid: {', '.join(EQUIVALENTS)}.")
    if self.ldp.per_example:
      raise ValueError("per-example clipping inside local steps is not implemented; use clip_granularity='batch'.")


#: Up to this many local steps are unrolled in one compiled program (fast on XLA:CPU, where a loop around a full
#: backward pass runs several times slower); beyond it `client_updates` runs the steps from the host in calls of
#: STEPS_PER_BLOCK unrolled steps, so that compiling does not grow with S (S = 200 unrolled compiled for more than
#: 5 minutes). BUILD_NOTES.md, "Multi-step updates".
UNROLLED_STEPS = 16
STEPS_PER_BLOCK = 8
#: With host-driven blocks, `client_updates(progress=...)` reports the steps done at most this often (seconds).
PROGRESS_EVERY_S = 30.0


def _step(model: nn.Module, local: LocalSteps, minmax: bool, carry, x, y, key, s, class_weights=None):
  """Local step s (a Python int, or a traced int32) of one update: SGD on windows [sB, (s+1)B) mod N, of the mean
  CE or (class_weights f32[C]) the class-weighted mean. carry = (params, model state, the head gradients summed)."""
  params, state, total = carry
  if local.batch_size > y.shape[0]:      # the batch would wrap around and repeat windows (trace time: shapes)
    raise ValueError(f"local batch size B={local.batch_size} is larger than the update's N={y.shape[0]} windows; "
                     "choose B <= N.")
  idx = (s * local.batch_size + jnp.arange(local.batch_size)) % y.shape[0]
  xs, ys = x[idx], y[idx]
  xs = minmax_scale(xs) if minmax else xs
  step_key = jax.random.fold_in(key, s)
  reduce = None if class_weights is None else functools.partial(class_weighted_ce, class_weights=class_weights)
  grads, state = jax.grad(train_loss(model, state, xs, ys, step_key, reduce), has_aux=True)(params)
  if not local.ldp.is_identity:
    grads = privacy.privatize(grads, local.ldp.transform(jax.random.fold_in(step_key, 1)))
  total = jax.tree.map(jnp.add, total, _head(grads))
  params = jax.tree.map(lambda p, g: p - local.lr * g, params, grads)
  return params, state, total


def _start(variables: dict):
  params, state = split_variables(variables)
  return params, state, jax.tree.map(jnp.zeros_like, _head(params))


def _finish(local: LocalSteps, head0, carry) -> LastLayerGrads:
  """The gradient-equivalent the server reads, from the initial head params and the final carry."""
  params, _, total = carry
  if local.via_parameter_delta:
    delta = jax.tree.map(jnp.subtract, _head(params), head0)
    total = jax.tree.map(lambda d: -d / local.lr, delta)
  scale = 1.0 / local.steps if local.equivalent == "mean" else 1.0
  return LastLayerGrads(kernel=total.kernel * scale, bias=None if total.bias is None else total.bias * scale)


def client_update_fn(model: nn.Module, local: LocalSteps, *, minmax: bool = False):
  """Returns f(variables, x f32[N, T, ch], y i32[N], key, class_weights=None) -> LastLayerGrads (the
  gradient-equivalent's head; class_weights f32[C]: every step's loss is the class-weighted mean).

  The S steps are unrolled at trace time: a loop around a full backward pass runs much slower on XLA:CPU
  (BUILD_NOTES.md), but compiling grows with S; `client_updates` runs S > UNROLLED_STEPS in host-driven blocks.
  """
  if not isinstance(local, LocalSteps):
    raise TypeError(f"client_update_fn: local must be a jaxleak.federated.LocalSteps, got {type(local).__name__}.")
  def f(variables, x, y, key, class_weights=None):
    carry = _start(variables)
    for s in range(local.steps):
      carry = _step(model, local, minmax, carry, x, y, key, s, class_weights)
    return _finish(local, _head(variables["params"]), carry)

  return f


@functools.partial(jax.jit, static_argnames=("model", "local", "minmax", "batched_variables"))
def _unrolled_updates(model, variables, windows, labels, keys, class_weights, *, local, minmax, batched_variables):
  f = client_update_fn(model, local, minmax=minmax)
  return jax.vmap(f, in_axes=(0 if batched_variables else None, 0, 0, 0, 0))(variables, windows, labels, keys,
                                                                           class_weights)


@functools.partial(jax.jit, static_argnames=("batched_variables",))
def _start_updates(variables, keys, *, batched_variables):
  """(initial head params, carry), each with a leading axis K (the variables repeated when shared)."""
  if not batched_variables:
    variables = jax.tree.map(lambda a: jnp.broadcast_to(a, (keys.shape[0],) + a.shape), variables)
  return jax.vmap(lambda v: (_head(v["params"]), _start(v)))(variables)


@functools.partial(jax.jit, static_argnames=("model", "local", "minmax", "num_steps"), donate_argnums=(1,))
def _block_of_steps(model, carry, windows, labels, keys, class_weights, first, *, local, minmax, num_steps):
  """Steps first .. first + num_steps - 1 (`first` traced: one compilation for every full block) of K updates."""
  def one(carry, x, y, key, w):
    for u in range(num_steps):
      carry = _step(model, local, minmax, carry, x, y, key, first + u, w)
    return carry
  return jax.vmap(one)(carry, windows, labels, keys, class_weights)


@functools.partial(jax.jit, static_argnames=("local",))
def _finish_updates(head0, carry, *, local):
  return jax.vmap(lambda h, c: _finish(local, h, c))(head0, carry)


def client_updates(model: nn.Module, variables: dict, windows: jax.Array, labels: jax.Array, keys: jax.Array, *,
                   local: LocalSteps, minmax: bool = False, batched_variables: bool = False,
                   progress: Optional[Callable[[str], None]] = None,
                   class_weights: Optional[jax.Array] = None) -> LastLayerGrads:
  """Gradient-equivalents of K queries (windows f32[K, N, T, ch], labels i32[K, N], K keys), one plain vmap.
  `class_weights` f32[K, C] (optional): each update's local steps minimise the class-weighted mean CE.

  Up to `UNROLLED_STEPS` local steps run as one compiled program; more run as calls of `STEPS_PER_BLOCK` steps
  from the host (the same arithmetic; compiling stays bounded, and XLA:CPU runs host-driven blocks about as fast
  as unrolled steps, where a lax.scan of them ran 3-8x slower). Then `progress` (if given) receives a line with
  the steps done at most every `PROGRESS_EVERY_S` seconds, so that a long call (S in the hundreds) is not silent."""
  check_batches(model, windows, labels, keys, what="client_updates")
  check_options("client_updates", variables, np.shape(windows)[0], minmax=minmax,
                batched_variables=batched_variables)
  if not isinstance(local, LocalSteps):
    raise TypeError(f"client_updates: local must be a jaxleak.federated.LocalSteps, got {type(local).__name__}.")
  class_weights = _check_per_batch_class_weights(class_weights, model, windows, "client_updates")
  with explain_variable_mismatch(model, windows, "client_updates"):
    return _client_updates(model, variables, windows, labels, keys, class_weights, local=local, minmax=minmax,
                           batched_variables=batched_variables, progress=progress)


def _client_updates(model, variables, windows, labels, keys, class_weights, *, local, minmax, batched_variables,
                    progress):
  if local.steps <= UNROLLED_STEPS:
    return _unrolled_updates(model, variables, windows, labels, keys, class_weights, local=local, minmax=minmax,
                             batched_variables=batched_variables)
  head0, carry = _start_updates(variables, keys, batched_variables=batched_variables)
  t0 = last = time.perf_counter()
  for first in range(0, local.steps, STEPS_PER_BLOCK):
    done = min(first + STEPS_PER_BLOCK, local.steps)
    carry = _block_of_steps(model, carry, windows, labels, keys, class_weights, jnp.int32(first), local=local,
                            minmax=minmax, num_steps=done - first)
    if progress is not None and done < local.steps:
      # Dispatch is asynchronous: only a finished block says how far the steps are. Waiting on each block costs
      # the overlap of one dispatch, ~1 ms (1 % of TinyHAR's 0.09 s blocks of 8 updates; BUILD_NOTES.md).
      jax.block_until_ready(carry)
      now = time.perf_counter()
      if now - last >= PROGRESS_EVERY_S:
        last = now
        progress(f"local training: step {done:,}/{local.steps:,} of this call's {keys.shape[0]} updates "
                 f"({now - t0:,.0f} s)")
  return _finish_updates(head0, carry, local=local)
