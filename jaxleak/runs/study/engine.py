"""Running a study: every group of a plan (or one shard of it), its client updates computed once, all its LDP
settings in one compiled, vmapped sweep, one record per task.

  plan -> [shard] -> for each group not yet done:
     HAR single step : prepare once -> head gradients (+ whole-model norms if a setting clips the whole model)
                       -> settings in fixed-size chunks: vmap over (sigma, tau) of [vmap over updates of
                          (LDP as an optax transform with injected hyper-parameters -> every attack)]
                       -> metrics -> records
     HAR multi step  : runs.leakage.run_leakage (S, B, N are shapes: one compilation per (N, B, S))
     Eavesdrop       : runs.eavesdrop.run_rounds, checkpointed every round inside the study folder
     Whole Determ.   : runs.eavesdrop.run_whole_determination, checkpointed every trial inside the study folder
  -> index.json

sigma and tau are traced arguments: the number of compilations does not depend on the number of settings (tested).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shlex
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import metrics as M
from jaxleak import privacy
from jaxleak import storage
from jaxleak.federated import LocalSteps
from jaxleak.federated.rounds import compress_update
from jaxleak.privacy import LdpConfig
from jaxleak.runs.leakage import aggregation
from jaxleak.runs.leakage.config import LeakageConfig
from jaxleak.runs.leakage.prepare import aggregated, prepare, take_rows, take_updates
from jaxleak.runs.leakage.prepare import noise_keys as prepare_noise_keys
from jaxleak.runs.leakage.scoring import (attack_inputs, attack_updates, rlu_bases, score, true_counts,
                                          with_members)
from jaxleak.runs.leakage.updates import call_size, compute_heads_and_norms, compute_updates
from jaxleak.runs.study.plan import Group, Plan, Task, counted, dealing, describe
from jaxleak.runs.study.store import Store
from jaxleak.types import LastLayerGrads

#: Settings per compiled sweep call on XLA:CPU (the last chunk is padded): memory grows with this, not with the
#: number of settings. CPU sweeps are compute-bound, so larger calls buy nothing there.
SETTINGS_PER_CALL = 16
#: Updates per compiled sweep call at most: with the settings per call, bounds a call's memory whatever K.
UPDATES_PER_CALL = 512
#: Accelerators: the most settings one call may hold (a power of two), whatever the memory.
MAX_SETTINGS_PER_CALL = 4096
#: Inside a HAR group (its gradient pass), a progress line at most this often (seconds): a long group is not
#: silent between its own lines, a short one adds none.
GROUP_PROGRESS_EVERY_S = 30.0
#: Bytes of a sweep call per (setting, update) and head-gradient float: XLA:CPU's temporaries measured 2.27x the
#: noisy head gradients (`compile().memory_analysis()`, five attacks, C = 13 / 19, D = 128 / 512); 4 leaves margin
#: for other compilers.
_BYTES_PER_GRAD_FLOAT = 4 * 4


def leakage_config(task_config: dict, sigma: float = 0.0, tau: float = 0.0) -> LeakageConfig:
  """The LeakageConfig of a HAR task (its LDP given separately)."""
  c = task_config
  local = None
  if c["multi_step"] is not None:
    n, b, s = c["multi_step"]
    local = LocalSteps(steps=s, batch_size=b, lr=c["local_lr"], equivalent=c["equivalent"])
  ldp = LdpConfig() if (sigma, tau) == (0.0, 0.0) else LdpConfig(
      clip_norm=tau if tau > 0 else math.inf, noise_std=sigma, clip_scope=c["clip_scope"] or "all")
  return LeakageConfig(dataset=c["dataset"], data_dir=c["data_dir"], synthetic_scale=c["synthetic_scale"],
                       model=c["model"], sampling=c["sampling"], num_samples=c["num_samples"],
                       attacks=tuple(c["attacks"]), num_clients=c["num_clients"], seed=c["seed"],
                       minmax=local is None, ldp=ldp, local=local, checkpoint_dir=c["checkpoint_dir"],
                       dirichlet_alpha=c.get("dirichlet_alpha"), head_bias=c.get("head_bias", True),
                       compression=c.get("compression", 0.0), dropout=c.get("dropout"),
                       client_loss=c.get("client_loss", "mean"), aggregate_clients=c.get("aggregate_clients", 1),
                       cohort_dealing=c.get("cohort_dealing", "once"))


def eavesdrop_config(c: dict):
  """The EavesdropConfig of an Eavesdrop task (raises naming a bad field)."""
  from jaxleak.federated import CLIENT_LOSSES, LocalEpochs
  from jaxleak.runs.eavesdrop.config import EavesdropConfig
  fields = {f.name for f in dataclasses.fields(EavesdropConfig)} - {"local"}
  local_fields = ("local_epochs", "local_batch_size", "local_lr", "client_loss")
  unknown = sorted(set(c) - fields - set(local_fields) - {"replicates"} - {k for k in c if k.startswith("wd_")})
  if unknown:
    raise ValueError(f"unknown Eavesdrop field(s) {unknown}; fields: {', '.join(sorted(fields))}.")
  loss = c.get("client_loss", "mean")
  if loss not in CLIENT_LOSSES:
    raise ValueError(f"client_loss: unknown {loss!r}; valid: {', '.join(CLIENT_LOSSES)}.")
  kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in c.items() if k in fields}
  return EavesdropConfig(local=LocalEpochs(c["local_epochs"], c["local_batch_size"], c["local_lr"], loss), **kw)


def whole_determination_config(c: dict):
  """The WholeDeterminationConfig of a Whole Determination task (its wd_* fields; raises naming a bad one)."""
  from jaxleak.runs.eavesdrop.config import WholeDeterminationConfig
  kw = {k[3:]: (tuple(v) if isinstance(v, list) else v) for k, v in c.items() if k.startswith("wd_")}
  try:
    wd = WholeDeterminationConfig(**kw)
  except TypeError as e:
    raise ValueError(f"Whole Determination fields: {e}") from None
  except ValueError as e:                                  # its messages start with the field's name
    raise ValueError(f"wd_{e}") from None
  return wd


# --- the vmapped LDP x attack sweep ---------------------------------------------------------------------------

def apply_ldp(grads: LastLayerGrads, model_norm: jax.Array, clip_norm: jax.Array, noise_std: jax.Array,
              noise_key: jax.Array, *, scope: str) -> LastLayerGrads:
  """One update's LDP with traced (sigma, tau): the same values as federated.apply_batch_ldp with those numbers.

  Whole-model scope scales the head by the factor of the whole-model norm; last-layer scope clips by the head's
  own norm; then Gaussian noise, all through `privacy.ldp_injectable` (optax.inject_hyperparams)."""
  if scope == "all":
    factor = privacy.clip_factor(model_norm, clip_norm)
    scaled = jax.tree.map(lambda a: a * factor, grads)
    return privacy.privatize(scaled, privacy.ldp_injectable(jnp.inf, noise_std, key=noise_key))
  return privacy.privatize(grads, privacy.ldp_injectable(clip_norm, noise_std, key=noise_key, scope="all"))


@functools.partial(jax.jit, static_argnames=("names", "num_samples", "scope", "compression", "aggregate"))
def sweep_chunk(grads: LastLayerGrads, norms: jax.Array, noise_keys: jax.Array, attack_keys: jax.Array,
                star_params: dict, head, clip_norms: jax.Array, noise_stds: jax.Array, rlu_basis=None, *,
                names: tuple[str, ...], num_samples: int, scope: str, compression: float = 0.0,
                aggregate: int = 1) -> dict:
  """Every attack on every update under every (sigma, tau) of a chunk: {attack: i32[S, K / aggregate, C]}.

  grads [K, ...], norms f32[K], noise keys [K]; clip_norms, noise_stds f32[S] (inf / 0 = off). After the LDP, the
  compression defence (static CR) as `scoring.compress_uploads`; then, with `aggregate` = k > 1, each k
  consecutive updates are one securely aggregated round (their mean, `aggregation.mean_over_members`), and
  attack_keys, star_params, head and rlu_basis (RLU) have one row per aggregate, K / k; num_samples is then the
  aggregate's k N. One compilation per (K, S, attacks, N, scope, CR, k), whatever the values (`sweep_settings`
  keeps K and S bounded)."""
  def one_setting(tau, sigma):
    private = jax.vmap(lambda g, nm, k: apply_ldp(g, nm, tau, sigma, k, scope=scope))(grads, norms, noise_keys)
    if compression:
      private = jax.vmap(lambda g: compress_update(g, compression))(private)
    if aggregate > 1:
      private = aggregation.mean_over_members(private, aggregate)
    return {name: attack_updates(name, private, num_samples, attack_keys, star_params, head, rlu_basis)
            for name in names}

  return jax.vmap(one_setting)(clip_norms, noise_stds)


def settings_per_call(num_settings: int, updates_per_call: int, grad_floats: int, *, platform: str,
                      bytes_limit: Optional[int] = None) -> int:
  """How many (sigma, tau) settings one compiled sweep call holds (the last call is padded to it).

  XLA:CPU: `SETTINGS_PER_CALL` (16), whatever the sweep: there the sweep is compute-bound (measured). On
  accelerators a call's time is expected (not yet measured) to be mostly kernel launches, so a sweep is as few
  calls as memory allows: the smallest power of two >= `num_settings` (at least 16), capped by a quarter of the
  device's `bytes_limit` at `_BYTES_PER_GRAD_FLOAT` per head-gradient float (`grad_floats` = C x (D + 1)) and
  update, and by `MAX_SETTINGS_PER_CALL`. Powers of two keep the compilations few (at most 9 sizes per group
  shape) while 10 and 1,000 settings compile once each. Without a `bytes_limit` (a backend that reports none)
  1 GiB is assumed."""
  if platform == "cpu":
    return SETTINGS_PER_CALL
  budget = (bytes_limit if bytes_limit else 1 << 30) // 4
  fits = budget // max(1, updates_per_call * grad_floats * _BYTES_PER_GRAD_FLOAT)
  cap = 1 << max(0, int(fits).bit_length() - 1)                  # largest power of two <= fits
  cap = max(SETTINGS_PER_CALL, min(cap, MAX_SETTINGS_PER_CALL))
  want = 1 << max(0, int(max(num_settings, 1) - 1).bit_length())  # smallest power of two >= num_settings
  return max(SETTINGS_PER_CALL, min(want, cap))


def _device_bytes_limit() -> Optional[int]:
  try:
    return int((jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0)) or None
  except Exception:                                             # backends without memory_stats
    return None


def default_settings_per_call(grads: LastLayerGrads, num_settings: int, updates_per_call: int) -> int:
  """`settings_per_call` for these head gradients ([K, D, C] kernel, [K, C] bias) on the default backend."""
  grad_floats = int(np.prod(grads.kernel.shape[1:])) + (int(np.prod(grads.bias.shape[1:]))
                                                        if grads.bias is not None else 0)
  return settings_per_call(num_settings, updates_per_call, grad_floats, platform=jax.default_backend(),
                           bytes_limit=_device_bytes_limit())


def sweep_settings(grads, norms, noise_keys, attack_keys, star_params, head, settings, *, names, num_samples,
                   scope, per_call: Optional[int] = None, updates_per_call: int = UPDATES_PER_CALL,
                   rlu_basis=None, compression: float = 0.0, aggregate: int = 1,
                   progress: Optional[Callable[[str], None]] = None):
  """`sweep_chunk` over any number of (sigma, tau) settings and K updates: {attack: i32[S, K, C]}; `progress`
  hears after every call how much of the sweep is done, with an ETA (throttle it: a call can take milliseconds).

  Settings run in padded chunks of `per_call` (default: `settings_per_call` for this backend: 16 on XLA:CPU, as
  few calls as memory allows on accelerators); updates in calls of at most `updates_per_call` (as many calls as
  that needs, of `updates.call_size`: evened out and rounded so that groups of about the same size share the
  compiled sweep; the last call padded with repeats), so a call's memory (`per_call` x updates x C x D) is
  bounded whatever K and the number of settings. Every update and setting is attacked on its own (the noise key
  is the update's, not the setting's position), so neither split changes results (tested)."""
  if (per_call is not None and per_call < 1) or updates_per_call < 1:
    raise ValueError(f"sweep_settings: per_call ({per_call}) and updates_per_call ({updates_per_call}) must be >= 1.")
  k = int(np.shape(norms)[0])
  if k % aggregate:
    raise ValueError(f"sweep_settings: {k} updates are not whole aggregates of {aggregate}.")
  per_update = call_size(k // aggregate, max(1, updates_per_call // aggregate)) * aggregate  # whole aggregates
  if per_call is None:
    per_call = default_settings_per_call(grads, len(settings), per_update)
  sig = np.asarray([s for s, _ in settings], np.float32)
  tau = np.asarray([t if t > 0 else np.inf for _, t in settings], np.float32)
  # On the device once (the pass returns host arrays): each call's rows are then gathered there, not the whole
  # of every leaf sent again for every call of updates.
  grads, norms = jax.device_put((grads, norms))
  by_updates = []
  t0, total, done = time.perf_counter(), k * len(settings), 0
  for u0 in range(0, k, per_update):
    sel = np.arange(u0, u0 + per_update) % k
    rows = sel[::aggregate] // aggregate                   # the aggregates of those updates (all of them at 1)
    part = (*take_rows((grads, norms, noise_keys), sel), *take_rows((attack_keys, star_params, head, rlu_basis), rows))
    u_stop = min(per_update, k - u0) // aggregate
    chunks = []
    for start in range(0, len(settings), per_call):
      idx = np.arange(start, start + per_call) % len(settings)
      res = sweep_chunk(*part[:6], jnp.asarray(tau[idx]), jnp.asarray(sig[idx]), part[6], names=tuple(names),
                        num_samples=num_samples, scope=scope, compression=compression, aggregate=aggregate)
      stop = min(per_call, len(settings) - start)
      chunks.append({n: np.asarray(v)[:stop, :u_stop] for n, v in res.items()})
      done += stop * min(per_update, k - u0)
      if progress is not None:
        eta = (time.perf_counter() - t0) * (total - done) / done
        progress(f"LDP sweep: {done / total:.0%} of {len(settings):,} settings x {k:,} updates done; ETA "
                 f"{eta:.0f} s")
    by_updates.append({n: np.concatenate([c[n] for c in chunks]) for n in names})
  return {n: np.concatenate([b[n] for b in by_updates], axis=1) for n in names}


# --- records ----------------------------------------------------------------------------------------------------

def leakage_results(result) -> dict:
  """A LeakageResult as a record's JSON results: per attack the summary (mean, std over clients), per-client
  metrics, the summed true/predicted counts per client, and the sorted-pairing confusion matrix summed over all
  updates (i32[C, C], rows = true class; `metrics.sorted_pairing_confusion`)."""
  out = {"subjects": list(result.subject_ids), "num_updates": int(len(result.batch_client)),
         "class_names": list(result.class_names), "attacks": {}}
  if result.cohorts is not None:                  # secure aggregation: "subjects" are the cohorts' numbers
    out["cohorts"] = [list(c) for c in result.cohorts]      # (dealt every round: each round's members)
    out["member_subjects"] = list(result.member_ids)
  names = result.config.attacks
  per = {"clients": result.client_metrics, "members": result.member_metrics, "profiles": result.profile_metrics}
  per = {field: {name: {m: np.asarray(getattr(v[name], m)) for m in _SUMMARISED} for name in names}
         for field, v in per.items() if v is not None}
  summaries, confusions = jax.tree.map(np.asarray, _summaries_and_confusions(
      per, result.true_counts, {name: result.pred_counts[name] for name in names}))
  as_floats = lambda a: np.asarray(a, np.float64).tolist()
  for name in names:
    cm = result.client_metrics[name]
    out["attacks"][name] = {"summary": {m: as_floats(summaries["clients"][name][m]) for m in _SUMMARISED},
                            "clients": {m: as_floats(per["clients"][name][m]) for m in _SUMMARISED},
                            "num_batches": np.asarray(cm.num_batches).tolist(),
                            "class_correct": np.asarray(cm.class_correct).tolist(),
                            "class_total": np.asarray(cm.class_total).tolist(),
                            "confusion": np.asarray(confusions[name]).tolist()}
    for field in ("members", "profiles"):          # what the rounds tell of each client (of member_subjects)
      if field in per:
        out["attacks"][name][field] = {"summary": {m: as_floats(summaries[field][name][m]) for m in _SUMMARISED},
                                       "clients": {m: as_floats(per[field][name][m]) for m in _SUMMARISED}}
  return out


#: The per-client metrics a record summarises (mean, std over clients).
_SUMMARISED = ("lnacc", "leacc", "class_acc", "symmetric_existence")


# One program per shape for a record's every summary and confusion matrix (eagerly, its some 30 small operations
# were dispatched one by one: ~3 ms a record, most of a 10^4-setting sweep's time).
@jax.jit
def _summaries_and_confusions(per: dict, truth, preds: dict):
  summaries = jax.tree.map(lambda v: jnp.stack(M.mean_std_over_clients(v)), per)
  return summaries, {name: M.sorted_pairing_confusion(truth, p).sum(0) for name, p in preds.items()}


def _every(log: Callable[[str], None], seconds: float) -> Callable[[str], None]:
  """`log` for the lines inside a group: indented under its group line, and at most one every `seconds` (the
  first once `seconds` have passed since this was made)."""
  last = [time.perf_counter()]

  def inner(msg: str) -> None:
    now = time.perf_counter()
    if now - last[0] >= seconds:
      last[0] = now
      log(f"    {msg}")
  return inner


def _shared_pass(prep, clients_per_round: list[int], num_samples: int, dealing: str = "once"):
  """The updates of a group's one gradient pass, shared by the clients-per-round values K of its tasks: all of
  prep's (every client's, as `prepare` samples them) when a task has K = 1 or the clients are dealt every round
  (whose rounds depend on every update), otherwise the union of the updates the aggregates of each K need (each
  client's first ones, in prep's order). Fixed by the group, not by which of its tasks are left to run, so that a
  resumed group computes the very values of an unbroken one."""
  if 1 in clients_per_round or dealing != "once":
    return prep
  rows = np.unique(np.concatenate([aggregated(prep, k, num_samples)[1] for k in clients_per_round]))
  return take_updates(prep, rows)


def _clients_per_round(prep, per_update: tuple, cfg: LeakageConfig, log) -> tuple:
  """(the Prepared of cfg's tasks, per_update's leaves restricted to their updates): the pass itself at K = 1, the
  updates that reach an aggregate of K (in its order) otherwise."""
  if cfg.aggregate_clients == 1:
    return prep, per_update
  mine, rows = aggregated(prep, cfg.aggregate_clients, cfg.num_samples, log, dealing=cfg.cohort_dealing)
  return mine, jax.tree.map(lambda a: a[rows], per_update)


def _run_har_group(group: Group, todo: list[Task], store: Store, log, chunk_size: Optional[int] = None) -> None:
  first = todo[0].config
  base = dataclasses.replace(leakage_config(first), chunk_size=chunk_size)
  ks = sorted({t.config.get("aggregate_clients", 1) for t in group.tasks})
  t0 = time.perf_counter()
  inner = _every(log, GROUP_PROGRESS_EVERY_S)
  # every client's updates, aggregated (and dealt) per K below
  whole = dataclasses.replace(base, aggregate_clients=1, cohort_dealing="once")
  prep = _shared_pass(prepare(whole, None, None, None), ks, base.num_samples, dealing(group.tasks))
  if first["multi_step"] is not None:
    grads = compute_updates(prep, whole, LdpConfig(), inner)
    t_pass = time.perf_counter() - t0
    from jaxleak.runs.leakage.scoring import attack_and_score
    for task in todo:                                          # one task per K (multi-step tasks have no LDP)
      cfg = leakage_config(task.config)
      mine, (g,) = _clients_per_round(prep, (grads,), cfg, inner)
      result = attack_and_score(mine, cfg, g, {})
      store.write(task, leakage_results(result), {"group_s": time.perf_counter() - t0, "shared_pass_s": t_pass,
                                                  "chunk_size": chunk_size})
    return
  settings_all = [(t.config["sigma"], t.config["tau"]) for t in todo]
  scopes = {t.config["clip_scope"] for t in todo} - {None}
  scope = scopes.pop() if scopes else "all"
  if any(tau > 0 for _, tau in settings_all) and scope == "all":
    grads, norms = compute_heads_and_norms(prep, whole, inner)
  else:
    grads, norms = compute_updates(prep, whole, LdpConfig(), inner), np.full(len(prep.indices), np.nan, np.float32)
  t_pass = time.perf_counter() - t0
  for k in ks:
    tasks = [t for t in todo if t.config.get("aggregate_clients", 1) == k]
    if not tasks:
      continue
    t_k = time.perf_counter()
    settings = [(t.config["sigma"], t.config["tau"]) for t in tasks]
    cfg_k = leakage_config(tasks[0].config)
    mine, (g, n) = _clients_per_round(prep, (grads, norms), cfg_k, inner)
    noise_keys = prepare_noise_keys(mine.dropout_keys)
    view = mine if k == 1 else aggregation.aggregated_view(mine)   # k > 1: attacks read aggregates of k updates
    keys, star_params, head = attack_inputs(view, cfg_k, k * base.num_samples)
    basis = aggregation.per_aggregate(rlu_bases(mine, cfg_k), k) if "rlu" in base.attacks else None
    preds = sweep_settings(g, jnp.asarray(n), noise_keys, keys, star_params, head, settings,
                           names=base.attacks, num_samples=k * base.num_samples, scope=scope, rlu_basis=basis,
                           compression=base.compression, aggregate=k, progress=inner)
    truth = true_counts(view)
    t_sweep = time.perf_counter() - t_k
    with store.writing_behind() as write:
      for i, task in enumerate(tasks):
        inner(f"records: {i:,}/{len(tasks):,} scored")
        cfg = leakage_config(task.config, *settings[i])
        mine_preds = {name: preds[name][i] for name in base.attacks}
        result = score(view, cfg, mine_preds, truth, {})
        if k > 1:
          result = with_members(result, mine, cfg, mine_preds, mine.participation)
        write(task, leakage_results(result), {"shared_pass_s": t_pass, "sweep_s": t_sweep,
                                              "settings_in_group": len(tasks), "chunk_size": chunk_size})


def _checkpoint(store: Store, task: Task) -> Optional[str]:
  """Where a task's resumable run checkpoints: in the study folder, by the process that writes it. The other
  processes of a jax.distributed run (a read-only store) compute the same run without checkpointing: they would
  write the writer's files and be refused its checkpoint's claim (`storage.exclusive_run`)."""
  return None if store.read_only else store.checkpoint_path(task.key)


def _run_whole_determination_group(group: Group, todo: list[Task], store: Store, log) -> None:
  from jaxleak.runs import eavesdrop as EV
  task = todo[0]
  cfg = eavesdrop_config(task.config)
  wd = whole_determination_config(task.config)
  t0 = time.perf_counter()
  trials = EV.run_whole_determination(cfg, wd, progress=log, checkpoint_path=_checkpoint(store, task))
  summary = EV.summarize_whole_determination(trials)
  results = {"stages": [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
                        for r in summary],
             "trials": [{"trial": t.trial, "stage": float(t.stage), "round": int(t.round),
                         "accuracy": float(t.accuracy), "groups": [int(x) for x in t.groups],
                         "predicted": [int(x) for x in t.predicted], "success": bool(t.success),
                         "success_known_k": bool(t.success_known_k), "success_two_level": bool(t.success_two_level),
                         "ratios": None if t.ratios is None else np.asarray(t.ratios, np.float64).tolist()}
                        for t in trials]}
  store.write(task, results, {"group_s": time.perf_counter() - t0})


def _run_eavesdrop_group(group: Group, todo: list[Task], store: Store, log) -> None:
  from jaxleak.runs import eavesdrop as EV
  task = todo[0]
  cfg = eavesdrop_config({k: v for k, v in task.config.items() if k != "replicates"})
  t0 = time.perf_counter()
  reps = task.config["replicates"]
  ckpt = _checkpoint(store, task)
  if reps == 1:
    res = EV.run_rounds(EV.setup(cfg), checkpoint_path=ckpt)
  else:
    res = EV.pool_results(EV.run_rounds_replicated(EV.setup_replicates(cfg, reps), checkpoint_path=ckpt))
  s = EV.summarize_rounds(res, cfg)
  results = {"overall": {k: float(v) for k, v in s["overall"].items()},
             "per_label": {k: [float(x) for x in v] for k, v in s["per_label"].items()},
             "alpha_pct": float(s["alpha_pct"]),
             # the attacker as a participant: over the rounds it was selected, both attacks with and without
             # its own upload removed (`eavesdrop.report.attacker_summary`)
             **({"attacker": s["attacker"]} if "attacker" in s else {})}
  store.write(task, results, {"group_s": time.perf_counter() - t0, "seconds_per_round": s["seconds_per_round"]})


@dataclasses.dataclass
class RunSummary:
  groups_run: int
  groups_skipped: int
  tasks_written: int
  wall_s: float
  per_group_s: list
  groups_busy: list = dataclasses.field(default_factory=list)   # labels of groups another process was running


def run_plan(plan: Plan, store: Store, *, progress: Optional[Callable[[str], None]] = print,
             wait: bool = False, chunk_size: Optional[int] = None) -> RunSummary:
  """Runs every group of `plan` whose tasks are not all stored; one line of progress per group with an ETA.

  chunk_size: HAR updates vmapped together (`LeakageConfig.chunk_size`; None: its default for this backend), to
  trade memory for speed. How a group is computed, not what: not part of a task's key (it is in the task's timings
  file); results can differ from another chunk size's at float round-off, as from another backend's.

  A group another process is running (sharing the folder) is skipped; with `wait`, this process then waits for
  each such group to be released and runs whatever of it is still missing (its holder may have been killed), so
  that it returns only when every task of the plan is stored."""
  if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive integer (updates vmapped together) or None, got {chunk_size!r}.")
  log = progress or (lambda m: None)
  t_start = time.perf_counter()
  done = store.done_keys(t.key for t in plan.tasks)
  if jax.process_count() > 1:             # jax.distributed: every process must run the same groups, in order
    from jax.experimental import multihost_utils
    mask = np.asarray([t.key in done for t in plan.tasks])
    done = {t.key for t, d in zip(plan.tasks, multihost_utils.broadcast_one_to_all(mask)) if d}
  pending = [g for g in plan.groups if any(t.key not in done for t in g.tasks)]
  skipped = len(plan.groups) - len(pending)
  log(f"study {plan.study.name}: {counted(len(plan.groups), 'group')}, {counted(len(plan.tasks), 'task')} "
      f"({len(done):,} stored); groups: {skipped:,} done, {len(pending):,} to run -> {store.root}")
  # Processes sharing the folder (the same command run twice, Ray tasks, overlapping shards) claim a group before
  # running it, and skip one another's; a jax.distributed run's processes must all run every group, so never do.
  shared = jax.process_count() == 1 and not store.read_only
  per_group, written, busy, unlocked = [], 0, [], False
  # First every group nobody holds, then (with `wait`) the held ones, each as soon as its holder lets go.
  queue = [(i, g, False) for i, g in enumerate(pending)]
  while queue:
    i, group, blocking = queue.pop(0)
    if blocking:
      log(f"  group {i + 1}/{len(pending)} [{group.label}]: waiting for the process running it")
    t0 = time.perf_counter()
    try:
      with storage.claim(store.claim_path(group.key), wait=blocking) if shared else contextlib.nullcontext() as held:
        if shared and held is False and not unlocked:
          unlocked = True
          log(f"note: the file system of {store.root} has no locks, so this run cannot see the groups other "
              "processes run there; a second command on this folder would compute them again.")
        if shared:                       # another process may have finished it since the folder was read
          done |= store.done_keys(t.key for t in group.tasks if t.key not in done)
        if held:                         # what a process stopped mid-write left of this group's files
          store.delete_stopped_writes(t.key for t in group.tasks)
        todo = [t for t in group.tasks if t.key not in done]
        if todo and group.kind == "har":
          _run_har_group(group, todo, store, log, chunk_size)
        elif todo:
          {"eavesdrop": _run_eavesdrop_group,
           "whole_determination": _run_whole_determination_group}[group.kind](group, todo, store, log)
    except storage.Busy as e:
      if wait:
        queue.append((i, group, True))
      else:
        busy.append(group.label)
      log(f"  group {i + 1}/{len(pending)} [{group.label}]: being run by another process ({e.holder}); "
          + ("back to it later" if wait else "skipped"))
      continue
    written += len(todo)
    dt = time.perf_counter() - t0
    per_group.append((group.label, dt))
    left = len(queue)                    # groups skipped as held elsewhere took no time: averaged over those run
    eta = (time.perf_counter() - t_start) / len(per_group) * left
    how = f"{len(group.tasks)}/{len(group.tasks)} tasks in {dt:.1f} s" if todo else "finished by another process"
    log(f"  group {i + 1}/{len(pending)} [{group.label}]: {how}; ETA {eta:.0f} s")
  store.write_index(plan, store.done_keys(t.key for t in plan.tasks))
  wall = time.perf_counter() - t_start
  log(f"done: {counted(written, 'record')} in {wall:.1f} s; results in {store.root}/records (collect: python -m "
      f"jaxleak.study collect --study_dir={shlex.quote(store.root)})")
  if busy:
    more = ", ..." if len(busy) > 1 else ""
    log(f"{counted(len(busy), 'group')} still running in another process ({busy[0]}{more}); their records appear "
        "when it finishes (status shows them).")
  return RunSummary(len(pending), skipped, written, wall, per_group, busy)


def adopt_folder(plan: Plan, store: Store, *, write: bool = True,
                 progress: Optional[Callable[[str], None]] = print) -> None:
  """Makes the plan's study the folder's `study.json` (the one study `status` and `collect` read there) unless
  that would hide another study's tasks:

  * no study there, the same one, one whose tasks this plan includes (a grid grown), or one this jaxleak cannot
    read: written (with `write`; processes of a distributed run other than the writer only check);
  * one that includes every task of this plan (a sub-grid of it run with narrower --set): kept, and said;
  * any other: ValueError naming the fields that differ and the fix, before any work. Records are keyed by task,
    so nothing stored is lost either way.
  A folder without a study that holds files a study does not write (`--study_dir=.` in a project, whose
  index.json the study would overwrite) is refused too.
  """
  from jaxleak.runs.study import spec
  from jaxleak.runs.study.plan import make_plan
  log = progress or (lambda m: None)
  new = spec.to_json(plan.study)
  try:
    stored = store.read_study()
    stored_keys = {t.key for t in make_plan(spec.from_json(stored), check_inputs=False).tasks}
  except FileNotFoundError:
    stored = None
    store.check_no_foreign_files()
  except (ValueError, KeyError, TypeError) as e:                # an older version's study, or a damaged file
    log(f"note: {store.root}/study.json held a study this jaxleak cannot read ({e}); replaced by this one.")
    stored = None
  keys = {t.key for t in plan.tasks}
  if stored is not None and not keys >= stored_keys:
    if keys <= stored_keys:
      log(f"note: every task of this run is part of the study already in {store.root} ({stored['name']}); "
          "status and collect keep reading that one.")
      return
    diff = "; ".join(spec.differences(stored, new)) or "the same fields, other tasks"
    raise ValueError(f"{store.root} holds another study ({diff}), and one folder holds one study "
                     "(status and collect read it): run this one with another --study_dir, or the stored one with "
                     "its own settings.")
  if write:
    store.write_study(new)


def status(plan: Plan, store: Store) -> str:
  done = store.done_keys(t.key for t in plan.tasks)
  holders = {g.key: storage.claim_holder(store.claim_path(g.key)) for g in plan.groups}
  running = {key: holder for key, holder in holders.items() if holder is not None}
  return describe(plan, done, running) + f"\n{len(done)}/{len(plan.tasks)} tasks done"
