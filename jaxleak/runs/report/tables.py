"""The report's tables: numbers as the results hold them (CSV) and as a reader reads them (Markdown, HTML).

Every table is a `Table`: columns and rows of raw values (fractions stay fractions in the CSV; Markdown and HTML
show them as percentages). Each builder returns None when the results hold nothing for it.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import math
from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from jaxleak import accounting, storage
from jaxleak.runs.report import paper
from jaxleak.runs.report.results import EavesdropResult, HarResult, Results, attack_order
from jaxleak.runs.tables import UNDEFINED, UNDEFINED_NOTE

ATTACK_NAMES = {"llg": "LLG", "llg_har": "LLG (HAR code)", "llg_star": "LLG*", "llg_star_har": "LLG* (HAR code)",
                "ebi": "EBI", "llbg": "LLBG", "llbg_original": "LLBG (original)", "ilrg": "iLRG",
                "ilrg_uniform": "iLRG (uniform)", "rlu": "RLU", "bias_corrected": "bias-corrected", "gcd": "GCD",
                "random": "random", "idlg": "iDLG", "analytic": "analytic", "yin": "Yin"}
METRIC_NAMES = {"lnacc": "LnAcc", "leacc": "LeAcc", "class_acc": "ClassAcc", "symmetric_existence": "Eq.4 acc"}


def attack_name(name: str) -> str:
  return ATTACK_NAMES.get(name, name)


#: Rows of a table shown on the report page (the CSV and Markdown files hold all): the paper's whole HAR grid
#: (312 settings x 5 attacks) fits.
MAX_HTML_ROWS = 2000


@dataclasses.dataclass
class Table:
  name: str                                  # file stem: tables/<name>.csv and .md
  title: str
  columns: list
  rows: list                                 # raw values: str, int, float (fractions), None
  percent: tuple = ()                        # columns shown as percentages
  note: str = ""

  def cell(self, column: str, value) -> str:
    if value is None:
      return ""
    if isinstance(value, float):
      if math.isnan(value):
        return UNDEFINED
      if math.isinf(value):
        return "inf"
      return f"{100 * value:.2f}" if column in self.percent else f"{value:.4g}"
    return str(value)

  def notes(self) -> str:
    """`note`, and UNDEFINED's meaning when a cell shows it."""
    undefined = any(isinstance(v, float) and math.isnan(v) for r in self.rows for v in r)
    return "\n".join(n for n in (self.note, UNDEFINED_NOTE if undefined else "") if n)

  def csv(self) -> str:
    def raw(v):
      return "" if v is None else (repr(v) if isinstance(v, float) else str(v))
    return storage.csv_text(self.columns, [[raw(v) for v in r] for r in self.rows])

  def markdown(self) -> str:
    head = [f"{c} (%)" if c in self.percent else c for c in self.columns]
    lines = [f"**{self.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(self.cell(c, v) for c, v in zip(self.columns, r)) + " |" for r in self.rows]
    notes = self.notes()
    return "\n".join(lines + (["", notes] if notes else [])) + "\n"

  def html(self, max_rows: int = MAX_HTML_ROWS) -> str:
    """The table for the page: its first `max_rows` rows, then one row saying how many more tables/<name>.csv
    holds (a 10,000-setting sweep's summary made a 17 MB page)."""
    head = "".join(f"<th>{html.escape(c)}{' (%)' if c in self.percent else ''}</th>" for c in self.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(self.cell(c, v))}</td>" for c, v in zip(self.columns, r))
                   + "</tr>" for r in self.rows[:max_rows])
    if len(self.rows) > max_rows:
      more = len(self.rows) - max_rows
      body += (f"<tr><td class='more' colspan='{len(self.columns)}'>... and {more:,} more row{'s' * (more > 1)}: "
               f"all {len(self.rows):,} in tables/{html.escape(self.name)}.csv</td></tr>")
    note = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes().splitlines())
    return (f"<table id='table-{self.name}'><caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>{note}")


