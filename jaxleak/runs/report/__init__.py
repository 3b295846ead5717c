"""Reports: the papers' figures and tables from any results, with epsilon for every LDP setting.

  results = load(<study folder | run folder | folder of either>)
  report = build(results, delta=1e-5, rounds=1)       # {relative path: bytes or text}, nothing written
  write_report(<source>, <output dir>)                  # one folder, committed whole (jaxleak.storage)

The folder: index.html (one self-contained page: every figure, every table and the settings that produced them;
no scripts, no network), figures/*.png, tables/*.csv (raw numbers: fractions, as the results hold them) and
tables/*.md (percentages), report.json (what was drawn from which result). Figures need the extra `plots`
(matplotlib), epsilon the extra `accounting` (dp-accounting); without the latter the tables say so.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections import defaultdict
from typing import Callable, Optional

from jaxleak import storage
from jaxleak.runs.report import figures as F
from jaxleak.runs.report import tables as T
from jaxleak.runs.report.page import render_page
from jaxleak.runs.report.results import EavesdropResult, HarResult, Results, WholeDetermination, load

__all__ = ["Report", "build", "load", "write_report", "EavesdropResult", "HarResult", "Results",
           "WholeDetermination"]


@dataclasses.dataclass
class Figure:
  path: str                 # figures/<name>.png
  section: str              # "HAR" or "Eavesdrop"
  caption: str
  sources: list             # the results (record keys or run folders) drawn


@dataclasses.dataclass
class Report:
  files: dict               # relative path -> bytes | str
  figures: list
  tables: list
  warnings: list


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.=]+", "-", text).strip("-").lower()[:120]


class _Names:
  def __init__(self):
    self.used = set()

  def __call__(self, stem: str) -> str:
    name, i = _slug(stem), 2
    while name in self.used:
      name, i = f"{_slug(stem)}-{i}", i + 1
    self.used.add(name)
    return f"figures/{name}.png"


def build(results: Results, *, delta: float = 1e-5, rounds: int = 1,
          progress: Optional[Callable[[str], None]] = None) -> Report:
  """Every figure and table the results support, in memory. ImportError naming the `plots` extra without
  matplotlib (checked before any figure is drawn)."""
  log = progress or (lambda m: None)
  F.pyplot()
  acct = T.Accountant(delta, rounds)
  names, figs, files = _Names(), [], {}

  def add(stem, section, caption, sources, make):
    data = make()
    if data is not None:
      path = names(stem)
      files[path] = data
      figs.append(Figure(path, section, caption, sources))

  warnings = []
  har_figures(results, acct, add, log, warnings)
  eavesdrop_figures(results, add, log)
  tables = T.all_tables(results, acct)
  if results.missing:
    warnings.append(f"{results.missing} task(s) of the study have no record yet: the report shows the finished "
                    "ones. Run the study again to finish it, then rebuild the report.")
  if results.damaged:
    shown = ", ".join(results.damaged[:3]) + (f" and {len(results.damaged) - 3} more" if len(results.damaged) > 3
                                              else "")
    warnings.append(f"{len(results.damaged)} record file(s) failed verification (damaged, or not written by "
                    f"jaxleak) and are left out: {shown}. Running the study again recomputes its own tasks.")
  if acct.missing_extra:
    warnings.append(acct.missing_extra)
  for t in tables:
    files[f"tables/{t.name}.csv"] = t.csv()
    files[f"tables/{t.name}.md"] = t.markdown()
  files["index.html"] = render_page(results, figs, tables, warnings, delta=delta, rounds=rounds)
  files["report.json"] = storage.json_text({
      "source": os.path.abspath(results.origin), "kind": results.kind, "delta": delta, "rounds": rounds,
      "figures": [dataclasses.asdict(f) for f in figs], "tables": [t.name for t in tables], "warnings": warnings,
      "missing_tasks": results.missing, "damaged_records": results.damaged})
  return Report(files, figs, tables, warnings)


def _bars_caption(s: dict) -> str:
  """What Fig. 2's bars and markers are the mean of: clients, or under secure aggregation rounds."""
  k = s.get("aggregate_clients", 1)
  if k == 1:
    return "bars are the mean over clients, whiskers the std over clients."
  if s.get("cohort_dealing", "once") == "every_round":
    return (f"bars are the mean over the rounds (clients dealt anew every round), whiskers the std over rounds; "
            f"diamonds: 1/{k} of a round's counts per client, triangles: each client's label distribution solved "
            "from all rounds, both the mean over clients.")
  return (f"bars are the mean over the cohorts' rounds, whiskers the std over cohorts; diamonds: 1/{k} of a round's "
          "counts per client, the mean over clients.")


