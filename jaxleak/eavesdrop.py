"""The Eavesdrop experiments as a library: a federation, its rounds, the attacker and the scores.

`setup(config)` builds the data (participants' allocation, the attacker's auxiliary data) and the model;
`run_rounds` plays FedAvg rounds with secure aggregation and launches Class Sniffing and Quantity Inference in
every round; `run_whole_determination` trains a federation with Q, Q/4, Q/5 label totals and launches Whole
Determination at the middle (test accuracy >= 50 %) and late (>= 85 %) stages. Each round's randomness comes
from (seed, round) alone, so a run killed after round t resumes from its checkpoint with identical results.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import data as D
from jaxleak import metrics, models, results
from jaxleak.attacks import eavesdrop as E
from jaxleak.federated.rounds import (LocalSGD, fedavg_round, fedavg_round_replicated, per_label_updates,
                                      per_label_updates_replicated, select_participants)

# The paper's MNIST settings (sec. IV-A3, IV-B): 100 participants, 10 % selected, L_bs 64, L_lr 0.01, L_ep 3.
PAPER_LOCAL = LocalSGD(epochs=3, batch_size=64, lr=0.01)
#: Sweeps of Figures 6-9 (the figures' exact grids are not given in the text; these span the ranges it names).
PAPER_SWEEPS = {
    "batch_size": (8, 16, 20, 32, 64, 128),
    "epochs": (1, 2, 3, 5, 8, 10),
    "fraction": (0.1, 0.2, 0.3, 0.4, 0.5),
    "num_participants": (100, 200, 500, 1000),
}
#: Table VI's compression rates.
PAPER_COMPRESSION = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


@dataclasses.dataclass(frozen=True)
class EavesdropConfig:
  """One federation and attacker. Defaults: the paper's MNIST setting on the digits stand-in."""
  dataset: str = "digits"
  model: str = "mlp"
  data_dir: str | None = None
  synthetic_scale: float = 1.0
  num_participants: int = 100
  fraction: float = 0.1
  rounds: int = 100
  local: LocalSGD = PAPER_LOCAL
  main_labels: tuple[int, int] = (3, 5)
  samples_per_label: int = 64
  other_samples: int = 8
  aux_fraction: float = 0.4
  aux_samples_per_label: int | None = None        # default: samples_per_label (the paper: "close to" it)
  compression: float = 0.0                        # top-CR upload compression (Table VI)
  dropout: float | None = None                    # None: the model's default; 0 removes dropout
  sniff_margin: float = 0.5
  ratio_threshold: float = 0.5                    # Th_R
  abort_std: float = 0.25                         # abort when std(x_i) > abort_std * K
  seed: int = 0

  def __post_init__(self):
    if self.rounds <= 0 or self.num_participants <= 0:
      raise ValueError("rounds and num_participants must be positive.")
    if not 0.0 < self.fraction <= 1.0:
      raise ValueError(f"fraction P must be in (0, 1], got {self.fraction}.")
    if not 0.0 <= self.compression < 1.0:
      raise ValueError(f"compression must be in [0, 1), got {self.compression}.")

  @property
  def num_selected(self) -> int:
    return max(1, int(round(self.fraction * self.num_participants)))

  @property
  def labels_per_client(self) -> float:
    """N_L as the attacker knows it: the mean of the main-label range."""
    return (self.main_labels[0] + self.main_labels[1]) / 2


class Federation(NamedTuple):
  """Everything a run needs, device arrays where jitted code reads them."""
  config: EavesdropConfig
  model: object
  variables: dict
  pool_x: jax.Array
  pool_y: jax.Array
  allocation: D.Allocation
  aux_x: jax.Array          # [C, n, ...] the attacker's per-label data
  aux_y: jax.Array
  test_x: jax.Array         # the auxiliary pool, also used to measure the global model's accuracy
  test_y: jax.Array
  num_classes: int


def _model_kwargs(config: EavesdropConfig) -> dict:
  return {} if config.dropout is None else {"dropout": config.dropout}


def load_pools(config: EavesdropConfig) -> tuple[D.LabelPool, D.LabelPool]:
  pool = D.load_pool(config.dataset, data_dir=config.data_dir, scale=config.synthetic_scale, seed=config.seed)
  return D.split_pool(pool, config.aux_fraction, seed=config.seed)