# --- epsilon ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Budget:
  """epsilon of one LDP setting: per release and composed over `releases` (exact, `accounting` method "exact"),
  and composed by RDP (None, with `rdp_unavailable` saying why, when dp-accounting is missing)."""
  release: accounting.Epsilon
  composed: accounting.Epsilon
  composed_rdp: Optional[accounting.Epsilon]
  releases: int
  rdp_unavailable: str = ""

  def text(self) -> str:
    """Short, for table cells: '33.1', 'inf (no clip)', 'inf (no noise)', 'inf (noise negligible)'."""
    e = self.composed
    if math.isinf(e.value):
      return ("inf (no clip)" if e.reason.startswith("no clipping") else
              "inf (no noise)" if e.reason.startswith("no noise") else "inf (noise negligible)")
    return f"{e.value:.3g}"


class Accountant:
  """epsilon for every LDP setting at one delta, composed over `rounds` x the setting's own releases (each
  setting's computed once)."""

  def __init__(self, delta: float = accounting.DEFAULT_DELTA, rounds: int = 1):
    if not 0 < delta < 1:
      raise ValueError(f"delta={delta}: must be in (0, 1), e.g. 1e-5.")
    if rounds < 1:
      raise ValueError(f"rounds={rounds}: must be a positive integer.")
    self.delta, self.rounds = delta, rounds
    self.missing_extra = ""
    self._budgets: dict = {}

  def budget(self, sigma: float, tau: float, releases: int = 1) -> Budget:
    tau = tau if tau and tau > 0 else math.inf
    key = (sigma, tau, releases)
    if key not in self._budgets:
      k = releases * self.rounds
      exact = functools.partial(accounting.gaussian_epsilon, sigma, tau, delta=self.delta, method="exact")
      try:
        rdp, why = accounting.gaussian_epsilon(sigma, tau, releases=k, delta=self.delta, method="rdp"), ""
      except ImportError as e:
        self.missing_extra = f"{e} The RDP column says n/a; the exact epsilon needs no extra."
        rdp, why = None, "n/a: install jaxleak[accounting]"
      self._budgets[key] = Budget(exact(releases=1), exact(releases=k), rdp, k, why)
    return self._budgets[key]


def ldp_table(results: Results, acct: Accountant) -> Optional[Table]:
  """Every LDP setting of the HAR results with its epsilon (one release and composed, exact; composed, RDP)."""
  seen = {}
  for r in results.har:
    s = r.settings
    if r.has_ldp:
      seen[(s["sigma"], s["tau"], s["clip_scope"], s["ldp_releases"])] = None
  if not seen:
    return None
  rows = []
  for sigma, tau, scope, rel in sorted(seen):
    b = acct.budget(sigma, tau, rel)
    rows.append([sigma, tau or None, scope, b.releases, b.release.value, b.composed.value,
                 b.rdp_unavailable or b.composed_rdp.value, b.composed.reason])
  return Table("ldp_epsilon", f"LDP settings and their privacy budget (Gaussian mechanism, sensitivity = clip norm "
               f"tau, delta = {acct.delta:g}; composed over {acct.rounds} round(s) x the setting's releases)",
               ["sigma", "tau", "clip scope", "releases", "epsilon (1 release, exact)", "epsilon (composed, exact)",
                "epsilon (composed, RDP)", "note"], rows,
               note="tau empty = no clipping. Infinite epsilon: no clipping leaves the sensitivity unbounded; no noise "
                    "is a deterministic release. Exact: the Gaussian mechanism's privacy profile in closed form "
                    "(Balle and Wang 2018); RDP: dp-accounting's Renyi DP bound, looser, as DP-SGD libraries report.")


# --- HAR ----------------------------------------------------------------------------------------------------------

