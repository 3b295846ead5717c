"""Attacking every update of a run and scoring the attacks: LLG* estimates per global model, every attack vmapped
over all updates (one compiled function per attack and shape, cached across calls), per-update and per-client
metrics."""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import time
import zlib
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import attacks as A
from jaxleak import metrics as M
from jaxleak import models
from jaxleak.runs.leakage.config import LeakageConfig
from jaxleak.federated.rlu import simulate_rlu_basis
from jaxleak.federated.rounds import compress_update
from jaxleak.runs.leakage import aggregation
from jaxleak.runs.leakage.prepare import ATTACK, LLG_STAR, RLU, Prepared, batch_keys, broadcast_rows, take_rows
from jaxleak.types import LastLayerGrads


@dataclasses.dataclass
class LeakageResult:
  """Everything a run produced (NumPy arrays; K updates, C classes)."""
  config: LeakageConfig
  dataset_name: str
  class_names: tuple[str, ...]
  subject_ids: tuple[int, ...]                      # client index -> subject id
  batch_client: np.ndarray                          # i32[K] client index of each update
  batch_index: np.ndarray                           # i32[K] index of the update within its client
  true_counts: np.ndarray                           # i32[K, C]
  pred_counts: dict                                 # attack -> i32[K, C]
  client_metrics: dict                              # attack -> metrics.ClientMetrics of NumPy arrays
  timings: dict
  # Secure aggregation (config.aggregate_clients > 1): the members' subject ids of each cohort; subject_ids are
  # then the cohorts' numbers, batch_client the cohort and batch_index the round of each aggregate. What a round
  # tells of each client: attack -> metrics.ClientMetrics over member_ids (the run's clients; NaN for one in no
  # cohort) of guessing each member holds 1/K of its round's predicted counts (`aggregation.split_among_members`).
  # Clients dealt anew every round (config.cohort_dealing 'every_round'): cohorts holds each aggregate's members
  # (an aggregate is its own unit), participation bool[A, clients] who took part in which, and profile_metrics:
  # attack -> ClientMetrics over member_ids (one row per client; NaN for one in no round) of each client's label
  # distribution solved from all rounds (`attacks.disaggregate_rounds`) against its own (`client_profiles`).
  cohorts: Optional[tuple[tuple[int, ...], ...]] = None
  member_ids: Optional[tuple[int, ...]] = None
  member_metrics: Optional[dict] = None
  participation: Optional[np.ndarray] = None
  profile_metrics: Optional[dict] = None

  def summary_rows(self, members: bool = False, profiles: bool = False) -> list[dict]:
    """One row per attack: {'attack', metric: (mean, std) over clients} for LnAcc, LeAcc, ClassAcc, Eq. 4 (over
    cohorts under secure aggregation; `members`: of `member_metrics`, `profiles`: of `profile_metrics`, both over
    the clients)."""
    rows = []
    for name in self.config.attacks:
      cm = (self.profile_metrics if profiles else self.member_metrics if members else self.client_metrics)[name]
      row = {"attack": name}
      for metric in ("lnacc", "leacc", "class_acc", "symmetric_existence"):
        mean, std = M.mean_std_over_clients(getattr(cm, metric))
        row[metric] = (float(mean), float(std))
      rows.append(row)
    return rows


def attack_updates(name: str, grads: LastLayerGrads, num_samples: int, keys: jax.Array, star_params: dict, head,
                   rlu_basis=None, *, local_batch_size: Optional[int] = None, local_steps: int = 1) -> jax.Array:
  """One attack on K updates, vmapped (traceable; see `run_attacks` for the inputs): i32[K, C]. Each update's
  attack key is its key folded with a hash of the attack's name, so attacks draw independently."""
  salt = zlib.crc32(name.encode())
  star = star_params.get(A.info(name).star_method)

  def one(g, key, st, hd, rb):
    ctx = A.AttackContext(key=jax.random.fold_in(key, salt), star_params=st, head=hd,
                          local_batch_size=local_batch_size, local_steps=local_steps, rlu_basis=rb)
    return A.run(name, g, num_samples, ctx)

  return jax.vmap(one)(grads, keys, star, head, rlu_basis if name == "rlu" else None)


