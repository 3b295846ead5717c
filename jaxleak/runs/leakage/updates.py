"""Computing every client update of a prepared run: fixed-size compiled calls (one compilation), optionally
sharded over local devices; single step, multi step, and the shared pass of an LDP sweep."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from typing import Callable, Optional

import jax
import numpy as np

from jaxleak import storage
from jaxleak.federated import client_updates, head_grads_and_model_norms, last_layer_grads
from jaxleak.federated.rounds import client_execution
from jaxleak.privacy import LdpConfig
from jaxleak.runs.leakage.config import LeakageConfig
from jaxleak.runs.leakage.prepare import Prepared, log, take_rows
from jaxleak.types import LastLayerGrads


def call_size(count: int, limit: int, unit: int = 1) -> int:
  """Items per compiled call when `count` items run in calls of at most `limit`: as many calls as `limit` needs,
  their size evened out (the least padding) and then rounded up to one of eight sizes per octave (1, ..., 8, 9, 10,
  ..., 16, 18, ..., 32, 36, ...; never above `limit`) and to a multiple of `unit` (the device count).

  The rounding lets runs whose counts differ a little (a study's samplings, its K of secure aggregation) share one
  compiled program, for under 12.5 % more padding than exact evening; each new program costs a compilation (on
  2 CPU cores 0.5-4 s each; on an accelerator, where padded work is close to free, more)."""
  if count < 1 or limit < 1 or unit < 1:
    raise ValueError(f"call_size: count ({count}), limit ({limit}) and unit ({unit}) must be >= 1.")
  evened = -(-count // -(-count // limit))
  granule = 1 << max(0, evened.bit_length() - 4)
  size = min(limit, -(-evened // granule) * granule)
  return -(-size // unit) * unit


def fold_call_size(batches_per_fold, limit: int, unit: int = 1) -> int:
  """Updates per call when every call holds one fold's updates: the multiple of `unit` (the device count) times a
  power of two, at most max(limit, unit), that minimises padded updates plus one update's worth per call (a fold's
  last call is padded with repeats of its own updates)."""
  counts = np.asarray(batches_per_fold)
  sizes, p = [], unit
  while p <= max(limit, unit):
    sizes.append(p)
    p *= 2
  cost = lambda p: int(np.sum(-(-counts // p) * p + -(-counts // p)))
  return min(sizes, key=lambda p: (cost(p), -p))


def _call_plan(prep: Prepared, per_call: int, unit: int, per_fold: bool):
  """(updates per call, [(update indices i64[per_call], how many are real, fold or None)]) for every call
  (per_call: already at most K and a multiple of `unit`).

  One global model (or per_fold False): consecutive updates, the last call padded with repeats. per_fold: each
  call holds updates of one fold only, so the fold's weights are shared by the call (no per-update copies)."""
  k = len(prep.indices)
  if not per_fold:
    return per_call, [(np.arange(s, s + per_call) % k, min(per_call, k - s), None) for s in range(0, k, per_call)]
  folds = np.unique(prep.fold_of_batch)
  members = [np.flatnonzero(prep.fold_of_batch == f) for f in folds]
  per_call = fold_call_size([len(m) for m in members], per_call, unit)
  plan = [(np.resize(m[s:], per_call) if len(m) - s < per_call else m[s:s + per_call], min(per_call, len(m) - s),
           int(f)) for f, m in zip(folds, members) for s in range(0, len(m), per_call)]
  return per_call, plan


#: Seconds between saves of a resumable run's finished calls (a save writes every finished call's results, one file).
SAVE_EVERY_S = 30.0