def setting_label(s: dict, *, with_ldp: bool = True, with_defences: bool = True) -> str:
  """'synthetic_wear | deepconvlstm | untrained | shuffle | N=100 [| class-weighted loss] [| S=5 B=20]
  [| sigma=0.1 tau=1] [| bias-free head] [| top-k CR=0.9]'."""
  parts = [s["dataset"], s["model"], s["state"], s["sampling"], f"N={s['num_samples']}"]
  if loss_label(s):                                 # the clients' loss: part of the setting, not a defence
    parts.append(loss_label(s))
  if s.get("aggregate_clients", 1) > 1:             # what the server sees: part of the setting
    parts.append(f"secure aggregation of {s['aggregate_clients']}"
                 + (", dealt every round" if s.get("cohort_dealing", "once") == "every_round" else ""))
  if s["local_steps"] is not None:
    parts.append(f"S={s['local_steps']} B={s['local_batch_size']}")
  if with_ldp and (s["sigma"] or s["tau"]):
    parts.append(f"sigma={s['sigma']:g} tau={s['tau']:g}" if s["tau"] else f"sigma={s['sigma']:g} no clip")
  if with_defences and not s.get("head_bias", True):
    parts.append("bias-free head")
  if with_defences and s.get("compression"):
    parts.append(f"top-k CR={s['compression']:g}")
  if with_defences and s.get("dropout") is not None:
    parts.append(f"dropout {s['dropout']:g}")
  return " | ".join(parts)


def undefended(r: HarResult) -> bool:
  """The papers' clients: no bias-free head, upload compression or changed dropout, the mean loss, and each
  update attacked alone (no secure aggregation); LDP is judged separately: `has_ldp`."""
  return (r.settings.get("head_bias", True) and not r.settings.get("compression")
          and r.settings.get("dropout") is None and r.settings.get("client_loss", "mean") == "mean"
          and r.settings.get("aggregate_clients", 1) == 1)


def _clients_a_round(k: int, every_round: bool, identifiable: Optional[bool]):
  """The summary's "clients a round" cell: K, and how the clients were dealt (and when dealt every round, whether
  the rounds could tell them apart: the solved columns are otherwise the even split, minimum norm)."""
  if not every_round:
    return k
  return f"{k}, dealt every round" + (" (not identifiable)" if identifiable is False else "")


def har_summary_table(results: Results, acct: Accountant) -> Optional[Table]:
  if not results.har:
    return None
  rows = []
  # clients dealt anew every round: two more columns, each client's distribution solved from all rounds
  solved = any(a.get("profiles") for r in results.har for a in r.attacks.values())
  for r in results.har:
    s = r.settings
    eps = acct.budget(s["sigma"], s["tau"], s["ldp_releases"]).text() if r.has_ldp else ""
    k = s.get("aggregate_clients", 1)
    every_round = s.get("cohort_dealing", "once") == "every_round"
    for name, a in r.attacks.items():
      other = defence_label(s, with_ldp=False)
      rows.append([s["dataset"], s["model"], s["state"], s["sampling"], s["num_samples"], s["local_batch_size"],
                   s["local_steps"], s["sigma"], s["tau"], eps, other, s.get("client_loss", "mean"),
                   _clients_a_round(k, every_round, r.identifiable), attack_name(name), len(a["subjects"])]
                  + [x for m in ("lnacc", "leacc", "class_acc") for x in a["summary"][m]]
                  + [a.get("per_client", a["summary"])[m][0] for m in ("lnacc", "class_acc")]
                  + ([(a.get("profiles") or {}).get(m, (None,))[0] for m in ("lnacc", "class_acc")] if solved
                     else []))
  cols = ["dataset", "model", "state", "sampling", "N", "B", "S", "sigma", "tau", "epsilon", "defences",
          "client loss", "clients a round", "attack", "clients (cohorts)",
          "LnAcc", "LnAcc std", "LeAcc", "LeAcc std", "ClassAcc", "ClassAcc std", "per-client LnAcc",
          "per-client ClassAcc"] + (["solved per-client LnAcc", "solved per-client ClassAcc"] if solved else [])
  return Table("har_summary", f"HAR leakage: mean and std over clients, over cohorts where a round aggregates "
               f"several clients (epsilon at delta = {acct.delta:g}, exact, composed over {acct.rounds} round(s))",
               cols, rows,
               percent=("LnAcc", "LnAcc std", "LeAcc", "LeAcc std", "ClassAcc", "ClassAcc std", "per-client LnAcc",
                        "per-client ClassAcc", "solved per-client LnAcc", "solved per-client ClassAcc"),
               note="per-client: what the server learns of each client, mean over clients: its own update's "
                    "metrics, or under secure aggregation those of 1/K of its round's predicted counts"
                    + ("; solved per-client (clients dealt anew every round): each client's label distribution "
                       "solved from all rounds, against its own (\"not identifiable\": the rounds' participation "
                       "has lower rank than the clients, so the least squares answer is the minimum-norm split)."
                       if solved else "."))