def setup(config: EavesdropConfig, allocation: D.Allocation | None = None,
          pools: tuple[D.LabelPool, D.LabelPool] | None = None) -> Federation:
  """Data, allocation (sec. IV-B unless given), auxiliary data and the initial global model."""
  train, aux = pools or load_pools(config)
  if allocation is None:
    allocation = D.allocate_main_labels(train, config.num_participants, main_labels=config.main_labels,
                                        samples_per_label=config.samples_per_label,
                                        other_samples=config.other_samples, seed=config.seed)
  if allocation.num_participants != config.num_participants:
    raise ValueError(f"allocation has {allocation.num_participants} participants, config {config.num_participants}.")
  n_aux = config.aux_samples_per_label or config.samples_per_label
  aux_index = D.aux_per_label(aux, n_aux, seed=config.seed + 1)
  model = models.build(config.model, train.num_classes, **_model_kwargs(config))
  variables = models.init_for_shape(model, jax.random.key(config.seed), train.example_shape)
  return Federation(config=config, model=model, variables=variables, pool_x=jnp.asarray(train.x),
                    pool_y=jnp.asarray(train.y), allocation=allocation, aux_x=jnp.asarray(aux.x[aux_index]),
                    aux_y=jnp.asarray(aux.y[aux_index]), test_x=jnp.asarray(aux.x), test_y=jnp.asarray(aux.y),
                    num_classes=train.num_classes)


def round_randomness(seed: int, t: int, num_participants: int, fraction: float):
  """(selected participants i32[K], round key): a function of (seed, round) only, so resumed runs match."""
  rng = np.random.default_rng([seed, t])
  return select_participants(num_participants, fraction, rng), jax.random.fold_in(jax.random.key(seed), t)


def _attack_one(global_update, label_updates, num_selected, labels_per_client, margin, ratio_threshold, abort_std):
  sniff = E.class_sniffing(global_update, label_updates, num_selected, labels_per_client, margin=margin)
  qi = E.quantity_inference(global_update, label_updates, num_selected, labels_per_client,
                            ratio_threshold=ratio_threshold, abort_std=abort_std)
  return sniff, qi


_attack = jax.jit(_attack_one)
_attack_replicated = jax.jit(jax.vmap(_attack_one, in_axes=(0, 0, None, None, None, None, None)))


def accuracy(model, variables, x, y, chunk: int = 2048) -> float:
  """Top-1 accuracy of the global model (eval mode)."""
  correct = 0
  for s in range(0, y.shape[0], chunk):
    logits = _predict(variables, x[s:s + chunk], model=model)
    correct += int(jnp.sum(jnp.argmax(logits, -1) == y[s:s + chunk]))
  return correct / int(y.shape[0])


@functools.partial(jax.jit, static_argnames="model")
def _predict(variables, x, *, model):
  return model.apply(variables, x, train=False)


ROUND_COLUMNS = ("round", "label", "owners", "holders", "sniff_score", "sniff_present", "qi_estimate", "qi_std",
                 "qi_num_weights", "qi_aborted")


class RoundsResult(NamedTuple):
  """Per (round, label) arrays [R, C] (see ROUND_COLUMNS) and the final global variables."""
  owners: np.ndarray
  holders: np.ndarray
  sniff_score: np.ndarray
  sniff_present: np.ndarray
  qi_estimate: np.ndarray
  qi_std: np.ndarray
  qi_num_weights: np.ndarray
  qi_aborted: np.ndarray
  variables: dict
  seconds_per_round: float


class RoundInputs(NamedTuple):
  """What round t of one federation draws: selected i32[K], their index/mask rows [K, M], K client keys and the
  attacker's key. A function of (seed, t) only."""
  selected: np.ndarray
  index: np.ndarray
  mask: np.ndarray
  client_keys: jax.Array
  attack_key: jax.Array


def round_inputs(fed: Federation, t: int) -> RoundInputs:
  cfg = fed.config
  selected, key = round_randomness(cfg.seed, t, cfg.num_participants, cfg.fraction)
  train_key, attack_key = jax.random.split(key)
  return RoundInputs(selected, fed.allocation.index[selected], fed.allocation.mask[selected],
                     jax.random.split(train_key, selected.size), attack_key)


