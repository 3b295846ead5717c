"""The papers' figures from any results, as PNG bytes (matplotlib, headless; the optional extra `plots`).

Readable in greyscale and by colour-blind readers: bars differ by hatch as well as by colour (Okabe-Ito
palette), lines by marker and dash, heat maps use cividis (monotone in lightness) or print their values.
Every figure's title names dataset, model, state, sampling and N (or the federation's settings).
"""
from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np

from jaxleak.runs.report import paper
from jaxleak.runs.report.results import EavesdropResult, HarResult, WholeDetermination
from jaxleak.runs.report.tables import METRIC_NAMES, Accountant, attack_name, loss_label, setting_label

#: Okabe and Ito (2008): distinguishable under the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)), "-", "--")
UNITS = {"local_batch_size": "local batch size L_bs (examples)", "local_epochs": "local epochs L_ep",
         "fraction": "selection fraction P (of N_p)", "num_participants": "participants N_p",
         "compression": "compression rate CR (fraction of each update withheld)", "dropout": "dropout rate"}


def pyplot():
  """matplotlib.pyplot on the headless Agg backend; ImportError naming the extra when matplotlib is missing."""
  try:
    import matplotlib
  except ImportError:
    raise ImportError("figures need matplotlib, the optional extra 'plots': pip install 'jaxleak[plots]' "
                      "(or pip install matplotlib).") from None
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt
  plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "figure.dpi": 110, "savefig.bbox": "tight",
                       "hatch.linewidth": 0.6})
  return plt


def png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", metadata={"Software": None})   # no version stamp: same inputs, same bytes
  pyplot().close(fig)
  return buf.getvalue()


def _pct(x) -> float:
  return 100 * float(x)


# --- HAR ----------------------------------------------------------------------------------------------------------

