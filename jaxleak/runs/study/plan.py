"""A study expanded into tasks and grouped by shared work.

A task is one configuration whose results form one record; its key is the fingerprint of its full configuration
(so a changed setting is a new task, never a mix). A group is the tasks that share one gradient pass: the same
dataset, model, state, sampling, seed and local training, differing only in their LDP (sigma, tau), which the
engine sweeps in one vmapped computation, and in how many clients a securely aggregated round gathers (K: each
K's aggregates are made from the same updates). Each Eavesdrop federation is a group of its own.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
from typing import Any, Optional

from jaxleak import gpu_numerics, storage
from jaxleak.runs import fields
from jaxleak.runs.study.spec import _EAVESDROP_FIELDS, EavesdropGrid, HarGrid, Study, WholeDeterminationGrid

RECORD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Task:
  key: str                        # fingerprint of (kind, config, record version)
  kind: str                       # 'har', 'eavesdrop' or 'whole_determination'
  config: dict
  group: str


@dataclasses.dataclass(frozen=True)
class Group:
  key: str
  kind: str
  tasks: tuple[Task, ...]

  @property
  def label(self) -> str:
    c = self.tasks[0].config
    if self.kind == "har":
      local = "" if c["multi_step"] is None else " N:B:S={}:{}:{}".format(*c["multi_step"])
      alpha = "" if c.get("dirichlet_alpha") is None else f" Dir({c['dirichlet_alpha']:g})"
      alpha += ("" if c.get("head_bias", True) else " no-bias") + (
          f" CR={c['compression']:g}" if c.get("compression") else "") + (
          f" dropout={c['dropout']:g}" if c.get("dropout") is not None else "") + (
          f" loss={c['client_loss']}" if c.get("client_loss", "mean") != "mean" else "")
      ks = sorted({t.config.get("aggregate_clients", 1) for t in self.tasks})
      if ks != [1]:
        alpha += f" aggregated K={','.join(map(str, ks))}" + (
            " dealt every round" if dealing(self.tasks) != "once" else "")
      many = f" ({len(self.tasks)} LDP settings)" if len(ks) == 1 else f" ({len(self.tasks)} tasks)"
      return (f"{c['dataset']} {c['model']} {c['state']} {c['sampling']} seed={c['seed']} N={c['num_samples']}"
              + alpha + local + (many if len(self.tasks) > 1 else ""))
    shown = ("dataset", "model", "num_participants", "fraction", "local_epochs", "local_batch_size", "compression",
             "dropout")
    text = " ".join(f"{k}={c[k]}" for k in shown)
    text += "".join(f" {k}={v}" for k, v in c.items()
                    if k in _EAVESDROP_FIELDS and k not in shown and not _is_default(v, _EAVESDROP_FIELDS[k]))
    return text if self.kind == "eavesdrop" else f"Whole Determination {c['wd_trials']} trials: {text}"


def dealing(tasks) -> str:
  """How a HAR group's securely aggregated tasks deal the clients into rounds (its K = 1 tasks do not say)."""
  return next((t.config["cohort_dealing"] for t in tasks if "cohort_dealing" in t.config), "once")


def _is_default(value, default) -> bool:
  """Whether a task's field is its default (the spec's parsing placeholders "" and 0 stand for None)."""
  if value is None:
    return default in (None, "", 0)
  if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
    return list(value) == list(default)
  return value == default


@dataclasses.dataclass(frozen=True)
class Plan:
  study: Study
  groups: tuple[Group, ...]

  @property
  def tasks(self) -> tuple[Task, ...]:
    return tuple(t for g in self.groups for t in g.tasks)

  def shard(self, task_index: int, num_tasks: int) -> "Plan":
    """The groups of shard `task_index` of `num_tasks` (round-robin over the plan's groups, which are sorted by
    label, then key: deterministic, and every group in exactly one shard)."""
    if num_tasks <= 0 or not 0 <= task_index < num_tasks:
      raise ValueError(f"task_index must be in [0, num_tasks={num_tasks}), got {task_index}.")
    return dataclasses.replace(self, groups=self.groups[task_index::num_tasks])


