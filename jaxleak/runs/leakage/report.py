"""A leakage run's result files and its terminal table.

One results folder per run, committed whole (jaxleak.storage.commit_folder): a kill never leaves the CSVs of one
run beside the manifest of another.
  batches.csv    one row per (update, attack): subject, batch, attack, lnacc, leacc, true_<class>..., pred_<class>...
  clients.csv    one row per (subject, attack): num_batches, lnacc, leacc, symmetric_existence, class_acc
  (with secure aggregation, `subject` is the cohort's number and `batch` the round; manifest.json's `cohorts`
  lists each cohort's subjects)
  members.csv    with secure aggregation only: clients.csv's columns per (subject, attack) for guessing each client
                 holds 1/K of its round's predicted counts (NaN for a subject in no cohort)
  profiles.csv   with clients dealt anew every round only: the same columns per (subject, attack) for its label
                 distribution solved from all rounds (num_batches 1; NaN for a subject in no round); each aggregate
                 is then its own unit in clients.csv, and manifest.json's `cohorts` lists every round's members
  summary.csv    one row per (attack, metric): mean and std over clients
  manifest.json  experiment, config, flags, dataset, subjects, timings, provenance (versions, devices, commit)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxleak import attacks as A
from jaxleak import metrics as M
from jaxleak import storage
from jaxleak.runs.leakage.scoring import LeakageResult
from jaxleak.runs.tables import format_table, pct

METRICS = ("lnacc", "leacc", "class_acc", "symmetric_existence")


def result_files(result: LeakageResult, flags_dict: dict | None = None) -> dict[str, str]:
  """The four files of a run as {name: text}."""
  c = len(result.class_names)
  subjects = np.asarray(result.subject_ids)[result.batch_client]
  rows = []
  for name in result.config.attacks:
    pred = result.pred_counts[name]
    ln = np.asarray(M.lnacc(result.true_counts, pred))
    le = np.asarray(M.leacc(result.true_counts, pred))
    for k in range(len(pred)):
      rows.append([int(subjects[k]), int(result.batch_index[k]), name, f"{ln[k]:.4f}", f"{le[k]:.4f}",
                   *result.true_counts[k].tolist(), *pred[k].tolist()])
  batches = storage.csv_text(["subject", "batch", "attack", "lnacc", "leacc"]
                             + [f"true_{i}" for i in range(c)] + [f"pred_{i}" for i in range(c)], rows)
  client_rows = []
  for name in result.config.attacks:
    cm = result.client_metrics[name]
    for i, s in enumerate(result.subject_ids):
      client_rows.append([s, name, int(cm.num_batches[i])] + [f"{float(getattr(cm, m)[i]):.4f}" for m in
                                                              ("lnacc", "leacc", "symmetric_existence", "class_acc")])
  header = ["subject", "attack", "num_batches", "lnacc", "leacc", "symmetric_existence", "class_acc"]
  clients = storage.csv_text(header, client_rows)
  summary = storage.csv_text(["attack", "metric", "mean", "std"],
                             [[r["attack"], m, f"{r[m][0]:.4f}", f"{r[m][1]:.4f}"] for r in result.summary_rows()
                              for m in METRICS])
  manifest = storage.json_text({
      "experiment": "single_step_leakage" if result.config.local is None else "multi_step_leakage",
      "config": dataclasses.asdict(result.config), "flags": flags_dict or {}, "dataset": result.dataset_name,
      "class_names": list(result.class_names), "subjects": list(result.subject_ids),
      **({} if result.cohorts is None else {"cohorts": [list(c) for c in result.cohorts]}),
      "num_batches": int(len(result.batch_client)), "timings_s": result.timings, "environment": storage.provenance()})
  files = {"batches.csv": batches, "clients.csv": clients, "summary.csv": summary, "manifest.json": manifest}
  for file, per_client in (("members.csv", result.member_metrics), ("profiles.csv", result.profile_metrics)):
    if per_client is not None:
      files[file] = storage.csv_text(header, [
          [s, name, int(mm.num_batches[i])] + [f"{float(getattr(mm, m)[i]):.4f}" for m in
                                               ("lnacc", "leacc", "symmetric_existence", "class_acc")]
          for name in result.config.attacks for mm in [per_client[name]] for i, s in enumerate(result.member_ids)])
  return files


def write_leakage(result: LeakageResult, output_dir: str, flags_dict: dict | None = None) -> None:
  """Writes a run's results folder whole, replacing any earlier one at `output_dir`."""
  storage.commit_folder(output_dir, result_files(result, flags_dict))


