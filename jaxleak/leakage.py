"""The label-leakage experiment as a library call: single step (FedSGD) or, with `local`, multi-step (FedAvg);
optional LDP; untrained or trained (per-client LOSO fold) global models.

  dataset -> clients (one per subject) -> sampler -> all batches (queries) of all clients
  -> each client's update at its global model (one compiled function, fixed-size chunks)
  -> every attack vmapped over all updates -> per-batch and per-client metrics.

The gradient of each batch is computed once and shared by all attacks. Randomness comes from one key per run,
folded in by purpose, subject id and batch index, so results do not depend on chunking or on which other clients
are in the run.
"""
from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import attacks as A
from jaxleak import data as D
from jaxleak import metrics as M
from jaxleak import models
from jaxleak.federated import (LdpConfig, LocalTraining, apply_batch_ldp, client_updates,
                               head_grads_and_model_norms, last_layer_grads)
from jaxleak.federated.training import checkpoint_path, load_fold_models
from jaxleak.types import LastLayerGrads

# Purposes folded into the run key.
_INIT, _SAMPLER, _DROPOUT, _ATTACK, _LLG_STAR = range(5)


@dataclasses.dataclass(frozen=True)
class SingleStepConfig:
  """One leakage run. Despite the name it also describes multi-step runs (set `local`)."""
  dataset: str = "hapt"
  data_dir: Optional[str] = None
  synthetic_scale: float = 1.0
  model: str = "deepconvlstm"
  head_bias: bool = True
  sampling: str = "shuffle"
  batch_size: int = 100
  attacks: tuple[str, ...] = A.HAR_PAPER_ATTACKS
  clients: Optional[tuple[int, ...]] = None         # subject ids; None = all
  num_clients: Optional[int] = None                 # first k subjects (after `clients`)
  seed: int = 1
  grad_method: str = "fast"
  minmax: bool = True
  chunk_size: int = 8                               # batches vmapped together inside the compiled function
  batches_per_call: int = 64                        # batches per compiled call (progress granularity)
  ldp: LdpConfig = LdpConfig()                      # the clients' local DP (default: none)
  local: Optional[LocalTraining] = None             # None: single step (FedSGD); else multi-step (FedAvg),
                                                    # batch_size = N data points per update
  checkpoint_dir: Optional[str] = None              # trained LOSO models (train_models.py); None = untrained
  shard: bool = True                                # spread each call's batches over all local devices

  def validate(self) -> None:
    for name in self.attacks:
      A.info(name)                                  # raises with the valid names
    if self.sampling not in D.STRATEGIES:
      raise ValueError(f"unknown sampling {self.sampling!r}; valid: {', '.join(D.STRATEGIES)}.")
    if self.model not in models.MODELS:
      raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(sorted(models.MODELS))}.")
    if self.batch_size <= 0 or self.chunk_size <= 0 or self.batches_per_call <= 0:
      raise ValueError("batch_size, chunk_size and batches_per_call must be positive.")
    if not self.attacks:
      raise ValueError("no attacks given.")
    if self.local is not None and not self.ldp.is_identity:
      raise ValueError("multi-step runs take their LDP per local step: set it in LocalTraining(ldp=...).")


@dataclasses.dataclass
class SingleStepResult:
  """Everything a run produced (NumPy arrays; K batches, C classes)."""
  config: SingleStepConfig
  dataset_name: str
  class_names: tuple[str, ...]
  subject_ids: tuple[int, ...]                      # client index -> subject id
  batch_client: np.ndarray                          # i32[K] client index of each batch
  batch_index: np.ndarray                           # i32[K] index of the batch within its client
  true_counts: np.ndarray                           # i32[K, C]
  pred_counts: dict                                 # attack -> i32[K, C]
  client_metrics: dict                              # attack -> metrics.ClientMetrics of NumPy arrays
  timings: dict

  def summary_rows(self) -> list[dict]:
    rows = []
    for name in self.config.attacks:
      cm = self.client_metrics[name]
      row = {"attack": name}
      for metric in ("lnacc", "leacc", "class_acc", "symmetric_existence"):
        mean, std = M.mean_std_over_clients(getattr(cm, metric))
        row[metric] = (float(mean), float(std))
      rows.append(row)
    return rows