def _key(kind: str, config: dict, numerics: Optional[dict] = None) -> str:
  """A task's (or group's) key: the fingerprint of its configuration, and of the numerics where they are not float32
  (`gpu_numerics.key_fields`; absent at float32, so such keys are those of earlier versions)."""
  return storage.fingerprint({"kind": kind, "config": config, "record_version": RECORD_VERSION, **(numerics or {})})


def _har_tasks(part: HarGrid) -> list[tuple[dict, dict]]:
  out = []
  for dataset, model, state, sampling, seed, alpha, k in itertools.product(
      part.datasets, part.models, part.states, part.samplings, part.seeds, part.dirichlet_alphas or (None,),
      part.aggregate_clients or (1,)):
    # a re-partition (an aggregation) is named only when set, so the keys of tasks without one are unchanged
    extra = {} if alpha is None else {"dirichlet_alpha": float(alpha)}
    # Clients per aggregated round: a task's field, not its group's, so the K of one setting share a gradient pass.
    agg = {"aggregate_clients": int(k)} if k > 1 else {}
    # Named only when set (other keys unchanged), by the K > 1 tasks and by the group: dealt every round, the
    # aggregates depend on every update of every client (`prepare.aggregated`), so they share no pass with cohorts
    # dealt once. A K = 1 task deals nothing: its key (and record) is a K = 1 task's of any grid.
    dealt = {"cohort_dealing": part.cohort_dealing} if part.cohort_dealing != "once" else {}
    if k > 1:
      agg.update(dealt)
    if not part.head_bias:
      extra["head_bias"] = False
    if part.compression:
      extra["compression"] = float(part.compression)
    if part.dropout is not None:
      extra["dropout"] = float(part.dropout)
    if part.client_loss != "mean":
      extra["client_loss"] = part.client_loss
    common = dict(dataset=dataset, model=model, state=state, sampling=sampling, seed=seed, **extra,
                  attacks=list(part.attacks), synthetic_scale=part.synthetic_scale,
                  data_dir=part.data_dir.format(dataset=dataset) if part.data_dir else None,
                  checkpoint_dir=(part.checkpoint_dir.format(dataset=dataset, model=model)
                                  if state == "trained" else None),
                  num_clients=part.num_clients)
    if part.multi_step:
      for n, b, s in part.multi_step:
        group = dict(common, num_samples=n, multi_step=[n, b, s], local_lr=part.local_lr,
                     equivalent=part.equivalent)
        out.append((dict(group, **dealt), dict(group, **agg, sigma=0.0, tau=0.0, clip_scope=None)))
    else:
      group = dict(common, num_samples=part.num_samples, multi_step=None, local_lr=None, equivalent=None)
      for sigma, tau in part.ldp:
        out.append((dict(group, **dealt), dict(group, **agg, sigma=float(sigma), tau=float(tau),
                                               clip_scope=part.clip_scope if tau > 0 else None)))
  return out


def _eavesdrop_tasks(part: EavesdropGrid) -> list[tuple[dict, dict]]:
  from jaxleak.runs.study.spec import _EAVESDROP_FIELDS, WD_FIELDS
  base = dict(part.base)
  names = [k for k, _ in part.axes]
  out = []
  for values in itertools.product(*[v for _, v in part.axes]):
    cfg = {k: v for k, v in _EAVESDROP_FIELDS.items()}
    cfg.update(dropout=None, data_dir=None, aux_samples_per_label=None)
    if isinstance(part, WholeDeterminationGrid):               # (rounds tasks keep their keys: no wd_ fields)
      cfg.update(WD_FIELDS)
    cfg.update(base)
    cfg.update(zip(names, values))
    cfg["replicates"] = part.replicates
    if cfg["client_loss"] == "mean":                           # (keys of studies from before the field unchanged)
      del cfg["client_loss"]
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    out.append((cfg, cfg))
  return out


