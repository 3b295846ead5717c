"""Quantity Inference scored two ways on stored Eavesdrop runs: X_* as the real number Algorithm 2 returns, and
X_* rounded to a whole number of clients (the paper's metric speaks of "an estimated number of clients"). Also
where the errors are: the mean error per true number of owners (a slope under 1 shrinks estimates to the mean).

  python benchmarks/qi_readings.py results/mnist                 # every run folder below it (rounds.csv)
  python benchmarks/qi_readings.py results/mnist/mlp/rounds --by_owners

Reads only what `experiments/eavesdrop.py` wrote (rounds.csv, manifest.json); nothing is rerun. Runs written before
the count metric existed are scored exactly as `summarize_rounds` now scores new ones (same function).
"""
import os
import sys

import numpy as np
from absl import flags

from jaxleak import storage
from jaxleak.runs.eavesdrop.report import summarize_rounds
from jaxleak.runs.eavesdrop.rounds import ROUND_COLUMNS, RoundsResult
from jaxleak.runs.tables import format_table
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("by_owners", False, "Also print the mean error of X_* per true number of owners.")


class _Cfg:
  """What summarize_rounds reads from a run's config (the manifest's), without rebuilding EavesdropConfig."""

  def __init__(self, config: dict):
    self.num_participants = int(config["num_participants"])
    self.fraction = float(config["fraction"])
    self.num_selected = max(1, int(round(self.fraction * self.num_participants)))


def load_rounds(folder: str) -> tuple[RoundsResult, _Cfg]:
  rows = storage.read_csv(os.path.join(folder, "rounds.csv"), ROUND_COLUMNS, "Eavesdrop rounds table")
  manifest = storage.read_json(os.path.join(folder, "manifest.json"), "run manifest")
  r = np.array([int(x["round"]) for x in rows])
  c = np.array([int(x["label"]) for x in rows])
  shape = (r.max() + 1, c.max() + 1)

  def grid(col, kind):
    out = np.zeros(shape, kind)
    out[r, c] = [kind(x[col]) for x in rows]
    return out

  res = RoundsResult(owners=grid("owners", int), holders=grid("holders", int), sniff_score=grid("sniff_score", float),
                     sniff_present=grid("sniff_present", int).astype(bool), qi_estimate=grid("qi_estimate", float),
                     qi_std=grid("qi_std", float), qi_num_weights=grid("qi_num_weights", int),
                     qi_aborted=grid("qi_aborted", int).astype(bool), variables={}, seconds_per_round=float("nan"))
  return res, _Cfg(manifest["config"])


def main(argv):
  roots = argv[1:] or ["results"]
  folders = sorted({root for top in roots for root, _, files in os.walk(top)
                    if "rounds.csv" in files and "manifest.json" in files})
  if not folders:
    sys.exit(f"no Eavesdrop run (rounds.csv + manifest.json) under {', '.join(roots)}; run "
             "python experiments/eavesdrop.py first.")
  rows = []
  for folder in folders:
    res, cfg = load_rounds(folder)
    s = summarize_rounds(res, cfg)["overall"]
    rows.append({"run": folder, "rounds": res.owners.shape[0], "QI a=1 (X_*)": f"{100 * s['qi_alpha1']:.1f}",
                 "QI a=1 (count)": f"{100 * s['qi_count_alpha1']:.1f}",
                 "count exact": f"{100 * s['qi_count_exact']:.1f}", "aborted": f"{100 * s['qi_abort']:.1f}",
                 "mean |X_* - i|": f"{s['qi_abs_error']:.2f}"})
    if FLAGS.by_owners:
      ok = (res.owners > 0) & ~res.qi_aborted
      err = (res.qi_estimate - res.owners)[ok]
      owners = res.owners[ok]
      slope = np.polyfit(owners, res.qi_estimate[ok], 1)[0]
      print(f"{folder}: slope of X_* on the true count {slope:.3f}; mean error by owners: " + ", ".join(
          f"{k}: {err[owners == k].mean():+.2f} (n={int((owners == k).sum())})" for k in np.unique(owners)))
  print(format_table(rows, list(rows[0]), "Quantity Inference, X_* as a real number vs rounded to a count "
                     "(success %, over owned, non-aborted (round, label) pairs)"))


if __name__ == "__main__":
  _flags.run(main)