def _log(progress, msg):
  if progress is not None:
    progress(msg)


def select_clients(dataset: D.HarDataset, cfg: SingleStepConfig) -> tuple[int, ...]:
  ids = dataset.subject_ids if cfg.clients is None else tuple(cfg.clients)
  unknown = [s for s in ids if s not in dataset.subjects]
  if unknown:
    raise ValueError(f"--clients: unknown subject ids {unknown}; {dataset.name} has {list(dataset.subject_ids)}.")
  if cfg.num_clients is not None:
    if cfg.num_clients <= 0:
      raise ValueError(f"num_clients must be positive, got {cfg.num_clients}.")
    ids = ids[:cfg.num_clients]
  return tuple(ids)


def batch_keys(key: jax.Array, subject_of_batch: np.ndarray, batch_index: np.ndarray) -> jax.Array:
  """One key per batch: fold_in(fold_in(key, subject id), batch index within the subject)."""
  fold = lambda s, b: jax.random.fold_in(jax.random.fold_in(key, s), b)
  return jax.vmap(fold)(jnp.asarray(subject_of_batch), jnp.asarray(batch_index))


def run_attacks(grads: LastLayerGrads, num_samples: int, names: Sequence[str], *, keys: jax.Array,
                star_params: dict, head) -> dict:
  """Every attack vmapped over all gradients; returns {name: i32[K, C]}.

  `head` (LastLayerParams) and the values of `star_params` carry a leading K axis: the attacked model of each
  batch (the same for every batch of an untrained run, the client's fold when trained).
  """
  preds = {}
  for name in names:
    spec = A.info(name)
    star = star_params.get(spec.star_method)
    salt = zlib.crc32(name.encode())
    f = jax.jit(jax.vmap(lambda g, kk, st, hd, name=name, salt=salt: A.run(
        name, g, num_samples, key=jax.random.fold_in(kk, salt), star_params=st, head=hd)))
    preds[name] = np.asarray(f(grads, keys, star, head))
  return preds


@dataclasses.dataclass
class _Prepared:
  dataset: D.HarDataset
  clients: D.WindowedClients
  indices: np.ndarray
  batch_client: np.ndarray
  batch_index: np.ndarray
  model: object
  variables: dict                                   # shared, or stacked per fold when fold_of_batch is set
  fold_of_batch: Optional[np.ndarray]               # i32[K]: the trained fold (global model) of each batch
  key: jax.Array
  dropout_keys: jax.Array
  timings: dict
  mesh: Optional[jax.sharding.Mesh] = None          # 1-D mesh ('batch',) when sharding over several devices