def counted(n: int, noun: str) -> str:
  """'1 group', '3 groups' (progress lines a person reads)."""
  return f"{n:,} {noun}{'' if n == 1 else 's'}"


def make_plan(study: Study, *, check_inputs: bool = True, numerics: Optional[dict] = None) -> Plan:
  """Expands `study` into groups of tasks; validates every part and (check_inputs) that trained-model
  checkpoints exist, before any work. `numerics`: what the keys hold about the numerics (default: this process's,
  `gpu_numerics.key_fields()`; a Ray worker is given its driver's)."""
  groups: dict[str, list[Task]] = {}
  kinds: dict[str, str] = {}
  seen = set()
  numerics = gpu_numerics.key_fields() if numerics is None else numerics
  for part in study.parts:
    if isinstance(part, HarGrid):
      part.validate()
      pairs, kind = _har_tasks(part), "har"
    else:
      for name, values in part.axes:
        if len({repr(v) for v in values}) != len(values):
          raise ValueError(f"{name}: a value is listed more than once in {list(values)}; list each once.")
      pairs = _eavesdrop_tasks(part)
      kind = "whole_determination" if isinstance(part, WholeDeterminationGrid) else "eavesdrop"
      _validate_eavesdrop(pairs)
    for group_cfg, task_cfg in pairs:
      key = _key(kind, task_cfg, numerics)
      if key in seen:                                          # parts may overlap (e.g. LDP (0, 0) and sampling)
        continue
      seen.add(key)
      gkey = _key(kind + "-group", group_cfg, numerics)
      groups.setdefault(gkey, []).append(Task(key, kind, task_cfg, gkey))
      kinds[gkey] = kind
  if not groups:
    raise ValueError(f"study {study.name!r} has no tasks.")
  # Ordered by what a person reads (dataset, model, state, sampling, ...), the key breaking ties: the dry run and
  # the progress lines list related groups together, and shards get a deterministic round-robin deal of them.
  plan = Plan(study, tuple(sorted((Group(k, kinds[k], tuple(groups[k])) for k in groups),
                                  key=lambda g: (g.label, g.key))))
  if check_inputs:
    loaded: dict = {}                                          # each dataset read once for all checks
    check_client_sizes(plan, loaded)
    check_eavesdrop_data(plan, loaded)
    check_checkpoints(plan, loaded)
  return plan


def loaded_dataset(loaded: dict, dataset: str, data_dir, scale: float, seed: int):
  """D.load, memoised in `loaded` (a dict the caller owns, so the datasets are freed with it)."""
  from jaxleak import data as D
  key = (dataset, data_dir, scale, seed)
  if key not in loaded:
    loaded[key] = D.load(dataset, data_dir=data_dir, scale=scale, seed=seed)
  return loaded[key]


def loaded_clients(loaded: dict, *data_key):
  """D.make_clients of every subject of the dataset, memoised in `loaded` beside it."""
  from jaxleak import data as D
  if ("clients",) + data_key not in loaded:
    loaded[("clients",) + data_key] = D.make_clients(loaded_dataset(loaded, *data_key))
  return loaded[("clients",) + data_key]


def loaded_pools(loaded: dict, cfg):
  """federation.load_pools(cfg) (the participants' and the attacker's pools), memoised in `loaded`."""
  from jaxleak.runs.eavesdrop import federation
  key = ("pools", cfg.dataset, cfg.data_dir, cfg.synthetic_scale, cfg.seed, cfg.aux_fraction)
  if key not in loaded:
    loaded[key] = federation.load_pools(cfg)
  return loaded[key]