def single_step_plain(results: Results) -> list[HarResult]:
  """The HAR results without LDP, defences and local steps (the paper's Fig. 2 / Table 1 settings)."""
  return [r for r in results.har if not r.multi_step and not r.has_ldp and undefended(r)]


#: The HAR paper's attack families (Table 1: "bias-based techniques, namely EBI, iLRG, and LLBG", "weight-based
#: techniques LLG and LLG*"), with the HAR code's variants of each; baselines and RLU stay out of the averages.
PAPER_FAMILIES = {"bias": ("ebi", "llbg", "llbg_original", "ilrg", "ilrg_uniform"),
                  "weight": ("llg", "llg_har", "llg_star", "llg_star_har")}


def _family_per_client(r: HarResult, signal: str) -> Optional[np.ndarray]:
  """f64[clients]: each client's ClassAcc averaged over the family's attacks present in r (None if none is)."""
  names = [n for n in r.attacks if n in PAPER_FAMILIES[signal]]
  if not names:
    return None
  return np.nanmean(np.stack([np.asarray(r.attacks[n]["clients"]["class_acc"], np.float64) for n in names]), axis=0)


def table1(results: Results) -> Optional[Table]:
  """Table 1: ClassAcc (mean, std over clients) per attack, and bias- / weight-based averages, for every
  (dataset, model, state, sampling) of the single-step results without LDP."""
  plain = single_step_plain(results)
  if not plain:
    return None
  rows = []
  for r in plain:
    s = r.settings
    base = [s["dataset"], s["model"], s["state"], s["sampling"], s["num_samples"]]
    for name, a in r.attacks.items():
      rows.append(base + [attack_name(name), *a["summary"]["class_acc"]])
    for signal in ("bias", "weight"):
      fam = _family_per_client(r, signal)
      if fam is not None:
        v = fam[np.isfinite(fam)]
        rows.append(base + [f"{signal}-based (mean of attacks)", float(v.mean()), float(v.std())])
  return Table("table1_classacc", "Table 1: ClassAcc per attack and setting, mean and std over clients (single "
               "step, no LDP); bias-/weight-based rows average each client's ClassAcc over the family's attacks "
               "(the paper's: EBI, LLBG, iLRG; LLG, LLG*; with their HAR-code variants)",
               ["dataset", "model", "state", "sampling", "N", "attack", "ClassAcc", "ClassAcc std"], rows,
               percent=("ClassAcc", "ClassAcc std"))


def table1_paper_layout(results: Results) -> Optional[Table]:
  """Table 1 as the paper lays it out: rows = attack family x state (T/U), columns = dataset x sampling; each
  client's ClassAcc averaged over the family's attacks and the models, then mean and std over clients."""
  per_client: dict = defaultdict(lambda: defaultdict(list))      # (family, state, dataset, sampling) -> subject
  for r in single_step_plain(results):
    s = r.settings
    for signal in ("bias", "weight"):
      fam = _family_per_client(r, signal)
      if fam is None:
        continue
      subjects = next(iter(r.attacks.values()))["subjects"]
      for subject, v in zip(subjects, fam):
        per_client[(signal, s["state"], s["dataset"], s["sampling"])][subject].append(v)
  if not per_client:
    return None
  columns = sorted({k[2:] for k in per_client})
  rows = []
  for signal in ("bias", "weight"):
    for state in ("trained", "untrained"):
      cells = []
      for col in columns:
        clients = per_client.get((signal, state) + col)
        if not clients:
          cells += [None, None]
          continue
        v = np.asarray([np.nanmean(x) for x in clients.values()])
        v = v[np.isfinite(v)]
        cells += [float(v.mean()), float(v.std())]
      if any(c is not None for c in cells):
        rows.append([f"{signal}-based", "T" if state == "trained" else "U"] + cells)
  names = [f"{d} {sm}" for d, sm in columns]
  cols = ["attacks", "state"] + [x for n in names for x in (n, f"{n} std")]
  return Table("table1_paper_layout", "Table 1 in the paper's layout: average ClassAcc of bias- and weight-based "
               "attacks (over the family's attacks and the models), mean and std over clients, single step, no LDP",
               cols, rows, percent=tuple(cols[2:]))