def _prepare(cfg, dataset, variables, progress) -> _Prepared:
  cfg.validate()
  t0 = time.perf_counter()
  dataset = dataset or D.load(cfg.dataset, data_dir=cfg.data_dir, scale=cfg.synthetic_scale, seed=cfg.seed)
  clients = D.make_clients(dataset, select_clients(dataset, cfg))
  key = jax.random.key(cfg.seed)
  indices, batch_client = D.sample_clients(cfg.sampling, jax.random.fold_in(key, _SAMPLER), clients,
                                           cfg.batch_size, queries=cfg.local is not None)
  batch_index = (np.arange(len(batch_client)) -
                 np.searchsorted(batch_client, batch_client, side="left")).astype(np.int32)
  subject_of_batch = np.asarray(clients.subject_ids)[batch_client]
  _log(progress, f"{dataset.name}: {clients.num_clients} clients, {len(clients.labels):,} windows, "
                 f"{len(indices)} batches of {cfg.batch_size} ({cfg.sampling})")
  model = models.build(cfg.model, dataset.num_classes, head_bias=cfg.head_bias)
  fold_of_batch = None
  if cfg.checkpoint_dir is not None:
    if variables is not None:
      raise ValueError("give either variables or cfg.checkpoint_dir, not both.")
    variables, held = load_fold_models(checkpoint_path(cfg.checkpoint_dir), model, clients.windows.shape[1],
                                       dataset.num_channels)
    missing = [s for s in clients.subject_ids if s not in held]
    if missing:
      raise ValueError(f"{cfg.checkpoint_dir} has no trained model holding out subjects {missing}; train them with "
                       "experiments/train_models.py --folds=... or restrict --clients.")
    fold_of_batch = np.asarray([held.index(s) for s in clients.subject_ids], np.int32)[batch_client]
    _log(progress, f"trained models: {len(held)} folds from {cfg.checkpoint_dir}")
  elif variables is None:
    variables = models.init(model, jax.random.fold_in(key, _INIT), clients.windows.shape[1],
                            dataset.num_channels)
  dropout_keys = batch_keys(jax.random.fold_in(key, _DROPOUT), subject_of_batch, batch_index)
  mesh = None
  if cfg.shard and jax.local_device_count() > 1:
    mesh = jax.make_mesh((jax.local_device_count(),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    _log(progress, f"sharding batches over {jax.local_device_count()} devices")
  return _Prepared(dataset, clients, indices, batch_client, batch_index, model, variables, fold_of_batch, key,
                   dropout_keys, {"data_s": time.perf_counter() - t0}, mesh)


def _in_calls(prep: _Prepared, per_call: int, fn, progress, what="gradients", shard: bool = True):
  """Runs fn(variables, windows, labels, keys) over all batches in calls of a fixed size (one compilation).

  With trained folds, `variables` is gathered per batch (leading axis = batch) and fn must expect that.
  """
  k = len(prep.indices)
  per_call = min(per_call, k)
  place = lambda tree: tree
  # Per-batch variables (trained folds) are not sharded: TinyHAR's updates with per-batch weights differed under
  # GSPMD batch sharding on XLA:CPU (BUILD_NOTES.md). Shared-variable single-step calls are (tested equal).
  shard = shard and prep.fold_of_batch is None
  if shard and prep.mesh is not None:                             # a multiple of the device count, batch-sharded
    n_dev = prep.mesh.devices.size
    per_call = -(-per_call // n_dev) * n_dev
    sharding = jax.sharding.NamedSharding(prep.mesh, jax.sharding.PartitionSpec("batch"))
    place = lambda tree: jax.device_put(tree, sharding)
  out, t0 = [], time.perf_counter()
  for start in range(0, k, per_call):
    stop = min(start + per_call, k)
    sel = np.arange(start, start + per_call) % k                  # pad the last call with repeats
    variables = prep.variables if prep.fold_of_batch is None else place(jax.tree.map(
        lambda a: a[jnp.asarray(prep.fold_of_batch[sel])], prep.variables))
    res = fn(variables, *place((prep.clients.windows[prep.indices[sel]], prep.clients.labels[prep.indices[sel]],
                                prep.dropout_keys[sel])))
    out.append(jax.tree.map(lambda a: np.asarray(a)[:stop - start], res))
    rate = stop * prep.indices.shape[1] / (time.perf_counter() - t0)
    _log(progress, f"{what}: {stop}/{k} batches ({rate:,.0f} windows/s)")
  return jax.tree.map(lambda *xs: np.concatenate(xs), *out)


def _gradients(prep: _Prepared, cfg: SingleStepConfig, ldp: LdpConfig, progress) -> LastLayerGrads:
  batched = prep.fold_of_batch is not None
  if cfg.local is not None:
    fn = lambda v, x, y, k: client_updates(prep.model, v, x, y, k, local=cfg.local, minmax=cfg.minmax,
                                           batched_variables=batched)
    # Not sharded: from the second local step on the weights are per query, and TinyHAR's updates with per-batch
    # weights differed under GSPMD sharding (BUILD_NOTES.md).
    return _in_calls(prep, cfg.chunk_size, fn, progress, "local training", shard=False)
  if ldp.per_example and ldp.needs_full_gradient:
    per_call, chunk = 1, 1                                        # [N, all params] per batch: one batch a call
  elif ldp.needs_full_gradient:
    per_call = chunk = cfg.chunk_size                             # plain vmap (see last_layer_grads)
  else:
    per_call, chunk = cfg.batches_per_call, cfg.chunk_size
  if batched:
    per_call = min(per_call, 16)                                  # per-batch copies of the params per call
  if prep.mesh is not None and not batched:                       # one vmap per call, partitioned over devices
    per_call = chunk = chunk * prep.mesh.devices.size
  fn = lambda v, x, y, k: last_layer_grads(prep.model, v, x, y, k, method=cfg.grad_method, minmax=cfg.minmax,
                                           chunk_size=min(chunk, per_call),
                                           ldp=ldp, batched_variables=batched)
  return _in_calls(prep, per_call, fn, progress)


def _attack_and_score(prep: _Prepared, cfg: SingleStepConfig, grads: LastLayerGrads, timings: dict
                      ) -> SingleStepResult:
  t0 = time.perf_counter()
  model, clients, key = prep.model, prep.clients, prep.key
  k = len(prep.indices)

  def estimate(variables, method):
    penultimate = lambda x: model.apply(variables, x, train=False, return_features=True)[1]
    return A.estimate_llg_star_params(penultimate, models.head_params(variables["params"]),
                                      clients.windows.shape[1:], cfg.batch_size,
                                      jax.random.fold_in(key, _LLG_STAR), method=method, dummy="normal")

  methods = sorted({A.info(n).star_method for n in cfg.attacks} - {None})
  if prep.fold_of_batch is None:              # one global model: broadcast its head and estimates to K batches
    per_batch = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + jnp.shape(a)), tree)
    head = per_batch(models.head_params(prep.variables["params"]))
    star_params = {m: per_batch(estimate(prep.variables, m)) for m in methods}
  else:                                       # one model per fold: estimate per fold, gather per batch
    per_batch = lambda tree: jax.tree.map(lambda a: a[jnp.asarray(prep.fold_of_batch)], tree)
    head = per_batch(models.head_params(prep.variables["params"]))
    star_params = {m: per_batch(jax.lax.map(lambda v, m=m: estimate(v, m), prep.variables)) for m in methods}
  subject_of_batch = np.asarray(clients.subject_ids)[prep.batch_client]
  attack_keys = batch_keys(jax.random.fold_in(key, _ATTACK), subject_of_batch, prep.batch_index)
  preds = run_attacks(grads, cfg.batch_size, cfg.attacks, keys=attack_keys, star_params=star_params,
                      head=head)
  true_counts = np.asarray(M.counts_from_labels(jnp.asarray(clients.labels[prep.indices]),
                                                prep.dataset.num_classes))
  per_client = {name: jax.tree.map(np.asarray, M.client_metrics(true_counts, p, prep.batch_client,
                                                                 clients.num_clients))
                for name, p in preds.items()}
  timings = {**timings, "attacks_s": time.perf_counter() - t0}
  return SingleStepResult(config=cfg, dataset_name=prep.dataset.name, class_names=prep.dataset.class_names,
                          subject_ids=clients.subject_ids, batch_client=prep.batch_client,
                          batch_index=prep.batch_index, true_counts=true_counts, pred_counts=preds,
                          client_metrics=per_client, timings=timings)


def run_single_step(cfg: SingleStepConfig, *, dataset: Optional[D.HarDataset] = None,
                    variables: Optional[dict] = None,
                    progress: Optional[Callable[[str], None]] = None) -> SingleStepResult:
  """Runs the single-step leakage experiment.

  Args:
    cfg: the configuration (cfg.ldp: the clients' local DP).
    dataset: an already loaded dataset (default: load cfg.dataset).
    variables: the global model's variables (default: a fresh Xavier-normal init from the seed, the same for all
      clients, as the reference's untrained setting).
    progress: called with progress messages (e.g. absl logging.info); None for silence.
  """
  prep = _prepare(cfg, dataset, variables, progress)
  t0 = time.perf_counter()
  grads = _gradients(prep, cfg, cfg.ldp, progress)
  return _attack_and_score(prep, cfg, grads, {**prep.timings, "gradients_s": time.perf_counter() - t0})


#: The HAR paper's nine LDP settings (noise sigma, clip tau); tau = 0 means no clipping (spec 4).
PAPER_LDP_GRID = ((0.0, 0.1), (0.0, 0.5), (0.0, 1.0), (0.0, 1.5), (0.1, 0.0), (0.1, 0.1), (0.1, 0.5), (0.1, 1.0),
                  (0.1, 1.5))


def ldp_setting(noise: float, clip: float, *, scope: str = "all", granularity: str = "batch") -> LdpConfig:
  """LdpConfig from the reference's flag convention: clip 0 = no clipping, noise 0 = no noise."""
  if clip < 0 or noise < 0:
    raise ValueError(f"clip and noise must be >= 0 (0 = off); got clip={clip}, noise={noise}.")
  return LdpConfig(clip_norm=clip if clip > 0 else float("inf"), noise_std=noise, clip_scope=scope,
                   clip_granularity=granularity)


def paper_ldp_settings(scope: str = "all", granularity: str = "batch") -> dict[str, LdpConfig]:
  """'none' plus the nine settings, named ldp_<noise>_<clip> as the reference's job scripts."""
  out = {"none": LdpConfig()}
  for noise, clip in PAPER_LDP_GRID:
    out[f"ldp_{noise}_{clip}"] = ldp_setting(noise, clip, scope=scope, granularity=granularity)
  return out


def run_ldp_sweep(cfg: SingleStepConfig, settings: dict[str, LdpConfig], *,
                  dataset: Optional[D.HarDataset] = None, variables: Optional[dict] = None,
                  progress: Optional[Callable[[str], None]] = None) -> dict[str, SingleStepResult]:
  """Runs the single-step experiment once per LDP setting, sharing data, batches and the gradient pass.

  Batch-granularity settings share one pass that yields every batch's head gradient and whole-model gradient
  norm (a full backward only if some setting clips the whole model); each setting is then `apply_batch_ldp`
  with the same noise keys `run_single_step` would use, so results equal separate runs. Per-example settings
  recompute their gradients.
  """
  prep = _prepare(cfg, dataset, variables, progress)
  shared = [s for s in settings.values() if not s.per_example]
  base = None
  if shared:
    t0 = time.perf_counter()
    if any(s.needs_full_gradient for s in shared):
      fn = lambda v, x, y, k: head_grads_and_model_norms(prep.model, v, x, y, k, minmax=cfg.minmax,
                                                         batched_variables=prep.fold_of_batch is not None)
      base = _in_calls(prep, cfg.chunk_size, fn, progress, "gradients + model norms")
    else:
      g = _gradients(prep, cfg, LdpConfig(), progress)
      base = (g, np.full(len(prep.indices), np.nan, np.float32))
    base_s = time.perf_counter() - t0
    noise_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(prep.dropout_keys)
    apply = jax.jit(jax.vmap(apply_batch_ldp, in_axes=(0, 0, None, 0)), static_argnums=2)
  results = {}
  for name, ldp in settings.items():
    t0 = time.perf_counter()
    if ldp.per_example:
      grads = _gradients(prep, cfg, ldp, progress)
      timings = {**prep.timings, "gradients_s": time.perf_counter() - t0}
    else:
      grads = jax.tree.map(np.asarray, apply(base[0], jnp.asarray(base[1]), ldp, noise_keys))
      timings = {**prep.timings, "shared_gradients_s": base_s, "ldp_s": time.perf_counter() - t0}
    results[name] = _attack_and_score(prep, dataclasses.replace(cfg, ldp=ldp), grads, timings)
    _log(progress, f"LDP setting {name}: done")
  return results
