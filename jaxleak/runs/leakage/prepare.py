"""Everything a leakage run computes before any gradient: data, clients, the updates' windows, the global
model(s), per-update keys and the device mesh."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import attacks as A
from jaxleak import data as D
from jaxleak import models
from jaxleak.runs import fold_training
from jaxleak.runs.leakage import aggregation
from jaxleak.runs.leakage.config import LeakageConfig

# Purposes folded into the run key: results do not depend on chunking or on which other clients are in the run.
INIT, SAMPLER, DROPOUT, ATTACK, LLG_STAR, RLU, COHORTS = range(7)


def log(progress: Optional[Callable[[str], None]], msg: str) -> None:
  if progress is not None:
    progress(msg)


def select_clients(dataset: D.HarDataset, cfg: LeakageConfig) -> tuple[int, ...]:
  """The attacked subject ids: cfg.clients (all when None), then the first cfg.num_clients of them."""
  ids = dataset.subject_ids if cfg.clients is None else tuple(cfg.clients)
  unknown = [s for s in ids if s not in dataset.subjects]
  if unknown:
    raise ValueError(f"clients: unknown subject ids {unknown}; {dataset.name} has {list(dataset.subject_ids)}.")
  if cfg.num_clients is not None:
    if cfg.num_clients <= 0:
      raise ValueError(f"num_clients must be positive, got {cfg.num_clients}.")
    ids = ids[:cfg.num_clients]
  return tuple(ids)


def attacked_clients(dataset: D.HarDataset, cfg: LeakageConfig,
                     progress: Optional[Callable[[str], None]] = None) -> D.WindowedClients:
  """The clients a run attacks: the selected subjects, or (cfg.dirichlet_alpha) their windows re-dealt non-IID.
  Re-dealt clients left fewer windows than N send no update and are left out (said through `progress`); a subject
  with fewer is refused later (`data.check_client_sizes`), as the reference does."""
  clients = D.make_clients(dataset, select_clients(dataset, cfg))
  if cfg.dirichlet_alpha is not None:        # non-IID clients instead of subjects (the selected subjects' windows)
    dealt = D.repartition_dirichlet(clients, cfg.dirichlet_clients or clients.num_clients, cfg.dirichlet_alpha,
                                    seed=cfg.seed)
    clients, small = D.clients_holding(dealt, cfg.num_samples, cfg.sampling)
    pooled = " in their balanced pool" if cfg.sampling == "balanced" else ""     # k floor(n/k) of n windows
    if not clients.num_clients:
      raise ValueError(f"dirichlet_alpha={cfg.dirichlet_alpha:g}: none of the {dealt.num_clients} re-dealt clients "
                       f"holds N={cfg.num_samples} windows{pooled} (the largest holds {max(n for _, n in small)}); "
                       "raise dirichlet_alpha, lower N (num_samples), or deal to fewer clients (dirichlet_clients).")
    if small:
      log(progress, f"dirichlet_alpha={cfg.dirichlet_alpha:g}: {len(small)} of the {dealt.num_clients} re-dealt "
                    f"clients hold fewer than N={cfg.num_samples} windows{pooled} and send no update, left out "
                    f"(client, windows): {small}")
  return clients


def batch_keys(key: jax.Array, subject_of_batch: np.ndarray, batch_index: np.ndarray) -> jax.Array:
  """One key per update: fold_in(fold_in(key, subject id), index of the update within the subject)."""
  return _batch_keys(key, jnp.asarray(subject_of_batch), jnp.asarray(batch_index))


def noise_keys(dropout_keys: jax.Array) -> jax.Array:
  """The LDP noise key of every update: fold_in(its dropout key, 1), as `federated.apply_batch_ldp` derives it."""
  return _noise_keys(dropout_keys)


_noise_keys = jax.jit(jax.vmap(lambda key: jax.random.fold_in(key, 1)))


@jax.jit
def take_rows(tree, rows):
  """Every leaf of `tree` (arrays with a leading axis, PRNG keys included; None stays None) at `rows` (i32[R],
  in [0, leading size)) along that axis, as one compiled program per shape: eagerly, each leaf's indexing was
  about five small programs (index normalisation, broadcasts, the gather), compiled anew for every new size."""
  return jax.tree.map(lambda a: a[rows], tree)


@functools.partial(jax.jit, static_argnums=1)
def broadcast_rows(tree, count: int):
  """Every leaf of `tree` repeated `count` times along a new leading axis (one compiled program per shape)."""
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (count,) + jnp.shape(a)), tree)


@jax.jit
def _batch_keys(key, subjects, indices):
  # One program per number of updates (eagerly, each fold_in of the vmap was a program of its own).
  return jax.vmap(lambda s, b: jax.random.fold_in(jax.random.fold_in(key, s), b))(subjects, indices)


@dataclasses.dataclass
class Prepared:
  """A run's inputs. K updates ("batches"): indices i32[K, N] into clients' windows, batch_client i32[K]."""
  dataset: D.HarDataset
  clients: D.WindowedClients
  indices: np.ndarray
  batch_client: np.ndarray
  batch_index: np.ndarray                             # i32[K] index of the update within its client
  model: object
  variables: dict                                     # shared, or stacked per fold when fold_of_batch is set
  fold_of_batch: Optional[np.ndarray]                 # i32[K]: the trained fold (global model) of each update
  key: jax.Array
  dropout_keys: jax.Array
  timings: dict
  mesh: Optional[jax.sharding.Mesh] = None            # 1-D mesh ('batch',) when sharding over several devices
  fold_subjects: Optional[tuple[int, ...]] = None     # the subject each trained fold (model) holds out
  class_weights: Optional[np.ndarray] = None          # f32[K, C]: each update's client loss weights (client_loss)
  # Secure aggregation (cfg.aggregate_clients > 1, runs/leakage/aggregation.py): the subject ids of each cohort's
  # members; the updates are ordered so that each K consecutive ones form one aggregate, whose cohort and round
  # are cohort_of[a] and round_of[a].
  # Dealt every round (cfg.cohort_dealing 'every_round'): cohorts holds each aggregate's members (an aggregate is
  # its own unit, cohort_of = arange(A), round_of = 0), and participation bool[A, clients] who took part in which.
  cohorts: Optional[tuple[tuple[int, ...], ...]] = None
  cohort_of: Optional[np.ndarray] = None
  round_of: Optional[np.ndarray] = None
  participation: Optional[np.ndarray] = None
  unit_ids: Optional[tuple[int, ...]] = None          # ids of what batch_client indexes, if not clients' subjects

  @property
  def scored_ids(self) -> tuple[int, ...]:
    """The ids of the units batch_client indexes and the metrics are per: the clients' subject ids, or after
    secure aggregation the cohorts' numbers."""
    return self.clients.subject_ids if self.unit_ids is None else self.unit_ids

  @property
  def subject_of_batch(self) -> np.ndarray:
    return np.asarray(self.scored_ids)[self.batch_client]


