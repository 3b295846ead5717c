"""Computing every client update of a prepared run: fixed-size compiled calls (one compilation), optionally
sharded over local devices; single step, multi step, and the shared pass of an LDP sweep."""
from __future__ import annotations

import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.federated import client_updates, head_grads_and_model_norms, last_layer_grads
from jaxleak.privacy import LdpConfig
from jaxleak.runs.leakage.config import LeakageConfig
from jaxleak.runs.leakage.prepare import Prepared, log
from jaxleak.types import LastLayerGrads


def in_calls(prep: Prepared, per_call: int, fn, progress: Optional[Callable[[str], None]], what: str = "gradients"):
  """Runs fn(variables, windows, labels, keys) over all updates in calls of a fixed size (one compilation).

  With trained folds, `variables` is gathered per update (leading axis = update) and fn must expect that.
  Returns fn's output pytree with a leading axis K (NumPy).
  """
  k = len(prep.indices)
  per_call = min(per_call, k)
  place = lambda tree: tree
  if prep.mesh is not None:                                       # a multiple of the device count, batch-sharded
    n_dev = prep.mesh.devices.size
    per_call = -(-per_call // n_dev) * n_dev
    sharding = jax.sharding.NamedSharding(prep.mesh, jax.sharding.PartitionSpec("batch"))
    place = lambda tree: jax.device_put(tree, sharding)
  starts = list(range(0, k, per_call))
  # Several JAX processes (jax.distributed): process p runs calls p, p + P, ...; the results are gathered so that
  # every process holds all updates, in call order. Calls are independent, so results equal one process's.
  n_proc, me = jax.process_count(), jax.process_index()
  mine = starts[me::n_proc]
  mine = mine + mine[-1:] * (-(-len(starts) // n_proc) - len(mine)) if mine else [starts[0]] * (-(-len(starts) // n_proc))
  out, t0 = [], time.perf_counter()
  for i, start in enumerate(mine):
    sel = np.arange(start, start + per_call) % k                  # pad the last call with repeats
    variables = prep.variables if prep.fold_of_batch is None else place(jax.tree.map(
        lambda a: a[jnp.asarray(prep.fold_of_batch[sel])], prep.variables))
    res = fn(variables, *place((prep.clients.windows[prep.indices[sel]], prep.clients.labels[prep.indices[sel]],
                                prep.dropout_keys[sel])))
    out.append(jax.tree.map(np.asarray, res))
    done = min(k, (i + 1) * per_call * n_proc)
    rate = (i + 1) * per_call * prep.indices.shape[1] / (time.perf_counter() - t0)
    log(progress, f"{what}: {done}/{k} updates ({rate:,.0f} windows/s" + (f" in this process of {n_proc})"
                                                                         if n_proc > 1 else ")"))
  if n_proc > 1:
    from jax.experimental import multihost_utils
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *out)
    gathered = multihost_utils.process_allgather(stacked)          # [P, calls per process, per_call, ...]
    out = [jax.tree.map(lambda a, j=j, q=q: np.asarray(a[q, j]), gathered)
           for c, (q, j) in sorted((starts[q::n_proc][j], (q, j)) for q in range(n_proc)
                                   for j in range(len(starts[q::n_proc])))]
  out = [jax.tree.map(lambda a, n=min(per_call, k - start): a[:n], res) for start, res in zip(starts, out)]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *out)


def compute_updates(prep: Prepared, cfg: LeakageConfig, ldp: LdpConfig,
                    progress: Optional[Callable[[str], None]]) -> LastLayerGrads:
  """The head gradients (single step, after `ldp`) or gradient-equivalents (multi step) of every update."""
  batched = prep.fold_of_batch is not None
  if cfg.local is not None:
    fn = lambda v, x, y, k: client_updates(prep.model, v, x, y, k, local=cfg.local, minmax=cfg.minmax,
                                           batched_variables=batched)
    per_call = cfg.chunk_size * (1 if prep.mesh is None else prep.mesh.devices.size)
    return in_calls(prep, per_call, fn, progress, "local training")
  if ldp.per_example and ldp.needs_full_gradient:
    per_call, chunk = 1, 1                                        # [N, all params] per update: one a call
  elif ldp.needs_full_gradient:
    per_call = chunk = cfg.chunk_size                             # plain vmap (see last_layer_grads)
  else:
    per_call, chunk = cfg.batches_per_call, cfg.chunk_size
  if batched:
    per_call = min(per_call, 16)                                  # per-update copies of the params per call
  if prep.mesh is not None:                                       # one vmap per call, partitioned over devices
    per_call = chunk = chunk * prep.mesh.devices.size
  fn = lambda v, x, y, k: last_layer_grads(prep.model, v, x, y, k, method=cfg.grad_method, minmax=cfg.minmax,
                                           chunk_size=min(chunk, per_call), ldp=ldp, batched_variables=batched)
  return in_calls(prep, per_call, fn, progress)


def compute_heads_and_norms(prep: Prepared, cfg: LeakageConfig, progress: Optional[Callable[[str], None]]):
  """(head gradients, whole-model gradient norms f32[K]) of every update: the shared pass of an LDP sweep."""
  fn = lambda v, x, y, k: head_grads_and_model_norms(prep.model, v, x, y, k, minmax=cfg.minmax,
                                                     batched_variables=prep.fold_of_batch is not None)
  return in_calls(prep, cfg.chunk_size, fn, progress, "gradients + model norms")