def thesis_table(results: Results) -> Optional[Table]:
  """LLBG beside the thesis' Table B.1 (N = 100, single step, no LDP, matching model/state/sampling/dataset)."""
  rows = []
  for r in single_step_plain(results):
    s = r.settings
    ds = paper.thesis_dataset(s["dataset"])
    ref = paper.THESIS_B1.get((s["model"], s["state"], ds, s["sampling"])) if ds else None
    if ref is None or s["num_samples"] != 100:
      continue
    for name in ("llbg_original", "llbg"):
      if name in r.attacks:
        a = r.attacks[name]["summary"]
        rows.append([s["dataset"], s["model"], s["state"], s["sampling"], attack_name(name), a["lnacc"][0],
                     a["leacc"][0], ref[0] / 100, ref[1] / 100])
  if not rows:
    return None
  return Table("thesis_table_b1", "Ours beside the thesis' Table B.1 (Hopp 2025: LLBG, FedSGD, N = 100, real "
               "WEAR/Wetlab; the thesis' LLBG is most likely our llbg_original)",
               ["dataset", "model", "state", "sampling", "attack", "LnAcc", "LeAcc", "thesis LnAcc",
                "thesis LeAcc"], rows, percent=("LnAcc", "LeAcc", "thesis LnAcc", "thesis LeAcc"),
               note="synthetic_* datasets have the real datasets' shape, not their data: compare the trend.")


# --- Eavesdrop ----------------------------------------------------------------------------------------------------

def _paper_key(r) -> tuple:
  return ("MNIST", paper.MODEL_NAMES.get(r.settings["model"], r.settings["model"]))


def _mean_loss(r) -> bool:
  """The clients train with the papers' mean loss (the papers' tables and numbers are for it)."""
  return r.settings.get("client_loss", "mean") == "mean"


def loss_label(s: dict) -> str:
  """The clients' loss in words for labels ("class-weighted loss"); "" for the papers' mean loss."""
  loss = s.get("client_loss", "mean")
  return "" if loss == "mean" else f"{loss.replace('_', '-')} loss"


def _is_base(r: EavesdropResult) -> bool:
  return not r.settings["compression"] and _mean_loss(r)


def eavesdrop_per_label(results: Results) -> Optional[Table]:
  """Tables III and IV: Class Sniffing and Quantity Inference success per label, ours beside the paper's MNIST."""
  base = [r for r in results.eavesdrop if _is_base(r)]
  if not base:
    return None
  c = max(len(r.per_label["sniff"]) for r in base)
  rows = []
  for r in base:
    label = f"ours: {r.settings['dataset']} {r.settings['model']} N_p={r.settings['num_participants']} " \
            f"P={r.settings['fraction']} L_bs={r.settings['local_batch_size']} L_ep={r.settings['local_epochs']}"
    if r.settings.get("partition") == "dirichlet":
      label += f" {_partition(r.settings)}"
    for key, what, ref in (("sniff", "Class Sniffing (III)", paper.TABLE_III),
                           ("qi_alpha1", "Quantity Inference a=1 (IV)", paper.TABLE_IV),
                           ("qi_count_alpha1", "Quantity Inference a=1, X_* rounded to a count", None)):
      if ref is None and math.isnan(r.overall[key]):
        continue                                  # a record older than the count metric
      vals = list(r.per_label[key]) + [None] * (c - len(r.per_label[key]))
      rows.append([what, label] + vals + [r.overall[key]])
      if ref is None:
        continue
      p = ref.get(_paper_key(r))
      if p:
        rows.append([what, f"paper: {' '.join(_paper_key(r))}"] + [v / 100 for v in p][:c] + [None] * (c - len(p))
                    + [float(np.mean(p)) / 100])
  cols = ["attack", "source"] + [str(i) for i in range(c)] + ["all"]
  return Table("tables_III_IV_per_label", "Tables III and IV: success rate per label, ours beside the paper's "
               "(MNIST; ours on the dataset named)", cols, rows, percent=tuple(cols[2:]),
               note="The paper's 'all' is the mean of its per-label rates. The paper's metric scores 'an estimated "
                    "number of clients'; Algorithm 2's X_* is a real number: both readings are shown.")