def prepare(cfg: LeakageConfig, dataset: Optional[D.HarDataset], variables: Optional[dict],
            progress: Optional[Callable[[str], None]]) -> Prepared:
  """Validates cfg, loads data (unless given), samples every client's updates and builds the global model(s)."""
  if not isinstance(cfg, LeakageConfig):
    raise TypeError(f"cfg must be a jaxleak.runs.leakage.LeakageConfig, got {type(cfg).__name__}.")
  cfg.validate()
  if dataset is not None and not isinstance(dataset, D.HarDataset):
    raise TypeError(f"dataset must be a jaxleak.data.HarDataset (or None to load cfg.dataset), got "
                    f"{type(dataset).__name__}.")
  if dataset is not None and dataset.name != cfg.dataset:
    raise ValueError(f"the dataset given is {dataset.name!r} but cfg.dataset is {cfg.dataset!r}: the results would "
                     f"carry the wrong name; set LeakageConfig(dataset={dataset.name!r}, ...).")
  t0 = time.perf_counter()
  dataset = dataset or D.load(cfg.dataset, data_dir=cfg.data_dir, scale=cfg.synthetic_scale, seed=cfg.seed)
  clients = attacked_clients(dataset, cfg, progress)
  key = jax.random.key(cfg.seed)
  indices, batch_client = D.sample_clients(cfg.sampling, jax.random.fold_in(key, SAMPLER), clients,
                                           cfg.num_samples, queries=cfg.local is not None)
  batch_index = (np.arange(len(batch_client)) -
                 np.searchsorted(batch_client, batch_client, side="left")).astype(np.int32)
  log(progress, f"{dataset.name}: {clients.num_clients} clients, {len(clients.labels):,} windows, "
                f"{len(indices)} updates of N={cfg.num_samples} ({cfg.sampling})")
  subject_of_batch = np.asarray(clients.subject_ids)[batch_client]
  model = models.build(cfg.model, dataset.num_classes, head_bias=cfg.head_bias,
                       **({} if cfg.dropout is None else {"dropout": cfg.dropout}))
  fold_of_batch = held = None
  if cfg.checkpoint_dir is not None:
    if variables is not None:
      raise ValueError("give either variables or cfg.checkpoint_dir, not both.")
    variables, held = fold_training.load_fold_models(fold_training.checkpoint_path(cfg.checkpoint_dir), model,
                                                     clients.windows.shape[1], dataset.num_channels,
                                                     dataset=dataset.name, clients=clients, progress=progress)
    missing = [s for s in clients.subject_ids if s not in held]
    if missing:
      raise ValueError(f"{cfg.checkpoint_dir} has no trained model holding out subjects {missing}; train them with "
                       "experiments/train_models.py --folds=... or restrict --clients.")
    fold_of_batch = np.asarray([held.index(s) for s in clients.subject_ids], np.int32)[batch_client]
    log(progress, f"trained models: {len(held)} folds from {cfg.checkpoint_dir}")
  elif variables is None:
    variables = models.init(model, jax.random.fold_in(key, INIT), clients.windows.shape[1], dataset.num_channels)
  dropout_keys = batch_keys(jax.random.fold_in(key, DROPOUT), subject_of_batch, batch_index)
  mesh = None
  if cfg.shard and jax.local_device_count() > 1:
    if jax.process_count() == 1:
      mesh = jax.make_mesh((jax.local_device_count(),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    else:                                         # each process shards its own calls over its own devices
      mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("batch",),
                               axis_types=(jax.sharding.AxisType.Auto,))
    log(progress, f"sharding updates over {jax.local_device_count()} devices")
  class_weights = None
  if cfg.client_loss == "class_weighted":            # each client's weights from all of its own windows
    per_client = np.stack([fold_training.class_weights(np.asarray(clients.client_labels(i)), dataset.num_classes)
                           for i in range(clients.num_clients)])
    class_weights = per_client[batch_client]
  prep = Prepared(dataset, clients, indices, batch_client, batch_index, model, variables, fold_of_batch, key,
                  dropout_keys, {"data_s": time.perf_counter() - t0}, mesh,
                  None if held is None else tuple(int(s) for s in held), class_weights)
  if cfg.aggregate_clients > 1:                 # keep only the updates that reach an aggregate, in its order
    prep, _ = aggregated(prep, cfg.aggregate_clients, cfg.num_samples, progress, dealing=cfg.cohort_dealing)
  return prep


def take_updates(prep: Prepared, rows: np.ndarray) -> Prepared:
  """prep with only its updates `rows` (i64[U'], in that order), every per-update field indexed alike."""
  pick = lambda a: None if a is None else a[rows]
  return dataclasses.replace(prep, indices=prep.indices[rows], batch_client=prep.batch_client[rows],
                             batch_index=prep.batch_index[rows], fold_of_batch=pick(prep.fold_of_batch),
                             dropout_keys=take_rows(prep.dropout_keys, rows), class_weights=pick(prep.class_weights))


def aggregated(prep: Prepared, clients_per_round: int, num_samples: int,
               progress: Optional[Callable[[str], None]] = None, dealing: str = "once") -> tuple[Prepared, np.ndarray]:
  """Secure aggregation of K = clients_per_round > 1 clients a round (`runs/leakage/aggregation.py`): prep with
  only the updates that reach an aggregate, ordered so that each K consecutive ones form one (`cohorts`,
  `cohort_of`, `round_of` set; with dealing 'every_round' also `participation`), and their rows in prep (i64[K A]).

  prep's updates must be each client's first ones, consecutive and in order: all that `prepare` samples, or any
  prefix of each client's that holds its rounds (a study's gradient pass shared by several K); the cohorts (dealt
  from prep.key) and their rounds are the same either way. Raises ValueError when no cohort has a round."""
  num_clients = prep.clients.num_clients
  if dealing == "every_round":
    return _dealt_every_round(prep, clients_per_round, num_samples, progress)
  dealt = aggregation.deal_cohorts(num_clients, clients_per_round, jax.random.fold_in(prep.key, COHORTS))
  keep, cohort_of, round_of = aggregation.cohort_updates(prep.batch_client, num_clients, dealt)
  if not len(keep):
    raise ValueError(f"aggregate_clients={clients_per_round}: no cohort has a round in which all its members "
                     f"have an update of N={num_samples} windows; lower num_samples or aggregate_clients.")
  cohorts = tuple(tuple(int(prep.clients.subject_ids[i]) for i in c) for c in dealt)
  left_out = sorted(set(prep.clients.subject_ids) - {s for c in cohorts for s in c})
  log(progress, f"secure aggregation: {len(cohorts)} cohorts of {clients_per_round} clients, "
                f"{len(cohort_of)} aggregates of N={num_samples * clients_per_round} ({len(keep)} of the "
                f"{len(prep.indices)} updates reach one)" + (f"; subjects {left_out} are in no cohort" if left_out
                                                             else ""))
  return dataclasses.replace(take_updates(prep, keep), cohorts=cohorts, cohort_of=cohort_of,
                             round_of=round_of), keep


def _dealt_every_round(prep: Prepared, clients_per_round: int, num_samples: int,
                       progress: Optional[Callable[[str], None]]) -> tuple[Prepared, np.ndarray]:
  """`aggregated` with the clients dealt anew for every round (`aggregation.redealt_rounds`, seeded from prep.key):
  each aggregate is its own unit of the metrics."""
  seed = np.asarray(jax.random.key_data(jax.random.fold_in(prep.key, COHORTS))).ravel()
  keep, participation = aggregation.redealt_rounds(prep.batch_client, prep.clients.num_clients, clients_per_round,
                                                   seed)
  if not len(keep):
    raise ValueError(f"aggregate_clients={clients_per_round}: no round can gather {clients_per_round} clients with "
                     f"an update of N={num_samples} windows; lower num_samples or aggregate_clients.")
  ids = np.asarray(prep.clients.subject_ids)
  cohorts = tuple(tuple(int(s) for s in row) for row in ids[prep.batch_client[keep]].reshape(-1, clients_per_round))
  a = len(cohorts)
  rank, seen = A.participation_rank(participation)
  unsolvable = ("" if rank == seen else f"; the rounds' participation has rank {rank}: their counts cannot tell "
                f"these {seen} clients apart (fewer rounds than clients, or every round holds every client)")
  log(progress, f"secure aggregation, clients dealt anew every round: {a} rounds of {clients_per_round} clients "
                f"(N={num_samples * clients_per_round} each; {len(keep)} of the {len(prep.indices)} updates reach "
                f"one; {seen} of {prep.clients.num_clients} clients take part{unsolvable})")
  return dataclasses.replace(take_updates(prep, keep), cohorts=cohorts, cohort_of=np.arange(a, dtype=np.int32),
                             round_of=np.zeros(a, np.int32), participation=participation), keep
