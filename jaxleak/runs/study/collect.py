"""One tidy table from a study's records.

  results.csv    HAR: one row per task x attack x client (subject): settings, lnacc, leacc, class_acc,
                 symmetric_existence, num_batches
  summary.csv    HAR: one row per task x attack: mean and std over clients of each metric, and the setting's
                 epsilon (one release, exact, delta = 1e-5; `jaxleak.accounting`; `python -m jaxleak.report`
                 gives it at any delta and number of rounds), and
                 per_client_{lnacc,class_acc}_{mean,std}: what the server learns of each client (under secure
                 aggregation, aggregate_clients > 1, results.csv's rows are cohorts, these are per client: 1/K of
                 its round), and solved_per_client_{lnacc,class_acc}_{mean,std}: with the clients dealt anew every
                 round, each client's label distribution solved from all rounds (profiles.csv; empty otherwise),
                 and solved_identifiable: whether the rounds determine it (False: the minimum-norm even split)
  members.csv    HAR under secure aggregation: one row per task x attack x client: its metrics as 1/K of its round
  profiles.csv   HAR with the clients dealt anew every round (cohort_dealing): one row per task x attack x client:
                 its label distribution solved from all rounds against its own (results.csv's rows are then rounds)
  eavesdrop.csv  Eavesdrop: one row per task: settings and the overall success rates, and with the attacker as a
                 participant attacker_*: over the rounds it was selected, both attacks with and without its own
                 upload removed (empty otherwise)
  whole_determination.csv  one row per Whole Determination task x stage: settings and success rates
Written together as one folder commit (<study_dir>/tables/, or the folder `collect` is given).
"""
from __future__ import annotations

import functools
import math
import os

from jaxleak import storage
from jaxleak.attacks.disaggregation import rounds_identifiable
from jaxleak.runs.study.plan import Plan, task_row
from jaxleak.runs.study.store import Store

METRICS = ("lnacc", "leacc", "class_acc", "symmetric_existence")
#: summary.csv's per_client_* columns: over each client's own update, or under secure aggregation over what its
#: round tells of it (1/K of the round's counts; members.csv has them per client).
MEMBER_METRICS = ("lnacc", "class_acc")
HAR_COLUMNS = ("dataset", "model", "state", "sampling", "seed", "num_samples", "local_batch_size", "local_steps",
               "sigma", "tau", "dirichlet_alpha", "head_bias", "compression", "dropout", "client_loss",
               "aggregate_clients", "cohort_dealing")
EAVESDROP_COLUMNS = ("dataset", "model", "num_participants", "fraction", "local_epochs", "local_batch_size",
                     "local_lr", "compression", "dropout", "rounds", "seed", "replicates", "partition",
                     "dirichlet_alpha", "attacker_participates", "ldp_noise", "ldp_clip",
                     "client_loss")
#: eavesdrop.csv's columns of the attacker as a participant (empty where it is not one): over the rounds it was
#: selected, both attacks with its own upload removed and without (`eavesdrop.report.attacker_summary`).
ATTACKER_KEYS = ("rounds_selected", "sniff_removed", "sniff_not_removed", "qi_alpha1_removed", "qi_alpha1_not_removed")
WD_COLUMNS = ("wd_trials", "wd_total_per_label", "wd_factors", "wd_stages", "wd_window")
WD_STAGE_COLUMNS = ("stage", "accuracy_threshold", "trials", "reached", "success", "success_known_k",
                    "success_two_level", "mean_round")


def _fmt(v) -> str:
  if isinstance(v, (list, tuple)):
    return " ".join(_fmt(x) for x in v)
  return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


@functools.lru_cache(maxsize=65536)                   # a row per attack and client: once per setting
def _epsilon(sigma: float, tau: float) -> str:
  """'' without LDP, else the exact epsilon of one release at delta 1e-5 ('inf' without clipping or noise)."""
  from jaxleak import accounting
  if not (sigma or tau):
    return ""
  e = accounting.gaussian_epsilon(sigma, tau if tau > 0 else math.inf, delta=1e-5, method="exact")
  return "inf" if math.isinf(e.value) else _fmt(e.value)