def eavesdrop_summary(results: Results) -> Optional[Table]:
  if not results.eavesdrop:
    return None
  keys = ("sniff", "sniff_absent", "prevalence", "qi_alpha1", "qi_count_alpha1", "qi_alpha_pct", "qi_abort")
  # the attacker as a participant: over the rounds it was selected, each attack with / without its upload removed
  taking_part = any(r.attacker for r in results.eavesdrop)
  attacker_keys = ("sniff_removed", "sniff_not_removed", "qi_alpha1_removed", "qi_alpha1_not_removed")
  rows = [[r.settings[k] for k in ("dataset", "model", "num_participants", "fraction", "local_batch_size",
                                   "local_epochs", "compression", "dropout", "rounds")]
          + [_partition(r.settings), r.settings.get("client_loss", "mean")] + [r.overall[k] for k in keys]
          + ([(r.attacker or {}).get("rounds_selected")] + [(r.attacker or {}).get(k) for k in attacker_keys]
             if taking_part else [])
          for r in results.eavesdrop]
  cols = ["dataset", "model", "N_p", "P", "L_bs", "L_ep", "CR", "dropout", "rounds", "participants", "client loss",
          "Class Sniffing", "sniff (label absent)", "label present", "QI a=1", "QI count a=1", "QI a=5%", "QI aborted"]
  extra = ["attacker's rounds", "its sniff, own removed", "its sniff, not removed", "its QI a=1, own removed",
           "its QI a=1, not removed"] if taking_part else []
  note = ("attacker's rounds: rounds (over all replicates) in which the attacker, a participant, was selected; "
          "there it attacks with its own upload removed (the main columns) and, for comparison, without."
          if taking_part else "")
  return Table("eavesdrop_summary", "Eavesdrop: overall success rates of every federation", cols + extra, rows,
               percent=tuple(cols[11:] + extra[1:]), note=note)


def _partition(s: dict) -> str:
  """How the federation's participants got their data, in a few words."""
  if s.get("partition") == "dirichlet":
    return f"Dirichlet({s['dirichlet_alpha']:g})"
  return "main labels"


def compression_table(results: Results) -> Optional[Table]:
  """Table VI: Quantity Inference success and aborting rate per compression rate, ours beside the paper's."""
  groups = _varying([r for r in results.eavesdrop if _mean_loss(r)], "compression")
  if not groups:
    return None
  rows = []
  for _, pts in groups:
    for r in sorted(pts, key=lambda r: r.settings["compression"]):
      cr = float(r.settings["compression"])
      ref = paper.TABLE_VI.get(round(cr, 3))
      rows.append([r.settings["dataset"], r.settings["model"], cr, r.overall["qi_alpha1"],
                   r.overall["qi_count_alpha1"], r.overall["qi_abort"],
                   ref[0] / 100 if ref else None, ref[1] / 100 if ref else None])
  return Table("table_VI_compression", "Table VI: compression defence, Quantity Inference (a = 1) ours beside the "
               "paper's (MNIST CNN)", ["dataset", "model", "CR", "success", "success (count)", "aborted",
                                        "paper success", "paper aborted"], rows,
               percent=("success", "success (count)", "aborted", "paper success", "paper aborted"))


