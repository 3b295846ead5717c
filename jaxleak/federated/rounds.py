"""FedAvg rounds with secure aggregation (the Eavesdrop paper's setting, sec. II-B and IV-A2).

Each round the server selects K = round(P * N_p) participants; each runs `epochs` epochs of plain SGD (batch
`batch_size`, rate `lr`) from the global variables G_t on its own examples; the server sees only the mean of their
updates (secure aggregation) and sets G_{t+1} = G_t + mean update. All K participants train in one vmapped
computation: a participant is a padded row of pool indices plus a mask (data.Allocation), so every round, every
participant and the attacker's per-label training share one compiled function per shape.

Local training is PyTorch-DataLoader-like: each epoch visits the participant's valid examples in a fresh random
order in batches of `batch_size`, the last batch may be partial (drop_last=False), the loss is the mean
cross-entropy over the batch's valid examples (or their class-weighted mean: `LocalEpochs.loss`). Padding only
adds steps with no valid example, which are skipped exactly (the update is multiplied by 0), so a participant's
result does not depend on the padded width except through the PRNG stream (tested: vmapped round == participants
trained one by one).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxleak import privacy
from jaxleak.federated.apply import (CLIENT_LOSSES, balanced_class_weights, check_class_ids,
                                     masked_class_weighted_ce, masked_mean_ce, split_variables, train_loss)
from jaxleak.types import check_local_training, is_concrete, is_int, values_outside


def check_pool(model: nn.Module, pool_x, pool_y, index, mask, what: str) -> None:
  """Example pool and participants' rows: pool_y integer [P] in [0, model.num_classes), index integer in
  [0, P) where mask is set. Values are checked when concrete (under jit they cannot be inspected): an index past
  the pool would be clamped by the gather, a label past C one-hot to zeros, both silently training on something
  else."""
  p = np.shape(pool_x)[0] if np.ndim(pool_x) else 0
  if np.shape(pool_y) != (p,):
    raise ValueError(f"{what}: pool_y must be [P] = [{p}] labels, one per pool example; got {np.shape(pool_y)}.")
  for name, arr in (("pool_y", pool_y), ("index", index)):
    if not jnp.issubdtype(jnp.result_type(arr), jnp.integer):
      raise ValueError(f"{what}: {name} must hold integers, got dtype {jnp.result_type(arr)}.")
  check_class_ids(model, pool_y, "pool_y", what)
  outside = values_outside(index, p, mask)
  if outside:
    raise ValueError(f"{what}: index must point into the pool of {p} examples where mask is set; got values "
                     f"from {outside[0]} to {outside[1]}.")


def check_label_rows(aux_y, what: str) -> None:
  """aux_y [..., C, n]: row j holds label j only (the attacker trains on each label alone); checked when
  concrete."""
  if not jnp.issubdtype(jnp.result_type(aux_y), jnp.integer):
    raise ValueError(f"{what}: aux_y must hold integer labels, got dtype {jnp.result_type(aux_y)}.")
  if is_concrete(aux_y) and np.size(aux_y):
    y = np.asarray(aux_y)
    want = np.arange(y.shape[-2])[:, None]
    wrong = np.argwhere(np.any(y != want, axis=-1))
    if wrong.size:
      raise ValueError(f"{what}: row j of aux_y must hold label j only (each label's auxiliary examples); rows "
                       f"{sorted(set(int(r[-1]) for r in wrong))[:5]} do not.")


#: A participant's local steps (epochs x batches) are counted in int32 inside the compiled program.
MAX_LOCAL_STEPS = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class LocalEpochs:
  """A participant's local training in the Eavesdrop setting: L_ep epochs of plain SGD over all its examples
  with batch L_bs and learning rate L_lr (the paper's defaults: 3, 64, 0.01), and the loss of each batch: the
  paper's mean CE, or ("class_weighted") PyTorch's CrossEntropyLoss(weight=w) with w the sklearn 'balanced'
  weights of all the participant's own examples (`balanced_class_weights`; the same w in every step)."""
  epochs: int = 3
  batch_size: int = 64
  lr: float = 0.01
  loss: str = "mean"

  def __post_init__(self):
    check_local_training(self, ("epochs", "batch_size"))
    if self.loss not in CLIENT_LOSSES:
      raise ValueError(f"local loss: unknown {self.loss!r}; valid: {', '.join(CLIENT_LOSSES)}.")
    if self.epochs > MAX_LOCAL_STEPS:
      raise ValueError(f"local epochs {self.epochs:,}: at most {MAX_LOCAL_STEPS:,} local steps in all (their indices "
                       "are int32).")


def local_train_fn(model: nn.Module, local: LocalEpochs):
  """Returns f(variables, x f32[M, ...], y i32[M], mask bool[M], key) -> variables after local training.

  Non-param collections (BatchNorm statistics) are carried through the steps; padded examples take part in
  batch statistics of partial batches (the loss ignores them). Steps run in a lax.scan (unrolled when short).
  """
  if not isinstance(local, LocalEpochs):
    raise TypeError(f"local_train_fn: local must be a jaxleak.federated.LocalEpochs(epochs, batch_size, lr), got "
                    f"{type(local).__name__}.")
  def train(variables, x, y, mask, key):
    m = y.shape[0]
    # A batch size above the M example slots is one full-data step per epoch (as a PyTorch DataLoader gives);
    # capping it at M keeps that step from computing (and BatchNorm from averaging) batch_size - M padded copies.
    bs = min(local.batch_size, m)
    steps = math.ceil(m / bs)
    pad = steps * bs - m
    if local.epochs * steps > MAX_LOCAL_STEPS:
      raise ValueError(f"local training of {local.epochs:,} epochs x {steps} batches: at most {MAX_LOCAL_STEPS:,} "
                       "local steps in all (their indices are int32); lower the epochs.")
    params, state = split_variables(variables)

    def epoch_order(k):
      # Valid examples first in random order, padding last; then padded to whole batches.
      scores = jnp.where(mask, jax.random.uniform(k, (m,)), 2.0)
      order = jnp.argsort(scores)
      return jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]) if pad else order

    def step(carry, inputs):
      p, st = carry
      idx_epoch, s = inputs
      order = orders[idx_epoch]
      idx = jax.lax.dynamic_slice_in_dim(order, s * bs, bs)
      valid = mask[idx] & (s * bs + jnp.arange(bs) < m)
      vb = valid.astype(jnp.float32)
      k = jax.random.fold_in(drop_key, idx_epoch * steps + s)
      if weights is None:
        reduce = lambda logits, labels: masked_mean_ce(logits, labels, vb)
      else:
        reduce = lambda logits, labels: masked_class_weighted_ce(logits, labels, vb, weights)
      loss = train_loss(model, st, x[idx], y[idx], k, reduce=reduce)
      grads, new_st = jax.grad(loss, has_aux=True)(p)
      live = jnp.any(valid)
      p = jax.tree.map(lambda a, g: a - jnp.where(live, local.lr, 0.0) * g, p, grads)
      st = jax.tree.map(lambda old, new: jnp.where(live, new, old), st, new_st)
      return (p, st), None

    weights = None if local.loss == "mean" else balanced_class_weights(y, mask, model.num_classes)
    order_key, drop_key = jax.random.split(key)
    orders = jax.vmap(epoch_order)(jax.random.split(order_key, local.epochs))
    epochs_idx = jnp.repeat(jnp.arange(local.epochs), steps)
    steps_idx = jnp.tile(jnp.arange(steps), local.epochs)
    total = local.epochs * steps
    (params, state), _ = jax.lax.scan(step, (params, state), (epochs_idx, steps_idx),
                                      unroll=total if total <= 32 else 8)
    return {**state, "params": params}

  return train


