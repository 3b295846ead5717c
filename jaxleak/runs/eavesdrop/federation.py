"""An Eavesdrop federation: data, allocation, the attacker's auxiliary data, the global model, and what each
round draws. Each round's randomness comes from (seed, round) alone, so runs resume and replicate exactly."""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import data as D
from jaxleak import models
from jaxleak.federated.rounds import run_fedavg_round, run_per_label_updates, select_participants
from jaxleak.runs import fields
from jaxleak.runs.eavesdrop.config import EavesdropConfig


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
  labels_per_client: float  # N_L the attacker uses: the main-label range's mean, or the Dirichlet allocation's mean


def _model_kwargs(config: EavesdropConfig) -> dict:
  return {} if config.dropout is None else {"dropout": config.dropout}


def load_pools(config: EavesdropConfig) -> tuple[D.LabelPool, D.LabelPool]:
  pool = D.load_pool(config.dataset, data_dir=config.data_dir, scale=config.synthetic_scale, seed=config.seed)
  return D.split_pool(pool, config.aux_fraction, seed=config.seed)


def setup(config: EavesdropConfig, allocation: D.Allocation | None = None,
          pools: tuple[D.LabelPool, D.LabelPool] | None = None) -> Federation:
  """Data, allocation (sec. IV-B unless given), auxiliary data and the initial global model."""
  if not isinstance(config, EavesdropConfig):
    raise TypeError(f"config must be a jaxleak.runs.eavesdrop.EavesdropConfig, got {type(config).__name__}.")
  if pools is not None and not (isinstance(pools, tuple) and len(pools) == 2
                                and all(isinstance(p, D.LabelPool) for p in pools)):
    raise TypeError("pools must be a pair (train, aux) of jaxleak.data.LabelPool, e.g. load_pools(config); got "
                    f"{type(pools).__name__}.")
  if allocation is not None and not isinstance(allocation, D.Allocation):
    raise TypeError(f"allocation must be a jaxleak.data.Allocation (or None), got {type(allocation).__name__}.")
  train, aux = pools or load_pools(config)
  if (train.num_classes, train.example_shape) != (aux.num_classes, aux.example_shape):
    raise ValueError(f"pools: the participants' pool has {train.num_classes} classes of examples "
                     f"{train.example_shape}, the attacker's {aux.num_classes} of {aux.example_shape}; both halves "
                     "of one dataset must agree (split one pool with jaxleak.data.split_pool).")
  allocation = allocate(config, train) if allocation is None else allocation
  if allocation.num_participants != config.num_participants:
    raise ValueError(f"allocation has {allocation.num_participants} participants, config {config.num_participants}.")
  aux_index = _aux_index(config, aux)
  model = models.build(config.model, train.num_classes, **_model_kwargs(config))
  variables = models.init_for_shape(model, jax.random.key(config.seed), train.example_shape)
  return Federation(config=config, model=model, variables=variables, pool_x=jnp.asarray(train.x),
                    pool_y=jnp.asarray(train.y), allocation=allocation, aux_x=jnp.asarray(aux.x[aux_index]),
                    aux_y=jnp.asarray(aux.y[aux_index]), test_x=jnp.asarray(aux.x), test_y=jnp.asarray(aux.y),
                    num_classes=train.num_classes, labels_per_client=labels_per_client(config, allocation))


def allocate(config: EavesdropConfig, train: D.LabelPool) -> D.Allocation:
  """The participants' data: sec. IV-B's main labels, or Dirichlet(alpha) label proportions (config.partition)."""
  if config.partition == "dirichlet":
    return D.allocate_dirichlet(train, config.num_participants, alpha=config.dirichlet_alpha,
                                samples_per_participant=config.samples_per_participant,
                                min_owned=config.min_owned, seed=config.seed)
  return D.allocate_main_labels(train, config.num_participants, main_labels=config.main_labels,
                                samples_per_label=config.samples_per_label, other_samples=config.other_samples,
                                seed=config.seed)


def _allocation_inputs(config: EavesdropConfig) -> tuple:
  """What `allocate` reads of a config (configs equal in these draw the same allocation from the same pool)."""
  if config.partition == "dirichlet":
    return ("dirichlet", config.num_participants, config.dirichlet_alpha, config.samples_per_participant,
            config.min_owned, config.seed)
  return ("main_labels", config.num_participants, tuple(config.main_labels), config.samples_per_label,
          config.other_samples, config.seed)


