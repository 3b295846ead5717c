"""Whole Determination trials (sec. IV-D1, Table V): federations with Q, Q/4, Q/5 label totals, attacked when the
global model first reaches each accuracy stage, with log-ratio vectors over a window of rounds."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, NamedTuple

import jax
import numpy as np

from jaxleak import data as D
from jaxleak import gpu_numerics, metrics, storage
from jaxleak.attacks import eavesdrop as E
from jaxleak.federated.rounds import run_per_label_updates
from jaxleak.runs import fields
from jaxleak.runs.eavesdrop.config import EavesdropConfig, WholeDeterminationConfig, config_record
from jaxleak.runs.eavesdrop.federation import accuracy, load_pools, play_training_round, setup


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
  ratios: np.ndarray | None = None   # f32[C, window] log(|W_p| / |W_n|) per label over the observed rounds


def run_whole_determination(config: EavesdropConfig, wd: WholeDeterminationConfig = WholeDeterminationConfig(),
                            progress: Callable[[str], None] | None = None,
                            checkpoint_path: str | None = None) -> list[WholeDeterminationTrial]:
  """Trains `wd.trials` federations (seed = config.seed + trial), each with its own random label groups, and
  launches Whole Determination when the global model's accuracy on the held-out pool first reaches each stage.
  All trials share one compiled round (allocations are padded to a common width). With `checkpoint_path`,
  finished trials are saved (a jaxleak.storage checkpoint) after each trial and skipped when the run is repeated
  (and a checkpoint another process is running into now is refused, `storage.exclusive_run`)."""
  with storage.exclusive_run(checkpoint_path, "Whole Determination run") if checkpoint_path else \
      contextlib.nullcontext():
    return _run_whole_determination(config, wd, progress, checkpoint_path)


def _run_whole_determination(config, wd, progress, checkpoint_path):
  train, aux = load_pools(config)
  c = train.num_classes
  factors = np.asarray(wd.factors, np.float64)
  allocations, group_list = draw_trials(config, wd, train)
  width = max(a.width for a in allocations)
  ckpt = storage.Checkpointer(checkpoint_path, {"eavesdrop": config_record(config),
                                                "whole_determination": dataclasses.asdict(wd),
                                                **gpu_numerics.key_fields()},
                              what="Whole Determination") if checkpoint_path else None
  out = _load_wd_checkpoint(ckpt) if ckpt else []
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
        ratios = np.asarray(E.log_ratio(run_per_label_updates(fed.model, variables, fed.aux_x, fed.aux_y, key,
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
    if ckpt:
      _save_wd_checkpoint(ckpt, out)
  return out


def draw_trials(config: EavesdropConfig, wd: WholeDeterminationConfig, train: D.LabelPool
                ) -> tuple[list[D.Allocation], list[np.ndarray]]:
  """Each trial's allocation and true label groups (i32[C]), a function of (config.seed + trial) only; raises the
  ValueError the data meets (more groups or clusters than labels, a label missing from the pool) before any
  training, so studies check it while planning."""
  wd.check_classes(train.num_classes)
  fields.seed("seed", config.seed, span=wd.trials)
  factors = np.asarray(wd.factors, np.float64)
  allocations, group_list = [], []
  for trial in range(wd.trials):
    groups = D.quantity_groups(train.num_classes, config.seed + trial, wd.factors)
    totals = np.maximum(1, np.round(wd.total_per_label * factors[groups])).astype(np.int64)
    allocations.append(D.allocate_label_totals(train, config.num_participants, totals, seed=config.seed + trial))
    group_list.append(groups)
  return allocations, group_list


def _save_wd_checkpoint(ckpt: storage.Checkpointer, trials: list[WholeDeterminationTrial]) -> None:
  rows = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in t._asdict().items()} for t in trials]
  ckpt.save(None, {"trials": rows})


def _load_wd_checkpoint(ckpt: storage.Checkpointer) -> list[WholeDeterminationTrial]:
  restored = ckpt.restore()
  if restored is None:
    return []
  arrays = ("groups", "predicted", "predicted_known_k")

  def field(k, v):
    if k in arrays:
      return np.asarray(v, np.int32)
    return np.asarray(v, np.float32) if k == "ratios" and v is not None else v
  return [WholeDeterminationTrial(**{k: field(k, v) for k, v in r.items()}) for r in restored[1]["trials"]]


def _wd_trial(trial, pending, groups, factors, wd) -> WholeDeterminationTrial:
  stage, t, acc, ratios = pending
  v = np.stack(ratios, axis=1)                                  # [C, window]
  pred = E.whole_determination_from_ratios(v, wd.num_clusters, method=wd.method)
  pred_k = E.whole_determination_from_ratios(v, len(factors), method=wd.method)
  two = E.whole_determination_from_ratios(v, 2, method=wd.method)
  return WholeDeterminationTrial(trial, stage, t, acc, groups, pred, pred_k, metrics.same_partition(pred, groups),
                                 metrics.same_partition(pred_k, groups),
                                 metrics.same_partition(two, groups == np.argmax(factors)), v.astype(np.float32))


