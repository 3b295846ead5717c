"""Results in one shape for reports, read from a study folder (its records) or from result folders of single runs
(experiments/*.py), or from a folder holding several of either.

  HarResult            one HAR leakage setting: its settings and, per attack, the summary (mean, std over clients),
                       per-client metrics and (when recorded) the sorted-pairing confusion matrix summed over updates
  EavesdropResult      one Eavesdrop federation: settings, overall and per-label success rates
  WholeDetermination   one Whole Determination task: settings, per-stage success rates, trials (with their ratio
                       vectors when recorded)
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import numpy as np

from jaxleak import storage
from jaxleak.attacks.disaggregation import rounds_identifiable
from jaxleak.runs.eavesdrop.report import SUMMARY_KEYS as EV_SUMMARY_KEYS

METRICS = ("lnacc", "leacc", "class_acc", "symmetric_existence")
HAR_SETTINGS = ("dataset", "model", "state", "sampling", "num_samples", "local_batch_size", "local_steps", "sigma",
                "tau", "clip_scope", "ldp_releases", "seed", "head_bias", "compression", "dropout", "client_loss",
                "aggregate_clients", "cohort_dealing")
EAVESDROP_SETTINGS = ("dataset", "model", "num_participants", "fraction", "local_epochs", "local_batch_size",
                      "local_lr", "compression", "dropout", "rounds", "seed", "replicates", "partition",
                      "dirichlet_alpha", "attacker_participates", "ldp_noise", "ldp_clip", "client_loss")


#: The HAR paper's attack order, then the reference variants and baselines.
ATTACK_ORDER = ("llg", "llg_har", "llg_star", "llg_star_har", "ebi", "llbg", "llbg_original", "ilrg", "ilrg_uniform",
                "rlu", "bias_corrected", "gcd", "random", "idlg", "analytic", "yin")


def attack_order(names) -> list:
  """The HAR paper's order (LLG, LLG*, EBI, LLBG, iLRG), then any others by name: records store attacks sorted
  by name, runs in the order asked; figures and tables use this one order."""
  return sorted(names, key=lambda n: (ATTACK_ORDER.index(n) if n in ATTACK_ORDER else len(ATTACK_ORDER), n))


@dataclasses.dataclass
class HarResult:
  source: str                    # the record key or the run folder
  settings: dict                 # HAR_SETTINGS; sigma 0 = no noise, tau 0 = no clipping; ldp_releases: noisy
                                 # releases per update (1, or S for per-step LDP of a multi-step update)
  class_names: list
  attacks: dict                  # name -> {"summary": {metric: (mean, std)}, "clients": {metric: [...]},
                                 #          "subjects": [...], "confusion": [[int]] or None,
                                 #          "per_client": {metric: (mean, std)}: of each client's own update, or
                                 #          under secure aggregation of 1/K of its round (summary is per cohort),
                                 #          "profiles": {metric: (mean, std)} or None: with clients dealt every
                                 #          round, of each client's distribution solved from all rounds}
  identifiable: Optional[bool] = None   # clients dealt every round: whether the rounds determine each client's
                                        # profile (participation of full rank; `attacks.participation_rank`)

  @property
  def multi_step(self) -> bool:
    return self.settings["local_steps"] is not None

  @property
  def has_ldp(self) -> bool:
    return bool(self.settings["sigma"]) or bool(self.settings["tau"])


@dataclasses.dataclass
class EavesdropResult:
  source: str
  settings: dict                 # EAVESDROP_SETTINGS
  overall: dict                  # eavesdrop.report.SUMMARY_KEYS (qi_count_* NaN in records older than them)
  per_label: dict                # the same keys -> [C] fractions
  alpha_pct: float
  attacker: Optional[dict] = None  # the attacker as a participant: eavesdrop.report.attacker_summary (rounds it
                                   # was selected; both attacks with and without its own upload removed there)


@dataclasses.dataclass
class WholeDetermination:
  source: str
  settings: dict                 # EAVESDROP_SETTINGS + wd_factors, wd_total_per_label, wd_window
  stages: list                   # per stage: stage, accuracy_threshold, trials, reached, success, success_known_k,
                                 # success_two_level, mean_round
  trials: list                   # per trial and stage: trial, stage, round, groups, predicted, success, ratios|None


@dataclasses.dataclass
class Results:
  origin: str
  kind: str                      # "study" or "runs"
  har: list
  eavesdrop: list
  whole: list
  configs: dict                  # source -> the configuration that produced it (shown in the report)
  missing: int = 0               # study tasks without a record yet
  damaged: list = dataclasses.field(default_factory=list)   # record files that failed verification (paths)

  @property
  def empty(self) -> bool:
    return not (self.har or self.eavesdrop or self.whole)


def load(path: str) -> Results:
  """Every result under `path`: a study folder (study.json + records/), a single run's folder (manifest.json),
  or a folder holding such folders (or links to them) at any depth, each read once. Raises FileNotFoundError /
  StorageError / ValueError naming the problem when there is nothing to report or a file is damaged."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such folder; give a study folder (--study_dir of python -m jaxleak.study) "
                            "or a results folder written by experiments/*.py.")
  if not os.path.isdir(path):
    raise ValueError(f"{path} is a file; give the folder that holds it (a study or a run's results folder).")
  if _is_study(path):
    return _load_study(path)
  out = Results(origin=path, kind="runs", har=[], eavesdrop=[], whole=[], configs={})
  seen = set()                                   # folders linked in (a folder of links to studies) are read once
  for root, dirs, files in os.walk(path, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:                             # a second link to one folder, or a link back up (a cycle)
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "checkpoints")
    rel = os.path.relpath(root, path)
    if root != path and _is_study(root):
      sub = _load_study(root)
      for name in ("har", "eavesdrop", "whole"):
        getattr(out, name).extend(getattr(sub, name))
      out.configs.update(sub.configs)
      out.missing += sub.missing
      out.damaged += sub.damaged
      dirs[:] = []
    elif "manifest.json" in files:
      _load_run(root, "." if rel == "." else rel, out)
      dirs[:] = []
  if out.empty:
    raise FileNotFoundError(f"{path} holds no results: no study.json and no manifest.json of a run below it. "
                            "Run a study (python -m jaxleak.study run ...) or an experiment first.")
  return out