def _aux_inputs(config: EavesdropConfig) -> tuple[int, int]:
  """(examples per label, seed) of the attacker's auxiliary data."""
  return config.aux_samples_per_label or config.samples_per_label, config.seed + 1


def _aux_index(config: EavesdropConfig, aux: D.LabelPool) -> np.ndarray:
  per_label, seed = _aux_inputs(config)
  return D.aux_per_label(aux, per_label, seed=seed)


def check_data(config: EavesdropConfig, pools: tuple[D.LabelPool, D.LabelPool],
               allocation_drawn_later: bool = False, checked: Optional[set] = None) -> None:
  """Raises the ValueError `setup` would raise about the data (labels against `main_labels`, the allocation, the
  attacker's auxiliary examples), without building a model: for checks before any work. With
  `allocation_drawn_later` (Whole Determination draws its own) only the auxiliary data is checked. `checked`: what
  earlier calls with the same pools drew (filled in here), not drawn again (a study's groups that differ only in
  training settings share their allocation: eavesdrop_sweeps drew one 15 times, 4 min 40 s at 100,000
  participants)."""
  train, aux = pools
  checked = set() if checked is None else checked
  jobs = [] if allocation_drawn_later else [(("allocation", id(train)) + _allocation_inputs(config),
                                             lambda: allocate(config, train))]
  jobs.append((("aux", id(aux)) + _aux_inputs(config), lambda: _aux_index(config, aux)))
  for key, draw in jobs:
    if key not in checked:
      draw()
      checked.add(key)


def labels_per_client(config: EavesdropConfig, allocation: D.Allocation) -> float:
  """N_L: for the main-label partition the range's mean (what the paper's attacker knows); for a Dirichlet one
  the mean number of labels a participant owns (the paper's attacker estimates N_L 'by collecting the data of a
  few participants'; we give it the federation's mean)."""
  if config.partition == "dirichlet":
    return float(max(allocation.owners.sum(1).mean(), 1.0))
  return float(config.labels_per_client)


def round_randomness(seed: int, t: int, num_participants: int, fraction: float):
  """(selected participants i32[K], round key): a function of (seed, round) only, so resumed runs match."""
  rng = np.random.default_rng([seed, t])
  return select_participants(num_participants, fraction, rng), jax.random.fold_in(jax.random.key(seed), t)


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
  """One round: selection, local training (`run_fedavg_round`: vmapped, or one participant at a time for conv
  models on CPU), secure aggregation, the attacker's per-label training.
  Returns (G_{t+1}, head-kernel global update [D, C], U [C, D, C], selected i32[K])."""
  cfg = fed.config
  r = round_inputs(fed, t)
  selected = r.selected
  new_vars, mean_update = run_fedavg_round(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index),
                                           jnp.asarray(r.mask), r.client_keys, local=cfg.local,
                                           compression_ratio=cfg.compression, ldp=cfg.ldp)
  label_updates = run_per_label_updates(fed.model, variables, fed.aux_x, fed.aux_y, r.attack_key, local=cfg.local)
  return new_vars, mean_update["params"]["head"]["kernel"], label_updates, selected


def setup_replicates(config: EavesdropConfig, num_replicates: int) -> list[Federation]:
  """R federations with seeds config.seed + r (own allocation, initial model, auxiliary data and selections),
  sharing one example pool (split with config.seed) and one padded width, for `run_rounds_replicated`. Because of
  the shared split and the padding (which changes the shuffles' PRNG draws), replicate r is not bitwise the run
  `setup(config with seed + r)` alone; `run_rounds` on feds[r] is (tested)."""
  fields.integer("num_replicates", num_replicates)
  fields.seed("seed", config.seed, span=num_replicates)        # before any of the R set-ups
  pools = load_pools(config)
  feds = [setup(dataclasses.replace(config, seed=config.seed + r), pools=pools) for r in range(num_replicates)]
  width = max(f.allocation.width for f in feds)
  return [f._replace(allocation=D.pad_allocation(f.allocation, width)) for f in feds]


def play_training_round(fed: Federation, variables: dict, t: int) -> dict:
  """One FedAvg round without the attacker's work: G_{t+1}."""
  cfg = fed.config
  r = round_inputs(fed, t)
  new_vars, _ = run_fedavg_round(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index),
                                 jnp.asarray(r.mask), r.client_keys, local=cfg.local,
                                 compression_ratio=cfg.compression, ldp=cfg.ldp)
  return new_vars