def _validate_eavesdrop(pairs) -> None:
  from jaxleak.runs.eavesdrop.config import NOT_READ_BY_WHOLE_DETERMINATION, WHOLE_DETERMINATION_READS
  from jaxleak.runs.study.engine import eavesdrop_config, whole_determination_config
  from jaxleak.runs.study.spec import _EAVESDROP_FIELDS
  for _, cfg in pairs:
    eavesdrop_config(cfg)                                      # raises naming the field
    if "wd_trials" in cfg:
      whole_determination_config(cfg)
      defaults = {**_EAVESDROP_FIELDS, "replicates": 1}
      unread = [k for k in NOT_READ_BY_WHOLE_DETERMINATION + ("replicates",)
                if cfg[k] != (list(defaults[k]) if isinstance(defaults[k], tuple) else defaults[k])]
      if unread:
        raise ValueError(f"{', '.join(f'{k}={cfg[k]}' for k in unread)}: not read by Whole Determination "
                         f"({WHOLE_DETERMINATION_READS}): drop it.")
      continue
    fields.seed("seed", cfg["seed"], span=cfg["replicates"])   # replicate r plays seed + r


def check_checkpoints(plan: Plan, loaded: dict) -> None:
  """Raises FileNotFoundError naming the training command for a missing trained-model checkpoint, ValueError for
  one trained on other data or another model (`loaded`: the datasets memo of `check_client_sizes`)."""
  from jaxleak.runs import fold_training
  missing = sorted({(t.config["checkpoint_dir"], t.config["dataset"], t.config["model"],
                     t.config["synthetic_scale"], t.config["seed"], t.config["data_dir"] or "") for t in plan.tasks
                    if t.kind == "har" and t.config["checkpoint_dir"]
                    and not os.path.isfile(fold_training.checkpoint_path(t.config["checkpoint_dir"]))})
  if missing:
    d, ds, m, scale, seed, data_dir = missing[0]
    same_data = (f" --synthetic_scale={scale:g}" if ds.startswith("synthetic_") and scale != 1.0 else "") + \
        (f" --data_dir={shlex.quote(data_dir)}" if data_dir else "") + (f" --seed={seed}" if seed != 1 else "")
    raise FileNotFoundError(                     # quoted: a command to paste, whatever the folders' names hold
        f"{len(missing)} trained-model checkpoint(s) missing, e.g. {d}; train them first: python "
        f"experiments/train_models.py --dataset={ds} --model={m}{same_data} --checkpoint_dir={shlex.quote(d)} "
        "(or --set states=untrained).")
  _check_checkpoint_data(plan, loaded)