# --- studies ----------------------------------------------------------------------------------------------------

def _is_study(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, "study.json")) or os.path.isdir(os.path.join(folder, "records"))


def _load_study(root: str) -> Results:
  """A study's verified records (in the plan's order when study.json is there). A planned task without a record
  counts as missing; a record file that fails verification (damaged, or not written by jaxleak) is skipped and
  listed in `damaged` (the study recomputes a planned one when run again)."""
  from jaxleak.runs.study import Store
  from jaxleak.runs.study.plan import Task, task_row
  store = Store(root, read_only=True)
  out = Results(origin=root, kind="study", har=[], eavesdrop=[], whole=[], configs={})
  folder = os.path.join(root, "records")
  # (A writer killed mid-write leaves a hidden '.tmp-...-<key>.json' beside the records: not a record.)
  stored = (sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json") and not f.startswith("."))
            if os.path.isdir(folder) else [])
  keys = stored
  if os.path.isfile(os.path.join(root, "study.json")):
    out.configs[root] = store.read_study()
    plan_keys = [t.key for t in store.read_plan(out.configs[root]).tasks]
    keys = plan_keys + sorted(set(stored) - set(plan_keys))          # records of earlier configs come last
  for key in keys:
    try:
      rec = store.read(key)
    except FileNotFoundError:
      out.missing += 1                            # a planned task not run yet
      continue
    except storage.StorageError:
      out.damaged.append(os.path.join(folder, key + ".json"))
      continue
    task = Task(key, rec["kind"], rec["config"], rec.get("group", ""))
    res, row, c = rec["results"], task_row(task), task.config
    if task.kind == "har":
      settings = {k: row[k] for k in ("dataset", "model", "state", "sampling", "num_samples", "local_batch_size",
                                       "local_steps", "sigma", "tau", "seed")}
      settings.update(clip_scope=c.get("clip_scope") or "all", ldp_releases=1, head_bias=c.get("head_bias", True),
                      compression=float(c.get("compression", 0.0)), dropout=c.get("dropout"),
                      client_loss=c.get("client_loss", "mean"),
                      aggregate_clients=int(c.get("aggregate_clients", 1)),
                      cohort_dealing=c.get("cohort_dealing", "once"))
      out.har.append(HarResult(task.key, settings, res.get("class_names") or [], {
          name: {"summary": {m: tuple(a["summary"][m]) for m in METRICS}, "clients": a["clients"],
                 "subjects": res["subjects"], "confusion": a.get("confusion"),
                 "per_client": {m: tuple((a.get("members") or a)["summary"][m]) for m in METRICS},
                 "profiles": {m: tuple(a["profiles"]["summary"][m]) for m in METRICS} if "profiles" in a else None}
          for name, a in ((n, res["attacks"][n]) for n in attack_order(res["attacks"]))},
          _identifiable(res.get("cohorts"), settings["cohort_dealing"])))
    elif task.kind == "whole_determination":
      settings = {**{k: row[k] for k in EAVESDROP_SETTINGS}, "wd_factors": c["wd_factors"],
                  "wd_total_per_label": c["wd_total_per_label"], "wd_window": c["wd_window"],
                  "wd_method": c.get("wd_method", "ward")}
      out.whole.append(WholeDetermination(task.key, settings, res["stages"], res["trials"]))
    else:
      out.eavesdrop.append(EavesdropResult(task.key, {k: row[k] for k in EAVESDROP_SETTINGS}, res["overall"],
                                           res["per_label"], res["alpha_pct"], res.get("attacker")))
  if not out.configs:
    out.configs[root] = {"records": len(keys), "note": "no study.json: the settings are each record's config"}
  return out