#: A sweep over more clip norms than this is a heat map whatever its size (the line plot has a panel per tau).
MAX_TRADEOFF_PANELS = 6


def _ldp_sweeps(har) -> dict:
  """{(the setting but its (sigma, tau), clip scope): [its results, the no-LDP one among them]}, for the settings
  that have LDP results."""
  by_setting = defaultdict(list)
  for r in har:
    s = r.settings
    by_setting[(s["dataset"], s["model"], s["state"], s["sampling"], s["num_samples"], s["local_steps"],
                s["local_batch_size"], s["seed"], s.get("head_bias", True), s.get("compression", 0.0),
                s.get("dropout"), s.get("client_loss", "mean"), s.get("aggregate_clients", 1))].append(r)
  sweeps = {}
  for key, rs in by_setting.items():
    ldp = [r for r in rs if r.has_ldp]
    for scope in sorted({r.settings["clip_scope"] for r in ldp}):
      sweeps[(key, scope)] = [r for r in rs if not r.has_ldp or r.settings["clip_scope"] == scope]
  return sweeps


def har_figures(results: Results, acct: T.Accountant, add, log, notes: Optional[list] = None) -> None:
  har = results.har
  for r in har:
    if not r.has_ldp:
      add(f"fig2-attacks-{T.setting_label(r.settings)}", "HAR",
          f"Fig. 2 style: LnAcc, LeAcc and ClassAcc per attack, {T.setting_label(r.settings)}; "
          + _bars_caption(r.settings), [r.source], lambda r=r: F.attack_bars(r))
  log(f"report: {len(har)} HAR result(s)")
  sweeps = _ldp_sweeps(har)
  undrawn = {id(r) for pts in sweeps.values() if sum(p.has_ldp for p in pts) > T.MAX_LDP_DETAIL
             for r in pts if r.has_ldp}
  if undrawn and notes is not None:
    notes.append(f"{len(undrawn)} LDP settings belong to sweeps of more than {T.MAX_LDP_DETAIL} settings: they are "
                 "drawn together in their sweep's figure, without a confusion figure each; tables/*.csv hold every "
                 "setting's numbers.")
  for r in har:
    if id(r) in undrawn:
      continue
    add(f"fig4-confusion-{T.setting_label(r.settings)}", "HAR",
        f"Fig. 4 style: row-normalised confusion matrices (sorted labels paired by position), "
        f"{T.setting_label(r.settings)}.", [r.source], lambda r=r: F.confusion_grid(r, acct))
  # Fig. 3: multi-step minus single step, per dataset/model/state/sampling/seed.
  by_base = defaultdict(list)
  for r in har:
    if not r.has_ldp and T.undefended(r):
      s = r.settings
      by_base[(s["dataset"], s["model"], s["state"], s["sampling"], s["seed"])].append(r)
  for key, rs in by_base.items():
    singles = sorted([r for r in rs if not r.multi_step], key=lambda r: (r.settings["num_samples"] != 100,
                                                                       r.settings["num_samples"]))
    multis = [r for r in rs if r.multi_step]
    if singles and multis:
      add(f"fig3-multistep-{'-'.join(map(str, key))}", "HAR",
          f"Fig. 3 style: LnAcc of multi-step updates minus single step (N={singles[0].settings['num_samples']}), "
          f"{' | '.join(map(str, key[:4]))}.", [singles[0].source] + [m.source for m in multis],
          lambda s=singles[0], m=multis: F.multistep_heatmap(s, m))
  # LDP trade-off: the settings that differ only in (sigma, tau), with the no-LDP run as sigma = 0; a large sweep
  # over both as heat maps.
  for (_, scope), pts in sweeps.items():
    if len(pts) < 2:
      continue
    label = T.setting_label(pts[0].settings, with_ldp=False)
    sigmas, taus = ({p.settings[f] for p in pts} for f in ("sigma", "tau"))
    if len(taus) > MAX_TRADEOFF_PANELS or (len(pts) > T.MAX_LDP_DETAIL and len(sigmas) > 1 and len(taus) > 1):
      add(f"ldp-sweep-{label}-{scope}", "HAR",
          f"LDP sweep: LnAcc of every (sigma, tau) ({scope} clipped), mean over clients; epsilon of each setting in "
          f"tables/ldp_epsilon.csv; {label}.", [p.source for p in pts], lambda pts=pts: F.ldp_heatmap(pts))
      continue
    add(f"ldp-tradeoff-{label}-{scope}", "HAR",
        f"LDP trade-off: LnAcc against noise std and clip norm ({scope} clipped), epsilon on the top axis "
        f"(exact, delta = {acct.delta:g}, composed over {acct.rounds} round(s) x the setting's releases); "
        f"{label}.", [p.source for p in pts], lambda pts=pts: F.ldp_tradeoff(pts, acct))


