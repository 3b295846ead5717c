"""Writing results: atomic files, run manifests and paper-style tables."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from typing import Iterable, Sequence


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temp file in the same folder, then os.replace)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(header)
  w.writerows(rows)
  atomic_write_text(path, buf.getvalue())


def atomic_write_json(path: str, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def environment() -> dict:
  """Versions and devices, for run manifests."""
  import flax
  import jax
  import numpy
  import optax

  import jaxleak
  env = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "numpy": numpy.__version__, "jaxleak": jaxleak.__version__,
         "platform": platform.platform(), "devices": [str(d) for d in jax.devices()]}
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    env["git_commit"] = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                       timeout=5, check=True).stdout.strip()
  except Exception:                                             # not a checkout: no commit to record
    pass
  return env


def pct(mean: float, std: float) -> str:
  return f"{100 * mean:6.2f}% (± {100 * std:5.2f})"


def format_table(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> str:
  """Plain-text table: rows of dicts with string values."""
  widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
  line = "  ".join(c.ljust(widths[c]) for c in columns)
  out = ([title] if title else []) + [line, "-" * len(line)]
  out += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(out)


def write_single_step(result, output_dir: str, flags_dict: dict | None = None) -> dict:
  """Writes a single-step run to `output_dir` atomically; returns the paths written.

  batches.csv   one row per (batch, attack): subject, batch, attack, lnacc, leacc, true_<class>..., pred_<class>...
  clients.csv   one row per (subject, attack): num_batches, lnacc, leacc, symmetric_existence, class_acc
  summary.csv   one row per attack: mean and std over clients of each metric
  manifest.json flags/config, seed, versions, devices, timings
  """
  import dataclasses

  import numpy as np

  from jaxleak import metrics as M
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
  paths = {name: os.path.join(output_dir, name) for name in
           ("batches.csv", "clients.csv", "summary.csv", "manifest.json")}
  atomic_write_csv(paths["batches.csv"], ["subject", "batch", "attack", "lnacc", "leacc"]
                   + [f"true_{i}" for i in range(c)] + [f"pred_{i}" for i in range(c)], rows)
  client_rows = []
  for name in result.config.attacks:
    cm = result.client_metrics[name]
    for i, s in enumerate(result.subject_ids):
      client_rows.append([s, name, int(cm.num_batches[i])] + [f"{float(getattr(cm, m)[i]):.4f}" for m in
                                                              ("lnacc", "leacc", "symmetric_existence", "class_acc")])
  atomic_write_csv(paths["clients.csv"], ["subject", "attack", "num_batches", "lnacc", "leacc",
                                          "symmetric_existence", "class_acc"], client_rows)
  summary = result.summary_rows()
  atomic_write_csv(paths["summary.csv"], ["attack", "metric", "mean", "std"],
                   [[r["attack"], m, f"{r[m][0]:.4f}", f"{r[m][1]:.4f}"] for r in summary
                    for m in ("lnacc", "leacc", "class_acc", "symmetric_existence")])
  atomic_write_json(paths["manifest.json"], {
      "experiment": "single_step_leakage" if result.config.local is None else "multi_step_leakage", "config": dataclasses.asdict(result.config),
      "flags": flags_dict or {}, "dataset": result.dataset_name, "class_names": list(result.class_names),
      "subjects": list(result.subject_ids), "num_batches": int(len(result.batch_client)),
      "timings_s": result.timings, "environment": environment()})
  return paths


def single_step_table(result) -> str:
  rows = [{"attack": r["attack"], "LnAcc": pct(*r["lnacc"]), "LeAcc": pct(*r["leacc"]),
           "ClassAcc": pct(*r["class_acc"])} for r in result.summary_rows()]
  cfg = result.config
  ldp = "" if cfg.ldp.is_identity else (f"LDP sigma={cfg.ldp.noise_std} tau={cfg.ldp.clip_norm} "
                                        f"({cfg.ldp.clip_scope}, {cfg.ldp.clip_granularity}) | ")
  if cfg.local is not None:
    loc = cfg.local
    ldp = (f"multi-step B={loc.batch_size} S={loc.steps} lr={loc.lr} ({loc.equivalent}) | "
           + ("" if loc.ldp.is_identity else f"LDP per step sigma={loc.ldp.noise_std} tau={loc.ldp.clip_norm} | "))
  title = (f"{result.dataset_name} | {cfg.model} | {cfg.sampling} | N={cfg.batch_size} | {ldp}"
           f"{len(result.subject_ids)} clients, {len(result.batch_client)} batches | mean (± std) over clients")
  return format_table(rows, ["attack", "LnAcc", "LeAcc", "ClassAcc"], title)