# --- single runs ------------------------------------------------------------------------------------------------

def _inf_to_zero(tau) -> float:
  tau = float(tau) if tau is not None else math.inf
  return 0.0 if math.isinf(tau) else tau


def _load_run(folder: str, name: str, out: Results) -> None:
  storage.verify_folder(folder)                      # raises naming a file changed since the run wrote it
  manifest = storage.read_json(os.path.join(folder, "manifest.json"), "run manifest")
  experiment = manifest.get("experiment") if isinstance(manifest, dict) else None
  readers = {"single_step_leakage": _har_run, "multi_step_leakage": _har_run, "eavesdrop_rounds": _eavesdrop_run,
             "eavesdrop_whole_determination": _whole_run}
  if experiment not in readers:
    raise storage.StorageError(f"{folder}/manifest.json: unknown experiment {experiment!r}; a report reads "
                               f"{', '.join(readers)} runs and studies.")
  out.configs[name] = manifest.get("config", {})
  readers[experiment](folder, name, manifest, out)


def _har_run(folder, name, manifest, out: Results) -> None:
  cfg = manifest["config"]
  local, ldp = cfg.get("local"), cfg.get("ldp") or {}
  per_step = local is not None and local.get("ldp") and (local["ldp"].get("noise_std") or
                                                         not math.isinf(float(local["ldp"].get("clip_norm", math.inf))))
  used = local["ldp"] if per_step else ldp
  settings = {"dataset": manifest.get("dataset", cfg["dataset"]), "model": cfg["model"],
              "state": "trained" if cfg.get("checkpoint_dir") else "untrained", "sampling": cfg["sampling"],
              "num_samples": cfg["num_samples"], "local_batch_size": local["batch_size"] if local else None,
              "local_steps": local["steps"] if local else None, "sigma": float(used.get("noise_std", 0.0)),
              "tau": _inf_to_zero(used.get("clip_norm")), "clip_scope": used.get("clip_scope", "all"),
              "ldp_releases": local["steps"] if per_step else 1, "seed": cfg.get("seed"),
              "head_bias": cfg.get("head_bias", True), "compression": float(cfg.get("compression", 0.0)),
              "dropout": cfg.get("dropout"), "client_loss": cfg.get("client_loss", "mean"),
              "aggregate_clients": int(cfg.get("aggregate_clients", 1)),
              "cohort_dealing": cfg.get("cohort_dealing", "once")}
  clients = storage.read_csv(os.path.join(folder, "clients.csv"), ("subject", "attack") + METRICS, "clients table")
  batches_path = os.path.join(folder, "batches.csv")
  class_names = list(manifest.get("class_names") or [])
  confusion = _confusion_from_batches(batches_path, len(class_names)) if os.path.isfile(batches_path) else {}
  attacks = {}
  for row in clients:
    a = attacks.setdefault(row["attack"], {"clients": {m: [] for m in METRICS}, "subjects": []})
    a["subjects"].append(int(row["subject"]))
    for m in METRICS:
      a["clients"][m].append(_float(row[m], folder))
  attacks = {n: attacks[n] for n in attack_order(attacks)}
  # secure aggregation: what a round tells of a client (members), and what all rounds do when dealt every round
  per_client = {}
  for file, what in (("members.csv", "members table"), ("profiles.csv", "profiles table")):
    path = os.path.join(folder, file)
    per_client[file] = storage.read_csv(path, ("subject", "attack") + METRICS, what) if os.path.isfile(path) else []
  for attack, a in attacks.items():
    a["summary"] = {m: _mean_std(a["clients"][m]) for m in METRICS}
    a["confusion"] = confusion.get(attack)
    mine, solved = ([row for row in per_client[f] if row["attack"] == attack] for f in ("members.csv", "profiles.csv"))
    a["per_client"] = ({m: _mean_std([_float(row[m], folder) for row in mine]) for m in METRICS} if mine
                       else a["summary"])
    a["profiles"] = {m: _mean_std([_float(row[m], folder) for row in solved]) for m in METRICS} if solved else None
  out.har.append(HarResult(name, settings, class_names, attacks,
                           _identifiable(manifest.get("cohorts"), settings["cohort_dealing"])))