def attack_bars(r: HarResult) -> bytes:
  """Fig. 2: LnAcc, LeAcc, ClassAcc per attack, bars = mean over clients, whiskers = std over clients."""
  plt = pyplot()
  names = list(r.attacks)
  metrics = ("lnacc", "leacc", "class_acc")
  fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 1.5), 3.2))
  width = 0.8 / len(metrics)
  x = np.arange(len(names))
  for i, m in enumerate(metrics):
    mean = [_pct(r.attacks[n]["summary"][m][0]) for n in names]
    std = [_pct(r.attacks[n]["summary"][m][1]) for n in names]
    ax.bar(x + (i - 1) * width, mean, width, yerr=std, capsize=2, label=METRIC_NAMES[m], color=COLOURS[i],
           hatch=HATCHES[i], edgecolor="black", linewidth=0.5, error_kw={"elinewidth": 0.8})
  ax.set_xticks(x, [attack_name(n) for n in names])
  ax.set_ylim(0, 109)
  ax.set_ylabel("accuracy (%)")
  ax.set_xlabel("attack")
  k = len(next(iter(r.attacks.values()))["subjects"])
  per_round = r.settings.get("aggregate_clients", 1)
  if per_round > 1:                     # bars read the rounds; diamonds: what a round tells of each client
    for i, m in enumerate(metrics):
      if m in ("lnacc", "class_acc"):
        ax.scatter(x + (i - 1) * width, [_pct(r.attacks[n]["per_client"][m][0]) for n in names], marker="D",
                   s=22, color="white", edgecolor="black", linewidth=0.8, zorder=3,
                   label=f"per client (1/{per_round} of its round)" if m == "lnacc" else None)
        if any(r.attacks[n].get("profiles") for n in names):    # clients dealt anew every round: solved
          ax.scatter(x + (i - 1) * width, [_pct((r.attacks[n].get("profiles") or {}).get(m, (math.nan,))[0])
                                           for n in names], marker="^", s=26, color="black", zorder=3,
                     label=("per client, solved from all rounds" + (" (not identifiable: the even split)"
                                                                         if r.identifiable is False else ""))
                     if m == "lnacc" else None)
    if r.settings.get("cohort_dealing", "once") == "every_round":
      ax.set_title(f"{setting_label(r.settings)}\nbars: mean over {k} rounds, whiskers: std over rounds; "
                   "markers: mean over clients")
    else:
      ax.set_title(f"{setting_label(r.settings)}\nbars: mean over {k} cohorts' rounds, whiskers: std over "
                   "cohorts; diamonds: mean over clients")
  else:
    ax.set_title(f"{setting_label(r.settings)}\nmean over {k} clients, whiskers: std over clients")
  ax.legend(ncols=4 if per_round > 1 else 3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
  ax.grid(axis="y", linewidth=0.3)
  return png(fig)


def confusion_grid(r: HarResult, acct: Optional[Accountant] = None) -> Optional[bytes]:
  """Fig. 4: row-normalised confusion matrices (sorted truth vs sorted prediction, paired by position), one panel
  per attack; zero cells blank, values in % when the classes fit."""
  plt = pyplot()
  names = [n for n, a in r.attacks.items() if a.get("confusion")]
  if not names:
    return None
  c = len(r.attacks[names[0]]["confusion"])
  cols = min(3, len(names))
  rows = math.ceil(len(names) / cols)
  size = 1.6 + 0.26 * c
  fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 1.6, rows * size + 0.9), squeeze=False,
                           layout="constrained")
  ticks = [str(x)[:10] for x in (r.class_names or range(c))]
  image = None
  for k, (ax, name) in enumerate(zip(axes.flat, names)):
    m = np.asarray(r.attacks[name]["confusion"], np.float64)
    norm = np.divide(m, m.sum(1, keepdims=True), out=np.zeros_like(m), where=m.sum(1, keepdims=True) > 0)
    shown = np.where(m > 0, 100 * norm, np.nan)
    image = ax.imshow(shown, cmap="cividis", vmin=0, vmax=100)
    if c <= 13:
      for i, j in zip(*np.nonzero(m)):
        ax.text(j, i, f"{100 * norm[i, j]:.0f}" if norm[i, j] >= 0.005 else "<1", ha="center", va="center",
                fontsize=5.5, color="black" if norm[i, j] > 0.55 else "white")
    _label_panel(ax, k, cols, len(names), (range(c), ticks, "predicted class"), (range(c), ticks, "true class"),
                 attack_name(name), rotation=90, fontsize=6)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.colorbar(image, ax=axes, shrink=0.8, label="share of the true class's windows (%)")
  eps = f" (epsilon {_eps_tick(acct, r)})" if acct is not None and r.has_ldp else ""
  fig.suptitle(f"{setting_label(r.settings)}{eps}\nconfusion (rows normalised; blank = 0), all updates of all "
               "clients", fontsize=9)
  return png(fig)


def _label_panel(ax, k: int, cols: int, n: int, x: tuple, y: tuple, title: str, *, rotation: float,
                 fontsize: float) -> None:
  """Panel k of n in a grid of `cols` columns: x and y are (tick positions, tick labels, axis name), labelled on the
  grid's outer edges only (the last row, the first column)."""
  first_col, last_row = k % cols == 0, k + cols >= n
  ax.set_xticks(x[0], x[1] if last_row else [], rotation=rotation, fontsize=fontsize)
  ax.set_yticks(y[0], y[1] if first_col else [], fontsize=fontsize)
  if last_row:
    ax.set_xlabel(x[2])
  if first_col:
    ax.set_ylabel(y[2])
  ax.set_title(title)


def multistep_heatmap(single: HarResult, multis: Sequence[HarResult]) -> bytes:
  """Fig. 3: LnAcc of each multi-step setting minus the single-step LnAcc (percentage points), attacks x (N, S)."""
  plt = pyplot()
  multis = sorted(multis, key=lambda r: (r.settings["num_samples"], r.settings["local_steps"],
                                         r.settings["local_batch_size"]))
  names = [n for n in single.attacks if all(n in m.attacks for m in multis)]
  diff = np.array([[_pct(m.attacks[n]["summary"]["lnacc"][0]) - _pct(single.attacks[n]["summary"]["lnacc"][0])
                    for m in multis] for n in names])
  lim = max(1.0, float(np.nanmax(np.abs(diff))))
  fig, ax = plt.subplots(figsize=(1.6 + 1.0 * len(multis), 1.0 + 0.45 * len(names)))
  image = ax.imshow(diff, cmap="PuOr", vmin=-lim, vmax=lim, aspect="auto")
  for i in range(len(names)):
    for j in range(len(multis)):
      ax.text(j, i, f"{diff[i, j]:+.1f}", ha="center", va="center", fontsize=7,
              color="white" if abs(diff[i, j]) > 0.6 * lim else "black")
  ax.set_xticks(range(len(multis)), [f"|T|={m.settings['num_samples']}\nS={m.settings['local_steps']} "
                                     f"B={m.settings['local_batch_size']}" for m in multis], fontsize=7)
  ax.set_yticks(range(len(names)), [attack_name(n) for n in names])
  ax.set_xlabel("multi-step setting (client data |T^c|, local steps S, batch B)")
  s = single.settings
  ax.set_title(f"{s['dataset']} | {s['model']} | {s['state']} | {s['sampling']}\nLnAcc multi-step minus single step "
               f"(N={s['num_samples']}, S=1), mean over clients")
  fig.colorbar(image, ax=ax, label="difference (percentage points)")
  return png(fig)