def whole_table(results: Results) -> Optional[Table]:
  """Table V: Whole Determination per stage (exact, with the number of groups known, frequent vs rest)."""
  if not results.whole:
    return None
  rows = []
  for w in results.whole:
    ref = paper.TABLE_V.get(_paper_key(w)) if _mean_loss(w) else None
    model = w.settings["model"] + ("" if _mean_loss(w) else f", {loss_label(w.settings)}")
    for i, st in enumerate(w.stages):
      rows.append([w.settings["dataset"], model, st["stage"], f"{st['reached']}/{st['trials']}",
                   st["mean_round"], st["success"], st.get("success_known_k"), st.get("success_two_level"),
                   ref[i] / 100 if ref and i < 2 and len(w.stages) == 2 else None])
  return Table("table_V_whole_determination", "Table V: Whole Determination success per stage, ours beside the "
               "paper's (MNIST)", ["dataset", "model", "stage", "reached", "mean round", "exact",
                                   "groups known", "frequent vs rest", "paper exact"], rows,
               percent=("exact", "groups known", "frequent vs rest", "paper exact"),
               note="exact: the clustering equals the true grouping (the paper's criterion); groups known: with the "
                    "true number of groups; frequent vs rest: two clusters, the Q group against the others. The "
                    "paper's values are placed beside ours when our study has its two stages (middle, late).")


def defence_label(s: dict, *, with_ldp: bool = True) -> str:
  """The defences a HAR setting applies: 'none', or 'bias-free head', 'LDP sigma=.. tau=..', 'top-k CR=..' joined
  (with_ldp=False: the others only, '' when there are none)."""
  parts = []
  if not s.get("head_bias", True):
    parts.append("bias-free head")
  if with_ldp and (s["sigma"] or s["tau"]):
    parts.append(f"LDP sigma={s['sigma']:g} tau={s['tau']:g}" if s["tau"] else f"LDP sigma={s['sigma']:g}")
  if s.get("compression"):
    parts.append(f"top-k CR={s['compression']:g}")
  if s.get("dropout") is not None:
    parts.append(f"dropout {s['dropout']:g}")
  return " + ".join(parts) or ("none" if with_ldp else "")


#: More LDP settings than this (for one setting otherwise) make a sweep: no confusion figure (report: a 1,000-setting
#: sweep drew 1,000, ~0.6 s each) or column (har_defences) per setting, and a heat map over both sigma and tau.
MAX_LDP_DETAIL = 12


def har_defences_table(results: Results, acct: Accountant) -> Optional[Table]:
  """What each defence does to each attack (HAR): LnAcc (mean over clients) per attack, one column per defence,
  for every setting run under two or more defences. Bias attacks cannot run on a bias-free head: 'no bias'."""
  groups = defaultdict(dict)
  ldp_columns = {defence_label(r.settings) for r in results.har if r.has_ldp}
  sweep = len(ldp_columns) > MAX_LDP_DETAIL        # an LDP sweep: har_summary's rows and the sweep figure show it
  for r in results.har:
    if sweep and r.has_ldp:
      continue
    base = setting_label(r.settings, with_ldp=False, with_defences=False).replace(" | ", ", ")
    groups[base][defence_label(r.settings)] = r
  groups = {k: v for k, v in groups.items() if len(v) >= 2}
  if not groups:
    return None
  order = lambda d: (d != "none", "bias" not in d, "LDP" not in d, "CR" not in d, d)
  columns = sorted({d for v in groups.values() for d in v}, key=order)
  rows = []
  for label, by_defence in groups.items():
    names = attack_order({n for r in by_defence.values() for n in r.attacks})
    for name in names:
      row = [label, attack_name(name)]
      for d in columns:
        r = by_defence.get(d)
        if r is None:
          row.append(None)
        elif name in r.attacks:
          row.append(r.attacks[name]["summary"]["lnacc"][0])
        else:
          row.append("no bias" if not r.settings.get("head_bias", True) else None)
      rows.append(row)
  eps = [f"{d}: epsilon {acct.budget(r.settings['sigma'], r.settings['tau'], r.settings['ldp_releases']).text()}"
         for v in groups.values() for d, r in v.items() if r.has_ldp]
  return Table("har_defences", "HAR: each defence against each attack, LnAcc (mean over clients)",
               ["setting", "attack"] + columns, rows, percent=tuple(columns),
               note="Empty: not run. 'none': the models as built (DeepConvLSTM and TinyHAR: dropout 0.5). 'no bias': "
                    "the attack reads the bias gradient, which a bias-free head does not have (the defence removes "
                    "it). " + (f"The {len(ldp_columns)} LDP settings, a sweep, are left out: har_summary has a row for "
                               "each, the sweep's figure shows them. " if sweep else "") + "; ".join(sorted(set(eps))))