def compress_update(update, compression_ratio: float):
  """Per-participant top-k upload compression (Table VI defence): within every layer (leaf), keeps the largest
  (1 - ratio) fraction of |update| entries and zeroes the rest. ratio 0 is the identity."""
  if compression_ratio == 0.0:
    return update
  tx = privacy.top_k_compress(compression_ratio)
  return jax.tree.map(lambda leaf: privacy.privatize(leaf, tx), update)


#: The purpose folded into a client's key for its LDP noise (its training draws stay those of a run without LDP).
LDP_NOISE = 7


def privatize_upload(update, ldp: privacy.LdpConfig, key: jax.Array):
  """A participant's LDP before upload: the whole update (every parameter) clipped to L2 norm ldp.clip_norm, then
  Gaussian noise of std ldp.noise_std on every entry (`privacy.LdpConfig`, scope 'all', batch granularity), with
  the noise key fold_in(client key, LDP_NOISE)."""
  if ldp.is_identity:
    return update
  return privacy.privatize(update, ldp.transform(jax.random.fold_in(key, LDP_NOISE)))


def _round(model, local, compression_ratio, variables, pool_x, pool_y, index, mask, keys, ldp=privacy.LdpConfig()):
  train = local_train_fn(model, local)
  trained = jax.vmap(train, in_axes=(None, 0, 0, 0, 0))(variables, pool_x[index], pool_y[index], mask, keys)
  updates = jax.tree.map(lambda new, old: new - old, trained, variables)
  if not ldp.is_identity:
    updates = jax.vmap(lambda u, k: privatize_upload(u, ldp, k))(updates, keys)
  if compression_ratio:
    updates = jax.vmap(lambda u: compress_update(u, compression_ratio))(updates)
  mean_update = jax.tree.map(lambda u: jnp.mean(u, axis=0), updates)
  return jax.tree.map(jnp.add, variables, mean_update), mean_update