def play_round(fed: Federation, variables: dict, t: int):
  """One round: selection, vmapped local training, secure aggregation, the attacker's per-label training.
  Returns (G_{t+1}, head-kernel global update [D, C], U [C, D, C], selected i32[K])."""
  cfg = fed.config
  r = round_inputs(fed, t)
  selected = r.selected
  new_vars, mean_update = fedavg_round(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index),
                                       jnp.asarray(r.mask), r.client_keys, local=cfg.local,
                                       compression_ratio=cfg.compression)
  label_updates = per_label_updates(fed.model, variables, fed.aux_x, fed.aux_y, r.attack_key, local=cfg.local)
  return new_vars, mean_update["params"]["head"]["kernel"], label_updates, selected


def run_rounds(fed: Federation, *, checkpoint_path: str | None = None,
               progress: Callable[[str], None] | None = None) -> RoundsResult:
  """Plays config.rounds rounds and attacks each (Class Sniffing and Quantity Inference for every label).

  With `checkpoint_path`, the state (global variables and the per-round records) is written atomically every
  round and a rerun resumes after the last completed round.
  """
  cfg = fed.config
  k, nl = float(cfg.num_selected), float(cfg.labels_per_client)

  def step(variables, t):
    variables_next, update, label_updates, selected = play_round(fed, variables, t)
    _check_finite(t, cfg, update, label_updates)
    sniff, qi = _attack(update, label_updates, k, nl, cfg.sniff_margin, cfg.ratio_threshold, cfg.abort_std)
    rec = dict(owners=fed.allocation.owners[selected].sum(0), holders=(fed.allocation.counts[selected] > 0).sum(0),
               sniff_score=sniff.score, sniff_present=sniff.present, qi_estimate=qi.estimate, qi_std=qi.std,
               qi_num_weights=qi.num_weights, qi_aborted=qi.aborted)
    return variables_next, rec

  variables, records, per_round = _play(step, fed.variables, cfg, checkpoint_path, 0, progress)
  stacked = {name: np.stack([r[name] for r in records]) for name in records[0]}
  return RoundsResult(**stacked, variables=variables, seconds_per_round=per_round)


def _check_finite(t, cfg, update, label_updates):
  if not (np.isfinite(np.asarray(update)).all() and np.isfinite(np.asarray(label_updates)).all()):
    raise FloatingPointError(f"round {t}: an aggregated or attacker's update is not finite (local training "
                             f"diverged at L_lr = {cfg.local.lr}); lower the learning rate (--local_lr).")


def _play(step, variables, cfg, checkpoint_path, replicates, progress):
  """The round loop shared by single and replicated runs: resume, step(variables, t) -> (next, record of numpy
  arrays), checkpoint, progress, timing (rounds after the first, which compiles). Returns (variables, records,
  seconds per round)."""
  records, start = [], 0
  if checkpoint_path and os.path.exists(checkpoint_path):
    variables, records = _load_rounds_checkpoint(checkpoint_path, variables, cfg, replicates)
    start = len(records)
    if progress:
      progress(f"resuming after round {start} from {checkpoint_path}")
  t0, timed = None, 0
  for t in range(start, cfg.rounds):
    variables, rec = step(variables, t)
    records.append({name: np.asarray(v) for name, v in rec.items()})
    if t0 is None:
      jax.block_until_ready(variables)
      t0 = time.perf_counter()
    else:
      timed += 1
    if checkpoint_path:
      _save_rounds_checkpoint(checkpoint_path, variables, records, cfg, replicates)
    if progress and ((t + 1) % 10 == 0 or t + 1 == cfg.rounds):
      progress(f"round {t + 1}/{cfg.rounds}" + (f" ({replicates} replicates)" if replicates else ""))
  jax.block_until_ready(variables)
  return variables, records, ((time.perf_counter() - t0) / timed if timed else float("nan"))


def _config_fingerprint(cfg: EavesdropConfig, replicates: int = 0) -> str:
  d = dataclasses.asdict(cfg)
  d.pop("rounds")
  return repr(sorted(d.items())) + (f" x{replicates} replicates" if replicates else "")