@functools.lru_cache(maxsize=None)
def _vmapped_attack(name: str, num_samples: int, local_batch_size: Optional[int], local_steps: int):
  """One jitted caller of `attack_updates` per (attack, N, B, S): repeated runs reuse its compilations."""
  return jax.jit(functools.partial(attack_updates, name, num_samples=num_samples, local_batch_size=local_batch_size,
                                   local_steps=local_steps))


@functools.lru_cache(maxsize=None)
def _llg_star_estimator(model, input_shape: tuple[int, ...], num_samples: int, method: str):
  """One jitted LLG* estimation per (model, input shape, N, method): f(variables, key) -> LLGStarParams.
  (Run eagerly it compiled ~100 small programs, ~8 s of the main job's first run.)"""
  def f(variables, key):
    penultimate = lambda x: model.apply(variables, x, train=False, return_features=True)[1]
    return A.estimate_llg_star_params(penultimate, models.head_params(variables["params"]), input_shape,
                                      num_samples, key, method=method, dummy="normal")
  return jax.jit(f)


def run_attacks(grads: LastLayerGrads, num_samples: int, names: Sequence[str], *, keys: jax.Array,
                star_params: dict, head, local_batch_size: Optional[int] = None, local_steps: int = 1,
                rlu_basis: Optional[A.RLUBasis] = None) -> dict:
  """Every attack vmapped over all gradients; returns {name: i32[K, C]}.

  `head` (LastLayerParams) and the values of `star_params` ({method: LLGStarParams}) carry a leading K axis: the
  attacked model of each update (the same for every update of an untrained run, the client's fold when trained).
  B and S describe multi-step updates (attacks such as llbg_original use them). `rlu_basis` (leading K axis)
  is RLU's, from `rlu_bases`.
  """
  preds = {}
  for name in names:
    f = _vmapped_attack(name, num_samples, local_batch_size, local_steps)
    preds[name] = np.asarray(f(grads, keys=keys, star_params=star_params, head=head, rlu_basis=rlu_basis))
  return preds


#: LLG* estimates already computed in this process, by content (see `_memo_star`); a few entries of C + 1 floats
#: per model.
_STAR_MEMO: "collections.OrderedDict[str, object]" = collections.OrderedDict()
_STAR_MEMO_SIZE = 64


def _memo_star(compute, variables, method: str, key: jax.Array, model, input_shape, num_samples: int):
  """compute() (LLG* estimates of `variables`), or the same estimates computed earlier in this process.

  The estimate is a deterministic function of the model, its variables, the input shape, N, the method and the
  key, so the groups of a study that attack the same models with the same N (every sampling, the LDP sweep and
  the multi-step settings with that N) share one estimate: C x N dummy windows per model (per trained fold) are
  pushed through the model once instead of once per group. The key is a digest of all of those, the variables'
  bytes included; values are returned exactly as computed (bitwise the same records)."""
  h = hashlib.sha256(repr((model, tuple(input_shape), num_samples, method)).encode())
  h.update(np.asarray(jax.random.key_data(key)).tobytes())
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  digest = h.hexdigest()
  if digest in _STAR_MEMO:
    _STAR_MEMO.move_to_end(digest)
    return _STAR_MEMO[digest]
  value = jax.tree.map(np.asarray, jax.device_get(compute()))
  for leaf in jax.tree.leaves(value):
    leaf.flags.writeable = False                      # shared between runs: nobody may change it in place
  _STAR_MEMO[digest] = value
  while len(_STAR_MEMO) > _STAR_MEMO_SIZE:
    _STAR_MEMO.popitem(last=False)
  return value