def ldp_tradeoff(points: Sequence[HarResult], acct: Accountant, metric: str = "lnacc") -> bytes:
  """Accuracy against the noise std sigma, one panel per clip norm tau, one line per attack; the top axis gives
  epsilon (exact, at the report's delta and rounds) of each plotted sigma."""
  plt = pyplot()
  taus = sorted({p.settings["tau"] for p in points}, key=lambda t: (t == 0, t))
  names = list(points[0].attacks)
  cols = min(3, len(taus))
  rows = math.ceil(len(taus) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols + 1.4, 3.3 * rows + 0.4), squeeze=False, sharey=True,
                           layout="constrained")
  for ax in axes.flat[len(taus):]:
    ax.axis("off")
  sigmas_all = sorted({p.settings["sigma"] for p in points if p.settings["sigma"] > 0})
  linthresh = sigmas_all[0] if sigmas_all else 1.0
  for ax, tau in zip(axes.flat, taus):
    pts = sorted([p for p in points if p.settings["tau"] == tau], key=lambda p: p.settings["sigma"])
    xs = [p.settings["sigma"] for p in pts]
    for i, n in enumerate(names):
      ax.plot(xs, [_pct(p.attacks[n]["summary"][metric][0]) for p in pts], marker=MARKERS[i % len(MARKERS)],
              linestyle=DASHES[i % len(DASHES)], color=COLOURS[i % len(COLOURS)], label=attack_name(n),
              markersize=4, linewidth=1)
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlim(-0.1 * linthresh, max(xs + [linthresh]) * 1.6)
    labelled = _thinned(len(xs))                   # a sweep's many sigmas: a readable few labelled
    ax.set_xticks([xs[i] for i in labelled], [f"{xs[i]:.3g}" for i in labelled],
                  rotation=0 if len(labelled) <= 5 else 45)
    ax.set_xlabel("noise std sigma (gradient units)")
    ax.grid(linewidth=0.3)
    top = ax.twiny()
    top.set_xscale("symlog", linthresh=linthresh)
    top.set_xlim(ax.get_xlim())
    top.set_xticks([xs[i] for i in labelled], [_eps_tick(acct, pts[i]).replace(" (", "\n(") for i in labelled],
                   fontsize=7)
    top.set_xlabel((f"clip norm tau = {tau:g}" if tau else "no clipping") + f"\nepsilon at delta = {acct.delta:g}",
                   fontsize=8)
  for row in axes:
    row[0].set_ylabel(f"{METRIC_NAMES[metric]} (%)")
  axes[0][0].set_ylim(0, 105)
  fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right center", frameon=False)
  s = points[0].settings
  scope = "whole model" if s["clip_scope"] == "all" else "last layer"
  fig.suptitle(f"{setting_label(s, with_ldp=False)} | LDP trade-off, {scope} clipped, mean over clients",
               fontsize=9)
  return png(fig)


#: The most tick labels on an axis of sweep values; beyond it, evenly spaced ones (the first and last included).
MAX_TICK_LABELS = 6