def _save_rounds_checkpoint(path: str, variables, records, cfg, replicates: int = 0) -> None:
  from flax import serialization
  payload = {"variables": jax.device_get(variables),
             "records": {n: np.stack([r[n] for r in records]) for n in records[0]},
             "config": _config_fingerprint(cfg, replicates)}
  data = serialization.msgpack_serialize(payload)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _load_rounds_checkpoint(path: str, variables, cfg, replicates: int = 0):
  from flax import serialization
  with open(path, "rb") as f:
    payload = serialization.msgpack_restore(f.read())
  if payload.get("config") != _config_fingerprint(cfg, replicates):
    raise ValueError(f"{path} was written by a run with another configuration; use another --output_dir or "
                     "delete it to start over.")
  restored = serialization.from_state_dict(variables, payload["variables"])
  recs = payload["records"]
  n = len(next(iter(recs.values())))
  return restored, [{k: np.asarray(v[i]) for k, v in recs.items()} for i in range(n)]


# --- replicates: R independent federations in one vmapped computation per round ---------------------------------

def setup_replicates(config: EavesdropConfig, num_replicates: int) -> list[Federation]:
  """R federations with seeds config.seed + r (own allocation, initial model, auxiliary data and selections),
  sharing one example pool (split with config.seed) and one padded width, for `run_rounds_replicated`."""
  if num_replicates <= 0:
    raise ValueError(f"num_replicates must be positive, got {num_replicates}.")
  pools = load_pools(config)
  feds = [setup(dataclasses.replace(config, seed=config.seed + r), pools=pools) for r in range(num_replicates)]
  width = max(f.allocation.width for f in feds)
  return [f._replace(allocation=D.pad_allocation(f.allocation, width)) for f in feds]


def run_rounds_replicated(feds: list[Federation], *, checkpoint_path: str | None = None,
                          progress: Callable[[str], None] | None = None) -> list[RoundsResult]:
  """`run_rounds` for R federations at once: each round is one vmapped computation over replicates x selected
  clients, then the attacker's per-label training and both attacks, vmapped over replicates. Replicate r gives
  the same records as `run_rounds` on feds[r] alone (tested). Checkpoints and resumes like `run_rounds`."""
  cfg = feds[0].config
  r_count = len(feds)
  if any(dataclasses.replace(f.config, seed=cfg.seed) != cfg for f in feds):
    raise ValueError("replicated federations must share every setting but the seed.")
  model = feds[0].model
  stack = lambda *xs: jnp.stack(xs)
  variables = jax.tree.map(stack, *[f.variables for f in feds])
  aux_x, aux_y = jnp.stack([f.aux_x for f in feds]), jnp.stack([f.aux_y for f in feds])
  k, nl = float(cfg.num_selected), float(cfg.labels_per_client)

  def step(variables, t):
    rs = [round_inputs(f, t) for f in feds]
    selected = [r.selected for r in rs]
    new_vars, mean_update = fedavg_round_replicated(
        model, variables, feds[0].pool_x, feds[0].pool_y, jnp.asarray(np.stack([r.index for r in rs])),
        jnp.asarray(np.stack([r.mask for r in rs])), jnp.stack([r.client_keys for r in rs]), local=cfg.local,
        compression_ratio=cfg.compression)
    label_updates = per_label_updates_replicated(model, variables, aux_x, aux_y,
                                                 jnp.stack([r.attack_key for r in rs]), local=cfg.local)
    update = mean_update["params"]["head"]["kernel"]
    _check_finite(t, cfg, update, label_updates)
    sniff, qi = _attack_replicated(update, label_updates, k, nl, cfg.sniff_margin, cfg.ratio_threshold,
                                   cfg.abort_std)
    owners = np.stack([f.allocation.owners[s].sum(0) for f, s in zip(feds, selected)])
    holders = np.stack([(f.allocation.counts[s] > 0).sum(0) for f, s in zip(feds, selected)])
    return new_vars, dict(owners=owners, holders=holders, sniff_score=sniff.score, sniff_present=sniff.present,
                          qi_estimate=qi.estimate, qi_std=qi.std, qi_num_weights=qi.num_weights,
                          qi_aborted=qi.aborted)

  variables, records, per_round = _play(step, variables, cfg, checkpoint_path, r_count, progress)
  out = []
  for r in range(r_count):
    arrays = {name: np.stack([rec[name][r] for rec in records]) for name in records[0]}
    out.append(RoundsResult(**arrays, variables=jax.tree.map(lambda v: v[r], variables),
                            seconds_per_round=per_round))
  return out