def _label_updates(model, local, variables, aux_x, aux_y, key):
  train = local_train_fn(model, local)
  mask = jnp.ones(aux_y.shape, bool)
  keys = jax.random.split(key, aux_y.shape[0])
  trained = jax.vmap(train, in_axes=(None, 0, 0, 0, 0))(variables, aux_x, aux_y, mask, keys)
  return trained["params"]["head"]["kernel"] - variables["params"]["head"]["kernel"][None]


def fedavg_round(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array, index: jax.Array,
                 mask: jax.Array, keys: jax.Array, *, local: LocalEpochs, compression_ratio: float = 0.0,
                 ldp: privacy.LdpConfig = privacy.LdpConfig()):
  """One round for the K selected participants (index i32[K, M], mask bool[K, M] into the pool, K keys).

  Each upload gets the participant's LDP (`privatize_upload`), then top-CR compression. Returns (G_{t+1}, mean
  update): the only things secure aggregation reveals. The individual updates exist only inside this compiled
  function.
  """
  _check_rows(model, pool_x, pool_y, index, mask, keys, "fedavg_round", ("K", "M"))
  return _fedavg_round(model, variables, pool_x, pool_y, index, mask, keys, local=local,
                       compression_ratio=compression_ratio, ldp=ldp)


def _check_rows(model, pool_x, pool_y, index, mask, keys, what, axes):
  """index and mask [*axes] (rows into the pool, M last), keys [*axes[:-1]] (one per row), then `check_pool`."""
  lead = axes[:-1]
  if (np.ndim(index) != len(axes) or np.shape(mask) != np.shape(index)
      or np.shape(keys)[:len(lead)] != np.shape(index)[:-1]):
    raise ValueError(f"{what}: expected index and mask [{', '.join(axes)}]"
                     + (f" and keys [{', '.join(lead)}]" if lead else "")
                     + f"; got {np.shape(index)}, {np.shape(mask)}, {np.shape(keys)}.")
  check_pool(model, pool_x, pool_y, index, mask, what)


@functools.partial(jax.jit, static_argnames=("model", "local", "compression_ratio", "ldp"))
def _fedavg_round(model, variables, pool_x, pool_y, index, mask, keys, *, local, compression_ratio, ldp):
  return _round(model, local, compression_ratio, variables, pool_x, pool_y, index, mask, keys, ldp)