def attack_inputs(prep: Prepared, cfg: LeakageConfig, num_samples: Optional[int] = None):
  """What the attacks need besides the updates, per update: (keys [K], {LLG* method: LLGStarParams [K, ...]},
  head LastLayerParams [K, ...]): the attacked model of each update (shared, or the client's trained fold).
  num_samples: the N the updates cover (default cfg.num_samples; K N for aggregates of K clients)."""
  model, clients, key = prep.model, prep.clients, prep.key
  n = cfg.num_samples if num_samples is None else num_samples
  k = len(prep.indices)
  star_key = jax.random.fold_in(key, LLG_STAR)

  def estimate(variables, method):
    return _llg_star_estimator(model, tuple(clients.windows.shape[1:]), n, method)(variables, star_key)

  methods = sorted({A.info(n).star_method for n in cfg.attacks} - {None})
  if prep.fold_of_batch is None:              # one global model: broadcast its head and estimates to K updates
    per_batch = lambda tree: broadcast_rows(tree, k)
    head = per_batch(models.head_params(prep.variables["params"]))
    star_params = {m: per_batch(_memo_star(lambda v=prep.variables, m=m: estimate(v, m), prep.variables, m, star_key,
                                           model, clients.windows.shape[1:], n)) for m in methods}
  else:                                       # one model per fold: estimate per attacked fold, gather per update
    head = take_rows(models.head_params(prep.variables["params"]), prep.fold_of_batch)
    # Only the folds this run attacks: C x N dummy windows through each model is a forward pass of more windows
    # than some groups' own updates, and a run restricted to a few clients should not pay for every fold.
    used = np.unique(prep.fold_of_batch)
    fold_vars = take_rows(prep.variables, used)
    position = np.searchsorted(used, prep.fold_of_batch)
    star_params = {m: take_rows(_memo_star(
        lambda m=m: jax.lax.map(lambda v: estimate(v, m), fold_vars), fold_vars, m, star_key, model,
        clients.windows.shape[1:], n), position) for m in methods}
  attack_keys = batch_keys(jax.random.fold_in(key, ATTACK), prep.subject_of_batch, prep.batch_index)
  return attack_keys, star_params, head