def pool_results(results_list: list[RoundsResult]) -> RoundsResult:
  """Replicates' rounds one after another (rates over all of them); seconds_per_round of the joint run."""
  arrays = {name: np.concatenate([getattr(r, name) for r in results_list]) for name in ROUND_COLUMNS[2:]}
  return RoundsResult(**arrays, variables=results_list[0].variables,
                      seconds_per_round=results_list[0].seconds_per_round)


# --- summaries --------------------------------------------------------------------------------------------------

def summarize_rounds(res: RoundsResult, cfg: EavesdropConfig) -> dict:
  """Per-label and overall success rates (fractions):
  sniff: Class Sniffing correct calls over all rounds; sniff_absent: the same over rounds where the label was
  absent (the paper's setting makes absence rare, so 'always present' scores the prevalence); prevalence.
  qi_alpha1 / qi_alpha_pct: Quantity Inference within alpha = 1 and alpha = 5 % of N_p * P, over the rounds
  where the label was owned and the attack did not abort; qi_abort: abort rate over those rounds.
  """
  owned = res.owners > 0
  correct = np.asarray(metrics.sniffing_correct(res.sniff_present, res.owners))
  alpha_pct = 0.05 * cfg.num_participants * cfg.fraction
  attempted = owned & ~res.qi_aborted
  ok1 = np.asarray(metrics.quantity_success(res.qi_estimate, res.owners, 1.0)) & attempted
  okp = np.asarray(metrics.quantity_success(res.qi_estimate, res.owners, alpha_pct)) & attempted

  def rate(num, den, axis):
    d = den.sum(axis)
    return np.where(d > 0, num.sum(axis) / np.maximum(d, 1), np.nan)

  out = {}
  for axis, key in ((0, "per_label"), (None, "overall")):
    out[key] = dict(
        sniff=rate(correct, np.ones_like(correct), axis),
        sniff_absent=rate(correct & ~owned, ~owned, axis),
        prevalence=rate(owned, np.ones_like(owned), axis),
        qi_alpha1=rate(ok1, attempted, axis),
        qi_alpha_pct=rate(okp, attempted, axis),
        qi_abort=rate(res.qi_aborted & owned, owned, axis),
        qi_abs_error=np.nanmean(np.where(attempted, np.abs(res.qi_estimate - res.owners), np.nan), axis=axis),
    )
  out["alpha_pct"] = alpha_pct
  out["seconds_per_round"] = res.seconds_per_round
  return out


def round_rows(res: RoundsResult):
  r, c = res.owners.shape
  for t in range(r):
    for label in range(c):
      yield (t, label, int(res.owners[t, label]), int(res.holders[t, label]), f"{res.sniff_score[t, label]:.4f}",
             int(res.sniff_present[t, label]), f"{res.qi_estimate[t, label]:.4f}", f"{res.qi_std[t, label]:.4f}",
             int(res.qi_num_weights[t, label]), int(res.qi_aborted[t, label]))


# --- Whole Determination ------------------------------------------------------------------------------------------

#: Sec. IV-D1: labels split at random into groups allocated Q, Q/4 and Q/5 examples.
PAPER_WD_FACTORS = (1.0, 1 / 4, 1 / 5)


@dataclasses.dataclass(frozen=True)
class WholeDeterminationConfig:
  """Trials of Whole Determination (the paper: 20 trainings per dataset, attacked at two stages)."""
  trials: int = 20
  total_per_label: int = 2000                   # Q, examples of a group-1 label in the whole federation
  factors: tuple[float, ...] = PAPER_WD_FACTORS
  stages: tuple[float, ...] = (0.5, 0.85)       # test-accuracy thresholds: middle, late
  max_rounds: int = 400
  window: int = 5                               # rounds of ratios per label vector, from the stage's round on
  num_clusters: int | None = None               # None: chosen by the largest merge-height jump
  method: str = "ward"                          # scipy linkage method (Euclidean distance)


