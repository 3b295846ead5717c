"""Playing an Eavesdrop federation's rounds and attacking each: Class Sniffing and Quantity Inference for every
label in every round, for one federation or R replicates in one vmapped computation per round. Checkpointed
every round (jaxleak.storage); a rerun resumes after the last completed round with identical results."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import gpu_numerics, storage
from jaxleak.attacks import eavesdrop as E
from jaxleak.federated.rounds import (client_head_update, client_head_update_replicated, fedavg_round_replicated,
                                     per_label_updates_replicated, remove_own_update)
from jaxleak.runs.eavesdrop.config import EavesdropConfig, config_record
from jaxleak.runs.eavesdrop.federation import Federation, play_round, round_inputs


def attack_round(global_update, label_updates, num_selected, labels_per_client, margin, ratio_threshold, abort_std):
  """Class Sniffing and Quantity Inference for every label of one round: (SniffingResult, QuantityResult)."""
  sniff = E.class_sniffing(global_update, label_updates, num_selected, labels_per_client, margin=margin)
  qi = E.quantity_inference(global_update, label_updates, num_selected, labels_per_client,
                            ratio_threshold=ratio_threshold, abort_std=abort_std)
  return sniff, qi


attack_round_jit = jax.jit(attack_round)
attack_round_replicated = jax.jit(jax.vmap(attack_round, in_axes=(0, 0, None, 0, None, None, None)))
#: The same with one K per replicate (an attacker that took part removes its own upload: K - 1 where it did).
attack_round_replicated_per_k = jax.jit(jax.vmap(attack_round, in_axes=(0, 0, 0, 0, None, None, None)))


ROUND_COLUMNS = ("round", "label", "owners", "holders", "sniff_score", "sniff_present", "qi_estimate", "qi_std",
                 "qi_num_weights", "qi_aborted")


#: Extra columns when the attacker is a participant (config.attacker_participates): whether it was selected, and
#: both attacks on the aggregate *without* removing its own update (the main columns are with removal).
ATTACKER_COLUMNS = ("attacker_selected", "sniff_present_no_removal", "qi_estimate_no_removal",
                    "qi_aborted_no_removal")


class RoundsResult(NamedTuple):
  """Per (round, label) arrays [R, C] (see ROUND_COLUMNS) and the final global variables. With the attacker as a
  participant, `owners`/`holders` count the OTHER selected participants (what the attacker wants to learn) and
  the ATTACKER_COLUMNS are set (attacker_selected bool [R], the rest [R, C]); otherwise they are None."""
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
  attacker_selected: np.ndarray | None = None
  sniff_present_no_removal: np.ndarray | None = None
  qi_estimate_no_removal: np.ndarray | None = None
  qi_aborted_no_removal: np.ndarray | None = None


ATTACKER = 0        # the participant the attacker controls, when config.attacker_participates


def run_rounds(fed: Federation, *, checkpoint_path: str | None = None,
               progress: Callable[[str], None] | None = None) -> RoundsResult:
  """Plays config.rounds rounds and attacks each (Class Sniffing and Quantity Inference for every label).

  With `checkpoint_path`, the state (global variables and the per-round records) is written atomically every
  round and a rerun resumes after the last completed round.
  """
  if not isinstance(fed, Federation):
    raise TypeError(f"fed must be a Federation from jaxleak.runs.eavesdrop.setup(config), got {type(fed).__name__}.")
  cfg = fed.config
  k, nl = float(cfg.num_selected), float(fed.labels_per_client)

  def step(variables, t):
    variables_next, update, label_updates, selected = play_round(fed, variables, t)
    _check_finite(t, cfg, update, label_updates)
    attack = lambda u, kk: attack_round_jit(u, label_updates, kk, nl, cfg.sniff_margin, cfg.ratio_threshold,
                                            cfg.abort_std)
    others = selected
    if not cfg.attacker_participates:
      sniff, qi = attack(update, k)
    else:
      others = selected[selected != ATTACKER]
      chosen = others.size < selected.size
      sniff_raw, qi_raw = attack(update, k)
      if chosen:                       # the attacker trained too: it removes its own upload, then attacks
        r = round_inputs(fed, t)
        pos = int(np.flatnonzero(r.selected == ATTACKER)[0])
        own = client_head_update(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(r.index[pos]),
                                 jnp.asarray(r.mask[pos]), r.client_keys[pos], local=cfg.local,
                                 compression_ratio=cfg.compression, ldp=cfg.ldp)
        update_others, k_others = remove_own_update(update, own, selected.size)
        sniff, qi = attack(update_others, float(k_others))
      else:
        sniff, qi = sniff_raw, qi_raw
    rec = dict(owners=fed.allocation.owners[others].sum(0), holders=(fed.allocation.counts[others] > 0).sum(0),
               sniff_score=sniff.score, sniff_present=sniff.present, qi_estimate=qi.estimate, qi_std=qi.std,
               qi_num_weights=qi.num_weights, qi_aborted=qi.aborted)
    if cfg.attacker_participates:
      rec.update(attacker_selected=np.asarray(chosen), sniff_present_no_removal=sniff_raw.present,
                 qi_estimate_no_removal=qi_raw.estimate, qi_aborted_no_removal=qi_raw.aborted)
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
  seconds per round). A checkpoint another process is playing into now is refused (`storage.exclusive_run`)."""
  with storage.exclusive_run(checkpoint_path, "Eavesdrop run") if checkpoint_path else contextlib.nullcontext():
    return _play_claimed(step, variables, cfg, checkpoint_path, replicates, progress)