def tables(plan: Plan, store: Store) -> tuple[dict[str, str], int]:
  """({file name: CSV text}, number of tasks missing a record)."""
  rows, summary, member_rows, profile_rows, ev_rows, wd_rows, missing = [], [], [], [], [], [], 0
  ev_keys = None
  for task in plan.tasks:
    try:
      rec = store.read(task.key)
    except FileNotFoundError:
      missing += 1
      continue
    settings = task_row(task)
    res = rec["results"]
    if task.kind == "har":
      base = [task.key] + [_fmt(settings[c]) for c in HAR_COLUMNS]
      for attack, r in res["attacks"].items():
        for i, subject in enumerate(res["subjects"]):
          rows.append(base + [attack, subject] + [_fmt(r["clients"][m][i]) for m in METRICS] + [r["num_batches"][i]])
        # what the server learns of each client: its own update, or under secure aggregation 1/K of its round
        members = r.get("members")
        for out, per in ((member_rows, members), (profile_rows, r.get("profiles"))):
          for i, subject in enumerate(res.get("member_subjects", []) if per else []):
            out.append(base + [attack, subject] + [_fmt(per["clients"][m][i]) for m in METRICS])
        per_client, solved = (members or r)["summary"], (r.get("profiles") or {}).get("summary")
        summary.append(base + [attack] + [_fmt(x) for m in METRICS for x in r["summary"][m]]
                       + [_epsilon(settings["sigma"], settings["tau"])]
                       + [_fmt(x) for m in MEMBER_METRICS for x in per_client[m]]
                       + ([_fmt(x) for m in MEMBER_METRICS for x in solved[m]] if solved
                          else [""] * 2 * len(MEMBER_METRICS))
                       + [_fmt(rounds_identifiable(res["cohorts"])) if solved and res.get("cohorts") else ""])
    elif task.kind == "whole_determination":
      base = [task.key] + [_fmt(settings[c]) for c in EAVESDROP_COLUMNS + WD_COLUMNS]
      for st in res["stages"]:
        wd_rows.append(base + [_fmt(st[c]) for c in WD_STAGE_COLUMNS])
    else:
      ev_keys = ev_keys or sorted(res["overall"])
      attacker = res.get("attacker") or {}
      ev_rows.append([task.key] + [_fmt(settings[c]) for c in EAVESDROP_COLUMNS]
                     + [_fmt(res["overall"][k]) for k in ev_keys] + [_fmt(attacker.get(k)) for k in ATTACKER_KEYS])
  files = {}
  if rows:
    files["results.csv"] = storage.csv_text(("task",) + HAR_COLUMNS + ("attack", "subject") + METRICS
                                            + ("num_batches",), rows)
    files["summary.csv"] = storage.csv_text(("task",) + HAR_COLUMNS + ("attack",)
                                            + tuple(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))
                                            + ("epsilon_exact_delta_1e-5",)
                                            + tuple(f"{p}per_client_{m}_{s}" for p in ("", "solved_")
                                                    for m in MEMBER_METRICS for s in ("mean", "std"))
                                            + ("solved_identifiable",), summary)
  for name, per_client in (("members.csv", member_rows), ("profiles.csv", profile_rows)):
    if per_client:
      files[name] = storage.csv_text(("task",) + HAR_COLUMNS + ("attack", "subject") + METRICS, per_client)
  if ev_rows:
    files["eavesdrop.csv"] = storage.csv_text(("task",) + EAVESDROP_COLUMNS + tuple(ev_keys)
                                              + tuple(f"attacker_{k}" for k in ATTACKER_KEYS), ev_rows)
  if wd_rows:
    files["whole_determination.csv"] = storage.csv_text(("task",) + EAVESDROP_COLUMNS + WD_COLUMNS + WD_STAGE_COLUMNS,
                                                        wd_rows)
  return files, missing


def collect(plan: Plan, store: Store, out: str | None = None) -> tuple[str, int]:
  """Writes the tables to `out` (default <study_dir>/tables/), whole; returns (its path, tasks without a record
  yet)."""
  files, missing = tables(plan, store)
  default = out is None
  out = os.path.join(store.root, "tables") if default else out
  try:
    storage.commit_folder(out, files)
  except storage.StorageError as e:
    if not default:
      raise
    raise storage.StorageError(f"{e} (`collect --tables_dir=<folder>` writes the tables elsewhere, the study "
                               "folder left as it is.)") from None
  return out, missing