WD_STAGE_NAMES = {0.5: "middle", 0.85: "late"}


class WholeDeterminationTrial(NamedTuple):
  trial: int
  stage: float
  round: int                 # -1 when the stage was not reached within max_rounds
  accuracy: float
  groups: np.ndarray         # i32[C] true group of each label
  predicted: np.ndarray      # i32[C] clusters, number chosen automatically (or config.num_clusters)
  predicted_known_k: np.ndarray  # i32[C] clusters with the true number of groups
  success: bool              # predicted == groups (the paper's criterion)
  success_known_k: bool
  success_two_level: bool    # the most frequent group vs the rest, with 2 clusters


def run_whole_determination(config: EavesdropConfig, wd: WholeDeterminationConfig = WholeDeterminationConfig(),
                            progress: Callable[[str], None] | None = None,
                            checkpoint_path: str | None = None) -> list[WholeDeterminationTrial]:
  """Trains `wd.trials` federations (seed = config.seed + trial), each with its own random label groups, and
  launches Whole Determination when the global model's accuracy on the held-out pool first reaches each stage.
  All trials share one compiled round (allocations are padded to a common width). With `checkpoint_path`,
  finished trials are saved (JSON, atomically) after each trial and skipped when the run is repeated."""
  train, aux = load_pools(config)
  c = train.num_classes
  factors = np.asarray(wd.factors, np.float64)
  allocations, group_list = [], []
  for trial in range(wd.trials):
    groups = D.quantity_groups(c, config.seed + trial, tuple(wd.factors))
    totals = np.maximum(1, np.round(wd.total_per_label * factors[groups])).astype(np.int64)
    allocations.append(D.allocate_label_totals(train, config.num_participants, totals, seed=config.seed + trial))
    group_list.append(groups)
  width = max(a.width for a in allocations)
  fingerprint = _config_fingerprint(config) + repr(sorted(dataclasses.asdict(wd).items()))
  out = _load_wd_checkpoint(checkpoint_path, fingerprint) if checkpoint_path else []
  done = {t.trial for t in out}
  if done and progress:
    progress(f"resuming: trials {sorted(done)} loaded from {checkpoint_path}")
  for trial, (alloc, groups) in enumerate(zip(allocations, group_list)):
    if trial in done:
      continue
    cfg = dataclasses.replace(config, seed=config.seed + trial)
    fed = setup(cfg, allocation=D.pad_allocation(alloc, width), pools=(train, aux))
    variables, stages, t, acc = fed.variables, list(wd.stages), 0, 0.0
    pending: list[tuple[float, int, float, list]] = []        # stages being observed: (stage, round, acc, ratios)
    while (stages or pending) and t <= wd.max_rounds + wd.window:
      if stages and t <= wd.max_rounds:
        acc = accuracy(fed.model, variables, fed.test_x, fed.test_y)
        while stages and acc >= stages[0]:
          pending.append((stages.pop(0), t, acc, []))
      if pending:
        key = jax.random.fold_in(jax.random.key(cfg.seed), 10_000_000 + t)
        ratios = np.asarray(E.log_ratio(per_label_updates(fed.model, variables, fed.aux_x, fed.aux_y, key,
                                                          local=cfg.local)))
        for p in pending:
          p[3].append(ratios)
        for p in [p for p in pending if len(p[3]) == wd.window]:
          pending.remove(p)
          out.append(_wd_trial(trial, p, groups, factors, wd))
          if progress:
            o = out[-1]
            progress(f"trial {trial}: stage {o.stage} at round {o.round} (accuracy {o.accuracy:.2f}): success "
                     f"{o.success} (known k: {o.success_known_k}, two-level: {o.success_two_level})")
      if not (stages or pending):
        break
      variables = play_training_round(fed, variables, t)
      t += 1
    for s in stages:
      out.append(WholeDeterminationTrial(trial, s, -1, acc, groups, np.full(c, -1), np.full(c, -1),
                                         False, False, False))
      if progress:
        progress(f"trial {trial}: stage {s} not reached in {wd.max_rounds} rounds (accuracy {acc:.2f})")
    if checkpoint_path:
      _save_wd_checkpoint(checkpoint_path, fingerprint, out)
  return out