def client_upload(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array, index: jax.Array,
                  mask: jax.Array, key: jax.Array, *, local: LocalEpochs, compression_ratio: float = 0.0,
                  ldp: privacy.LdpConfig = privacy.LdpConfig()) -> dict:
  """One participant's upload (index i32[M], mask bool[M] into the pool, its key): its update of every variable
  after local training, LDP and compression, exactly as inside `fedavg_round` (equal up to float round-off of the
  vmapped computation)."""
  _check_rows(model, pool_x, pool_y, index, mask, key, "client_upload", ("M",))
  return _client_upload(model, variables, pool_x, pool_y, index, mask, key, local=local,
                        compression_ratio=compression_ratio, ldp=ldp)


@functools.partial(jax.jit, static_argnames=("model", "local", "compression_ratio", "ldp"))
def _client_upload(model, variables, pool_x, pool_y, index, mask, key, *, local, compression_ratio, ldp):
  trained = local_train_fn(model, local)(variables, pool_x[index], pool_y[index], mask, key)
  update = privatize_upload(jax.tree.map(lambda new, old: new - old, trained, variables), ldp, key)
  return compress_update(update, compression_ratio)


def client_head_update(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array, index: jax.Array,
                       mask: jax.Array, key: jax.Array, *, local: LocalEpochs, compression_ratio: float = 0.0,
                       ldp: privacy.LdpConfig = privacy.LdpConfig()) -> jax.Array:
  """One participant's uploaded head-kernel update f32[D, C]: what a participant that is also the attacker knows
  of its own contribution to the round (`client_upload`'s head kernel)."""
  return client_upload(model, variables, pool_x, pool_y, index, mask, key, local=local,
                       compression_ratio=compression_ratio, ldp=ldp)["params"]["head"]["kernel"]


def client_head_update_replicated(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array,
                                  index: jax.Array, mask: jax.Array, keys: jax.Array, *, local: LocalEpochs,
                                  compression_ratio: float = 0.0, ldp: privacy.LdpConfig = privacy.LdpConfig()
                                  ) -> jax.Array:
  """`client_head_update` of one participant in each of R federations at once (a vmap): variables with a leading
  axis R, index and mask [R, M], keys [R]; the example pool is shared. Returns f32[R, D, C]."""
  _check_rows(model, pool_x, pool_y, index, mask, keys, "client_head_update_replicated", ("R", "M"))
  return _client_head_update_replicated(model, variables, pool_x, pool_y, index, mask, keys, local=local,
                                        compression_ratio=compression_ratio, ldp=ldp)


@functools.partial(jax.jit, static_argnames=("model", "local", "compression_ratio", "ldp"))
def _client_head_update_replicated(model, variables, pool_x, pool_y, index, mask, keys, *, local, compression_ratio,
                                   ldp):
  f = functools.partial(_client_upload, model, local=local, compression_ratio=compression_ratio, ldp=ldp)
  uploads = jax.vmap(f, in_axes=(0, None, None, 0, 0, 0))(variables, pool_x, pool_y, index, mask, keys)
  return uploads["params"]["head"]["kernel"]


#: How a round runs its participants: all in one vmapped program, or one jitted program per participant in turn.
EXECUTIONS = ("auto", "vmap", "sequential")


def client_execution(variables: dict, execution: str = "auto") -> str:
  """'vmap' or 'sequential' for `execution`; 'auto' picks 'sequential' for models with convolution kernels (a
  leaf of rank >= 3) on XLA:CPU and 'vmap' otherwise. Why: vmapped over participants, each participant's own conv
  weights become one grouped convolution, which XLA:CPU runs slowly; measured for the CNN on 28x28 MNIST (10
  participants x 15 SGD steps of 64, 2 CPU cores): vmap 4.2 s per round, lax.map 7.6 s, one jitted call per
  participant 1.7 s; for the MLP all three are within 10 % (benchmarks/round_execution.py)."""
  if execution not in EXECUTIONS:
    raise ValueError(f"execution: unknown {execution!r}; valid: {', '.join(EXECUTIONS)}.")
  if execution != "auto":
    return execution
  if not hasattr(variables, "get") or variables.get("params") is None:
    raise TypeError(f"client_execution: variables must be the model's variables ({{'params': ...}}), got "
                    f"{type(variables).__name__}.")
  conv = any(jnp.ndim(leaf) >= 3 for leaf in jax.tree.leaves(variables["params"]))
  return "sequential" if conv and jax.default_backend() == "cpu" else "vmap"