def _identifiable(cohorts, dealing: str) -> Optional[bool]:
  """Clients dealt every round: whether the rounds (each round's members, `cohorts`) determine every client's
  solved profile; None otherwise (or without the rounds' members)."""
  return rounds_identifiable(cohorts) if dealing == "every_round" and cohorts else None


def _float(text: str, folder: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise storage.StorageError(f"{folder}: {text!r} is not a number; rerun the command that wrote it.") from None


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)


def _confusion_from_batches(path: str, num_classes: int) -> dict:
  from jaxleak import metrics as M
  rows = storage.read_csv(path, ("attack",), "batches table")
  if not rows:
    return {}
  c = num_classes or sum(k.startswith("true_") for k in rows[0])
  true_cols, pred_cols = [f"true_{i}" for i in range(c)], [f"pred_{i}" for i in range(c)]
  if any(k not in rows[0] for k in true_cols + pred_cols):
    raise storage.StorageError(f"{path}: malformed batches table (expected true_0..true_{c - 1} and pred_*); "
                               "rerun the command that wrote it.")
  by_attack: dict = {}
  for r in rows:
    by_attack.setdefault(r["attack"], []).append([int(r[k]) for k in true_cols + pred_cols])
  return {a: np.asarray(M.sorted_pairing_confusion(np.asarray(v)[:, :c], np.asarray(v)[:, c:])).sum(0).tolist()
          for a, v in by_attack.items()}


def _eavesdrop_settings(cfg: dict) -> dict:
  local = cfg.get("local") or {}
  return {"dataset": cfg.get("dataset"), "model": cfg.get("model"), "num_participants": cfg.get("num_participants"),
          "fraction": cfg.get("fraction"), "local_epochs": local.get("epochs"),
          "local_batch_size": local.get("batch_size"), "local_lr": local.get("lr"),
          "compression": cfg.get("compression"), "dropout": cfg.get("dropout"), "rounds": cfg.get("rounds"),
          "seed": cfg.get("seed"), "replicates": cfg.get("replicates", 1),
          "partition": cfg.get("partition", "main_labels"),
          "dirichlet_alpha": cfg.get("dirichlet_alpha") if cfg.get("partition") == "dirichlet" else None,
          "attacker_participates": cfg.get("attacker_participates", False),
          "ldp_noise": cfg.get("ldp_noise", 0.0), "ldp_clip": cfg.get("ldp_clip", 0.0),
          "client_loss": local.get("loss", "mean")}


def _eavesdrop_run(folder, name, manifest, out: Results) -> None:
  required = ("sniff", "sniff_absent", "prevalence", "qi_alpha1", "qi_alpha_pct", "qi_abort", "qi_abs_error")
  rows = storage.read_csv(os.path.join(folder, "summary.csv"), ("label",) + required, "Eavesdrop summary")
  overall = [r for r in rows if r["label"] == "all"]
  labels = [r for r in rows if r["label"] != "all"]
  if len(overall) != 1:
    raise storage.StorageError(f"{folder}/summary.csv: no 'all' row; rerun the command that wrote it.")
  # The count columns came later: records written before them read as NaN ("not measured"), never as 0.
  value = lambda r, k: _float(r[k], folder) if k in r else math.nan
  out.eavesdrop.append(EavesdropResult(
      name, _eavesdrop_settings(manifest["config"]), {k: value(overall[0], k) for k in EV_SUMMARY_KEYS},
      {k: [value(r, k) for r in labels] for k in EV_SUMMARY_KEYS}, float(manifest.get("alpha_pct", math.nan)),
      manifest.get("attacker")))


def _whole_run(folder, name, manifest, out: Results) -> None:
  wd = manifest.get("whole_determination", {})
  settings = {**_eavesdrop_settings(manifest["config"]), "wd_factors": wd.get("factors"),
              "wd_total_per_label": wd.get("total_per_label"), "wd_window": wd.get("window")}
  stages = storage.read_csv(os.path.join(folder, "summary.csv"), ("stage", "success"), "Whole Determination summary")
  trials = storage.read_csv(os.path.join(folder, "trials.csv"), ("trial", "stage", "round", "groups", "predicted"),
                            "Whole Determination trials")
  num = ("accuracy_threshold", "success", "success_known_k", "success_two_level", "mean_round")
  stages = [{k: (_float(v, folder) if k in num else (int(v) if k in ("trials", "reached") else v))
             for k, v in r.items()} for r in stages]
  trials = [{"trial": int(t["trial"]), "stage": float(t["stage"]), "round": int(t["round"]),
             "groups": [int(x) for x in t["groups"].split()], "predicted": [int(x) for x in t["predicted"].split()],
             "success": bool(int(t["success"])), "ratios": None} for t in trials]
  out.whole.append(WholeDetermination(name, settings, stages, trials))