def eavesdrop_defence_label(s: dict) -> str:
  dropout = 0.5 if s.get("dropout") is None else float(s["dropout"])   # None: the models' default, 0.5
  parts = ([f"dropout {dropout:g}"] if dropout else []) + ([f"top-CR {s['compression']:g}"] if s["compression"]
                                                             else [])
  if s.get("ldp_noise") or s.get("ldp_clip"):
    parts.append(f"LDP sigma={s.get('ldp_noise') or 0:g} tau={s.get('ldp_clip') or 0:g}")
  return " + ".join(parts) or "none"


def eavesdrop_defences_table(results: Results) -> Optional[Table]:
  """What each defence does to each Eavesdrop attack: overall rates per defence (dropout, top-CR compression), for
  every federation run under two or more of them."""
  groups = defaultdict(dict)
  for r in results.eavesdrop:
    fixed = tuple((k, str(v)) for k, v in sorted(r.settings.items())
                  if k not in ("compression", "dropout", "seed", "ldp_noise", "ldp_clip"))
    groups[fixed][eavesdrop_defence_label(r.settings)] = r
  groups = {k: v for k, v in groups.items() if len(v) >= 2}
  if not groups:
    return None
  columns = sorted({d for v in groups.values() for d in v}, key=lambda d: (d != "none", "CR" in d, "LDP" in d, d))
  metrics = (("sniff", "Class Sniffing"), ("sniff_absent", "Class Sniffing, label absent"),
             ("qi_alpha1", "Quantity Inference a=1"), ("qi_count_alpha1", "Quantity Inference a=1, count"),
             ("qi_abort", "Quantity Inference aborted"))
  rows = []
  for fixed, by_defence in groups.items():
    s = dict(fixed)
    label = f"{s['dataset']}, {s['model']}, N_p={s['num_participants']} P={s['fraction']}, {s['rounds']} rounds"
    if loss_label(s):                                         # the participants' loss: part of the federation
      label += f", {loss_label(s)}"
    for key, name in metrics:
      rows.append([label, name] + [by_defence[d].overall[key] if d in by_defence else None for d in columns])
  return Table("eavesdrop_defences", "Eavesdrop: each defence against each attack, success rates", ["federation",
               "attack"] + columns, rows, percent=tuple(columns),
               note="Empty: not run. The models' dropout default is 0.5 (the paper's models); 'none' has dropout 0.")


SWEEP_FIELDS = ("local_batch_size", "local_epochs", "fraction", "num_participants", "compression", "dropout")


def _varying(items: Sequence, field: str) -> list:
  """[(the fixed settings, [results])] for the groups of results that differ only in `field` (>= 2 values)."""
  groups = defaultdict(list)
  for r in items:
    fixed = tuple((k, str(v)) for k, v in sorted(r.settings.items()) if k not in (field, "seed"))
    groups[fixed].append(r)
  return [(k, v) for k, v in groups.items() if len({str(r.settings[field]) for r in v}) >= 2]


def all_tables(results: Results, acct: Accountant) -> list[Table]:
  builders: list[Callable] = [lambda r: har_summary_table(r, acct), lambda r: ldp_table(r, acct), table1,
                              table1_paper_layout,
                              thesis_table, lambda r: har_defences_table(r, acct), eavesdrop_per_label,
                              eavesdrop_summary, compression_table, eavesdrop_defences_table, whole_table]
  return [t for t in (b(results) for b in builders) if t is not None]