def _play_claimed(step, variables, cfg, checkpoint_path, replicates, progress):
  records, start = [], 0
  ckpt = storage.Checkpointer(checkpoint_path, checkpoint_config(cfg, replicates),
                              what="Eavesdrop rounds") if checkpoint_path else None
  restored = ckpt.restore({"variables": variables, "records": None}) if ckpt else None
  if restored is not None:
    state, _ = restored
    variables, recs = state["variables"], state["records"]
    start = len(next(iter(recs.values())))
    if start > cfg.rounds:
      raise ValueError(f"{checkpoint_path} already holds {start} rounds, more than the {cfg.rounds} asked for; ask "
                       f"for --rounds={start} (or more), or use another --output_dir.")
    records = [{k: np.asarray(v[i]) for k, v in recs.items()} for i in range(start)]
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
    if ckpt:
      ckpt.save({"variables": jax.device_get(variables),
                 "records": {n: np.stack([r[n] for r in records]) for n in records[0]}}, {"rounds_done": t + 1})
    if progress and ((t + 1) % 10 == 0 or t + 1 == cfg.rounds):
      progress(f"round {t + 1}/{cfg.rounds}" + (f" ({replicates} replicates)" if replicates else ""))
  jax.block_until_ready(variables)
  return variables, records, ((time.perf_counter() - t0) / timed if timed else float("nan"))


def checkpoint_config(cfg: EavesdropConfig, replicates: int = 0) -> dict:
  """What a rounds checkpoint is tied to: the whole config but the number of rounds (more rounds resume), and the
  matmul precision where it is not float32 (`gpu_numerics.key_fields`)."""
  d = config_record(cfg)
  d.pop("rounds")
  return {"eavesdrop": d, "replicates": replicates, **gpu_numerics.key_fields()}