def _thinned(n: int, most: int = MAX_TICK_LABELS) -> list[int]:
  """Indices of the values of an axis of `n` that get a label: all of them, or `most` spread evenly."""
  return list(range(n)) if n <= most else sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def ldp_heatmap(points: Sequence[HarResult], metric: str = "lnacc") -> bytes:
  """An LDP sweep over a grid of (sigma, tau): one panel per attack, the metric's mean over clients in each cell
  (noise std across, clip norm down, "none" for no clipping last); cells the sweep did not run are blank."""
  plt = pyplot()
  sigmas = sorted({p.settings["sigma"] for p in points})
  taus = sorted({p.settings["tau"] for p in points}, key=lambda t: (t == 0, t))
  names = list(points[0].attacks)
  cell = {(p.settings["sigma"], p.settings["tau"]): p for p in points}
  cols = min(3, len(names))
  rows = math.ceil(len(names) / cols)
  width, height = min(6.0, 1.5 + 0.3 * len(sigmas)), min(5.0, 1.2 + 0.25 * len(taus))
  fig, axes = plt.subplots(rows, cols, figsize=(cols * width + 1.2, rows * height + 0.8), squeeze=False,
                           layout="constrained")
  xt, yt = _thinned(len(sigmas), 8), _thinned(len(taus), 8)
  image = None
  for k, (ax, name) in enumerate(zip(axes.flat, names)):
    grid = np.full((len(taus), len(sigmas)), np.nan)
    for (i, tau), (j, sigma) in ((it, js) for it in enumerate(taus) for js in enumerate(sigmas)):
      p = cell.get((sigma, tau))
      if p is not None and name in p.attacks:
        grid[i, j] = _pct(p.attacks[name]["summary"][metric][0])
    image = ax.imshow(grid, cmap="cividis", vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    if grid.size <= 36:
      for i, j in zip(*np.nonzero(np.isfinite(grid))):
        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color="black" if grid[i, j] > 55 else "white")
    _label_panel(ax, k, cols, len(names), (xt, [f"{sigmas[j]:.3g}" for j in xt], "noise std sigma"),
                 (yt, [f"{taus[i]:.3g}" if taus[i] else "none" for i in yt], "clip norm tau"), attack_name(name),
                 rotation=45, fontsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.colorbar(image, ax=axes, shrink=0.8, label=f"{METRIC_NAMES[metric]} (%), mean over clients")
  s = points[0].settings
  scope = "whole model" if s["clip_scope"] == "all" else "last layer"
  fig.suptitle(f"{setting_label(s, with_ldp=False)} | LDP sweep, {len(points)} settings ({len(sigmas)} sigma x "
               f"{len(taus)} tau), {scope} clipped", fontsize=9)
  return png(fig)


def _eps_tick(acct: Accountant, p: HarResult) -> str:
  s = p.settings
  if not (s["sigma"] or s["tau"]):
    return "inf\n(no LDP)"
  return acct.budget(s["sigma"], s["tau"], s["ldp_releases"]).text()


# --- Eavesdrop ----------------------------------------------------------------------------------------------------

def eavesdrop_curve(field: str, points: Sequence[EavesdropResult]) -> bytes:
  """Figs. 6-9: success rates against one federation setting; the paper's points that its text states, as
  crosses."""
  plt = pyplot()
  pts = sorted(points, key=lambda r: float(r.settings[field]))
  xs = [float(r.settings[field]) for r in pts]
  fig, ax = plt.subplots(figsize=(4.6, 3.2))
  for i, (key, label) in enumerate((("qi_alpha1", "Quantity Inference, a = 1 (Metric_1)"),
                                    ("qi_alpha_pct", "Quantity Inference, a = 5% N_p P (Metric_%)"),
                                    ("sniff", "Class Sniffing"), ("qi_abort", "QI aborted"),
                                    ("qi_count_alpha1", "QI, X_* rounded to a count, a = 1"))):
    if all(math.isnan(r.overall[key]) for r in pts):
      continue                                    # records older than the count metric
    ax.plot(xs, [_pct(r.overall[key]) for r in pts], marker=MARKERS[i], linestyle=DASHES[i], color=COLOURS[i],
            label=label, markersize=4, linewidth=1)
  weighted = bool(loss_label(pts[0].settings))
  ref = {} if weighted else paper.FIGURE_POINTS.get(field, {})      # the paper's points are for the mean loss
  if ref:
    ax.scatter(list(ref), list(ref.values()), marker="x", s=40, color="black", zorder=3,
               label="paper, MNIST CNN (values its text states)")
  ax.set_xlabel(UNITS.get(field, field))
  ax.set_ylabel("rate (%)")
  ax.set_ylim(0, 105)
  ax.grid(linewidth=0.3)
  s = pts[0].settings
  fixed = ", ".join(f"{k}={s[k]}" for k in ("num_participants", "fraction", "local_batch_size", "local_epochs",
                                             "compression", "rounds") if k != field)
  if weighted:
    fixed += f", {loss_label(s)}"
  ax.set_title(f"{s['dataset']} | {s['model']} | success against {field}\n{fixed}")
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
  return png(fig)


def _group_names(factors) -> list[str]:
  return ["Q" if f == 1 else f"Q/{1 / f:g}" if f < 1 else f"{f:g}Q" for f in factors]


def wd_ratio_curves(w: WholeDetermination, trial: int) -> Optional[bytes]:
  """Figs. 4-5: |W_p| / |W_n| of every label over the rounds observed at each stage, styled by the label's true
  group (frequent Q vs occasional Q/4, Q/5)."""
  plt = pyplot()
  ts = [t for t in w.trials if t["trial"] == trial and t.get("ratios")]
  if not ts:
    return None
  groups = _group_names(w.settings["wd_factors"] or [])
  fig, axes = plt.subplots(1, len(ts), figsize=(3.4 * len(ts) + 0.4, 3.2), squeeze=False, sharey=True)
  for ax, t in zip(axes[0], ts):
    v = np.exp(np.asarray(t["ratios"], np.float64))          # [C, window]
    rounds = t["round"] + np.arange(v.shape[1])
    shown = set()
    for label, (row, g) in enumerate(zip(v, t["groups"])):
      name = groups[g] if g < len(groups) else str(g)
      ax.plot(rounds, row, color=COLOURS[g % len(COLOURS)], linestyle=DASHES[g % len(DASHES)],
              marker=MARKERS[g % len(MARKERS)], markersize=3, linewidth=1,
              label=None if name in shown else f"group {name}")
      shown.add(name)
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("training round")
    ax.set_title(f"stage acc >= {t['stage']:g} (reached in round {t['round']})")
    ax.grid(linewidth=0.3)
  axes[0][0].set_ylabel("|W_p| / |W_n| (log scale)")
  axes[0][-1].legend(fontsize=7)
  s = w.settings
  fig.suptitle(f"{s['dataset']} | {s['model']} | Whole Determination trial {trial}: ratio per label, N_p="
               f"{s['num_participants']} P={s['fraction']}", fontsize=9, y=1.03)
  return png(fig)


def wd_dendrogram(w: WholeDetermination, trial: int, method: str = "ward") -> Optional[bytes]:
  """The hierarchical clustering of the labels' ratio vectors (one panel per stage), leaves named with their
  true group; a trial succeeds when the cut recovers the groups."""
  plt = pyplot()
  from scipy.cluster import hierarchy
  ts = [t for t in w.trials if t["trial"] == trial and t.get("ratios")]
  if not ts:
    return None
  groups = _group_names(w.settings["wd_factors"] or [])
  fig, axes = plt.subplots(1, len(ts), figsize=(3.6 * len(ts) + 0.4, 3.2), squeeze=False)
  for ax, t in zip(axes[0], ts):
    v = np.asarray(t["ratios"], np.float64)
    tree = hierarchy.linkage(v, method=method, metric="euclidean")
    leaves = [f"{i} ({groups[g] if g < len(groups) else g})" for i, g in enumerate(t["groups"])]
    hierarchy.dendrogram(tree, labels=leaves, ax=ax, color_threshold=0, above_threshold_color="black",
                         leaf_font_size=7, leaf_rotation=90)
    ax.set_ylabel(f"merge distance ({method})")
    ax.set_xlabel("label (true group)")
    ax.set_title(f"stage acc >= {t['stage']:g}: {'recovered' if t['success'] else 'not recovered'}")
  s = w.settings
  fig.suptitle(f"{s['dataset']} | {s['model']} | Whole Determination trial {trial}: clustering of ratio vectors",
               fontsize=9, y=1.03)
  return png(fig)