_tree_add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
_tree_scale = jax.jit(lambda a, s: jax.tree.map(lambda x: x * s, a))


def run_fedavg_round(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array, index: jax.Array,
                     mask: jax.Array, keys: jax.Array, *, local: LocalEpochs, compression_ratio: float = 0.0,
                     ldp: privacy.LdpConfig = privacy.LdpConfig(), execution: str = "auto"):
  """`fedavg_round` (execution 'vmap') or the same round with one `client_upload` per participant in turn
  ('sequential'; equal up to float round-off, tested); 'auto': see `client_execution`. Returns (G_{t+1}, mean
  update)."""
  if client_execution(variables, execution) == "vmap":
    return fedavg_round(model, variables, pool_x, pool_y, index, mask, keys, local=local,
                        compression_ratio=compression_ratio, ldp=ldp)
  _check_rows(model, pool_x, pool_y, index, mask, keys, "run_fedavg_round", ("K", "M"))
  total = None
  for i in range(index.shape[0]):      # one compiled program, K calls (see client_execution for why not vmap)
    upload = _client_upload(model, variables, pool_x, pool_y, index[i], mask[i], keys[i], local=local,
                           compression_ratio=compression_ratio, ldp=ldp)
    total = upload if total is None else _tree_add(total, upload)
  mean_update = _tree_scale(total, 1.0 / index.shape[0])
  return _tree_add(variables, mean_update), mean_update


def remove_own_update(mean_update: jax.Array, own_update: jax.Array, num_selected: int):
  """(the mean update of the other K - 1 selected participants, K - 1): K * mean - own, over K - 1. With K = 1
  nobody else trained: a zero update, and 1 as the count (so that the attacks see 'no client')."""
  others = num_selected - 1
  if others == 0:
    return jnp.zeros_like(mean_update), 1
  return (num_selected * mean_update - own_update) / others, others


def fedavg_round_replicated(model: nn.Module, variables: dict, pool_x: jax.Array, pool_y: jax.Array,
                            index: jax.Array, mask: jax.Array, keys: jax.Array, *, local: LocalEpochs,
                            compression_ratio: float = 0.0, ldp: privacy.LdpConfig = privacy.LdpConfig()):
  """R independent federations' rounds at once (a vmap of `fedavg_round`): variables with a leading axis R,
  index and mask [R, K, M], keys [R, K]; the example pool is shared. Returns batched (G_{t+1}, mean update)."""
  _check_rows(model, pool_x, pool_y, index, mask, keys, "fedavg_round_replicated", ("R", "K", "M"))
  return _fedavg_round_replicated(model, variables, pool_x, pool_y, index, mask, keys, local=local,
                                  compression_ratio=compression_ratio, ldp=ldp)


@functools.partial(jax.jit, static_argnames=("model", "local", "compression_ratio", "ldp"))
def _fedavg_round_replicated(model, variables, pool_x, pool_y, index, mask, keys, *, local, compression_ratio, ldp):
  f = functools.partial(_round, model, local, compression_ratio, ldp=ldp)
  return jax.vmap(f, in_axes=(0, None, None, 0, 0, 0))(variables, pool_x, pool_y, index, mask, keys)