def run_rounds_replicated(feds: list[Federation], *, checkpoint_path: str | None = None,
                          progress: Callable[[str], None] | None = None) -> list[RoundsResult]:
  """`run_rounds` for R federations at once: each round is one vmapped computation over replicates x selected
  clients, then the attacker's per-label training and both attacks, vmapped over replicates. Replicate r gives
  the same records as `run_rounds` on feds[r] alone (tested), the attacker as a participant included (its own
  upload recomputed for every replicate in one vmapped call, and removed in those where it was selected).
  Checkpoints and resumes like `run_rounds`."""
  if not feds or not all(isinstance(f, Federation) for f in feds):
    raise ValueError("feds must be a non-empty list of Federations, e.g. setup_replicates(config, R).")
  cfg = feds[0].config
  r_count = len(feds)
  if any(dataclasses.replace(f.config, seed=cfg.seed) != cfg for f in feds):
    raise ValueError("replicated federations must share every setting but the seed.")
  model = feds[0].model
  stack = lambda *xs: jnp.stack(xs)
  variables = jax.tree.map(stack, *[f.variables for f in feds])
  aux_x, aux_y = jnp.stack([f.aux_x for f in feds]), jnp.stack([f.aux_y for f in feds])
  k = float(cfg.num_selected)
  nl = jnp.asarray([f.labels_per_client for f in feds], jnp.float32)          # each replicate's own N_L

  def step(variables, t):
    rs = [round_inputs(f, t) for f in feds]
    selected = [r.selected for r in rs]
    index, mask = np.stack([r.index for r in rs]), np.stack([r.mask for r in rs])
    keys = jnp.stack([r.client_keys for r in rs])
    new_vars, mean_update = fedavg_round_replicated(
        model, variables, feds[0].pool_x, feds[0].pool_y, jnp.asarray(index), jnp.asarray(mask), keys,
        local=cfg.local, compression_ratio=cfg.compression, ldp=cfg.ldp)
    label_updates = per_label_updates_replicated(model, variables, aux_x, aux_y,
                                                 jnp.stack([r.attack_key for r in rs]), local=cfg.local)
    update = mean_update["params"]["head"]["kernel"]
    _check_finite(t, cfg, update, label_updates)
    sniff, qi = attack_round_replicated(update, label_updates, k, nl, cfg.sniff_margin, cfg.ratio_threshold,
                                        cfg.abort_std)
    others, extra = selected, {}
    if cfg.attacker_participates:
      others = [s[s != ATTACKER] for s in selected]
      chosen = np.array([o.size < s.size for o, s in zip(others, selected)])
      extra = dict(attacker_selected=chosen, sniff_present_no_removal=sniff.present,
                   qi_estimate_no_removal=qi.estimate, qi_aborted_no_removal=qi.aborted)
      if chosen.any():
        sniff, qi = _attack_without_own_upload(update, label_updates, variables, index, mask, keys, selected,
                                               chosen, cfg, nl, feds[0])
    owners = np.stack([f.allocation.owners[s].sum(0) for f, s in zip(feds, others)])
    holders = np.stack([(f.allocation.counts[s] > 0).sum(0) for f, s in zip(feds, others)])
    return new_vars, dict(owners=owners, holders=holders, sniff_score=sniff.score, sniff_present=sniff.present,
                          qi_estimate=qi.estimate, qi_std=qi.std, qi_num_weights=qi.num_weights,
                          qi_aborted=qi.aborted, **extra)

  variables, records, per_round = _play(step, variables, cfg, checkpoint_path, r_count, progress)
  out = []
  for r in range(r_count):
    arrays = {name: np.stack([rec[name][r] for rec in records]) for name in records[0]}
    out.append(RoundsResult(**arrays, variables=jax.tree.map(lambda v: v[r], variables),
                            seconds_per_round=per_round))
  return out


def _attack_without_own_upload(update, label_updates, variables, index, mask, keys, selected, chosen, cfg, nl, fed):
  """Replicated rounds with the attacker as a participant: in the replicates where it was selected (`chosen`
  bool[R]) it recomputes its own upload (vmapped over all R; unused where it was not selected), removes it from the
  aggregate and attacks the K - 1 others (as `remove_own_update`; K = 1: a zero update and one 'client'); elsewhere
  it attacks the aggregate of K, as without removal. Returns the attacks' (SniffingResult, QuantityResult) [R, C]."""
  rows = np.arange(len(selected))
  pos = np.array([int(np.flatnonzero(s == ATTACKER)[0]) if c else 0 for s, c in zip(selected, chosen)])
  own = client_head_update_replicated(fed.model, variables, fed.pool_x, fed.pool_y, jnp.asarray(index[rows, pos]),
                                      jnp.asarray(mask[rows, pos]), keys[rows, pos], local=cfg.local,
                                      compression_ratio=cfg.compression, ldp=cfg.ldp)
  size = np.array([s.size for s in selected], np.float32)
  others = size - 1
  removed = jnp.where((others > 0)[:, None, None],
                      (size[:, None, None] * update - own) / np.maximum(others, 1)[:, None, None], 0.0)
  update = jnp.where(chosen[:, None, None], removed, update)
  num_selected = np.where(chosen, np.maximum(others, 1), np.float32(cfg.num_selected)).astype(np.float32)
  return attack_round_replicated_per_k(update, label_updates, jnp.asarray(num_selected), nl, cfg.sniff_margin,
                                       cfg.ratio_threshold, cfg.abort_std)


def pool_results(results_list: list[RoundsResult]) -> RoundsResult:
  """Replicates' rounds one after another (rates over all of them); seconds_per_round of the joint run."""
  arrays = {name: np.concatenate([getattr(r, name) for r in results_list]) for name in ROUND_COLUMNS[2:]}
  if results_list[0].attacker_selected is not None:
    arrays.update({name: np.concatenate([getattr(r, name) for r in results_list]) for name in ATTACKER_COLUMNS})
  return RoundsResult(**arrays, variables=results_list[0].variables,
                      seconds_per_round=results_list[0].seconds_per_round)