def rlu_auxiliary(clients, per_class: int, key: jax.Array,
                  exclude_subject: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """RLU's auxiliary data: (indices i64[C, per_class] into clients.windows, has bool[C]): windows of each class
  drawn at random (with replacement) from the run's clients, leaving out `exclude_subject` (a trained fold's
  held-out subject, so the attacker's data are the fold's training subjects). A class no remaining window has
  gets has[c] = False (its rows point at window 0 and must be ignored)."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  owner = np.repeat(np.asarray(clients.subject_ids), np.diff(clients.offsets))
  keep = owner != exclude_subject if exclude_subject is not None else np.ones(len(owner), bool)
  if not keep.any():
    keep[:] = True
  rows, has = [], []
  for c in range(clients.num_classes):
    pool = np.flatnonzero(keep & (clients.labels == c))
    has.append(pool.size > 0)
    rows.append(rng.choice(pool, per_class, replace=True) if pool.size else np.zeros(per_class, np.int64))
  return np.stack(rows), np.asarray(has)


def rlu_bases(prep: Prepared, cfg: LeakageConfig) -> A.RLUBasis:
  """RLU's basis for every update (leading K axis): estimated once per attacked model (the shared global model,
  or each trained fold with auxiliary windows of its training subjects) by `federated.rlu.simulate_rlu_basis`."""
  key = jax.random.fold_in(prep.key, RLU)
  static = dict(model=prep.model, local=cfg.local, num_simulations=cfg.rlu_simulations,
                minmax_batch=(cfg.num_samples if cfg.local is None else cfg.local.batch_size) if cfg.minmax else None)
  k = len(prep.indices)
  if prep.fold_of_batch is None:
    idx, has = rlu_auxiliary(prep.clients, cfg.rlu_aux_per_class, key)
    basis = _masked_basis(prep.variables, jnp.asarray(prep.clients.windows[idx]), jnp.asarray(has), key, **static)
    return broadcast_rows(basis, k)
  used = np.unique(prep.fold_of_batch)                 # only the folds this run attacks
  aux = [rlu_auxiliary(prep.clients, cfg.rlu_aux_per_class, key, exclude_subject=prep.fold_subjects[f]) for f in used]
  idx, has = np.stack([a[0] for a in aux]), np.stack([a[1] for a in aux])
  fold_vars = take_rows(prep.variables, used)
  stacked = _masked_basis_per_fold(fold_vars, jnp.asarray(prep.clients.windows[idx]), jnp.asarray(has), key, **static)
  return take_rows(stacked, np.searchsorted(used, prep.fold_of_batch))


_STATIC = ("model", "local", "num_simulations", "minmax_batch")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _masked_basis(variables, aux_x, has, key, *, model, local, num_simulations, minmax_batch) -> A.RLUBasis:
  """simulate_rlu_basis (aux_x [C, n, ...]) with the columns of labels without auxiliary windows (has bool[C]
  False) set to zero, which RLU predicts as 0 (no client of the run holds them)."""
  basis = simulate_rlu_basis(model, variables, aux_x, key, local=local, num_simulations=num_simulations,
                             minmax_batch=minmax_batch)
  return basis._replace(kernel=jnp.where(has[:, None, None], basis.kernel, 0.0),
                        bias=None if basis.bias is None else jnp.where(has[:, None], basis.bias, 0.0))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _masked_basis_per_fold(fold_vars, aux_x, has, key, **static) -> A.RLUBasis:
  """`_masked_basis` for F folds (leading axis F on every input but the key), one fold at a time inside one
  program (lax.map: vmapped per-fold convolutions are slow on XLA:CPU)."""
  return jax.lax.map(lambda args: _masked_basis(*args, key, **static), (fold_vars, aux_x, has))


#: One compiled metrics program per shape (eagerly, its ~30 small operations compiled one by one, ~1 s per run).
#: The inputs are the run's own counts and client ids, so the value checks of the eager call are not needed.
_client_metrics = jax.jit(M.client_metrics, static_argnums=3)


def true_counts(prep: Prepared) -> np.ndarray:
  """i32[K, C]: the label counts of every update (the dataset's labels are checked when it is made)."""
  return np.asarray(_counts_from_labels(prep.clients.labels[prep.indices], prep.dataset.num_classes))


#: One program per shape (eagerly, its one-hot and sum were programs of their own for every new number of updates).
_counts_from_labels = jax.jit(M.counts_from_labels, static_argnums=1)


def score(prep: Prepared, cfg: LeakageConfig, preds: dict, truth: np.ndarray, timings: dict) -> LeakageResult:
  """Per-client metrics of every attack's predictions {name: i32[K, C]} -> a LeakageResult."""
  ids = prep.scored_ids
  per_client = {name: jax.tree.map(np.asarray, _client_metrics(truth, p, prep.batch_client, len(ids)))
                for name, p in preds.items()}
  return LeakageResult(config=cfg, dataset_name=prep.dataset.name, class_names=prep.dataset.class_names,
                       subject_ids=ids, batch_client=prep.batch_client,
                       batch_index=prep.batch_index, true_counts=truth, pred_counts=preds,
                       client_metrics=per_client, timings=timings, cohorts=prep.cohorts)


def local_hyperparameters(cfg: LeakageConfig) -> tuple[Optional[int], int]:
  """(B, S) of the updates: (None, 1) for single step."""
  return (None, 1) if cfg.local is None else (cfg.local.batch_size, cfg.local.steps)


def compress_uploads(grads: LastLayerGrads, ratio: float) -> LastLayerGrads:
  """The compression defence on every update [K, ...]: within each head leaf (kernel, bias) the clients upload
  only the largest (1 - ratio) fraction of entries by magnitude (the Eavesdrop paper's top-CR, applied to what
  the HAR attacks read). ratio 0 is the identity."""
  if ratio == 0.0:
    return grads
  return jax.tree.map(np.asarray, _compress(grads, ratio))


@functools.partial(jax.jit, static_argnums=1)
def _compress(grads, ratio):
  return jax.vmap(lambda g: compress_update(g, ratio))(grads)


def member_metrics(members: Prepared, cfg: LeakageConfig, preds: dict) -> dict:
  """Under secure aggregation: attack -> ClientMetrics (NumPy) over the clients of `members` (the run's Prepared
  before aggregation), of guessing each member holds 1/K of its round's predicted counts `preds[attack]` i32[A, C]."""
  truth = true_counts(members)
  return {name: jax.tree.map(np.asarray, _client_metrics(
      truth, aggregation.split_among_members(p, cfg.aggregate_clients, cfg.num_samples), members.batch_client,
      members.clients.num_clients)) for name, p in preds.items()}


def profile_metrics(members: Prepared, cfg: LeakageConfig, preds: dict, participation: np.ndarray) -> dict:
  """Clients dealt anew every round: attack -> ClientMetrics (NumPy) over the clients of `members` (the run's
  Prepared before aggregation, ordered as the rounds take its updates), one row per client, of its label
  distribution solved from every round's predicted counts `preds[attack]` i32[A, C] and who took part
  (`participation` bool[A, clients]; `attacks.disaggregate_rounds`), against its own distribution over the updates
  it gave to rounds (`aggregation.client_profiles`). A client in no round is NaN."""
  n = members.clients.num_clients
  own = aggregation.client_profiles(true_counts(members), members.batch_client, n, cfg.num_samples)
  seen = np.flatnonzero(np.asarray(participation).any(axis=0))
  return {name: jax.tree.map(np.asarray, _client_metrics(
      own[seen], np.asarray(A.disaggregate_rounds(p, participation, cfg.num_samples))[seen], seen, n))
      for name, p in preds.items()}


def with_members(result: LeakageResult, members: Prepared, cfg: LeakageConfig, preds: dict,
                 participation: Optional[np.ndarray] = None) -> LeakageResult:
  """`result` of aggregates with what its rounds tell of each client (`member_metrics`) filled in; with the
  rounds' `participation` (clients dealt every round) also each client's solved distribution (`profile_metrics`)."""
  return dataclasses.replace(
      result, member_ids=members.clients.subject_ids, member_metrics=member_metrics(members, cfg, preds),
      participation=participation,
      profile_metrics=None if participation is None else profile_metrics(members, cfg, preds, participation))


def attack_and_score(prep: Prepared, cfg: LeakageConfig, grads: LastLayerGrads, timings: dict) -> LeakageResult:
  """Estimates what the attacks need from the attacked model(s), runs every attack and computes the metrics
  (after the compression defence, when cfg.compression > 0; with cfg.aggregate_clients > 1, on the mean updates of
  the cohorts' rounds, each covering K N windows: `aggregation.aggregate`)."""
  t0 = time.perf_counter()
  grads = compress_uploads(grads, cfg.compression)
  basis = rlu_bases(prep, cfg) if "rlu" in cfg.attacks else None
  members = prep
  if prep.cohorts is not None:
    prep, grads, basis = aggregation.aggregate(prep, grads, basis)
  n = cfg.num_samples * cfg.aggregate_clients
  keys, star_params, head = attack_inputs(prep, cfg, n)
  b, s = local_hyperparameters(cfg)
  preds = run_attacks(grads, n, cfg.attacks, keys=keys, star_params=star_params, head=head,
                      local_batch_size=b, local_steps=s, rlu_basis=basis)
  result = score(prep, cfg, preds, true_counts(prep), timings)
  if prep.cohorts is not None:
    result = with_members(result, members, cfg, preds, prep.participation)
  result.timings["attacks_s"] = time.perf_counter() - t0
  return result
