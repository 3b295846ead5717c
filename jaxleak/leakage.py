"""The single-step (FedSGD) label-leakage experiment as a library call.

  dataset -> clients (one per subject) -> sampler -> all batches of all clients
  -> last-layer gradients at the global model (one compiled function, fixed-size chunks)
  -> every attack vmapped over all gradients -> per-batch and per-client metrics.

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
from jaxleak.federated import last_layer_grads
from jaxleak.types import LastLayerGrads

# Purposes folded into the run key.
_INIT, _SAMPLER, _DROPOUT, _ATTACK, _LLG_STAR = range(5)


@dataclasses.dataclass(frozen=True)
class SingleStepConfig:
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


def compute_gradients(model, variables, clients: D.WindowedClients, indices: np.ndarray, keys: jax.Array,
                      cfg: SingleStepConfig, progress: Optional[Callable[[str], None]] = None) -> LastLayerGrads:
  """Last-layer gradients of all K batches, in compiled calls of a fixed `batches_per_call` (one compilation)."""
  k = len(indices)
  per_call = min(cfg.batches_per_call, k)
  out, t0 = [], time.perf_counter()
  for start in range(0, k, per_call):
    stop = min(start + per_call, k)
    sel = np.arange(start, start + per_call) % k                  # pad the last call with repeats
    x = clients.windows[indices[sel]]
    y = clients.labels[indices[sel]]
    g = last_layer_grads(model, variables, x, y, keys[sel], method=cfg.grad_method, minmax=cfg.minmax,
                         chunk_size=min(cfg.chunk_size, per_call))
    out.append(jax.tree.map(lambda a: np.asarray(a)[:stop - start], g))
    rate = stop * cfg.batch_size / (time.perf_counter() - t0)
    _log(progress, f"gradients: {stop}/{k} batches ({rate:,.0f} windows/s)")
  return jax.tree.map(lambda *xs: np.concatenate(xs), *out)


def run_attacks(grads: LastLayerGrads, num_samples: int, names: Sequence[str], key: jax.Array, *,
                batch_keys_: jax.Array, star_params: dict, head) -> dict:
  """Every attack vmapped over all gradients; returns {name: i32[K, C]}."""
  preds = {}
  for name in names:
    spec = A.info(name)
    star = star_params.get(spec.star_method)
    salt = zlib.crc32(name.encode())
    f = jax.jit(jax.vmap(lambda g, kk, name=name, star=star, salt=salt: A.run(
        name, g, num_samples, key=jax.random.fold_in(kk, salt), star_params=star, head=head)))
    preds[name] = np.asarray(f(grads, batch_keys_))
  return preds


def run_single_step(cfg: SingleStepConfig, *, dataset: Optional[D.HarDataset] = None,
                    variables: Optional[dict] = None,
                    progress: Optional[Callable[[str], None]] = None) -> SingleStepResult:
  """Runs the single-step leakage experiment.

  Args:
    cfg: the configuration.
    dataset: an already loaded dataset (default: load cfg.dataset).
    variables: the global model's variables (default: a fresh Xavier-normal init from the seed, the same for all
      clients, as the reference's untrained setting).
    progress: called with progress messages (e.g. absl logging.info); None for silence.
  """
  cfg.validate()
  timings = {}
  t0 = time.perf_counter()
  dataset = dataset or D.load(cfg.dataset, data_dir=cfg.data_dir, scale=cfg.synthetic_scale, seed=cfg.seed)
  clients = D.make_clients(dataset, select_clients(dataset, cfg))
  key = jax.random.key(cfg.seed)
  indices, batch_client = D.sample_clients(cfg.sampling, jax.random.fold_in(key, _SAMPLER), clients,
                                           cfg.batch_size)
  batch_index = (np.arange(len(batch_client)) -
                 np.searchsorted(batch_client, batch_client, side="left")).astype(np.int32)
  subject_of_batch = np.asarray(clients.subject_ids)[batch_client]
  timings["data_s"] = time.perf_counter() - t0
  _log(progress, f"{dataset.name}: {clients.num_clients} clients, {len(clients.labels):,} windows, "
                 f"{len(indices)} batches of {cfg.batch_size} ({cfg.sampling})")

  model = models.build(cfg.model, dataset.num_classes, head_bias=cfg.head_bias)
  if variables is None:
    variables = models.init(model, jax.random.fold_in(key, _INIT), clients.windows.shape[1],
                            dataset.num_channels)
  t0 = time.perf_counter()
  dropout_keys = batch_keys(jax.random.fold_in(key, _DROPOUT), subject_of_batch, batch_index)
  grads = compute_gradients(model, variables, clients, indices, dropout_keys, cfg, progress)
  timings["gradients_s"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  head = models.head_params(variables["params"])
  penultimate = lambda x: model.apply(variables, x, train=False, return_features=True)[1]
  star_params = {}
  for method in {A.info(n).star_method for n in cfg.attacks} - {None}:
    star_params[method] = A.estimate_llg_star_params(
        penultimate, head, clients.windows.shape[1:], cfg.batch_size, jax.random.fold_in(key, _LLG_STAR),
        method=method, dummy="normal")
  attack_keys = batch_keys(jax.random.fold_in(key, _ATTACK), subject_of_batch, batch_index)
  preds = run_attacks(grads, cfg.batch_size, cfg.attacks, key, batch_keys_=attack_keys, star_params=star_params,
                      head=head)
  true_counts = np.asarray(M.counts_from_labels(jnp.asarray(clients.labels[indices]), dataset.num_classes))
  per_client = {name: jax.tree.map(np.asarray, M.client_metrics(true_counts, p, batch_client,
                                                                 clients.num_clients))
                for name, p in preds.items()}
  timings["attacks_s"] = time.perf_counter() - t0
  return SingleStepResult(config=cfg, dataset_name=dataset.name, class_names=dataset.class_names,
                          subject_ids=clients.subject_ids, batch_client=batch_client, batch_index=batch_index,
                          true_counts=true_counts, pred_counts=preds, client_metrics=per_client, timings=timings)