def _digest(prep: Prepared, plan) -> str:
  """SHA-256 of everything a run's calls read besides its configuration: the windows, labels and each update's
  rows, keys, class weights and global models (trained folds included), and the calls' plan."""
  h = hashlib.sha256()
  arrays = [prep.clients.windows, prep.clients.labels, prep.indices, jax.random.key_data(prep.dropout_keys),
            prep.class_weights, prep.fold_of_batch, *jax.tree.leaves(prep.variables)]
  arrays += [a for sel, n, fold in plan for a in (sel, np.asarray([n, -1 if fold is None else fold]))]
  for a in arrays:
    if a is None:
      h.update(b"none;")
      continue
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _resume_checkpoint(resume, prep: Prepared, plan, per_call: int, what: str) -> storage.Checkpointer:
  """The checkpoint of these calls in the resume folder: named by the fingerprint of the run's configuration, its
  inputs and its calls, so that any other run (other flags, data, trained models, JAX) gets a file of its own."""
  folder, identity = resume
  config = {"identity": identity, "what": what, "per_call": per_call, "inputs_sha256": _digest(prep, plan),
            "jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count()}
  name = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
  return storage.Checkpointer(os.path.join(folder, f"{name}-{storage.fingerprint(config)}.ckpt"), config,
                              what=f"{what} of a leakage run")


def _restore_calls(ckpt: storage.Checkpointer, progress) -> list:
  """The leaves of each finished call stored in `ckpt` (a list per call, in call order); [] if there are none or
  the file cannot be read (it is only a cache of work done: noted, and computed again)."""
  if not ckpt.exists():
    return []
  try:
    meta = storage.read_checkpoint_header(ckpt.path).get("meta", {})
    target = {"calls": {str(i): {str(j): np.zeros(shape, dtype) for j, (shape, dtype) in enumerate(meta["leaves"])}
                        for i in range(int(meta["done"]))}}
    state, _ = ckpt.restore(target)
  except (storage.StorageError, KeyError, TypeError, ValueError) as e:
    log(progress, f"note: {ckpt.path} cannot be resumed from ({str(e)[:200]}); computing its calls again")
    return []
  return [[np.asarray(state["calls"][str(i)][str(j)]) for j in range(len(meta["leaves"]))]
          for i in range(int(meta["done"]))]


def in_calls(prep: Prepared, per_call: int, fn, progress: Optional[Callable[[str], None]], what: str = "gradients",
             execution: str = "auto", resume: Optional[tuple[str, dict]] = None):
  """Runs fn(variables, windows, labels, keys, class_weights, batched_variables) over all updates in calls of a
  fixed size (one compilation); class_weights is the calls' rows of `prep.class_weights`, or None.

  With trained folds, execution 'vmap' gathers the variables per update (leading axis = update,
  batched_variables=True); 'sequential' gives each call the updates of one fold and that fold's variables
  (batched_variables=False); 'auto' is `federated.rounds.client_execution`'s choice (sequential for conv models
  on XLA:CPU, where per-update conv weights become slow grouped convolutions). Both compute every update as its
  own batch at its own fold's model (equal to float round-off, tested).
  Returns fn's output pytree with a leading axis K (NumPy), in update order.

  resume: (folder, identity) to make the calls resumable in one process: finished calls are saved (every
  `SAVE_EVERY_S` seconds, all but the last) to a checkpoint in `folder` named by the fingerprint of `identity`
  (what determines fn: the run's configuration), the inputs and the calls; a rerun loads them and computes the
  rest, to the same results bit for bit (calls are independent and deterministic). A second process running the
  same calls at once is refused (`storage.exclusive_run`). Ignored with several JAX processes.
  """
  k = len(prep.indices)
  place = lambda tree: tree
  unit = 1 if prep.mesh is None else prep.mesh.devices.size
  per_call = call_size(k, per_call, unit)
  if prep.mesh is not None:                                       # a multiple of the device count, batch-sharded
    sharding = jax.sharding.NamedSharding(prep.mesh, jax.sharding.PartitionSpec("batch"))
    place = lambda tree: jax.device_put(tree, sharding)
  per_fold = prep.fold_of_batch is not None and client_execution(prep.variables, execution) == "sequential"
  per_call, plan = _call_plan(prep, per_call, unit, per_fold)
  # Several JAX processes (jax.distributed): process p runs calls p, p + P, ...; the results are gathered so that
  # every process holds all updates, in call order. Calls are independent, so results equal one process's.
  n_proc, me = jax.process_count(), jax.process_index()
  mine = plan[me::n_proc]
  mine = mine + mine[-1:] * (-(-len(plan) // n_proc) - len(mine)) if mine else [plan[0]] * (-(-len(plan) // n_proc))
  with contextlib.ExitStack() as stack:
    ckpt = None
    if resume is not None and n_proc == 1 and len(mine) > 1:
      ckpt = _resume_checkpoint(resume, prep, plan, per_call, what)
      stack.enter_context(storage.exclusive_run(ckpt.path, "leakage run"))
    out = _run_calls(prep, mine, plan, per_call, fn, progress, what, place, ckpt)
  if n_proc > 1:
    from jax.experimental import multihost_utils
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *out)
    gathered = multihost_utils.process_allgather(stacked)          # [P, calls per process, per_call, ...]
    out = [jax.tree.map(lambda a, j=j, q=q: np.asarray(a[q, j]), gathered)
           for c, (q, j) in sorted((c, (q, j)) for q in range(n_proc)
                                   for j, c in enumerate(range(len(plan))[q::n_proc]))]
  order = np.concatenate([sel[:n] for sel, n, _ in plan])
  stacked = jax.tree.map(lambda *xs: np.concatenate(xs), *[jax.tree.map(lambda a, n=n: a[:n], res)
                                                           for res, (_, n, _) in zip(out, plan)])
  if np.array_equal(order, np.arange(k)):
    return stacked
  inverse = np.empty(k, np.int64)
  inverse[order] = np.arange(k)
  return jax.tree.map(lambda a: a[inverse], stacked)


def _run_calls(prep: Prepared, mine, plan, per_call: int, fn, progress, what: str, place, ckpt) -> list:
  """fn's output (NumPy) of each of this process's calls `mine`, in order: those `ckpt` holds loaded, the rest
  computed (see `in_calls`)."""
  k, n_proc = len(prep.indices), jax.process_count()
  # At most all calls but one (what `in_calls` saves): one computed call gives the outputs' tree structure.
  restored = _restore_calls(ckpt, progress)[:len(mine) - 1] if ckpt is not None else []
  if restored:
    log(progress, f"{what}: resuming after {len(restored)} of {len(mine)} calls from {ckpt.path}")
  out, leaves, t0 = [None] * len(restored), list(restored), time.perf_counter()
  saved = t0
  for i, (sel, _, fold) in enumerate(mine):
    if i < len(restored):
      continue
    if prep.fold_of_batch is None:
      variables, batched = prep.variables, False
    elif fold is not None:
      variables, batched = jax.tree.map(lambda a, f=fold: a[f], prep.variables), False
    else:
      variables, batched = place(take_rows(prep.variables, prep.fold_of_batch[sel])), True
    weights = None if prep.class_weights is None else prep.class_weights[sel]
    res = fn(variables, *place((prep.clients.windows[prep.indices[sel]], prep.clients.labels[prep.indices[sel]],
                                take_rows(prep.dropout_keys, sel), weights)), batched)
    out.append(jax.tree.map(np.asarray, res))
    leaves.append(jax.tree.leaves(out[-1]))
    done = min(k, sum(n for _, n, _ in plan[:(i + 1) * n_proc]))
    rate = (i + 1 - len(restored)) * per_call * prep.indices.shape[1] / (time.perf_counter() - t0)
    log(progress, f"{what}: {done}/{k} updates ({rate:,.0f} windows/s" + (f" in this process of {n_proc})"
                                                                         if n_proc > 1 else ")"))
    if ckpt is not None and i + 1 < len(mine) and time.perf_counter() - saved >= SAVE_EVERY_S:
      ckpt.save({"calls": {str(c): {str(j): a for j, a in enumerate(ls)} for c, ls in enumerate(leaves)}},
                {"done": len(out), "leaves": [[list(a.shape), a.dtype.str] for a in leaves[0]]})
      saved = time.perf_counter()
  if restored:                                   # the stored calls, in the structure the computed ones have
    treedef = jax.tree.structure(out[len(restored)])
    out[:len(restored)] = [jax.tree.unflatten(treedef, ls) for ls in restored]
  return out


def require_finite(prep: Prepared, cfg: LeakageConfig, grads: LastLayerGrads) -> LastLayerGrads:
  """`grads` if every update is finite; else a ValueError naming how many updates and which subjects are not (an
  attack on a NaN update returns no counts, so every metric of the run would be NaN)."""
  finite = np.ones(len(prep.indices), bool)
  for leaf in jax.tree.leaves(grads):
    finite &= np.isfinite(np.asarray(leaf)).reshape(len(finite), -1).all(axis=1)
  if finite.all():
    return grads
  subjects = sorted({int(s) for s in prep.subject_of_batch[~finite]})
  if cfg.local is not None:
    cause = f"the clients' local training diverged: lower the local learning rate (local_lr, it is {cfg.local.lr:g})"
  else:
    cause = "the model overflowed on these windows: check the data's values and scale"
  raise ValueError(f"{int((~finite).sum())} of {len(finite)} updates are not finite (NaN or inf), of subjects "
                   f"{subjects}; {cause}.")


def _resume(resume_dir: Optional[str], cfg: LeakageConfig, **identity) -> Optional[tuple[str, dict]]:
  """`in_calls`' resume argument: the folder and what determines the calls' function (the configuration's text:
  dataclass reprs are exact for the strings, numbers and tuples a config holds)."""
  return None if resume_dir is None else (resume_dir, {"cfg": repr(cfg), **{k: repr(v) for k, v in identity.items()}})


def compute_updates(prep: Prepared, cfg: LeakageConfig, ldp: LdpConfig,
                    progress: Optional[Callable[[str], None]], execution: str = "auto",
                    resume_dir: Optional[str] = None) -> LastLayerGrads:
  """The head gradients (single step, after `ldp`) or gradient-equivalents (multi step) of every update.
  `execution`: how trained folds' updates are grouped into calls (`in_calls`); results do not depend on it.
  `resume_dir`: a folder that makes the computation resumable (`in_calls`' resume).
  'auto' groups by fold only where it pays (measured, benchmarks/fold_execution.py, HAPT DeepConvLSTM on 2 CPU
  cores): the forward-only single step 1.26x (TinyHAR 1.58x); the full backward of whole-model clipping 1.04x;
  multi step 0.89x (after the first local step every update has its own weights either way), so those use 'vmap'."""
  batched = prep.fold_of_batch is not None
  if execution == "auto" and (cfg.local is not None or ldp.needs_full_gradient):
    execution = "vmap"
  if cfg.local is not None:
    fn = lambda v, x, y, k, w, b: client_updates(prep.model, v, x, y, k, local=cfg.local, minmax=cfg.minmax,
                                                 batched_variables=b, progress=progress, class_weights=w)
    per_call = cfg.vmap_chunk(True) * (1 if prep.mesh is None else prep.mesh.devices.size)
    return require_finite(prep, cfg, in_calls(prep, per_call, fn, progress, "local training", execution,
                                              _resume(resume_dir, cfg, ldp=ldp, execution=execution)))
  if ldp.per_example and ldp.needs_full_gradient:
    per_call, chunk = 1, 1                                        # [N, all params] per update: one a call
  elif ldp.needs_full_gradient:
    per_call = chunk = cfg.vmap_chunk(True)                       # plain vmap (see last_layer_grads)
  else:
    per_call, chunk = cfg.batches_per_call, cfg.vmap_chunk(False)
  if batched:
    per_call = min(per_call, 16)                                  # per-update copies of the params per call
  if prep.mesh is not None:                                       # one vmap per call, partitioned over devices
    per_call = chunk = chunk * prep.mesh.devices.size
  fn = lambda v, x, y, k, w, b: last_layer_grads(prep.model, v, x, y, k, method=cfg.grad_method, minmax=cfg.minmax,
                                                 chunk_size=chunk, ldp=ldp, batched_variables=b, class_weights=w)
  return require_finite(prep, cfg, in_calls(prep, per_call, fn, progress, execution=execution,
                                            resume=_resume(resume_dir, cfg, ldp=ldp, execution=execution)))


def compute_heads_and_norms(prep: Prepared, cfg: LeakageConfig, progress: Optional[Callable[[str], None]],
                            execution: str = "auto", resume_dir: Optional[str] = None):
  """(head gradients, whole-model gradient norms f32[K]) of every update: the shared pass of an LDP sweep.
  A full backward pass: 'auto' is 'vmap' (see compute_updates)."""
  execution = "vmap" if execution == "auto" else execution
  fn = lambda v, x, y, k, w, b: head_grads_and_model_norms(prep.model, v, x, y, k, minmax=cfg.minmax,
                                                           batched_variables=b, class_weights=w)
  grads, norms = in_calls(prep, cfg.vmap_chunk(True), fn, progress, "gradients + model norms", execution,
                          _resume(resume_dir, cfg, execution=execution))
  return require_finite(prep, cfg, grads), norms
