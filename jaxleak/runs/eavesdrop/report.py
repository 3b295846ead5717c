"""Eavesdrop results: summaries (success rates), result folders (committed whole) and paper-shaped tables."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxleak import metrics, storage
from jaxleak.runs.eavesdrop.config import WD_STAGE_NAMES, EavesdropConfig, WholeDeterminationConfig, config_record
from jaxleak.runs.eavesdrop.rounds import ATTACKER_COLUMNS, ROUND_COLUMNS, RoundsResult
from jaxleak.runs.eavesdrop.whole_determination import WholeDeterminationTrial
from jaxleak.runs.tables import UNDEFINED, UNDEFINED_NOTE, format_table


#: summary.csv's columns after "label" (records written before qi_count_* existed lack those two).
SUMMARY_KEYS = ("sniff", "sniff_absent", "prevalence", "qi_alpha1", "qi_alpha_pct", "qi_abort", "qi_abs_error",
                "qi_count_alpha1", "qi_count_exact")


def summarize_rounds(res: RoundsResult, cfg: EavesdropConfig) -> dict:
  """Per-label and overall success rates (fractions):
  sniff: Class Sniffing correct calls over all rounds; sniff_absent: the same over rounds where the label was
  absent (the paper's setting makes absence rare, so 'always present' scores the prevalence); prevalence.
  qi_alpha1 / qi_alpha_pct: Quantity Inference's X_* (a real number) within alpha = 1 and alpha = 5 % of K (the
  clients selected, the paper's N_p * P, at least 1),
  over the rounds where the label was owned and the attack did not abort; qi_count_alpha1 / qi_count_exact: X_*
  rounded to a whole number of clients (`metrics.client_count`), within 1 / equal, over the same rounds; qi_abort:
  abort rate over those rounds; qi_abs_error: mean |X_* - owners|.
  """
  owned = res.owners > 0
  correct = np.asarray(metrics.sniffing_correct(res.sniff_present, res.owners))
  alpha_pct = 0.05 * cfg.num_selected              # = 5 % N_p P whenever N_p P is a whole number, as in the paper
  attempted = owned & ~res.qi_aborted
  ok1 = np.asarray(metrics.quantity_success(res.qi_estimate, res.owners, 1.0)) & attempted
  okp = np.asarray(metrics.quantity_success(res.qi_estimate, res.owners, alpha_pct)) & attempted
  count = np.asarray(metrics.client_count(res.qi_estimate, cfg.num_selected))
  ok_count = np.asarray(metrics.quantity_success(count, res.owners, 1)) & attempted
  exact = (count == res.owners) & attempted

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
        qi_count_alpha1=rate(ok_count, attempted, axis),
        qi_count_exact=rate(exact, attempted, axis),
        qi_abort=rate(res.qi_aborted & owned, owned, axis),
        qi_abs_error=rate(np.where(attempted, np.abs(res.qi_estimate - res.owners), 0.0), attempted, axis),
    )
  out["alpha_pct"] = alpha_pct
  out["seconds_per_round"] = res.seconds_per_round
  if res.attacker_selected is not None:
    out["attacker"] = attacker_summary(res)
  return out


def attacker_summary(res: RoundsResult) -> dict:
  """With the attacker as a participant: over the rounds it was selected, both attacks with its own update
  removed (as the paper says it must) and without (the raw aggregate, K clients assumed); truth is the other
  selected participants. Fractions; NaN where no round qualifies."""
  sel = np.asarray(res.attacker_selected, bool)[:, None] & np.ones_like(res.owners, bool)
  owned = res.owners > 0

  def sniff(present):
    ok = np.asarray(metrics.sniffing_correct(present, res.owners)) & sel
    return float(ok.sum() / sel.sum()) if sel.any() else float("nan")

  def qi(estimate, aborted):
    att = sel & owned & ~aborted
    ok = np.asarray(metrics.quantity_success(estimate, res.owners, 1.0)) & att
    return float(ok.sum() / att.sum()) if att.any() else float("nan")

  return dict(rounds_selected=int(np.sum(res.attacker_selected)), rounds=int(len(res.attacker_selected)),
              sniff_removed=sniff(res.sniff_present), sniff_not_removed=sniff(res.sniff_present_no_removal),
              qi_alpha1_removed=qi(res.qi_estimate, res.qi_aborted),
              qi_alpha1_not_removed=qi(res.qi_estimate_no_removal, res.qi_aborted_no_removal))


def round_rows(res: RoundsResult):
  r, c = res.owners.shape
  for t in range(r):
    for label in range(c):
      row = (t, label, int(res.owners[t, label]), int(res.holders[t, label]), f"{res.sniff_score[t, label]:.4f}",
             int(res.sniff_present[t, label]), f"{res.qi_estimate[t, label]:.4f}", f"{res.qi_std[t, label]:.4f}",
             int(res.qi_num_weights[t, label]), int(res.qi_aborted[t, label]))
      if res.attacker_selected is not None:
        row += (int(res.attacker_selected[t]), int(res.sniff_present_no_removal[t, label]),
                f"{res.qi_estimate_no_removal[t, label]:.4f}", int(res.qi_aborted_no_removal[t, label]))
      yield row


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


def _f(x) -> str:
  """A rate as a percentage; UNDEFINED where it has no rounds to be a rate of (the CSVs keep nan)."""
  return UNDEFINED if x is None or not np.isfinite(x) else f"{100 * float(x):.1f}"


def _with_note(table: str, rows: list[dict]) -> str:
  """The table, and UNDEFINED_NOTE below it when a cell is UNDEFINED."""
  return table + ("\n" + UNDEFINED_NOTE if any(UNDEFINED in r.values() for r in rows) else "")


def rounds_files(res: RoundsResult, cfg: EavesdropConfig, extra: dict | None = None) -> tuple[dict, dict]:
  """(files {name: text}: rounds.csv, summary.csv, manifest.json; the summary dict) of one rounds run."""
  s = summarize_rounds(res, cfg)
  keys = SUMMARY_KEYS
  rows = [[label] + [f"{float(s['per_label'][k][label]):.4f}" for k in keys]
          for label in range(res.owners.shape[1])]
  rows.append(["all"] + [f"{float(s['overall'][k]):.4f}" for k in keys])
  columns = ROUND_COLUMNS + (ATTACKER_COLUMNS if res.attacker_selected is not None else ())
  files = {"rounds.csv": storage.csv_text(columns, round_rows(res)),
           "summary.csv": storage.csv_text(("label",) + keys, rows),
           "manifest.json": storage.json_text({
               "experiment": "eavesdrop_rounds", "config": config_record(cfg), "alpha_pct": s["alpha_pct"],
               "seconds_per_round": s["seconds_per_round"], "environment": storage.provenance(),
               **({"attacker": s["attacker"]} if "attacker" in s else {}), **(extra or {})})}
  return files, s


def write_rounds(res: RoundsResult, cfg: EavesdropConfig, output_dir: str, extra: dict | None = None) -> dict:
  """rounds.csv (one row per round and label), summary.csv (per label and overall), manifest.json: one folder,
  committed whole. Returns the summary."""
  files, s = rounds_files(res, cfg, extra)
  storage.commit_folder(output_dir, files)
  return s


def per_label_table(s: dict, cfg: EavesdropConfig) -> str:
  """Tables III and IV in the paper's shape: success rates (%) per label, plus our extra rows."""
  c = len(s["per_label"]["sniff"])
  names = [("sniff", "Class Sniffing (Table III)"), ("sniff_absent", "  ... on rounds the label was absent"),
           ("prevalence", "  label present (prevalence)"), ("qi_alpha1", "Quantity Inference a=1 (Table IV)"),
           ("qi_count_alpha1", "  ... X_* rounded to a count, a=1"), ("qi_count_exact", "  ... count exact"),
           ("qi_alpha_pct", f"  ... a=5% K = {s['alpha_pct']:g}"), ("qi_abort", "  aborted")]
  rows = [{"metric": label, **{str(i): _f(s["per_label"][k][i]) for i in range(c)}, "all": _f(s["overall"][k])}
          for k, label in names]
  title = (f"{cfg.dataset} | {cfg.model} | N_p={cfg.num_participants} P={cfg.fraction} | L_bs={cfg.local.batch_size}"
           f" L_ep={cfg.local.epochs} L_lr={cfg.local.lr} | CR={cfg.compression} | {cfg.rounds} rounds | "
           f"success rate (%) per label")
  table = _with_note(format_table(rows, ["metric"] + [str(i) for i in range(c)] + ["all"], title), rows)
  if "attacker" in s:
    a = s["attacker"]
    table += (f"\nattacker selected in {a['rounds_selected']}/{a['rounds']} rounds; there: Class Sniffing "
              f"{_f(a['sniff_removed'])} % with its own update removed, {_f(a['sniff_not_removed'])} % without; "
              f"QI a=1 {_f(a['qi_alpha1_removed'])} % / {_f(a['qi_alpha1_not_removed'])} %")
  return table


def sweep_table(points: list[tuple[str, float, dict]], title: str) -> str:
  """Figures 6-9 / Table VI: one row per setting with the overall rates (%)."""
  rows = [{"setting": f"{name}={value:g}", "QI a=1": _f(s["overall"]["qi_alpha1"]),
           "QI a=5%": _f(s["overall"]["qi_alpha_pct"]), "QI count a=1": _f(s["overall"]["qi_count_alpha1"]),
           "aborted": _f(s["overall"]["qi_abort"]),
           "Class Sniffing": _f(s["overall"]["sniff"]), "s/round": f"{s['seconds_per_round']:.3f}"}
          for name, value, s in points]
  return _with_note(format_table(rows, ["setting", "QI a=1", "QI a=5%", "QI count a=1", "aborted", "Class Sniffing",
                                       "s/round"], title), rows)


def write_whole_determination(trials: list[WholeDeterminationTrial], cfg: EavesdropConfig,
                              wd: WholeDeterminationConfig, output_dir: str) -> list[dict]:
  """trials.csv, summary.csv, manifest.json: one folder, committed whole. Returns the summary rows."""
  summary = summarize_whole_determination(trials)
  storage.commit_folder(output_dir, {
      "trials.csv": storage.csv_text(
          ("trial", "stage", "round", "accuracy", "groups", "predicted", "predicted_known_k", "success",
           "success_known_k", "success_two_level"),
          [(t.trial, t.stage, t.round, f"{t.accuracy:.4f}", " ".join(map(str, t.groups)),
            " ".join(map(str, t.predicted)), " ".join(map(str, t.predicted_known_k)), int(t.success),
            int(t.success_known_k), int(t.success_two_level)) for t in trials]),
      "summary.csv": storage.csv_text(tuple(summary[0]), [[str(v) for v in r.values()] for r in summary]),
      "manifest.json": storage.json_text({
          "experiment": "eavesdrop_whole_determination", "config": config_record(cfg),
          "whole_determination": dataclasses.asdict(wd), "environment": storage.provenance()})})
  return summary


def whole_determination_table(summary: list[dict], cfg: EavesdropConfig, wd: WholeDeterminationConfig) -> str:
  rows = [{"stage": r["stage"], "reached": f"{r['reached']}/{r['trials']}",
           "mean round": f"{r['mean_round']:.0f}" if np.isfinite(r["mean_round"]) else UNDEFINED,
           "success (Table V)": _f(r["success"]),
           "known #groups": _f(r["success_known_k"]), "frequent vs rest": _f(r["success_two_level"])}
          for r in summary]
  title = (f"Whole Determination | {cfg.dataset} | {cfg.model} | groups {'/'.join(f'{f:g}' for f in wd.factors)} "
           f"x Q={wd.total_per_label} | {wd.window}-round ratio vectors, {wd.method} linkage | success rate (%)")
  return _with_note(format_table(rows, list(rows[0]), title), rows)