def check_client_sizes(plan: Plan, loaded: Optional[dict] = None) -> None:
  """Every HAR group's N (num_samples, or multi_step's N) fits every client it attacks, checked before any work
  (each dataset loaded once, kept in `loaded`); otherwise a ValueError naming the group, the clients and the fields
  to change."""
  from jaxleak import data as D
  from jaxleak.runs.leakage.prepare import attacked_clients, select_clients
  from jaxleak.runs.study.engine import leakage_config
  loaded = {} if loaded is None else loaded
  clients, seen = {}, set()
  for g in plan.groups:
    if g.kind != "har":
      continue
    cfg = leakage_config(max(g.tasks, key=lambda t: t.config.get("aggregate_clients", 1)).config)  # largest K
    data_key = (cfg.dataset, cfg.data_dir, cfg.synthetic_scale, cfg.seed)
    clients_key = data_key + (cfg.clients, cfg.num_clients, cfg.dirichlet_alpha, cfg.dirichlet_clients)
    sized = (cfg.num_samples, cfg.sampling == "balanced")       # the balanced pool has sizes of its own
    if clients_key + sized + (cfg.aggregate_clients,) in seen:
      continue
    seen.add(clients_key + sized + (cfg.aggregate_clients,))
    if cfg.dirichlet_alpha is not None:      # re-dealt clients too small for N (or its balanced pool) are left out
      clients_key += sized
    if clients_key not in clients:
      if cfg.dirichlet_alpha is not None:                  # Dirichlet clients re-deal the windows: deal them
        clients[clients_key] = (attacked_clients(loaded_dataset(loaded, *data_key), cfg), None)
      else:                                                # subjects: the memoised clients, these subjects
        clients[clients_key] = (loaded_clients(loaded, *data_key),
                                select_clients(loaded_dataset(loaded, *data_key), cfg))
    attacked, subjects = clients[clients_key]
    count = len(subjects) if subjects is not None else attacked.num_clients
    if cfg.aggregate_clients > count:
      raise ValueError(f"{cfg.dataset} {cfg.model} {cfg.sampling}: aggregate_clients={cfg.aggregate_clients} but the "
                       f"group attacks {count} clients; no round can gather {cfg.aggregate_clients} (--set "
                       f"aggregate_clients=... at most {count}).")
    where = "multi_step's N" if cfg.local is not None else "num_samples"
    try:
      D.check_client_sizes(attacked, cfg.num_samples, subjects=subjects, strategy=cfg.sampling,
                           fix=f"lower {where} (--set), or attack fewer clients (--set num_clients=...)")
    except ValueError as e:
      raise ValueError(f"{cfg.dataset} {cfg.model} {cfg.sampling}: {e}") from None


def check_eavesdrop_data(plan: Plan, loaded: Optional[dict] = None) -> None:
  """Every Eavesdrop and Whole Determination group's data can be set up (the dataset loads, its labels fit
  main_labels, the participants' and the attacker's examples can be drawn, every Whole Determination trial's
  allocation too), checked before any work (each pool loaded once, kept in `loaded`); otherwise a ValueError naming
  the group."""
  from jaxleak.runs.eavesdrop import federation
  from jaxleak.runs.eavesdrop.whole_determination import draw_trials
  from jaxleak.runs.study.engine import eavesdrop_config, whole_determination_config
  loaded = {} if loaded is None else loaded
  checked: set = set()                             # allocations drawn once (the pools stay alive in `loaded`)
  for g in plan.groups:
    if g.kind == "har":
      continue
    cfg = eavesdrop_config(g.tasks[0].config)
    try:
      pools = loaded_pools(loaded, cfg)
      federation.check_data(cfg, pools, allocation_drawn_later=g.kind == "whole_determination", checked=checked)
      if g.kind == "whole_determination":
        draw_trials(cfg, whole_determination_config(g.tasks[0].config), pools[0])
    except ValueError as e:
      raise ValueError(f"{g.label}: {e}") from None