def leakage_table(result: LeakageResult) -> str:
  """The paper-style terminal table: LnAcc, LeAcc, ClassAcc per attack, mean (± std) over clients."""
  def rows(members=False, profiles=False):
    return [{"attack": r["attack"], "LnAcc": pct(*r["lnacc"]), "LeAcc": pct(*r["leacc"]),
             "ClassAcc": pct(*r["class_acc"])} for r in result.summary_rows(members, profiles)]
  cfg = result.config
  ldp = "" if cfg.ldp.is_identity else (f"LDP sigma={cfg.ldp.noise_std} tau={cfg.ldp.clip_norm} "
                                        f"({cfg.ldp.clip_scope}, {cfg.ldp.clip_granularity}) | ")
  if cfg.local is not None:
    loc = cfg.local
    ldp = (f"multi-step B={loc.batch_size} S={loc.steps} lr={loc.lr} ({loc.equivalent}) | "
           + ("" if loc.ldp.is_identity else f"LDP per step sigma={loc.ldp.noise_std} tau={loc.ldp.clip_norm} | "))
  loss = "" if cfg.client_loss == "mean" else "class-weighted client loss | "
  if result.cohorts is None:
    who = f"{len(result.subject_ids)} clients, {len(result.batch_client)} batches | mean (± std) over clients"
  elif result.participation is not None:
    who = (f"secure aggregation of {cfg.aggregate_clients} clients dealt anew every round: "
           f"{len(result.batch_client)} rounds of {cfg.aggregate_clients * cfg.num_samples} | mean (± std) over rounds")
  else:
    who = (f"secure aggregation of {cfg.aggregate_clients} clients: {len(result.cohorts)} cohorts, "
           f"{len(result.batch_client)} aggregates of {cfg.aggregate_clients * cfg.num_samples} | mean (± std) over "
           "cohorts")
  title = f"{result.dataset_name} | {cfg.model} | {cfg.sampling} | N={cfg.num_samples} | {loss}{ldp}{who}"
  columns = ["attack", "LnAcc", "LeAcc", "ClassAcc"]
  table = format_table(rows(), columns, title)
  if result.member_metrics is None:
    return table
  k = cfg.aggregate_clients
  clients = (sum(len(c) for c in result.cohorts) if result.participation is None
             else int(np.asarray(result.participation).any(axis=0).sum()))
  table += "\n\n" + format_table(rows(members=True), columns, (
      f"what a round tells of each client: 1/{k} of its predicted counts against the client's own {cfg.num_samples} "
      f"windows | {clients} clients | mean (± std) over clients"))
  if result.profile_metrics is None:
    return table
  rank, _ = A.participation_rank(result.participation)
  solved = ("least squares" if rank == clients else
            f"least squares, minimum norm: NOT identifiable, the rounds' participation has rank {rank} for {clients} "
            f"clients")
  return table + "\n\n" + format_table(rows(profiles=True), columns, (
      f"what all rounds tell of each client: its label distribution solved from every round ({solved}), "
      f"against its own, scaled to N={cfg.num_samples} | {clients} clients | mean (± std) over clients"))


def write_runs(runs: dict[str, LeakageResult], output_dir: str, total_s: float, flags_dict: dict | None = None
               ) -> str:
  """Writes each run to output_dir/<name> ('' = output_dir itself) and returns the tables and a closing line."""
  import os
  out = []
  for name, result in runs.items():
    result.timings["total_s"] = total_s
    write_leakage(result, os.path.join(output_dir, name) if name else output_dir, flags_dict)
    out.append(leakage_table(result) + "\n")
  out.append(f"wall time {total_s:.1f} s; results in {output_dir}/")
  return "\n".join(out)