def _save_wd_checkpoint(path: str, fingerprint: str, trials: list[WholeDeterminationTrial]) -> None:
  rows = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in t._asdict().items()} for t in trials]
  results.atomic_write_json(path, {"config": fingerprint, "trials": rows})


def _load_wd_checkpoint(path: str, fingerprint: str) -> list[WholeDeterminationTrial]:
  if not os.path.exists(path):
    return []
  import json
  with open(path) as f:
    payload = json.load(f)
  if payload.get("config") != fingerprint:
    raise ValueError(f"{path} was written by a run with another configuration; use another --output_dir or "
                     "delete it to start over.")
  arrays = ("groups", "predicted", "predicted_known_k")
  return [WholeDeterminationTrial(**{k: (np.asarray(v, np.int32) if k in arrays else v) for k, v in r.items()})
          for r in payload["trials"]]


def _wd_trial(trial, pending, groups, factors, wd) -> WholeDeterminationTrial:
  stage, t, acc, ratios = pending
  v = np.stack(ratios, axis=1)                                  # [C, window]
  pred = E.cluster_labels(v, wd.num_clusters, method=wd.method)
  pred_k = E.cluster_labels(v, len(factors), method=wd.method)
  two = E.cluster_labels(v, 2, method=wd.method)
  return WholeDeterminationTrial(trial, stage, t, acc, groups, pred, pred_k, metrics.same_partition(pred, groups),
                                 metrics.same_partition(pred_k, groups),
                                 metrics.same_partition(two, groups == np.argmax(factors)))


def play_training_round(fed: Federation, variables: dict, t: int) -> dict:
  """One FedAvg round without the attacker's work: G_{t+1}."""
  cfg = fed.config
  r = round_inputs(fed, t)
  new_vars, _ = fedavg_round(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index),
                             jnp.asarray(r.mask), r.client_keys, local=cfg.local, compression_ratio=cfg.compression)
  return new_vars


def summarize_whole_determination(trials: list[WholeDeterminationTrial]) -> list[dict]:
  """Success rates per stage (fractions over trials; an unreached stage counts as a failure)."""
  rows = []
  for stage in sorted({t.stage for t in trials}):
    ts = [t for t in trials if t.stage == stage]
    reached = [t for t in ts if t.round >= 0]
    rows.append(dict(stage=WD_STAGE_NAMES.get(stage, f"acc>={stage:g}"), accuracy_threshold=stage,
                     trials=len(ts), reached=len(reached),
                     success=np.mean([t.success for t in ts]),
                     success_known_k=np.mean([t.success_known_k for t in ts]),
                     success_two_level=np.mean([t.success_two_level for t in ts]),
                     mean_round=float(np.mean([t.round for t in reached])) if reached else float("nan")))
  return rows


# --- files and tables -------------------------------------------------------------------------------------------

def _f(x) -> str:
  return "nan" if x is None or not np.isfinite(x) else f"{100 * float(x):.1f}"


def write_rounds(res: RoundsResult, cfg: EavesdropConfig, output_dir: str, extra: dict | None = None) -> dict:
  """rounds.csv (one row per round and label), summary.csv (per label and overall), manifest.json; atomic."""
  s = summarize_rounds(res, cfg)
  results.atomic_write_csv(os.path.join(output_dir, "rounds.csv"), ROUND_COLUMNS, round_rows(res))
  keys = ("sniff", "sniff_absent", "prevalence", "qi_alpha1", "qi_alpha_pct", "qi_abort", "qi_abs_error")
  rows = [[label] + [f"{float(s['per_label'][k][label]):.4f}" for k in keys]
          for label in range(res.owners.shape[1])]
  rows.append(["all"] + [f"{float(s['overall'][k]):.4f}" for k in keys])
  results.atomic_write_csv(os.path.join(output_dir, "summary.csv"), ("label",) + keys, rows)
  results.atomic_write_json(os.path.join(output_dir, "manifest.json"), {
      "experiment": "eavesdrop_rounds", "config": dataclasses.asdict(cfg), "alpha_pct": s["alpha_pct"],
      "seconds_per_round": s["seconds_per_round"], "environment": results.environment(), **(extra or {})})
  return s