def eavesdrop_figures(results: Results, add, log) -> None:
  for field in T.SWEEP_FIELDS:
    for _, pts in T._varying(results.eavesdrop, field):
      s = pts[0].settings
      weighted = bool(T.loss_label(s))
      add(f"eavesdrop-{field}-{s['dataset']}-{s['model']}", "Eavesdrop",
          f"Figs. 6-9 style: success rates against {field} ({s['dataset']}, {s['model']}); "
          + ("participants with a class-weighted loss (the paper's values are for the mean loss: none shown)."
             if weighted else "crosses are the paper's values where its text states them."),
          [p.source for p in pts],
          lambda f=field, p=pts: F.eavesdrop_curve(f, p))
  for w in results.whole:
    trials = sorted({t["trial"] for t in w.trials if t.get("ratios")})
    if trials:
      s = w.settings
      add(f"wd-ratios-{s['dataset']}-{s['model']}", "Eavesdrop",
          f"Figs. 4-5 style: |W_p|/|W_n| of every label over the rounds observed at each stage, by true group "
          f"(trial {trials[0]} of {len({t['trial'] for t in w.trials})}).", [w.source],
          lambda w=w, t=trials[0]: F.wd_ratio_curves(w, t))
      add(f"wd-dendrogram-{s['dataset']}-{s['model']}", "Eavesdrop",
          f"Whole Determination: hierarchical clustering of the labels' ratio vectors (trial {trials[0]}).",
          [w.source], lambda w=w, t=trials[0]: F.wd_dendrogram(w, t, w.settings.get("wd_method", "ward")))
  if results.eavesdrop or results.whole:
    log(f"report: {len(results.eavesdrop)} Eavesdrop and {len(results.whole)} Whole Determination result(s)")


def _check_report_folder(source: str, out: str) -> None:
  """The report folder is replaced whole: it must be writable, hold nothing jaxleak did not write, and neither be
  nor hold results (the ones reported, or any others). Raises StorageError naming the fix, before any work."""
  src, dst = os.path.realpath(source), os.path.realpath(out)
  if os.path.commonpath([src, dst]) == dst:
    raise storage.StorageError(f"report folder {out} holds the results it reports ({source}) and is replaced whole: "
                               "choose a folder outside them (default: <results>/report).")
  storage.check_writable_folder(out, "report folder")
  storage.check_replaceable_folder(out, "report folder")
  for root, dirs, files in os.walk(out):           # a folder jaxleak wrote whole, so a small one
    if "manifest.json" in files or "study.json" in files or "records" in dirs:
      raise storage.StorageError(f"report folder {out} holds results ({root}) and is replaced whole: choose "
                                 "another folder (default: <results>/report).")


def write_report(source: str, output_dir: Optional[str] = None, *, delta: float = 1e-5, rounds: int = 1,
                 progress: Optional[Callable[[str], None]] = None) -> tuple[str, Report]:
  """Loads `source`, builds the report and commits it whole to `output_dir` (default <source>/report).
  Returns (the folder, the report)."""
  if os.path.isfile(source):                         # before the report folder below it is checked
    raise ValueError(f"{source} is a file; give the folder that holds it ({os.path.dirname(source) or '.'}: a study "
                     "or a run's results folder).")
  out = output_dir or os.path.join(source, "report")
  _check_report_folder(source, out)
  results = load(source)
  report = build(results, delta=delta, rounds=rounds, progress=progress)
  storage.commit_folder(out, report.files)
  return out, report