def per_label_updates(model: nn.Module, variables: dict, aux_x: jax.Array, aux_y: jax.Array, key: jax.Array, *,
                      local: LocalEpochs) -> jax.Array:
  """The attacker's procedure (Algorithms 1-2, lines 4-8): from G_t, train on each label's auxiliary examples
  alone (aux_x [C, n, ...], aux_y [C, n]), vmapped over labels. Returns the head-kernel updates
  U f32[C, D, C]: U[j, :, i] is how training on label j moved output neuron i's input weights W_in^{Li}."""
  _check_aux(model, aux_x, aux_y, "per_label_updates")
  return _per_label_updates(model, variables, aux_x, aux_y, key, local=local)


def _check_aux(model, aux_x, aux_y, what, replicated=False):
  lead = 3 if replicated else 2
  if np.shape(aux_x)[:lead] != np.shape(aux_y) or np.ndim(aux_y) != lead:
    raise ValueError(f"{what}: expected aux_x [{'R, ' if replicated else ''}C, n, ...] and aux_y "
                     f"[{'R, ' if replicated else ''}C, n]; got {np.shape(aux_x)}, {np.shape(aux_y)}.")
  c = getattr(model, "num_classes", None)
  if c is not None and np.shape(aux_y)[-2] != c:
    raise ValueError(f"{what}: aux_y has {np.shape(aux_y)[-2]} label rows, the model {c} classes; give one row of "
                     "auxiliary examples per label.")
  check_label_rows(aux_y, what)


@functools.partial(jax.jit, static_argnames=("model", "local"))
def _per_label_updates(model, variables, aux_x, aux_y, key, *, local):
  return _label_updates(model, local, variables, aux_x, aux_y, key)


def per_label_updates_replicated(model: nn.Module, variables: dict, aux_x: jax.Array, aux_y: jax.Array,
                                 keys: jax.Array, *, local: LocalEpochs) -> jax.Array:
  """`per_label_updates` for R federations at once: batched variables, aux_x [R, C, n, ...], aux_y [R, C, n],
  keys [R] -> U f32[R, C, D, C]."""
  _check_aux(model, aux_x, aux_y, "per_label_updates_replicated", replicated=True)
  return _per_label_updates_replicated(model, variables, aux_x, aux_y, keys, local=local)


@functools.partial(jax.jit, static_argnames=("model", "local"))
def _per_label_updates_replicated(model, variables, aux_x, aux_y, keys, *, local):
  f = functools.partial(_label_updates, model, local)
  return jax.vmap(f)(variables, aux_x, aux_y, keys)


@functools.partial(jax.jit, static_argnames=("model", "local"))
def _label_update(model, local, variables, x, y, key):
  trained = local_train_fn(model, local)(variables, x, y, jnp.ones(y.shape, bool), key)
  return trained["params"]["head"]["kernel"] - variables["params"]["head"]["kernel"]


def run_per_label_updates(model: nn.Module, variables: dict, aux_x: jax.Array, aux_y: jax.Array, key: jax.Array, *,
                          local: LocalEpochs, execution: str = "auto") -> jax.Array:
  """`per_label_updates` (execution 'vmap') or one label's training at a time ('sequential', the same keys; equal
  up to float round-off); 'auto': see `client_execution`. Returns U f32[C, D, C]."""
  if client_execution(variables, execution) == "vmap":
    return per_label_updates(model, variables, aux_x, aux_y, key, local=local)
  _check_aux(model, aux_x, aux_y, "run_per_label_updates")
  keys = jax.random.split(key, aux_y.shape[0])
  return jnp.stack([_label_update(model, local, variables, aux_x[j], aux_y[j], keys[j])
                    for j in range(aux_y.shape[0])])


def select_participants(num_participants: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """K = max(1, round(fraction * N_p)) distinct participants, sorted (the paper's selection process)."""
  if not is_int(num_participants) or num_participants < 1:
    raise ValueError(f"num_participants must be a positive integer (N_p), got {num_participants!r}.")
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"selection fraction P must be in (0, 1], got {fraction}.")
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}.")
  k = max(1, int(round(fraction * num_participants)))
  return np.sort(rng.choice(num_participants, size=k, replace=False))