def _check_checkpoint_data(plan: Plan, loaded: dict) -> None:
  """Every trained-model checkpoint a study reads was trained on the windows and labels its tasks attack
  (`fold_training.check_training_data`), holds finite weights and a fold for every attacked subject; checked
  before any work, each dataset loaded once."""
  from jaxleak import models, storage
  from jaxleak.runs import fold_training
  from jaxleak.runs.leakage.prepare import select_clients
  from jaxleak.runs.study.engine import leakage_config
  seen, datasets = set(), {}
  for t in plan.tasks:
    c = t.config
    if t.kind != "har" or not c["checkpoint_dir"]:
      continue
    data_key = (c["dataset"], c["data_dir"], c["synthetic_scale"], c["seed"])
    model_key = (c["model"], c.get("head_bias", True), c.get("dropout"), c.get("num_clients"))
    if (c["checkpoint_dir"],) + data_key + model_key in seen:
      continue
    seen.add((c["checkpoint_dir"],) + data_key + model_key)
    if data_key not in datasets:
      datasets[data_key] = loaded_clients(loaded, *data_key)
    path = fold_training.checkpoint_path(c["checkpoint_dir"])
    stored = storage.read_checkpoint_header(path).get("config", {})
    if stored.get("dataset") and stored["dataset"] != c["dataset"]:
      raise ValueError(f"{path} holds models trained on {stored['dataset']!r}, but the study's tasks read it for "
                       f"{c['dataset']!r}; fix the part's checkpoint_dir (a template with {{dataset}} and {{model}}).")
    model = models.build(c["model"], datasets[data_key].num_classes, head_bias=c.get("head_bias", True),
                         **({} if c.get("dropout") is None else {"dropout": c["dropout"]}))
    if stored.get("model") and stored["model"] != repr(model):
      raise ValueError(f"{path} holds models of another architecture or head than the study's {c['model']} "
                       f"(head_bias={c.get('head_bias', True)}, dropout={c.get('dropout')}): trained "
                       f"{fold_training.one_line(stored['model'])}; train it with experiments/train_models.py for "
                       "this model, or fix the part's checkpoint_dir.")
    fold_training.check_training_data(path, stored, datasets[data_key])
    # The weights themselves: the file verifies, they are finite, and there is a fold for every attacked subject.
    clients = datasets[data_key]
    _, held = fold_training.load_fold_models(path, model, clients.windows.shape[1], clients.windows.shape[2])
    missing = [s for s in select_clients(loaded_dataset(loaded, *data_key), leakage_config(c)) if s not in held]
    if missing:
      raise ValueError(f"{path} has no trained model holding out subjects {missing}; train every fold with "
                       f"experiments/train_models.py, or attack fewer clients (--set num_clients=...).")


def describe(plan: Plan, done: Optional[set] = None, running: Optional[dict] = None) -> str:
  """The plan as text: one line per group (tasks, done; 'running now' and who runs it for the group keys in
  `running`, a dict key -> holder) and totals."""
  done, running = done or set(), running or {}
  lines = [f"study {plan.study.name}: {counted(len(plan.tasks), 'task')} in {counted(len(plan.groups), 'group')}"]
  for i, g in enumerate(plan.groups):
    n_done = sum(t.key in done for t in g.tasks)
    now = f" (running now: {running[g.key]})" if g.key in running else ""
    lines.append(f"  [{i + 1:>3}/{len(plan.groups)}] {g.label}: {n_done}/{len(g.tasks)} done{now}")
  return "\n".join(lines)


def task_row(task: Task) -> dict[str, Any]:
  """The task's settings as flat columns for tables."""
  c = task.config
  if task.kind == "har":
    n, b, s = c["multi_step"] or (c["num_samples"], None, None)
    return {"dataset": c["dataset"], "model": c["model"], "state": c["state"], "sampling": c["sampling"],
            "seed": c["seed"], "num_samples": n, "local_batch_size": b, "local_steps": s, "sigma": c["sigma"],
            "tau": c["tau"], "dirichlet_alpha": c.get("dirichlet_alpha"), "head_bias": c.get("head_bias", True),
            "compression": c.get("compression", 0.0), "dropout": c.get("dropout"),
            "client_loss": c.get("client_loss", "mean"), "aggregate_clients": c.get("aggregate_clients", 1),
            "cohort_dealing": c.get("cohort_dealing", "once")}
  row = {k: c[k] for k in ("dataset", "model", "num_participants", "fraction", "local_epochs", "local_batch_size",
                           "local_lr", "compression", "dropout", "rounds", "seed", "replicates")
         + (("wd_trials", "wd_total_per_label", "wd_factors", "wd_stages", "wd_window") if "wd_trials" in c else ())}
  row.update(partition=c.get("partition", "main_labels"),
             dirichlet_alpha=c.get("dirichlet_alpha") if c.get("partition") == "dirichlet" else None,
             attacker_participates=c.get("attacker_participates", False), ldp_noise=c.get("ldp_noise", 0.0),
             ldp_clip=c.get("ldp_clip", 0.0), client_loss=c.get("client_loss", "mean"))
  return row