def per_label_table(s: dict, cfg: EavesdropConfig) -> str:
  """Tables III and IV in the paper's shape: success rates (%) per label, plus our extra rows."""
  c = len(s["per_label"]["sniff"])
  names = [("sniff", "Class Sniffing (Table III)"), ("sniff_absent", "  ... on rounds the label was absent"),
           ("prevalence", "  label present (prevalence)"), ("qi_alpha1", "Quantity Inference a=1 (Table IV)"),
           ("qi_alpha_pct", f"  ... a=5% N_p P = {s['alpha_pct']:g}"), ("qi_abort", "  aborted")]
  rows = [{"metric": label, **{str(i): _f(s["per_label"][k][i]) for i in range(c)}, "all": _f(s["overall"][k])}
          for k, label in names]
  title = (f"{cfg.dataset} | {cfg.model} | N_p={cfg.num_participants} P={cfg.fraction} | L_bs={cfg.local.batch_size}"
           f" L_ep={cfg.local.epochs} L_lr={cfg.local.lr} | CR={cfg.compression} | {cfg.rounds} rounds | "
           f"success rate (%) per label")
  return results.format_table(rows, ["metric"] + [str(i) for i in range(c)] + ["all"], title)


def sweep_table(points: list[tuple[str, float, dict]], title: str) -> str:
  """Figures 6-9 / Table VI: one row per setting with the overall rates (%)."""
  rows = [{"setting": f"{name}={value:g}", "QI a=1": _f(s["overall"]["qi_alpha1"]),
           "QI a=5%": _f(s["overall"]["qi_alpha_pct"]), "aborted": _f(s["overall"]["qi_abort"]),
           "Class Sniffing": _f(s["overall"]["sniff"]), "s/round": f"{s['seconds_per_round']:.3f}"}
          for name, value, s in points]
  return results.format_table(rows, ["setting", "QI a=1", "QI a=5%", "aborted", "Class Sniffing", "s/round"], title)


def write_whole_determination(trials: list[WholeDeterminationTrial], cfg: EavesdropConfig,
                              wd: WholeDeterminationConfig, output_dir: str) -> list[dict]:
  results.atomic_write_csv(
      os.path.join(output_dir, "trials.csv"),
      ("trial", "stage", "round", "accuracy", "groups", "predicted", "predicted_known_k", "success",
       "success_known_k", "success_two_level"),
      [(t.trial, t.stage, t.round, f"{t.accuracy:.4f}", " ".join(map(str, t.groups)), " ".join(map(str, t.predicted)),
        " ".join(map(str, t.predicted_known_k)), int(t.success), int(t.success_known_k), int(t.success_two_level))
       for t in trials])
  summary = summarize_whole_determination(trials)
  results.atomic_write_csv(os.path.join(output_dir, "summary.csv"), tuple(summary[0]),
                           [[str(v) for v in r.values()] for r in summary])
  results.atomic_write_json(os.path.join(output_dir, "manifest.json"), {
      "experiment": "eavesdrop_whole_determination", "config": dataclasses.asdict(cfg),
      "whole_determination": dataclasses.asdict(wd), "environment": results.environment()})
  return summary


def whole_determination_table(summary: list[dict], cfg: EavesdropConfig, wd: WholeDeterminationConfig) -> str:
  rows = [{"stage": r["stage"], "reached": f"{r['reached']}/{r['trials']}",
           "mean round": f"{r['mean_round']:.0f}", "success (Table V)": _f(r["success"]),
           "known #groups": _f(r["success_known_k"]), "frequent vs rest": _f(r["success_two_level"])}
          for r in summary]
  title = (f"Whole Determination | {cfg.dataset} | {cfg.model} | groups {'/'.join(f'{f:g}' for f in wd.factors)} "
           f"x Q={wd.total_per_label} | {wd.window}-round ratio vectors, {wd.method} linkage | success rate (%)")
  return results.format_table(rows, list(rows[0]), title)
